//! Translation tests: strictness (unsupported fields and extensions name their resource and
//! path), positions of syntax errors, and that every shipped example compiles.
use super::*;

fn pool() -> &'static prost_reflect::DescriptorPool {
    static POOL: std::sync::OnceLock<prost_reflect::DescriptorPool> = std::sync::OnceLock::new();
    POOL.get_or_init(outrigger_api::descriptor_pool)
}

fn compile(yaml: &str) -> Result<crate::config::Bootstrap, ConfigError> {
    let b = parse_bootstrap_with(pool(), yaml, false)?;
    translate_bootstrap(&b)
}

const HCM_HEAD: &str = r#"
static_resources:
  listeners:
  - name: web
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: hcm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: app }
"#;

const CLUSTER: &str = r#"
  clusters:
  - name: app
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } }] }]
"#;

fn with_filters(filters: &str) -> String {
    format!("{HCM_HEAD}          http_filters:\n{filters}{CLUSTER}")
}

const ROUTER: &str = "          - name: router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n";

#[test]
fn minimal_http_config_compiles() {
    let b = compile(&with_filters(ROUTER)).unwrap();
    assert_eq!(b.listeners.len(), 1);
    assert_eq!(&*b.clusters[0].name, "app");
}

#[test]
fn unsupported_http_filter_names_its_type_url() {
    let lua = "          - name: lua\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua }\n";
    let err = compile(&with_filters(&format!("{lua}{ROUTER}"))).unwrap_err().to_string();
    assert!(err.contains("envoy.extensions.filters.http.lua.v3.Lua"), "{err}");
    // Extensions outside the implemented set are not even in the parser's type pool: the error
    // comes from parsing, with the file position, the resource and the field path.
    assert!(err.contains("line 21") && err.contains("listener \"web\""), "{err}");
    assert!(err.contains("http_filters[0]") && err.contains("unsupported extension"), "{err}");
}

#[test]
fn unsupported_field_names_resource_and_path() {
    let yaml = with_filters(ROUTER).replace("  - name: web\n", "  - name: web\n    freebind: true\n");
    let err = compile(&yaml).unwrap_err().to_string();
    assert!(err.contains("listener \"web\"") && err.contains("freebind"), "{err}");
}

#[test]
fn unsupported_cluster_field_is_refused() {
    let yaml = with_filters(ROUTER)
        .replace("    connect_timeout: 1s\n", "    connect_timeout: 1s\n    respect_dns_ttl: true\n");
    let err = compile(&yaml).unwrap_err().to_string();
    assert!(err.contains("cluster \"app\"") && err.contains("respect_dns_ttl"), "{err}");
}

#[test]
fn unknown_field_and_bad_yaml_name_the_line() {
    let yaml = with_filters(ROUTER).replace("stat_prefix: web", "stat_prefix: web\n          no_such_field: 1");
    let err = compile(&yaml).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line, .. } if line > 5), "{err}");
    let err = compile("static_resources:\n  listeners: [\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 2 | 3, .. }), "{err}");
}

#[test]
fn route_to_unknown_cluster_is_refused() {
    let yaml = with_filters(ROUTER).replace("route: { cluster: app }", "route: { cluster: nope }");
    let err = compile(&yaml).unwrap_err().to_string();
    assert!(err.contains("unknown cluster \"nope\""), "{err}");
}

#[test]
fn router_must_be_last() {
    let err = compile(&with_filters("")).unwrap_err().to_string();
    assert!(err.contains("router"), "{err}");
}

#[test]
fn admin_address_is_translated() {
    // Translation keeps the address; app::run refuses non-loopback admin (fail closed).
    let yaml = format!(
        "admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 9901 }} }} }}\n{}",
        with_filters(ROUTER)
    );
    assert_eq!(compile(&yaml).unwrap().admin.unwrap().port(), 9901);
}

#[test]
fn random_mutations_of_a_config_never_panic() {
    let base = with_filters(ROUTER);
    let bytes = base.as_bytes();
    for seed in 0..300u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut b = bytes.to_vec();
        for _ in 0..rng.usize(1..4) {
            let i = rng.usize(..b.len());
            b[i] = b" :{}[]-,\"0aZ\n"[rng.usize(..13)];
        }
        let _ = compile(&String::from_utf8_lossy(&b));
    }
}

#[test]
fn every_shipped_example_compiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "json")) {
            let text = std::fs::read_to_string(&p).unwrap();
            let is_json = p.extension().is_some_and(|e| e == "json");
            let b = parse_bootstrap_with(pool(), &text, is_json).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            translate_bootstrap(&b).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 5);
}

#[test]
fn encoded_route_config_compiles_one_virtual_host_at_a_time_to_the_same_table() {
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use prost::Message;
    let desc = pool().get_message_by_name("envoy.config.route.v3.RouteConfiguration").unwrap();
    let json = serde_json::json!({"name": "80", "validate_clusters": false, "virtual_hosts": [
        {"name": "a", "domains": ["a", "A:80", "*.a"], "routes": [
            {"name": "x", "match": {"path": "/x"}, "route": {"cluster": "cx"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "ca"}}]},
        {"name": "b", "domains": ["b", "b.*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 204}}]},
        {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "c"}}]},
    ]});
    let bytes = prost_reflect::DynamicMessage::deserialize(desc, json).unwrap().encode_to_vec();
    let whole = translate_route_config(&RouteConfiguration::decode(bytes.as_slice()).unwrap()).unwrap();
    let (name, streamed) = route::translate_route_config_encoded(&bytes).unwrap();
    assert_eq!(name, "80");
    let shape = |t: &crate::config::RouteTable| {
        let mut exact: Vec<_> = t.domains.exact.iter().map(|(k, v)| (k.to_string(), v)).collect();
        exact.sort();
        let vhosts: Vec<_> = t
            .virtual_hosts
            .iter()
            .map(|v| (v.name.to_string(), v.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>()))
            .collect();
        (t.name.clone(), exact, t.domains.suffixes.clone(), t.domains.prefixes.clone(), t.domains.any, vhosts)
    };
    assert_eq!(shape(&whole), shape(&streamed));
    assert_eq!(streamed.domains.exact.get("a:80"), Some(0));

    // The strict check and the translation errors still name the resource and the field.
    let bad = |json: serde_json::Value| {
        let desc = pool().get_message_by_name("envoy.config.route.v3.RouteConfiguration").unwrap();
        let bytes = prost_reflect::DynamicMessage::deserialize(desc, json).unwrap().encode_to_vec();
        route::translate_route_config_encoded(&bytes).err().unwrap().to_string()
    };
    let err = bad(serde_json::json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "cors": {}}]}));
    assert!(err.contains("route_config \"r\"") && err.contains("virtual_hosts[0].cors"), "{err}");
    let err = bad(serde_json::json!({"name": "r", "virtual_hosts": [
        {"name": "v", "domains": ["x"], "routes": []}, {"name": "w", "domains": ["y", "X"]}]}));
    assert!(err.contains("virtual_hosts[1].domains[1]") && err.contains("also in virtual host \"v\""), "{err}");
    let err = bad(serde_json::json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["x", "x"]}]}));
    assert!(err.contains("also in virtual host \"v\""), "{err}");
}
