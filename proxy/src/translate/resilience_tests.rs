//! Resilience fields compile into the runtime config with Envoy's defaults, and what cannot be
//! honoured is refused by name. (The end-to-end tests in tests/tests/resilience.rs show the
//! behaviour; the retry loop and outlier detectors have unit tests on these compiled values.)
use super::*;
use crate::config::route::{Action, RetryOn};
use serde_json::{json, Value};

fn compile(cfg: &Value) -> Result<crate::config::Bootstrap, ConfigError> {
    let b = parse_bootstrap(&cfg.to_string(), true)?;
    translate_bootstrap(&b)
}

fn with(route: Value, vhost_extra: Value, cluster_extra: Value) -> Value {
    let mut vh = json!({"name": "all", "domains": ["*"], "routes": [route]});
    for (k, v) in vhost_extra.as_object().unwrap() {
        vh[k] = v.clone();
    }
    let mut cluster = json!({"name": "a", "connect_timeout": "1s", "load_assignment": {"cluster_name": "a", "endpoints": [
        {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}});
    for (k, v) in cluster_extra.as_object().unwrap() {
        cluster[k] = v.clone();
    }
    json!({"static_resources": {"clusters": [cluster], "listeners": [{"name": "web",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "web", "route_config": {"virtual_hosts": [vh]},
            "http_filters": [{"name": "router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}})
}

fn action(b: &crate::config::Bootstrap) -> &crate::config::RouteAction {
    let crate::config::NetworkFilter::Http(h) = &b.listeners[0].filter_chains[0].filter else { panic!() };
    let crate::config::RouteSource::Inline(t) = &h.routes else { panic!() };
    let Action::Route(a) = &t.virtual_hosts[0].routes[0].action else { panic!() };
    a
}

fn err_of(cfg: &Value) -> String {
    compile(cfg).unwrap_err().to_string()
}

#[test]
fn retry_policy_compiles_conditions_backoff_and_headers() {
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "retry_policy": {
        "retry_on": "5xx,retriable-headers,unavailable", "num_retries": 4, "per_try_timeout": "0.25s",
        "retry_back_off": {"base_interval": "0.1s", "max_interval": "2s"},
        "retriable_headers": [{"name": "x-retry", "exact_match": "yes"}]}}});
    let b = compile(&with(r, json!({}), json!({}))).unwrap();
    let p = action(&b).retry.as_deref().unwrap();
    assert!(p.on.has(RetryOn::X5XX) && p.on.has(RetryOn::RETRIABLE_HEADERS) && p.on.has(RetryOn::GRPC_UNAVAILABLE));
    assert!(!p.on.has(RetryOn::RESET));
    assert_eq!(p.num_retries, 4);
    assert_eq!(p.per_try_timeout, Some(std::time::Duration::from_millis(250)));
    assert_eq!((p.back_off_base.as_millis(), p.back_off_max.as_millis()), (100, 2000));
    let mut h = http::HeaderMap::new();
    h.insert("x-retry", "yes".parse().unwrap());
    assert!(p.retry_response(200, &h));
    assert!(!p.retry_response(200, &http::HeaderMap::new()));
    // Envoy's defaults: one retry, 25 ms doubling to 250 ms.
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "reset"}}});
    let b = compile(&with(r, json!({}), json!({}))).unwrap();
    let p = action(&b).retry.as_deref().unwrap();
    assert_eq!((p.num_retries, p.back_off_base.as_millis(), p.back_off_max.as_millis()), (1, 25, 250));
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "retry_policy": {"retry_on": "5xx,envoy-ratelimited"}}});
    assert!(err_of(&with(r, json!({}), json!({}))).contains("envoy-ratelimited"));
}

#[test]
fn virtual_host_retry_policy_and_buffer_limit_apply_to_its_routes() {
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}});
    let vh = json!({"retry_policy": {"retry_on": "connect-failure", "num_retries": 3},
        "per_request_buffer_limit_bytes": 4096, "include_request_attempt_count": true});
    let b = compile(&with(r, vh, json!({}))).unwrap();
    let a = action(&b);
    assert_eq!(a.retry.as_deref().map(|p| p.num_retries), Some(3));
    assert_eq!(a.buffer_limit, 4096);
    assert!(a.attempt_count_header);
}

#[test]
fn circuit_breakers_compile_with_envoys_defaults_and_high_priority_is_refused() {
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}});
    let b = compile(&with(r.clone(), json!({}), json!({}))).unwrap();
    let cb = &b.clusters[0].circuit_breakers;
    assert_eq!((cb.max_connections, cb.max_pending_requests, cb.max_requests, cb.max_retries), (1024, 1024, 1024, 3));
    let c = json!({"circuit_breakers": {"thresholds": [{"max_requests": 7, "track_remaining": true,
        "retry_budget": {"budget_percent": {"value": 25.0}, "min_retry_concurrency": 2}}]}});
    let b = compile(&with(r.clone(), json!({}), c)).unwrap();
    let cb = &b.clusters[0].circuit_breakers;
    assert_eq!((cb.max_requests, cb.max_connections, cb.track_remaining), (7, 1024, true));
    assert_eq!(cb.retry_budget, Some((25.0, 2)));
    let c = json!({"circuit_breakers": {"thresholds": [{"priority": "HIGH", "max_requests": 7}]}});
    assert!(err_of(&with(r, json!({}), c)).contains("circuit_breakers.thresholds[0].priority"));
}

#[test]
fn outlier_detection_and_panic_threshold_compile_with_envoys_defaults() {
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}});
    let c = json!({"outlier_detection": {"consecutive_gateway_failure": 2, "enforcing_consecutive_gateway_failure": 100,
        "split_external_local_origin_errors": true, "consecutive_local_origin_failure": 4,
        "enforcing_consecutive_local_origin_failure": 50, "max_ejection_time": "60s", "enforcing_success_rate": 0,
        "success_rate_minimum_hosts": 3, "success_rate_request_volume": 10, "success_rate_stdev_factor": 1000},
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}}});
    let b = compile(&with(r.clone(), json!({}), c)).unwrap();
    let od = b.clusters[0].outlier.as_ref().unwrap();
    assert_eq!((od.consecutive_5xx, od.enforcing_consecutive_5xx, od.max_ejection_percent), (5, 100, 10));
    assert_eq!((od.consecutive_gateway_failure, od.enforcing_consecutive_gateway_failure), (2, 100));
    assert!(od.split_external_local_origin_errors);
    assert_eq!((od.consecutive_local_origin_failure, od.enforcing_consecutive_local_origin_failure), (4, 50));
    assert_eq!(od.max_ejection_time.as_secs(), 60);
    assert_eq!(od.interval.as_secs(), 10);
    assert_eq!(od.base_ejection_time.as_secs(), 30);
    assert_eq!((od.enforcing_success_rate, od.success_rate_minimum_hosts), (0, 3));
    assert_eq!((od.success_rate_request_volume, od.success_rate_stdev_factor), (10, 1000));
    assert_eq!(b.clusters[0].panic_threshold, 0.0);
    let c = json!({"outlier_detection": {"max_ejection_percent": 101}});
    assert!(err_of(&with(r.clone(), json!({}), c)).contains("outlier_detection.max_ejection_percent"));
    let c = json!({"common_lb_config": {"healthy_panic_threshold": {"value": 150.0}}});
    assert!(err_of(&with(r, json!({}), c)).contains("healthy_panic_threshold"));
}

#[test]
fn fault_filter_refuses_what_it_cannot_honour_by_name() {
    let fault = |cfg: Value| {
        let mut b = with(json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}}), json!({}), json!({}));
        let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        let mut f = cfg;
        f["@type"] = json!("type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault");
        hcm["http_filters"].as_array_mut().unwrap().insert(0, json!({"name": "fault", "typed_config": f}));
        b
    };
    compile(&fault(json!({"abort": {"http_status": 503, "percentage": {"numerator": 10}}}))).unwrap();
    assert!(err_of(&fault(json!({"abort": {"http_status": 99}}))).contains("abort.http_status"));
    assert!(err_of(&fault(json!({"abort": {"percentage": {"numerator": 1}}}))).contains("abort"));
    // Fields outside the allow-list (runtime keys, header matchers, rate limits) are refused.
    assert!(err_of(&fault(json!({"upstream_cluster": "a"}))).contains("upstream_cluster"));
    // The router stays last.
    let mut b = fault(json!({}));
    let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = hcm["http_filters"].as_array_mut().unwrap();
    filters.reverse();
    assert!(err_of(&b).contains("router"));
}

#[test]
fn hash_balancers_compile_their_table_sizes_and_refuse_bad_ones() {
    use crate::config::LbPolicy;
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}});
    let b = compile(&with(
        r.clone(),
        json!({}),
        json!({"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 64}}),
    ))
    .unwrap();
    assert_eq!(b.clusters[0].lb, LbPolicy::RingHash { min_size: 64, max_size: 8 * 1024 * 1024 });
    let b =
        compile(&with(r.clone(), json!({}), json!({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 1031}})))
            .unwrap();
    assert_eq!(b.clusters[0].lb, LbPolicy::Maglev { table_size: 1031 });
    let e =
        err_of(&with(r.clone(), json!({}), json!({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 1000}})));
    assert!(e.contains("maglev_lb_config.table_size"), "{e}");
    let e = err_of(&with(
        r.clone(),
        json!({}),
        json!({"lb_policy": "ROUND_ROBIN", "maglev_lb_config": {"table_size": 1031}}),
    ));
    assert!(e.contains("maglev_lb_config"), "{e}");
    let c = json!({"outlier_detection": {"enforcing_local_origin_success_rate": 0}});
    compile(&with(r.clone(), json!({}), c)).unwrap();
    let c = json!({"outlier_detection": {"enforcing_local_origin_success_rate": 100}});
    assert!(err_of(&with(r.clone(), json!({}), c)).contains("enforcing_local_origin_success_rate"));
    // Header values: %% is a literal %, other format operators are refused.
    let mut rr = r;
    rr["request_headers_to_add"] = json!([{"header": {"key": "x", "value": "%REQ(host)%"}}]);
    assert!(err_of(&with(rr, json!({}), json!({}))).contains("request_headers_to_add[0].header.value"));
}

#[test]
fn health_checks_compile_with_envoys_default_status_and_refuse_what_is_missing() {
    use crate::config::cluster::HealthCheckKind;
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}});
    let hc = |extra: Value| {
        let mut h = json!({"timeout": "1s", "interval": "5s", "unhealthy_threshold": 3, "healthy_threshold": 1,
            "http_health_check": {"path": "/ready"}});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        json!({"health_checks": [h]})
    };
    let b = compile(&with(r.clone(), json!({}), hc(json!({})))).unwrap();
    let h = b.clusters[0].health_check.as_ref().unwrap();
    assert_eq!((h.unhealthy_threshold, h.healthy_threshold, h.no_traffic_interval.as_secs()), (3, 1, 60));
    assert_eq!(h.kind, HealthCheckKind::Http { path: "/ready".into(), host: None, expected: vec![(200, 201)] });
    let e = err_of(&with(r.clone(), json!({}), hc(json!({"timeout": "0s"}))));
    assert!(e.contains("health_checks[0].timeout"), "{e}");
    let e = err_of(&with(
        r.clone(),
        json!({}),
        hc(json!({"http_health_check": {"path": "/", "expected_statuses": [{"start": 300, "end": 200}]}})),
    ));
    assert!(e.contains("expected_statuses[0]"), "{e}");
    let e = err_of(&with(r, json!({}), hc(json!({"unhealthy_threshold": 0}))));
    assert!(e.contains("unhealthy_threshold"), "{e}");
}

#[test]
fn priorities_localities_and_overprovisioning_compile() {
    use crate::config::EndpointConfig;
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a"}});
    let ep =
        |port: u32| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}});
    let c = json!({"common_lb_config": {"locality_weighted_lb_config": {}},
        "load_assignment": {"cluster_name": "a", "policy": {"overprovisioning_factor": 200}, "endpoints": [
            {"locality": {"region": "r", "zone": "z1"}, "load_balancing_weight": 3, "lb_endpoints": [ep(1)]},
            {"priority": 1, "lb_endpoints": [ep(2)]}]}});
    let b = compile(&with(r.clone(), json!({}), c)).unwrap();
    assert!(b.clusters[0].locality_weighted);
    let placements: Vec<_> = b.clusters[0]
        .endpoints
        .iter()
        .map(|e| match e {
            EndpointConfig::Ip { placement: Some(p), .. } => {
                (p.priority, p.locality.clone(), p.locality_weight, p.overprovisioning)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(placements, [(0, "r/z1/".to_string(), 3, 200), (1, String::new(), 0, 200)]);
    let c = json!({"common_lb_config": {"zone_aware_lb_config": {}}});
    assert!(err_of(&with(r, json!({}), c)).contains("zone"));
}

#[test]
fn max_stream_duration_compiles_with_its_grpc_timeout_offset() {
    let r = json!({"match": {"prefix": "/"}, "route": {"cluster": "a", "max_stream_duration": {
        "max_stream_duration": "0s", "grpc_timeout_header_max": "0s", "grpc_timeout_header_offset": "0.05s"}}});
    let b = compile(&with(r, json!({}), json!({}))).unwrap();
    let a = action(&b);
    // Istio's shape: no maximum of its own, the caller's grpc-timeout uncapped, less the offset.
    assert_eq!((a.max_stream_duration, a.grpc_timeout_max), (None, Some(None)));
    assert_eq!(a.grpc_timeout_offset, std::time::Duration::from_millis(50));
}
