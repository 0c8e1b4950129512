//! The proxy as an xDS client: listeners, routes, clusters and endpoints arrive over one ADS
//! stream (state of the world) from a test control plane; updates apply live, bad ones are
//! NACKed while the last good config serves, and a lost control plane never stops traffic.
use std::net::SocketAddr;
use std::time::Duration;

use outrigger_tests::ads::{AdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use outrigger_tests::client::get_h1;
use outrigger_tests::xds::*;
use outrigger_tests::{eventually, Backend, Proxy, WAIT};
use serde_json::{json, Value};

async fn backend_name(addr: SocketAddr) -> Option<String> {
    let r = get_h1(addr, "svc.test", "/", &[]).await;
    (r.status == 200).then(|| r.json()["backend"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn listeners_routes_clusters_and_endpoints_arrive_over_ads_and_serve_traffic() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    assert_eq!(backend_name(p.addr("dyn")).await.as_deref(), Some("blue"));

    // Every type is ACKed: a request carrying the version it accepted and the nonce it answers.
    // (The ACK follows the apply, so it may still be on its way when traffic already flows.)
    let acked = |t: &str| {
        ads.requests().iter().any(|r| r.type_url == t && !r.response_nonce.is_empty() && r.error_detail.is_none())
    };
    for t in [LISTENER, CLUSTER, ROUTE, ENDPOINT] {
        eventually(&format!("an ACK for {t}"), WAIT, || acked(t).then_some(())).await;
    }
    let reqs = ads.requests();
    // RDS and EDS subscribe to exactly the names the listener and clusters need.
    let rds = reqs.iter().rev().find(|r| r.type_url == ROUTE).unwrap();
    assert_eq!(rds.resource_names, vec!["r"]);
    let eds = reqs.iter().rev().find(|r| r.type_url == ENDPOINT).unwrap();
    assert_eq!(eds.resource_names, vec!["blue", "green"]);
    assert_eq!(reqs[0].node.as_ref().unwrap().id, "e2e");

    let (_, dump) = p.admin_get("/config_dump");
    let dump: Value = serde_json::from_str(&dump).unwrap();
    let listeners = &dump["configs"][1]["dynamic_listeners"];
    assert_eq!(listeners[0]["name"], "dyn", "{dump}");
    assert!(listeners[0]["active_state"]["version_info"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(p.metric("envoy_xds_update_success_total{type=\"lds\"}") >= 1.0);
    assert_eq!(p.metric("envoy_control_plane_connected_state"), 1.0);
}

#[tokio::test]
async fn weight_shift_moves_all_traffic_once_acked_and_no_request_fails() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100), ("green", 0)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let addr = p.addr("dyn");
    assert_eq!(backend_name(addr).await.as_deref(), Some("blue"));
    let initial = eventually("the first routes answered", WAIT, || ads.answered(ROUTE)).await;

    ads.set(ROUTE, vec![weighted_routes("r", &[("blue", 0), ("green", 100)])]);
    // Traffic keeps flowing while the update lands: every request is answered, by either.
    let deadline = tokio::time::Instant::now() + WAIT;
    while ads.answered(ROUTE).is_none_or(|r| r.version_info == initial.version_info) {
        let name = backend_name(addr).await.expect("a request failed during the update");
        assert!(name == "blue" || name == "green", "{name}");
        assert!(tokio::time::Instant::now() < deadline, "the new routes were never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(ads.requests().iter().all(|r| r.error_detail.is_none()), "the new routes were NACKed");
    // The ACK follows the apply: from then on, everything goes to green.
    for _ in 0..20 {
        assert_eq!(backend_name(addr).await.as_deref(), Some("green"));
    }
}

#[tokio::test]
async fn invalid_resource_is_nacked_with_its_field_and_the_old_config_keeps_serving() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let addr = p.addr("dyn");

    let mut bad = eds_cluster("blue");
    bad["respect_dns_ttl"] = json!(true);
    ads.set(CLUSTER, vec![bad, eds_cluster("green")]);
    let nack = eventually("a NACK for CDS", WAIT, || {
        ads.requests().into_iter().find(|r| r.type_url == CLUSTER && r.error_detail.is_some())
    })
    .await;
    let msg = nack.error_detail.unwrap().message;
    assert!(msg.contains("cluster \"blue\"") && msg.contains("respect_dns_ttl"), "{msg}");
    // The NACK names the version still in force (the first one sent), not the rejected one.
    let sent: Vec<String> =
        ads.responses().into_iter().filter(|r| r.type_url == CLUSTER).map(|r| r.version_info).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(nack.version_info, sent[0]);
    assert_eq!(backend_name(addr).await.as_deref(), Some("blue"));
    assert!(p.metric("envoy_xds_update_rejected_total{type=\"cds\"}") >= 1.0);
}

#[tokio::test]
async fn control_plane_restart_does_not_stop_traffic_and_the_proxy_resubscribes() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let addr = p.addr("dyn");
    assert_eq!(ads.streams(), 1, "the proxy reconnected to a control plane that never went away");
    let addr_ads = ads.addr;
    drop(ads);
    // Control plane gone: the last config keeps serving, and the proxy stays ready.
    for _ in 0..20 {
        assert_eq!(backend_name(addr).await.as_deref(), Some("blue"));
    }
    assert_eq!(p.admin_get("/ready").0, 200);
    eventually("connected state drops to 0", WAIT, || {
        (p.metric("envoy_control_plane_connected_state") == 0.0).then_some(())
    })
    .await;

    // Restart on the same port, with the blue/green config flipped.
    let ads = restart_on(addr_ads);
    serve_blue_green(&ads, &blue, &green, &[("green", 100)]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        // Every request succeeds while the proxy reconnects; then traffic follows the new config.
        match backend_name(addr).await.as_deref() {
            Some("green") => break,
            Some("blue") => {}
            other => panic!("request failed during reconnect: {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "traffic never followed the restarted control plane");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // On the new stream the proxy asked again for what it had, and said which versions it holds.
    let reqs = ads.requests();
    assert!(reqs.iter().any(|r| r.type_url == LISTENER && r.response_nonce.is_empty() && !r.version_info.is_empty()));
}

/// A control plane that is up but fails every stream: each attempt the proxy makes is recorded.
/// The gaps between attempts follow the jittered exponential backoff (the exact schedule is a
/// unit test in the proxy, on paused time); here only that they grow, with a factor-of-two
/// margin against scheduling noise.
#[tokio::test]
async fn reconnect_attempts_back_off_with_growing_gaps() {
    let ads = AdsServer::start();
    ads.refuse_streams(true);
    let _p = Proxy::start_unready(&dynamic_bootstrap(ads.addr));
    let attempts = eventually("five stream attempts", WAIT, || {
        let a = ads.refused();
        (a.len() >= 5).then_some(a)
    })
    .await;
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    // Attempt k+1 waits between half and all of 250 ms x 2^k: two steps on, the shortest
    // possible wait is twice the longest possible one.
    for k in 0..gaps.len() - 2 {
        assert!(gaps[k + 2] > gaps[k], "backoff did not grow: {gaps:?}");
    }
    assert_eq!(ads.streams(), 0, "a refused stream was served");
}

fn restart_on(addr: SocketAddr) -> AdsServer {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(s) = AdsServer::try_start_on(addr) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "cannot rebind {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn removed_listener_stops_accepting() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let mut second = rds_listener("second", "r");
    second["name"] = json!("second");
    ads.set(LISTENER, vec![rds_listener("dyn", "r"), second]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let addr = eventually("listener second bound", WAIT, || {
        let (_, body) = p.admin_get("/listeners");
        body.lines().find(|l| l.starts_with("second::")).map(|l| l["second::".len()..].parse::<SocketAddr>().unwrap())
    })
    .await;
    assert_eq!(backend_name(addr).await.as_deref(), Some("blue"));
    ads.set(LISTENER, vec![rds_listener("dyn", "r")]);
    eventually("listener second gone", WAIT, || {
        let refused = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err();
        refused.then_some(())
    })
    .await;
    // The other listener is untouched.
    assert_eq!(backend_name(p.addr("dyn")).await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn route_update_reaches_an_existing_keep_alive_connection() {
    use outrigger_tests::client::{get, H1Conn};
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let mut conn = H1Conn::open(p.addr("dyn")).await;
    assert_eq!(conn.send(get("svc.test", "/", &[])).await.json()["backend"], "blue");
    ads.set(ROUTE, vec![weighted_routes("r", &[("green", 100)])]);
    let deadline = tokio::time::Instant::now() + WAIT;
    // The same connection: RDS applies to the next request, as in Envoy.
    while conn.send(get("svc.test", "/", &[])).await.json()["backend"] != "green" {
        assert!(tokio::time::Instant::now() < deadline, "the keep-alive connection never saw the new routes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn changed_listener_drains_connections_of_the_old_version() {
    use outrigger_tests::client::{get, H1Conn};
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let addr = p.addr("dyn");
    let mut old = H1Conn::open(addr).await;
    assert_eq!(old.send(get("svc.test", "/", &[])).await.status, 200);
    let mut changed = rds_listener("dyn", "r");
    changed["filter_chains"][0]["filters"][0]["typed_config"]["stat_prefix"] = json!("dyn_v2");
    ads.set(LISTENER, vec![changed]);
    eventually("the old version's idle connection is closed", WAIT, || old.is_closed().then_some(())).await;
    // The listener itself kept its socket: new connections are served.
    assert_eq!(backend_name(addr).await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn new_endpoint_joins_without_reconnecting_the_old_ones() {
    let (a, b, green) = (Backend::start("a"), Backend::start("b"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &a, &green, &[("blue", 100)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let addr = p.addr("dyn");
    for _ in 0..5 {
        assert_eq!(backend_name(addr).await.as_deref(), Some("a"));
    }
    assert_eq!(a.connections(), 1, "sequential requests reuse one upstream connection");
    ads.set(ENDPOINT, vec![assignment("blue", &[a.addr, b.addr]), assignment("green", &[green.addr])]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.requests() == 0 {
        backend_name(addr).await.expect("a request failed during the endpoint update");
        assert!(tokio::time::Instant::now() < deadline, "the new endpoint never took traffic");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.connections(), 1, "the existing endpoint's pooled connection was dropped");
}

#[tokio::test]
async fn removing_a_listener_unsubscribes_its_routes() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let _ = p.addr("dyn");
    ads.set(LISTENER, vec![]);
    eventually("an RDS request without route names", WAIT, || {
        let reqs = ads.requests();
        let last = reqs.iter().rev().find(|r| r.type_url == ROUTE)?;
        last.resource_names.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn initial_fetch_timeout_ends_warming_and_the_proxy_serves_what_it_has() {
    let ads = AdsServer::start();
    let with_timeout = |mut source: Value| {
        source["initial_fetch_timeout"] = json!("1s");
        source
    };
    // `never` waits for routes that never come; `routed` gets routes to an EDS cluster whose
    // endpoints never come.
    let mut never = rds_listener("never", "missing-routes");
    let mut routed = rds_listener("routed", "r");
    for l in [&mut never, &mut routed] {
        let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
        hcm["rds"]["config_source"] = with_timeout(hcm["rds"]["config_source"].take());
        hcm["access_log"] =
            json!([{"name": "stdout", "typed_config": {"@type": outrigger_tests::config::STDOUT_LOG_TYPE}}]);
    }
    let mut blue = eds_cluster("blue");
    blue["eds_cluster_config"]["eds_config"] = with_timeout(blue["eds_cluster_config"]["eds_config"].take());
    ads.set(LISTENER, vec![never, routed]);
    ads.set(CLUSTER, vec![blue]);
    ads.set(ROUTE, vec![weighted_routes("r", &[("blue", 100)])]);
    // Proxy::start waits for /ready: without the timeout the proxy would never be ready.
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let r = get_h1(p.addr("never"), "svc.test", "/", &[]).await;
    assert_eq!(r.status, 404);
    let r = get_h1(p.addr("routed"), "svc.test", "/eds", &[]).await;
    assert_eq!(r.status, 503);
    // The cluster is there, without endpoints (not a missing cluster).
    let log = p.access_log("eds log", |l| l["path"] == "/eds").await;
    assert_eq!(log["response_flags"], "UH");
}

#[tokio::test]
async fn set_node_on_first_message_only_sends_the_node_once_per_stream() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let mut b = dynamic_bootstrap(ads.addr);
    b["dynamic_resources"]["ads_config"]["set_node_on_first_message_only"] = json!(true);
    let p = Proxy::start(&b);
    assert_eq!(backend_name(p.addr("dyn")).await.as_deref(), Some("blue"));
    let reqs = ads.requests();
    assert!(reqs.len() > 2, "{} requests", reqs.len());
    assert_eq!(reqs[0].node.as_ref().map(|n| n.id.as_str()), Some("e2e"));
    assert!(reqs[1..].iter().all(|r| r.node.is_none()), "the node was sent again");
}
