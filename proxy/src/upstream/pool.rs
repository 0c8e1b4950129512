//! Per-endpoint connection pools, one slot per worker thread so that a connection is only ever
//! used by the thread (and runtime) that drives it.
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use tokio::net::TcpStream;

use crate::http::request_body::RequestBody;

/// Idle HTTP/1.1 connections kept per endpoint and worker.
const MAX_IDLE_H1: usize = 256;

static WORKERS: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static WORKER_ID: Cell<usize> = const { Cell::new(0) };
}

/// Called once at start-up, before any cluster is built.
pub fn set_worker_count(n: usize) {
    WORKERS.store(n.max(1), Ordering::Relaxed);
}

/// Called at the start of each worker thread.
pub fn set_worker_id(id: usize) {
    WORKER_ID.with(|w| w.set(id));
}

fn worker_id() -> usize {
    WORKER_ID.with(|w| w.get())
}

/// An HTTP/1.1 connection with what `max_requests_per_connection` and
/// `max_connection_duration` need to know.
pub struct H1Conn {
    pub sender: http1::SendRequest<RequestBody>,
    pub created: std::time::Instant,
    /// Requests sent on it so far.
    pub uses: u32,
}

#[derive(Default)]
struct Slot {
    /// Idle connections with the time they went idle.
    h1: Vec<(H1Conn, std::time::Instant)>,
    /// The connection, and how many requests took it (its idle watcher reads that).
    h2: Option<(http2::SendRequest<RequestBody>, Arc<AtomicU64>)>,
}

/// Allocated on first use: a mesh config has tens of thousands of endpoints, most never used by
/// a given sidecar.
pub struct Pool(std::sync::OnceLock<Box<PoolInner>>);

struct PoolInner {
    slots: Box<[Mutex<Slot>]>,
    /// Held while an HTTP/2 connection is being opened, so that concurrent first requests wait
    /// for that one connection instead of each opening their own.
    h2_connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pool")
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl Pool {
    pub fn new() -> Pool {
        Pool(std::sync::OnceLock::new())
    }

    fn inner(&self) -> &PoolInner {
        self.0.get_or_init(|| {
            let n = WORKERS.load(Ordering::Relaxed);
            Box::new(PoolInner {
                slots: (0..n).map(|_| Mutex::new(Slot::default())).collect(),
                h2_connecting: tokio::sync::Mutex::new(()),
            })
        })
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        let slots = &self.inner().slots;
        let i = worker_id() % slots.len();
        slots[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle HTTP/1.1 connection that the peer has not closed and that has not been idle for
    /// longer than the cluster's `idle_timeout` (older ones are dropped, which closes them).
    /// With how long it has been idle.
    pub fn take_h1(&self, idle_timeout: Option<Duration>) -> Option<(H1Conn, Duration)> {
        let mut s = self.slot();
        while let Some((c, since)) = s.h1.pop() {
            let idle = since.elapsed();
            if c.sender.is_closed() || idle_timeout.is_some_and(|t| idle > t) {
                continue;
            }
            return Some((c, idle));
        }
        None
    }

    /// Keeps `c` for reuse, unless it is closed or has reached `max_uses` or `max_age`
    /// (then it is dropped, which closes it).
    pub fn put_h1(&self, c: H1Conn, max_uses: Option<u32>, max_age: Option<Duration>) {
        if c.sender.is_closed()
            || max_uses.is_some_and(|m| c.uses >= m)
            || max_age.is_some_and(|m| c.created.elapsed() >= m)
        {
            return;
        }
        let mut s = self.slot();
        if s.h1.len() < MAX_IDLE_H1 {
            s.h1.push((c, std::time::Instant::now()));
        }
    }

    /// This worker's HTTP/2 connection, unless it is closed or has carried `max_uses` streams.
    pub fn h2(&self, max_uses: Option<u32>) -> Option<http2::SendRequest<RequestBody>> {
        let mut s = self.slot();
        match &s.h2 {
            Some((c, uses)) if !c.is_closed() && max_uses.is_none_or(|m| uses.load(Ordering::Relaxed) < m as u64) => {
                uses.fetch_add(1, Ordering::Relaxed);
                Some(c.clone())
            }
            Some(_) => {
                s.h2 = None;
                None
            }
            None => None,
        }
    }

    /// Serialises opening HTTP/2 connections to this endpoint; check [`Pool::h2`] again once held.
    pub async fn h2_connect_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner().h2_connecting.lock().await
    }

    /// Keeps `c` as this worker's connection; returns its use counter.
    pub fn set_h2(&self, c: http2::SendRequest<RequestBody>) -> Arc<AtomicU64> {
        let uses = Arc::new(AtomicU64::new(1));
        self.slot().h2 = Some((c, uses.clone()));
        uses
    }

    /// Forgets this worker's HTTP/2 connection (it went away).
    pub fn clear_h2(&self) {
        self.slot().h2 = None;
    }

    /// Forgets the HTTP/2 connection whose use counter is `uses`, if it is still a worker's
    /// (its `max_connection_duration` is up: no new streams; it closes once its streams end).
    pub fn retire_h2(&self, uses: &Arc<AtomicU64>) {
        let Some(inner) = self.0.get() else { return };
        for slot in inner.slots.iter() {
            let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
            if s.h2.as_ref().is_some_and(|(_, u)| Arc::ptr_eq(u, uses)) {
                s.h2 = None;
            }
        }
    }

    pub fn idle_h1(&self) -> usize {
        let Some(inner) = self.0.get() else { return 0 };
        inner.slots.iter().map(|s| s.lock().map(|s| s.h1.len()).unwrap_or(0)).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection timeout")]
    Timeout,
    #[error("connection failure: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<&crate::config::cluster::TcpKeepalive>,
) -> Result<TcpStream, ConnectError> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| ConnectError::Timeout)??;
    let _ = s.set_nodelay(true);
    if let Some(k) = keepalive {
        let mut ka = socket2::TcpKeepalive::new();
        if let Some(t) = k.time {
            ka = ka.with_time(t);
        }
        if let Some(i) = k.interval {
            ka = ka.with_interval(i);
        }
        if let Some(p) = k.probes {
            ka = ka.with_retries(p);
        }
        socket2::SockRef::from(&s).set_tcp_keepalive(&ka)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_keepalive_options_are_set_on_the_socket() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ka = crate::config::cluster::TcpKeepalive {
            probes: Some(4),
            time: Some(Duration::from_secs(70)),
            interval: Some(Duration::from_secs(9)),
        };
        let s = connect_tcp(l.local_addr().unwrap(), Duration::from_secs(2), Some(&ka)).await.unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(70));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(9));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        let plain = connect_tcp(l.local_addr().unwrap(), Duration::from_secs(2), None).await.unwrap();
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
    }
}
