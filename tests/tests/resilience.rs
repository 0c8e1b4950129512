//! Resilience from an Envoy bootstrap, against upstreams that misbehave on command ([`Faulty`]):
//! fault injection, retries (conditions, previous hosts, attempt count, per-try timeout, body
//! replay within the buffer bound, URX), circuit breakers (UO), outlier detection (ejection and
//! return), mirroring, the keep-alive race, and downstream errors that never count against the
//! upstream. Each test asserts status codes, response flags, which endpoint got each request and
//! the counters.
use std::time::Duration;

use bytes::Bytes;
use outrigger_tests::client::{get, request, H1Conn};
use outrigger_tests::config::*;
use outrigger_tests::{eventually, Faulty, Proxy, WAIT};
use serde_json::{json, Value};

const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const PREVIOUS_HOSTS: &str = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

#[tokio::test]
async fn fault_filter_aborts_and_delays_by_route_override_and_headers() {
    let app = Faulty::start("app");
    let abort = json!({"abort": {"http_status": 418, "percentage": {"numerator": 100}, "response_body": "teapot"}});
    let delay =
        json!({"delay": {"fixed_delay": "0.2s", "percentage": {"numerator": 10000, "denominator": "TEN_THOUSAND"}}});
    let grpc = json!({"abort": {"grpc_status": 14, "percentage": {"numerator": 100}}});
    let held = json!({"delay": {"fixed_delay": "3s", "percentage": {"numerator": 100}}, "max_active_faults": 1});
    let per_route = |prefix: &str, f: &Value| {
        let mut r = route(prefix, "app");
        let mut cfg = f.clone();
        cfg["@type"] = json!(FAULT);
        r["typed_per_filter_config"] = json!({"envoy.filters.http.fault": cfg});
        r
    };
    let routes = json!([
        per_route("/abort", &abort),
        per_route("/delay", &delay),
        per_route("/grpc", &grpc),
        per_route("/held", &held),
        route("/", "app"),
    ]);
    let mut cfg = bootstrap_with(routes, vec![cluster("app", &[app.addr])]);
    // The filter's own config: faults only when the request's headers ask for them.
    first_filter(&mut cfg, 0)["http_filters"].as_array_mut().unwrap().insert(
        0,
        json!({"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT,
            "abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 100}}}}),
    );
    let p = Proxy::start(&cfg);

    let r = p.get("/abort", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (418, "teapot"));
    let r = p.get("/grpc", &[]).await;
    assert_eq!((r.status.as_u16(), r.header("grpc-status")), (200, Some("14")));
    assert_eq!(app.requests(), 0, "aborted requests never reach the upstream");

    let r = p.get("/delay", &[]).await;
    assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("app")));
    let r = p.get("/other", &[("x-envoy-fault-abort-request", "503")]).await;
    assert_eq!(r.status.as_u16(), 503);
    let r = p.get("/other", &[("x-envoy-fault-delay-request", "10")]).await;
    assert_eq!(r.status.as_u16(), 200);
    let r = p.get("/other", &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(app.requests(), 3);

    // max_active_faults: while one request is held by a fault, the next one passes unharmed.
    let addr = p.addr("http");
    let first = tokio::spawn(async move { outrigger_tests::client::get_h1(addr, "x", "/held", &[]).await });
    let active = "envoy_http_fault_active_faults{envoy_http_conn_manager_prefix=\"http\"}";
    eventually("the first fault to be active", WAIT, || (p.metric(active) == 1.0).then_some(())).await;
    let r = p.get("/held", &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(first.await.unwrap().status, 200);

    let prefix = "{envoy_http_conn_manager_prefix=\"http\"}";
    assert_eq!(p.metric(&format!("envoy_http_fault_aborts_injected_total{prefix}")), 3.0);
    assert_eq!(p.metric(&format!("envoy_http_fault_delays_injected_total{prefix}")), 3.0);
    assert_eq!(p.metric(&format!("envoy_http_fault_faults_overflow_total{prefix}")), 1.0);
    p.access_log("the held request", |l| l["path"] == "/held" && l["response_flags"] == "DI").await;
    assert_eq!(p.response_flags_for("/abort"), ["FI"]);
    assert_eq!(p.response_flags_for("/grpc"), ["FI"]);
    assert_eq!(p.response_flags_for("/delay"), ["DI"]);
    assert_eq!(p.response_flags_for("/held").iter().filter(|f| *f == "-").count(), 1);
}

fn retry(on: &str, n: u32) -> Value {
    json!({"retry_on": on, "num_retries": n,
        "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {"@type": PREVIOUS_HOSTS}}],
        "host_selection_retry_max_attempts": 5})
}

#[tokio::test]
async fn retries_resend_to_another_endpoint_until_success_with_attempt_count() {
    let (bad, good) = (Faulty::start("bad"), Faulty::start("good"));
    bad.fail_next(usize::MAX, 503);
    // RANDOM balancing: without previous_hosts a retry would land on the bad endpoint half the
    // time; with it (10 picks to find another) that takes 10 heads in a row, twice (2 retries):
    // about 1e-6 per request.
    let mut policy = retry("retriable-status-codes", 2);
    policy["retriable_status_codes"] = json!([503]);
    policy["host_selection_retry_max_attempts"] = json!(10);
    let mut c = cluster("app", &[bad.addr, good.addr]);
    c["lb_policy"] = json!("RANDOM");
    let mut cfg = bootstrap_with(json!([route_with("/", "app", json!({"retry_policy": policy}))]), vec![c]);
    first_filter(&mut cfg, 0)["route_config"]["virtual_hosts"][0]["include_request_attempt_count"] = json!(true);
    let p = Proxy::start(&cfg);
    let mut conn = H1Conn::open(p.addr("http")).await;
    for _ in 0..40 {
        let r = conn.send(get("x", "/", &[])).await;
        assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("good")));
    }
    // Every request that met the bad endpoint first was retried once, on the good one, with the
    // attempt number.
    let bad_seen = bad.received();
    assert!(!bad_seen.is_empty() && bad_seen.len() < 40, "{}", bad_seen.len());
    assert!(bad_seen.iter().all(|r| r.attempt_count.as_deref() == Some("1")));
    let good_seen = good.received();
    assert_eq!(good_seen.iter().filter(|r| r.attempt_count.as_deref() == Some("2")).count(), bad_seen.len());
    assert_eq!(good_seen.iter().filter(|r| r.attempt_count.as_deref() == Some("1")).count(), 40 - bad_seen.len());
    let c = "{envoy_cluster_name=\"app\"}";
    let retries = bad_seen.len() as f64;
    assert_eq!(p.metric(&format!("envoy_cluster_upstream_rq_retry_total{c}")), retries);
    assert_eq!(p.metric(&format!("envoy_cluster_upstream_rq_retry_success_total{c}")), retries);
    assert_eq!(p.metric(&format!("envoy_cluster_upstream_rq_total{c}")), 40.0 + retries);
}

#[tokio::test]
async fn retries_run_out_with_urx_and_the_retry_breaker_stops_them() {
    let (a, b) = (Faulty::start("a"), Faulty::start("b"));
    a.fail_next(usize::MAX, 502);
    b.fail_next(usize::MAX, 502);
    let mut tight = cluster("tight", &[b.addr]);
    tight["circuit_breakers"] = json!({"thresholds": [{"max_retries": 0}]});
    let cfg = bootstrap_with(
        json!([
            route_with("/tight", "tight", json!({"retry_policy": retry("gateway-error", 3)})),
            route_with(
                "/",
                "app",
                json!({"retry_policy": {"retry_on": "5xx", "num_retries": 2,
                "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.02s"}}})
            ),
        ]),
        vec![cluster("app", &[a.addr]), tight],
    );
    let p = Proxy::start(&cfg);
    let r = p.get("/", &[]).await;
    assert_eq!(r.status.as_u16(), 502, "the last upstream answer is passed on");
    assert_eq!(a.requests(), 3);
    p.access_log("the exhausted request", |l| l["path"] == "/" && l["response_flags"] == "URX").await;
    assert_eq!(p.metric("envoy_cluster_upstream_rq_retry_limit_exceeded_total{envoy_cluster_name=\"app\"}"), 1.0);

    let r = p.get("/tight", &[]).await;
    assert_eq!(r.status.as_u16(), 502);
    assert_eq!(b.requests(), 1, "max_retries 0: no retry");
    assert_eq!(p.metric("envoy_cluster_upstream_rq_retry_overflow_total{envoy_cluster_name=\"tight\"}"), 1.0);
    p.access_log("the overflowed request", |l| l["path"] == "/tight" && l["response_flags"] == "-").await;
}

#[tokio::test]
async fn retriable_headers_retry_a_response_that_carries_them() {
    let app = Faulty::start("app");
    let policy = json!({"retry_on": "retriable-headers", "num_retries": 1,
        "retriable_headers": [{"name": "x-faulty", "string_match": {"exact": "failed"}}]});
    let p = Proxy::start(&bootstrap_with(
        json!([route_with("/", "app", json!({"retry_policy": policy}))]),
        vec![cluster("app", &[app.addr])],
    ));
    // A 200 that carries the header is retried; the retry's clean 200 is the answer.
    app.fail_next(1, 200);
    let r = p.get("/", &[]).await;
    assert_eq!((r.status.as_u16(), r.header("x-faulty")), (200, None));
    assert_eq!(app.requests(), 2);
    let r = p.get("/", &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(app.requests(), 3, "a response without the header is not retried");
}

#[tokio::test]
async fn per_try_timeout_moves_a_slow_attempt_to_another_endpoint() {
    let (slow, fast) = (Faulty::start("slow"), Faulty::start("fast"));
    slow.set_delay(5_000);
    let mut policy = retry("5xx", 1);
    policy["per_try_timeout"] = json!("0.3s");
    let cfg = bootstrap_with(
        json!([route_with("/", "app", json!({"retry_policy": policy}))]),
        vec![cluster("app", &[slow.addr, fast.addr])],
    );
    let p = Proxy::start(&cfg);
    for _ in 0..4 {
        let r = p.get("/", &[]).await;
        assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("fast")));
    }
    // Round robin: each request's first pick is the slow one, its retry the next one.
    assert_eq!(slow.requests(), 4);
    assert_eq!(p.metric("envoy_cluster_upstream_rq_per_try_timeout_total{envoy_cluster_name=\"app\"}"), 4.0);
}

#[tokio::test]
async fn per_try_idle_timeout_moves_an_attempt_that_gets_no_answer() {
    let (slow, fast) = (Faulty::start("slow"), Faulty::start("fast"));
    slow.set_delay(5_000);
    let mut policy = retry("reset", 1);
    policy["per_try_idle_timeout"] = json!("0.3s");
    let cfg = bootstrap_with(
        json!([route_with("/", "app", json!({"retry_policy": policy}))]),
        vec![cluster("app", &[slow.addr, fast.addr])],
    );
    let p = Proxy::start(&cfg);
    for _ in 0..2 {
        let r = p.get("/", &[]).await;
        assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("fast")));
    }
    assert_eq!(slow.requests(), 2);
}

#[tokio::test]
async fn request_body_is_replayed_on_retry_within_the_buffer_limit_and_not_past_it() {
    let app = Faulty::start("app");
    let mut small = route_with("/small", "app", json!({"retry_policy": retry("5xx", 1)}));
    small["per_request_buffer_limit_bytes"] = json!(1024);
    let cfg = bootstrap_with(
        json!([small, route_with("/", "app", json!({"retry_policy": retry("5xx", 1)}))]),
        vec![cluster("app", &[app.addr])],
    );
    let p = Proxy::start(&cfg);
    let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    app.fail_next(1, 503);
    let r =
        outrigger_tests::client::send_h1(p.addr("http"), request("POST", "x", "/big", &[], Bytes::from(body.clone())))
            .await;
    assert_eq!(r.status.as_u16(), 200);
    let seen = app.received();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|r| r.body == body), "both attempts carry the whole body");

    // Past the route's buffer bound the body cannot be sent again: the 503 stands.
    app.fail_next(1, 503);
    let r = outrigger_tests::client::send_h1(
        p.addr("http"),
        request("POST", "x", "/small", &[], Bytes::from(body.clone())),
    )
    .await;
    assert_eq!(r.status.as_u16(), 503);
    assert_eq!(app.requests(), 3);
}

#[tokio::test]
async fn circuit_breaker_overflow_returns_503_with_uo_flag() {
    let app = Faulty::start("app");
    app.set_delay(1_500);
    let mut rq = cluster("rq", &[app.addr]);
    rq["circuit_breakers"] = json!({"thresholds": [{"max_requests": 1, "track_remaining": true}]});
    let mut cx = cluster("cx", &[app.addr]);
    cx["circuit_breakers"] = json!({"thresholds": [{"max_connections": 1, "max_pending_requests": 0}]});
    let cfg = bootstrap_with(json!([route("/rq", "rq"), route("/cx", "cx")]), vec![rq, cx]);
    let p = Proxy::start(&cfg);
    let addr = p.addr("http");
    for (path, cluster, overflow) in [("/rq", "rq", "rq_open"), ("/cx", "cx", "cx_open")] {
        let first = tokio::spawn(async move { outrigger_tests::client::get_h1(addr, "x", path, &[]).await });
        let active = format!("envoy_cluster_upstream_rq_active{{envoy_cluster_name=\"{cluster}\"}}");
        eventually("the first request in flight", WAIT, || (p.metric(&active) == 1.0).then_some(())).await;
        let open = format!("envoy_cluster_circuit_breakers_default_{overflow}{{envoy_cluster_name=\"{cluster}\"}}");
        assert_eq!(p.metric(&open), 1.0);
        let r = p.get(path, &[]).await;
        assert_eq!((r.status.as_u16(), r.header("x-envoy-overloaded")), (503, Some("true")), "{path}");
        assert_eq!(first.await.unwrap().status, 200);
        let c = format!("{{envoy_cluster_name=\"{cluster}\"}}");
        assert_eq!(p.metric(&format!("envoy_cluster_upstream_rq_pending_overflow_total{c}")), 1.0);
    }
    assert_eq!(p.metric("envoy_cluster_upstream_cx_overflow_total{envoy_cluster_name=\"cx\"}"), 1.0);
    assert_eq!(p.metric("envoy_cluster_circuit_breakers_default_remaining_rq{envoy_cluster_name=\"rq\"}"), 1.0);
    assert_eq!(p.response_flags_for("/rq").iter().filter(|f| *f == "UO").count(), 1);
    assert_eq!(p.response_flags_for("/cx").iter().filter(|f| *f == "UO").count(), 1);
    assert_eq!(app.requests(), 2, "overflowed requests never reach the upstream");
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_and_returns_it() {
    let (bad, ok1, ok2) = (Faulty::start("bad"), Faulty::start("ok1"), Faulty::start("ok2"));
    bad.fail_next(usize::MAX, 500);
    let mut c = cluster("app", &[bad.addr, ok1.addr, ok2.addr]);
    c["outlier_detection"] = json!({"consecutive_5xx": 3, "interval": "0.1s", "base_ejection_time": "0.5s",
        "max_ejection_percent": 50});
    let p = Proxy::start(&bootstrap_with(json!([route("/", "app")]), vec![c]));
    let mut conn = H1Conn::open(p.addr("http")).await;
    for _ in 0..9 {
        conn.send(get("x", "/", &[])).await;
    }
    assert_eq!(bad.requests(), 3);
    assert_eq!(p.health_flags("app", bad.addr), "/failed_outlier_check");
    assert_eq!(p.metric("envoy_cluster_outlier_detection_ejections_enforced_total{envoy_cluster_name=\"app\"}"), 1.0);
    assert_eq!(p.metric("envoy_cluster_outlier_detection_ejections_active{envoy_cluster_name=\"app\"}"), 1.0);
    // While ejected it gets nothing (the ejection lasts at least 0.5 s: ask /clusters first).
    for _ in 0..6 {
        if p.health_flags("app", bad.addr) != "/failed_outlier_check" {
            break;
        }
        let r = conn.send(get("x", "/", &[])).await;
        assert_eq!(r.status.as_u16(), 200);
    }
    assert_eq!(bad.requests(), 3);
    // Healed, it comes back when its time is up.
    bad.heal();
    eventually("the endpoint to return", WAIT, || (p.health_flags("app", bad.addr) == "healthy").then_some(())).await;
    for _ in 0..6 {
        assert_eq!(conn.send(get("x", "/", &[])).await.status, 200);
    }
    assert!(bad.requests() > 3);
}

#[tokio::test]
async fn mirror_sends_a_copy_to_the_shadow_without_touching_the_primary() {
    let (primary, shadow) = (Faulty::start("primary"), Faulty::start("shadow"));
    shadow.fail_next(usize::MAX, 500);
    let mirror = |numerator: u32| json!([{"cluster": "shadow", "runtime_fraction": {"default_value": {"numerator": numerator}}}]);
    let cfg = bootstrap_with(
        json!([
            route_with("/never", "app", json!({"request_mirror_policies": mirror(0)})),
            route_with("/gone", "app", json!({"request_mirror_policies": [{"cluster": "nowhere"}]})),
            route_with(
                "/keep",
                "app",
                json!({"request_mirror_policies": [{"cluster": "shadow",
                "disable_shadow_host_suffix_append": true}]})
            ),
            route_with("/", "app", json!({"request_mirror_policies": mirror(100)})),
        ]),
        vec![
            cluster("app", &[primary.addr]),
            cluster("shadow", &[shadow.addr]),
            cluster("nowhere", &["127.0.0.1:1".parse().unwrap()]),
        ],
    );
    let p = Proxy::start(&cfg);
    let addr = p.addr("http");
    let r = outrigger_tests::client::send_h1(addr, request("POST", "api.local:8080", "/m", &[], Bytes::from("hello")))
        .await;
    assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("primary")));
    let seen = eventually("the shadow copy", WAIT, || shadow.received().pop()).await;
    assert_eq!(
        (seen.host.as_str(), seen.body.as_slice(), seen.path.as_str()),
        ("api.local-shadow:8080", &b"hello"[..], "/m")
    );
    assert_eq!(primary.received()[0].host, "api.local:8080");
    for path in ["/never", "/gone"] {
        let r = outrigger_tests::client::get_h1(addr, "x", path, &[]).await;
        assert_eq!(r.status.as_u16(), 200);
    }
    let r = outrigger_tests::client::get_h1(addr, "kept.local", "/keep", &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    let kept = eventually("the second shadow copy", WAIT, || shadow.received().get(1).cloned()).await;
    assert_eq!(kept.host, "kept.local");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(shadow.requests(), 2, "0% mirrors nothing; a shadow to an absent endpoint is dropped");
    assert_eq!(p.metric("envoy_cluster_upstream_rq_shadow_total{envoy_cluster_name=\"shadow\"}"), 2.0);
}

#[tokio::test]
async fn keep_alive_race_with_idle_closing_upstream_costs_no_failed_request() {
    let app = Faulty::start("app");
    app.close_idle_after(50, 150);
    // No retry policy: the resend on a fresh connection is not a retry.
    let p = Proxy::start(&bootstrap_with(json!([route("/", "app")]), vec![cluster("app", &[app.addr])]));
    let addr = p.addr("http");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = H1Conn::open(addr).await;
                let mut failures = Vec::new();
                for _ in 0..250 {
                    // Intervals around the upstream's idle timeout, so that reuse races its close.
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..160))).await;
                    let r = conn.send(get("x", "/", &[])).await;
                    if r.status != 200 {
                        failures.push(r.status);
                    }
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(failures.is_empty(), "{} of 2000 failed: {failures:?}", failures.len());
    assert_eq!(app.requests(), 2000);
    assert!(app.connections() > 8, "the upstream did close idle connections");
}

#[tokio::test]
async fn downstream_protocol_errors_are_not_retried_nor_eject_an_endpoint() {
    let app = Faulty::start("app");
    let mut c = cluster("app", &[app.addr]);
    c["outlier_detection"] = json!({"consecutive_5xx": 1, "interval": "0.1s", "max_ejection_percent": 100});
    let p = Proxy::start(&bootstrap_with(
        json!([route_with("/", "app", json!({"retry_policy": retry("5xx,reset", 3)}))]),
        vec![c],
    ));
    for _ in 0..3 {
        let resp = outrigger_tests::client::raw(
            p.addr("http"),
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n",
        )
        .await;
        assert_eq!(outrigger_tests::client::raw_status(&resp), Some(400), "{resp}");
    }
    assert!(app.requests() <= 3, "a client's error is not retried");
    assert_eq!(p.health_flags("app", app.addr), "healthy");
    assert_eq!(p.metric("envoy_cluster_outlier_detection_ejections_enforced_total{envoy_cluster_name=\"app\"}"), 0.0);
    assert_eq!(p.metric("envoy_cluster_upstream_rq_retry_total{envoy_cluster_name=\"app\"}"), 0.0);
    assert_eq!(p.get("/", &[]).await.status, 200);
}

#[tokio::test]
async fn route_header_operations_set_add_and_remove_request_and_response_headers() {
    let app = Faulty::start("app");
    let mut r = route("/", "app");
    let hv = |k: &str, v: &str, action: &str| json!({"header": {"key": k, "value": v}, "append_action": action});
    r["request_headers_to_add"] = json!([
        hv("x-set", "new", "OVERWRITE_IF_EXISTS_OR_ADD"),
        hv("x-add", "two", "APPEND_IF_EXISTS_OR_ADD"),
        hv("x-absent", "only-if-absent", "ADD_IF_ABSENT"),
        hv("x-overwrite-only", "changed", "OVERWRITE_IF_EXISTS"),
        hv("x-pct", "100%%", "OVERWRITE_IF_EXISTS_OR_ADD"),
    ]);
    r["request_headers_to_remove"] = json!(["x-drop"]);
    r["response_headers_to_add"] = json!([hv("x-resp", "added", "OVERWRITE_IF_EXISTS_OR_ADD")]);
    r["response_headers_to_remove"] = json!(["x-backend"]);
    let p = Proxy::start(&bootstrap_with(json!([r]), vec![cluster("app", &[app.addr])]));
    let resp = p.get("/", &[("x-set", "old"), ("x-add", "one"), ("x-absent", "kept"), ("x-drop", "1")]).await;
    assert_eq!((resp.header("x-resp"), resp.header("x-backend")), (Some("added"), None));
    let got = &app.received()[0].headers;
    let all = |n: &str| got.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(all("x-set"), ["new"]);
    assert_eq!(all("x-add"), ["one", "two"]);
    assert_eq!(all("x-absent"), ["kept"]);
    assert!(all("x-overwrite-only").is_empty(), "not present, so not added");
    assert_eq!(all("x-pct"), ["100%"]);
    assert!(all("x-drop").is_empty());
}
