//! Timeouts and connection limits from an Envoy bootstrap: the stream idle timeout, the
//! maximum stream duration and gRPC's grpc-timeout, Envoy's timeout headers from trusted
//! callers, downstream and upstream connection retirement, TCP keep-alive on upstream sockets.
use std::time::Duration;

use outrigger_tests::client::{get, H1Conn};
use outrigger_tests::config::*;
use outrigger_tests::{eventually, Faulty, Proxy, WAIT};
use serde_json::{json, Value};

#[tokio::test]
async fn upstream_connections_are_retired_after_max_requests_or_max_duration() {
    let (a, b) = (Faulty::start("a"), Faulty::start("b"));
    let opts = |common: Value| {
        json!({"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {"@type": HTTP_OPTIONS_TYPE,
            "explicit_http_config": {"http_protocol_options": {}}, "common_http_protocol_options": common}})
    };
    let mut by_count = cluster("count", &[a.addr]);
    by_count["typed_extension_protocol_options"] = opts(json!({"max_requests_per_connection": 2}));
    let mut by_age = cluster("age", &[b.addr]);
    by_age["typed_extension_protocol_options"] = opts(json!({"max_connection_duration": "0.2s"}));
    let p =
        Proxy::start(&bootstrap_with(json!([route("/count", "count"), route("/age", "age")]), vec![by_count, by_age]));
    let mut conn = H1Conn::open(p.addr("http")).await;
    for _ in 0..6 {
        assert_eq!(conn.send(get("x", "/count", &[])).await.status, 200);
    }
    assert_eq!(a.connections(), 3, "two requests per upstream connection");
    for _ in 0..3 {
        assert_eq!(conn.send(get("x", "/age", &[])).await.status, 200);
        assert_eq!(conn.send(get("x", "/age", &[])).await.status, 200);
        // Past the duration the connection is not used again.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(b.connections(), 3, "each connection serves until its duration is up");
}

#[tokio::test]
async fn upstream_tcp_keepalive_is_set_on_upstream_sockets() {
    let app = Faulty::start("app");
    let mut c = cluster("app", &[app.addr]);
    c["upstream_connection_options"] =
        json!({"tcp_keepalive": {"keepalive_time": 77, "keepalive_interval": 11, "keepalive_probes": 3}});
    let p = Proxy::start(&bootstrap_with(json!([route("/", "app")]), vec![c]));
    assert_eq!(p.get("/", &[]).await.status, 200);
    // The pooled connection's socket, as the kernel reports it: a keepalive timer near 77 s.
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", "dst", &app.addr.to_string()])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("timer:(keepalive,1m1") || text.contains("timer:(keepalive,1m"), "{text}");
}

#[tokio::test]
async fn downstream_connections_drain_after_max_requests_or_max_duration() {
    let app = Faulty::start("app");
    let routes = json!([vhost("all", &["*"], json!([route("/", "app")]))]);
    let mut by_count = http_listener("count", routes.clone());
    by_count["filter_chains"][0]["filters"][0]["typed_config"]["common_http_protocol_options"] =
        json!({"max_requests_per_connection": 2});
    let mut by_age = http_listener("age", routes);
    by_age["filter_chains"][0]["filters"][0]["typed_config"]["common_http_protocol_options"] =
        json!({"max_connection_duration": "0.3s"});
    let p = Proxy::start(&bootstrap(vec![by_count, by_age], vec![cluster("app", &[app.addr])]));
    let mut conn = H1Conn::open(p.addr("count")).await;
    let first = conn.send(get("x", "/", &[])).await;
    assert_eq!((first.status.as_u16(), first.header("connection")), (200, None));
    let second = conn.send(get("x", "/", &[])).await;
    assert_eq!((second.status.as_u16(), second.header("connection")), (200, Some("close")));
    eventually("the connection to close after its second request", WAIT, || conn.is_closed().then_some(())).await;
    let mut aged = H1Conn::open(p.addr("age")).await;
    assert_eq!(aged.send(get("x", "/", &[])).await.status.as_u16(), 200);
    eventually("the connection to close at its maximum duration", WAIT, || aged.is_closed().then_some(())).await;
}

#[tokio::test]
async fn timeout_headers_from_trusted_callers_set_the_timeout_and_never_reach_the_upstream() {
    let app = Faulty::start("app");
    app.set_delay(1_000);
    let routes = json!([vhost("all", &["*"], json!([route("/", "app")]))]);
    let mut edge = http_listener("edge", routes.clone());
    let hcm = &mut edge["filter_chains"][0]["filters"][0]["typed_config"];
    hcm["use_remote_address"] = json!(true);
    hcm["xff_num_trusted_hops"] = json!(1);
    let mut expected = http_listener("expected", routes);
    expected["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0]["typed_config"]
        ["respect_expected_rq_timeout"] = json!(true);
    let p = Proxy::start(&bootstrap(vec![edge, expected], vec![cluster("app", &[app.addr])]));
    let send = |listener: &str, headers: Vec<(&'static str, &'static str)>| {
        let addr = p.addr(listener);
        async move { outrigger_tests::client::get_h1(addr, "x", "/", &headers).await.status.as_u16() }
    };
    // An internal caller (the trusted hop saw 10.0.0.7): its 200 ms replace the route's 15 s.
    let internal = vec![("x-forwarded-for", "10.0.0.7"), ("x-envoy-upstream-rq-timeout-ms", "200")];
    assert_eq!(send("edge", internal).await, 504);
    // An external one (203.0.113.9) at the edge: ignored.
    let external = vec![("x-forwarded-for", "203.0.113.9"), ("x-envoy-upstream-rq-timeout-ms", "200")];
    assert_eq!(send("edge", external).await, 200);
    // The per-try header bounds the single attempt too.
    assert_eq!(
        send("edge", vec![("x-forwarded-for", "10.0.0.7"), ("x-envoy-upstream-rq-per-try-timeout-ms", "200")]).await,
        504
    );
    // With respect_expected_rq_timeout the expected timeout is the one that counts.
    let both = vec![("x-envoy-expected-rq-timeout-ms", "200"), ("x-envoy-upstream-rq-timeout-ms", "5000")];
    assert_eq!(send("expected", both).await, 504);
    assert!(app.received().iter().all(|r| !r
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("x-envoy-upstream-rq") || k.as_str() == "x-envoy-expected-rq-timeout-ms")));
}

#[tokio::test]
async fn stream_idle_timeout_answers_408_while_waiting_and_cuts_a_stalled_body() {
    let (slow, stalling) = (Faulty::start("slow"), Faulty::start("stalling"));
    slow.set_delay(1_500);
    stalling.stall_body(3_000);
    let mut patient = route("/patient", "slow");
    patient["route"]["idle_timeout"] = json!("0s");
    let routes = json!([vhost("all", &["*"], json!([patient, route("/stall", "stalling"), route("/", "slow")]))]);
    let mut l = http_listener("http", routes);
    l["filter_chains"][0]["filters"][0]["typed_config"]["stream_idle_timeout"] = json!("0.3s");
    let p =
        Proxy::start(&bootstrap(vec![l], vec![cluster("slow", &[slow.addr]), cluster("stalling", &[stalling.addr])]));
    // Nothing happens on the stream for 0.3 s while the upstream thinks: 408, flag SI.
    let r = p.get("/", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (408, "stream timeout"));
    p.access_log("the idle request", |l| l["path"] == "/" && l["response_flags"] == "SI").await;
    // The route's idle_timeout 0s turns it off.
    assert_eq!(p.get("/patient", &[]).await.status.as_u16(), 200);
    // A body that stalls longer than the timeout is cut: the client gets its head and the first
    // part only.
    let got = outrigger_tests::client::raw(p.addr("http"), b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200") && got.ends_with("first,"), "{got:?}");
    p.access_log("the stalled body", |l| l["path"] == "/stall" && l["response_flags"] == "SI").await;
}

#[tokio::test]
async fn max_stream_duration_and_grpc_timeout_bound_the_whole_exchange() {
    let (slow, stalling) = (Faulty::start("slow"), Faulty::start("stalling"));
    slow.set_delay(1_500);
    stalling.stall_body(3_000);
    let msd = |m: Value| json!({"max_stream_duration": m});
    let routes = json!([
        route_with("/grpc", "slow", msd(json!({"grpc_timeout_header_max": "0s"}))),
        route_with("/capped", "slow", msd(json!({"grpc_timeout_header_max": "0.2s"}))),
        route_with("/stall", "stalling", msd(json!({"max_stream_duration": "0.5s"}))),
        route_with("/", "slow", msd(json!({"max_stream_duration": "0.3s"}))),
    ]);
    let p = Proxy::start(&bootstrap_with(
        routes,
        vec![cluster("slow", &[slow.addr]), cluster("stalling", &[stalling.addr])],
    ));
    // The route's maximum before the answer: 408, flag UMSDR.
    let r = p.get("/", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (408, "upstream max stream duration reached"));
    p.access_log("the cut request", |l| l["path"] == "/" && l["response_flags"] == "UMSDR").await;
    // A caller's grpc-timeout, uncapped: 200 ms is too short, 5 s is enough; no header, no limit.
    assert_eq!(p.get("/grpc", &[("grpc-timeout", "200m")]).await.status.as_u16(), 408);
    assert_eq!(p.get("/grpc", &[("grpc-timeout", "5S")]).await.status.as_u16(), 200);
    assert_eq!(p.get("/grpc", &[]).await.status.as_u16(), 200);
    // Capped at 200 ms: a caller's 5 s do not extend it.
    assert_eq!(p.get("/capped", &[("grpc-timeout", "5S")]).await.status.as_u16(), 408);
    // The body counts too: a body still coming at the end is cut.
    let got = outrigger_tests::client::raw(p.addr("http"), b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200") && got.ends_with("first,"), "{got:?}");
    p.access_log("the cut body", |l| l["path"] == "/stall" && l["response_flags"] == "UMSDR").await;
}

#[tokio::test]
async fn request_timeout_answers_408_to_a_body_that_does_not_arrive_in_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Faulty::start("app");
    app.set_delay(1_000);
    let mut l = http_listener("http", json!([vhost("all", &["*"], json!([route("/", "app")]))]));
    l["filter_chains"][0]["filters"][0]["typed_config"]["request_timeout"] = json!("0.4s");
    let p = Proxy::start(&bootstrap(vec![l], vec![cluster("app", &[app.addr])]));
    // A whole body in time: the slow answer (1 s, past the 0.4 s) is not cut.
    let body = bytes::Bytes::from_static(b"0123456789");
    let r =
        outrigger_tests::client::send_h1(p.addr("http"), outrigger_tests::client::request("POST", "x", "/", &[], body))
            .await;
    assert_eq!(r.status.as_u16(), 200);
    // Three bytes of ten, then nothing: 408.
    let mut s = tokio::net::TcpStream::connect(p.addr("http")).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n012").await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(15).any(|w| w == b"request timeout") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408") && text.ends_with("request timeout"), "{text:?}");
}
