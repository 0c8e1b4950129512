//! HTTP/1.1 and HTTP/2 (h2c prior knowledge) downstream; HTTP/1.1 or HTTP/2 upstream as the
//! cluster's `typed_extension_protocol_options` say; request bodies, fixed and chunked.
use std::convert::Infallible;

use bytes::Bytes;
use http::Version;
use http_body_util::StreamBody;
use hyper::body::Frame;
use outrigger_tests::client::{get, get_h1, request, send_h1, send_h2};
use outrigger_tests::config::*;
use outrigger_tests::{Backend, Proxy};
use serde_json::json;

#[tokio::test]
async fn http1_downstream_reaches_http1_upstream_by_default() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let r = get_h1(p.addr("http"), "svc.test", "/v1/items", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.json()["version"], "HTTP/1.1");
    assert_eq!(r.upstream_header("host").as_deref(), Some("svc.test"));
}

#[tokio::test]
async fn h2c_prior_knowledge_downstream_is_served_and_sent_upstream_as_http1() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let r = send_h2(p.addr("http"), get("svc.test", "/h2c?q=1", &[("x-custom", "v")])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, Version::HTTP_2);
    let j = r.json();
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["path"], "/h2c?q=1");
    assert_eq!(j["headers"]["host"], "svc.test");
    assert_eq!(j["headers"]["x-custom"], "v");
    let log = p.access_log("h2 access log", |l| l["path"] == "/h2c?q=1").await;
    assert_eq!(log["protocol"], "HTTP/2.0");
}

#[tokio::test]
async fn cluster_with_http2_protocol_options_gets_http2_upstream() {
    let b = Backend::start("h2-app");
    let mut cfg = simple(&[b.addr]);
    let c = cfg["static_resources"]["clusters"][0].take();
    cfg["static_resources"]["clusters"][0] = http2(c);
    let p = Proxy::start(&cfg);
    let r = get_h1(p.addr("http"), "svc.test", "/over-h2", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.version, Version::HTTP_11, "the client keeps its own protocol");
    let j = r.json();
    assert_eq!(j["version"], "HTTP/2.0");
    assert_eq!(j["authority"], "svc.test");
    assert_eq!(j["path"], "/over-h2");
}

#[tokio::test]
async fn explicit_http1_cluster_gets_http1_even_from_h2_clients() {
    let b = Backend::start("h1-app");
    let mut cfg = simple(&[b.addr]);
    cfg["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS_TYPE, "explicit_http_config": {"http_protocol_options": {}}}});
    let p = Proxy::start(&cfg);
    let r = send_h2(p.addr("http"), get("svc.test", "/", &[])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], "HTTP/1.1");
}

#[tokio::test]
async fn concurrent_h2_streams_share_one_upstream_h2_connection() {
    let b = Backend::start("h2-app");
    let mut cfg = simple(&[b.addr]);
    let c = cfg["static_resources"]["clusters"][0].take();
    cfg["static_resources"]["clusters"][0] = http2(c);
    let p = Proxy::start(&cfg);
    let s = tokio::net::TcpStream::connect(p.addr("http")).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let mut sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let req = outrigger_tests::client::to_h2(get("svc.test", &format!("/s/{i}"), &[("x-delay-ms", "50")]));
            let r = outrigger_tests::client::collect(sender.send_request(req).await.unwrap()).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["path"], format!("/s/{i}"));
        }));
    }
    for t in tasks {
        tokio::time::timeout(outrigger_tests::client::TIMEOUT, t).await.expect("stream timed out").unwrap();
    }
    assert_eq!(b.requests(), 20);
    assert_eq!(b.connections(), 1, "HTTP/2 upstream streams are multiplexed on one connection");
}

#[tokio::test]
async fn request_bodies_with_content_length_and_chunked_reach_upstream() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let body = Bytes::from(vec![b'a'; 100_000]);
    let r = send_h1(p.addr("http"), request("POST", "x", "/upload", &[], body.clone())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 100_000);
    assert_eq!(r.json()["method"], "POST");
    // No length known up front: the client sends chunked.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[b'z'; 1000])))),
    );
    let req = http::Request::post("/chunked").header("host", "x").body(StreamBody::new(chunks)).unwrap();
    let r = send_h1(p.addr("http"), req).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 10_000);
    // And over HTTP/2.
    let r = send_h2(p.addr("http"), request("PUT", "x", "/h2-upload", &[], body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], 100_000);
}

#[tokio::test]
async fn upstream_status_codes_and_headers_pass_through() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    for status in ["201", "404", "500", "503"] {
        let r = get_h1(p.addr("http"), "x", "/", &[("x-status", status)]).await;
        assert_eq!(r.status.as_str(), status);
        assert_eq!(r.header("x-backend"), Some("app"));
    }
}

/// Reads one HTTP/1.1 response head and its Content-Length body off a raw connection.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let complete = |b: &[u8]| {
        let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
        let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
        let len = head.lines().find_map(|l| l.strip_prefix("content-length:")?.trim().parse::<usize>().ok());
        b.len() >= end + 4 + len.unwrap_or(0)
    };
    while !complete(&out) {
        let n = tokio::time::timeout(outrigger_tests::WAIT, s.read(&mut buf)).await.expect("response in time").unwrap();
        assert!(n > 0, "connection closed mid-response: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Waits (bounded) until the peer closes the connection; false if it is still open at the bound.
async fn closed_by_peer(s: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(outrigger_tests::WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn idle_timeout_closes_an_idle_connection_but_not_one_with_a_request_in_flight() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["common_http_protocol_options"] = json!({"idle_timeout": "1s"});
    let p = Proxy::start(&cfg);
    // The busy connection's request takes three idle timeouts at the backend.
    let mut busy = TcpStream::connect(p.addr("http")).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: svc.test\r\nX-Delay-Ms: 3000\r\n\r\n").await.unwrap();
    // The idle connection answers one quick request, then sends nothing.
    let mut idle = TcpStream::connect(p.addr("http")).await.unwrap();
    idle.write_all(b"GET /quick HTTP/1.1\r\nHost: svc.test\r\n\r\n").await.unwrap();
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    assert!(closed_by_peer(&mut idle).await, "idle connection still open after the idle timeout");

    // Meanwhile the busy one was not counted idle: its response comes without `connection: close`
    // (what a graceful close during the request would add) and the connection takes another request.
    let r = read_response(&mut busy).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(!r.to_ascii_lowercase().contains("connection: close"), "busy connection was closing: {r}");
    busy.write_all(b"GET /again HTTP/1.1\r\nHost: svc.test\r\n\r\n").await.unwrap();
    let r = read_response(&mut busy).await;
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("/again"), "{r}");
    // And once it is idle in turn, it is closed too.
    assert!(closed_by_peer(&mut busy).await, "connection still open after the idle timeout");
}
