//! The admin server and the process lifecycle: /ready, /config_dump, /clusters,
//! /stats/prometheus, /drain_listeners, POST /quitquitquit, and SIGTERM's graceful drain.
use std::time::Duration;

use outrigger_tests::client::get_h1;
use outrigger_tests::config::*;
use outrigger_tests::proxy::run_to_exit;
use outrigger_tests::{Backend, Proxy};
use serde_json::{json, Value};

#[tokio::test]
async fn ready_is_200_once_listeners_are_up() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    assert_eq!(p.admin_get("/ready"), (200, "LIVE\n".to_string()));
    assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.status, 200);
}

#[tokio::test]
async fn config_dump_shows_the_loaded_listener_and_cluster() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let (status, body) = p.admin_get("/config_dump");
    assert_eq!(status, 200);
    let dump: Value = serde_json::from_str(&body).expect("config_dump is JSON");
    let configs = dump["configs"].as_array().expect("configs");
    let listeners = configs
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ListenersConfigDump")
        .expect("ListenersConfigDump");
    assert_eq!(listeners["static_listeners"][0]["listener"]["name"], "http", "{listeners}");
    let clusters = configs
        .iter()
        .find(|c| c["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump")
        .expect("ClustersConfigDump");
    assert_eq!(clusters["static_clusters"][0]["cluster"]["name"], "app", "{clusters}");
    let (_, list) = p.admin_get("/clusters");
    assert!(list.contains(&format!("app::{}::", b.addr)), "{list}");
}

#[tokio::test]
async fn prometheus_counters_count_per_listener_and_per_cluster() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let rq = "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"app\"}";
    let hcm_rq = "envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix=\"http\"}";
    let cluster_2xx = "envoy_cluster_upstream_rq_xx_total{envoy_cluster_name=\"app\",envoy_response_code_class=\"2\"}";
    let cluster_5xx = "envoy_cluster_upstream_rq_xx_total{envoy_cluster_name=\"app\",envoy_response_code_class=\"5\"}";
    assert_eq!(p.metric(rq), 0.0);
    for _ in 0..3 {
        assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.status, 200);
    }
    assert_eq!(get_h1(p.addr("http"), "x", "/", &[("x-status", "500")]).await.status, 500);
    assert_eq!(p.metric(rq), 4.0);
    assert_eq!(p.metric(hcm_rq), 4.0);
    assert_eq!(p.metric(cluster_2xx), 3.0);
    assert_eq!(p.metric(cluster_5xx), 1.0);
    // Listener counters are labelled by the address the listener is bound to (port 0 resolved).
    let series =
        format!("envoy_listener_downstream_cx_total{{envoy_listener_address=\"127.0.0.1_{}\"}}", p.addr("http").port());
    assert!(p.metric(&series) >= 4.0, "{series}");
    let (_, text) = p.admin_get("/stats/prometheus");
    assert!(!text.contains("127.0.0.1_0\""), "a series for the unbound port 0:\n{text}");
}

#[tokio::test]
async fn quitquitquit_exits_cleanly() {
    let b = Backend::start("app");
    let mut p = Proxy::start(&simple(&[b.addr]));
    assert_eq!(p.admin_post("/quitquitquit").0, 200);
    let status = p.wait_exit_async(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
}

#[tokio::test]
async fn drain_listeners_makes_ready_fail() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    assert_eq!(p.admin_post("/drain_listeners").0, 200);
    assert_eq!(p.admin_get("/ready").0, 503);
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let b = Backend::start("app");
    let mut p = Proxy::start(&simple(&[b.addr]));
    let addr = p.addr("http");
    let slow = tokio::spawn(async move { get_h1(addr, "x", "/slow", &[("x-delay-ms", "1000")]).await });
    outrigger_tests::eventually("request at the backend", outrigger_tests::WAIT, || (b.requests() == 1).then_some(()))
        .await;
    p.signal(libc::SIGTERM);
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request was cut: {}", r.text());
    assert_eq!(r.json()["path"], "/slow");
    let status = p.wait_exit_async(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
    // Stopped accepting: the listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn admin_on_a_non_loopback_address_is_refused() {
    let mut cfg = simple(&["127.0.0.1:1".parse().unwrap()]);
    cfg["admin"]["address"] = json!({"socket_address": {"address": "0.0.0.0", "port_value": 0}});
    let out = run_to_exit("bootstrap.json", &cfg.to_string(), &["--concurrency", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("loopback"), "{err}");
}
