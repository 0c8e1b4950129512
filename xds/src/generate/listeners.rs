//! `virtualOutbound` (15001) and `virtualInbound` (15006): original-destination listeners with a
//! filter chain per destination port. They bind the proxy's instance IP when it is known (each
//! pod has its own, and tests run several proxies on one host), otherwise 0.0.0.0.
use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    filter, ApiListener, Filter, FilterChain, FilterChainMatch, Listener,
};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use envoy_types::pb::google::protobuf::Any;

use super::{
    ads, bool_value, cluster_name, pb_duration, route_policy, socket, to_any, u32_value, Index, ProxyInfo, LISTENER,
};
use crate::istio::model::{OutboundMode, RouteDestination, TcpMatch};

const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// istiod's HTTP filters, of those outrigger generates: the fault filter (an empty HTTPFault,
/// for the faults routes configure in `typed_per_filter_config`) before the router, which is
/// last. istiod puts them in every connection manager: outbound, inbound and proxyless gRPC.
fn http_filters() -> Vec<HttpFilter> {
    let filter = |name: &str, config: Any| HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    vec![
        filter(route_policy::FAULT_FILTER, route_policy::empty_fault_filter()),
        filter("envoy.filters.http.router", to_any(ROUTER, &Router::default())),
    ]
}

fn network_filter(name: &str, typed_config: Any) -> Filter {
    Filter { name: name.into(), config_type: Some(filter::ConfigType::TypedConfig(typed_config)) }
}

fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    network_filter("envoy.filters.network.http_connection_manager", to_any(HCM, hcm))
}

fn rds(route_config_name: String) -> Option<RouteSpecifier> {
    Some(RouteSpecifier::Rds(Rds { config_source: ads(), route_config_name }))
}

fn tcp_proxy_filter(stat_prefix: String, cluster_specifier: tcp_proxy::ClusterSpecifier) -> Filter {
    let tcp = TcpProxy { stat_prefix, cluster_specifier: Some(cluster_specifier), ..Default::default() };
    network_filter("envoy.filters.network.tcp_proxy", to_any(TCP, &tcp))
}

fn tcp_chain(stat_prefix: &str, cluster: &str) -> Filter {
    tcp_proxy_filter(stat_prefix.to_string(), tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string()))
}

/// istiod's `matchTCP`: every predicate is known statically for the proxy being generated for.
fn tcp_match(m: &TcpMatch, proxy: &ProxyInfo, vs_gateways: &[String], port: u16) -> bool {
    let gateways: &[String] = if m.gateways.is_empty() { vs_gateways } else { &m.gateways };
    (gateways.is_empty() || gateways.iter().any(|g| g == "mesh"))
        && m.source_labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
        && m.port.is_none_or(|p| p == port)
        && m.source_namespace.as_ref().is_none_or(|ns| *ns == proxy.namespace)
}

/// The outbound tcp_proxy for `host:port`: the first `tcp` rule of its VirtualServices that
/// applies to this proxy and port (a rule without `match` always does), as istiod picks it; the
/// service's own cluster when there is none.
fn tcp_outbound(idx: &Index<'_>, host: &str, port: u16) -> Filter {
    for (vm, vs) in idx.virtual_services(host).iter().copied() {
        let rule = vs.tcp.iter().find(|r| {
            !r.route.is_empty()
                && (r.matches.is_empty() || r.matches.iter().any(|m| tcp_match(m, idx.proxy, &vs.gateways, port)))
        });
        let Some(rule) = rule else { continue };
        let cluster = |d: &RouteDestination| idx.destination_cluster(&d.destination, &vm.namespace, port);
        if let [only] = rule.route.as_slice() {
            let name = cluster(only);
            return tcp_proxy_filter(name.clone(), tcp_proxy::ClusterSpecifier::Cluster(name));
        }
        let clusters = (rule.route.iter().filter(|d| d.weight.unwrap_or(0) > 0))
            .map(|d| tcp_proxy::weighted_cluster::ClusterWeight {
                name: cluster(d),
                weight: d.weight.unwrap_or(0),
                ..Default::default()
            })
            .collect();
        return tcp_proxy_filter(
            format!("{}.{}", vm.name, vm.namespace),
            tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster { clusters }),
        );
    }
    tcp_chain(&format!("outbound|{port}||{host}"), &cluster_name(port, "", host))
}

fn port_chain(port: u16, filter: Filter) -> FilterChain {
    FilterChain {
        name: format!("0.0.0.0_{port}"),
        filter_chain_match: Some(FilterChainMatch { destination_port: u32_value(port.into()), ..Default::default() }),
        filters: vec![filter],
        ..Default::default()
    }
}

pub fn listeners(idx: &Index<'_>, mode: OutboundMode) -> BTreeMap<String, Any> {
    let (reg, proxy) = (idx.reg, idx.proxy);
    let ip = proxy.instance_ip.as_deref().unwrap_or("0.0.0.0");
    let mut outbound: BTreeMap<u16, FilterChain> = BTreeMap::new();
    for (meta, se) in &reg.service_entries {
        for host in se.hosts.iter().filter(|h| idx.visible(meta, h)) {
            for port in &se.ports {
                outbound.entry(port.number).or_insert_with(|| {
                    let filter = if port.is_http() {
                        hcm_filter(&HttpConnectionManager {
                            stat_prefix: format!("outbound_0.0.0.0_{}", port.number),
                            route_specifier: rds(port.number.to_string()),
                            http_filters: http_filters(),
                            use_remote_address: bool_value(false),
                            ..Default::default()
                        })
                    } else {
                        tcp_outbound(idx, host, port.number)
                    };
                    port_chain(port.number, filter)
                });
            }
        }
    }
    let mut inbound: BTreeMap<u16, FilterChain> = BTreeMap::new();
    for (_, se) in idx.owned() {
        for port in &se.ports {
            let target = port.target_port.unwrap_or(port.number);
            let cluster = format!("inbound|{target}||");
            inbound.entry(target).or_insert_with(|| {
                let filter = if port.is_http() {
                    let route = Route {
                        name: "default".into(),
                        r#match: Some(RouteMatch {
                            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                            ..Default::default()
                        }),
                        action: Some(route::Action::Route(RouteAction {
                            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.clone())),
                            timeout: Some(pb_duration(std::time::Duration::ZERO)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    };
                    hcm_filter(&HttpConnectionManager {
                        stat_prefix: format!("inbound_0.0.0.0_{target}"),
                        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
                            name: cluster.clone(),
                            virtual_hosts: vec![VirtualHost {
                                name: "inbound|http".into(),
                                domains: vec!["*".into()],
                                routes: vec![route],
                                ..Default::default()
                            }],
                            ..Default::default()
                        })),
                        http_filters: http_filters(),
                        ..Default::default()
                    })
                } else {
                    tcp_chain(&cluster, &cluster)
                };
                port_chain(target, filter)
            });
        }
    }
    let default_chain = |name: &str, cluster: &str| FilterChain {
        name: name.into(),
        filters: vec![tcp_chain(cluster, cluster)],
        ..Default::default()
    };
    let outbound_default = match mode {
        OutboundMode::AllowAny => default_chain("PassthroughFilterChain", "PassthroughCluster"),
        OutboundMode::RegistryOnly => default_chain("BlackHoleFilterChain", "BlackHoleCluster"),
    };
    let inbound_default = default_chain("InboundPassthroughFilterChain", "InboundPassthroughCluster");
    let mut out = BTreeMap::new();
    // API listeners for proxyless gRPC (`xds:///host:port`): no socket, just the HCM that
    // names the route configuration. Only sent to clients that ask for them by name.
    let proxyless = reg.service_entries.iter().filter(|_| proxy.proxyless);
    for (meta, se) in proxyless {
        for host in se.hosts.iter().filter(|h| idx.visible(meta, h)) {
            for port in se.ports.iter().filter(|p| p.is_http()) {
                let name = format!("{host}:{}", port.number);
                let hcm = HttpConnectionManager {
                    stat_prefix: name.clone(),
                    route_specifier: rds(name.clone()),
                    http_filters: http_filters(),
                    ..Default::default()
                };
                let l = Listener {
                    name: name.clone(),
                    api_listener: Some(ApiListener { api_listener: Some(to_any(HCM, &hcm)) }),
                    ..Default::default()
                };
                out.insert(name, to_any(LISTENER, &l));
            }
        }
    }
    for (name, port, chains, default, direction) in [
        ("virtualOutbound", 15001, outbound, outbound_default, TrafficDirection::Outbound),
        ("virtualInbound", 15006, inbound, inbound_default, TrafficDirection::Inbound),
    ] {
        let l = Listener {
            name: name.to_string(),
            address: socket(ip, port),
            use_original_dst: bool_value(true),
            traffic_direction: direction as i32,
            filter_chains: chains.into_values().collect(),
            default_filter_chain: Some(default),
            ..Default::default()
        };
        out.insert(name.to_string(), to_any(LISTENER, &l));
    }
    out
}
