//! L4 proxy: pick a cluster and endpoint, connect, copy bytes both ways. Half-close is passed
//! through (a FIN from one side shuts down writing towards the other, and the other direction
//! keeps flowing); an idle connection is closed after `idle_timeout`.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::drain::Drain;
use crate::http::local_reply::Flag;
use crate::snapshot::{Snapshot, TcpProxy};
use crate::telemetry::access_log::{now_rfc3339, Entry};
use crate::upstream::pool::connect_tcp;

const BUF: usize = 16 * 1024;

pub async fn serve<IO>(mut down: IO, peer: SocketAddr, snapshot: Arc<Snapshot>, tcp: Arc<TcpProxy>, drain: Drain)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tcp.stats.cx.inc();
    let start = Instant::now();
    let started = tcp.log.as_ref().map(|_| now_rfc3339());
    let cluster_name = pick(&tcp.config.clusters);
    let mut entry = Entry {
        protocol: "TCP".into(),
        response_flags: "-".into(),
        downstream_remote_address: peer.to_string(),
        upstream_cluster: Some(cluster_name.to_string()),
        ..Default::default()
    };
    let outcome = async {
        let cluster = snapshot.clusters.get(cluster_name).ok_or(Flag::NoCluster)?;
        let ep = cluster.pick().ok_or_else(|| {
            cluster.stats.none_healthy.inc();
            Flag::NoHealthyUpstream
        })?;
        entry.upstream_host = Some(ep.addr.to_string());
        let mut up = match connect_tcp(ep.addr, cluster.config.connect_timeout).await {
            Ok(s) => s,
            Err(_) => {
                cluster.stats.connect_fail.inc();
                return Err(Flag::UpstreamConnectFailure);
            }
        };
        cluster.stats.cx.inc();
        cluster.stats.cx_active.inc();
        let r = copy_both(&mut down, &mut up, tcp.config.idle_timeout, &drain).await;
        cluster.stats.cx_active.dec();
        Ok(r)
    }
    .await;
    match outcome {
        Ok((rx, tx)) => {
            tcp.stats.rx.inc_by(rx);
            tcp.stats.tx.inc_by(tx);
            entry.bytes_received = rx;
            entry.bytes_sent = tx;
        }
        Err(flag) => entry.response_flags = flag.as_str().into(),
    }
    if let (Some(log), Some(t)) = (&tcp.log, started) {
        entry.start_time = t;
        entry.duration_ms = start.elapsed().as_millis() as u64;
        log.log(&entry);
    }
}

fn pick(clusters: &[(String, u32)]) -> &str {
    if clusters.len() == 1 {
        return &clusters[0].0;
    }
    let total: u64 = clusters.iter().map(|c| c.1 as u64).sum();
    let mut r = fastrand::u64(0..total.max(1));
    for (name, w) in clusters {
        if r < *w as u64 {
            return name;
        }
        r -= *w as u64;
    }
    &clusters[0].0
}

/// Copies both directions; returns (bytes from downstream, bytes to downstream).
async fn copy_both<D>(down: &mut D, up: &mut TcpStream, idle: Option<Duration>, drain: &Drain) -> (u64, u64)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let (mut dr, mut dw) = tokio::io::split(down);
    let (mut ur, mut uw) = up.split();
    let mut b1 = vec![0u8; BUF];
    let mut b2 = vec![0u8; BUF];
    let (mut rx, mut tx) = (0u64, 0u64);
    let (mut down_open, mut up_open) = (true, true);
    let idle = idle.unwrap_or(Duration::from_secs(u64::MAX / 4));
    let mut last = tokio::time::Instant::now();
    while down_open || up_open {
        tokio::select! {
            r = dr.read(&mut b1), if down_open => match r {
                Ok(0) | Err(_) => { down_open = false; let _ = uw.shutdown().await; }
                Ok(n) => { if uw.write_all(&b1[..n]).await.is_err() { break; } rx += n as u64; last = tokio::time::Instant::now(); }
            },
            r = ur.read(&mut b2), if up_open => match r {
                Ok(0) | Err(_) => { up_open = false; let _ = dw.shutdown().await; }
                Ok(n) => { if dw.write_all(&b2[..n]).await.is_err() { break; } tx += n as u64; last = tokio::time::Instant::now(); }
            },
            _ = tokio::time::sleep_until(last + idle) => break,
            _ = drain.signaled(), if !drain.is_draining() => {
                // Opaque TCP cannot be drained gracefully; it keeps flowing until the drain deadline.
            }
        }
    }
    (rx, tx)
}
