//! The strict field check: every field that is set in the config must be one Outrigger implements
//! (or one that is purely informational). Anything else is an error naming the resource and the
//! field path, never silently ignored. Runs on the dynamic (reflected) form, so one table covers
//! every message and every `Any` extension.
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage, Value};

use crate::ApiError;

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

/// Checks one xDS resource (Listener, Cluster, RouteConfiguration, ClusterLoadAssignment) in its
/// dynamic form: the reference that [`check_encoded`] is tested against.
#[cfg(test)]
pub fn check_resource(pool: &DescriptorPool, msg: &DynamicMessage) -> Result<(), ApiError> {
    let mut c = Checker { pool, resource: String::new() };
    c.resource_scoped(msg, "")
}

/// Checks a whole bootstrap. Errors name the top-level resource (`listener "x"`, `cluster "y"`)
/// and the field path inside it.
pub fn check(pool: &DescriptorPool, msg: &DynamicMessage) -> Result<(), ApiError> {
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
    fn message(&mut self, msg: &DynamicMessage, path: &str) -> Result<(), ApiError> {
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

    fn value(&mut self, value: &Value, path: &str) -> Result<(), ApiError> {
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
    fn resource_scoped(&mut self, m: &DynamicMessage, path: &str) -> Result<(), ApiError> {
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

    fn any(&mut self, any: &DynamicMessage, path: &str) -> Result<(), ApiError> {
        let url = any.get_field_by_name("type_url").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let bytes = any.get_field_by_name("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
        let tname = crate::type_name(&url);
        if supported(tname).is_none() {
            return Err(self.err(path, format!("unsupported extension {url}")));
        }
        let desc = self.pool.get_message_by_name(tname).ok_or_else(|| self.err(path, format!("unknown type {url}")))?;
        let inner =
            DynamicMessage::decode(desc, bytes).map_err(|e| self.err(path, format!("cannot decode {url}: {e}")))?;
        self.resource_scoped(&inner, path)
    }

    fn err(&self, path: &str, message: String) -> ApiError {
        ApiError::invalid(self.resource.clone(), path, message)
    }
}

// ---- xDS resources: the same check on the wire form ----
//
// An xDS response can carry tens of thousands of resources; decoding each into a
// `DynamicMessage` (a tree of maps and boxed values) costs more than everything else the proxy
// does with it, and needs the descriptor pool. Instead the encoded bytes are walked against a
// static table of the same descriptors (generated by build.rs), with the semantics of
// `Checker` above: a field counts as set when `DynamicMessage::fields` would list it (present on
// the wire, and for fields without presence, not the default value), fields are visited in
// field-number order, unknown field numbers are skipped, and errors carry the same resource
// labels and field paths.

/// One field of the static table: see `wire_table` in build.rs.
pub(crate) struct Field {
    number: u32,
    name: &'static str,
    /// `FieldDescriptorProto.Type`.
    kind: u8,
    /// 0 single, 1 list, 2 map.
    label: u8,
    presence: bool,
    /// Message index for message and group fields; the default number for enums.
    target: i64,
    /// The oneof this field is in (-1: none): of its members, the last one on the wire is set.
    oneof: i32,
}

const fn f(number: u32, name: &'static str, kind: u8, label: u8, presence: bool, target: i64, oneof: i32) -> Field {
    Field { number, name, kind, label, presence, target, oneof }
}

mod table {
    use super::{f, Field};
    include!(concat!(env!("OUT_DIR"), "/wire_table.rs"));
}

const K_DOUBLE: u8 = 1;
const K_FLOAT: u8 = 2;
const K_INT64: u8 = 3;
const K_UINT64: u8 = 4;
const K_INT32: u8 = 5;
const K_FIXED64: u8 = 6;
const K_FIXED32: u8 = 7;
const K_BOOL: u8 = 8;
const K_STRING: u8 = 9;
const K_GROUP: u8 = 10;
const K_MESSAGE: u8 = 11;
const K_BYTES: u8 = 12;
const K_UINT32: u8 = 13;
const K_ENUM: u8 = 14;
const K_SFIXED32: u8 = 15;
const K_SFIXED64: u8 = 16;
const K_SINT32: u8 = 17;
const K_SINT64: u8 = 18;

const WT_VARINT: u8 = 0;
const WT_FIXED64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_START_GROUP: u8 = 3;
const WT_END_GROUP: u8 = 4;
const WT_FIXED32: u8 = 5;

/// Same limit as prost's decoder.
const RECURSION_LIMIT: u32 = 100;

fn wire_type_of(kind: u8) -> u8 {
    match kind {
        K_DOUBLE | K_FIXED64 | K_SFIXED64 => WT_FIXED64,
        K_FLOAT | K_FIXED32 | K_SFIXED32 => WT_FIXED32,
        K_STRING | K_MESSAGE | K_BYTES => WT_LEN,
        K_GROUP => WT_START_GROUP,
        _ => WT_VARINT,
    }
}

fn message_index(name: &str) -> Option<usize> {
    table::MESSAGES.binary_search_by(|(n, _, _)| (*n).cmp(name)).ok()
}

fn message_name(mi: usize) -> &'static str {
    table::MESSAGES[mi].0
}

fn fields_of(mi: usize) -> &'static [Field] {
    let (_, start, len) = table::MESSAGES[mi];
    &table::FIELDS[start as usize..(start + len) as usize]
}

fn field(mi: usize, number: u32) -> Option<&'static Field> {
    let fields = fields_of(mi);
    fields.binary_search_by_key(&number, |f| f.number).ok().map(|i| &fields[i])
}

enum Mode {
    /// google.protobuf types other than Any, and the informational (`"*"`) ones.
    Skip,
    Any,
    Unsupported,
    /// Whether each field (in table order) is supported.
    Checked(Box<[bool]>),
}

struct Modes {
    modes: Vec<Mode>,
    /// The resource kind label and the number of the field naming it, for the four xDS types.
    scopes: Vec<Option<(&'static str, u32)>>,
}

fn modes() -> &'static Modes {
    static M: std::sync::OnceLock<Modes> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let n = table::MESSAGES.len();
        let mut modes = Vec::with_capacity(n);
        let mut scopes = vec![None; n];
        for (mi, (name, _, _)) in table::MESSAGES.iter().enumerate() {
            modes.push(if *name == "google.protobuf.Any" {
                Mode::Any
            } else if name.starts_with("google.protobuf.") {
                Mode::Skip
            } else {
                match supported(name) {
                    None => Mode::Unsupported,
                    Some(["*"]) => Mode::Skip,
                    Some(allowed) => Mode::Checked(fields_of(mi).iter().map(|f| allowed.contains(&f.name)).collect()),
                }
            });
        }
        for (name, kind, name_field) in [
            ("envoy.config.listener.v3.Listener", "listener", "name"),
            ("envoy.config.cluster.v3.Cluster", "cluster", "name"),
            ("envoy.config.route.v3.RouteConfiguration", "route_config", "name"),
            ("envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_load_assignment", "cluster_name"),
        ] {
            if let Some(mi) = message_index(name) {
                if let Some(f) = fields_of(mi).iter().find(|f| f.name == name_field) {
                    scopes[mi] = Some((kind, f.number));
                }
            }
        }
        Modes { modes, scopes }
    })
}

/// One field occurrence on the wire: its number, wire type and value bytes (for a
/// length-delimited field the payload, for a group its contents).
#[derive(Clone, Copy)]
struct Occ {
    number: u32,
    wire_type: u8,
    start: usize,
    end: usize,
}

fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some(&byte) = b.get(*pos) else { return Err("buffer underflow".into()) };
        *pos += 1;
        if i == 9 && byte > 1 {
            return Err("invalid varint".into());
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("invalid varint".into())
}

fn read_key(b: &[u8], pos: &mut usize) -> Result<(u32, u8), String> {
    let key = read_varint(b, pos)?;
    if key > u64::from(u32::MAX) {
        return Err(format!("invalid key value: {key}"));
    }
    let wire_type = (key & 7) as u8;
    let number = (key as u32) >> 3;
    if number == 0 {
        return Err("invalid tag value: 0".into());
    }
    Ok((number, wire_type))
}

/// Skips one value of `wire_type` at `pos`; returns its bytes' range.
fn skip_value(b: &[u8], pos: &mut usize, number: u32, wire_type: u8, depth: u32) -> Result<(usize, usize), String> {
    let start = *pos;
    let fixed = |pos: &mut usize, n: usize| {
        if b.len() - *pos < n {
            return Err("buffer underflow".to_string());
        }
        *pos += n;
        Ok((start, *pos))
    };
    match wire_type {
        WT_VARINT => {
            read_varint(b, pos)?;
            Ok((start, *pos))
        }
        WT_FIXED64 => fixed(pos, 8),
        WT_FIXED32 => fixed(pos, 4),
        WT_LEN => {
            let len = read_varint(b, pos)?;
            if len > (b.len() - *pos) as u64 {
                return Err("buffer underflow".into());
            }
            let start = *pos;
            *pos += len as usize;
            Ok((start, *pos))
        }
        WT_START_GROUP => {
            if depth >= RECURSION_LIMIT {
                return Err("recursion limit reached".into());
            }
            loop {
                let at = *pos;
                if at >= b.len() {
                    return Err("buffer underflow".into());
                }
                let (n, wt) = read_key(b, pos)?;
                if wt == WT_END_GROUP {
                    if n != number {
                        return Err("unexpected end group tag".into());
                    }
                    return Ok((start, at));
                }
                skip_value(b, pos, n, wt, depth + 1)?;
            }
        }
        WT_END_GROUP => Err("unexpected end group tag".into()),
        other => Err(format!("invalid wire type value: {other}")),
    }
}

fn scan(b: &[u8], out: &mut Vec<Occ>, depth: u32) -> Result<(), String> {
    let mut pos = 0;
    while pos < b.len() {
        let (number, wire_type) = read_key(b, &mut pos)?;
        let (start, end) = skip_value(b, &mut pos, number, wire_type, depth)?;
        out.push(Occ { number, wire_type, start, end });
    }
    Ok(())
}

fn varint_at(b: &[u8], o: &Occ) -> u64 {
    let mut pos = o.start;
    read_varint(b, &mut pos).unwrap_or(0)
}

fn fixed_at(b: &[u8], o: &Occ) -> u64 {
    b[o.start..o.end].iter().rev().fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

fn is_packable(kind: u8) -> bool {
    !matches!(kind, K_STRING | K_MESSAGE | K_BYTES | K_GROUP)
}

/// Checks the wire types of a field's occurrences (and packed payloads).
fn check_wire_types(f: &Field, b: &[u8], occs: &[Occ]) -> Result<(), String> {
    let expected = if f.label == 2 { WT_LEN } else { wire_type_of(f.kind) };
    for o in occs {
        if o.wire_type == expected {
            continue;
        }
        if f.label == 1 && is_packable(f.kind) && o.wire_type == WT_LEN {
            let payload = &b[o.start..o.end];
            match wire_type_of(f.kind) {
                WT_FIXED64 if payload.len() & 7 != 0 => return Err("packed fixed64 list has a partial value".into()),
                WT_FIXED32 if payload.len() & 3 != 0 => return Err("packed fixed32 list has a partial value".into()),
                WT_VARINT => {
                    let mut pos = 0;
                    while pos < payload.len() {
                        read_varint(payload, &mut pos)?;
                    }
                }
                _ => {}
            }
            continue;
        }
        return Err(format!("{}: invalid wire type: {} (expected {expected})", f.name, o.wire_type));
    }
    Ok(())
}

/// Whether `DynamicMessage::fields` would list the field, given its occurrences.
fn is_set(f: &Field, b: &[u8], occs: &[Occ]) -> bool {
    if f.label == 2 || f.presence {
        return true;
    }
    if f.label == 1 {
        return !is_packable(f.kind) || occs.iter().any(|o| o.wire_type != WT_LEN || o.end > o.start);
    }
    // Singular without presence: the last value, unless it is the default.
    let o = &occs[occs.len() - 1];
    match f.kind {
        K_STRING | K_BYTES => o.end > o.start,
        K_INT32 | K_UINT32 | K_SINT32 => varint_at(b, o) as u32 != 0,
        K_ENUM => varint_at(b, o) as i32 as i64 != f.target,
        K_INT64 | K_UINT64 | K_SINT64 | K_BOOL => varint_at(b, o) != 0,
        K_FIXED32 | K_SFIXED32 => fixed_at(b, o) != 0,
        K_FIXED64 | K_SFIXED64 => fixed_at(b, o) != 0,
        K_FLOAT => f32::from_bits(fixed_at(b, o) as u32) != 0.0,
        K_DOUBLE => f64::from_bits(fixed_at(b, o)) != 0.0,
        _ => true,
    }
}

fn utf8(f: &Field, bytes: &[u8]) -> Result<(), String> {
    std::str::from_utf8(bytes)
        .map(|_| ())
        .map_err(|_| format!("{}: invalid string value: data is not UTF-8 encoded", f.name))
}

/// The last value of a singular string or bytes field (empty when absent).
fn last_len_value(b: &[u8], number: u32) -> Result<&[u8], String> {
    let mut pos = 0;
    let mut out: &[u8] = &[];
    while pos < b.len() {
        let (n, wt) = read_key(b, &mut pos)?;
        let (start, end) = skip_value(b, &mut pos, n, wt, 0)?;
        if n == number && wt == WT_LEN {
            out = &b[start..end];
        }
    }
    Ok(out)
}

fn map_key(kind: u8, b: &[u8], o: Option<&Occ>) -> MapKey {
    let v = |o: Option<&Occ>| o.map(|o| if o.wire_type == WT_VARINT { varint_at(b, o) } else { fixed_at(b, o) });
    let raw = v(o).unwrap_or(0);
    match kind {
        K_STRING => {
            MapKey::String(o.map(|o| String::from_utf8_lossy(&b[o.start..o.end]).into_owned()).unwrap_or_default())
        }
        K_BOOL => MapKey::Bool(raw != 0),
        K_INT32 | K_SFIXED32 => MapKey::I32(raw as i32),
        K_SINT32 => MapKey::I32(((raw as u32) >> 1) as i32 ^ -((raw & 1) as i32)),
        K_INT64 | K_SFIXED64 => MapKey::I64(raw as i64),
        K_SINT64 => MapKey::I64((raw >> 1) as i64 ^ -((raw & 1) as i64)),
        K_UINT32 | K_FIXED32 => MapKey::U32(raw as u32),
        _ => MapKey::U64(raw),
    }
}

/// Checks one encoded xDS resource of the (full) message type `type_name`. The caller has
/// decoded it with prost already, so the outer structure is well formed; `Any` payloads are
/// checked for well-formedness here, as `DynamicMessage::decode` would.
pub fn check_encoded(type_name: &str, bytes: &[u8]) -> Result<(), ApiError> {
    let mi = message_index(type_name)
        .ok_or_else(|| ApiError::invalid("resource", "", format!("unknown type {type_name}")))?;
    let mut w = Wire { resource: String::new(), path: String::new(), depth: 0, occs: Vec::new() };
    w.scoped(mi, bytes)
}

struct Wire {
    resource: String,
    path: String,
    depth: u32,
    /// Occurrences of the messages being checked, innermost last.
    occs: Vec<Occ>,
}

impl Wire {
    fn err(&self, message: String) -> ApiError {
        ApiError::invalid(self.resource.clone(), self.path.clone(), message)
    }

    fn push_field(&mut self, name: &str) -> usize {
        let saved = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(name);
        saved
    }

    fn scoped(&mut self, mi: usize, b: &[u8]) -> Result<(), ApiError> {
        let Some((kind, name_field)) = modes().scopes[mi] else { return self.message(mi, b) };
        let name = last_len_value(b, name_field).map_err(|e| self.err(format!("cannot decode: {e}")))?;
        let name = String::from_utf8_lossy(name);
        let label = if self.path.is_empty() {
            format!("{kind} \"{name}\"")
        } else {
            format!("{kind} \"{name}\" ({})", self.path)
        };
        let saved_resource = std::mem::replace(&mut self.resource, label);
        let saved_path = std::mem::take(&mut self.path);
        let r = self.message(mi, b);
        self.resource = saved_resource;
        self.path = saved_path;
        r
    }

    fn message(&mut self, mi: usize, b: &[u8]) -> Result<(), ApiError> {
        if self.depth >= RECURSION_LIMIT {
            return Err(self.err("cannot decode: recursion limit reached".into()));
        }
        self.depth += 1;
        let r = match &modes().modes[mi] {
            Mode::Skip => Ok(()),
            Mode::Any => self.any(b),
            Mode::Unsupported => Err(self.err(format!("{} is not supported", message_name(mi)))),
            Mode::Checked(allowed) => {
                let base = self.occs.len();
                let r = self.checked(mi, allowed, b, base);
                self.occs.truncate(base);
                r
            }
        };
        self.depth -= 1;
        r
    }

    fn checked(&mut self, mi: usize, allowed: &[bool], b: &[u8], base: usize) -> Result<(), ApiError> {
        scan(b, &mut self.occs, self.depth).map_err(|e| self.err(format!("cannot decode: {e}")))?;
        let fields = fields_of(mi);
        // Of a oneof's members, the last one on the wire is the one set (as decoding does).
        let mut oneof_last: Vec<(i32, u32)> = Vec::new();
        for o in &self.occs[base..] {
            if let Some(f) = field(mi, o.number).filter(|f| f.oneof >= 0) {
                match oneof_last.iter_mut().find(|(i, _)| *i == f.oneof) {
                    Some(last) => last.1 = o.number,
                    None => oneof_last.push((f.oneof, o.number)),
                }
            }
        }
        // Field-number order, as DynamicMessage keeps its fields; stable, so repeated values
        // keep their order.
        self.occs[base..].sort_by_key(|o| o.number);
        let end = self.occs.len();
        let mut i = base;
        while i < end {
            let number = self.occs[i].number;
            let mut j = i + 1;
            while j < end && self.occs[j].number == number {
                j += 1;
            }
            if let Ok(fi) = fields.binary_search_by_key(&number, |f| f.number) {
                let f = &fields[fi];
                let occs = &self.occs[i..j];
                let displaced = f.oneof >= 0 && oneof_last.iter().any(|(o, n)| *o == f.oneof && *n != number);
                check_wire_types(f, b, occs).map_err(|e| self.err(format!("cannot decode: {e}")))?;
                if !displaced && is_set(f, b, occs) {
                    let saved = self.push_field(f.name);
                    if !allowed[fi] {
                        return Err(self.err(format!("field is not supported by outrigger ({})", message_name(mi))));
                    }
                    self.values(f, b, i, j)?;
                    self.path.truncate(saved);
                }
            }
            i = j;
        }
        Ok(())
    }

    /// Checks the values of a set field (occurrences `i..j`); the path names the field.
    fn values(&mut self, f: &Field, b: &[u8], i: usize, j: usize) -> Result<(), ApiError> {
        match (f.label, f.kind) {
            (_, K_STRING) => {
                for k in i..j {
                    let o = self.occs[k];
                    utf8(f, &b[o.start..o.end]).map_err(|e| self.err(format!("cannot decode: {e}")))?;
                }
            }
            (0, K_MESSAGE | K_GROUP) => {
                for k in i..j {
                    let o = self.occs[k];
                    self.scoped(f.target as usize, &b[o.start..o.end])?;
                }
            }
            (1, K_MESSAGE | K_GROUP) => {
                for (index, k) in (i..j).enumerate() {
                    let o = self.occs[k];
                    let saved = self.path.len();
                    self.path.push_str(&format!("[{index}]"));
                    self.scoped(f.target as usize, &b[o.start..o.end])?;
                    self.path.truncate(saved);
                }
            }
            (2, _) => {
                let entry = f.target as usize;
                let (Some(kf), Some(vf)) = (field(entry, 1), field(entry, 2)) else { return Ok(()) };
                for k in i..j {
                    let o = self.occs[k];
                    let eb = &b[o.start..o.end];
                    let base = self.occs.len();
                    let r = scan(eb, &mut self.occs, self.depth);
                    let entry_occs: Vec<Occ> = self.occs.drain(base..).collect();
                    r.map_err(|e| self.err(format!("cannot decode: {e}")))?;
                    let key = entry_occs.iter().rev().find(|o| o.number == 1);
                    let value = entry_occs.iter().rev().find(|o| o.number == 2);
                    for (ef, o) in [(kf, key), (vf, value)] {
                        if let Some(o) = o {
                            check_wire_types(ef, eb, std::slice::from_ref(o))
                                .map_err(|e| self.err(format!("cannot decode: {e}")))?;
                            if ef.kind == K_STRING {
                                utf8(ef, &eb[o.start..o.end]).map_err(|e| self.err(format!("cannot decode: {e}")))?;
                            }
                        }
                    }
                    if matches!(vf.kind, K_MESSAGE | K_GROUP) {
                        let key = match map_key(kf.kind, eb, key) {
                            MapKey::String(s) => s,
                            other => format!("{other:?}"),
                        };
                        let saved = self.path.len();
                        self.path.push_str(&format!("[{key}]"));
                        let payload = value.map(|o| &eb[o.start..o.end]).unwrap_or(&[]);
                        self.scoped(vf.target as usize, payload)?;
                        self.path.truncate(saved);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn any(&mut self, b: &[u8]) -> Result<(), ApiError> {
        let decode = |e: String| format!("cannot decode google.protobuf.Any: {e}");
        let url = last_len_value(b, 1).map_err(|e| self.err(decode(e)))?;
        let url = std::str::from_utf8(url).map_err(|_| self.err(decode("type_url is not UTF-8".into())))?;
        let value = last_len_value(b, 2).map_err(|e| self.err(decode(e)))?;
        let tname = crate::type_name(url);
        if supported(tname).is_none() {
            return Err(self.err(format!("unsupported extension {url}")));
        }
        let mi = message_index(tname).ok_or_else(|| self.err(format!("unknown type {url}")))?;
        validate(mi, value, self.depth).map_err(|e| self.err(format!("cannot decode {url}: {e}")))?;
        self.scoped(mi, value)
    }
}

/// Well-formedness of an encoded message, as `DynamicMessage::decode` checks it: structure, wire
/// types of known fields, UTF-8 strings, recursively (`Any` payloads stay bytes).
fn validate(mi: usize, b: &[u8], depth: u32) -> Result<(), String> {
    if depth >= RECURSION_LIMIT {
        return Err("recursion limit reached".into());
    }
    let mut occs = Vec::new();
    scan(b, &mut occs, depth)?;
    for o in &occs {
        let Some(f) = field(mi, o.number) else { continue };
        check_wire_types(f, b, std::slice::from_ref(o))?;
        let payload = &b[o.start..o.end];
        match f.kind {
            K_STRING => utf8(f, payload)?,
            K_MESSAGE | K_GROUP => validate(f.target as usize, payload, depth + 1)?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod wire_tests;
