//! Filter chain selection: destination port, server name (SNI, read by the tls_inspector listener
//! filter, exact before wildcard) and transport protocol; the default chain catches the rest.
use std::time::Duration;

use outrigger_tests::backend::{TcpMode, TcpServer};
use outrigger_tests::client::{client_hello, tcp_exchange};
use outrigger_tests::config::*;
use outrigger_tests::Proxy;
use serde_json::{json, Value};

fn with_match(mut chain: Value, m: Value) -> Value {
    chain["filter_chain_match"] = m;
    chain
}

fn tls_listener(name: &str, chains: Vec<Value>, default: Value) -> Value {
    let mut l = listener(name, "127.0.0.1", chains);
    l["listener_filters"] =
        json!([{"name": "envoy.filters.listener.tls_inspector", "typed_config": {"@type": TLS_INSPECTOR_TYPE}}]);
    l["default_filter_chain"] = default;
    l
}

#[tokio::test]
async fn destination_port_selects_the_filter_chain() {
    let (a, other) = (TcpServer::start(TcpMode::Greet("port-chain")), TcpServer::start(TcpMode::Greet("default")));
    // destination_port must be known before start: take a free ephemeral port (not a fixed one).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let chains = || vec![with_match(tcp_chain("port", "a"), json!({"destination_port": port}))];
    let mut on_port = listener("on_port", "127.0.0.1", chains());
    on_port["address"] = socket("127.0.0.1", port);
    on_port["default_filter_chain"] = tcp_chain("default", "other");
    let mut elsewhere = listener("elsewhere", "127.0.0.1", chains());
    elsewhere["default_filter_chain"] = tcp_chain("default", "other");
    let p = Proxy::start(&bootstrap(
        vec![on_port, elsewhere],
        vec![cluster("a", &[a.addr]), cluster("other", &[other.addr])],
    ));
    assert_eq!(p.addr("on_port").port(), port);
    assert_eq!(tcp_exchange(p.addr("on_port"), b"").await, b"port-chain");
    assert_eq!(tcp_exchange(p.addr("elsewhere"), b"").await, b"default");
    assert_eq!((a.connections(), other.connections()), (1, 1));
}

fn sni_proxy() -> (Proxy, [TcpServer; 3]) {
    let servers = [TcpServer::start(TcpMode::Echo), TcpServer::start(TcpMode::Echo), TcpServer::start(TcpMode::Echo)];
    let l = tls_listener(
        "tls",
        vec![
            with_match(tcp_chain("wild", "wild"), json!({"server_names": ["*.example.com"]})),
            with_match(tcp_chain("exact", "exact"), json!({"server_names": ["api.example.com"]})),
        ],
        tcp_chain("default", "default"),
    );
    let p = Proxy::start(&bootstrap(
        vec![l],
        vec![
            cluster("exact", &[servers[0].addr]),
            cluster("wild", &[servers[1].addr]),
            cluster("default", &[servers[2].addr]),
        ],
    ));
    (p, servers)
}

fn counts(s: &[TcpServer; 3]) -> [usize; 3] {
    [s[0].connections(), s[1].connections(), s[2].connections()]
}

#[tokio::test]
async fn sni_selects_tcp_proxy_chain_exact_before_wildcard() {
    let (p, s) = sni_proxy();
    let addr = p.addr("tls");
    let hello = client_hello(Some("api.example.com"));
    // TLS passes through untouched: the ClientHello arrives upstream byte for byte.
    assert_eq!(tcp_exchange(addr, &hello).await, hello);
    assert_eq!(counts(&s), [1, 0, 0]);
    assert_eq!(s[0].first_bytes()[0][0], 0x16);
    let hello = client_hello(Some("www.example.com"));
    assert_eq!(tcp_exchange(addr, &hello).await, hello);
    assert_eq!(counts(&s), [1, 1, 0]);
    // Unknown names, no SNI at all, and plaintext fall to the default chain.
    tcp_exchange(addr, &client_hello(Some("example.net"))).await;
    tcp_exchange(addr, &client_hello(None)).await;
    assert_eq!(tcp_exchange(addr, b"plain text").await, b"plain text");
    assert_eq!(counts(&s), [1, 1, 3]);
}

#[tokio::test]
async fn openssl_client_sni_is_routed_by_server_name() {
    let (p, s) = sni_proxy();
    let mut child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &p.addr("tls").to_string(), "-servername", "shop.example.com"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl is installed (apt-get install openssl)");
    // The echo server answers the ClientHello with itself, which openssl rejects; it exits.
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = child.kill().await;
    assert_eq!(counts(&s), [0, 1, 0]);
    let first = &s[1].first_bytes()[0];
    assert_eq!(first[0], 0x16, "not a TLS record");
    assert!(first.windows(16).any(|w| w == b"shop.example.com"), "SNI not in the ClientHello that arrived");
}

#[tokio::test]
async fn transport_protocol_separates_tls_from_plaintext() {
    let (tls, raw) = (TcpServer::start(TcpMode::Greet("tls")), TcpServer::start(TcpMode::Greet("raw")));
    let l = tls_listener(
        "mixed",
        vec![
            with_match(tcp_chain("tls", "tls"), json!({"transport_protocol": "tls"})),
            with_match(tcp_chain("raw", "raw"), json!({"transport_protocol": "raw_buffer"})),
        ],
        tcp_chain("default", "raw"),
    );
    let p = Proxy::start(&bootstrap(vec![l], vec![cluster("tls", &[tls.addr]), cluster("raw", &[raw.addr])]));
    assert_eq!(tcp_exchange(p.addr("mixed"), &client_hello(Some("x.test"))).await, b"tls");
    assert_eq!(tcp_exchange(p.addr("mixed"), b"GET / HTTP/1.1\r\n\r\n").await, b"raw");
    assert_eq!((tls.connections(), raw.connections()), (1, 1));
}

/// Binds `addr` with SO_REUSEPORT, as a second process sharing the port would.
fn bind_reuse_port(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    s.listen(8)?;
    Ok(s)
}

#[tokio::test]
async fn enable_reuse_port_lets_another_socket_share_the_listener_port() {
    let greet = TcpServer::start(TcpMode::Greet("hi"));
    let mut shared = listener("shared", "127.0.0.1", vec![tcp_chain("shared", "greet")]);
    shared["enable_reuse_port"] = json!(true);
    let exclusive = listener("exclusive", "127.0.0.1", vec![tcp_chain("exclusive", "greet")]);
    let p = Proxy::start(&bootstrap(vec![shared, exclusive], vec![cluster("greet", &[greet.addr])]));
    assert!(bind_reuse_port(p.addr("shared")).is_ok(), "SO_REUSEPORT was not set on the listener");
    assert!(bind_reuse_port(p.addr("exclusive")).is_err(), "a listener without enable_reuse_port was shared");
    assert_eq!(tcp_exchange(p.addr("exclusive"), b"").await, b"hi");
}

#[tokio::test]
async fn listener_stat_prefix_keys_the_listener_stats() {
    let greet = TcpServer::start(TcpMode::Greet("hi"));
    let mut named = listener("named", "127.0.0.1", vec![tcp_chain("named", "greet")]);
    named["stat_prefix"] = json!("edge_in");
    let p = Proxy::start(&bootstrap(vec![named], vec![cluster("greet", &[greet.addr])]));
    assert_eq!(tcp_exchange(p.addr("named"), b"").await, b"hi");
    let series = "envoy_listener_downstream_cx_total{envoy_listener_address=\"edge_in\"}";
    assert_eq!(p.metric(series), 1.0, "{series}");
    let by_address = format!("envoy_listener_address=\"127.0.0.1_{}\"", p.addr("named").port());
    assert!(!p.admin_get("/stats/prometheus").1.contains(&by_address), "stats still keyed by address");
}
