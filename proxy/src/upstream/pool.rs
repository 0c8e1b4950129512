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

#[derive(Default)]
struct Slot {
    /// Idle connections with the time they went idle.
    h1: Vec<(http1::SendRequest<RequestBody>, std::time::Instant)>,
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
    pub fn take_h1(&self, idle_timeout: Option<Duration>) -> Option<http1::SendRequest<RequestBody>> {
        let mut s = self.slot();
        while let Some((c, since)) = s.h1.pop() {
            if c.is_closed() || idle_timeout.is_some_and(|t| since.elapsed() > t) {
                continue;
            }
            return Some(c);
        }
        None
    }

    pub fn put_h1(&self, c: http1::SendRequest<RequestBody>) {
        if c.is_closed() {
            return;
        }
        let mut s = self.slot();
        if s.h1.len() < MAX_IDLE_H1 {
            s.h1.push((c, std::time::Instant::now()));
        }
    }

    pub fn h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut s = self.slot();
        match &s.h2 {
            Some((c, uses)) if !c.is_closed() => {
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

pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let s = tokio::time::timeout(timeout, TcpStream::connect(addr)).await.map_err(|_| ConnectError::Timeout)??;
    let _ = s.set_nodelay(true);
    Ok(s)
}
