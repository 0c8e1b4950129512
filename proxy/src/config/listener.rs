use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::route::RouteTable;

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// `ipv4_compat` on an IPv6 any-address: accept IPv4 too.
    pub dual_stack: bool,
    /// `use_original_dst`: filter chains match (and passthrough goes to) the destination the
    /// connection had before an iptables REDIRECT brought it here.
    pub use_original_dst: bool,
    /// The tls_inspector listener filter is configured: peek for SNI/ALPN.
    pub tls_inspector: bool,
    pub filter_chains: Vec<FilterChainConfig>,
    pub default_filter_chain: Option<FilterChainConfig>,
    /// `enable_reuse_port: true`: the socket is bound with SO_REUSEPORT.
    pub reuse_port: bool,
    /// `stat_prefix`: listener stats are keyed by it instead of the address.
    pub stat_prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FilterChainConfig {
    pub name: String,
    pub matcher: ChainMatch,
    pub filter: NetworkFilter,
}

/// `FilterChainMatch`, the subset Outrigger implements. Empty means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    /// Lower-cased; `*.example.com` wildcards allowed.
    pub server_names: Vec<String>,
    pub transport_protocol: Option<String>,
    pub application_protocols: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum NetworkFilter {
    TcpProxy(Arc<TcpProxyConfig>),
    Http(Arc<HttpConnManagerConfig>),
}

#[derive(Debug, Clone)]
pub struct TcpProxyConfig {
    pub stat_prefix: String,
    /// (cluster, weight); a single cluster has weight 1.
    pub clusters: Vec<(String, u32)>,
    pub idle_timeout: Option<Duration>,
    pub access_log: Vec<AccessLogSink>,
}

/// Where an HTTP connection manager's routes come from.
#[derive(Debug, Clone)]
pub enum RouteSource {
    Inline(Arc<RouteTable>),
    /// RDS, by route configuration name.
    Rds(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Auto,
    Http1,
    Http2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerHeader {
    Overwrite(http::HeaderValue),
    AppendIfAbsent(http::HeaderValue),
    PassThrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeKind {
    WebSocket,
    Connect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSink {
    Stdout,
    Stderr,
    File(String),
}

#[derive(Debug, Clone)]
pub struct HttpConnManagerConfig {
    pub stat_prefix: String,
    /// The HTTP filters before the router, in order.
    pub http_filters: Vec<crate::http::filters::Configured>,
    pub codec: Codec,
    pub routes: RouteSource,
    /// RDS `initial_fetch_timeout`: after it, the listener serves with an empty route table.
    pub rds_fetch_timeout: Option<Duration>,
    pub server_header: ServerHeader,
    pub use_remote_address: bool,
    /// `xff_num_trusted_hops`: how many addresses at the right of x-forwarded-for were appended by
    /// trusted proxies (they decide which address is the client's).
    pub xff_num_trusted_hops: u32,
    pub skip_xff_append: bool,
    pub generate_request_id: bool,
    pub preserve_external_request_id: bool,
    pub max_request_headers_bytes: usize,
    pub max_headers_count: usize,
    pub idle_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_requests_per_connection`: the connection is drained
    /// after that many requests (HTTP/1.1 `connection: close`, HTTP/2 GOAWAY).
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.max_connection_duration`: drained after that long.
    pub max_connection_duration: Option<Duration>,
    pub request_headers_timeout: Option<Duration>,
    /// `request_timeout`: the whole request (body included) must arrive within it.
    pub request_timeout: Option<Duration>,
    /// `stream_idle_timeout` (Envoy's 5 min when unset; None: `0s`, disabled).
    pub stream_idle_timeout: Option<Duration>,
    /// `stream_idle_timeout` was set: the response body relay is watched too (a timer per
    /// response, so not for the default).
    pub stream_idle_explicit: bool,
    /// The router's `respect_expected_rq_timeout`: `x-envoy-expected-rq-timeout-ms` sets the
    /// timeout (from trusted callers).
    pub respect_expected_rq_timeout: bool,
    /// Upgrade types (lower-case) that are allowed, e.g. "websocket"; CONNECT separately.
    pub upgrades: Vec<String>,
    pub allow_connect: bool,
    pub access_log: Vec<AccessLogSink>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_initial_stream_window: Option<u32>,
    pub h2_initial_connection_window: Option<u32>,
}
