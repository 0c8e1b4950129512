//! Cluster (with its inline ClusterLoadAssignment) → ClusterConfig.
use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::{ClusterDiscoveryType, DiscoveryType as PbDiscovery, DnsLookupFamily, LbConfig, LbPolicy as PbLb},
    Cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    address::Address as AddrKind, socket_address::PortSpecifier, HealthStatus,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config::ProtocolConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};

use super::{decode_any, duration, ConfigError, Ctx};
use crate::config::cluster::{CircuitBreakers, DnsFamily, OutlierDetection};
use crate::config::{ClusterConfig, DiscoveryType, EndpointConfig, LbPolicy, UpstreamProtocol};

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The upstream connections' idle timeout when the cluster does not set one.
pub const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(4);

pub fn translate_cluster(c: &Cluster) -> Result<ClusterConfig, ConfigError> {
    translate_cluster_in(&Ctx::new(format!("cluster \"{}\"", c.name)), c)
}

pub(crate) fn translate_cluster_in(ctx: &Ctx, c: &Cluster) -> Result<ClusterConfig, ConfigError> {
    if c.name.is_empty() {
        return Err(ctx.field("name").err("a cluster needs a name"));
    }
    let name: std::sync::Arc<str> = c.name.as_str().into();
    let mut eds_fetch_timeout = None;
    let discovery = match &c.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => match PbDiscovery::try_from(*t) {
            Ok(PbDiscovery::Static) => DiscoveryType::Static,
            Ok(PbDiscovery::StrictDns) => DiscoveryType::StrictDns,
            Ok(PbDiscovery::Eds) => {
                let eds = c.eds_cluster_config.as_ref();
                eds_fetch_timeout = super::ads_source(
                    &ctx.field("eds_cluster_config.eds_config"),
                    &eds.and_then(|e| e.eds_config.clone()),
                )?;
                // The service is usually the cluster itself: then the name is shared.
                match eds.map(|e| e.service_name.as_str()).filter(|s| !s.is_empty() && *s != c.name) {
                    Some(service) => DiscoveryType::Eds(service.into()),
                    None => DiscoveryType::Eds(name.clone()),
                }
            }
            Ok(PbDiscovery::OriginalDst) => DiscoveryType::OriginalDst,
            _ => return Err(ctx.field("type").err("only STATIC, STRICT_DNS, EDS and ORIGINAL_DST are supported")),
        },
        Some(_) => return Err(ctx.field("cluster_type").err("custom cluster types are not supported")),
    };
    let lb = match PbLb::try_from(c.lb_policy) {
        Ok(PbLb::RoundRobin) => LbPolicy::RoundRobin,
        Ok(PbLb::Random) => LbPolicy::Random,
        Ok(PbLb::LeastRequest) => {
            let choice_count = match &c.lb_config {
                Some(LbConfig::LeastRequestLbConfig(l)) => l.choice_count.map(|v| v.value).unwrap_or(2),
                _ => 2,
            };
            if choice_count < 2 {
                return Err(ctx.field("least_request_lb_config.choice_count").err("must be at least 2"));
            }
            LbPolicy::LeastRequest { choice_count }
        }
        Ok(PbLb::ClusterProvided) if discovery == DiscoveryType::OriginalDst => LbPolicy::ClusterProvided,
        Ok(PbLb::RingHash) => {
            let (min, max) = match &c.lb_config {
                Some(LbConfig::RingHashLbConfig(r)) => (
                    r.minimum_ring_size.map(|v| v.value).unwrap_or(1024),
                    r.maximum_ring_size.map(|v| v.value).unwrap_or(8 * 1024 * 1024),
                ),
                _ => (1024, 8 * 1024 * 1024),
            };
            if min == 0 || min > max || max > 8 * 1024 * 1024 {
                return Err(ctx.field("ring_hash_lb_config.minimum_ring_size").err("must be between 1 and maximum_ring_size (at most 8M)"));
            }
            LbPolicy::RingHash { min_size: min, max_size: max }
        }
        Ok(PbLb::Maglev) => {
            let size = match &c.lb_config {
                Some(LbConfig::MaglevLbConfig(m)) => m.table_size.map(|v| v.value).unwrap_or(65537),
                _ => 65537,
            };
            if !crate::upstream::hash::is_prime(size) || size > 5_000_011 {
                return Err(ctx.field("maglev_lb_config.table_size").err("must be a prime no larger than 5000011"));
            }
            LbPolicy::Maglev { table_size: size }
        }
        _ => {
            return Err(ctx
                .field("lb_policy")
                .err("only ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH and MAGLEV are supported (CLUSTER_PROVIDED with ORIGINAL_DST)"))
        }
    };
    if discovery == DiscoveryType::OriginalDst && c.load_assignment.is_some() {
        return Err(ctx.field("load_assignment").err("an ORIGINAL_DST cluster has no configured endpoints"));
    }
    let mismatched = match &c.lb_config {
        Some(LbConfig::LeastRequestLbConfig(_)) => {
            (!matches!(lb, LbPolicy::LeastRequest { .. })).then_some("least_request_lb_config")
        }
        Some(LbConfig::RingHashLbConfig(_)) => {
            (!matches!(lb, LbPolicy::RingHash { .. })).then_some("ring_hash_lb_config")
        }
        Some(LbConfig::MaglevLbConfig(_)) => (!matches!(lb, LbPolicy::Maglev { .. })).then_some("maglev_lb_config"),
        _ => None,
    };
    if let Some(field) = mismatched {
        return Err(ctx.field(field).err("does not match lb_policy"));
    }
    let connect_timeout = duration(&c.connect_timeout).unwrap_or(Duration::from_secs(5));
    if connect_timeout.is_zero() {
        return Err(ctx.field("connect_timeout").err("must be greater than 0"));
    }
    #[allow(deprecated)]
    let mut protocol =
        if c.http2_protocol_options.is_some() { UpstreamProtocol::Http2 } else { UpstreamProtocol::Http1 };
    // The upstream HTTP/2 client has no tuning knobs yet (the typed_extension_protocol_options
    // path refuses them too); accepting them here would ignore them.
    #[allow(deprecated)]
    if let Some(h2) = &c.http2_protocol_options {
        for (set, field) in [
            (h2.max_concurrent_streams.is_some(), "max_concurrent_streams"),
            (h2.initial_stream_window_size.is_some(), "initial_stream_window_size"),
            (h2.initial_connection_window_size.is_some(), "initial_connection_window_size"),
        ] {
            if set {
                return Err(ctx
                    .field(&format!("http2_protocol_options.{field}"))
                    .err("upstream HTTP/2 tuning is not supported; leave http2_protocol_options empty"));
            }
        }
    }
    // Unlike Envoy's 1 h: below the shortest common server keep-alive timeout (5 s, Node.js and
    // Apache), so that a pooled connection is dropped here before the server times it out.
    let mut idle_timeout = Some(DEFAULT_UPSTREAM_IDLE);
    let mut max_requests_per_connection = None;
    let mut max_connection_duration = None;
    for (key, any) in &c.typed_extension_protocol_options {
        let octx = ctx.field(&format!("typed_extension_protocol_options[{key}]"));
        if key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions" {
            return Err(octx.err(format!("unsupported protocol options \"{key}\"")));
        }
        let opts: HttpProtocolOptions = decode_any(&octx, any, HTTP_OPTIONS)?;
        if let Some(common) = &opts.common_http_protocol_options {
            if common.max_headers_count.is_some() {
                return Err(octx
                    .field("common_http_protocol_options.max_headers_count")
                    .err("not supported for upstream connections"));
            }
            if common.idle_timeout.is_some() {
                idle_timeout = duration(&common.idle_timeout).filter(|d| !d.is_zero());
            }
            max_requests_per_connection = common.max_requests_per_connection.map(|v| v.value).filter(|v| *v > 0);
            max_connection_duration = duration(&common.max_connection_duration).filter(|d| !d.is_zero());
        }
        match &opts.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    protocol = UpstreamProtocol::Http2;
                    if h2.max_concurrent_streams.is_some()
                        || h2.initial_stream_window_size.is_some()
                        || h2.initial_connection_window_size.is_some()
                    {
                        return Err(octx
                            .field("explicit_http_config.http2_protocol_options")
                            .err("upstream HTTP/2 tuning is not supported; leave http2_protocol_options empty"));
                    }
                }
                Some(ProtocolConfig::HttpProtocolOptions(_)) => protocol = UpstreamProtocol::Http1,
                _ => return Err(octx.field("explicit_http_config").err("only HTTP/1.1 and HTTP/2 are supported")),
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(d)) => {
                let tuned = d.http2_protocol_options.as_ref().is_some_and(|h2| {
                    h2.max_concurrent_streams.is_some()
                        || h2.initial_stream_window_size.is_some()
                        || h2.initial_connection_window_size.is_some()
                });
                if tuned {
                    return Err(octx
                        .field("use_downstream_protocol_config.http2_protocol_options")
                        .err("upstream HTTP/2 tuning is not supported; leave http2_protocol_options empty"));
                }
                protocol = UpstreamProtocol::Downstream
            }
            _ => return Err(octx.err("explicit_http_config or use_downstream_protocol_config is required")),
        }
    }
    #[allow(deprecated)]
    let dns_refresh = duration(&c.dns_refresh_rate).unwrap_or(Duration::from_secs(5));
    if dns_refresh < Duration::from_millis(1) {
        return Err(ctx.field("dns_refresh_rate").err("must be at least 1ms"));
    }
    let dns_family = match DnsLookupFamily::try_from(c.dns_lookup_family) {
        Ok(DnsLookupFamily::Auto) => DnsFamily::Auto,
        Ok(DnsLookupFamily::V4Only) => DnsFamily::V4Only,
        Ok(DnsLookupFamily::V6Only) => DnsFamily::V6Only,
        Ok(DnsLookupFamily::V4Preferred) => DnsFamily::V4Preferred,
        Ok(DnsLookupFamily::All) => DnsFamily::All,
        Err(_) => return Err(ctx.field("dns_lookup_family").err("unknown value")),
    };
    if matches!(discovery, DiscoveryType::Eds(_)) && c.load_assignment.is_some() {
        return Err(ctx.field("load_assignment").err("an EDS cluster takes its endpoints from EDS"));
    }
    let endpoints = match &c.load_assignment {
        Some(la) => translate_endpoints(&ctx.field("load_assignment"), la, &discovery)?,
        None => Vec::new(),
    };
    let circuit_breakers = circuit_breakers(&ctx.field("circuit_breakers"), c)?;
    let outlier =
        c.outlier_detection.as_ref().map(|o| outlier(&ctx.field("outlier_detection"), o)).transpose()?.map(Box::new);
    use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier;
    let locality_weighted = match c.common_lb_config.as_ref().and_then(|l| l.locality_config_specifier.as_ref()) {
        None => false,
        Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_)) => true,
        Some(_) => {
            return Err(ctx
                .field("common_lb_config.zone_aware_lb_config")
                .err("zone-aware routing is not supported (locality_weighted_lb_config is)"))
        }
    };
    let panic_threshold = match c.common_lb_config.as_ref().and_then(|l| l.healthy_panic_threshold) {
        None => 50.0,
        Some(p) if (0.0..=100.0).contains(&p.value) => p.value,
        Some(_) => return Err(ctx.field("common_lb_config.healthy_panic_threshold").err("must be between 0 and 100")),
    };
    let tcp_keepalive = c.upstream_connection_options.as_ref().and_then(|u| u.tcp_keepalive.as_ref()).map(|k| {
        crate::config::cluster::TcpKeepalive {
            probes: k.keepalive_probes.map(|v| v.value),
            time: k.keepalive_time.map(|v| std::time::Duration::from_secs(v.value as u64)),
            interval: k.keepalive_interval.map(|v| std::time::Duration::from_secs(v.value as u64)),
        }
    });
    let health_check = match c.health_checks.as_slice() {
        [] => None,
        [hc] => Some(Box::new(health_check(&ctx.index("health_checks", 0), hc)?)),
        _ => return Err(ctx.field("health_checks").err("only one health check per cluster is supported")),
    };
    Ok(ClusterConfig {
        locality_weighted,
        health_check,
        max_connection_duration,
        tcp_keepalive,
        circuit_breakers,
        outlier,
        panic_threshold,
        max_requests_per_connection,
        name,
        discovery,
        lb,
        connect_timeout,
        protocol,
        endpoints,
        dns_refresh,
        dns_family,
        idle_timeout,
        eds_fetch_timeout,
    })
}

/// A ClusterLoadAssignment (inline or from EDS) → endpoints. Host names are only allowed for
/// STRICT_DNS clusters.
pub fn translate_endpoints(
    lctx: &Ctx,
    la: &ClusterLoadAssignment,
    discovery: &DiscoveryType,
) -> Result<Vec<EndpointConfig>, ConfigError> {
    let mut endpoints = Vec::new();
    let overprovisioning = match la.policy.as_ref().and_then(|p| p.overprovisioning_factor) {
        Some(f) if f.value == 0 => {
            return Err(lctx.field("policy.overprovisioning_factor").err("must be greater than 0"))
        }
        Some(f) => f.value,
        None => 140,
    };
    for (i, le) in la.endpoints.iter().enumerate() {
        let lectx = lctx.index("endpoints", i);
        if le.priority > 127 {
            return Err(lectx.field("priority").err("at most 128 priorities (0-127)"));
        }
        let locality =
            le.locality.as_ref().map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone)).unwrap_or_default();
        let locality_weight = le.load_balancing_weight.map(|w| w.value).unwrap_or(0);
        // Shared by the group's endpoints; none for the common case (priority 0, no locality).
        let placed = le.priority != 0 || le.locality.is_some() || le.load_balancing_weight.is_some();
        let placement = (placed || overprovisioning != 140).then(|| {
            std::sync::Arc::new(crate::config::cluster::Placement {
                priority: le.priority,
                locality,
                locality_weight,
                overprovisioning,
            })
        });
        for (j, lb) in le.lb_endpoints.iter().enumerate() {
            let ectx = lectx.index("lb_endpoints", j);
            let health = HealthStatus::try_from(lb.health_status).unwrap_or(HealthStatus::Unknown);
            let eds_unhealthy =
                matches!(health, HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout);
            let weight = lb.load_balancing_weight.as_ref().map(|w| w.value).unwrap_or(1);
            if weight == 0 {
                return Err(ectx.field("load_balancing_weight").err("must be at least 1"));
            }
            let ep = match &lb.host_identifier {
                Some(HostIdentifier::Endpoint(e)) => e,
                _ => return Err(ectx.field("endpoint").err("endpoint is required")),
            };
            let actx = ectx.field("endpoint.address.socket_address");
            let sa = match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(AddrKind::SocketAddress(sa)) => sa,
                _ => return Err(actx.err("a socket_address is required")),
            };
            let port = match sa.port_specifier {
                Some(PortSpecifier::PortValue(p)) => u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| actx.field("port_value").err("port out of range"))?,
                _ => return Err(actx.field("port_value").err("port_value is required")),
            };
            let endpoint = match (sa.address.parse::<IpAddr>(), discovery) {
                (Ok(ip), _) => {
                    EndpointConfig::Ip { addr: (ip, port).into(), weight, eds_unhealthy, placement: placement.clone() }
                }
                (Err(_), DiscoveryType::StrictDns) if !sa.address.is_empty() => {
                    EndpointConfig::Dns { host: sa.address.clone(), port, weight }
                }
                (Err(_), _) => {
                    return Err(actx
                        .field("address")
                        .err(format!("\"{}\" is not an IP address (use type STRICT_DNS for host names)", sa.address)))
                }
            };
            endpoints.push(endpoint);
        }
    }
    Ok(endpoints)
}

fn circuit_breakers(ctx: &Ctx, c: &Cluster) -> Result<CircuitBreakers, ConfigError> {
    let mut out = CircuitBreakers::default();
    let Some(cb) = &c.circuit_breakers else { return Ok(out) };
    for (i, t) in cb.thresholds.iter().enumerate() {
        let tctx = ctx.index("thresholds", i);
        // Only DEFAULT routes exist (no route sets priority HIGH), so HIGH thresholds could
        // never apply.
        if t.priority != 0 {
            return Err(tctx.field("priority").err("only the DEFAULT priority is supported"));
        }
        let v =
            |o: &Option<envoy_types::pb::google::protobuf::UInt32Value>, d: u64| o.map(|v| v.value as u64).unwrap_or(d);
        out.max_connections = v(&t.max_connections, 1024);
        out.max_pending_requests = v(&t.max_pending_requests, 1024);
        out.max_requests = v(&t.max_requests, 1024);
        out.max_retries = v(&t.max_retries, 3);
        out.track_remaining = t.track_remaining;
        if let Some(b) = &t.retry_budget {
            let pct = b.budget_percent.map(|p| p.value).unwrap_or(20.0);
            if !(0.0..=100.0).contains(&pct) {
                return Err(tctx.field("retry_budget.budget_percent").err("must be between 0 and 100"));
            }
            out.retry_budget = Some((pct, b.min_retry_concurrency.map(|v| v.value).unwrap_or(3)));
        }
    }
    if !cb.per_host_thresholds.is_empty() {
        return Err(ctx.field("per_host_thresholds").err("not supported"));
    }
    Ok(out)
}

fn outlier(
    ctx: &Ctx,
    o: &envoy_types::pb::envoy::config::cluster::v3::OutlierDetection,
) -> Result<OutlierDetection, ConfigError> {
    let d = OutlierDetection::default();
    let u = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, def: u32| v.map(|v| v.value).unwrap_or(def);
    let pct = |field: &str, v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, def: u32| {
        let x = u(v, def);
        if x > 100 {
            Err(ctx.field(field).err("must be at most 100"))
        } else {
            Ok(x)
        }
    };
    let dur = |v, def: Duration| duration(v).unwrap_or(def);
    let out = OutlierDetection {
        consecutive_5xx: u(&o.consecutive_5xx, d.consecutive_5xx),
        consecutive_gateway_failure: u(&o.consecutive_gateway_failure, d.consecutive_gateway_failure),
        consecutive_local_origin_failure: u(&o.consecutive_local_origin_failure, d.consecutive_local_origin_failure),
        enforcing_consecutive_5xx: pct("enforcing_consecutive_5xx", &o.enforcing_consecutive_5xx, 100)?,
        enforcing_consecutive_gateway_failure: pct(
            "enforcing_consecutive_gateway_failure",
            &o.enforcing_consecutive_gateway_failure,
            0,
        )?,
        enforcing_consecutive_local_origin_failure: pct(
            "enforcing_consecutive_local_origin_failure",
            &o.enforcing_consecutive_local_origin_failure,
            100,
        )?,
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        interval: dur(&o.interval, d.interval),
        base_ejection_time: dur(&o.base_ejection_time, d.base_ejection_time),
        max_ejection_time: dur(&o.max_ejection_time, d.max_ejection_time),
        max_ejection_percent: pct("max_ejection_percent", &o.max_ejection_percent, 10)?,
        success_rate_minimum_hosts: u(&o.success_rate_minimum_hosts, 5),
        success_rate_request_volume: u(&o.success_rate_request_volume, 100),
        success_rate_stdev_factor: u(&o.success_rate_stdev_factor, 1900),
        enforcing_success_rate: pct("enforcing_success_rate", &o.enforcing_success_rate, 100)?,
    };
    // The local-origin success-rate detector is not implemented: only "off" can be set.
    if o.enforcing_local_origin_success_rate.is_some_and(|v| v.value != 0) {
        return Err(ctx
            .field("enforcing_local_origin_success_rate")
            .err("only 0 is supported (no local-origin success-rate detection)"));
    }
    if out.interval.is_zero() {
        return Err(ctx.field("interval").err("must be greater than 0"));
    }
    Ok(out)
}

fn health_check(
    ctx: &Ctx,
    hc: &envoy_types::pb::envoy::config::core::v3::HealthCheck,
) -> Result<crate::config::cluster::HealthCheck, ConfigError> {
    use crate::config::cluster::{HealthCheck, HealthCheckKind};
    use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
    let required = |d: &Option<envoy_types::pb::google::protobuf::Duration>, field: &str| {
        duration(d)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ctx.field(field).err("is required and must be greater than 0"))
    };
    let timeout = required(&hc.timeout, "timeout")?;
    let interval = required(&hc.interval, "interval")?;
    let threshold = |v: &Option<envoy_types::pb::google::protobuf::UInt32Value>, field: &str| {
        v.map(|v| v.value).filter(|v| *v > 0).ok_or_else(|| ctx.field(field).err("is required and must be at least 1"))
    };
    let kind = match &hc.health_checker {
        Some(HealthChecker::HttpHealthCheck(h)) => {
            if h.path.is_empty() || !h.path.starts_with('/') {
                return Err(ctx.field("http_health_check.path").err("a path starting with / is required"));
            }
            let mut expected = Vec::new();
            for (i, r) in h.expected_statuses.iter().enumerate() {
                if !(100..=600).contains(&r.start) || !(101..=600).contains(&r.end) || r.start >= r.end {
                    return Err(ctx
                        .field(&format!("http_health_check.expected_statuses[{i}]"))
                        .err("must be a range [start, end) within 100..600"));
                }
                expected.push((r.start, r.end));
            }
            if expected.is_empty() {
                // Envoy's default: 200 only.
                expected.push((200, 201));
            }
            HealthCheckKind::Http { path: h.path.clone(), host: (!h.host.is_empty()).then(|| h.host.clone()), expected }
        }
        Some(HealthChecker::TcpHealthCheck(_)) => HealthCheckKind::Tcp,
        _ => return Err(ctx.err("http_health_check or tcp_health_check is required")),
    };
    Ok(HealthCheck {
        timeout,
        interval,
        no_traffic_interval: duration(&hc.no_traffic_interval)
            .filter(|d| !d.is_zero())
            .unwrap_or(crate::upstream::health_check::DEFAULT_NO_TRAFFIC_INTERVAL),
        unhealthy_threshold: threshold(&hc.unhealthy_threshold, "unhealthy_threshold")?,
        healthy_threshold: threshold(&hc.healthy_threshold, "healthy_threshold")?,
        kind,
    })
}
