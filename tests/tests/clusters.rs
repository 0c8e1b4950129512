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
async fn least_request_sends_less_to_the_endpoint_with_requests_in_flight() {
    // "slow" holds every request for 5 s, so requests pile up there; "fast" answers at once.
    let bs = [Backend::start_slow("slow", 5000), Backend::start("fast")];
    let p = with_policy(&bs, "LEAST_REQUEST");
    let addr = p.addr("http");
    // One pick at a time: the next request leaves only once the last one reached a backend, so at
    // every pick but the first the slow endpoint has more requests in flight than the fast one.
    const N: usize = 600;
    let mut tasks = Vec::new();
    for i in 0..N {
        tasks.push(tokio::spawn(async move { get_h1(addr, "x", "/", &[]).await }));
        let deadline = tokio::time::Instant::now() + outrigger_tests::WAIT;
        while bs[0].requests() + bs[1].requests() <= i {
            assert!(tokio::time::Instant::now() < deadline, "request {i} never reached a backend");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let mut slow = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        slow += usize::from(r.header("x-backend") == Some("slow"));
    }
    // Power of two choices (with replacement) sends a request to the busier endpoint only when
    // both choices land on it: Binomial(600, 1/4), mean 150, sd 10.6. Round robin gives exactly
    // 300 and RANDOM Binomial(600, 1/2) (mean 300, sd 12.2). The bound 225 is 7 sd above P2C's
    // mean (false failure < 1e-11) and 6 sd below RANDOM's.
    assert!(slow < 225, "slow backend got {slow} of {N}");
    let (_, clusters) = p.admin_get("/clusters");
    assert!(clusters.lines().filter(|l| l.contains("::rq_active::")).all(|l| l.ends_with("::0")), "{clusters}");
}

/// Whether `seq` repeats with period `p` (seq[i] == seq[i - p] throughout).
fn periodic(seq: &[String], p: usize) -> bool {
    seq.iter().skip(p).zip(seq).all(|(a, b)| a == b)
}

async fn picks(p: &Proxy, n: usize) -> Vec<String> {
    let mut conn = H1Conn::open(p.addr("http")).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let r = conn.send(get("x", "/", &[])).await;
        assert_eq!(r.status, 200);
        out.push(r.header("x-backend").unwrap().to_string());
    }
    out
}

#[tokio::test]
async fn round_robin_picks_are_a_cycle_over_the_endpoints() {
    // The property the RANDOM test below relies on to tell the two apart.
    let bs = three();
    let p = with_policy(&bs, "ROUND_ROBIN");
    let seq = picks(&p, 30).await;
    assert!(periodic(&seq, 3), "{seq:?}");
}

#[tokio::test]
async fn random_reaches_every_backend() {
    let bs = three();
    let p = with_policy(&bs, "RANDOM");
    let seen = spread(&p, 90).await;
    for b in &bs {
        // Expected 30 each; fewer than 5 has probability below 1e-8 per backend.
        assert!(seen.get(&b.name).copied().unwrap_or(0) >= 5, "{seen:?}");
    }
}

#[tokio::test]
async fn random_picks_are_not_a_fixed_cycle() {
    let bs = three();
    let p = with_policy(&bs, "RANDOM");
    let seq = picks(&p, 40).await;
    // Round robin repeats with period 3 (the endpoint count). 40 uniform picks repeat with
    // period 1, 2 or 3 with probability below 3 * 3^-37 (< 1e-17).
    for period in 1..=3 {
        assert!(!periodic(&seq, period), "RANDOM picks repeat with period {period}: {seq:?}");
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
async fn strict_dns_cluster_re_resolves_per_refresh_rate_and_uses_the_new_address() {
    // Two backends on one port at two loopback addresses; the cluster's name moves between them
    // in the /etc/hosts the proxy's resolver reads (its own mount namespace).
    let old = Backend::start_on("old", "127.0.0.2:0".parse().unwrap());
    let port = old.addr.port();
    let new = Backend::start_on("new", std::net::SocketAddr::from(([127, 0, 0, 3], port)));
    let dir = outrigger_tests::proxy::temp_dir();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 app.e2e.test\n").unwrap();
    let mut cfg = simple(&[old.addr]);
    let c = &mut cfg["static_resources"]["clusters"][0];
    c["type"] = json!("STRICT_DNS");
    c["dns_lookup_family"] = json!("V4_ONLY");
    c["dns_refresh_rate"] = json!("0.2s");
    c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] =
        json!("app.e2e.test");
    let p = Proxy::start_with_hosts(&cfg, &hosts);
    let r = get_h1(p.addr("http"), "x", "/", &[]).await;
    assert_eq!(r.header("x-backend"), Some("old"), "{}", r.text());

    // Rewritten in place: the bind mount follows the inode.
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.3 app.e2e.test\n").unwrap();
    let mut moved = false;
    let deadline = tokio::time::Instant::now() + outrigger_tests::WAIT;
    while !moved && tokio::time::Instant::now() < deadline {
        let r = get_h1(p.addr("http"), "x", "/", &[]).await;
        assert_eq!(r.status, 200);
        moved = r.header("x-backend") == Some("new");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(moved, "still sent to the old address after the name moved");
    let (_, clusters) = p.admin_get("/clusters");
    assert!(clusters.contains(&format!("app::127.0.0.3:{port}::")), "{clusters}");
    assert!(!clusters.contains(&format!("app::127.0.0.2:{port}::")), "the old address is still listed: {clusters}");
    // The old address is out of the set: every request from now on goes to the new one.
    for _ in 0..5 {
        assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.header("x-backend"), Some("new"));
    }
    assert!(new.requests() >= 6);
    let _ = std::fs::remove_dir_all(&dir);
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

#[tokio::test]
async fn upstream_answering_garbage_returns_502_with_upe_flag() {
    // Not HTTP at all: an SSH server's banner where a status line should be.
    let garbage = TcpServer::start(TcpMode::AnswerHead("SSH-2.0-OpenSSH_9.2p1\r\n\r\n"));
    let p = Proxy::start(&simple(&[garbage.addr]));
    let r = get_h1(p.addr("http"), "x", "/upe", &[]).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.text(), "upstream sent an invalid response");
    let log = p.access_log("UPE log", |l| l["path"] == "/upe").await;
    assert_eq!(log["response_flags"], "UPE");
    assert_eq!(log["response_code"], 502);
    assert_eq!(log["upstream_host"], garbage.addr.to_string());
    assert_eq!(garbage.connections(), 1);
    assert!(garbage.first_bytes()[0].starts_with(b"GET /upe HTTP/1.1\r\n"), "the request never reached it");
}
