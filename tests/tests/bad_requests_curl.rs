//! The bad-input suite with curl as the client (libcurl and nghttp2 framing rather than raw bytes
//! or hyper): each request gets its 4xx from the proxy and never reaches the upstream, and the
//! proxy serves the next request. Request smuggling cases stay in `bad_requests.rs`.
use outrigger_tests::config::*;
use outrigger_tests::curl::curl;
use outrigger_tests::{Backend, Proxy};

fn setup() -> (Backend, Proxy) {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    (b, p)
}

/// Runs curl with `args`, asserts the status and that the backend saw nothing, then that a good
/// request over the same protocol still works.
async fn rejected(p: &Proxy, b: &Backend, args: &[&str], want: u16) {
    let (requests, connections) = (b.requests(), b.connections());
    let r = curl(p.addr("http"), "/", args).await;
    let shown: Vec<String> = args.iter().map(|a| a.chars().take(40).collect()).collect();
    assert_eq!(r.status, want, "curl {shown:?} got {} {:?} (exit {:?})", r.status, r.stderr, r.exit);
    assert_eq!(b.requests(), requests, "the upstream saw a request that should have been refused");
    assert_eq!(b.connections(), connections, "the upstream was even connected to");
    let h2 = args.contains(&"--http2-prior-knowledge");
    let good: &[&str] = if h2 { &["--http2-prior-knowledge"] } else { &[] };
    assert_eq!(curl(p.addr("http"), "/ok", good).await.status, 200);
}

fn big_header() -> String {
    format!("X-Big: {}", "a".repeat(80 * 1024))
}

#[tokio::test]
async fn curl_oversized_headers_get_431() {
    let (b, p) = setup();
    rejected(&p, &b, &["-H", &big_header()], 431).await;
}

#[tokio::test]
async fn curl_headers_over_max_request_headers_kb_over_h2c_get_431() {
    // 24 KiB against a 16 KiB limit (nghttp2 itself refuses to send a header block over 64 KiB,
    // so the default 60 KiB limit cannot be crossed by much with curl over HTTP/2).
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["max_request_headers_kb"] = serde_json::json!(16);
    let p = Proxy::start(&cfg);
    let big = format!("X-Big: {}", "b".repeat(24 * 1024));
    rejected(&p, &b, &["--http2-prior-knowledge", "-H", &big], 431).await;
    // And over HTTP/1.1 on the same listener.
    rejected(&p, &b, &["-H", &big], 431).await;
}

#[tokio::test]
async fn curl_request_without_host_gets_400() {
    let (b, p) = setup();
    // `-H Host:` removes curl's own Host header.
    rejected(&p, &b, &["-H", "Host:"], 400).await;
}

#[tokio::test]
async fn curl_header_with_bare_cr_gets_400() {
    let (b, p) = setup();
    rejected(&p, &b, &["-H", "X-Bad: a\rb"], 400).await;
}

#[tokio::test]
async fn curl_request_target_with_a_space_gets_400() {
    let (b, p) = setup();
    rejected(&p, &b, &["--request-target", "/a b"], 400).await;
}

#[tokio::test]
async fn curl_method_that_is_not_a_token_gets_400() {
    let (b, p) = setup();
    rejected(&p, &b, &["-X", "GE(T"], 400).await;
}
