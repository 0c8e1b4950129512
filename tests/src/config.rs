//! Envoy v3 bootstrap fragments as proto3 JSON. Tests compose these and adjust fields in place
//! (`cfg["static_resources"]...`) for what they are about.
use std::net::SocketAddr;

use serde_json::{json, Value};

pub const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const TCP_PROXY_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
pub const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
pub const STDOUT_LOG_TYPE: &str = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
pub const TLS_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
pub const HTTP_OPTIONS_TYPE: &str = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A bootstrap with an admin server on 127.0.0.1:0.
pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "node": {"id": "e2e", "cluster": "e2e"},
        "admin": {"address": socket("127.0.0.1", 0)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

pub fn socket(ip: &str, port: u16) -> Value {
    json!({"socket_address": {"address": ip, "port_value": port}})
}

/// A listener on `ip`:0 with the given filter chains.
pub fn listener(name: &str, ip: &str, chains: Vec<Value>) -> Value {
    json!({"name": name, "address": socket(ip, 0), "filter_chains": chains})
}

/// An HTTP connection manager (typed_config) with JSON access logs on stdout and the router.
pub fn hcm(stat_prefix: &str, virtual_hosts: Value) -> Value {
    json!({
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "route_config": {"name": format!("{stat_prefix}_routes"), "virtual_hosts": virtual_hosts},
        "access_log": [{"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG_TYPE}}],
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    })
}

pub fn hcm_chain(hcm: Value) -> Value {
    json!({"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]})
}

pub fn tcp_chain(stat_prefix: &str, cluster: &str) -> Value {
    json!({"filters": [{
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix, "cluster": cluster},
    }]})
}

/// A listener on 127.0.0.1:0 with one HTTP connection manager.
pub fn http_listener(name: &str, virtual_hosts: Value) -> Value {
    listener(name, "127.0.0.1", vec![hcm_chain(hcm(name, virtual_hosts))])
}

pub fn vhost(name: &str, domains: &[&str], routes: Value) -> Value {
    json!({"name": name, "domains": domains, "routes": routes})
}

/// `match: {prefix}` → `route: {cluster}`.
pub fn route(prefix: &str, cluster: &str) -> Value {
    json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}})
}

/// A STATIC, ROUND_ROBIN cluster over the given endpoints.
pub fn cluster(name: &str, endpoints: &[SocketAddr]) -> Value {
    let eps: Vec<Value> =
        endpoints.iter().map(|a| json!({"endpoint": {"address": socket(&a.ip().to_string(), a.port())}})).collect();
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]},
    })
}

/// Makes a cluster speak HTTP/2 (h2c) to its endpoints.
pub fn http2(mut cluster: Value) -> Value {
    cluster["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS_TYPE,
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    });
    cluster
}

/// The simplest useful config: listener `http` sends everything to cluster `app`.
pub fn simple(app: &[SocketAddr]) -> Value {
    bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], json!([route("/", "app")]))]))],
        vec![cluster("app", app)],
    )
}

/// The typed_config of the first network filter of listener `i`'s first chain.
pub fn first_filter(cfg: &mut Value, i: usize) -> &mut Value {
    &mut cfg["static_resources"]["listeners"][i]["filter_chains"][0]["filters"][0]["typed_config"]
}

/// A bootstrap with listener `http` (one virtual host `*` with these routes) and these clusters.
pub fn bootstrap_with(routes: Value, clusters: Vec<Value>) -> Value {
    bootstrap(vec![http_listener("http", json!([vhost("all", &["*"], routes)]))], clusters)
}

/// `route(prefix, cluster)` with these fields added to its route action.
pub fn route_with(prefix: &str, cluster: &str, action: Value) -> Value {
    let mut r = route(prefix, cluster);
    for (k, v) in action.as_object().into_iter().flatten() {
        r["route"][k] = v.clone();
    }
    r
}
