//! Clusters: STATIC and STRICT_DNS discovery, ROUND_ROBIN / LEAST_REQUEST / RANDOM balancing,
//! pooled upstream connections, and the local replies when no upstream can be had (UH, UF, UC).
use outrigger_tests::backend::{TcpMode, TcpServer};
use outrigger_tests::client::{get, get_h1, H1Conn};
use outrigger_tests::config::*;
use outrigger_tests::{Backend, Proxy};
use serde_json::json;

async fn spread(p: &Proxy, n: usize) -> std::collections::HashMap<String, usize> {
    let mut conn = H1Conn::open(p.addr("http")).await;
    let mut seen = std::collections::HashMap::new();
    for _ in 0..n {
        let r = conn.send(get("x", "/", &[])).await;
        assert_eq!(r.status, 200);
        *seen.entry(r.header("x-backend").unwrap().to_string()).or_insert(0) += 1;
    }
    seen
}

fn three() -> [Backend; 3] {
    [Backend::start("b0"), Backend::start("b1"), Backend::start("b2")]
}

fn with_policy(backends: &[Backend], policy: &str) -> Proxy {
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let mut cfg = simple(&addrs);
    cfg["static_resources"]["clusters"][0]["lb_policy"] = json!(policy);
    Proxy::start(&cfg)
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let bs = three();
    let p = with_policy(&bs, "ROUND_ROBIN");
    let seen = spread(&p, 30).await;
    for b in &bs {
        assert_eq!(seen.get(&b.name).copied(), Some(10), "{seen:?}");
    }
}

#[tokio::test]
async fn least_request_reaches_every_backend() {
    let bs = three();
    let p = with_policy(&bs, "LEAST_REQUEST");
    let seen = spread(&p, 90).await;
    for b in &bs {
        // Expected 30 each when all are idle; 5 is far below any plausible draw.
        assert!(seen.get(&b.name).copied().unwrap_or(0) >= 5, "{seen:?}");
    }
}

#[tokio::test]
async fn least_request_prefers_the_backend_with_fewer_requests_in_flight() {
    // "slow" holds every request for 1.5 s, so requests pile up there; "fast" answers at once.
    let bs = [Backend::start_slow("slow", 1500), Backend::start("fast")];
    let p = with_policy(&bs, "LEAST_REQUEST");
    let addr = p.addr("http");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        tasks.push(tokio::spawn(async move { get_h1(addr, "x", "/", &[]).await }));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut slow = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        slow += usize::from(r.header("x-backend") == Some("slow"));
    }
    // Power of two choices sends a request to the busier endpoint only when both choices land on
    // it: about 25 of 100 here (RANDOM or ROUND_ROBIN would give about 50).
    assert!(slow < 40, "slow backend got {slow} of 100");
    let (_, clusters) = p.admin_get("/clusters");
    assert!(clusters.lines().filter(|l| l.contains("::rq_active::")).all(|l| l.ends_with("::0")), "{clusters}");
}

#[tokio::test]
async fn random_reaches_every_backend() {
    let bs = three();
    let p = with_policy(&bs, "RANDOM");
    let seen = spread(&p, 90).await;
    for b in &bs {
        assert!(seen.get(&b.name).copied().unwrap_or(0) >= 5, "{seen:?}");
    }
}

#[tokio::test]
async fn strict_dns_cluster_resolves_localhost() {
    let b = Backend::start("dns");
    let mut cfg = simple(&[b.addr]);
    let c = &mut cfg["static_resources"]["clusters"][0];
    c["type"] = json!("STRICT_DNS");
    c["dns_lookup_family"] = json!("V4_ONLY");
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] =
        json!("localhost");
    let p = Proxy::start(&cfg);
    let r = get_h1(p.addr("http"), "x", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["backend"], "dns");
    let (_, clusters) = p.admin_get("/clusters");
    assert!(clusters.contains(&format!("app::127.0.0.1:{}", b.addr.port())), "{clusters}");
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    // Each request arrives on a new downstream connection; upstream, one connection serves all.
    for i in 0..20 {
        let r = get_h1(p.addr("http"), "x", &format!("/r{i}"), &[]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(b.requests(), 20);
    assert!(b.connections() <= 3, "{} upstream connections for 20 requests", b.connections());
}

#[tokio::test]
async fn cluster_without_endpoints_returns_503_with_uh_flag() {
    let mut cfg = simple(&[]);
    cfg["static_resources"]["clusters"][0]["load_assignment"]["endpoints"] = json!([]);
    let p = Proxy::start(&cfg);
    let r = get_h1(p.addr("http"), "x", "/uh", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "no healthy upstream");
    let log = p.access_log("UH log", |l| l["path"] == "/uh").await;
    assert_eq!(log["response_flags"], "UH");
    assert_eq!(log["response_code"], 503);
}

#[tokio::test]
async fn connect_failure_returns_503_with_uf_flag() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let p = Proxy::start(&simple(&[closed])); // nothing listens there any more
    let r = get_h1(p.addr("http"), "x", "/uf", &[]).await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("connection failure"), "{}", r.text());
    let log = p.access_log("UF log", |l| l["path"] == "/uf").await;
    assert_eq!(log["response_flags"], "UF");
    assert_eq!(log["upstream_host"], closed.to_string());
    assert!(p.metric("envoy_cluster_upstream_cx_connect_fail_total{envoy_cluster_name=\"app\"}") >= 1.0);
}

#[tokio::test]
async fn upstream_closing_before_response_returns_503_with_uc_flag() {
    let rude = TcpServer::start(TcpMode::Greet(""));
    let p = Proxy::start(&simple(&[rude.addr]));
    let r = get_h1(p.addr("http"), "x", "/uc", &[]).await;
    assert_eq!(r.status, 503);
    let log = p.access_log("UC log", |l| l["path"] == "/uc").await;
    assert_eq!(log["response_flags"], "UC");
}
