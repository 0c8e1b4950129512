//! Tunnels: WebSocket upgrades (only where `upgrade_configs` allows them) and CONNECT, terminated
//! by the proxy and piped as raw TCP to the route's cluster.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use outrigger_tests::backend::{TcpMode, TcpServer, WsServer};
use outrigger_tests::client::{raw, raw_status};
use outrigger_tests::config::*;
use outrigger_tests::{Backend, Proxy};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const WS_HANDSHAKE: &str = "GET /ws HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test]
async fn websocket_upgrade_is_tunnelled_when_configured() {
    let ws = WsServer::start();
    let mut cfg = simple(&[ws.addr]);
    first_filter(&mut cfg, 0)["upgrade_configs"] = json!([{"upgrade_type": "websocket"}]);
    let p = Proxy::start(&cfg);
    let stream = tokio::net::TcpStream::connect(p.addr("http")).await.unwrap();
    let (mut client, resp) =
        tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::client_async("ws://ws.test/ws", stream))
            .await
            .expect("handshake in time")
            .expect("WebSocket handshake through the proxy");
    assert_eq!(resp.status(), 101);
    for msg in [Message::text("hello"), Message::binary(vec![7u8; 1 << 20])] {
        client.send(msg.clone()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(20), client.next()).await.expect("echo").unwrap().unwrap();
        assert_eq!(back, msg);
    }
    client.close(None).await.unwrap();
}

#[tokio::test]
async fn websocket_upgrade_is_forbidden_when_not_configured() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let out = raw(p.addr("http"), WS_HANDSHAKE.as_bytes()).await;
    assert_eq!(raw_status(&out), Some(403), "{out}");
    assert_eq!(b.requests(), 0, "the upstream saw the refused upgrade");
}

fn connect_proxy(target: std::net::SocketAddr, allow: bool) -> Proxy {
    let routes = json!([
        {"match": {"connect_matcher": {}},
         "route": {"cluster": "tunnel", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]}},
        route("/", "tunnel"),
    ]);
    let mut cfg = bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("tunnel", &[target])],
    );
    if allow {
        first_filter(&mut cfg, 0)["upgrade_configs"] = json!([{"upgrade_type": "CONNECT"}]);
    }
    Proxy::start(&cfg)
}

/// Sends a CONNECT through the proxy and reads its 200 head byte by byte, so that no tunnel
/// bytes are consumed with it.
async fn connect_through(p: &Proxy) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(p.addr("http")).await.unwrap();
    s.write_all(b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b)).await.expect("head").unwrap();
        assert!(n == 1, "closed during the CONNECT response: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// Writes `len` raw (non-HTTP) bytes into the tunnel, closes the write side, and returns them with
/// what came back.
async fn echo_through(mut s: tokio::net::TcpStream, len: usize) -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..=255u8).cycle().take(len).collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut back)).await.expect("echo").unwrap();
    (payload, back)
}

#[tokio::test]
async fn connect_is_terminated_and_piped_to_the_cluster() {
    let echo = TcpServer::start(TcpMode::Echo);
    let p = connect_proxy(echo.addr, true);
    let s = connect_through(&p).await;
    // Raw bytes now: not HTTP at all.
    let (payload, back) = echo_through(s, 300_000).await;
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "tunnel corrupted the bytes");
    assert_eq!(echo.first_bytes()[0][0], 0, "the upstream got the tunnel bytes, not the CONNECT request");
}

#[tokio::test]
async fn connect_is_forbidden_when_not_configured() {
    let echo = TcpServer::start(TcpMode::Echo);
    let p = connect_proxy(echo.addr, false);
    let out = raw(p.addr("http"), b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n").await;
    assert_eq!(raw_status(&out), Some(403), "{out}");
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn connect_without_connect_config_is_forwarded_to_an_upstream_proxy() {
    // The upstream is itself an HTTP proxy: it must get the CONNECT request, answer it, then tunnel.
    let upstream_proxy = TcpServer::start(TcpMode::HttpConnect);
    let routes = json!([
        {"match": {"connect_matcher": {}}, "route": {"cluster": "egress"}},
        route("/", "egress"),
    ]);
    let mut cfg = bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("egress", &[upstream_proxy.addr])],
    );
    first_filter(&mut cfg, 0)["upgrade_configs"] = json!([{"upgrade_type": "CONNECT"}]);
    let p = Proxy::start(&cfg);
    let s = connect_through(&p).await;
    let (payload, back) = echo_through(s, 100_000).await;
    assert!(back == payload, "tunnel corrupted the bytes ({} of {} came back)", back.len(), payload.len());
    let got = String::from_utf8_lossy(&upstream_proxy.first_bytes()[0]).to_string();
    assert!(got.starts_with("CONNECT db.internal:5432 HTTP/1.1\r\n"), "the upstream got {got:?}, not the CONNECT");
    assert!(got.to_ascii_lowercase().contains("host: db.internal:5432\r\n"), "{got}");
}
