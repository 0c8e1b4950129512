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
    },
    /// STRICT_DNS: resolved now and every `dns_refresh_rate`.
    Dns {
        host: String,
        port: u16,
        weight: u32,
    },
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsFamily {
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}
