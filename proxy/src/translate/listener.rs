//! Bootstrap and Listener → runtime config.
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap as PbBootstrap;
use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddrKind, data_source::Specifier, socket_address::PortSpecifier, socket_address::Protocol,
    Address, DataSource,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter::ConfigType, listener_filter::ConfigType as LfConfigType, FilterChain, Listener,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy::ClusterSpecifier, TcpProxy};

use super::{cluster::translate_cluster_in, decode_any, duration, hcm, ConfigError, Ctx};
use crate::config::{self, ChainMatch, FilterChainConfig, ListenerConfig, NetworkFilter, TcpProxyConfig};

const TCP_PROXY: &str = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HCM: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TLS_INSPECTOR: &str = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

pub fn translate_bootstrap(b: &PbBootstrap) -> Result<config::Bootstrap, ConfigError> {
    let admin = match b.admin.as_ref().and_then(|a| a.address.as_ref()) {
        Some(a) => Some(socket_address(&Ctx::new("admin").field("address"), a)?.0),
        None => None,
    };
    let sr = b.static_resources.clone().unwrap_or_default();
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    for (i, l) in sr.listeners.iter().enumerate() {
        let ctx = Ctx::new(format!("listener \"{}\" (static_resources.listeners[{i}])", l.name));
        if !names.insert(l.name.clone()) {
            return Err(ctx.field("name").err("duplicate listener name"));
        }
        listeners.push(translate_listener_in(&ctx, l)?);
    }
    let mut clusters = Vec::new();
    let mut cnames = HashSet::new();
    for (i, c) in sr.clusters.iter().enumerate() {
        let ctx = Ctx::new(format!("cluster \"{}\" (static_resources.clusters[{i}])", c.name));
        if !cnames.insert(c.name.clone()) {
            return Err(ctx.field("name").err("duplicate cluster name"));
        }
        clusters.push(translate_cluster_in(&ctx, c)?);
    }
    let dynamic = match &b.dynamic_resources {
        None => None,
        Some(d) => Some(dynamic_resources(&Ctx::new("dynamic_resources"), d, &cnames)?),
    };
    check_cluster_refs(&listeners, &cnames, dynamic.as_ref().is_some_and(|d| d.cds))?;
    let node = b.node.clone().unwrap_or_default();
    let source = super::SourceConfig(std::sync::Arc::new(b.clone()));
    Ok(config::Bootstrap { node_id: node.id, node_cluster: node.cluster, admin, listeners, clusters, dynamic, source })
}

/// Static config must be self-consistent: a route or tcp_proxy naming a cluster that does not
/// exist is a configuration error up front (Envoy's `validate_clusters`, default true for inline
/// route tables). With CDS, clusters may arrive later (they answer 503 NC until then), so only an
/// explicit `validate_clusters: true` checks routes then; `false` never does.
fn check_cluster_refs(listeners: &[ListenerConfig], clusters: &HashSet<String>, cds: bool) -> Result<(), ConfigError> {
    for l in listeners {
        for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            let ctx = Ctx::new(format!("listener \"{}\"", l.name)).field(&format!("filter_chain \"{}\"", fc.name));
            let missing: Vec<String> = match &fc.filter {
                NetworkFilter::TcpProxy(_) if cds => continue,
                NetworkFilter::TcpProxy(t) => t.clusters.iter().map(|c| c.0.clone()).collect(),
                NetworkFilter::Http(h) => match &h.routes {
                    config::RouteSource::Inline(t) if t.validate_clusters.unwrap_or(!cds) => {
                        t.clusters().map(str::to_string).collect()
                    }
                    _ => continue,
                },
            };
            if let Some(c) = missing.iter().find(|c| !clusters.contains(*c)) {
                return Err(ctx.err(format!("references unknown cluster \"{c}\"")));
            }
        }
    }
    Ok(())
}

pub(crate) fn translate_listener_in(ctx: &Ctx, l: &Listener) -> Result<ListenerConfig, ConfigError> {
    if l.name.is_empty() {
        return Err(ctx.field("name").err("a listener needs a name"));
    }
    let addr = l.address.as_ref().ok_or_else(|| ctx.field("address").err("address is required"))?;
    let (address, dual_stack) = socket_address(&ctx.field("address"), addr)?;
    let mut tls_inspector = false;
    for (i, lf) in l.listener_filters.iter().enumerate() {
        let fctx = ctx.index("listener_filters", i);
        match &lf.config_type {
            Some(LfConfigType::TypedConfig(any)) if super::type_name(&any.type_url) == TLS_INSPECTOR => {
                tls_inspector = true
            }
            Some(LfConfigType::TypedConfig(any)) => {
                return Err(fctx.field("typed_config").err(format!("unsupported listener filter {}", any.type_url)))
            }
            _ if lf.name == "envoy.filters.listener.tls_inspector" => tls_inspector = true,
            _ => return Err(fctx.err(format!("unsupported listener filter \"{}\"", lf.name))),
        }
    }
    let filter_chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, fc)| filter_chain(&ctx.index("filter_chains", i), fc))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in filter_chains.iter().enumerate() {
        if filter_chains[..i].iter().any(|b| b.matcher == a.matcher) {
            return Err(ctx.index("filter_chains", i).field("filter_chain_match").err("duplicate filter chain match"));
        }
    }
    let default_filter_chain =
        l.default_filter_chain.as_ref().map(|fc| filter_chain(&ctx.field("default_filter_chain"), fc)).transpose()?;
    if filter_chains.is_empty() && default_filter_chain.is_none() {
        return Err(ctx.field("filter_chains").err("a listener needs at least one filter chain"));
    }
    let needs_inspector =
        filter_chains.iter().any(|f| !f.matcher.server_names.is_empty() || !f.matcher.application_protocols.is_empty());
    if needs_inspector && !tls_inspector {
        return Err(ctx.field("listener_filters").err(
            "filter chains match server_names/application_protocols, which needs the tls_inspector listener filter",
        ));
    }
    #[allow(deprecated)]
    let use_original_dst = l.use_original_dst.as_ref().is_some_and(|v| v.value);
    Ok(ListenerConfig {
        name: l.name.clone(),
        address,
        dual_stack,
        use_original_dst,
        tls_inspector,
        filter_chains,
        default_filter_chain,
        reuse_port: l.enable_reuse_port.as_ref().is_some_and(|v| v.value),
        stat_prefix: (!l.stat_prefix.is_empty()).then(|| l.stat_prefix.clone()),
    })
}

fn filter_chain(ctx: &Ctx, fc: &FilterChain) -> Result<FilterChainConfig, ConfigError> {
    let matcher =
        match &fc.filter_chain_match {
            None => ChainMatch::default(),
            Some(m) => {
                let destination_port =
                    match m.destination_port.as_ref().map(|p| p.value) {
                        None => None,
                        Some(p) => Some(u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                            ctx.field("filter_chain_match.destination_port").err("port out of range")
                        })?),
                    };
                let tp = m.transport_protocol.clone();
                if !tp.is_empty() && tp != "tls" && tp != "raw_buffer" {
                    return Err(ctx
                        .field("filter_chain_match.transport_protocol")
                        .err(format!("unknown transport protocol \"{tp}\" (tls or raw_buffer)")));
                }
                ChainMatch {
                    destination_port,
                    server_names: m.server_names.iter().map(|s| s.to_ascii_lowercase()).collect(),
                    transport_protocol: (!tp.is_empty()).then_some(tp),
                    application_protocols: m.application_protocols.clone(),
                }
            }
        };
    if fc.filters.is_empty() {
        return Err(ctx.field("filters").err("a filter chain needs a terminal network filter"));
    }
    if fc.filters.len() > 1 {
        return Err(ctx
            .index("filters", 1)
            .err("only one network filter (tcp_proxy or http_connection_manager) per chain is supported"));
    }
    let fctx = ctx.index("filters", 0);
    let f = &fc.filters[0];
    let any = match &f.config_type {
        Some(ConfigType::TypedConfig(any)) => any,
        _ => return Err(fctx.field("typed_config").err(format!("filter \"{}\" needs a typed_config", f.name))),
    };
    let tctx = fctx.field("typed_config");
    let filter = match super::type_name(&any.type_url) {
        TCP_PROXY => {
            NetworkFilter::TcpProxy(std::sync::Arc::new(tcp_proxy(&tctx, &decode_any(&tctx, any, TCP_PROXY)?)?))
        }
        HCM => NetworkFilter::Http(std::sync::Arc::new(hcm::translate_hcm(&tctx, &decode_any(&tctx, any, HCM)?)?)),
        other => return Err(tctx.err(format!("unsupported network filter {other}"))),
    };
    Ok(FilterChainConfig { name: fc.name.clone(), matcher, filter })
}

fn tcp_proxy(ctx: &Ctx, t: &TcpProxy) -> Result<TcpProxyConfig, ConfigError> {
    if t.stat_prefix.is_empty() {
        return Err(ctx.field("stat_prefix").err("stat_prefix is required"));
    }
    let clusters = match &t.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => vec![(c.clone(), 1)],
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let v: Vec<(String, u32)> = w.clusters.iter().map(|c| (c.name.clone(), c.weight)).collect();
            if v.iter().map(|c| c.1 as u64).sum::<u64>() == 0 {
                return Err(ctx.field("weighted_clusters").err("the sum of weights must be greater than 0"));
            }
            v
        }
        _ => return Err(ctx.field("cluster").err("cluster or weighted_clusters is required")),
    };
    let idle_timeout = match &t.idle_timeout {
        None => Some(std::time::Duration::from_secs(3600)),
        Some(_) => duration(&t.idle_timeout).filter(|d| !d.is_zero()),
    };
    let access_log = hcm::access_logs(&ctx.field("access_log"), &t.access_log)?;
    Ok(TcpProxyConfig { stat_prefix: t.stat_prefix.clone(), clusters, idle_timeout, access_log })
}

/// Returns the address and whether an IPv6 any-address should also accept IPv4.
pub(crate) fn socket_address(ctx: &Ctx, a: &Address) -> Result<(SocketAddr, bool), ConfigError> {
    let sa = match &a.address {
        Some(AddrKind::SocketAddress(sa)) => sa,
        _ => return Err(ctx.err("only socket_address is supported")),
    };
    let ctx = ctx.field("socket_address");
    if sa.protocol != Protocol::Tcp as i32 {
        return Err(ctx.field("protocol").err("only TCP is supported"));
    }
    // TCP is 0, the default; anything else would be bound as TCP all the same.
    if sa.protocol != 0 {
        return Err(ctx.field("protocol").err("only TCP is supported"));
    }
    if !sa.resolver_name.is_empty() {
        return Err(ctx.field("resolver_name").err("custom resolvers are not supported"));
    }
    let ip: IpAddr =
        sa.address.parse().map_err(|_| ctx.field("address").err(format!("\"{}\" is not an IP address", sa.address)))?;
    let port = match &sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => {
            u16::try_from(*p).map_err(|_| ctx.field("port_value").err("port out of range"))?
        }
        _ => return Err(ctx.field("port_value").err("port_value is required")),
    };
    Ok((SocketAddr::new(ip, port), sa.ipv4_compat))
}

pub(crate) fn data_source(ctx: &Ctx, ds: &DataSource) -> Result<bytes::Bytes, ConfigError> {
    Ok(match &ds.specifier {
        Some(Specifier::InlineString(s)) => bytes::Bytes::from(s.clone()),
        Some(Specifier::InlineBytes(b)) => bytes::Bytes::from(b.clone()),
        Some(Specifier::Filename(f)) => {
            std::fs::read(f).map(bytes::Bytes::from).map_err(|e| ctx.field("filename").err(format!("{f}: {e}")))?
        }
        _ => return Err(ctx.err("unsupported data source")),
    })
}

fn dynamic_resources(
    ctx: &Ctx,
    d: &envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::DynamicResources,
    static_clusters: &HashSet<String>,
) -> Result<config::DynamicConfig, ConfigError> {
    use envoy_types::pb::envoy::config::core::v3::{api_config_source::ApiType, grpc_service::TargetSpecifier};
    let ads = d.ads_config.as_ref().ok_or_else(|| ctx.field("ads_config").err("ads_config is required"))?;
    let actx = ctx.field("ads_config");
    let delta = match ApiType::try_from(ads.api_type) {
        Ok(ApiType::Grpc) => false,
        Ok(ApiType::DeltaGrpc) => true,
        _ => return Err(actx.field("api_type").err("only GRPC and DELTA_GRPC are supported")),
    };
    if !matches!(ads.transport_api_version, 0 | 2) {
        return Err(actx.field("transport_api_version").err("only V3 is supported"));
    }
    if ads.grpc_services.len() != 1 {
        return Err(actx.field("grpc_services").err("exactly one grpc_service is required"));
    }
    let ads_cluster = match &ads.grpc_services[0].target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(g)) => g.cluster_name.clone(),
        _ => return Err(actx.index("grpc_services", 0).err("envoy_grpc with a cluster_name is required")),
    };
    if !static_clusters.contains(&ads_cluster) {
        return Err(actx
            .index("grpc_services", 0)
            .field("envoy_grpc.cluster_name")
            .err(format!("\"{ads_cluster}\" must be a static cluster")));
    }
    let lds_fetch_timeout = match d.lds_config {
        Some(_) => super::ads_source(&ctx.field("lds_config"), &d.lds_config)?,
        None => None,
    };
    let cds_fetch_timeout = match d.cds_config {
        Some(_) => super::ads_source(&ctx.field("cds_config"), &d.cds_config)?,
        None => None,
    };
    Ok(config::DynamicConfig {
        ads_cluster,
        lds: d.lds_config.is_some(),
        cds: d.cds_config.is_some(),
        delta,
        lds_fetch_timeout,
        cds_fetch_timeout,
        node_on_first_message_only: ads.set_node_on_first_message_only,
    })
}
