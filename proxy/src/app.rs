//! Wires the parts together: loads config, binds listeners, starts workers and the admin server,
//! owns shutdown and drain.
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::listener::ListenerManager;
use crate::snapshot::{self, Snapshot};
use crate::upstream::{dns, pool};

pub struct Options {
    pub config: Option<PathBuf>,
    pub concurrency: usize,
    pub drain_time: Duration,
    pub admin_address_path: Option<PathBuf>,
    pub log: LogControl,
    /// Node metadata announced over xDS (Istio's, in sidecar and router modes).
    pub node_metadata: std::collections::BTreeMap<String, String>,
    /// Sidecar/router modes: `GET /healthz/ready` here (15021) and `/stats/prometheus` (15090).
    pub health_addr: Option<std::net::SocketAddr>,
    pub prometheus_addr: Option<std::net::SocketAddr>,
}

/// Changes the log filter at runtime (admin `/logging`).
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The default configuration when no `-c` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/front-proxy.yaml");

const STATE_LIVE: u8 = 0;
const STATE_DRAINING: u8 = 1;
const STATE_INITIALIZING: u8 = 2;

pub struct App {
    pub live: Arc<ArcSwap<Snapshot>>,
    pub listeners: ListenerManager,
    pub started: Instant,
    pub loaded_at: String,
    pub concurrency: usize,
    /// The bound readiness (15021) and Prometheus (15090) addresses in sidecar/router modes.
    pub probe_addrs: (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>),
    /// Resources received over xDS, for `/config_dump` (None without dynamic_resources).
    pub xds: Option<Arc<crate::xds::XdsDump>>,
    state: AtomicU8,
    /// The initial fetch timeout is running (see `mark_initialized_after`).
    init_timer: AtomicBool,
    quit: Notify,
    log: LogControl,
    apply_lock: Mutex<()>,
}

impl App {
    pub fn state(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            STATE_LIVE => "LIVE",
            STATE_INITIALIZING => "PRE_INITIALIZING",
            _ => "DRAINING",
        }
    }
    pub fn quit(&self) {
        self.quit.notify_one();
    }
    pub fn set_log_level(&self, level: &str) -> Result<(), String> {
        (self.log)(level)
    }
    /// Stops accepting on every listener and drains their connections (admin `/drain_listeners`).
    pub fn drain_listeners(&self) {
        self.state.store(STATE_DRAINING, Ordering::Relaxed);
        self.listeners.signal_all();
    }
    /// Ready once the first dynamic configuration is in (immediately for static config); it stays
    /// ready if the control plane goes away later.
    /// Whether every listener named is in the live snapshot (warm: its routes have arrived).
    pub fn listeners_warm<'a>(&self, mut names: impl Iterator<Item = &'a String>) -> bool {
        let snap = self.live.load();
        names.all(|n| snap.listeners.iter().any(|l| &l.config.name == n))
    }

    /// Initialising → LIVE; false when it was not initialising any more.
    pub fn mark_initialized(&self) -> bool {
        self.state.compare_exchange(STATE_INITIALIZING, STATE_LIVE, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Marks the proxy initialised `after` from now (once: later calls do nothing), unless it is
    /// by then already.
    pub fn mark_initialized_after(self: &Arc<Self>, after: Duration) {
        if self.init_timer.swap(true, Ordering::Relaxed) {
            return;
        }
        let app = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if app.mark_initialized() {
                tracing::info!(?after, "initial fetch timeout: initialised without the endpoints still missing");
            }
        });
    }

    /// Binds new listeners, drains removed ones, then publishes the snapshot built from `inputs`.
    /// On a bind failure nothing changes and the error is returned (an xDS update is NACKed).
    pub fn apply(&self, inputs: snapshot::Inputs, changed: &HashSet<String>) -> Result<(), anyhow::Error> {
        let _serial = self.apply_lock.lock().unwrap();
        let previous = self.live.load_full();
        let next = publishable(&self.listeners, inputs, Some(&previous), changed)?;
        for (name, c) in &next.clusters {
            let is_new = previous.clusters.get(name).is_none_or(|old| !Arc::ptr_eq(old, c));
            if is_new && dns::needs_dns(c) {
                tokio::spawn(dns::refresh_loop(Arc::downgrade(c)));
            }
        }
        self.live.store(Arc::new(next));
        Ok(())
    }
}

/// Builds the snapshot and binds its listeners. Only warm listeners (routes present) are in a
/// snapshot, and only those are bound. A listener on port 0 gets its real port written back, so
/// that stats and admin name the address it is actually on.
fn publishable(
    manager: &ListenerManager,
    mut inputs: snapshot::Inputs,
    previous: Option<&Snapshot>,
    changed: &HashSet<String>,
) -> anyhow::Result<Snapshot> {
    let next = Snapshot::build_from(inputs.clone(), previous)?;
    let mut warm: Vec<_> = next.listeners.iter().map(|l| l.config.clone()).collect();
    manager.sync(&mut warm, changed)?;
    let resolved: std::collections::HashMap<&str, std::net::SocketAddr> =
        warm.iter().map(|l| (l.name.as_str(), l.address)).collect();
    if next.listeners.iter().all(|l| resolved.get(l.config.name.as_str()) == Some(&l.config.address)) {
        return Ok(next);
    }
    for l in &mut inputs.listeners {
        if let Some(a) = resolved.get(l.name.as_str()) {
            l.address = *a;
        }
    }
    Ok(Snapshot::build_from(inputs, previous)?)
}

/// Loads and compiles the bootstrap; errors are configuration errors (exit 1).
pub fn load(path: Option<&std::path::Path>) -> Result<crate::config::Bootstrap, crate::translate::ConfigError> {
    match path {
        Some(p) => {
            let b = crate::translate::load_bootstrap_file(p)?;
            crate::translate::translate_bootstrap(&b).map_err(|e| e.in_file(p))
        }
        None => {
            let b = crate::translate::parse_bootstrap(EMBEDDED_DEFAULT, false)?;
            crate::translate::translate_bootstrap(&b)
        }
    }
}

/// Returns freed heap pages to the OS. Config parsing builds large, short-lived structures (the
/// Envoy descriptor pool); without this they would stay in the resident set.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn run(opts: Options, bootstrap: crate::config::Bootstrap) -> anyhow::Result<()> {
    release_free_memory();
    let concurrency = opts.concurrency.max(1);
    pool::set_worker_count(concurrency);
    let admin_addr = bootstrap.admin;
    let dynamic = bootstrap.dynamic.clone();

    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _guard = control.enter();
    let mut worker_rx = Vec::new();
    let mut worker_tx = Vec::new();
    for _ in 0..concurrency {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        worker_tx.push(tx);
        worker_rx.push(rx);
    }
    let listeners = ListenerManager::new(worker_tx, opts.drain_time);
    let base = bootstrap.clone();
    let inputs = snapshot::Inputs::from_bootstrap(1, bootstrap);
    let snapshot = publishable(&listeners, inputs, None, &HashSet::new()).context("building configuration")?;
    let live = Arc::new(ArcSwap::from_pointee(snapshot));

    let admin_listener = match admin_addr {
        Some(a) => {
            if !a.ip().is_loopback() {
                anyhow::bail!("admin: address {a} is not a loopback address; admin binds to loopback only");
            }
            let l = control
                .block_on(tokio::net::TcpListener::bind(a))
                .with_context(|| format!("admin: cannot bind {a}"))?;
            Some(l)
        }
        None => None,
    };
    let admin_bound = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let bind_probe = |a: Option<std::net::SocketAddr>| -> anyhow::Result<Option<tokio::net::TcpListener>> {
        match a {
            Some(a) => Ok(Some(
                control.block_on(tokio::net::TcpListener::bind(a)).with_context(|| format!("cannot bind {a}"))?,
            )),
            None => Ok(None),
        }
    };
    let health = bind_probe(opts.health_addr)?;
    let prometheus = bind_probe(opts.prometheus_addr)?;
    let probe_addrs =
        (health.as_ref().and_then(|l| l.local_addr().ok()), prometheus.as_ref().and_then(|l| l.local_addr().ok()));
    let app = Arc::new(App {
        live: live.clone(),
        listeners,
        started: Instant::now(),
        loaded_at: crate::telemetry::access_log::now_rfc3339(),
        concurrency,
        probe_addrs,
        xds: dynamic.as_ref().map(|_| Arc::new(crate::xds::XdsDump::default())),
        state: AtomicU8::new(if dynamic.is_some() { STATE_INITIALIZING } else { STATE_LIVE }),
        init_timer: AtomicBool::new(false),
        quit: Notify::new(),
        log: opts.log,
        apply_lock: Mutex::new(()),
    });

    for (worker, rx) in worker_rx.into_iter().enumerate() {
        let live = live.clone();
        std::thread::Builder::new().name(format!("worker-{worker}")).spawn(move || {
            pool::set_worker_id(worker);
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "worker runtime failed to start");
                    std::process::exit(1);
                }
            };
            rt.block_on(crate::listener::manager::run_worker(rx, live))
        })?;
    }

    control.block_on(async move {
        for c in app.live.load().clusters.values() {
            if dns::needs_dns(c) {
                dns::resolve_once(c).await;
                tokio::spawn(dns::refresh_loop(Arc::downgrade(c)));
            }
        }
        if let Some(l) = admin_listener {
            tokio::spawn(crate::admin::serve(l, app.clone()));
        }
        for l in [health, prometheus].into_iter().flatten() {
            tokio::spawn(crate::admin::serve_probe(l, app.clone()));
        }
        if let Some(d) = dynamic {
            let node = crate::xds::node(&base, opts.node_metadata.clone());
            tokio::spawn(crate::xds::run(app.clone(), base, d, node));
        }
        if let (Some(path), Some(addr)) = (&opts.admin_address_path, admin_bound) {
            std::fs::write(path, addr.to_string()).with_context(|| format!("writing {}", path.display()))?;
        }
        tracing::info!(listeners = ?app.listeners.bound(), admin = ?admin_bound, concurrency, "outrigger started");
        wait_for_shutdown(&app).await;
        app.drain_listeners();
        if !app.listeners.drain_all(opts.drain_time).await {
            tracing::warn!("drain deadline passed with connections still open");
        }
        tracing::info!("shutdown complete");
        Ok::<_, anyhow::Error>(())
    })
}

async fn wait_for_shutdown(app: &App) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
        _ = app.quit.notified() => tracing::info!("quitquitquit: draining"),
    }
}
