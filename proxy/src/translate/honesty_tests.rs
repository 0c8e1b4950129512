//! Fields that change behaviour are either honoured or refused by name: the translation side of
//! that rule (the end-to-end tests show the honoured ones working).
use super::*;
use serde_json::{json, Value};

fn compile(cfg: &Value) -> Result<crate::config::Bootstrap, ConfigError> {
    let b = parse_bootstrap(&cfg.to_string(), true)?;
    translate_bootstrap(&b)
}

fn cluster(name: &str) -> Value {
    json!({"name": name, "connect_timeout": "1s", "load_assignment": {"cluster_name": name, "endpoints": [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}})
}

fn http_listener(route_config: Value) -> Value {
    json!({"name": "web", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "web", "route_config": route_config,
            "http_filters": [{"name": "router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]})
}

fn routes_to(cluster: &str) -> Value {
    json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]})
}

fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({"static_resources": {"listeners": listeners, "clusters": clusters}})
}

fn with_ads(mut b: Value, grpc_service: Value) -> Value {
    b["static_resources"]["clusters"].as_array_mut().unwrap().push(cluster("xds"));
    b["dynamic_resources"] = json!({
        "ads_config": {"api_type": "GRPC", "grpc_services": [grpc_service]},
        "cds_config": {"ads": {}},
    });
    b
}

fn err_of(cfg: &Value) -> String {
    compile(cfg).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("accepted: {cfg}"))
}

#[test]
fn total_weight_that_the_weights_do_not_add_up_to_is_refused() {
    let rc = |total: u32| {
        json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
            "route": {"weighted_clusters": {"total_weight": total, "clusters": [
                {"name": "a", "weight": 60}, {"name": "a", "weight": 40}]}}}]}]})
    };
    let err = err_of(&bootstrap(vec![http_listener(rc(7))], vec![cluster("a")]));
    assert!(err.contains("total_weight") && err.contains("add up to 100"), "{err}");
    compile(&bootstrap(vec![http_listener(rc(100))], vec![cluster("a")])).unwrap();
}

#[test]
fn deprecated_cluster_http2_tuning_is_refused_by_name() {
    for field in ["max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size"] {
        let mut c = cluster("a");
        c["http2_protocol_options"] = json!({ field: 65535 });
        let err = err_of(&bootstrap(vec![http_listener(routes_to("a"))], vec![c]));
        assert!(err.contains(&format!("http2_protocol_options.{field}")), "{err}");
    }
    // Empty options still mean "speak HTTP/2".
    let mut c = cluster("a");
    c["http2_protocol_options"] = json!({});
    let b = compile(&bootstrap(vec![http_listener(routes_to("a"))], vec![c])).unwrap();
    assert_eq!(b.clusters[0].protocol, crate::config::UpstreamProtocol::Http2);
}

#[test]
fn ads_grpc_timeout_and_authority_are_refused_by_name() {
    let base = bootstrap(vec![], vec![]);
    let err = err_of(&with_ads(base.clone(), json!({"envoy_grpc": {"cluster_name": "xds"}, "timeout": "5s"})));
    assert!(err.contains("timeout"), "{err}");
    let err =
        err_of(&with_ads(base.clone(), json!({"envoy_grpc": {"cluster_name": "xds", "authority": "cp.example"}})));
    assert!(err.contains("authority"), "{err}");
    compile(&with_ads(base, json!({"envoy_grpc": {"cluster_name": "xds"}}))).unwrap();
}

#[test]
fn validate_clusters_decides_whether_static_routes_may_name_missing_clusters() {
    let rc = |validate: Option<bool>| {
        let mut r = routes_to("later");
        if let Some(v) = validate {
            r["validate_clusters"] = json!(v);
        }
        r
    };
    // Inline tables default to true.
    assert!(err_of(&bootstrap(vec![http_listener(rc(None))], vec![])).contains("unknown cluster \"later\""));
    assert!(err_of(&bootstrap(vec![http_listener(rc(Some(true)))], vec![])).contains("unknown cluster"));
    compile(&bootstrap(vec![http_listener(rc(Some(false)))], vec![])).unwrap();
    // With CDS the cluster may still come, unless validation is asked for explicitly.
    let cds = |b| with_ads(b, json!({"envoy_grpc": {"cluster_name": "xds"}}));
    compile(&cds(bootstrap(vec![http_listener(rc(None))], vec![]))).unwrap();
    assert!(err_of(&cds(bootstrap(vec![http_listener(rc(Some(true)))], vec![]))).contains("unknown cluster"));
}

#[test]
fn initial_fetch_timeout_defaults_to_envoys_15s_and_0s_waits_for_ever() {
    let b = with_ads(bootstrap(vec![], vec![]), json!({"envoy_grpc": {"cluster_name": "xds"}}));
    let mut with_lds = b.clone();
    with_lds["dynamic_resources"]["lds_config"] = json!({"ads": {}, "initial_fetch_timeout": "0s"});
    with_lds["dynamic_resources"]["cds_config"] = json!({"ads": {}, "initial_fetch_timeout": "2.5s"});
    let d = compile(&with_lds).unwrap().dynamic.unwrap();
    assert_eq!(d.lds_fetch_timeout, None);
    assert_eq!(d.cds_fetch_timeout, Some(std::time::Duration::from_millis(2500)));
    let d = compile(&b).unwrap().dynamic.unwrap();
    assert_eq!(d.cds_fetch_timeout, Some(std::time::Duration::from_secs(15)));
}

#[test]
fn unhealthy_endpoints_are_left_out_and_other_priorities_refused() {
    let mut c = cluster("a");
    let ep = |port: u32, health: &str| {
        json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}},
            "health_status": health})
    };
    c["load_assignment"]["endpoints"] = json!([{"lb_endpoints": [
        ep(1, "HEALTHY"), ep(2, "UNHEALTHY"), ep(3, "DRAINING"), ep(4, "TIMEOUT"), ep(5, "UNKNOWN"), ep(6, "HEALTHY")]}]);
    let b = compile(&bootstrap(vec![http_listener(routes_to("a"))], vec![c.clone()])).unwrap();
    // Kept with their state, but out of rotation (half are available: not yet panic mode).
    let unhealthy: Vec<bool> = b.clusters[0]
        .endpoints
        .iter()
        .map(|e| matches!(e, crate::config::EndpointConfig::Ip { eds_unhealthy: true, .. }))
        .collect();
    assert_eq!(unhealthy, [false, true, true, true, false, false]);
    let c0 = crate::upstream::Cluster::new(b.clusters[0].clone());
    for _ in 0..10 {
        let port = c0.pick().unwrap().addr.port();
        assert!([1, 5, 6].contains(&port), "{port}");
    }
    c["load_assignment"]["endpoints"] = json!([{"priority": 128, "lb_endpoints": [ep(1, "HEALTHY")]}]);
    assert!(err_of(&bootstrap(vec![http_listener(routes_to("a"))], vec![c])).contains("priority"));
}

#[test]
fn udp_socket_addresses_and_v2_apis_are_refused_by_name() {
    let mut l = http_listener(routes_to("a"));
    l["address"]["socket_address"]["protocol"] = json!("UDP");
    assert!(err_of(&bootstrap(vec![l], vec![cluster("a")])).contains("protocol"));
    let b = |f: &dyn Fn(&mut Value)| {
        let mut b = with_ads(bootstrap(vec![], vec![]), json!({"envoy_grpc": {"cluster_name": "xds"}}));
        f(&mut b);
        b
    };
    let err = err_of(&b(&|b| b["dynamic_resources"]["cds_config"]["resource_api_version"] = json!("V2")));
    assert!(err.contains("resource_api_version"), "{err}");
    let err = err_of(&b(&|b| b["dynamic_resources"]["ads_config"]["transport_api_version"] = json!("V2")));
    assert!(err.contains("transport_api_version"), "{err}");
    compile(&b(&|b| b["dynamic_resources"]["ads_config"]["transport_api_version"] = json!("V3"))).unwrap();
}

#[test]
fn use_downstream_protocol_config_http2_tuning_is_refused_by_name() {
    let mut c = cluster("a");
    c["typed_extension_protocol_options"] = json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "use_downstream_protocol_config": {"http2_protocol_options": {"max_concurrent_streams": 5}}}});
    let err = err_of(&bootstrap(vec![http_listener(routes_to("a"))], vec![c]));
    assert!(err.contains("use_downstream_protocol_config.http2_protocol_options"), "{err}");
}

#[test]
fn re2_max_program_size_is_refused_by_name() {
    let rc = json!({"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"match": {"safe_regex": {
        "google_re2": {"max_program_size": 100}, "regex": "/a.*"}}, "route": {"cluster": "a"}}]}]});
    let err = err_of(&bootstrap(vec![http_listener(rc)], vec![cluster("a")]));
    assert!(err.contains("max_program_size"), "{err}");
}

#[test]
fn eds_service_name_is_what_the_cluster_subscribes_to() {
    let mut b = with_ads(bootstrap(vec![], vec![]), json!({"envoy_grpc": {"cluster_name": "xds"}}));
    b["static_resources"]["clusters"].as_array_mut().unwrap().push(json!({"name": "c", "type": "EDS",
        "connect_timeout": "1s", "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": "svc-endpoints"}}));
    let b = compile(&b).unwrap();
    let c = b.clusters.iter().find(|c| &*c.name == "c").unwrap();
    assert_eq!(c.discovery, crate::config::DiscoveryType::Eds("svc-endpoints".into()));
}
