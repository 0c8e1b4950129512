//! Bodies stream through the proxy: 1 GiB up and down pass while the proxy's resident memory
//! stays flat. The bound is on growth over the proxy's own footprint after start-up and a first
//! request (sampled every 10 ms while the body flows), so that it measures streaming, not the
//! size of the binary or of its config tables.
use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use outrigger_tests::client::{get, get_h1, send_h1, send_h2, to_h2};
use outrigger_tests::config::*;
use outrigger_tests::{Backend, Proxy};

const BODY: u64 = 1024 * 1024 * 1024;
/// How much the proxy's RSS may grow while the body passes: 32 MiB, a thirty-second of the body.
const MAX_GROWTH_KIB: u64 = 32 * 1024;
const STREAM_TIMEOUT: Duration = Duration::from_secs(300);

/// A body of `n` bytes generated on the fly, 64 KiB at a time, without a known length.
fn generated(n: u64) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    StreamBody::new(futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let c = chunk.slice(..left.min(chunk.len() as u64) as usize);
            let len = c.len() as u64;
            Some((Ok(Frame::data(c)), left - len))
        }
    }))
}

#[tokio::test]
async fn large_upload_streams_with_flat_proxy_memory() {
    let b = Backend::start("sink");
    let p = Proxy::start(&simple(&[b.addr]));
    assert_eq!(outrigger_tests::client::get_h1(p.addr("http"), "x", "/warm-up", &[]).await.status, 200);
    let base = p.proc_status_kib("VmRSS");
    let sampler = p.rss_sampler();
    let req = http::Request::post("/upload").header("host", "x").body(generated(BODY)).unwrap();
    let r = tokio::time::timeout(STREAM_TIMEOUT, send_h1(p.addr("http"), req)).await.expect("upload finished");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body_len"], BODY, "the backend saw the whole body");
    let peak = sampler.max_kib();
    assert!(peak < base + MAX_GROWTH_KIB, "proxy RSS grew from {base} to {peak} KiB for a {} MiB upload", BODY >> 20);
}

/// Downloads the body; returns (bytes received, RSS before in KiB, largest RSS during in KiB).
async fn download(p: &Proxy, h2: bool) -> (u64, u64, u64) {
    let warm = if h2 {
        send_h2(p.addr("http"), get("x", "/", &[])).await
    } else {
        get_h1(p.addr("http"), "x", "/", &[]).await
    };
    assert_eq!(warm.status, 200);
    let base = p.proc_status_kib("VmRSS");
    let sampler = p.rss_sampler();
    let n = BODY.to_string();
    let req = get("x", "/download", &[("x-response-bytes", n.as_str())]);
    let s = tokio::net::TcpStream::connect(p.addr("http")).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(s);
    let resp = if h2 {
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        tx.send_request(to_h2(req)).await.unwrap()
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        tx.send_request(req).await.unwrap()
    };
    assert_eq!(resp.status(), 200);
    // Count the body as it arrives; never hold it.
    let mut body = resp.into_body();
    let mut total = 0u64;
    while let Some(f) = body.frame().await {
        if let Some(d) = f.expect("body frame").data_ref() {
            total += d.len() as u64;
        }
    }
    (total, base, sampler.max_kib())
}

#[tokio::test]
async fn large_download_streams_with_flat_proxy_memory() {
    let b = Backend::start("source");
    let p = Proxy::start(&simple(&[b.addr]));
    let (got, base, peak) = tokio::time::timeout(STREAM_TIMEOUT, download(&p, false)).await.expect("download finished");
    assert_eq!(got, BODY);
    assert!(peak < base + MAX_GROWTH_KIB, "proxy RSS grew from {base} to {peak} KiB for a {} MiB download", BODY >> 20);
    let log = p.access_log("download access log", |l| l["path"] == "/download").await;
    assert_eq!(log["bytes_sent"], BODY);
}

#[tokio::test]
async fn large_download_over_http2_both_sides_streams_with_flat_proxy_memory() {
    let b = Backend::start("source");
    let mut cfg = simple(&[b.addr]);
    let c = cfg["static_resources"]["clusters"][0].take();
    cfg["static_resources"]["clusters"][0] = http2(c);
    let p = Proxy::start(&cfg);
    let (got, base, peak) = tokio::time::timeout(STREAM_TIMEOUT, download(&p, true)).await.expect("download finished");
    assert_eq!(got, BODY);
    assert!(
        peak < base + MAX_GROWTH_KIB,
        "proxy RSS grew from {base} to {peak} KiB for a {} MiB HTTP/2 download",
        BODY >> 20
    );
}
