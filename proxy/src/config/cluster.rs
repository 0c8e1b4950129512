use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    StrictDns,
    /// Endpoints from EDS, by service name (the cluster name when the config leaves it empty).
    Eds(Arc<str>),
    /// ORIGINAL_DST: the connection's original destination (before iptables REDIRECT) is the
    /// endpoint: passthrough for traffic no service matches.
    OriginalDst,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest {
        choice_count: u32,
    },
    Random,
    /// CLUSTER_PROVIDED: the cluster picks (ORIGINAL_DST).
    ClusterProvided,
    /// RING_HASH with `minimum_ring_size` (and `maximum_ring_size`).
    RingHash {
        min_size: u64,
        max_size: u64,
    },
    /// MAGLEV with its (prime) `table_size`.
    Maglev {
        table_size: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// `use_downstream_protocol_config`: the same protocol the client spoke.
    Downstream,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointConfig {
    Ip {
        addr: SocketAddr,
        weight: u32,
        /// EDS `health_status` UNHEALTHY, DRAINING or TIMEOUT: kept (with its runtime state)
        /// but given no traffic.
        eds_unhealthy: bool,
        /// Its priority and locality, when not priority 0 of a cluster without locality
        /// weighting (shared by the endpoints of one `LocalityLbEndpoints`).
        placement: Option<Arc<Placement>>,
    },
    /// STRICT_DNS: resolved now and every `dns_refresh_rate`.
    Dns { host: String, port: u16, weight: u32 },
}

/// Where an endpoint sits: `LocalityLbEndpoints.priority`, its locality and that locality's
/// `load_balancing_weight`, and the assignment's `overprovisioning_factor` (percent, 140).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub priority: u32,
    /// `region/zone/sub_zone`.
    pub locality: String,
    pub locality_weight: u32,
    pub overprovisioning: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Shared: a mesh has tens of thousands of clusters, and their names are everywhere (xDS
    /// store, snapshot, stats, config dump).
    pub name: Arc<str>,
    pub discovery: DiscoveryType,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub protocol: UpstreamProtocol,
    pub endpoints: Vec<EndpointConfig>,
    pub dns_refresh: Duration,
    pub dns_family: DnsFamily,
    pub idle_timeout: Option<Duration>,
    /// EDS `initial_fetch_timeout`: after it, the cluster is used without endpoints.
    pub eds_fetch_timeout: Option<Duration>,
    pub circuit_breakers: CircuitBreakers,
    pub outlier: Option<Box<OutlierDetection>>,
    /// `common_lb_config.healthy_panic_threshold` (percent, default 50): below this share of
    /// available endpoints, every endpoint gets traffic again.
    pub panic_threshold: f64,
    /// `common_lb_config.locality_weighted_lb_config`: localities get traffic by their weight.
    pub locality_weighted: bool,
    /// `common_http_protocol_options.max_requests_per_connection`.
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.max_connection_duration`.
    pub max_connection_duration: Option<Duration>,
    /// `upstream_connection_options.tcp_keepalive`.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `health_checks` (one).
    pub health_check: Option<Box<HealthCheck>>,
}

/// An active health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub timeout: Duration,
    pub interval: Duration,
    pub no_traffic_interval: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub kind: HealthCheckKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A connection that opens is healthy.
    Tcp,
    /// GET `path`; healthy when the status is in one of the `[start, end)` ranges.
    Http { path: String, host: Option<String>, expected: Vec<(i64, i64)> },
}

impl ClusterConfig {
    /// A STATIC round-robin cluster of `endpoints` with every other setting at its default: the
    /// one place unit tests build cluster configs from.
    #[cfg(test)]
    pub fn for_test(name: &str, endpoints: Vec<EndpointConfig>) -> ClusterConfig {
        ClusterConfig {
            name: name.into(),
            discovery: DiscoveryType::Static,
            lb: LbPolicy::RoundRobin,
            connect_timeout: Duration::from_secs(1),
            protocol: UpstreamProtocol::Http1,
            endpoints,
            dns_refresh: Duration::from_secs(5),
            dns_family: DnsFamily::Auto,
            idle_timeout: None,
            eds_fetch_timeout: None,
            circuit_breakers: Default::default(),
            outlier: None,
            panic_threshold: 50.0,
            locality_weighted: false,
            max_requests_per_connection: None,
            max_connection_duration: None,
            tcp_keepalive: None,
            health_check: None,
        }
    }

    /// Test endpoints 127.0.0.1:`first_port`+i with these weights.
    #[cfg(test)]
    pub fn test_endpoints(first_port: u16, weights: &[u32]) -> Vec<EndpointConfig> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| EndpointConfig::Ip {
                addr: ([127, 0, 0, 1], first_port + i as u16).into(),
                weight: *w,
                eds_unhealthy: false,
                placement: None,
            })
            .collect()
    }
}

/// TCP keep-alive on upstream sockets; unset values keep the system's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

/// `circuit_breakers.thresholds` (DEFAULT priority), Envoy's defaults when unset.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakers {
    pub max_connections: u64,
    pub max_pending_requests: u64,
    pub max_requests: u64,
    pub max_retries: u64,
    pub track_remaining: bool,
    /// `retry_budget`: (budget_percent, min_retry_concurrency).
    pub retry_budget: Option<(f64, u32)>,
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            track_remaining: false,
            retry_budget: None,
        }
    }
}

/// `outlier_detection`, with Envoy's defaults for what is unset.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub enforcing_consecutive_5xx: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub split_external_local_origin_errors: bool,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub success_rate_minimum_hosts: u32,
    pub success_rate_request_volume: u32,
    pub success_rate_stdev_factor: u32,
    pub enforcing_success_rate: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            split_external_local_origin_errors: false,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 100,
            success_rate_stdev_factor: 1900,
            enforcing_success_rate: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}
