//! One field each: configuration fields whose effect no broader test showed. Each test fails if
//! the proxy ignored its field (the strict allow-list's evidence table names these tests).
use std::time::Duration;

use outrigger_tests::backend::{TcpMode, TcpServer};
use outrigger_tests::client::{get, get_h1, raw, raw_status, send_h2, tcp_exchange, H1Conn};
use outrigger_tests::config::*;
use outrigger_tests::proxy::temp_dir;
use outrigger_tests::{eventually, Backend, Proxy, WAIT};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn one_vhost(name: &str, routes: Value) -> Value {
    http_listener(name, json!([vhost("all", &["*"], routes)]))
}

#[tokio::test]
async fn redirect_scheme_port_and_strip_query_shape_the_location() {
    let routes = json!([
        {"match": {"prefix": "/scheme"}, "redirect": {"scheme_redirect": "https", "port_redirect": 8443}},
        {"match": {"prefix": "/strip"}, "redirect": {"path_redirect": "/clean", "strip_query": true}},
    ]);
    let p = Proxy::start(&bootstrap(vec![one_vhost("http", routes)], vec![]));
    let r = get_h1(p.addr("http"), "h.test:8080", "/scheme/x?q=1", &[]).await;
    assert_eq!(r.header("location"), Some("https://h.test:8443/scheme/x?q=1"));
    let r = get_h1(p.addr("http"), "h.test", "/strip?secret=1", &[]).await;
    assert_eq!(r.header("location"), Some("http://h.test/clean"));
}

#[tokio::test]
async fn cluster_not_found_response_code_sets_the_status_for_a_missing_cluster() {
    let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster": "gone", "cluster_not_found_response_code": "NOT_FOUND"}}]);
    let mut cfg = bootstrap(vec![one_vhost("http", routes)], vec![]);
    first_filter(&mut cfg, 0)["route_config"]["validate_clusters"] = json!(false);
    let p = Proxy::start(&cfg);
    assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.status, 404);
}

#[tokio::test]
async fn direct_response_body_comes_from_inline_bytes_or_a_file() {
    let file = temp_dir().join("body.txt");
    std::fs::write(&file, "from a file").unwrap();
    let routes = json!([
        // "Ynl0ZXM=" is base64 for "bytes".
        {"match": {"path": "/bytes"}, "direct_response": {"status": 200, "body": {"inline_bytes": "Ynl0ZXM="}}},
        {"match": {"path": "/file"}, "direct_response": {"status": 200, "body": {"filename": file.to_str().unwrap()}}},
    ]);
    let p = Proxy::start(&bootstrap(vec![one_vhost("http", routes)], vec![]));
    assert_eq!(get_h1(p.addr("http"), "x", "/bytes", &[]).await.text(), "bytes");
    assert_eq!(get_h1(p.addr("http"), "x", "/file", &[]).await.text(), "from a file");
}

#[tokio::test]
async fn server_name_is_the_server_header() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["server_name"] = json!("edge-7");
    let p = Proxy::start(&cfg);
    assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.header("server"), Some("edge-7"));
}

/// The SETTINGS and connection WINDOW_UPDATE a server sends first on an h2c connection.
async fn h2_server_preamble(addr: std::net::SocketAddr) -> (Vec<(u16, u32)>, Option<u32>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let (mut settings, mut window) = (Vec::new(), None);
    let read = async {
        // Frames until the server's SETTINGS and (if any) its connection WINDOW_UPDATE are in.
        for _ in 0..4 {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                break;
            }
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match head[3] {
                0x4 if head[4] & 1 == 0 => {
                    settings = payload
                        .chunks_exact(6)
                        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
                        .collect()
                }
                0x8 if stream == 0 && len == 4 => {
                    window = Some(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff)
                }
                _ => {}
            }
            if !settings.is_empty() && window.is_some() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    (settings, window)
}

#[tokio::test]
async fn downstream_http2_options_are_announced_to_the_client() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["http2_protocol_options"] = json!({
        "max_concurrent_streams": 7, "initial_stream_window_size": 131072, "initial_connection_window_size": 1048576});
    let p = Proxy::start(&cfg);
    let (settings, window) = h2_server_preamble(p.addr("http")).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS (3) and SETTINGS_INITIAL_WINDOW_SIZE (4).
    assert!(settings.contains(&(3, 7)), "{settings:?}");
    assert!(settings.contains(&(4, 131072)), "{settings:?}");
    // The connection window starts at 65,535 and is raised by the difference.
    assert_eq!(window, Some(1048576 - 65535));
}

#[tokio::test]
async fn codec_type_http1_does_not_speak_h2c() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["codec_type"] = json!("HTTP1");
    let p = Proxy::start(&cfg);
    let out = raw(p.addr("http"), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 4"), "answered h2c: {out:?}");
    assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.status, 200);
    assert_eq!(b.requests(), 1);
}

#[tokio::test]
async fn use_downstream_protocol_config_follows_the_clients_protocol() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    cfg["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS_TYPE, "use_downstream_protocol_config": {}}});
    let p = Proxy::start(&cfg);
    assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.json()["version"], "HTTP/1.1");
    assert_eq!(send_h2(p.addr("http"), get("x", "/", &[])).await.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn upstream_idle_timeout_closes_pooled_connections() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    cfg["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": HTTP_OPTIONS_TYPE, "common_http_protocol_options": {"idle_timeout": "0.2s"},
            "explicit_http_config": {"http_protocol_options": {}}}});
    let p = Proxy::start(&cfg);
    let mut conn = H1Conn::open(p.addr("http")).await;
    assert_eq!(conn.send(get("x", "/", &[])).await.status, 200);
    // Idle for longer than the timeout: the pooled upstream connection is gone, the next
    // request opens another (the default idle timeout, 1 h, would reuse it).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(conn.send(get("x", "/", &[])).await.status, 200);
    assert_eq!(b.connections(), 2);
}

#[tokio::test]
async fn max_headers_count_limits_the_request_headers() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["common_http_protocol_options"] = json!({"max_headers_count": 20});
    let p = Proxy::start(&cfg);
    let with = |n: usize| {
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..n {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req + "Connection: close\r\n\r\n"
    };
    assert_eq!(raw_status(&raw(p.addr("http"), with(40).as_bytes()).await), Some(431));
    assert_eq!(b.requests(), 0);
    assert_eq!(raw_status(&raw(p.addr("http"), with(5).as_bytes()).await), Some(200));
}

#[tokio::test]
async fn request_headers_timeout_drops_a_request_whose_headers_never_end() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["request_headers_timeout"] = json!("0.3s");
    let p = Proxy::start(&cfg);
    let mut s = tokio::net::TcpStream::connect(p.addr("http")).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // Without the timeout the proxy would wait for the rest for ever.
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open");
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn request_headers_timeout_does_not_cut_the_answer_to_a_request_followed_by_more_bytes() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["request_headers_timeout"] = json!("0.3s");
    let p = Proxy::start(&cfg);
    // A stray CRLF after a body (RFC 9112 2.2 says to tolerate it), and the start of a pipelined
    // head: neither is a head the client is late with while the slow answer is being made.
    let slow = "POST /slow HTTP/1.1\r\nHost: x\r\nx-delay-ms: 1500\r\nContent-Length: 2\r\n\r\nok";
    for after in ["\r\n", "GET /next HTTP/1.1\r\nHost"] {
        let out = raw(p.addr("http"), format!("{slow}{after}").as_bytes()).await;
        assert_eq!(raw_status(&out), Some(200), "{after:?}: {out}");
    }
}

#[tokio::test]
async fn tcp_proxy_weighted_clusters_spread_connections() {
    let (a, b) = (TcpServer::start(TcpMode::Greet("a")), TcpServer::start(TcpMode::Greet("b")));
    let mut chain = tcp_chain("w", "unused");
    let tp = &mut chain["filters"][0]["typed_config"];
    tp.as_object_mut().unwrap().remove("cluster");
    tp["weighted_clusters"] = json!({"clusters": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]});
    let p = Proxy::start(&bootstrap(
        vec![listener("tcp", "127.0.0.1", vec![chain])],
        vec![cluster("a", &[a.addr]), cluster("b", &[b.addr])],
    ));
    let mut seen = std::collections::HashSet::new();
    // Both halves get some of 64 connections (each is missed with probability 2^-64).
    for _ in 0..64 {
        seen.insert(tcp_exchange(p.addr("tcp"), b"").await);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn tcp_proxy_idle_timeout_closes_an_idle_connection() {
    let echo = TcpServer::start(TcpMode::Echo);
    let mut chain = tcp_chain("idle", "up");
    chain["filters"][0]["typed_config"]["idle_timeout"] = json!("0.3s");
    let p =
        Proxy::start(&bootstrap(vec![listener("tcp", "127.0.0.1", vec![chain])], vec![cluster("up", &[echo.addr])]));
    let mut s = tokio::net::TcpStream::connect(p.addr("tcp")).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    // Then silence on both sides: the proxy closes (the default is one hour).
    let closed = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection still open");
}

#[tokio::test]
async fn tcp_proxy_stat_prefix_keys_its_stats() {
    let greet = TcpServer::start(TcpMode::Greet("hi"));
    let p = Proxy::start(&bootstrap(
        vec![listener("tcp", "127.0.0.1", vec![tcp_chain("db_out", "up")])],
        vec![cluster("up", &[greet.addr])],
    ));
    assert_eq!(tcp_exchange(p.addr("tcp"), b"").await, b"hi");
    let series = "envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"db_out\"}";
    eventually(series, WAIT, || (p.metric(series) == 1.0).then_some(())).await;
}

#[tokio::test]
async fn file_access_log_writes_to_its_path() {
    let b = Backend::start("app");
    let path = temp_dir().join("access.log");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["access_log"] = json!([{"name": "file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path.to_str().unwrap()}}]);
    let p = Proxy::start(&cfg);
    assert_eq!(get_h1(p.addr("http"), "x", "/logged", &[]).await.status, 200);
    let line = eventually("a line in the access log file", WAIT, || {
        std::fs::read_to_string(&path).ok().and_then(|s| s.lines().find(|l| l.contains("/logged")).map(str::to_string))
    })
    .await;
    let entry: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["response_code"], 200);
    assert!(p.access_logs().is_empty(), "the file logger also wrote to stdout");
}

#[tokio::test]
async fn connect_timeout_bounds_the_upstream_connect() {
    // A listener whose accept queue is full: the kernel drops further SYNs, so connecting hangs.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    full.listen(0).unwrap();
    let addr = full.local_addr().unwrap().as_socket().unwrap();
    let _fillers: Vec<_> =
        (0..3).filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()).collect();
    let mut c = cluster("stuck", &[addr]);
    c["connect_timeout"] = json!("0.25s");
    let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster": "stuck", "timeout": "3s"}}]);
    let p = Proxy::start(&bootstrap(vec![one_vhost("http", routes)], vec![c]));
    // With the default 5 s connect timeout the 3 s route timeout would answer 504 first.
    let r = get_h1(p.addr("http"), "x", "/", &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(p.metric("envoy_cluster_upstream_cx_connect_timeout_total{envoy_cluster_name=\"stuck\"}"), 1.0);
}

#[tokio::test]
async fn ipv4_compat_lets_an_ipv6_any_listener_take_ipv4() {
    let greet = TcpServer::start(TcpMode::Greet("hi"));
    let mut dual = listener("dual", "::", vec![tcp_chain("dual", "greet")]);
    dual["address"]["socket_address"]["ipv4_compat"] = json!(true);
    let v6only = listener("v6only", "::", vec![tcp_chain("v6only", "greet")]);
    let p = Proxy::start(&bootstrap(vec![dual, v6only], vec![cluster("greet", &[greet.addr])]));
    let v4 = |l: &str| std::net::SocketAddr::from(([127, 0, 0, 1], p.addr(l).port()));
    assert_eq!(tcp_exchange(v4("dual"), b"").await, b"hi");
    assert!(tokio::net::TcpStream::connect(v4("v6only")).await.is_err(), "an IPv6-only listener took IPv4");
}

#[tokio::test]
async fn upgrade_config_enabled_false_turns_the_upgrade_off() {
    let b = Backend::start("app");
    let mut cfg = simple(&[b.addr]);
    first_filter(&mut cfg, 0)["upgrade_configs"] = json!([{"upgrade_type": "websocket", "enabled": false}]);
    let p = Proxy::start(&cfg);
    let req = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(raw_status(&raw(p.addr("http"), req).await), Some(403));
    assert_eq!(b.requests(), 0);
}
