//! Serving: the ADS endpoint, the directory watcher, and the monitoring endpoints.
pub mod ads;
pub mod cache;
pub mod delta;
pub mod monitor;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch as tokio_watch;

use crate::istio::diff::Change;
use crate::istio::{LoadError, Registry};

/// What one connected proxy has been sent and has said back.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ProxyStatus {
    pub id: String,
    pub namespace: String,
    /// type URL → version last ACKed.
    pub acked: BTreeMap<String, String>,
    /// type URL → error of the last NACK (cleared by a later ACK).
    pub nacked: BTreeMap<String, String>,
    /// type URL → version last sent.
    pub sent: BTreeMap<String, String>,
    /// What the generator knows of it.
    #[serde(skip)]
    pub info: crate::generate::ProxyInfo,
}

pub struct Metrics {
    pub pushes: Counter,
    pub nacks: Counter,
    pub connected: Gauge,
    pub push_time: Histogram,
    pub config_errors: Gauge,
}

/// Shared by the watcher, every ADS stream and the monitor.
pub struct Control {
    /// The registry in force and the configurations generated from it.
    pub cache: Mutex<cache::Cache>,
    /// Follows the cache's generation; streams look at the cache again when it moves.
    pub generation: tokio_watch::Sender<u64>,
    pub errors: Mutex<Vec<LoadError>>,
    pub proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
    pub next_conn: AtomicU64,
    pub metrics: Metrics,
    pub registry_metrics: Mutex<prometheus_client::registry::Registry>,
    pub pool: prost_reflect::DescriptorPool,
}

impl Control {
    pub fn new(reg: Registry) -> Arc<Control> {
        let metrics = Metrics {
            pushes: Counter::default(),
            nacks: Counter::default(),
            connected: Gauge::default(),
            push_time: Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            config_errors: Gauge::default(),
        };
        let mut r = prometheus_client::registry::Registry::default();
        r.register("pilot_xds_pushes", "xDS responses sent", metrics.pushes.clone());
        r.register("pilot_total_xds_rejects", "xDS NACKs received", metrics.nacks.clone());
        r.register("pilot_xds", "Connected proxies", metrics.connected.clone());
        r.register("pilot_xds_push_time_seconds", "Time to generate and send one push", metrics.push_time.clone());
        r.register(
            "outrigger_xds_config_errors",
            "Errors in the config directory (last load)",
            metrics.config_errors.clone(),
        );
        Arc::new(Control {
            cache: Mutex::new(cache::Cache::new(reg)),
            generation: tokio_watch::channel(1).0,
            errors: Mutex::new(Vec::new()),
            proxies: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(1),
            metrics,
            registry_metrics: Mutex::new(r),
            pool: outrigger_api::descriptor_pool(),
        })
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.cache.lock().unwrap().registry.clone()
    }

    /// Installs a new registry (from the watcher) and tells every stream to push what changed
    /// for it. An endpoint-only change regenerates only the affected ClusterLoadAssignments.
    pub fn update(&self, reg: Registry) {
        self.errors.lock().unwrap().clear();
        self.metrics.config_errors.set(0);
        let started = std::time::Instant::now();
        let old = self.registry();
        let change = crate::istio::diff::classify(&old, &reg);
        tracing::debug!(us = started.elapsed().as_micros() as u64, "change classified");
        let generation = match change {
            Change::Unchanged => return,
            Change::Endpoints(services) => {
                let cla = cache::load_assignments(&reg, &services);
                tracing::info!(services = services.len(), assignments = cla.len(), "endpoint-only change");
                let mut c = self.cache.lock().unwrap();
                c.patch_endpoints(reg, &cla);
                c.generation
            }
            Change::Full => {
                let mut c = self.cache.lock().unwrap();
                c.replace(reg);
                c.generation
            }
        };
        tracing::debug!(us = started.elapsed().as_micros() as u64, "cache updated");
        self.generation.send_replace(generation);
    }

    /// Records a proxy's ACK (`error` None) or NACK of `type_url` for `/debug/syncz` and metrics.
    pub fn record_reply(&self, conn: u64, type_url: &str, version: &str, error: Option<&str>) {
        let mut proxies = self.proxies.lock().unwrap();
        let Some(p) = proxies.get_mut(&conn) else { return };
        match error {
            Some(e) => {
                self.metrics.nacks.inc();
                tracing::warn!(proxy = %p.id, type_url, error = e, "NACK");
                p.nacked.insert(type_url.to_string(), e.to_string());
            }
            None => {
                p.nacked.remove(type_url);
                p.acked.insert(type_url.to_string(), version.to_string());
            }
        }
    }

    pub fn reject(&self, errors: Vec<LoadError>) {
        for e in &errors {
            tracing::error!(error = %e, "configuration rejected; the last good configuration stays in force");
        }
        self.metrics.config_errors.set(errors.len() as i64);
        *self.errors.lock().unwrap() = errors;
    }
}
