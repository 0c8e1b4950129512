//! The mesh end to end: outrigger-xds reads Istio YAML from a directory; sidecars (outrigger in
//! sidecar mode) get their config from it; a client's traffic is captured by a real iptables
//! REDIRECT in a network namespace and routed by original destination, as in a pod.
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use outrigger_tests::backend::TcpMode;
use outrigger_tests::client::{get_h1, tcp_exchange};
use outrigger_tests::netns::NetNs;
use outrigger_tests::proxy::temp_dir;
use outrigger_tests::xds::ControlPlane;
use outrigger_tests::{Backend, Proxy, TcpServer, WAIT};
use serde_json::Value;

/// The sidecar's uid (Istio's 1337): capture never redirects its own connections.
const PROXY_UID: u32 = 1337;

const SERVICE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  addresses: [10.99.0.10]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints:
  - { address: 127.0.0.11, labels: { app: reviews, version: v1 } }
  - { address: 127.0.0.12, labels: { app: reviews, version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
";

fn virtual_service(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: reviews, namespace: bookinfo }}
spec:
  hosts: [reviews]
  http:
  - route:
    - {{ destination: {{ host: reviews, subset: v1 }}, weight: {v1} }}
    - {{ destination: {{ host: reviews, subset: v2 }}, weight: {v2} }}
"
    )
}

/// Writes a file so the watcher sees one complete change (write elsewhere, then rename).
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start_control_plane(ns: &NetNs, dir: &Path) -> ControlPlane {
    let dir = dir.to_path_buf();
    ns.enter(move || ControlPlane::start_on(&dir, 15010, 15014))
}

fn sidecar(ns: &NetNs, pod: &str, namespace: &str, ip: &str, labels: &str, delta: bool) -> Arc<Proxy> {
    let (pod, namespace, ip, labels) = (pod.to_string(), namespace.to_string(), ip.to_string(), labels.to_string());
    ns.enter(move || {
        Arc::new(Proxy::start_args_as(
            &[
                "sidecar",
                if delta { "--delta" } else { "--log-level=info" },
                "--xds-address",
                "http://127.0.0.1:15010",
                "--admin-port",
                "0",
                "--health-address",
                "127.0.0.1:0",
                "--prometheus-address",
                "127.0.0.1:0",
            ],
            &[("POD_NAME", &pod), ("POD_NAMESPACE", &namespace), ("INSTANCE_IP", &ip), ("WORKLOAD_LABELS", &labels)],
            Some(PROXY_UID),
        ))
    })
}

/// Sends `n` requests to the service VIP from inside the namespace (captured by iptables); returns
/// the backend that answered each, or None for a failed request.
fn requests(ns: &NetNs, n: usize) -> Vec<Option<String>> {
    ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let vip: SocketAddr = "10.99.0.10:9080".parse().unwrap();
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let r = get_h1(vip, "reviews", "/", &[]).await;
                out.push((r.status == 200).then(|| r.json()["backend"].as_str().unwrap_or_default().to_string()));
            }
            out
        })
    })
}

fn syncz(ns: &NetNs) -> Value {
    ns.enter(|| {
        let (_, body) = outrigger_tests::proxy::http_request(([127, 0, 0, 1], 15014).into(), "GET", "/debug/syncz")
            .expect("GET /debug/syncz");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    })
}

#[test]
fn control_plane_configures_sidecars_and_routes_captured_traffic() {
    let ns = NetNs::new("mesh");
    // Capture: connections to service VIPs go to the sidecar's outbound port, as outrigger-init
    // will set it up (only the VIP range here, so the proxy's own upstream traffic passes).
    ns.exec(&["ip", "route", "add", "local", "10.99.0.0/24", "dev", "lo"]);
    // Capture as outrigger-init will: TCP to the service range goes to the sidecar's outbound port,
    // except the sidecar's own traffic (its uid), so passthrough reaches the real destination.
    let uid = PROXY_UID.to_string();
    ns.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        "10.99.0.0/24",
        "-m",
        "owner",
        "!",
        "--uid-owner",
        &uid,
        "-j",
        "REDIRECT",
        "--to-ports",
        "15001",
    ]);
    let (_v1, _v2) = ns.enter(|| {
        (
            Backend::start_on("v1", "127.0.0.11:9080".parse().unwrap()),
            Backend::start_on("v2", "127.0.0.12:9080".parse().unwrap()),
        )
    });
    let dir = temp_dir();
    std::fs::write(dir.join("reviews.yaml"), SERVICE).unwrap();
    let vs = dir.join("vs.yaml");
    write_atomic(&vs, &virtual_service(100, 0));
    let mut cp = start_control_plane(&ns, &dir);
    // The sidecar that carries the traffic speaks incremental xDS; the other state of the world.
    let _a = sidecar(&ns, "productpage-v1", "bookinfo", "127.0.0.1", "app=productpage", true);
    let _b = sidecar(&ns, "ratings-v1", "other", "127.0.0.2", "app=ratings", false);

    assert!(requests(&ns, 10).iter().all(|b| b.as_deref() == Some("v1")));
    // A destination no service matches passes through to where it was going (ALLOW_ANY).
    let echo = ns.enter(|| TcpServer::start_on(TcpMode::Echo, "10.99.0.99:7000".parse().unwrap()));
    let echoed = ns.enter(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(tcp_exchange("10.99.0.99:7000".parse().unwrap(), b"passthrough"))
    });
    assert_eq!(echoed, b"passthrough");
    assert_eq!(echo.connections(), 1);
    // ...through the sidecar, not around it.
    let a = _a.clone();
    let passed = ns.enter(move || a.metric("envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"PassthroughCluster\"}"));
    assert_eq!(passed, 1.0);
    // Both sidecars connected and ACKed every type (an ACK follows the apply, so poll briefly).
    let deadline = Instant::now() + WAIT;
    loop {
        let s = syncz(&ns);
        let proxies = s["proxies"].as_array().cloned().unwrap_or_default();
        let all_acked = proxies.len() == 2
            && proxies.iter().all(|p| {
                p["acked"].as_object().is_some_and(|a| a.len() == 4)
                    && p["nacked"].as_object().is_some_and(|n| n.is_empty())
            });
        if all_acked {
            assert!(proxies
                .iter()
                .any(|p| p["id"] == "sidecar~127.0.0.1~productpage-v1.bookinfo~bookinfo.svc.cluster.local"));
            break;
        }
        assert!(Instant::now() < deadline, "sidecars did not ACK everything: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Shift the weight by editing the file: traffic follows within a second, nothing fails.
    write_atomic(&vs, &virtual_service(0, 100));
    let written = Instant::now();
    let mut shifted = None;
    while written.elapsed() < Duration::from_secs(10) {
        let got = requests(&ns, 5);
        assert!(got.iter().all(Option::is_some), "a request failed during the shift: {got:?}");
        if got.iter().all(|b| b.as_deref() == Some("v2")) {
            shifted = Some(written.elapsed());
            break;
        }
    }
    let shifted = shifted.expect("traffic never shifted to v2");
    assert!(shifted < Duration::from_secs(1), "shift took {shifted:?}");

    // A broken document is reported and the last good config keeps serving.
    write_atomic(&dir.join("broken.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: x }\nspec: { hosts: [x], tcpp: [] }\n");
    let deadline = Instant::now() + WAIT;
    loop {
        let s = syncz(&ns);
        if s["config_errors"].as_array().is_some_and(|e| {
            e.iter().any(|e| e.as_str().is_some_and(|e| e.contains("broken.yaml") && e.contains("tcpp")))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "broken document not reported: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(requests(&ns, 5).iter().all(|b| b.as_deref() == Some("v2")));

    // The control plane goes away and comes back: no request fails meanwhile.
    drop(cp);
    assert!(requests(&ns, 10).iter().all(|b| b.as_deref() == Some("v2")));
    std::fs::remove_file(dir.join("broken.yaml")).unwrap();
    cp = start_control_plane(&ns, &dir);
    let deadline = Instant::now() + WAIT;
    while syncz(&ns)["proxies"].as_array().map(|p| p.len()).unwrap_or(0) < 2 {
        assert!(requests(&ns, 2).iter().all(|b| b.as_deref() == Some("v2")));
        assert!(Instant::now() < deadline, "sidecars did not reconnect");
    }
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}
