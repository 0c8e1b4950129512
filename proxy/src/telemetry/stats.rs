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

pub type Labels = Vec<(String, String)>;

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

    /// A labelled counter family, registered now: for series an extension owns (call once,
    /// e.g. from a `OnceLock`).
    pub fn counter_family(&self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, f.clone());
        f
    }

    /// As [`Metrics::counter_family`], for a gauge.
    pub fn gauge_family(&self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, f.clone());
        f
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
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
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
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Declares the cluster series once: the struct field, its Prometheus name and help. Rendering
/// walks the same table, so a new counter is one line here.
macro_rules! cluster_series {
    (
        counters { $($c:ident => $cname:literal, $chelp:literal;)* }
        gauges { $($g:ident => $gname:literal, $ghelp:literal;)* }
    ) => {
        /// A cluster's series as plain atomics, kept by name for the life of the process (as Envoy
        /// keeps stats across config updates) rather than as labelled registry series: a mesh has
        /// tens of thousands of clusters.
        #[derive(Debug, Default)]
        pub struct ClusterCounters {
            $(pub $c: Count,)*
            $(pub $g: Level,)*
            pub rq_xx: [Count; 5],
            /// The circuit-breaker thresholds of the cluster's current config, for the
            /// `remaining_*` gauges (set when a cluster of this name is built).
            pub limits: Limits,
            /// Woken when a connection is returned or closed while requests are pending.
            pub freed: tokio::sync::Notify,
        }

        const COUNTERS: &[(&str, &str, fn(&ClusterCounters) -> u64)] = &[$(($cname, $chelp, |c| c.$c.get()),)*];
        const GAUGES: &[(&str, &str, fn(&ClusterCounters) -> i64)] = &[$(($gname, $ghelp, |c| c.$g.get()),)*];
    };
}

cluster_series! {
    counters {
        rq => "envoy_cluster_upstream_rq", "Upstream requests";
        cx => "envoy_cluster_upstream_cx", "Upstream connections opened";
        connect_fail => "envoy_cluster_upstream_cx_connect_fail", "Upstream connect failures";
        connect_timeout => "envoy_cluster_upstream_cx_connect_timeout", "Upstream connect timeouts";
        rq_timeout => "envoy_cluster_upstream_rq_timeout", "Upstream requests that timed out";
        rq_per_try_timeout => "envoy_cluster_upstream_rq_per_try_timeout", "Upstream attempts that hit the per-try timeout";
        none_healthy => "envoy_cluster_upstream_cx_none_healthy", "Requests with no healthy upstream";
        cx_overflow => "envoy_cluster_upstream_cx_overflow", "Connections not opened because of max_connections";
        rq_pending_total => "envoy_cluster_upstream_rq_pending", "Requests that waited for a connection";
        rq_pending_overflow => "envoy_cluster_upstream_rq_pending_overflow", "Requests refused by max_pending_requests or max_requests";
        rq_retry => "envoy_cluster_upstream_rq_retry", "Retries sent";
        rq_retry_success => "envoy_cluster_upstream_rq_retry_success", "Retries that succeeded";
        rq_retry_overflow => "envoy_cluster_upstream_rq_retry_overflow", "Retries refused by max_retries or the retry budget";
        rq_retry_limit_exceeded => "envoy_cluster_upstream_rq_retry_limit_exceeded", "Requests whose retries ran out";
        rq_retry_backoff => "envoy_cluster_upstream_rq_retry_backoff_exponential", "Retries that waited a backoff";
        rq_reset_before_response => "envoy_cluster_upstream_rq_reset_before_response_resent", "Requests sent again after a reused connection closed before answering";
        lb_healthy_panic => "envoy_cluster_lb_healthy_panic", "Picks made in panic mode (too few healthy endpoints)";
        ejections_enforced => "envoy_cluster_outlier_detection_ejections_enforced", "Ejections enforced";
        ejections_overflow => "envoy_cluster_outlier_detection_ejections_overflow", "Ejections refused by max_ejection_percent";
        ejections_detected_5xx => "envoy_cluster_outlier_detection_ejections_detected_consecutive_5xx", "Consecutive 5xx detected";
        ejections_enforced_5xx => "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx", "Consecutive 5xx ejections enforced";
        ejections_detected_gw => "envoy_cluster_outlier_detection_ejections_detected_consecutive_gateway_failure", "Consecutive gateway failures detected";
        ejections_enforced_gw => "envoy_cluster_outlier_detection_ejections_enforced_consecutive_gateway_failure", "Consecutive gateway-failure ejections enforced";
        ejections_detected_local => "envoy_cluster_outlier_detection_ejections_detected_consecutive_local_origin_failure", "Consecutive local-origin failures detected";
        ejections_enforced_local => "envoy_cluster_outlier_detection_ejections_enforced_consecutive_local_origin_failure", "Consecutive local-origin ejections enforced";
        ejections_detected_sr => "envoy_cluster_outlier_detection_ejections_detected_success_rate", "Success-rate outliers detected";
        ejections_enforced_sr => "envoy_cluster_outlier_detection_ejections_enforced_success_rate", "Success-rate ejections enforced";
        health_check_attempt => "envoy_cluster_health_check_attempt", "Active health checks sent";
        health_check_success => "envoy_cluster_health_check_success", "Active health checks passed";
        health_check_failure => "envoy_cluster_health_check_failure", "Active health checks failed";
        shadow_sent => "envoy_cluster_upstream_rq_shadow", "Mirrored requests sent to this cluster";
        shadow_overflow => "envoy_cluster_upstream_rq_shadow_overflow", "Mirrored requests dropped (in-flight or body bound)";
    }
    gauges {
        cx_active => "envoy_cluster_upstream_cx_active", "Active upstream connections";
        rq_active => "envoy_cluster_upstream_rq_active", "Active upstream requests";
        rq_pending_active => "envoy_cluster_upstream_rq_pending_active", "Requests waiting for a connection";
        rq_retry_active => "envoy_cluster_upstream_rq_retry_active", "Retries in flight";
        ejections_active => "envoy_cluster_outlier_detection_ejections_active", "Endpoints ejected now";
        membership_healthy => "envoy_cluster_membership_healthy", "Endpoints that may receive traffic";
        membership_total => "envoy_cluster_membership_total", "Endpoints";
    }
}

/// A request waiting for a connection; counted until dropped.
pub struct Pending<'a>(&'a ClusterCounters);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.rq_pending_active.dec();
    }
}

/// Circuit-breaker thresholds (Envoy's DEFAULT priority), mirrored from the cluster config.
#[derive(Debug)]
pub struct Limits {
    pub max_connections: AtomicU64,
    pub max_pending: AtomicU64,
    pub max_requests: AtomicU64,
    pub max_retries: AtomicU64,
    /// `track_remaining`: export the `remaining_*` gauges.
    pub track_remaining: std::sync::atomic::AtomicBool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: AtomicU64::new(1024),
            max_pending: AtomicU64::new(1024),
            max_requests: AtomicU64::new(1024),
            max_retries: AtomicU64::new(3),
            track_remaining: Default::default(),
        }
    }
}

/// The circuit-breaker gauges, computed from the live counts and the thresholds when rendered:
/// (resource, open gauge, remaining gauge, count, limit).
type Breaker = (&'static str, &'static str, fn(&ClusterCounters) -> i64, fn(&Limits) -> u64);
const BREAKERS: [Breaker; 4] = [
    ("cx_open", "remaining_cx", |c| c.cx_active.get(), |l| l.max_connections.load(Ordering::Relaxed)),
    ("rq_pending_open", "remaining_pending", |c| c.rq_pending_active.get(), |l| l.max_pending.load(Ordering::Relaxed)),
    ("rq_open", "remaining_rq", |c| c.rq_active.get(), |l| l.max_requests.load(Ordering::Relaxed)),
    ("rq_retry_open", "remaining_retries", |c| c.rq_retry_active.get(), |l| l.max_retries.load(Ordering::Relaxed)),
];

impl ClusterCounters {
    /// Takes the thresholds of the cluster's current config.
    pub fn set_limits(&self, cb: &crate::config::cluster::CircuitBreakers) {
        let l = &self.limits;
        l.max_connections.store(cb.max_connections, Ordering::Relaxed);
        l.max_pending.store(cb.max_pending_requests, Ordering::Relaxed);
        l.max_requests.store(cb.max_requests, Ordering::Relaxed);
        l.max_retries.store(cb.max_retries, Ordering::Relaxed);
        l.track_remaining.store(cb.track_remaining, Ordering::Relaxed);
    }

    pub fn at_max_connections(&self) -> bool {
        self.cx_active.get().max(0) as u64 >= self.limits.max_connections.load(Ordering::Relaxed)
    }

    /// `max_requests`: whether one more request would go over it.
    pub fn at_max_requests(&self) -> bool {
        self.rq_active.get().max(0) as u64 >= self.limits.max_requests.load(Ordering::Relaxed)
    }

    /// Makes the request a pending one, unless `max_pending_requests` are waiting already.
    pub fn begin_pending(&self) -> Option<Pending<'_>> {
        if self.rq_pending_active.get().max(0) as u64 >= self.limits.max_pending.load(Ordering::Relaxed) {
            return None;
        }
        self.rq_pending_total.inc();
        self.rq_pending_active.inc();
        Some(Pending(self))
    }

    /// Waits until `ready()` holds, rechecked whenever a connection is freed.
    pub async fn wait_for_connection(&self, ready: impl Fn() -> bool) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if ready() {
                return;
            }
            freed.await;
        }
    }

    /// A connection went back to a pool or closed: wake pending requests, if any.
    pub fn connection_freed(&self) {
        if self.rq_pending_active.get() > 0 {
            self.freed.notify_waiters();
        }
    }

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

fn render_clusters(out: &mut String) {
    use std::fmt::Write;
    let map = clusters().lock().unwrap_or_else(|e| e.into_inner());
    for (name, help, get) in COUNTERS {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for (cluster, c) in map.iter() {
            let _ = writeln!(out, "{name}_total{{envoy_cluster_name=\"{}\"}} {}", escape_label(cluster), get(c));
        }
    }
    let name = "envoy_cluster_upstream_rq_xx";
    let _ = writeln!(out, "# HELP {name} Upstream responses by class.\n# TYPE {name} counter");
    for (cluster, c) in map.iter() {
        let label = escape_label(cluster);
        for (i, v) in c.rq_xx.iter().enumerate() {
            let class = i + 1;
            let _ = writeln!(
                out,
                "{name}_total{{envoy_cluster_name=\"{label}\",envoy_response_code_class=\"{class}\"}} {}",
                v.get()
            );
        }
    }
    for (name, help, get) in GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} gauge");
        for (cluster, c) in map.iter() {
            let _ = writeln!(out, "{name}{{envoy_cluster_name=\"{}\"}} {}", escape_label(cluster), get(c));
        }
    }
    for (open, remaining, count, limit) in BREAKERS {
        for (gauge, is_open) in [(open, true), (remaining, false)] {
            let name = format!("envoy_cluster_circuit_breakers_default_{gauge}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (cluster, c) in map.iter() {
                let (used, max) = (count(c).max(0) as u64, limit(&c.limits));
                let v = if is_open {
                    u64::from(used >= max)
                } else if c.limits.track_remaining.load(Ordering::Relaxed) {
                    max.saturating_sub(used)
                } else {
                    continue;
                };
                let _ = writeln!(out, "{name}{{envoy_cluster_name=\"{}\"}} {v}", escape_label(cluster));
            }
        }
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
