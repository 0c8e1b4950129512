use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::{filter_chain, tls_inspector};
use crate::config::ListenerConfig;
use crate::drain::Drain;
use crate::snapshot::{Filter, Snapshot};

/// How long the TLS inspector waits for a ClientHello before treating the stream as plaintext.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds a listener socket once; workers accept on duplicates of it.
pub fn bind(cfg: &ListenerConfig) -> std::io::Result<std::net::TcpListener> {
    let domain = if cfg.address.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if cfg.reuse_port {
        s.set_reuse_port(true)?;
    }
    if cfg.address.is_ipv6() {
        s.set_only_v6(!cfg.dual_stack)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&cfg.address.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

/// Accepts until `stop` fires. Each connection keeps the listener configuration current at
/// accept time and the connection drain current at accept time: a listener update swaps in a new
/// connection drain and fires the old one, so connections of the old version drain gracefully.
pub async fn run_accept_loop(
    name: String,
    socket: std::net::TcpListener,
    live: Arc<ArcSwap<Snapshot>>,
    stop: Drain,
    conns: Arc<ArcSwap<Drain>>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(socket)?;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.signaled() => return Ok(()),
        };
        let drain = Drain::clone(&conns.load());
        let (name, live) = (name.clone(), live.clone());
        tokio::spawn(async move { handle(stream, peer, &name, live, drain).await });
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, listener: &str, live: Arc<ArcSwap<Snapshot>>, drain: Drain) {
    let snapshot = live.load_full();
    let Some(l) = snapshot.listeners.iter().find(|l| l.config.name == listener).cloned() else { return };
    let _ = stream.set_nodelay(true);
    l.stats.cx.inc();
    l.stats.cx_active.inc();
    let local = stream.local_addr().unwrap_or(l.config.address);
    let original_dst = if l.config.use_original_dst { super::original_dst::get(&stream) } else { None };
    let local = original_dst.unwrap_or(local);
    let hello = if l.config.tls_inspector {
        tls_inspector::peek(&stream, INSPECT_TIMEOUT).await
    } else {
        tls_inspector::ClientHello::plaintext()
    };
    let chain = filter_chain::select(&l.chains, l.default_chain.as_ref(), local.port(), &hello);
    match chain.map(|c| c.filter.clone()) {
        Some(Filter::Http(hcm)) => crate::http::conn_manager::serve(stream, peer, original_dst, live, hcm, drain).await,
        Some(Filter::Tcp(tcp)) => crate::tcp_proxy::serve(stream, peer, original_dst, snapshot, tcp, drain).await,
        None => tracing::debug!(%peer, listener, "no filter chain matched; closing"),
    }
    l.stats.cx_active.dec();
}
