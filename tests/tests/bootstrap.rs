//! Loading the bootstrap: YAML and JSON files, IPv4 and IPv6 listeners, `--concurrency`, the
//! shipped examples and the embedded default.
use outrigger_tests::client::{get, get_h1, send_h2};
use outrigger_tests::config::*;
use outrigger_tests::proxy::run_to_exit;
use outrigger_tests::{eventually, Backend, Proxy, WAIT};
use serde_json::json;

#[tokio::test]
async fn json_bootstrap_proxies_http1_and_h2c_to_backend() {
    let b = Backend::start("app");
    let p = Proxy::start(&simple(&[b.addr]));
    let r = get_h1(p.addr("http"), "example.com", "/hello?x=1", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/hello?x=1");
    assert_eq!(r.json()["backend"], "app");
    let r = send_h2(p.addr("http"), get("example.com", "/h2", &[])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/h2");
    assert_eq!(b.requests(), 2);
}

#[tokio::test]
async fn yaml_bootstrap_with_durations_and_any_types_loads() {
    let b = Backend::start("yaml-app");
    let yaml = format!(
        r#"# A bootstrap in YAML, as Envoy users write it.
node: {{ id: yaml-test, cluster: e2e }}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: 0 }}
static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: {{ address: 127.0.0.1, port_value: 0 }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          max_request_headers_kb: 60
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ path: /healthz }}
                direct_response: {{ status: 200, body: {{ inline_string: "healthy\n" }} }}
              - match: {{ prefix: / }}
                route: {{ cluster: app, timeout: 5s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 0.5s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"#,
        port = b.addr.port()
    );
    let p = Proxy::start_file("bootstrap.yaml", &yaml, &[]);
    let r = get_h1(p.addr("ingress"), "a.test", "/healthz", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "healthy\n"));
    let r = get_h1(p.addr("ingress"), "a.test", "/app", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["backend"], "yaml-app");
}

#[tokio::test]
async fn ipv6_loopback_listener_and_endpoint_work() {
    let v4 = Backend::start("v4");
    let v6 = Backend::start_on("v6", "[::1]:0".parse().unwrap());
    let mut cfg = bootstrap(
        vec![
            listener("v6", "::1", vec![hcm_chain(hcm("v6", json!([vhost("all", &["*"], json!([route("/", "v4")]))])))]),
            http_listener("v4", json!([vhost("all", &["*"], json!([route("/", "v6")]))])),
        ],
        vec![cluster("v4", &[v4.addr]), cluster("v6", &[v6.addr])],
    );
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["ipv4_compat"] = json!(false);
    let p = Proxy::start(&cfg);
    let a6 = p.addr("v6");
    assert!(a6.is_ipv6(), "{a6}");
    let r = get_h1(a6, "x", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["backend"], "v4");
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
    // An IPv4 listener reaching an IPv6 endpoint.
    let r = get_h1(p.addr("v4"), "x", "/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["backend"], "v6");
}

#[tokio::test]
async fn concurrency_flag_sets_the_number_of_worker_threads() {
    let b = Backend::start("app");
    for n in [1usize, 2] {
        let arg = format!("--concurrency={n}");
        let cfg = serde_json::to_string(&simple(&[b.addr])).unwrap();
        let p = Proxy::start_file("bootstrap.json", &cfg, &[&arg]);
        // A thread takes its name once it runs (until then /proc shows the process's), which
        // may be just after the proxy is ready: wait for the names, bounded.
        let workers = || p.thread_names().into_iter().filter(|t| t.starts_with("worker-")).count();
        eventually(&format!("exactly {n} threads named worker-*"), WAIT, || (workers() == n).then_some(())).await;
        let (_, info) = p.admin_get("/server_info");
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["command_line_options"]["concurrency"], n);
        // The whole data path works on that many threads.
        for _ in 0..4 {
            assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.status, 200);
        }
    }
}

#[test]
fn every_shipped_example_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("examples/") {
        let path = e.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "yaml" | "yml" | "json") {
            continue;
        }
        let out = run_to_exit("", "", &["-c", path.to_str().unwrap(), "--mode", "validate"]);
        assert!(out.status.success(), "{} does not validate: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        n += 1;
    }
    assert!(n >= 1, "no examples found in {}", dir.display());
}

#[test]
fn embedded_default_config_validates() {
    let out = run_to_exit("", "", &["--mode", "validate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}
