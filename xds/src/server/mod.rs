//! Serving: the ADS endpoint, the directory watcher, and the monitoring endpoints.
pub mod ads;
pub mod cache;
pub mod delta;
pub mod monitor;
pub mod stream;
pub mod watch;

use std::collections::BTreeMap;
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
    /// Requests handled (each with every response it called for sent): with `responses`, what
    /// a client can wait on to know the server is done with what it sent.
    pub requests: u64,
    /// Responses sent on this stream.
    pub responses: u64,
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

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            pushes: Counter::default(),
            nacks: Counter::default(),
            connected: Gauge::default(),
            push_time: Histogram::new([0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]),
            config_errors: Gauge::default(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Shared by the watcher, the ADS streams (through the hub) and the monitor.
pub struct Control {
    /// The registry in force and the configurations generated from it: the streams' source.
    pub source: Arc<cache::CacheSource>,
    /// The ADS streams: connected proxies and push metrics.
    pub hub: Arc<stream::Hub>,
    pub errors: Mutex<Vec<LoadError>>,
    pub registry_metrics: Mutex<prometheus_client::registry::Registry>,
    pub pool: prost_reflect::DescriptorPool,
}

impl Control {
    pub fn new(reg: Registry) -> Arc<Control> {
        let source = Arc::new(cache::CacheSource {
            cache: Mutex::new(cache::Cache::new(reg)),
            generation: tokio_watch::channel(1).0,
        });
        let hub = stream::Hub::new(source.clone(), None);
        let metrics = &hub.metrics;
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
            source,
            hub: hub.clone(),
            errors: Mutex::new(Vec::new()),
            registry_metrics: Mutex::new(r),
            pool: outrigger_api::descriptor_pool(),
        })
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.source.cache.lock().unwrap().registry.clone()
    }

    /// Installs a new registry (from the watcher) and tells every stream to push what changed
    /// for it. An endpoint-only change regenerates only the affected ClusterLoadAssignments.
    pub fn update(&self, reg: Registry) {
        self.errors.lock().unwrap().clear();
        self.hub.metrics.config_errors.set(0);
        let started = std::time::Instant::now();
        let old = self.registry();
        let change = crate::istio::diff::classify(&old, &reg);
        tracing::debug!(us = started.elapsed().as_micros() as u64, "change classified");
        let generation = match change {
            Change::Unchanged => return,
            Change::Endpoints(services) => {
                let cla = cache::load_assignments(&reg, &services);
                tracing::info!(services = services.len(), assignments = cla.len(), "endpoint-only change");
                let mut c = self.source.cache.lock().unwrap();
                c.patch_endpoints(reg, &cla);
                c.generation
            }
            Change::Full => {
                let mut c = self.source.cache.lock().unwrap();
                c.replace(reg);
                c.generation
            }
        };
        tracing::debug!(us = started.elapsed().as_micros() as u64, "cache updated");
        self.source.generation.send_replace(generation);
    }

    pub fn reject(&self, errors: Vec<LoadError>) {
        for e in &errors {
            tracing::error!(error = %e, "configuration rejected; the last good configuration stays in force");
        }
        self.hub.metrics.config_errors.set(errors.len() as i64);
        *self.errors.lock().unwrap() = errors;
    }
}
