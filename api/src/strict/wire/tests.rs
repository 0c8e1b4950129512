//! The wire-form check against the reference (`DynamicMessage` decode + `check_resource`): the
//! static table against the descriptor pool, then the same verdict and the same error on fixed
//! resources and on many randomly mutated ones.
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MapKey, ReflectMessage, Value};

use super::*;
use crate::strict::check_resource;

fn pool() -> &'static DescriptorPool {
    static POOL: std::sync::OnceLock<DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(crate::descriptor_pool)
}

#[test]
fn static_table_matches_the_descriptor_pool() {
    let mut names: Vec<String> = pool().all_messages().map(|m| m.full_name().to_string()).collect();
    names.sort();
    let table: Vec<&str> = table::MESSAGES.iter().map(|m| m.0).collect();
    assert_eq!(names, table);
    for (mi, name) in table.iter().enumerate() {
        let m = pool().get_message_by_name(name).unwrap();
        let mut pf: Vec<_> = m.fields().collect();
        pf.sort_by_key(|f| f.number());
        let tf = fields_of(mi);
        assert_eq!(pf.len(), tf.len(), "{name}");
        for (p, t) in pf.iter().zip(tf) {
            let at = format!("{name}.{}", p.name());
            assert_eq!((p.number(), p.name()), (t.number, t.name), "{at}");
            let label = if p.is_map() {
                2
            } else if p.is_list() {
                1
            } else {
                0
            };
            assert_eq!(label, t.label, "{at}");
            assert_eq!(p.supports_presence(), t.presence, "{at}");
            let oneof = p.containing_oneof().map(|o| *o.path().last().unwrap()).unwrap_or(-1);
            assert_eq!(oneof, t.oneof, "{at}");
            let kind = match p.kind() {
                Kind::Double => K_DOUBLE,
                Kind::Float => K_FLOAT,
                Kind::Int64 => K_INT64,
                Kind::Uint64 => K_UINT64,
                Kind::Int32 => K_INT32,
                Kind::Fixed64 => K_FIXED64,
                Kind::Fixed32 => K_FIXED32,
                Kind::Bool => K_BOOL,
                Kind::String => K_STRING,
                Kind::Bytes => K_BYTES,
                Kind::Uint32 => K_UINT32,
                Kind::Enum(_) => K_ENUM,
                Kind::Sfixed32 => K_SFIXED32,
                Kind::Sfixed64 => K_SFIXED64,
                Kind::Sint32 => K_SINT32,
                Kind::Sint64 => K_SINT64,
                Kind::Message(_) if p.is_group() => K_GROUP,
                Kind::Message(_) => K_MESSAGE,
            };
            assert_eq!(kind, t.kind, "{at}");
            match p.kind() {
                Kind::Message(md) => assert_eq!(md.full_name(), message_name(t.target as usize), "{at}"),
                Kind::Enum(e) => assert_eq!(i64::from(e.default_value().number()), t.target, "{at}"),
                _ => assert_eq!(t.target, 0, "{at}"),
            }
        }
    }
}

const TYPES: [&str; 4] = [
    "envoy.config.listener.v3.Listener",
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
];

/// The old path and the new one on the same bytes: both accept, or both reject with the same
/// message (a malformed resource is rejected by both as undecodable, in their own words).
fn same_verdict(type_name: &str, bytes: &[u8]) -> Result<(), String> {
    let desc = pool().get_message_by_name(type_name).unwrap();
    let old = match DynamicMessage::decode(desc, bytes) {
        Ok(m) => check_resource(pool(), &m).map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot decode {e}")),
    };
    let typed = match type_name {
        "envoy.config.listener.v3.Listener" => {
            envoy_types::pb::envoy::config::listener::v3::Listener::decode(bytes).map(|_| ())
        }
        "envoy.config.cluster.v3.Cluster" => {
            envoy_types::pb::envoy::config::cluster::v3::Cluster::decode(bytes).map(|_| ())
        }
        "envoy.config.route.v3.RouteConfiguration" => {
            envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(bytes).map(|_| ())
        }
        _ => envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(bytes).map(|_| ()),
    };
    let new = match typed {
        Ok(()) => check_encoded(type_name, bytes).map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot decode {e}")),
    };
    match (&old, &new) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(a), Err(b)) if a == b => old,
        (Err(a), Err(b)) if a.contains("cannot decode") && b.contains("cannot decode") => old,
        // Map entries: the reference visits them in hash order, so with two bad entries either
        // one may be reported.
        (Err(a), Err(b)) if map_prefix(a).is_some() && map_prefix(a) == map_prefix(b) => old,
        _ => panic!("{type_name}: reference {old:?}, wire check {new:?}"),
    }
}

/// The error text up to a map key in its field path (`field m[key]` → `field m[`).
fn map_prefix(e: &str) -> Option<&str> {
    let bytes = e.as_bytes();
    (0..bytes.len())
        .find_map(|i| (bytes[i] == b'[' && bytes.get(i + 1).is_some_and(|c| !c.is_ascii_digit())).then(|| &e[..=i]))
}

fn encode_json(type_name: &str, json: serde_json::Value) -> Vec<u8> {
    let desc = pool().get_message_by_name(type_name).unwrap();
    DynamicMessage::deserialize(desc, json).unwrap().encode_to_vec()
}

fn fixtures() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "in",
        "rds": {"config_source": {"ads": {}, "resource_api_version": "V3"}, "route_config_name": "80"},
        "http_filters": [{"name": "r", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        "access_log": [{"name": "a", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog", "path": "/dev/null"}}],
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "common_http_protocol_options": {"idle_timeout": "5s"},
    });
    vec![
        (
            TYPES[0],
            json!({
                "name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
                "listener_filters": [{"name": "tls", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}],
                "filter_chains": [
                    {"filter_chain_match": {"destination_port": 80, "application_protocols": ["h2"]}, "filters": [{"name": "hcm", "typed_config": hcm}]},
                    {"filters": [{"name": "tcp", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", "stat_prefix": "t", "cluster": "c"}}]},
                ],
                "traffic_direction": "INBOUND", "use_original_dst": true,
                "metadata": {"filter_metadata": {"x": {"a": 1}}},
            }),
        ),
        (
            TYPES[1],
            json!({
                "name": "c", "type": "EDS", "connect_timeout": "1s", "lb_policy": "LEAST_REQUEST",
                "least_request_lb_config": {"choice_count": 3},
                "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": "c"},
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {"max_concurrent_streams": 10}},
                }},
            }),
        ),
        (
            TYPES[1],
            json!({
                "name": "s", "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "s", "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}, "load_balancing_weight": 2},
                ]}]},
            }),
        ),
        (
            TYPES[2],
            json!({
                "name": "80", "validate_clusters": false,
                "virtual_hosts": [
                    {"name": "a", "domains": ["a", "a:80"], "routes": [
                        {"name": "h", "match": {"prefix": "/", "case_sensitive": false, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                            "query_parameters": [{"name": "q", "string_match": {"safe_regex": {"regex": "a.*"}}}]},
                         "route": {"weighted_clusters": {"clusters": [{"name": "x", "weight": 1}, {"name": "y", "weight": 3}]}, "timeout": "0s"}},
                        {"match": {"path": "/r"}, "redirect": {"host_redirect": "b", "response_code": "FOUND"}},
                        {"match": {"safe_regex": {"regex": "/d.*"}}, "direct_response": {"status": 204, "body": {"inline_string": "x"}}},
                    ]},
                    {"name": "b", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "b", "prefix_rewrite": "/x"}}]},
                ],
            }),
        ),
        (
            TYPES[3],
            json!({
                "cluster_name": "e",
                "endpoints": [{"locality": {"zone": "z"}, "load_balancing_weight": 1, "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 8080}}}, "load_balancing_weight": 1, "health_status": "HEALTHY"},
                ]}],
                "policy": {"overprovisioning_factor": 140},
            }),
        ),
    ]
}

#[test]
fn fixtures_are_accepted_by_both() {
    for (t, json) in fixtures() {
        same_verdict(t, &encode_json(t, json)).unwrap();
    }
}

#[test]
fn known_rejections_read_the_same() {
    use serde_json::json;
    let cases = [
        (
            TYPES[1],
            json!({"name": "c", "connect_timeout": "1s", "outlier_detection": {"failure_percentage_threshold": 3}}),
            "outlier_detection.failure_percentage_threshold",
        ),
        (TYPES[1], json!({"name": "c", "respect_dns_ttl": true}), "respect_dns_ttl"),
        (
            TYPES[1],
            json!({"name": "c", "typed_extension_protocol_options": {"k": {"@type": "type.googleapis.com/envoy.config.core.v3.KeepaliveSettings"}}}),
            "typed_extension_protocol_options[k]",
        ),
        (
            TYPES[2],
            json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": {"retry_priority": {"name": "p"}}}}]}]}),
            "virtual_hosts[0].routes[0].route.retry_policy.retry_priority",
        ),
        (
            TYPES[3],
            json!({"cluster_name": "e", "endpoints": [{"lb_endpoints": [{"endpoint": {"health_check_config": {}}}]}]}),
            "endpoints[0].lb_endpoints[0].endpoint.health_check_config",
        ),
        (
            TYPES[1],
            json!({"name": "c", "load_assignment": {"cluster_name": "in", "named_endpoints": {"a": {}}}}),
            "cluster_load_assignment \"in\" (load_assignment)",
        ),
    ];
    for (t, json, expect) in cases {
        let err = same_verdict(t, &encode_json(t, json.clone())).expect_err(&json.to_string());
        assert!(err.contains(expect), "{err}");
    }
    // Defaults of fields without presence are not "set"; on the wire as well.
    let mut bytes = encode_json(TYPES[1], json!({"name": "c"}));
    bytes.extend_from_slice(&[0x98, 0x02, 0x00]); // respect_dns_ttl (39) = false
    same_verdict(TYPES[1], &bytes).unwrap();
}

// ---- random mutations ----

fn gen_value(rng: &mut fastrand::Rng, kind: &Kind, depth: u32) -> Value {
    let zero = rng.u8(0..3) == 0;
    match kind {
        Kind::Double => Value::F64(if zero { 0.0 } else { 1.5 }),
        Kind::Float => Value::F32(if zero { 0.0 } else { -2.5 }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(if zero { 0 } else { -7 }),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(if zero { 0 } else { 1 << 40 }),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(if zero { 0 } else { 7 }),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(if zero { 0 } else { 9 }),
        Kind::Bool => Value::Bool(!zero),
        Kind::String => Value::String(if zero { String::new() } else { "x.y".into() }),
        Kind::Bytes => Value::Bytes(if zero { Default::default() } else { vec![1u8, 2].into() }),
        Kind::Enum(e) => Value::EnumNumber(if zero { 0 } else { e.values().last().map(|v| v.number()).unwrap_or(0) }),
        Kind::Message(m) => {
            let mut msg = DynamicMessage::new(m.clone());
            if m.full_name() == "google.protobuf.Any" {
                let urls = [
                    "envoy.extensions.filters.http.router.v3.Router",
                    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "envoy.config.core.v3.Http1ProtocolOptions",
                    "envoy.config.cluster.v3.Cluster",
                    "nope.Nothing",
                ];
                let url = urls[rng.usize(0..urls.len())];
                let mut value = Vec::new();
                if let Some(inner) = pool().get_message_by_name(url) {
                    let mut inner = DynamicMessage::new(inner);
                    if depth < 4 && rng.bool() {
                        mutate(rng, &mut inner, depth + 1);
                    }
                    value = inner.encode_to_vec();
                }
                msg.set_field_by_name("type_url", Value::String(format!("type.googleapis.com/{url}")));
                msg.set_field_by_name("value", Value::Bytes(value.into()));
            } else if depth < 4 && rng.u8(0..3) == 0 {
                mutate(rng, &mut msg, depth + 1);
            }
            Value::Message(msg)
        }
    }
}

/// Sets one random field somewhere in `msg` (or goes down into a message already set).
fn mutate(rng: &mut fastrand::Rng, msg: &mut DynamicMessage, depth: u32) {
    let desc = msg.descriptor();
    if depth < 6 && rng.bool() {
        let set: Vec<_> = msg.fields().filter(|(f, _)| matches!(f.kind(), Kind::Message(_))).map(|(f, _)| f).collect();
        if !set.is_empty() {
            let f = &set[rng.usize(0..set.len())];
            match msg.get_field_mut(f) {
                Value::Message(m) if m.descriptor().full_name() == "google.protobuf.Any" => {
                    let url = m.get_field_by_name("type_url").and_then(|v| v.as_str().map(str::to_string));
                    let inner_desc = url.and_then(|u| pool().get_message_by_name(crate::type_name(&u)));
                    let bytes = m.get_field_by_name("value").and_then(|v| v.as_bytes().cloned());
                    if let (Some(d), Some(b)) = (inner_desc, bytes) {
                        if let Ok(mut inner) = DynamicMessage::decode(d, b) {
                            mutate(rng, &mut inner, depth + 1);
                            m.set_field_by_name("value", Value::Bytes(inner.encode_to_vec().into()));
                        }
                    }
                }
                Value::Message(m) => mutate(rng, m, depth + 1),
                Value::List(items) if !items.is_empty() => {
                    let i = rng.usize(0..items.len());
                    if let Value::Message(m) = &mut items[i] {
                        mutate(rng, m, depth + 1);
                    }
                }
                Value::Map(map) => {
                    if let Some(Value::Message(m)) = map.values_mut().next() {
                        mutate(rng, m, depth + 1);
                    }
                }
                _ => {}
            }
            return;
        }
    }
    let fields: Vec<_> = desc.fields().collect();
    if fields.is_empty() {
        return;
    }
    let f = &fields[rng.usize(0..fields.len())];
    let value = if f.is_map() {
        let Kind::Message(entry) = f.kind() else { return };
        let key = match entry.map_entry_key_field().kind() {
            Kind::String => MapKey::String(format!("k{}", rng.u8(0..3))),
            Kind::Bool => MapKey::Bool(rng.bool()),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(rng.i32(-2..3)),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(rng.i64(-2..3)),
            Kind::Uint32 | Kind::Fixed32 => MapKey::U32(rng.u32(0..3)),
            _ => MapKey::U64(rng.u64(0..3)),
        };
        let v = gen_value(rng, &entry.map_entry_value_field().kind(), depth);
        Value::Map([(key, v)].into_iter().collect())
    } else if f.is_list() {
        let n = rng.usize(0..3);
        Value::List((0..n).map(|_| gen_value(rng, &f.kind(), depth)).collect())
    } else {
        gen_value(rng, &f.kind(), depth)
    };
    msg.set_field(f, value);
}

#[test]
fn random_mutations_get_the_same_verdict() {
    let mut rng = fastrand::Rng::with_seed(std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(7));
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..4000 {
        let fx = fixtures();
        let (t, json) = &fx[round % fx.len()];
        let desc = pool().get_message_by_name(t).unwrap();
        let mut msg = DynamicMessage::deserialize(desc, json.clone()).unwrap();
        for _ in 0..rng.usize(1..3) {
            mutate(&mut rng, &mut msg, 0);
        }
        let mut bytes = msg.encode_to_vec();
        // Sometimes a raw field at the end: an unknown number, or a known one with a zero value.
        match rng.u8(0..6) {
            0 => bytes.extend_from_slice(&[0xb8, 0xea, 0x01, 0x01]), // field 3751, varint 1
            1 => {
                let fields: Vec<_> = msg.descriptor().fields().collect();
                let f = &fields[rng.usize(0..fields.len())];
                let wt = match f.kind() {
                    Kind::Double | Kind::Fixed64 | Kind::Sfixed64 => 1,
                    Kind::Float | Kind::Fixed32 | Kind::Sfixed32 => 5,
                    Kind::String | Kind::Bytes | Kind::Message(_) => 2,
                    _ => 0,
                };
                prost::encoding::encode_key(
                    f.number(),
                    prost::encoding::WireType::try_from(wt as u64).unwrap(),
                    &mut bytes,
                );
                bytes.extend_from_slice(match wt {
                    1 => &[0u8; 8][..],
                    5 => &[0u8; 4][..],
                    _ => &[0u8][..],
                });
            }
            2 => bytes.extend_from_slice(&[0x0a, 0x05, 0x61]), // truncated
            _ => {}
        }
        match same_verdict(t, &bytes) {
            Ok(()) => accepted += 1,
            Err(_) => rejected += 1,
        }
    }
    assert!(accepted > 300 && rejected > 300, "accepted {accepted}, rejected {rejected}");
}
