//! Request smuggling, pipelined: each attempt follows a first request on the same connection (a
//! plain GET, an `Upgrade:` the route refuses, one the upstream refuses, one that becomes a
//! tunnel), and the test asserts byte for byte what the upstream received. Ambiguous or invalid
//! framing gets 400 and closes the connection; nothing after it reaches the upstream. Inside an
//! accepted tunnel the same bytes are opaque data and arrive unchanged.
use outrigger_tests::client::{get_h1, raw, raw_status};
use outrigger_tests::config::*;
use outrigger_tests::raw_upstream::RawUpstream;
use outrigger_tests::{eventually, Proxy, WAIT};
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Head-level smuggling attempts: each must be refused with 400 and nothing of it forwarded.
const HEAD_ATTEMPTS: &[&str] = &[
    "POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "POST /smuggled HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
    "POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "POST /smuggled HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "POST /smuggled HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    "POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
];

const AFTER: &str = "GET /after HTTP/1.1\r\nHost: x\r\n\r\n";

fn config(upstream: SocketAddr, websocket: bool) -> Value {
    let mut cfg = simple(&[upstream]);
    let hcm = first_filter(&mut cfg, 0);
    // Deterministic forwarded heads, so that they can be compared byte for byte.
    hcm["generate_request_id"] = json!(false);
    if websocket {
        hcm["upgrade_configs"] = json!([{"upgrade_type": "websocket"}]);
    }
    cfg
}

/// Writes `bytes` in one go and reads until the proxy closes the connection.
async fn exchange(p: &Proxy, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(p.addr("http")).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.expect("the proxy closes the connection");
    String::from_utf8_lossy(&out).to_string()
}

fn statuses(out: &str) -> Vec<u16> {
    out.match_indices("HTTP/1.1 ").filter_map(|(i, _)| out.get(i + 9..i + 12)?.parse().ok()).collect()
}

/// What the upstream receives for `GET path` alone, on a proxy of the same config.
async fn forwarded_alone(p: &Proxy, up: &RawUpstream, path: &str) -> Vec<u8> {
    let before = up.received().len();
    assert_eq!(get_h1(p.addr("http"), "x", path, &[]).await.status, 200);
    eventually("the upstream has the request", WAIT, || (up.received().len() > before).then_some(())).await;
    up.received()[before..].to_vec()
}

/// Sends a marker request on a new connection and waits for it upstream: whatever the proxy
/// forwarded before it on the (reused) upstream connection has arrived by then.
async fn upstream_bytes_before_marker(p: &Proxy, up: &RawUpstream, from: usize) -> Vec<u8> {
    let marker = forwarded_alone(p, up, "/marker").await;
    let all = up.received();
    all[from..all.len() - marker.len()].to_vec()
}

#[tokio::test]
async fn smuggling_pipelined_after_a_get_gets_400_and_never_reaches_the_upstream() {
    let up = RawUpstream::start();
    let p = Proxy::start(&config(up.addr, false));
    let first = forwarded_alone(&p, &up, "/first").await;
    for attempt in HEAD_ATTEMPTS {
        let from = up.received().len();
        let out = exchange(&p, format!("GET /first HTTP/1.1\r\nHost: x\r\n\r\n{attempt}{AFTER}").as_bytes()).await;
        assert_eq!(statuses(&out), [200, 400], "{attempt:?}: {out}");
        let got = upstream_bytes_before_marker(&p, &up, from).await;
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&first), "{attempt:?}");
    }
}

#[tokio::test]
async fn smuggling_after_an_upgrade_the_route_refuses_gets_400() {
    let up = RawUpstream::start();
    let p = Proxy::start(&config(up.addr, false));
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    for attempt in HEAD_ATTEMPTS {
        let from = up.received().len();
        let out = exchange(&p, format!("{upgrade}{attempt}{AFTER}").as_bytes()).await;
        assert_eq!(statuses(&out), [403, 400], "{attempt:?}: {out}");
        let got = upstream_bytes_before_marker(&p, &up, from).await;
        assert_eq!(String::from_utf8_lossy(&got), "", "{attempt:?}");
    }
}

#[tokio::test]
async fn smuggling_after_an_upgrade_the_upstream_refuses_gets_400() {
    let up = RawUpstream::start();
    let p = Proxy::start(&config(up.addr, true));
    // The upstream answers 200 to an upgrade of /plain: no tunnel, the next bytes are a request.
    let upgrade = "GET /plain HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let conns = up.connections();
    assert_eq!(raw_status(&raw(p.addr("http"), upgrade.as_bytes()).await), Some(200));
    let alone = eventually("the upgrade request upstream", WAIT, || up.connection(conns)).await;
    for attempt in HEAD_ATTEMPTS {
        let n = up.connections();
        let out = exchange(&p, format!("{upgrade}{attempt}{AFTER}").as_bytes()).await;
        assert_eq!(statuses(&out), [200, 400], "{attempt:?}: {out}");
        let got = eventually("the upgrade request upstream", WAIT, || up.connection(n)).await;
        let from = up.received().len();
        let rest = upstream_bytes_before_marker(&p, &up, from).await;
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&alone), "{attempt:?}");
        assert!(rest.is_empty(), "{attempt:?}: {}", String::from_utf8_lossy(&rest));
    }
}

#[tokio::test]
async fn bytes_after_an_accepted_upgrade_are_tunnel_data_passed_unchanged() {
    let up = RawUpstream::start();
    let p = Proxy::start(&config(up.addr, true));
    let upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    for attempt in HEAD_ATTEMPTS {
        let n = up.connections();
        let mut s = TcpStream::connect(p.addr("http")).await.unwrap();
        s.write_all(format!("{upgrade}{attempt}").as_bytes()).await.unwrap();
        let mut head = vec![0u8; 256];
        let k = tokio::time::timeout(WAIT, s.read(&mut head)).await.unwrap().unwrap();
        assert!(head[..k].starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head[..k]));
        let got = eventually("the tunnel bytes upstream", WAIT, || {
            up.connection(n).filter(|c| String::from_utf8_lossy(c).ends_with(attempt))
        })
        .await;
        let forwarded_head_len = got.len() - attempt.len();
        let forwarded_head = String::from_utf8_lossy(&got[..forwarded_head_len]).to_string();
        assert!(
            forwarded_head.starts_with("GET /ws HTTP/1.1\r\n") && forwarded_head.ends_with("\r\n\r\n"),
            "{forwarded_head:?}"
        );
        assert_eq!(forwarded_head.matches("HTTP/1.1").count(), 1, "one head, then the tunnel: {forwarded_head:?}");
    }
}

#[tokio::test]
async fn malformed_chunked_body_gets_400_dpe_and_nothing_after_it_is_forwarded() {
    let up = RawUpstream::start();
    let mut cfg = config(up.addr, false);
    cfg["static_resources"]["clusters"][0]["connect_timeout"] = json!("5s");
    let p = Proxy::start(&cfg);
    let head = "POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000));
    for body in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n", "0\r\nbad trailer\r\n\r\n", long.as_str()] {
        let out = exchange(&p, format!("{head}{body}{AFTER}").as_bytes()).await;
        assert_eq!(statuses(&out), [400], "{body:?}: {out}");
        assert!(!String::from_utf8_lossy(&up.received()).contains("/after"), "{body:?}");
    }
    let log = p.access_log("DPE log", |l| l["path"] == "/body").await;
    assert_eq!(log["response_flags"], "DPE", "{log}");
    assert_eq!(log["response_code"], 400, "{log}");
}
