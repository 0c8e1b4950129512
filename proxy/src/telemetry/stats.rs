//! Envoy-named counters and gauges, exported in Prometheus text format by the admin server.
//!
//! Families live for the whole process so that counters survive config reloads, as Envoy's do;
//! compiled config objects hold cloned handles, so the data path never looks a metric up by name.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Mutex<Registry>,
    listener_cx: Family<Labels, Counter>,
    listener_cx_active: Family<Labels, Gauge>,
    http_rq: Family<Labels, Counter>,
    http_rq_xx: Family<Labels, Counter>,
    http_cx: Family<Labels, Counter>,
    http_cx_active: Family<Labels, Gauge>,
    http_rq_active: Family<Labels, Gauge>,
    tcp_cx: Family<Labels, Counter>,
    tcp_rx: Family<Labels, Counter>,
    tcp_tx: Family<Labels, Counter>,
    /// 1 while the ADS stream is up (Envoy's `control_plane.connected_state`).
    pub xds_connected: Gauge,
    xds_update_success: Family<Labels, Counter>,
    xds_update_rejected: Family<Labels, Counter>,
}

pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            listener_cx: Family::default(),
            listener_cx_active: Family::default(),
            http_rq: Family::default(),
            http_rq_xx: Family::default(),
            http_cx: Family::default(),
            http_cx_active: Family::default(),
            http_rq_active: Family::default(),
            tcp_cx: Family::default(),
            tcp_rx: Family::default(),
            tcp_tx: Family::default(),
            xds_connected: Gauge::default(),
            xds_update_success: Family::default(),
            xds_update_rejected: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap();
            r.register("envoy_listener_downstream_cx", "Connections accepted", m.listener_cx.clone());
            r.register("envoy_listener_downstream_cx_active", "Active connections", m.listener_cx_active.clone());
            r.register("envoy_http_downstream_rq", "HTTP requests", m.http_rq.clone());
            r.register("envoy_http_downstream_rq_xx", "HTTP responses by class", m.http_rq_xx.clone());
            r.register("envoy_http_downstream_cx", "HTTP connections", m.http_cx.clone());
            r.register("envoy_http_downstream_cx_active", "Active HTTP connections", m.http_cx_active.clone());
            r.register("envoy_http_downstream_rq_active", "Active HTTP requests", m.http_rq_active.clone());
            r.register("envoy_tcp_downstream_cx", "TCP proxy connections", m.tcp_cx.clone());
            r.register("envoy_tcp_downstream_cx_rx_bytes", "Bytes received from downstream", m.tcp_rx.clone());
            r.register("envoy_tcp_downstream_cx_tx_bytes", "Bytes sent to downstream", m.tcp_tx.clone());
            r.register(
                "envoy_control_plane_connected_state",
                "1 while the xDS stream is connected",
                m.xds_connected.clone(),
            );
            r.register("envoy_xds_update_success", "xDS responses applied, by type", m.xds_update_success.clone());
            r.register(
                "envoy_xds_update_rejected",
                "xDS responses rejected (NACK), by type",
                m.xds_update_rejected.clone(),
            );
        }
        m
    }

    pub fn xds_update(&self, kind: &str, accepted: bool) {
        let f = if accepted { &self.xds_update_success } else { &self.xds_update_rejected };
        f.get_or_create(&l("type", kind)).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry.lock().unwrap());
        // Cluster series are kept as plain atomics (there can be tens of thousands of clusters)
        // and written here, in the same exposition format, before the end marker.
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        render_clusters(&mut out);
        out.push_str("# EOF\n");
        out
    }
}

fn l(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

fn classes(f: &Family<Labels, Counter>, k: &str, v: &str) -> [Counter; 5] {
    std::array::from_fn(|i| {
        f.get_or_create(&vec![
            (k.to_string(), v.to_string()),
            ("envoy_response_code_class".into(), format!("{}", i + 1)),
        ])
        .clone()
    })
}

#[derive(Clone, Debug)]
pub struct ListenerStats {
    pub cx: Counter,
    pub cx_active: Gauge,
}

impl ListenerStats {
    pub fn new(address: &str) -> Self {
        let m = metrics();
        let lb = l("envoy_listener_address", address);
        ListenerStats {
            cx: m.listener_cx.get_or_create(&lb).clone(),
            cx_active: m.listener_cx_active.get_or_create(&lb).clone(),
        }
    }

    /// Counters that are not exported (for a listener whose address is not known yet).
    pub fn unregistered() -> Self {
        ListenerStats { cx: Counter::default(), cx_active: Gauge::default() }
    }
}

#[derive(Clone, Debug)]
pub struct HttpStats {
    pub rq: Counter,
    pub rq_xx: [Counter; 5],
    pub cx: Counter,
    pub cx_active: Gauge,
    pub rq_active: Gauge,
}

impl HttpStats {
    pub fn new(prefix: &str) -> Self {
        let m = metrics();
        let k = "envoy_http_conn_manager_prefix";
        let lb = l(k, prefix);
        HttpStats {
            rq: m.http_rq.get_or_create(&lb).clone(),
            rq_xx: classes(&m.http_rq_xx, k, prefix),
            cx: m.http_cx.get_or_create(&lb).clone(),
            cx_active: m.http_cx_active.get_or_create(&lb).clone(),
            rq_active: m.http_rq_active.get_or_create(&lb).clone(),
        }
    }

    pub fn response(&self, status: u16) {
        if let Some(c) = self.rq_xx.get((status / 100).wrapping_sub(1) as usize) {
            c.inc();
        }
    }
}

/// A counter as one atomic.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge as one atomic.
#[derive(Debug, Default)]
pub struct Level(AtomicI64);

impl Level {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A cluster's counters: ~120 bytes of atomics, kept by name for the life of the process (as
/// Envoy keeps stats across config updates) rather than as a dozen labelled registry series.
#[derive(Debug, Default)]
pub struct ClusterCounters {
    pub rq: Count,
    pub rq_xx: [Count; 5],
    pub cx: Count,
    pub cx_active: Level,
    pub connect_fail: Count,
    pub connect_timeout: Count,
    pub rq_timeout: Count,
    pub none_healthy: Count,
}

impl ClusterCounters {
    pub fn response(&self, status: u16) {
        if let Some(c) = self.rq_xx.get((status / 100).wrapping_sub(1) as usize) {
            c.inc();
        }
    }
}

fn clusters() -> &'static Mutex<BTreeMap<Arc<str>, Arc<ClusterCounters>>> {
    static C: OnceLock<Mutex<BTreeMap<Arc<str>, Arc<ClusterCounters>>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

#[derive(Clone, Debug)]
pub struct ClusterStats(Arc<ClusterCounters>);

impl std::ops::Deref for ClusterStats {
    type Target = ClusterCounters;
    fn deref(&self) -> &ClusterCounters {
        &self.0
    }
}

impl ClusterStats {
    pub fn new(cluster: &str) -> Self {
        Self::named(&cluster.into())
    }

    /// As [`ClusterStats::new`], keeping the name given (shared with the cluster's config).
    pub fn named(cluster: &Arc<str>) -> Self {
        let mut map = clusters().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(&**cluster) {
            return ClusterStats(c.clone());
        }
        ClusterStats(map.entry(cluster.clone()).or_default().clone())
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// (name, help, read): one counter family of the cluster series.
type CounterFamily = (&'static str, &'static str, fn(&ClusterCounters) -> u64);

fn render_clusters(out: &mut String) {
    use std::fmt::Write;
    let map = clusters().lock().unwrap_or_else(|e| e.into_inner());
    let counters: [CounterFamily; 7] = [
        ("envoy_cluster_upstream_rq", "Upstream requests", |c| c.rq.get()),
        ("envoy_cluster_upstream_cx", "Upstream connections opened", |c| c.cx.get()),
        ("envoy_cluster_upstream_cx_connect_fail", "Upstream connect failures", |c| c.connect_fail.get()),
        ("envoy_cluster_upstream_cx_connect_timeout", "Upstream connect timeouts", |c| c.connect_timeout.get()),
        ("envoy_cluster_upstream_rq_timeout", "Upstream request timeouts", |c| c.rq_timeout.get()),
        ("envoy_cluster_upstream_cx_none_healthy", "Requests with no healthy upstream", |c| c.none_healthy.get()),
        ("envoy_cluster_upstream_rq_xx", "Upstream responses by class", |_| 0),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for (cluster, c) in map.iter() {
            let label = escape_label(cluster);
            if name == "envoy_cluster_upstream_rq_xx" {
                for (i, v) in c.rq_xx.iter().enumerate() {
                    let class = i + 1;
                    let _ = writeln!(
                        out,
                        "{name}_total{{envoy_cluster_name=\"{label}\",envoy_response_code_class=\"{class}\"}} {}",
                        v.get()
                    );
                }
            } else {
                let _ = writeln!(out, "{name}_total{{envoy_cluster_name=\"{label}\"}} {}", get(c));
            }
        }
    }
    let name = "envoy_cluster_upstream_cx_active";
    let _ = writeln!(out, "# HELP {name} Active upstream connections.\n# TYPE {name} gauge");
    for (cluster, c) in map.iter() {
        let _ = writeln!(out, "{name}{{envoy_cluster_name=\"{}\"}} {}", escape_label(cluster), c.cx_active.get());
    }
}

#[derive(Clone, Debug)]
pub struct TcpStats {
    pub cx: Counter,
    pub rx: Counter,
    pub tx: Counter,
}

impl TcpStats {
    pub fn new(prefix: &str) -> Self {
        let m = metrics();
        let lb = l("envoy_tcp_prefix", prefix);
        TcpStats {
            cx: m.tcp_cx.get_or_create(&lb).clone(),
            rx: m.tcp_rx.get_or_create(&lb).clone(),
            tx: m.tcp_tx.get_or_create(&lb).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_series_are_rendered_with_escaped_labels_before_the_end_marker() {
        let s = ClusterStats::new("a\"b");
        s.rq.inc();
        s.response(503);
        s.cx_active.inc();
        let text = metrics().render();
        assert!(text.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"a\\\"b\"} 1"), "{text}");
        assert!(text.contains(
            "envoy_cluster_upstream_rq_xx_total{envoy_cluster_name=\"a\\\"b\",envoy_response_code_class=\"5\"} 1"
        ));
        assert!(text.contains("envoy_cluster_upstream_cx_active{envoy_cluster_name=\"a\\\"b\"} 1"));
        assert!(text.ends_with("# EOF\n") && text.matches("# EOF").count() == 1);
        // The same name is the same counters (stats survive config updates).
        assert_eq!(ClusterStats::new("a\"b").rq.get(), 1);
    }
}
