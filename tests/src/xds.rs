//! xDS resources for the dynamic-configuration tests, as proto3 JSON.
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::ads::{AdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use crate::backend::Backend;
use crate::config::*;

/// A bootstrap with no listeners of its own: LDS and CDS over ADS from the static `xds` cluster.
pub fn dynamic_bootstrap(ads: SocketAddr) -> Value {
    let mut b = bootstrap(vec![], vec![http2(cluster("xds", &[ads]))]);
    b["dynamic_resources"] = json!({
        "ads_config": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
        },
        "lds_config": {"ads": {}, "resource_api_version": "V3"},
        "cds_config": {"ads": {}, "resource_api_version": "V3"},
    });
    b
}

pub fn rds_listener(name: &str, route_config: &str) -> Value {
    json!({
        "name": name,
        "address": socket("127.0.0.1", 0),
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": name,
            "rds": {"route_config_name": route_config, "config_source": {"ads": {}, "resource_api_version": "V3"}},
            "http_filters": [{"name": "router", "typed_config": {"@type": ROUTER_TYPE}}],
        }}]}],
    })
}

pub fn eds_cluster(name: &str) -> Value {
    json!({
        "name": name,
        "type": "EDS",
        "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
    })
}

pub fn assignment(name: &str, endpoints: &[SocketAddr]) -> Value {
    let eps: Vec<Value> =
        endpoints.iter().map(|a| json!({"endpoint": {"address": socket(&a.ip().to_string(), a.port())}})).collect();
    json!({"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]})
}

pub fn weighted_routes(name: &str, weights: &[(&str, u32)]) -> Value {
    let clusters: Vec<Value> = weights.iter().map(|(c, w)| json!({"name": c, "weight": w})).collect();
    json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": clusters}}}
    ]}]})
}

/// Control plane with listener `dyn` → routes `r` → clusters `blue`/`green` (EDS).
pub fn serve_blue_green(ads: &AdsServer, blue: &Backend, green: &Backend, weights: &[(&str, u32)]) {
    ads.set(CLUSTER, vec![eds_cluster("blue"), eds_cluster("green")]);
    ads.set(ENDPOINT, vec![assignment("blue", &[blue.addr]), assignment("green", &[green.addr])]);
    ads.set(ROUTE, vec![weighted_routes("r", weights)]);
    ads.set(LISTENER, vec![rds_listener("dyn", "r")]);
}

/// A running `outrigger-xds serve` on 127.0.0.1, killed on drop.
pub struct ControlPlane {
    child: std::process::Child,
    pub xds_port: u16,
    pub monitor_port: u16,
}

impl ControlPlane {
    /// Starts on ports the OS picks and waits (bounded) until the xDS port accepts.
    pub fn start(dir: &std::path::Path) -> ControlPlane {
        let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        ControlPlane::start_on(dir, port(), port())
    }

    /// Starts on the given ports (inside a network namespace, fixed ones are fine).
    pub fn start_on(dir: &std::path::Path, xds_port: u16, monitor_port: u16) -> ControlPlane {
        let child = std::process::Command::new(crate::proxy::xds_binary())
            .args(["serve", "--config-dir"])
            .arg(dir)
            .args(["--xds-port", &xds_port.to_string(), "--monitor-port", &monitor_port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn outrigger-xds");
        let deadline = std::time::Instant::now() + crate::WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", monitor_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", xds_port)).is_err()
        {
            assert!(std::time::Instant::now() < deadline, "outrigger-xds did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        ControlPlane { child, xds_port, monitor_port }
    }
}

impl ControlPlane {
    /// `/debug/syncz`: every connected proxy's ACKs, NACKs and counters, and the config errors.
    pub async fn syncz(&self) -> Value {
        let monitor: SocketAddr = ([127, 0, 0, 1], self.monitor_port).into();
        crate::client::get_h1(monitor, "x", "/debug/syncz", &[]).await.json()
    }

    /// The syncz entry of proxy `id` once the control plane has handled `requests` of its
    /// requests, each with every response it called for sent: its `responses` then say whether
    /// anything else was pushed.
    pub async fn handled(&self, id: &str, requests: u64) -> Value {
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let s = self.syncz().await;
            let entry = s["proxies"].as_array().and_then(|ps| ps.iter().find(|p| p["id"] == id)).cloned();
            if let Some(p) = entry.filter(|p| p["requests"].as_u64() >= Some(requests)) {
                return p;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id}: {requests} requests never handled: {s}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
