//! Bad configuration and command lines: exit 1 (2 for the command line) with a message that names
//! the file, the resource and the field or type URL — never a panic, never a silent ignore.
use outrigger_tests::config::*;
use outrigger_tests::proxy::run_to_exit;
use serde_json::{json, Value};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Runs on a JSON config expected to be refused: asserts exit 1 and no panic; returns stderr.
fn refused(cfg: &Value) -> String {
    let out = run_to_exit("bootstrap.json", &serde_json::to_string_pretty(cfg).unwrap(), &["--concurrency", "1"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("bootstrap.json"), "error does not name the file: {err}");
    err
}

fn base() -> Value {
    simple(&["127.0.0.1:1".parse().unwrap()])
}

#[test]
fn unsupported_http_filter_names_its_type_url() {
    let mut cfg = base();
    first_filter(&mut cfg, 0)["http_filters"] = json!([
        {"name": "envoy.filters.http.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": "function envoy_on_request(h) end"}}},
        {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
    ]);
    let err = refused(&cfg);
    assert!(err.contains("envoy.extensions.filters.http.lua.v3.Lua"), "{err}");
    assert!(err.contains("listener \"http\""), "error does not name the listener: {err}");
}

#[test]
fn unsupported_listener_field_is_named() {
    let mut cfg = base();
    cfg["static_resources"]["listeners"][0]["freebind"] = json!(true);
    let err = refused(&cfg);
    assert!(err.contains("freebind"), "{err}");
    assert!(err.contains("listener \"http\""), "{err}");
}

#[test]
fn unsupported_cluster_type_is_named() {
    let mut cfg = base();
    cfg["static_resources"]["clusters"][0]["type"] = json!("LOGICAL_DNS");
    let err = refused(&cfg);
    assert!(err.contains("cluster \"app\""), "{err}");
    assert!(err.contains("type"), "{err}");
}

#[test]
fn unsupported_network_filter_extension_is_named() {
    let mut cfg = base();
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0] = json!({
        "name": "envoy.filters.network.redis_proxy",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
                          "stat_prefix": "r"}});
    let err = refused(&cfg);
    assert!(err.contains("envoy.extensions.filters.network.redis_proxy.v3.RedisProxy"), "{err}");
}

#[test]
fn route_to_unknown_cluster_is_refused() {
    let mut cfg = base();
    first_filter(&mut cfg, 0)["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = json!("nope");
    let err = refused(&cfg);
    assert!(err.contains("\"nope\""), "{err}");
}

#[test]
fn unknown_json_field_is_refused_with_its_line() {
    let text = r#"{
  "static_resources": {
    "listeners": [],
    "no_such_field": 1
  }
}"#;
    let out = run_to_exit("bootstrap.json", text, &[]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no_such_field"), "{err}");
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn malformed_yaml_names_the_line() {
    let text = "static_resources:\n  listeners:\n  - name: a\n    address: [unclosed\n  clusters: []\n";
    let out = run_to_exit("bootstrap.yaml", text, &[]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("bootstrap.yaml"), "{err}");
    assert!(err.contains("line "), "no line number: {err}");
}

#[test]
fn yaml_type_error_names_the_line() {
    // Line 5 holds a string where a port number belongs.
    let text = "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: 1s\n    per_connection_buffer_limit_bytes: lots\n";
    let out = run_to_exit("bootstrap.yaml", text, &[]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn missing_config_file_exits_1() {
    let out = run_to_exit("", "", &["-c", "/nonexistent/outrigger-e2e.yaml"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/nonexistent/outrigger-e2e.yaml"), "{err}");
}

#[test]
fn bad_command_line_exits_2() {
    let out = run_to_exit("", "", &["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
}

#[test]
fn garbage_files_never_panic() {
    let inputs = [
        "",
        "---\n",
        "[1, 2, 3]\n",
        "static_resources: 7\n",
        "\u{0}\u{1}\u{2}binary",
        "admin: {address: {socket_address: {address: not-an-ip, port_value: 0}}}\n",
        "static_resources: {listeners: [{name: l, address: {socket_address: {address: 127.0.0.1, port_value: 99999}}}]}\n",
        "static_resources: {clusters: [{name: c, type: STATIC, load_assignment: {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}}]}]}}]}\n",
    ];
    for text in inputs {
        let out = run_to_exit("bootstrap.yaml", text, &["--mode", "validate"]);
        let err = stderr_of(&out);
        assert!(!err.contains("panicked"), "input {text:?} panicked: {err}");
        assert!(matches!(out.status.code(), Some(0 | 1)), "input {text:?}: {:?} {err}", out.status);
    }
}
