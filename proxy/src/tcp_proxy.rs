//! L4 proxy: pick a cluster and endpoint, connect, copy bytes both ways. Half-close is passed
//! through (a FIN from one side shuts down writing towards the other, and the other direction
//! keeps flowing); an idle connection is closed after `idle_timeout`.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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

pub async fn serve<IO>(
    mut down: IO,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
    snapshot: Arc<Snapshot>,
    tcp: Arc<TcpProxy>,
    drain: Drain,
) where
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
        let ep = cluster.pick_for(original_dst).ok_or_else(|| {
            cluster.stats.none_healthy.inc();
            Flag::NoHealthyUpstream
        })?;
        entry.upstream_host = Some(ep.addr.to_string());
        let mut up =
            match connect_tcp(ep.addr, cluster.config.connect_timeout, cluster.config.tcp_keepalive.as_ref()).await {
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
///
/// The two directions run independently: a write that waits for one peer to read never stops
/// the other direction from flowing (with a single loop, a full buffer each way deadlocks an
/// echoing upstream). A write error ends both; a FIN ends only its own direction.
async fn copy_both<D>(down: &mut D, up: &mut TcpStream, idle: Option<Duration>, _drain: &Drain) -> (u64, u64)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    // Opaque TCP cannot be drained gracefully; it keeps flowing until the drain deadline.
    let (mut dr, mut dw) = tokio::io::split(down);
    let (mut ur, mut uw) = up.split();
    let (mut rx, mut tx) = (0u64, 0u64);
    let base = tokio::time::Instant::now();
    // Milliseconds since `base` of the last byte moved either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(base.elapsed().as_millis() as u64, Ordering::Relaxed);
    let down_to_up = async {
        let mut buf = vec![0u8; BUF];
        loop {
            match dr.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = uw.shutdown().await;
                    return Ok::<(), ()>(());
                }
                Ok(n) => {
                    uw.write_all(&buf[..n]).await.map_err(|_| ())?;
                    rx += n as u64;
                    touch();
                }
            }
        }
    };
    let up_to_down = async {
        let mut buf = vec![0u8; BUF];
        loop {
            match ur.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = dw.shutdown().await;
                    return Ok::<(), ()>(());
                }
                Ok(n) => {
                    dw.write_all(&buf[..n]).await.map_err(|_| ())?;
                    tx += n as u64;
                    touch();
                }
            }
        }
    };
    let idle_watch = async {
        let Some(idle) = idle else { return std::future::pending().await };
        loop {
            let deadline = base + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        _ = async { tokio::try_join!(down_to_up, up_to_down) } => {}
        _ = idle_watch => {}
    }
    (rx, tx)
}
