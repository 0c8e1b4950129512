//! Balancing and endpoint health from an Envoy bootstrap: consistent hashing (ring hash,
//! maglev, the cookie with a ttl), priority failover and active health checks.
use outrigger_tests::config::*;
use outrigger_tests::{eventually, Faulty, Proxy, WAIT};
use serde_json::{json, Value};

/// Which endpoint answered each of the keys, over a fresh connection per request.
async fn owners(p: &Proxy, path: &str, keys: &[String], header: &str) -> Vec<String> {
    let mut out = Vec::new();
    for k in keys {
        let r = p.get(path, &[(header, k.as_str())]).await;
        assert_eq!(r.status.as_u16(), 200);
        out.push(r.header("x-backend").unwrap().to_string());
    }
    out
}

#[tokio::test]
async fn hash_policy_keeps_a_key_on_one_endpoint_and_sets_the_cookie() {
    let eps: Vec<Faulty> = (0..4).map(|i| Faulty::start(&format!("e{i}"))).collect();
    let addrs: Vec<_> = eps.iter().map(|e| e.addr).collect();
    let mut ring = cluster("ring", &addrs);
    ring["lb_policy"] = json!("RING_HASH");
    ring["ring_hash_lb_config"] = json!({"minimum_ring_size": 512});
    let mut maglev = cluster("maglev", &addrs);
    maglev["lb_policy"] = json!("MAGLEV");
    maglev["maglev_lb_config"] = json!({"table_size": 1031});
    let by_header = json!({"hash_policy": [{"header": {"header_name": "x-user"}}]});
    let by_cookie = json!({"hash_policy": [{"cookie": {"name": "sticky", "ttl": "60s", "path": "/"}}]});
    let by_query = json!({"hash_policy": [{"query_parameter": {"name": "u"}, "terminal": true}, {"connection_properties": {"source_ip": true}}]});
    let p = Proxy::start(&bootstrap_with(
        json!([
            route_with("/ring", "ring", by_header.clone()),
            route_with("/maglev", "maglev", by_header),
            route_with("/cookie", "ring", by_cookie),
            route_with("/query", "maglev", by_query),
        ]),
        vec![ring, maglev],
    ));
    let keys: Vec<String> = (0..24).map(|i| format!("user-{i}")).collect();
    for path in ["/ring", "/maglev"] {
        let first = owners(&p, path, &keys, "x-user").await;
        let again = owners(&p, path, &keys, "x-user").await;
        assert_eq!(first, again, "{path}: a key stays on its endpoint");
        let distinct: std::collections::HashSet<_> = first.iter().collect();
        // 24 keys over 4 endpoints all landing on one or two: below one in a million.
        assert!(distinct.len() >= 3, "{path}: keys spread: {first:?}");
    }
    // The cookie: made up and set when absent; the same cookie keeps the endpoint.
    let r = p.get("/cookie", &[]).await;
    let set = r.header("set-cookie").expect("a cookie is set").to_string();
    assert!(set.starts_with("sticky=\"") && set.contains("Max-Age=60") && set.contains("Path=/"), "{set}");
    let value = set.split('"').nth(1).unwrap().to_string();
    let cookie = format!("sticky=\"{value}\"");
    let owner = r.header("x-backend").unwrap().to_string();
    for _ in 0..8 {
        let r = p.get("/cookie", &[("cookie", cookie.as_str())]).await;
        assert_eq!(r.header("x-backend"), Some(owner.as_str()));
        assert!(r.header("set-cookie").is_none());
    }
    // A query parameter, terminal before the source address.
    let mut seen = std::collections::HashSet::new();
    for u in 0..12 {
        let path = format!("/query?u={u}");
        let a = p.get(&path, &[]).await.header("x-backend").unwrap().to_string();
        let b = p.get(&path, &[]).await.header("x-backend").unwrap().to_string();
        assert_eq!(a, b);
        seen.insert(a);
    }
    assert!(seen.len() >= 2, "the parameter, not the (single) source address, decides: {seen:?}");
}

#[tokio::test]
async fn active_health_checks_take_failing_endpoints_out_and_bring_them_back() {
    let (a, b) = (Faulty::start("a"), Faulty::start("b"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let check = |kind: Value| {
        let mut hc = json!({"timeout": "1s", "interval": "0.1s", "no_traffic_interval": "0.1s",
            "unhealthy_threshold": 2, "healthy_threshold": 2});
        for (k, v) in kind.as_object().unwrap() {
            hc[k] = v.clone();
        }
        json!([hc])
    };
    let mut http = cluster("http", &[a.addr, b.addr]);
    http["health_checks"] = check(json!({"http_health_check": {"path": "/healthz", "host": "hc.local",
        "expected_statuses": [{"start": 200, "end": 300}]}}));
    let mut tcp = cluster("tcp", &[closed, b.addr]);
    tcp["health_checks"] = check(json!({"tcp_health_check": {}}));
    let p = Proxy::start(&bootstrap_with(json!([route("/http", "http"), route("/tcp", "tcp")]), vec![http, tcp]));
    let flags = |c: &str, addr| p.health_flags(c, addr);
    // New endpoints wait for their first check; a passing one brings them in.
    eventually("a's first check", WAIT, || (flags("http", a.addr) == "healthy").then_some(())).await;
    eventually("the closed port to fail", WAIT, || (flags("tcp", closed) == "/failed_active_hc").then_some(())).await;
    // Failing checks (two in a row) take a healthy endpoint out.
    a.fail_next(usize::MAX, 503);
    eventually("a to fail its checks", WAIT, || (flags("http", a.addr) == "/failed_active_hc").then_some(())).await;
    assert_eq!(flags("http", b.addr), "healthy");
    assert_eq!(flags("tcp", b.addr), "healthy");
    let probe = a.received().into_iter().find(|r| r.path == "/healthz").expect("a was probed");
    assert_eq!(
        (probe.host.as_str(), probe.headers.get("user-agent").map(|v| v.to_str().unwrap())),
        ("hc.local", Some("Envoy/HC"))
    );
    let before = a.received().iter().filter(|r| r.path != "/healthz").count();
    for path in ["/http", "/tcp"] {
        for _ in 0..6 {
            let r = p.get(path, &[]).await;
            assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("b")), "{path}");
        }
    }
    assert_eq!(
        a.received().iter().filter(|r| r.path != "/healthz").count(),
        before,
        "no traffic to a failing endpoint"
    );
    a.heal();
    eventually("a to pass its checks again", WAIT, || (flags("http", a.addr) == "healthy").then_some(())).await;
    let mut backends = std::collections::HashSet::new();
    for _ in 0..4 {
        backends.insert(p.get("/http", &[]).await.header("x-backend").unwrap().to_string());
    }
    assert_eq!(backends.len(), 2, "{backends:?}");
    let (_, stats) = p.admin_get("/stats/prometheus");
    let failures = p.metric("envoy_cluster_health_check_failure_total{envoy_cluster_name=\"http\"}");
    assert!(failures >= 2.0, "{}", stats.lines().filter(|l| l.contains("health_check")).collect::<Vec<_>>().join("\n"));
}

#[tokio::test]
async fn priority_failover_sends_traffic_to_the_next_priority_when_the_first_is_down() {
    let (backup, local) = (Faulty::start("backup"), Faulty::start("local"));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let ep = |a: std::net::SocketAddr| json!({"endpoint": {"address": socket(&a.ip().to_string(), a.port())}});
    let mut c = cluster("app", &[]);
    c["load_assignment"]["endpoints"] = json!([
        {"priority": 0, "locality": {"zone": "z1"}, "lb_endpoints": [ep(closed), ep(local.addr)]},
        {"priority": 1, "locality": {"zone": "z2"}, "lb_endpoints": [ep(backup.addr)]},
    ]);
    c["health_checks"] = json!([{"timeout": "1s", "interval": "0.1s", "no_traffic_interval": "0.1s",
        "unhealthy_threshold": 1, "healthy_threshold": 1, "tcp_health_check": {}}]);
    c["common_lb_config"] = json!({"healthy_panic_threshold": {"value": 0.0}});
    let p = Proxy::start(&bootstrap_with(json!([route("/", "app")]), vec![c]));
    eventually("the closed endpoint to fail its check", WAIT, || {
        (p.health_flags("app", closed) == "/failed_active_hc" && p.health_flags("app", local.addr) == "healthy")
            .then_some(())
    })
    .await;
    // Priority 0 at half health: 1.4 × 50 % = 70 % of the load stays there, 30 % goes to 1.
    let mut seen = std::collections::HashMap::new();
    for _ in 0..200 {
        let r = p.get("/", &[]).await;
        *seen.entry(r.header("x-backend").unwrap().to_string()).or_insert(0) += 1;
    }
    let to_backup = seen.get("backup").copied().unwrap_or(0);
    // 200 draws at 30 %: standard deviation 6.5; 25..95 is more than five of them either way.
    assert!((25..95).contains(&to_backup), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 200);
}
