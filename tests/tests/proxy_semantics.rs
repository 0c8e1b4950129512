//! What a proxy does to headers: hop-by-hop removal both ways, x-forwarded-for/-proto,
//! x-request-id, and a `server` header that does not leak the upstream's.
use outrigger_tests::client::{get, get_h1, send_h2};
use outrigger_tests::config::*;
use outrigger_tests::{Backend, Proxy};
use serde_json::json;

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let r = get_h1(
        p.addr("http"),
        "x",
        "/",
        &[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "connection-scoped"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("x-keep", "end-to-end"),
            ("x-echo-hop", "1"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = r.json()["headers"].clone();
    for h in ["x-secret", "keep-alive", "proxy-connection", "te"] {
        assert!(seen.get(h).is_none(), "upstream got hop-by-hop {h}: {seen}");
    }
    assert_ne!(seen["connection"], "keep-alive, x-secret");
    assert_eq!(seen["x-keep"], "end-to-end");
    // The backend answered with `connection: x-hop-resp`, `x-hop-resp` and `keep-alive`.
    assert!(r.header("x-hop-resp").is_none(), "{:?}", r.headers);
    assert!(r.header("keep-alive").is_none(), "{:?}", r.headers);
    assert_eq!(r.header("x-backend"), Some("app"));
}

#[tokio::test]
async fn forwarded_headers_follow_use_remote_address() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["use_remote_address"] = json!(true);
    let p = Proxy::start(&cfg);
    let r = get_h1(p.addr("http"), "x", "/", &[]).await;
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
    // An edge proxy appends the peer to what the client claimed and sets the real scheme.
    let r =
        get_h1(p.addr("http"), "x", "/", &[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]).await;
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("203.0.113.9,127.0.0.1"));
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
    let r = send_h2(p.addr("http"), get("x", "/", &[])).await;
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn forwarded_for_is_untouched_without_use_remote_address() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let r = get_h1(p.addr("http"), "x", "/", &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("203.0.113.9"));
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test]
async fn x_request_id_is_generated_when_absent_and_logged() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let r = get_h1(p.addr("http"), "x", "/rid", &[]).await;
    let id = r.upstream_header("x-request-id").expect("x-request-id generated");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "not a UUID v4: {id}");
    let log = p.access_log("rid log", |l| l["path"] == "/rid").await;
    assert_eq!(log["x_request_id"], id.as_str());
    // Two requests, two ids.
    let r2 = get_h1(p.addr("http"), "x", "/rid", &[]).await;
    assert_ne!(r2.upstream_header("x-request-id").unwrap(), id);
    // An internal request's own id is kept.
    let r = get_h1(p.addr("http"), "x", "/", &[("x-request-id", "abc-123")]).await;
    assert_eq!(r.upstream_header("x-request-id").as_deref(), Some("abc-123"));
}

#[tokio::test]
async fn server_header_is_the_proxys_not_the_upstreams() {
    let b = Backend::start("app");
    let routes = json!([
        {"match": {"path": "/direct"}, "direct_response": {"status": 200}},
        route("/", "app"),
    ]);
    let mut cfg = bootstrap(
        vec![
            http_listener("http", json!([vhost("all", &["*"], routes.clone())])),
            http_listener("passthrough", json!([vhost("all", &["*"], routes)])),
        ],
        vec![cluster("app", &[b.addr])],
    );
    first_filter(&mut cfg, 1)["server_header_transformation"] = json!("PASS_THROUGH");
    let p = Proxy::start(&cfg);
    let r = get_h1(p.addr("http"), "x", "/", &[]).await;
    assert_eq!(r.header("x-backend"), Some("app"));
    assert_eq!(r.header("server"), Some("outrigger"));
    assert_eq!(get_h1(p.addr("http"), "x", "/direct", &[]).await.header("server"), Some("outrigger"));
    assert_eq!(send_h2(p.addr("http"), get("x", "/", &[])).await.header("server"), Some("outrigger"));
    // Only when configured does the upstream's own header pass.
    let r = get_h1(p.addr("passthrough"), "x", "/", &[]).await;
    assert_eq!(r.header("server"), Some("echo-backend"));
}

#[tokio::test]
async fn xff_num_trusted_hops_picks_the_client_address_from_x_forwarded_for() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    let hcm = first_filter(&mut cfg, 0);
    hcm["use_remote_address"] = json!(true);
    hcm["xff_num_trusted_hops"] = json!(1);
    let p = Proxy::start(&cfg);
    let xff = [("x-forwarded-for", "198.51.100.1,203.0.113.9")];
    let r = get_h1(p.addr("http"), "x", "/hops", &xff).await;
    // The peer is still what gets appended...
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("198.51.100.1,203.0.113.9,127.0.0.1"));
    // ...but the client is the address the one trusted hop (203.0.113.9's proxy) saw.
    let log = p.access_log("hops log", |l| l["path"] == "/hops").await;
    assert_eq!(log["downstream_remote_address"], "203.0.113.9:0");
    // Without XFF the trusted hop cannot be skipped: the peer is the client.
    get_h1(p.addr("http"), "x", "/direct", &[]).await;
    let log = p.access_log("direct log", |l| l["path"] == "/direct").await;
    assert!(log["downstream_remote_address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{log}");
}
