//! Envoy-named counters and gauges, exported in Prometheus text format by the admin server.
//!
//! Families live for the whole process so that counters survive config reloads, as Envoy's do;
//! compiled config objects hold cloned handles, so the data path never looks a metric up by name.
use std::sync::{Mutex, OnceLock};

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
    cluster_rq: Family<Labels, Counter>,
    cluster_rq_xx: Family<Labels, Counter>,
    cluster_cx: Family<Labels, Counter>,
    cluster_cx_active: Family<Labels, Gauge>,
    cluster_connect_fail: Family<Labels, Counter>,
    cluster_connect_timeout: Family<Labels, Counter>,
    cluster_rq_timeout: Family<Labels, Counter>,
    cluster_none_healthy: Family<Labels, Counter>,
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
            cluster_rq: Family::default(),
            cluster_rq_xx: Family::default(),
            cluster_cx: Family::default(),
            cluster_cx_active: Family::default(),
            cluster_connect_fail: Family::default(),
            cluster_connect_timeout: Family::default(),
            cluster_rq_timeout: Family::default(),
            cluster_none_healthy: Family::default(),
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
            r.register("envoy_cluster_upstream_rq", "Upstream requests", m.cluster_rq.clone());
            r.register("envoy_cluster_upstream_rq_xx", "Upstream responses by class", m.cluster_rq_xx.clone());
            r.register("envoy_cluster_upstream_cx", "Upstream connections opened", m.cluster_cx.clone());
            r.register("envoy_cluster_upstream_cx_active", "Active upstream connections", m.cluster_cx_active.clone());
            r.register(
                "envoy_cluster_upstream_cx_connect_fail",
                "Upstream connect failures",
                m.cluster_connect_fail.clone(),
            );
            r.register(
                "envoy_cluster_upstream_cx_connect_timeout",
                "Upstream connect timeouts",
                m.cluster_connect_timeout.clone(),
            );
            r.register("envoy_cluster_upstream_rq_timeout", "Upstream request timeouts", m.cluster_rq_timeout.clone());
            r.register(
                "envoy_cluster_upstream_cx_none_healthy",
                "Requests with no healthy upstream",
                m.cluster_none_healthy.clone(),
            );
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

#[derive(Clone, Debug)]
pub struct ClusterStats {
    pub rq: Counter,
    pub rq_xx: [Counter; 5],
    pub cx: Counter,
    pub cx_active: Gauge,
    pub connect_fail: Counter,
    pub connect_timeout: Counter,
    pub rq_timeout: Counter,
    pub none_healthy: Counter,
}

impl ClusterStats {
    pub fn new(cluster: &str) -> Self {
        let m = metrics();
        let k = "envoy_cluster_name";
        let lb = l(k, cluster);
        ClusterStats {
            rq: m.cluster_rq.get_or_create(&lb).clone(),
            rq_xx: classes(&m.cluster_rq_xx, k, cluster),
            cx: m.cluster_cx.get_or_create(&lb).clone(),
            cx_active: m.cluster_cx_active.get_or_create(&lb).clone(),
            connect_fail: m.cluster_connect_fail.get_or_create(&lb).clone(),
            connect_timeout: m.cluster_connect_timeout.get_or_create(&lb).clone(),
            rq_timeout: m.cluster_rq_timeout.get_or_create(&lb).clone(),
            none_healthy: m.cluster_none_healthy.get_or_create(&lb).clone(),
        }
    }

    pub fn response(&self, status: u16) {
        if let Some(c) = self.rq_xx.get((status / 100).wrapping_sub(1) as usize) {
            c.inc();
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
