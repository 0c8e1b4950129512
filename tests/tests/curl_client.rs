//! curl as the downstream client (libcurl's HTTP/1.1 and nghttp2's HTTP/2, not hyper): the
//! front-proxy basics, request bodies, and h2c by prior knowledge.
use outrigger_tests::config::*;
use outrigger_tests::curl::curl;
use outrigger_tests::{Backend, Proxy};

#[tokio::test]
async fn curl_get_reaches_the_app_with_proxy_headers_and_without_hop_by_hop_ones() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let args = ["-H", "Host: svc.test", "-H", "X-Custom: v", "-H", "Connection: x-hop", "-H", "X-Hop: 1"];
    let r = curl(p.addr("http"), "/v1/items?q=1", &args).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.http_version, "1.1");
    assert_eq!(r.header("x-backend"), Some("app"));
    assert_eq!(r.header("server"), Some("outrigger"), "the upstream's server header is overwritten");
    let j = r.json();
    assert_eq!(j["method"], "GET");
    assert_eq!(j["path"], "/v1/items?q=1");
    assert_eq!(j["version"], "HTTP/1.1");
    let h = &j["headers"];
    assert_eq!(h["host"], "svc.test");
    assert_eq!(h["x-custom"], "v");
    assert!(h["user-agent"].as_str().is_some_and(|u| u.starts_with("curl/")), "{h}");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(h["x-request-id"].as_str().is_some_and(|id| !id.is_empty()), "{h}");
    assert!(h.get("x-hop").is_none(), "a header named by Connection reached the upstream: {h}");
    assert!(h.get("connection").is_none(), "{h}");
    let log = p.access_log("curl access log", |l| l["path"] == "/v1/items?q=1").await;
    assert_eq!(log["response_code"], 200);
    assert_eq!(log["protocol"], "HTTP/1.1");
}

#[tokio::test]
async fn curl_upload_with_content_length_and_chunked_reaches_the_app() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let dir = outrigger_tests::proxy::temp_dir();
    let file = dir.join("upload");
    std::fs::write(&file, vec![b'u'; 300_000]).unwrap();
    let data = format!("@{}", file.display());
    let r = curl(p.addr("http"), "/upload", &["-H", "Host: x", "--data-binary", &data]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["body_len"], 300_000);
    let chunked = ["-H", "Host: x", "-H", "Transfer-Encoding: chunked", "-X", "PUT", "--data-binary", &data];
    let r = curl(p.addr("http"), "/upload", &chunked).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["method"], "PUT");
    assert_eq!(r.json()["body_len"], 300_000);
    // Over h2c as well.
    let r =
        curl(p.addr("http"), "/upload", &["--http2-prior-knowledge", "-H", "Host: x", "--data-binary", &data]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.http_version, "2");
    assert_eq!(r.json()["body_len"], 300_000);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn curl_h2c_prior_knowledge_is_served_over_http2_and_sent_upstream_as_http1() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let r = curl(p.addr("http"), "/h2c?q=1", &["--http2-prior-knowledge", "-H", "X-Custom: v"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.http_version, "2");
    assert_eq!(r.header("x-backend"), Some("app"));
    let j = r.json();
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["path"], "/h2c?q=1");
    assert_eq!(j["headers"]["host"], p.addr("http").to_string(), "the :authority becomes the upstream's Host");
    assert_eq!(j["headers"]["x-custom"], "v");
    let log = p.access_log("h2 access log", |l| l["path"] == "/h2c?q=1").await;
    assert_eq!(log["protocol"], "HTTP/2.0");
}

#[tokio::test]
async fn curl_gets_envoys_local_replies() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        ["virtual_hosts"][0]["domains"] = serde_json::json!(["svc.test"]);
    let p = Proxy::start(&cfg);
    let r = curl(p.addr("http"), "/", &["-H", "Host: other.test"]).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = curl(p.addr("http"), "/", &["--http2-prior-knowledge", "-H", "Host: other.test"]).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(b.requests(), 0);
    let log = p.access_log("NR log", |l| l["response_code"] == 404).await;
    assert_eq!(log["response_flags"], "NR");
}
