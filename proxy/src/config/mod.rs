//! Runtime configuration: plain Rust types compiled from Envoy resources. No protobuf here.
pub mod cluster;
pub mod listener;
pub mod route;

use std::net::SocketAddr;

pub use cluster::{ClusterConfig, DiscoveryType, EndpointConfig, LbPolicy, UpstreamProtocol};
pub use listener::{
    AccessLogSink, ChainMatch, Codec, FilterChainConfig, HttpConnManagerConfig, ListenerConfig, NetworkFilter,
    RouteSource, ServerHeader, TcpProxyConfig, UpgradeKind,
};
pub use route::{
    Action, DomainMatcher, HeaderMatch, PathMatch, QueryMatch, Redirect, Route, RouteAction, RouteTable, StringMatch,
    VirtualHost, WeightedTarget,
};

/// Everything the bootstrap file asks for, compiled.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub node_id: String,
    pub node_cluster: String,
    pub admin: Option<SocketAddr>,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// `dynamic_resources`: LDS and CDS over ADS from this (static) cluster.
    pub dynamic: Option<DynamicConfig>,
    /// The loaded resources, for `/config_dump`.
    pub source: crate::translate::SourceConfig,
}

/// ADS settings from the bootstrap's `dynamic_resources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicConfig {
    /// The static cluster the ADS server is reached through (`envoy_grpc.cluster_name`).
    pub ads_cluster: String,
    /// Listeners come from LDS (`lds_config: {ads: {}}`).
    pub lds: bool,
    /// Clusters come from CDS (`cds_config: {ads: {}}`).
    pub cds: bool,
    /// Incremental xDS (`api_type: DELTA_GRPC`) rather than state of the world.
    pub delta: bool,
    /// `initial_fetch_timeout` of `lds_config` / `cds_config`: after it, the proxy is
    /// initialised (ready) without them.
    pub lds_fetch_timeout: Option<std::time::Duration>,
    /// `set_node_on_first_message_only`: the node goes only in a stream's first request.
    pub node_on_first_message_only: bool,
    pub cds_fetch_timeout: Option<std::time::Duration>,
}
