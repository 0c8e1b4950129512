//! Control-plane scale: a registry of 10,000 services x 3 endpoints. Measures, in one run:
//!   * the time from outrigger-xds starting (reading the directory) until a real outrigger
//!     sidecar has ACKed the full configuration and is ready,
//!   * the control plane's RSS and the proxy's RSS with the full config,
//!   * the time for one service's endpoint change to reach 100 simulated ADS clients,
//!   * the time from a VirtualService weight change (file renamed into place) until a real proxy
//!     holding the full configuration sends the traffic to the new subset.
//!
//! Targets (issue 4): full config in the proxy < 1 s and < 60 MB RSS; the change at all 100
//! clients < 100 ms. Traffic shift < 1 s (the figure tests/tests/mesh.rs used to assert, and no
//! longer does: a timing is a benchmark's figure, not a test's). Release binaries are used (`cargo build --release --workspace` first).
//!
//! Run: `cargo bench -p outrigger-benches --bench xds_scale` (SERVICES and CLIENTS to change the
//! sizes). Only 127.0.0.1 is used; every wait is bounded.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use outrigger_api::type_url::{CLUSTER as CDS, ENDPOINT as EDS};
use outrigger_tests::proxy::{http_request, http_request_to};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn release_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("release").join(name);
    assert!(p.is_file(), "{} missing: run `cargo build --release --workspace` first", p.display());
    p
}

fn service(i: usize, last_octet_base: usize) -> String {
    let (a, b) = (i / 250, i % 250);
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: svc-{i}, namespace: scale }}\nspec:\n  hosts: [svc-{i}.scale.svc.cluster.local]\n  ports: [{{ number: 8080, name: http, protocol: HTTP }}]\n  resolution: STATIC\n  endpoints:\n  - {{ address: 10.{a}.{b}.{} }}\n  - {{ address: 10.{a}.{b}.{} }}\n  - {{ address: 10.{a}.{b}.{} }}\n",
        last_octet_base + 1,
        last_octet_base + 2,
        last_octet_base + 3
    )
}

fn write_registry(dir: &Path, services: usize) {
    for chunk in 0..services.div_ceil(1000) {
        let docs: Vec<String> = (chunk * 1000..((chunk + 1) * 1000).min(services)).map(|i| service(i, 0)).collect();
        std::fs::write(dir.join(format!("services-{chunk:03}.yaml")), docs.join("---\n")).unwrap();
    }
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// The service whose traffic shifts: two subsets on two local HTTP backends, and the
/// VirtualService that weighs them.
fn shift_service(v1_port: u16, v2_port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: shift, namespace: scale }}\nspec:\n  hosts: [shift.scale.svc.cluster.local]\n  ports: [{{ number: 8080, name: http, protocol: HTTP }}]\n  resolution: STATIC\n  endpoints:\n  - {{ address: 127.0.0.1, ports: {{ http: {v1_port} }}, labels: {{ version: v1 }} }}\n  - {{ address: 127.0.0.1, ports: {{ http: {v2_port} }}, labels: {{ version: v2 }} }}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: shift, namespace: scale }}\nspec:\n  host: shift.scale.svc.cluster.local\n  subsets: [{{ name: v1, labels: {{ version: v1 }} }}, {{ name: v2, labels: {{ version: v2 }} }}]\n"
    )
}

fn shift_weights(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: shift, namespace: scale }}\nspec:\n  hosts: [shift.scale.svc.cluster.local]\n  http:\n  - route:\n    - {{ destination: {{ host: shift.scale.svc.cluster.local, subset: v1 }}, weight: {v1} }}\n    - {{ destination: {{ host: shift.scale.svc.cluster.local, subset: v2 }}, weight: {v2} }}\n"
    )
}

/// A proxy with one static listener whose routes (RDS `8080`) and clusters come from the control
/// plane: the outbound HTTP path of a sidecar, without the traffic capture a sidecar needs.
fn rds_bootstrap(xds_port: u16, listen_port: u16) -> serde_json::Value {
    serde_json::json!({
        "node": {"id": "sidecar~127.0.0.1~shift-bench.scale~scale.svc.cluster.local", "cluster": "bench"},
        "static_resources": {
            "listeners": [{
                "name": "outbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "outbound",
                    "rds": {"route_config_name": "8080", "config_source": {"ads": {}, "resource_api_version": "V3"}},
                    "http_filters": [{"name": "router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }}]}],
            }],
            "clusters": [{
                "name": "xds",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {"cluster_name": "xds", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": xds_port}}}}]}]},
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }},
            }],
        },
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}]},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
    })
}

/// The backend that answered a GET for the shifting service through the proxy, if any.
fn shift_backend(listen_port: u16) -> Option<String> {
    let addr = ([127, 0, 0, 1], listen_port).into();
    match http_request_to(addr, "GET", "shift.scale.svc.cluster.local", "/") {
        Ok((200, body)) => {
            serde_json::from_str::<serde_json::Value>(&body).ok()?["backend"].as_str().map(str::to_string)
        }
        _ => None,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs benches with --test: skip the heavy work then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let services = env_usize("SERVICES", 10_000);
    let clients = env_usize("CLIENTS", 100);
    let dir = std::env::temp_dir().join(format!("outrigger-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_registry(&dir, services);
    // The tests' echo backends: each names itself in `x-backend` (and its JSON body).
    let (v1, v2) = (outrigger_tests::Backend::start("v1"), outrigger_tests::Backend::start("v2"));
    std::fs::write(dir.join("shift.yaml"), shift_service(v1.addr.port(), v2.addr.port())).unwrap();
    std::fs::write(dir.join("shift-vs.yaml"), shift_weights(100, 0)).unwrap();
    let (xds_port, monitor_port) = (free_port(), free_port());

    // 1. Control plane start → a real sidecar ACKs everything and is ready.
    // The control plane's own timings (load, generation, reload) go to a log next to the report.
    let cp_log = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xds-scale-cp.log");
    let t0 = Instant::now();
    let cp = Killed(
        Command::new(release_bin("outrigger-xds"))
            .args(["serve", "--config-dir"])
            .arg(&dir)
            .args([
                "--xds-port",
                &xds_port.to_string(),
                "--monitor-port",
                &monitor_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .env("RUST_LOG", "info,outrigger_xds=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&cp_log).map(Stdio::from).unwrap_or(Stdio::null()))
            .spawn()
            .unwrap(),
    );
    let admin_file = dir.join("admin");
    let health = free_port();
    let proxy = Killed(
        Command::new(release_bin("outrigger"))
            .args(["sidecar", "--xds-address", &format!("http://127.0.0.1:{xds_port}"), "--admin-port", "0"])
            .args(["--health-address", &format!("127.0.0.1:{health}"), "--prometheus-address", "127.0.0.1:0"])
            .args(["--concurrency", "1", "--log-level", "warn", "--admin-address-path"])
            .arg(&admin_file)
            .envs([("POD_NAMESPACE", "scale"), ("INSTANCE_IP", "127.0.0.1"), ("POD_NAME", "bench")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while http_request(([127, 0, 0, 1], health).into(), "GET", "/healthz/ready").ok().map(|r| r.0) != Some(200) {
        assert!(Instant::now() < deadline, "the sidecar was not ready within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let full_config = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (cp_rss, proxy_rss) = (rss_mib(cp.0.id()), rss_mib(proxy.0.id()));

    // 2. 100 simulated ADS clients; one service's endpoints change; time until all have it.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (push_all, client_ready) = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant, bool)>();
        let target = format!("outbound|8080||svc-{}.scale.svc.cluster.local", services / 2);
        for c in 0..clients {
            let (tx, target) = (tx.clone(), target.clone());
            tokio::spawn(async move {
                let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds_port}"))
                    .await
                    .unwrap()
                    .max_decoding_message_size(256 << 20);
                let node = Node {
                    id: format!("sidecar~10.9.0.{c}~sim-{c}.scale~scale.svc.cluster.local"),
                    ..Default::default()
                };
                let (rtx, rrx) = tokio::sync::mpsc::unbounded_channel();
                rtx.send(DiscoveryRequest {
                    node: Some(node.clone()),
                    type_url: EDS.into(),
                    resource_names: vec![target.clone()],
                    ..Default::default()
                })
                .unwrap();
                let mut stream = client
                    .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rrx))
                    .await
                    .unwrap()
                    .into_inner();
                let mut first = true;
                while let Ok(Some(r)) = stream.message().await {
                    rtx.send(DiscoveryRequest {
                        node: Some(node.clone()),
                        type_url: r.type_url.clone(),
                        version_info: r.version_info.clone(),
                        response_nonce: r.nonce.clone(),
                        resource_names: vec![target.clone()],
                        ..Default::default()
                    })
                    .unwrap();
                    let _ = tx.send((c, Instant::now(), first));
                    first = false;
                }
            });
        }
        let start = Instant::now();
        let mut ready = 0;
        while ready < clients {
            let (_, _, first) =
                tokio::time::timeout(Duration::from_secs(300), rx.recv()).await.expect("clients").unwrap();
            if first {
                ready += 1;
            }
        }
        let client_ready = start.elapsed();
        // The change: svc-N/2 gets new endpoint addresses.
        let chunk = (services / 2) / 1000;
        let docs: Vec<String> = (chunk * 1000..((chunk + 1) * 1000).min(services))
            .map(|i| if i == services / 2 { service(i, 100) } else { service(i, 0) })
            .collect();
        let tmp = dir.join("tmp.swap");
        std::fs::write(&tmp, docs.join("---\n")).unwrap();
        let changed = Instant::now();
        std::fs::rename(&tmp, dir.join(format!("services-{chunk:03}.yaml"))).unwrap();
        let mut got = std::collections::HashSet::new();
        let mut last = changed;
        while got.len() < clients {
            let (c, at, _) = tokio::time::timeout(Duration::from_secs(300), rx.recv()).await.expect("updates").unwrap();
            got.insert(c);
            last = at;
        }
        (last - changed, client_ready)
    });
    let _ = CDS;

    // 3. A weight change → a real proxy with the full configuration sends traffic to v2.
    let listen_port = free_port();
    let boot = dir.join("shift-bootstrap.json");
    std::fs::write(&boot, serde_json::to_vec(&rds_bootstrap(xds_port, listen_port)).unwrap()).unwrap();
    let router = Killed(
        Command::new(release_bin("outrigger"))
            .arg("-c")
            .arg(&boot)
            .args(["--concurrency", "1", "--log-level", "warn", "--admin-address-path"])
            .arg(dir.join("shift-admin"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while shift_backend(listen_port).as_deref() != Some("v1") {
        assert!(Instant::now() < deadline, "the proxy did not route to v1 within 120 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let tmp = dir.join("tmp.swap");
    std::fs::write(&tmp, shift_weights(0, 100)).unwrap();
    let changed = Instant::now();
    std::fs::rename(&tmp, dir.join("shift-vs.yaml")).unwrap();
    let deadline = changed + Duration::from_secs(120);
    while shift_backend(listen_port).as_deref() != Some("v2") {
        assert!(Instant::now() < deadline, "traffic did not shift to v2 within 120 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    let shift = changed.elapsed();
    drop(router);
    let debounce = outrigger_xds::server::watch::DEBOUNCE;
    let report = serde_json::json!({
        "services": services,
        "endpoints_per_service": 3,
        "full_config_to_ready_ms": full_config.as_millis(),
        "control_plane_rss_mib": cp_rss,
        "proxy_rss_mib": proxy_rss,
        "simulated_clients": clients,
        "clients_initial_config_ms": client_ready.as_millis(),
        "endpoint_change_to_all_clients_ms": push_all.as_millis(),
        "of_which_watch_debounce_ms": debounce.as_millis(),
        "route_change_to_shifted_traffic_ms": shift.as_millis(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    println!(
        "targets: full config < 1000 ms: {} ({} ms); proxy RSS < 60 MB: {} ({:.1} MiB); change at {clients} clients < 100 ms: {} ({} ms); traffic shift < 1000 ms: {} ({} ms)",
        full_config < Duration::from_secs(1),
        full_config.as_millis(),
        proxy_rss * 1.048576 < 60.0,
        proxy_rss,
        push_all < Duration::from_millis(100),
        push_all.as_millis(),
        shift < Duration::from_secs(1),
        shift.as_millis()
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/xds-scale.json");
    let _ = std::fs::write(&out, serde_json::to_vec_pretty(&report).unwrap());
    drop(proxy);
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
