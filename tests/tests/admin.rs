//! The admin server and the process lifecycle: /ready, /config_dump, /clusters,
//! /stats/prometheus, /drain_listeners, POST /quitquitquit, and SIGTERM's graceful drain.
use std::time::Duration;

use outrigger_tests::client::get_h1;
use outrigger_tests::config::*;
use outrigger_tests::proxy::run_to_exit;
use outrigger_tests::{Backend, Proxy};
use serde_json::{json, Value};

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
async fn drain_listeners_stops_accepting_and_fails_ready_while_the_request_in_flight_finishes() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let addr = p.addr("http");
    assert_eq!(p.admin_get("/ready"), (200, "LIVE\n".to_string()));
    let slow = tokio::spawn(async move { get_h1(addr, "x", "/slow", &[("x-delay-ms", "2000")]).await });
    outrigger_tests::eventually("request at the backend", outrigger_tests::WAIT, || (b.requests() == 1).then_some(()))
        .await;
    assert_eq!(p.admin_post("/drain_listeners").0, 200);
    assert_eq!(p.admin_get("/ready").0, 503);
    // The listening socket is closed: new connections are refused.
    let deadline = tokio::time::Instant::now() + outrigger_tests::WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the listener still accepts after /drain_listeners");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request was cut: {}", r.text());
    assert_eq!(r.json()["path"], "/slow");
    assert_eq!(b.requests(), 1, "a request after the drain reached the backend");
    // Draining is not exiting: the admin server still answers.
    assert_eq!(p.admin_get("/ready").0, 503);
}

#[tokio::test]
async fn sigterm_sends_http2_goaway_and_the_stream_in_flight_completes() {
    use outrigger_tests::client::{H2Frame, H2Raw};
    let b = Backend::start("app");
    let mut p = Proxy::start(&simple(&[b.addr]));
    let mut h2 = H2Raw::connect(p.addr("http")).await;
    h2.get(1, "svc.test", "/slow", &[("x-delay-ms", "1500")]).await;
    outrigger_tests::eventually("request at the backend", outrigger_tests::WAIT, || (b.requests() == 1).then_some(()))
        .await;
    p.signal(libc::SIGTERM);
    let mut goaway = None;
    let mut body = Vec::new();
    let mut status_200 = false;
    loop {
        let f = h2.next_frame().await.expect("connection closed before stream 1 ended");
        match f.kind {
            H2Frame::GOAWAY => goaway = Some(f.clone()),
            H2Frame::RST_STREAM => panic!("stream {} reset: {:?}", f.stream, f.payload),
            // HPACK: 0x88 is the static table's `:status: 200`.
            H2Frame::HEADERS if f.stream == 1 => status_200 = f.payload.first() == Some(&0x88),
            H2Frame::DATA if f.stream == 1 => body.extend_from_slice(&f.payload),
            _ => {}
        }
        if f.stream == 1 && f.end_stream() {
            break;
        }
    }
    let goaway = goaway.expect("no GOAWAY before the stream in flight ended");
    let last_stream = u32::from_be_bytes(goaway.payload[..4].try_into().unwrap()) & 0x7fff_ffff;
    assert!(last_stream >= 1, "GOAWAY's last stream {last_stream} excludes the stream in flight");
    assert_eq!(&goaway.payload[4..8], &[0, 0, 0, 0], "GOAWAY error code is not NO_ERROR");
    assert!(status_200, "stream 1 did not get a 200");
    let j: Value = serde_json::from_slice(&body).expect("echo body");
    assert_eq!(j["path"], "/slow");
    let status = p.wait_exit_async(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
}

#[tokio::test]
async fn drain_time_cuts_a_request_that_never_finishes_and_the_process_exits() {
    let b = Backend::start("app");
    let cfg = serde_json::to_string(&simple(&[b.addr])).unwrap();
    let mut p = Proxy::start_file("bootstrap.json", &cfg, &["--drain-time-s", "1"]);
    let addr = p.addr("http");
    // Ten minutes at the backend, and a client that waits as long: only the drain deadline can
    // end it.
    let stuck = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stuck HTTP/1.1\r\nHost: x\r\nX-Delay-Ms: 600000\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(600), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the stuck request was never cut");
        String::from_utf8_lossy(&out).to_string()
    });
    outrigger_tests::eventually("request at the backend", outrigger_tests::WAIT, || (b.requests() == 1).then_some(()))
        .await;
    p.signal(libc::SIGTERM);
    // Generous: the deadline is 1 s; without it the request would hold the process for 10 min.
    let status = p.wait_exit_async(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
    let out = stuck.await.unwrap();
    assert!(!out.starts_with("HTTP/"), "the stuck request got a response: {out}");
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
