//! Clusters and their endpoints: `outbound|PORT||HOST` and one per DestinationRule subset.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{cluster_name, visible, ProxyInfo};
use crate::istio::model::{OutboundMode, Resolution, ServiceEntry, SimpleLb, WorkloadEntry};
use crate::istio::Registry;

/// The endpoints of a ServiceEntry: its own `endpoints`, or the WorkloadEntries it selects.
fn endpoints<'a>(reg: &'a Registry, ns: &str, se: &'a ServiceEntry) -> Vec<&'a WorkloadEntry> {
    match &se.workload_selector {
        Some(sel) => reg
            .workload_entries
            .iter()
            .filter(|(m, we)| m.namespace == ns && sel.labels.iter().all(|(k, v)| we.labels.get(k) == Some(v)))
            .map(|(_, we)| we)
            .collect(),
        None => se.endpoints.iter().collect(),
    }
}

fn lb_policy(lb: Option<SimpleLb>) -> &'static str {
    match lb {
        Some(SimpleLb::LeastRequest) | Some(SimpleLb::LeastConn) => "LEAST_REQUEST",
        Some(SimpleLb::Random) => "RANDOM",
        _ => "ROUND_ROBIN",
    }
}

fn lb_endpoints(eps: &[&WorkloadEntry], port_name: &str, port: u16) -> Vec<Value> {
    eps.iter()
        .map(|we| {
            let p = we.ports.get(port_name).copied().unwrap_or(port);
            json!({
                "endpoint": {"address": {"socket_address": {"address": we.address, "port_value": p}}},
                "load_balancing_weight": we.weight.unwrap_or(1).max(1),
            })
        })
        .collect()
}

/// Returns (clusters, cluster load assignments) by name.
pub fn clusters(
    reg: &Registry,
    proxy: &ProxyInfo,
    mode: OutboundMode,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let mut clusters = BTreeMap::new();
    let mut cla = BTreeMap::new();
    for (meta, se) in &reg.service_entries {
        let eps = endpoints(reg, &meta.namespace, se);
        for host in se.hosts.iter().filter(|h| visible(reg, proxy, meta, h)) {
            let dr = reg.destination_rules.iter().find(|(m, d)| super::fqdn(&d.host, &m.namespace) == *host);
            let base_lb = dr.and_then(|(_, d)| d.traffic_policy.as_ref()?.load_balancer.as_ref()?.simple);
            let mut subsets: Vec<(String, BTreeMap<String, String>, Option<SimpleLb>)> =
                vec![(String::new(), BTreeMap::new(), base_lb)];
            if let Some((_, d)) = dr {
                for s in &d.subsets {
                    let lb = s.traffic_policy.as_ref().and_then(|t| t.load_balancer.as_ref()?.simple).or(base_lb);
                    subsets.push((s.name.clone(), s.labels.clone(), lb));
                }
            }
            for port in &se.ports {
                for (subset, labels, lb) in &subsets {
                    let name = cluster_name(port.number, subset, host);
                    let selected: Vec<&WorkloadEntry> = eps
                        .iter()
                        .copied()
                        .filter(|we| labels.iter().all(|(k, v)| we.labels.get(k) == Some(v)))
                        .collect();
                    let mut c = json!({
                        "name": name,
                        "connect_timeout": "10s",
                        "lb_policy": lb_policy(*lb),
                    });
                    if port.is_http() && port.protocol.eq_ignore_ascii_case("http2")
                        || port.protocol.eq_ignore_ascii_case("grpc")
                    {
                        c["typed_extension_protocol_options"] = json!({
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                                "explicit_http_config": {"http2_protocol_options": {}},
                            }
                        });
                    }
                    match se.resolution {
                        Resolution::Dns | Resolution::DnsRoundRobin => {
                            // DNS: the proxy resolves; without endpoints, the host itself.
                            let targets: Vec<Value> = if selected.is_empty() && subset.is_empty() {
                                vec![
                                    json!({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port.target_port.unwrap_or(port.number)}}}}),
                                ]
                            } else {
                                lb_endpoints(&selected, &port.name, port.target_port.unwrap_or(port.number))
                            };
                            c["type"] = json!("STRICT_DNS");
                            c["load_assignment"] =
                                json!({"cluster_name": name, "endpoints": [{"lb_endpoints": targets}]});
                        }
                        _ => {
                            c["type"] = json!("EDS");
                            c["eds_cluster_config"] =
                                json!({"eds_config": {"ads": {}, "resource_api_version": "V3"}, "service_name": name});
                            let lbe = lb_endpoints(&selected, &port.name, port.target_port.unwrap_or(port.number));
                            // A locality (even empty) and its weight: proxyless gRPC requires both.
                            cla.insert(
                                name.clone(),
                                json!({"cluster_name": name, "endpoints": [{"locality": {}, "lb_endpoints": lbe, "load_balancing_weight": 1}]}),
                            );
                        }
                    }
                    clusters.insert(name, c);
                }
            }
        }
    }
    // Where traffic goes that matches no service: to where it was going (ALLOW_ANY, the
    // original destination) or nowhere (REGISTRY_ONLY). Inbound passthrough is always there.
    clusters.insert(
        "BlackHoleCluster".into(),
        json!({"name": "BlackHoleCluster", "type": "STATIC", "connect_timeout": "10s"}),
    );
    let passthrough = |name: &str| json!({"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "10s"});
    if mode == OutboundMode::AllowAny {
        clusters.insert("PassthroughCluster".into(), passthrough("PassthroughCluster"));
    }
    clusters.insert("InboundPassthroughCluster".into(), passthrough("InboundPassthroughCluster"));
    // Inbound: the proxy's own workload, on loopback.
    for (meta, se) in &reg.service_entries {
        let mine = endpoints(reg, &meta.namespace, se).iter().any(|we| proxy_owns(proxy, we));
        if !mine || meta.namespace != proxy.namespace {
            continue;
        }
        for port in &se.ports {
            let target = port.target_port.unwrap_or(port.number);
            let name = format!("inbound|{target}||");
            clusters.entry(name.clone()).or_insert_with(|| {
                json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "10s",
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": target}}}}
                    ]}]},
                })
            });
        }
    }
    (clusters, cla)
}

/// A workload entry is the proxy's own when all of its labels are the proxy's.
pub fn proxy_owns(proxy: &ProxyInfo, we: &WorkloadEntry) -> bool {
    !we.labels.is_empty() && we.labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
}
