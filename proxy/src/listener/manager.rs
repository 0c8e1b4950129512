//! The listener manager: keeps the bound listeners in step with the snapshot. New listeners are
//! bound once and handed to every worker; a removed listener (or one whose address changed) stops
//! accepting and drains its connections, while the others are untouched.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::config::ListenerConfig;
use crate::drain::{self, Drain, DrainTrigger};
use crate::snapshot::Snapshot;

/// A worker is told to accept on a (duplicated) listening socket until `stop` fires; each
/// connection it accepts takes the connection drain current at that moment.
pub struct Accept {
    pub name: String,
    pub socket: std::net::TcpListener,
    pub stop: Drain,
    pub conns: Arc<ArcSwap<Drain>>,
}

struct Bound {
    configured: SocketAddr,
    bound: SocketAddr,
    /// Stops the accept loops.
    stop: DrainTrigger,
    /// The drain handed to new connections, and its trigger (one per listener version).
    conns: Arc<ArcSwap<Drain>>,
    conns_trigger: DrainTrigger,
}

impl Bound {
    /// Stops accepting and drains every connection; resolves when they are gone or at `deadline`.
    async fn close(self, deadline: Duration) -> bool {
        self.stop.signal();
        // Let go of the receiver kept for new connections, so the drain can complete.
        self.conns.store(Arc::new(drain::channel().1));
        let (a, b) = tokio::join!(self.stop.drain(deadline), self.conns_trigger.drain(deadline));
        a && b
    }
}

pub struct ListenerManager {
    workers: Vec<mpsc::UnboundedSender<Accept>>,
    bound: Mutex<HashMap<String, Bound>>,
    drain_time: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("listener \"{name}\": cannot bind {address}: {source}")]
pub struct BindError {
    pub name: String,
    pub address: SocketAddr,
    pub source: std::io::Error,
}

impl ListenerManager {
    pub fn new(workers: Vec<mpsc::UnboundedSender<Accept>>, drain_time: Duration) -> ListenerManager {
        ListenerManager { workers, bound: Mutex::new(HashMap::new()), drain_time }
    }

    /// Binds what is new (port 0 is resolved and written back into the config), drains what is
    /// gone. Binding happens before anything is changed, so a failure leaves everything as it was.
    pub fn sync(&self, listeners: &mut [ListenerConfig], changed: &HashSet<String>) -> Result<(), BindError> {
        let mut bound = self.bound.lock().unwrap();
        let mut fresh = Vec::new();
        for l in listeners.iter_mut() {
            match bound.get(&l.name) {
                Some(b) if b.configured == l.address || b.bound == l.address => l.address = b.bound,
                _ => {
                    let configured = l.address;
                    let s = super::bind(l).map_err(|source| BindError {
                        name: l.name.clone(),
                        address: configured,
                        source,
                    })?;
                    l.address = s.local_addr().unwrap_or(configured);
                    fresh.push((l.name.clone(), configured, l.address, s));
                }
            }
        }
        let keep: std::collections::HashSet<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        let fresh_names: std::collections::HashSet<&str> = fresh.iter().map(|f| f.0.as_str()).collect();
        let gone: Vec<String> =
            bound.keys().filter(|n| !keep.contains(n.as_str()) || fresh_names.contains(n.as_str())).cloned().collect();
        for name in gone {
            if let Some(b) = bound.remove(&name) {
                tracing::info!(listener = %name, address = %b.bound, "listener removed: draining");
                let deadline = self.drain_time;
                tokio::spawn(b.close(deadline));
            }
        }
        // A listener updated in place keeps its socket; its existing connections drain.
        for name in changed {
            if let Some(b) = bound.get_mut(name) {
                let (trigger, drain) = drain::channel();
                b.conns.store(Arc::new(drain));
                let old = std::mem::replace(&mut b.conns_trigger, trigger);
                tracing::info!(listener = %name, "listener updated: draining connections of the old version");
                tokio::spawn(old.drain(self.drain_time));
            }
        }
        for (name, configured, addr, socket) in fresh {
            let (stop, stop_rx) = drain::channel();
            let (conns_trigger, conns_rx) = drain::channel();
            let conns = Arc::new(ArcSwap::from_pointee(conns_rx));
            for w in &self.workers {
                if let Ok(s) = socket.try_clone() {
                    let _ =
                        w.send(Accept { name: name.clone(), socket: s, stop: stop_rx.clone(), conns: conns.clone() });
                }
            }
            tracing::info!(listener = %name, address = %addr, "listener added");
            bound.insert(name, Bound { configured, bound: addr, stop, conns, conns_trigger });
        }
        Ok(())
    }

    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<_> = self.bound.lock().unwrap().iter().map(|(n, b)| (n.clone(), b.bound)).collect();
        v.sort();
        v
    }

    /// Stops accepting everywhere without waiting (admin `/drain_listeners`).
    pub fn signal_all(&self) {
        for b in self.bound.lock().unwrap().values() {
            b.stop.signal();
            b.conns_trigger.signal();
        }
    }

    /// Stops every listener and waits for their connections, up to `deadline`.
    pub async fn drain_all(&self, deadline: Duration) -> bool {
        let all: Vec<Bound> = self.bound.lock().unwrap().drain().map(|(_, b)| b).collect();
        let waits = all.into_iter().map(|b| b.close(deadline));
        futures_util::future::join_all(waits).await.into_iter().all(|ok| ok)
    }
}

/// A worker's loop: accept on every listener it is handed.
pub async fn run_worker(mut rx: mpsc::UnboundedReceiver<Accept>, live: Arc<ArcSwap<Snapshot>>) {
    while let Some(a) = rx.recv().await {
        tokio::spawn(super::run_accept_loop(a.name, a.socket, live.clone(), a.stop, a.conns));
    }
    // Connections finish on this runtime; the main thread decides when to exit.
    std::future::pending::<()>().await
}
