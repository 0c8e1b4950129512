//! `virtualOutbound` (15001) and `virtualInbound` (15006): original-destination listeners with a
//! filter chain per destination port. They bind the proxy's instance IP when it is known (each
//! pod has its own, and tests run several proxies on one host), otherwise 0.0.0.0.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::clusters::proxy_owns;
use super::{cluster_name, visible, ProxyInfo};
use crate::istio::model::OutboundMode;
use crate::istio::Registry;

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

fn http_filters() -> Value {
    json!([{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}])
}

fn tcp_chain(stat_prefix: &str, cluster: &str) -> Value {
    json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {"@type": TCP, "stat_prefix": stat_prefix, "cluster": cluster}})
}

pub fn listeners(reg: &Registry, proxy: &ProxyInfo, mode: OutboundMode) -> BTreeMap<String, Value> {
    let ip = proxy.instance_ip.clone().unwrap_or_else(|| "0.0.0.0".into());
    let mut outbound: BTreeMap<u16, Value> = BTreeMap::new();
    for (meta, se) in &reg.service_entries {
        for host in se.hosts.iter().filter(|h| visible(reg, proxy, meta, h)) {
            for port in &se.ports {
                outbound.entry(port.number).or_insert_with(|| {
                    let filter = if port.is_http() {
                        json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                            "@type": HCM,
                            "stat_prefix": format!("outbound_0.0.0.0_{}", port.number),
                            "rds": {"route_config_name": port.number.to_string(), "config_source": {"ads": {}, "resource_api_version": "V3"}},
                            "http_filters": http_filters(),
                            "use_remote_address": false,
                        }})
                    } else {
                        tcp_chain(&format!("outbound|{}||{host}", port.number), &cluster_name(port.number, "", host))
                    };
                    json!({"name": format!("0.0.0.0_{}", port.number), "filter_chain_match": {"destination_port": port.number}, "filters": [filter]})
                });
            }
        }
    }
    let mut inbound: BTreeMap<u16, Value> = BTreeMap::new();
    for (meta, se) in &reg.service_entries {
        if meta.namespace != proxy.namespace {
            continue;
        }
        let owned = match &se.workload_selector {
            Some(sel) => reg.workload_entries.iter().any(|(m, we)| {
                m.namespace == meta.namespace
                    && sel.labels.iter().all(|(k, v)| we.labels.get(k) == Some(v))
                    && proxy_owns(proxy, we)
            }),
            None => se.endpoints.iter().any(|we| proxy_owns(proxy, we)),
        };
        if !owned {
            continue;
        }
        for port in &se.ports {
            let target = port.target_port.unwrap_or(port.number);
            let cluster = format!("inbound|{target}||");
            inbound.entry(target).or_insert_with(|| {
                let filter = if port.is_http() {
                    json!({"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": HCM,
                        "stat_prefix": format!("inbound_0.0.0.0_{target}"),
                        "route_config": {"name": format!("inbound|{target}||"), "virtual_hosts": [{
                            "name": "inbound|http", "domains": ["*"],
                            "routes": [{"name": "default", "match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "0s"}}],
                        }]},
                        "http_filters": http_filters(),
                    }})
                } else {
                    tcp_chain(&cluster, &cluster)
                };
                json!({"name": format!("0.0.0.0_{target}"), "filter_chain_match": {"destination_port": target}, "filters": [filter]})
            });
        }
    }
    let outbound_default = match mode {
        OutboundMode::AllowAny => {
            json!({"name": "PassthroughFilterChain", "filters": [tcp_chain("PassthroughCluster", "PassthroughCluster")]})
        }
        OutboundMode::RegistryOnly => {
            json!({"name": "BlackHoleFilterChain", "filters": [tcp_chain("BlackHoleCluster", "BlackHoleCluster")]})
        }
    };
    let inbound_default = json!({"name": "InboundPassthroughFilterChain",
        "filters": [tcp_chain("InboundPassthroughCluster", "InboundPassthroughCluster")]});
    let mut out = BTreeMap::new();
    // API listeners for proxyless gRPC (`xds:///host:port`): no socket, just the HCM that
    // names the route configuration. Only sent to clients that ask for them by name.
    let proxyless = reg.service_entries.iter().filter(|_| proxy.proxyless);
    for (meta, se) in proxyless {
        for host in se.hosts.iter().filter(|h| visible(reg, proxy, meta, h)) {
            for port in se.ports.iter().filter(|p| p.is_http()) {
                let name = format!("{host}:{}", port.number);
                out.insert(name.clone(), json!({
                    "name": name,
                    "api_listener": {"api_listener": {
                        "@type": HCM,
                        "stat_prefix": name,
                        "rds": {"route_config_name": name, "config_source": {"ads": {}, "resource_api_version": "V3"}},
                        "http_filters": http_filters(),
                    }},
                }));
            }
        }
    }
    for (name, port, chains, default) in
        [("virtualOutbound", 15001, outbound, outbound_default), ("virtualInbound", 15006, inbound, inbound_default)]
    {
        out.insert(
            name.to_string(),
            json!({
                "name": name,
                "address": {"socket_address": {"address": ip, "port_value": port}},
                "use_original_dst": true,
                "traffic_direction": if port == 15001 { "OUTBOUND" } else { "INBOUND" },
                "filter_chains": chains.into_values().collect::<Vec<_>>(),
                "default_filter_chain": default,
            }),
        );
    }
    out
}
