//! Wires the parts together: loads config, binds listeners, starts workers and the admin server,
//! owns shutdown and drain.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::drain::{self, DrainTrigger};
use crate::snapshot::Snapshot;
use crate::upstream::{dns, pool};

pub struct Options {
    pub config: Option<PathBuf>,
    pub concurrency: usize,
    pub drain_time: Duration,
    pub admin_address_path: Option<PathBuf>,
    pub log: LogControl,
}

/// Changes the log filter at runtime (admin `/logging`).
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The default configuration when no `-c` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../examples/front-proxy.yaml");

const STATE_LIVE: u8 = 0;
const STATE_DRAINING: u8 = 1;

pub struct App {
    pub live: Arc<ArcSwap<Snapshot>>,
    pub bound: Vec<(String, SocketAddr)>,
    pub started: Instant,
    pub loaded_at: String,
    pub concurrency: usize,
    state: AtomicU8,
    quit: Notify,
    listener_drain: Mutex<Option<DrainTrigger>>,
    log: LogControl,
}

impl App {
    pub fn state(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            STATE_LIVE => "LIVE",
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
        if let Some(t) = self.listener_drain.lock().unwrap().as_ref() {
            t.signal();
        }
    }
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
    let mut bootstrap = bootstrap;
    let mut sockets = Vec::new();
    let mut bound = Vec::new();
    for l in &mut bootstrap.listeners {
        let s =
            crate::listener::bind(l).with_context(|| format!("listener \"{}\": cannot bind {}", l.name, l.address))?;
        // Port 0 becomes the port the OS chose, so stats and admin name the real address.
        l.address = s.local_addr()?;
        bound.push((l.name.clone(), l.address));
        sockets.push((l.name.clone(), s));
    }
    let snapshot = Snapshot::build(1, bootstrap).context("building configuration")?;
    let live = Arc::new(ArcSwap::from_pointee(snapshot));
    let (trigger, drain) = drain::channel();

    let control = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
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
    let app = Arc::new(App {
        live: live.clone(),
        bound,
        started: Instant::now(),
        loaded_at: crate::telemetry::access_log::now_rfc3339(),
        concurrency,
        state: AtomicU8::new(STATE_LIVE),
        quit: Notify::new(),
        listener_drain: Mutex::new(Some(trigger)),
        log: opts.log,
    });

    for worker in 0..concurrency {
        let mut socks = Vec::new();
        for (name, s) in &sockets {
            socks.push((name.clone(), s.try_clone()?));
        }
        let live = live.clone();
        let drain = drain.clone();
        std::thread::Builder::new().name(format!("worker-{worker}")).spawn(move || {
            pool::set_worker_id(worker);
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "worker runtime failed to start");
                    std::process::exit(1);
                }
            };
            rt.block_on(async move {
                let loops: Vec<_> = socks
                    .into_iter()
                    .map(|(name, s)| {
                        tokio::spawn(crate::listener::run_accept_loop(name, s, live.clone(), drain.clone()))
                    })
                    .collect();
                drop(drain);
                for l in loops {
                    let _ = l.await;
                }
                // Connections finish on this runtime; the main thread decides when to exit.
                std::future::pending::<()>().await
            })
        })?;
    }
    drop(drain);
    drop(sockets);

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
        if let (Some(path), Some(addr)) = (&opts.admin_address_path, admin_bound) {
            std::fs::write(path, addr.to_string()).with_context(|| format!("writing {}", path.display()))?;
        }
        tracing::info!(listeners = ?app.bound, admin = ?admin_bound, concurrency, "outrigger started");
        wait_for_shutdown(&app).await;
        app.drain_listeners();
        let trigger = app.listener_drain.lock().unwrap().take();
        if let Some(t) = trigger {
            if !t.drain(opts.drain_time).await {
                tracing::warn!("drain deadline passed with connections still open");
            }
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
