//! The strict field check: every field that is set in the config must be one Outrigger implements
//! (or one that is purely informational). Anything else is an error naming the resource and the
//! field path, never silently ignored. Runs on the dynamic (reflected) form, so one table covers
//! every message and every `Any` extension.
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage, Value};

use super::ConfigError;

/// Message type → the fields Outrigger honours. `"*"` accepts every field without looking inside
/// (informational messages such as `Node` and `Metadata`).
const SUPPORTED: &[(&str, &[&str])] = &[
    ("envoy.config.bootstrap.v3.Bootstrap", &["node", "static_resources", "dynamic_resources", "admin"]),
    ("envoy.config.bootstrap.v3.Bootstrap.DynamicResources", &["lds_config", "cds_config", "ads_config"]),
    ("envoy.config.core.v3.ConfigSource", &["ads", "resource_api_version", "initial_fetch_timeout"]),
    ("envoy.config.core.v3.AggregatedConfigSource", &[]),
    (
        "envoy.config.core.v3.ApiConfigSource",
        &["api_type", "transport_api_version", "grpc_services", "set_node_on_first_message_only"],
    ),
    ("envoy.config.core.v3.GrpcService", &["envoy_grpc", "timeout"]),
    ("envoy.config.core.v3.GrpcService.EnvoyGrpc", &["cluster_name", "authority"]),
    ("envoy.extensions.filters.network.http_connection_manager.v3.Rds", &["config_source", "route_config_name"]),
    ("envoy.config.cluster.v3.Cluster.EdsClusterConfig", &["eds_config", "service_name"]),
    ("envoy.config.bootstrap.v3.Bootstrap.StaticResources", &["listeners", "clusters"]),
    ("envoy.config.bootstrap.v3.Admin", &["address"]),
    ("envoy.config.core.v3.Node", &["*"]),
    ("envoy.config.core.v3.Metadata", &["*"]),
    ("envoy.config.core.v3.Locality", &["*"]),
    ("envoy.config.core.v3.Address", &["socket_address"]),
    ("envoy.config.core.v3.SocketAddress", &["address", "port_value", "protocol", "ipv4_compat"]),
    ("envoy.config.core.v3.DataSource", &["inline_string", "inline_bytes", "filename"]),
    ("envoy.config.core.v3.HttpProtocolOptions", &["idle_timeout", "max_headers_count"]),
    ("envoy.config.core.v3.Http1ProtocolOptions", &[]),
    (
        "envoy.config.core.v3.Http2ProtocolOptions",
        &["max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"],
    ),
    (
        "envoy.config.listener.v3.Listener",
        &[
            "name",
            "address",
            "filter_chains",
            "default_filter_chain",
            "listener_filters",
            "stat_prefix",
            "metadata",
            "traffic_direction",
            "enable_reuse_port",
            "use_original_dst",
        ],
    ),
    ("envoy.config.listener.v3.ListenerFilter", &["name", "typed_config"]),
    ("envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", &[]),
    ("envoy.config.listener.v3.FilterChain", &["filter_chain_match", "filters", "name", "metadata"]),
    (
        "envoy.config.listener.v3.FilterChainMatch",
        &["destination_port", "server_names", "transport_protocol", "application_protocols"],
    ),
    ("envoy.config.listener.v3.Filter", &["name", "typed_config"]),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        &["stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log"],
    ),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster", &["clusters"]),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight", &["name", "weight"]),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        &[
            "stat_prefix",
            "codec_type",
            "route_config",
            "rds",
            "http_filters",
            "server_name",
            "server_header_transformation",
            "use_remote_address",
            "xff_num_trusted_hops",
            "skip_xff_append",
            "generate_request_id",
            "preserve_external_request_id",
            "request_headers_timeout",
            "max_request_headers_kb",
            "upgrade_configs",
            "access_log",
            "common_http_protocol_options",
            "http_protocol_options",
            "http2_protocol_options",
        ],
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig",
        &["upgrade_type", "enabled"],
    ),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", &["name", "typed_config"]),
    ("envoy.extensions.filters.http.router.v3.Router", &["suppress_envoy_headers"]),
    ("envoy.config.accesslog.v3.AccessLog", &["name", "typed_config"]),
    ("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", &[]),
    ("envoy.extensions.access_loggers.stream.v3.StderrAccessLog", &[]),
    ("envoy.extensions.access_loggers.file.v3.FileAccessLog", &["path"]),
    ("envoy.config.route.v3.RouteConfiguration", &["name", "virtual_hosts", "validate_clusters"]),
    ("envoy.config.route.v3.VirtualHost", &["name", "domains", "routes", "metadata"]),
    ("envoy.config.route.v3.Route", &["name", "match", "route", "redirect", "direct_response", "metadata"]),
    (
        "envoy.config.route.v3.RouteMatch",
        &[
            "prefix",
            "path",
            "safe_regex",
            "path_separated_prefix",
            "connect_matcher",
            "case_sensitive",
            "headers",
            "query_parameters",
            "grpc",
        ],
    ),
    ("envoy.config.route.v3.RouteMatch.ConnectMatcher", &[]),
    ("envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions", &[]),
    (
        "envoy.config.route.v3.HeaderMatcher",
        &[
            "name",
            "exact_match",
            "prefix_match",
            "suffix_match",
            "contains_match",
            "safe_regex_match",
            "present_match",
            "string_match",
            "invert_match",
        ],
    ),
    ("envoy.config.route.v3.QueryParameterMatcher", &["name", "string_match", "present_match"]),
    ("envoy.type.matcher.v3.StringMatcher", &["exact", "prefix", "suffix", "contains", "safe_regex", "ignore_case"]),
    ("envoy.type.matcher.v3.RegexMatcher", &["google_re2", "regex"]),
    ("envoy.type.matcher.v3.RegexMatcher.GoogleRE2", &["max_program_size"]),
    (
        "envoy.config.route.v3.RouteAction",
        &[
            "cluster",
            "weighted_clusters",
            "timeout",
            "prefix_rewrite",
            "host_rewrite_literal",
            "cluster_not_found_response_code",
            "upgrade_configs",
        ],
    ),
    ("envoy.config.route.v3.RouteAction.UpgradeConfig", &["upgrade_type", "enabled", "connect_config"]),
    ("envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig", &[]),
    ("envoy.config.route.v3.WeightedCluster", &["clusters", "total_weight"]),
    ("envoy.config.route.v3.WeightedCluster.ClusterWeight", &["name", "weight"]),
    (
        "envoy.config.route.v3.RedirectAction",
        &[
            "https_redirect",
            "scheme_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "response_code",
            "strip_query",
        ],
    ),
    ("envoy.config.route.v3.DirectResponseAction", &["status", "body"]),
    (
        "envoy.config.cluster.v3.Cluster",
        &[
            "name",
            "type",
            "connect_timeout",
            "lb_policy",
            "load_assignment",
            "eds_cluster_config",
            "typed_extension_protocol_options",
            "http2_protocol_options",
            "dns_refresh_rate",
            "dns_lookup_family",
            "least_request_lb_config",
            "metadata",
        ],
    ),
    ("envoy.config.cluster.v3.Cluster.LeastRequestLbConfig", &["choice_count"]),
    ("envoy.config.endpoint.v3.ClusterLoadAssignment", &["cluster_name", "endpoints", "policy"]),
    ("envoy.config.endpoint.v3.ClusterLoadAssignment.Policy", &["overprovisioning_factor"]),
    // load_balancing_weight only matters with locality-weighted balancing, which is not
    // configurable here; Envoy ignores it as well without locality_weighted_lb_config.
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints",
        &["lb_endpoints", "locality", "priority", "load_balancing_weight"],
    ),
    ("envoy.config.endpoint.v3.LbEndpoint", &["endpoint", "load_balancing_weight", "metadata", "health_status"]),
    ("envoy.config.endpoint.v3.Endpoint", &["address", "hostname"]),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        &["explicit_http_config", "use_downstream_protocol_config", "common_http_protocol_options"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig",
        &["http_protocol_options", "http2_protocol_options"],
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig",
        &["http_protocol_options", "http2_protocol_options"],
    ),
];

fn supported(type_name: &str) -> Option<&'static [&'static str]> {
    SUPPORTED.iter().find(|(n, _)| *n == type_name).map(|(_, f)| *f)
}

/// Checks one xDS resource (Listener, Cluster, RouteConfiguration, ClusterLoadAssignment).
pub fn check_resource(pool: &DescriptorPool, msg: &DynamicMessage) -> Result<(), ConfigError> {
    let mut c = Checker { pool, resource: String::new() };
    c.resource_scoped(msg, "")
}

/// Checks a whole bootstrap. Errors name the top-level resource (`listener "x"`, `cluster "y"`)
/// and the field path inside it.
pub fn check(pool: &DescriptorPool, msg: &DynamicMessage) -> Result<(), ConfigError> {
    let mut c = Checker { pool, resource: "bootstrap".to_string() };
    c.message(msg, "")
}

struct Checker<'a> {
    pool: &'a DescriptorPool,
    resource: String,
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

impl Checker<'_> {
    fn message(&mut self, msg: &DynamicMessage, path: &str) -> Result<(), ConfigError> {
        let desc = msg.descriptor();
        let name = desc.full_name();
        if name.starts_with("google.protobuf.") {
            if name == "google.protobuf.Any" {
                return self.any(msg, path);
            }
            return Ok(());
        }
        let Some(allowed) = supported(name) else {
            return Err(self.err(path, format!("{name} is not supported")));
        };
        if allowed == ["*"] {
            return Ok(());
        }
        for (field, value) in msg.fields() {
            let fpath = join(path, field.name());
            if !allowed.contains(&field.name()) {
                return Err(self.err(&fpath, format!("field is not supported by outrigger ({name})")));
            }
            self.value(value, &fpath)?;
        }
        Ok(())
    }

    fn value(&mut self, value: &Value, path: &str) -> Result<(), ConfigError> {
        match value {
            Value::Message(m) => self.resource_scoped(m, path),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.value(v, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            Value::Map(map) => {
                for (k, v) in map {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    self.value(v, &format!("{path}[{key}]"))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Listeners and clusters are the resources users name; errors inside them say which one.
    fn resource_scoped(&mut self, m: &DynamicMessage, path: &str) -> Result<(), ConfigError> {
        let (kind, name_field) = match m.descriptor().full_name() {
            "envoy.config.listener.v3.Listener" => ("listener", "name"),
            "envoy.config.cluster.v3.Cluster" => ("cluster", "name"),
            "envoy.config.route.v3.RouteConfiguration" => ("route_config", "name"),
            "envoy.config.endpoint.v3.ClusterLoadAssignment" => ("cluster_load_assignment", "cluster_name"),
            _ => return self.message(m, path),
        };
        let name = m.get_field_by_name(name_field).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let label = if path.is_empty() { format!("{kind} \"{name}\"") } else { format!("{kind} \"{name}\" ({path})") };
        let saved = std::mem::replace(&mut self.resource, label);
        let r = self.message(m, "");
        self.resource = saved;
        r
    }

    fn any(&mut self, any: &DynamicMessage, path: &str) -> Result<(), ConfigError> {
        let url = any.get_field_by_name("type_url").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let bytes = any.get_field_by_name("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
        let tname = super::type_name(&url);
        if supported(tname).is_none() {
            return Err(self.err(path, format!("unsupported extension {url}")));
        }
        let desc = self.pool.get_message_by_name(tname).ok_or_else(|| self.err(path, format!("unknown type {url}")))?;
        let inner =
            DynamicMessage::decode(desc, bytes).map_err(|e| self.err(path, format!("cannot decode {url}: {e}")))?;
        self.resource_scoped(&inner, path)
    }

    fn err(&self, path: &str, message: String) -> ConfigError {
        ConfigError::invalid(self.resource.clone(), path, message)
    }
}
