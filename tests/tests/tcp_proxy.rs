//! The tcp_proxy network filter: bytes both ways, half-close, upstream close and connect failure.
use std::time::Duration;

use outrigger_tests::backend::{TcpMode, TcpServer};
use outrigger_tests::client::tcp_exchange;
use outrigger_tests::config::*;
use outrigger_tests::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn tcp_proxy(upstream: std::net::SocketAddr) -> Proxy {
    let mut l = listener("tcp", "127.0.0.1", vec![tcp_chain("tcp", "up")]);
    l["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] = serde_json::json!([
        {"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG_TYPE}}
    ]);
    Proxy::start(&bootstrap(vec![l], vec![cluster("up", &[upstream])]))
}

#[tokio::test]
async fn tcp_proxy_relays_bytes_both_ways() {
    let echo = TcpServer::start(TcpMode::Echo);
    let p = tcp_proxy(echo.addr);
    // 32 MiB each way, written and read at the same time, more than any socket buffers hold.
    const N: usize = 32 * 1024 * 1024;
    let s = TcpStream::connect(p.addr("tcp")).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        for _ in 0..N / chunk.len() {
            w.write_all(&chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let read = tokio::time::timeout(Duration::from_secs(120), async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, ((total + i) % (64 * 1024) % 251) as u8, "byte {} corrupted", total + i);
            }
            total += n;
        }
        total
    })
    .await
    .expect("echo through tcp_proxy stalled");
    writer.await.unwrap();
    assert_eq!(read, N);
    let log = p.access_log("tcp access log", |l| l["protocol"] == "TCP").await;
    assert_eq!(log["bytes_received"], N as u64);
    assert_eq!(log["bytes_sent"], N as u64);
    assert_eq!(log["upstream_cluster"], "up");
}

#[tokio::test]
async fn half_close_client_still_receives_the_reply() {
    let server = TcpServer::start(TcpMode::ReplyAfterEof);
    let p = tcp_proxy(server.addr);
    // The client shuts down its write side; the server only answers after seeing that FIN.
    let got = tcp_exchange(p.addr("tcp"), &vec![b'q'; 100_000]).await;
    assert_eq!(String::from_utf8(got).unwrap(), "received 100000 bytes");
}

#[tokio::test]
async fn upstream_close_reaches_the_client_while_it_can_still_send() {
    let server = TcpServer::start(TcpMode::Greet("bye"));
    let p = tcp_proxy(server.addr);
    let mut s = TcpStream::connect(p.addr("tcp")).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await.expect("EOF").unwrap();
    assert_eq!(got, b"bye");
    // Our side is still open for writing after the server's FIN.
    s.write_all(b"late data").await.unwrap();
    s.shutdown().await.unwrap();
}

#[tokio::test]
async fn connect_failure_closes_the_client_connection_with_uf() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = tcp_proxy(closed); // the listener above is already dropped: nothing listens there
                               // The proxy closes the client's connection: EOF (a reset would do too) and no bytes.
    let mut s = TcpStream::connect(p.addr("tcp")).await.unwrap();
    let mut got = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await.expect("closed");
    assert!(r.is_ok() || got.is_empty(), "{r:?}");
    assert!(got.is_empty());
    let log = p.access_log("tcp access log", |l| l["protocol"] == "TCP").await;
    assert_eq!(log["response_flags"], "UF");
    assert_eq!(p.metric("envoy_cluster_upstream_cx_connect_fail_total{envoy_cluster_name=\"up\"}"), 1.0);
}
