//! A DestinationRule's traffic policy on a cluster, as istiod (1.30) applies it in
//! pilot/pkg/networking/core/cluster_traffic_policy.go: which policy holds for a port and
//! subset (`GetPortLevelTrafficPolicy`, `MergeSubsetTrafficPolicy` in networking/util), then
//! `applyH2Upgrade`, `applyConnectionPool` (circuit breakers, connect timeout, TCP keepalive,
//! the upstream HTTP options), `applyOutlierDetection` and `applyLoadBalancer`. Every cluster
//! gets the connection pool step, so every one has istiod's default circuit breakers.
use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::Thresholds;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    CommonLbConfig, LbConfig, LbPolicy, MaglevLbConfig, RingHashLbConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier, UpstreamConnectionOptions,
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions, TcpKeepalive,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    explicit_http_config, ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::UInt64Value;

use super::{pb_duration, seconds, to_any, u32_value};
use crate::istio::model::{Destination, DestinationRule, Port, SimpleLb, Subset};
use crate::istio::policy::{
    ConnectionPool, ConsistentHash, H2UpgradePolicy, LoadBalancer, OutlierDetection, TrafficPolicy,
};

pub(crate) const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The parts of a traffic policy that hold for one cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<'a> {
    pub load_balancer: Option<&'a LoadBalancer>,
    pub connection_pool: Option<&'a ConnectionPool>,
    pub outlier_detection: Option<&'a OutlierDetection>,
}

/// `GetPortLevelTrafficPolicy`: the port's settings, when there are some for it, replace the
/// whole policy (omitted parts fall back to the defaults, not to the top level).
fn port_level(tp: Option<&TrafficPolicy>, port: u16) -> (Option<Policy<'_>>, bool) {
    let Some(tp) = tp else { return (None, false) };
    match tp.port_level_settings.iter().find(|p| p.port.as_ref().is_some_and(|s| s.number == port)) {
        Some(p) => (
            Some(Policy {
                load_balancer: p.load_balancer.as_ref(),
                connection_pool: p.connection_pool.as_ref(),
                outlier_detection: p.outlier_detection.as_ref(),
            }),
            true,
        ),
        None => (
            Some(Policy {
                load_balancer: tp.load_balancer.as_ref(),
                connection_pool: tp.connection_pool.as_ref(),
                outlier_detection: tp.outlier_detection.as_ref(),
            }),
            false,
        ),
    }
}

/// The policy of the cluster for `port` (and `subset`): `MergeSubsetTrafficPolicy`. A subset's
/// policy replaces the DestinationRule's part by part (load balancer, connection pool, outlier
/// detection), and all of them when the subset has settings for this port.
pub fn policy_for<'a>(dr: Option<&'a DestinationRule>, subset: Option<&'a Subset>, port: u16) -> Policy<'a> {
    let (top, _) = port_level(dr.and_then(|d| d.traffic_policy.as_ref()), port);
    let Some(sub_tp) = subset.and_then(|s| s.traffic_policy.as_ref()) else { return top.unwrap_or_default() };
    let (sub, whole) = port_level(Some(sub_tp), port);
    let sub = sub.unwrap_or_default();
    let Some(mut merged) = top else { return sub };
    if sub.load_balancer.is_some() || whole {
        merged.load_balancer = sub.load_balancer;
    }
    if sub.connection_pool.is_some() || whole {
        merged.connection_pool = sub.connection_pool;
    }
    if sub.outlier_detection.is_some() || whole {
        merged.outlier_detection = sub.outlier_detection;
    }
    merged
}

/// The consistent hash of a route destination (`HashForHTTPDestination`): the subset's
/// port-level, the subset's, the DestinationRule's port-level (only for a destination that
/// names its port), else the DestinationRule's.
pub fn hash_for_destination<'a>(dr: Option<&'a DestinationRule>, d: &Destination) -> Option<&'a ConsistentHash> {
    let dr = dr?;
    let tp = dr.traffic_policy.as_ref();
    let hash = |lb: Option<&'a LoadBalancer>| lb.and_then(|l| l.consistent_hash.as_ref());
    let port_hash = |tp: Option<&'a TrafficPolicy>| {
        let port = d.port.as_ref()?.number;
        let pls = tp?.port_level_settings.iter().find(|p| p.port.as_ref().is_some_and(|s| s.number == port))?;
        hash(pls.load_balancer.as_ref())
    };
    let subset = dr.subsets.iter().find(|s| Some(s.name.as_str()) == d.subset.as_deref());
    let sub_tp = subset.and_then(|s| s.traffic_policy.as_ref());
    port_hash(sub_tp)
        .or_else(|| hash(sub_tp.and_then(|t| t.load_balancer.as_ref())))
        .or_else(|| port_hash(tp))
        .or_else(|| hash(tp.and_then(|t| t.load_balancer.as_ref())))
}

/// The consistent hash of a service port's default route (`hashForService`): the
/// DestinationRule's, or its settings for that port when they have one.
pub fn hash_for_service(dr: Option<&DestinationRule>, port: u16) -> Option<&ConsistentHash> {
    let tp = dr?.traffic_policy.as_ref()?;
    let top = tp.load_balancer.as_ref().and_then(|l| l.consistent_hash.as_ref());
    match tp.port_level_settings.iter().find(|p| p.port.as_ref().is_some_and(|s| s.number == port)) {
        Some(p) => p.load_balancer.as_ref().and_then(|l| l.consistent_hash.as_ref()).or(top),
        None => top,
    }
}

/// Which way the cluster sends traffic: inbound clusters take only the connection pool.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

fn h2_options() -> UpstreamProtocolOptions {
    UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
        protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
            Http2ProtocolOptions::default(),
        )),
    })
}

/// Istio's HTTP2 protocols (`IsHTTP2`): the cluster speaks HTTP/2 upstream whatever the policy.
fn speaks_h2(port: &Port) -> bool {
    ["http2", "grpc", "grpc-web"].iter().any(|p| port.protocol.eq_ignore_ascii_case(p))
}

/// `shouldH2Upgrade` with the mesh's default policy (DO_NOT_UPGRADE): only an explicit UPGRADE,
/// which istiod honours on any port, and never with useClientProtocol.
fn h2_upgrade(pool: Option<&ConnectionPool>) -> bool {
    pool.and_then(|p| p.http.as_ref())
        .is_some_and(|h| !h.use_client_protocol && h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade))
}

/// Istio's default thresholds (`getDefaultCircuitBreakerThresholds`): no limits, since Envoy's
/// defaults (1024, 3 retries) trip during rolling updates. `track_remaining` follows istiod's
/// DISABLE_TRACK_REMAINING_CB_METRICS, true (so off) by default since 1.29.
fn default_thresholds() -> Thresholds {
    Thresholds {
        max_connections: u32_value(u32::MAX),
        max_pending_requests: u32_value(u32::MAX),
        max_requests: u32_value(u32::MAX),
        max_retries: u32_value(u32::MAX),
        ..Default::default()
    }
}

/// A positive count (istiod treats 0 as unset: the default stays).
fn positive(v: Option<i64>) -> Option<u32> {
    v.filter(|n| *n > 0).map(|n| n as u32)
}

/// `applyConnectionPool`: circuit breakers, connect timeout (the mesh's 10 s unless the pool's
/// tcp says otherwise), TCP keepalive and the upstream HTTP options. `http` are the cluster's
/// upstream HTTP options so far (HTTP/2 for an HTTP/2 port).
fn connection_pool(c: &mut Cluster, pool: Option<&ConnectionPool>, http: &mut Option<HttpProtocolOptions>) {
    let mut t = default_thresholds();
    let (mut idle, mut per_connection, mut streams, mut max_duration) = (None, None, None, None);
    let h = pool.and_then(|p| p.http.as_ref());
    if let Some(h) = h {
        t.max_requests = positive(h.http2_max_requests).and_then(u32_value).or(t.max_requests);
        t.max_pending_requests = positive(h.http1_max_pending_requests).and_then(u32_value).or(t.max_pending_requests);
        t.max_retries = positive(h.max_retries).and_then(u32_value).or(t.max_retries);
        idle = h.idle_timeout;
        per_connection = positive(h.max_requests_per_connection);
        streams = positive(h.max_concurrent_streams);
    }
    c.connect_timeout = seconds(10);
    if let Some(tcp) = pool.and_then(|p| p.tcp.as_ref()) {
        if let Some(ct) = tcp.connect_timeout {
            c.connect_timeout = Some(pb_duration(ct.0));
        }
        t.max_connections = positive(tcp.max_connections).and_then(u32_value).or(t.max_connections);
        max_duration = tcp.max_connection_duration;
        idle = idle.or(tcp.idle_timeout);
        if let Some(k) = &tcp.tcp_keepalive {
            // `setKeepAliveSettings`: whole seconds, as istiod truncates them.
            c.upstream_connection_options = Some(UpstreamConnectionOptions {
                tcp_keepalive: Some(TcpKeepalive {
                    keepalive_probes: positive(k.probes).and_then(u32_value),
                    keepalive_time: k.time.and_then(|d| u32_value(d.0.as_secs() as u32)),
                    keepalive_interval: k.interval.and_then(|d| u32_value(d.0.as_secs() as u32)),
                }),
                ..Default::default()
            });
        }
    }
    c.circuit_breakers = Some(CircuitBreakers { thresholds: vec![t], ..Default::default() });
    if idle.is_some() || per_connection.is_some() || streams.is_some() || max_duration.is_some() {
        let options = http.get_or_insert_with(HttpProtocolOptions::default);
        let common = options.common_http_protocol_options.get_or_insert_with(CommonHttpOptions::default);
        if let Some(d) = idle {
            common.idle_timeout = Some(pb_duration(d.0));
        }
        if let Some(n) = per_connection {
            common.max_requests_per_connection = u32_value(n);
        }
        if let Some(d) = max_duration {
            common.max_connection_duration = Some(pb_duration(d.0));
        }
        // Only a cluster that speaks HTTP/2 upstream takes the stream limit.
        if let Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(h2)),
        })) = &mut options.upstream_protocol_options
        {
            if let Some(n) = streams {
                h2.max_concurrent_streams = u32_value(n);
            }
        }
    }
    if h.is_some_and(|h| h.use_client_protocol) {
        // `setUseDownstreamProtocol`: HTTP/1 or HTTP/2 upstream as the client spoke.
        let options = http.get_or_insert_with(HttpProtocolOptions::default);
        let h1 = match &options.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(h1)),
            })) => h1.clone(),
            _ => Http1ProtocolOptions::default(),
        };
        options.upstream_protocol_options =
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(h1),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            }));
    }
}

/// `applyOutlierDetection`: ejection on consecutive 5xx / gateway / local-origin errors (each
/// enforced at 100 % when above 0), success-rate ejection off, and the panic threshold at
/// `minHealthPercent` (0 when unset: istiod turns panic mode off).
fn outlier_detection(c: &mut Cluster, o: &OutlierDetection) {
    let enforced = |v: Option<i64>| {
        v.map(|n| n as u32).map(|n| (u32_value(n), u32_value(if n > 0 { 100 } else { 0 }))).unwrap_or((None, None))
    };
    let (consecutive_5xx, enforcing_consecutive_5xx) = enforced(o.consecutive_5xx_errors);
    let (consecutive_gateway_failure, enforcing_consecutive_gateway_failure) = enforced(o.consecutive_gateway_errors);
    let mut out = EnvoyOutlier {
        enforcing_success_rate: u32_value(0),
        consecutive_5xx,
        enforcing_consecutive_5xx,
        consecutive_gateway_failure,
        enforcing_consecutive_gateway_failure,
        interval: o.interval.map(|d| pb_duration(d.0)),
        base_ejection_time: o.base_ejection_time.map(|d| pb_duration(d.0)),
        max_ejection_percent: positive(o.max_ejection_percent).and_then(u32_value),
        ..Default::default()
    };
    if o.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        if let Some(n) = positive(o.consecutive_local_origin_failures) {
            out.consecutive_local_origin_failure = u32_value(n);
            out.enforcing_consecutive_local_origin_failure = u32_value(100);
        }
        out.enforcing_local_origin_success_rate = u32_value(0);
    }
    c.outlier_detection = Some(out);
    let threshold = o.min_health_percent.unwrap_or(0) as f64;
    c.common_lb_config =
        Some(CommonLbConfig { healthy_panic_threshold: Some(Percent { value: threshold }), ..Default::default() });
}

/// `applyLoadBalancer` for simple policies and `ApplyRingHashLoadBalancer`: LEAST_REQUEST
/// unless the policy says otherwise (istiod's default algorithm), RING_HASH (1024 entries
/// minimum unless configured) or MAGLEV for a consistent hash.
fn load_balancer(c: &mut Cluster, lb: Option<&LoadBalancer>) {
    c.lb_policy = match lb.and_then(|l| l.simple) {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        _ => LbPolicy::LeastRequest,
    } as i32;
    if let Some(ch) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        ring_hash(c, ch);
    }
}

/// `ApplyRingHashLoadBalancer`.
fn ring_hash(c: &mut Cluster, ch: &ConsistentHash) {
    let size = |n: Option<u64>| n.filter(|n| *n != 0).map(|value| UInt64Value { value });
    if let Some(m) = &ch.maglev {
        c.lb_policy = LbPolicy::Maglev as i32;
        c.lb_config = size(m.table_size)
            .map(|table_size| LbConfig::MaglevLbConfig(MaglevLbConfig { table_size: Some(table_size) }));
    } else if let Some(r) = &ch.ring_hash {
        c.lb_policy = LbPolicy::RingHash as i32;
        c.lb_config = size(r.minimum_ring_size)
            .map(|s| LbConfig::RingHashLbConfig(RingHashLbConfig { minimum_ring_size: Some(s), ..Default::default() }));
    } else {
        c.lb_policy = LbPolicy::RingHash as i32;
        let min = size(ch.minimum_ring_size).unwrap_or(UInt64Value { value: 1024 });
        c.lb_config =
            Some(LbConfig::RingHashLbConfig(RingHashLbConfig { minimum_ring_size: Some(min), ..Default::default() }));
    }
}

/// `applyTrafficPolicy` on a service cluster of `port` (after `setUpstreamProtocol`: HTTP/2
/// ports speak HTTP/2 upstream). Outbound clusters take every part; inbound ones the
/// connection pool only.
pub fn apply(c: &mut Cluster, p: &Policy<'_>, port: &Port, direction: Direction) {
    let mut http = speaks_h2(port)
        .then(|| HttpProtocolOptions { upstream_protocol_options: Some(h2_options()), ..Default::default() });
    if direction == Direction::Outbound && h2_upgrade(p.connection_pool) {
        let options = http.get_or_insert_with(HttpProtocolOptions::default);
        options.upstream_protocol_options.get_or_insert_with(h2_options);
    }
    connection_pool(c, p.connection_pool, &mut http);
    if direction == Direction::Outbound {
        if let Some(o) = p.outlier_detection {
            outlier_detection(c, o);
        }
        load_balancer(c, p.load_balancer);
    }
    if let Some(mut options) = http {
        // Envoy requires one of the upstream protocol options: HTTP/1.1 unless set above.
        options.upstream_protocol_options.get_or_insert_with(|| {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            })
        });
        c.typed_extension_protocol_options.insert(
            HTTP_PROTOCOL_OPTIONS.to_string(),
            to_any(&format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"), &options),
        );
    }
}

/// The connection pool step alone, with no settings: what istiod gives its passthrough clusters.
pub fn apply_defaults(c: &mut Cluster) {
    connection_pool(c, None, &mut None);
}

/// What istiod's grpcgen (pilot/pkg/networking/grpcgen/cds.go `applyTrafficPolicy`) applies for
/// a proxyless gRPC client, which implements less of Envoy: a consistent hash, or LEAST_REQUEST
/// when asked for (round robin otherwise), and of the circuit breakers only `max_requests`
/// (gRFC A32), when `http2MaxRequests` sets it. Outrigger's 10 s connect timeout stays.
pub fn apply_proxyless(c: &mut Cluster, p: &Policy<'_>, port: &Port) {
    c.connect_timeout = seconds(10);
    if let Some(ch) = p.load_balancer.and_then(|l| l.consistent_hash.as_ref()) {
        ring_hash(c, ch);
    } else if p.load_balancer.and_then(|l| l.simple) == Some(SimpleLb::LeastRequest) {
        c.lb_policy = LbPolicy::LeastRequest as i32;
    }
    if let Some(n) = positive(p.connection_pool.and_then(|cp| cp.http.as_ref()).and_then(|h| h.http2_max_requests)) {
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds { max_requests: u32_value(n), ..Default::default() }],
            ..Default::default()
        });
    }
    if speaks_h2(port) {
        let options = HttpProtocolOptions { upstream_protocol_options: Some(h2_options()), ..Default::default() };
        c.typed_extension_protocol_options.insert(
            HTTP_PROTOCOL_OPTIONS.to_string(),
            to_any(&format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"), &options),
        );
    }
}
