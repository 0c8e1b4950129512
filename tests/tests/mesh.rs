//! The mesh end to end: outrigger-xds reads Istio YAML from a directory; sidecars (outrigger in
//! sidecar mode) get their config from it; a client's traffic is captured by a real iptables
//! REDIRECT in a network namespace and routed by original destination, as in a pod.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use outrigger_tests::backend::TcpMode;
use outrigger_tests::client::{get, get_h1, send_h1_from, try_tcp_exchange_from};
use outrigger_tests::mesh::{start_control_plane, syncz, write_atomic, Mesh, POD_A, POD_B, REVIEWS};
use outrigger_tests::netns::NetNs;
use outrigger_tests::{Backend, TcpServer, WAIT};

/// How long a configuration change may take to reach the traffic before a test fails: generous
/// for a loaded machine. How long it takes is the xds_scale benchmark's figure, not a test's.
const SHIFT_WAIT: Duration = Duration::from_secs(30);

/// A TCP service with two subsets, and a tcp route splitting its port between them.
const DB: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db, namespace: bookinfo }
spec:
  hosts: [db.bookinfo.svc.cluster.local]
  addresses: [10.99.0.20]
  ports: [{ number: 7100, name: tcp-db, protocol: TCP }]
  resolution: STATIC
  endpoints:
  - { address: 127.0.0.21, labels: { version: v1 } }
  - { address: 127.0.0.22, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: db, namespace: bookinfo }
spec:
  host: db
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: db, namespace: bookinfo }
spec:
  hosts: [db]
  tcp:
  - match: [{ port: 7100 }]
    route:
    - { destination: { host: db, subset: v1 }, weight: 50 }
    - { destination: { host: db, subset: v2 }, weight: 50 }
";

/// Namespace `other` allows only what the registry knows.
const REGISTRY_ONLY: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: other }
spec: { outboundTrafficPolicy: { mode: REGISTRY_ONLY } }
";

/// The reviews service's two subsets.
const SUBSETS: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  subsets:
  - { name: v1, labels: { version: v1 } }
  - { name: v2, labels: { version: v2 } }
";

/// The reviews service (outrigger_tests::mesh::REVIEWS) with its subsets.
fn service() -> String {
    format!("{REVIEWS}---\n{SUBSETS}")
}

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

#[test]
fn control_plane_configures_sidecars_and_routes_captured_traffic() {
    let mut mesh = Mesh::start(&[("reviews.yaml", &service()), ("vs.yaml", &virtual_service(100, 0))]);
    let (ns, dir) = (&mesh.ns, mesh.dir.clone());
    let _backends = ns.enter(|| {
        (
            Backend::start_on("v1", "127.0.0.11:9080".parse().unwrap()),
            Backend::start_on("v2", "127.0.0.12:9080".parse().unwrap()),
        )
    });
    assert!(requests(ns, 10).iter().all(|b| b.as_deref() == Some("v1")));

    // Shift the weight by editing the file: traffic follows, and nothing fails meanwhile.
    write_atomic(&dir.join("vs.yaml"), &virtual_service(0, 100));
    let deadline = Instant::now() + SHIFT_WAIT;
    loop {
        let got = requests(ns, 5);
        assert!(got.iter().all(Option::is_some), "a request failed during the shift: {got:?}");
        if got.iter().all(|b| b.as_deref() == Some("v2")) {
            break;
        }
        assert!(Instant::now() < deadline, "traffic did not shift to v2 within {SHIFT_WAIT:?}: {got:?}");
    }

    // A broken document is reported and the last good config keeps serving.
    write_atomic(&dir.join("broken.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: x }\nspec: { hosts: [x], tcpp: [] }\n");
    let deadline = Instant::now() + WAIT;
    loop {
        let s = syncz(ns);
        if s["config_errors"].as_array().is_some_and(|e| {
            e.iter().any(|e| e.as_str().is_some_and(|e| e.contains("broken.yaml") && e.contains("tcpp")))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "broken document not reported: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(requests(ns, 5).iter().all(|b| b.as_deref() == Some("v2")));

    // The control plane goes away and comes back: no request fails meanwhile.
    drop(mesh.cp.take());
    assert!(requests(&mesh.ns, 10).iter().all(|b| b.as_deref() == Some("v2")));
    std::fs::remove_file(dir.join("broken.yaml")).unwrap();
    mesh.cp = Some(start_control_plane(&mesh.ns, &dir));
    let deadline = Instant::now() + WAIT;
    while syncz(&mesh.ns)["proxies"].as_array().map(|p| p.len()).unwrap_or(0) < 2 {
        assert!(requests(&mesh.ns, 2).iter().all(|b| b.as_deref() == Some("v2")));
        assert!(Instant::now() < deadline, "sidecars did not reconnect");
    }
}

#[test]
fn tcp_route_spreads_captured_connections_over_weighted_subsets() {
    let mesh = Mesh::start(&[("reviews.yaml", &service()), ("db.yaml", DB)]);
    let (v1, v2) = mesh.ns.enter(|| {
        (
            TcpServer::start_on(TcpMode::Echo, "127.0.0.21:7100".parse().unwrap()),
            TcpServer::start_on(TcpMode::Echo, "127.0.0.22:7100".parse().unwrap()),
        )
    });
    let n = 40;
    let echoed = mesh.block_on(move || async move {
        let mut ok = 0;
        for i in 0..n {
            let msg = format!("conn {i}");
            let back = try_tcp_exchange_from(None, "10.99.0.20:7100".parse().unwrap(), msg.as_bytes()).await;
            ok += usize::from(back.is_ok_and(|b| b == msg.as_bytes()));
        }
        ok
    });
    assert_eq!(echoed, n, "every connection reaches a subset and is echoed");
    assert_eq!(v1.connections() + v2.connections(), n);
    // 50/50: each subset gets some of 40 connections (all on one side: odds of 2 in 2^40).
    assert!(v1.connections() > 0 && v2.connections() > 0, "v1 {} v2 {}", v1.connections(), v2.connections());
    // Through the sidecar's weighted tcp_proxy, not the service's own cluster.
    let a = mesh.a.clone();
    let routed = mesh.ns.enter(move || a.metric("envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"db.bookinfo\"}"));
    assert_eq!(routed, n as f64);
}

#[test]
fn registry_only_black_holes_unknown_destinations_and_allow_any_passes_them_through() {
    let mesh = Mesh::start(&[("reviews.yaml", &service()), ("other.yaml", REGISTRY_ONLY)]);
    // Destinations no service declares: a TCP port no service has, and an HTTP port one has
    // (9080) but with a Host none has.
    let (echo, outside) = mesh.ns.enter(|| {
        (
            TcpServer::start_on(TcpMode::Echo, "10.99.0.99:7000".parse().unwrap()),
            Backend::start_on("outside", "10.99.0.98:9080".parse().unwrap()),
        )
    });
    let from = |pod: &str| Some(pod.parse::<IpAddr>().unwrap());
    let (a, b) = (from(POD_A), from(POD_B));
    let (tcp_a, tcp_b, http_a, http_b) = mesh.block_on(move || async move {
        let tcp = "10.99.0.99:7000".parse().unwrap();
        let http: SocketAddr = "10.99.0.98:9080".parse().unwrap();
        (
            try_tcp_exchange_from(a, tcp, b"passthrough").await.ok(),
            try_tcp_exchange_from(b, tcp, b"blocked").await.ok(),
            send_h1_from(a, http, get("unknown.example", "/", &[])).await,
            send_h1_from(b, http, get("unknown.example", "/", &[])).await,
        )
    });
    // ALLOW_ANY (pod A): to where it was going, through the sidecar's passthrough.
    assert_eq!(tcp_a.as_deref(), Some(&b"passthrough"[..]));
    assert_eq!(http_a.status, 200);
    assert_eq!(http_a.json()["backend"], "outside");
    let pa = mesh.a.clone();
    let passed =
        mesh.ns.enter(move || pa.metric("envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"PassthroughCluster\"}"));
    assert_eq!(passed, 1.0);
    // REGISTRY_ONLY (pod B): the connection is closed without a byte, the request gets 502, and
    // neither reaches the destination.
    assert!(tcp_b.as_ref().is_none_or(|b| b.is_empty()), "{tcp_b:?}");
    assert_eq!(http_b.status, 502);
    assert_eq!(echo.connections(), 1, "only pod A's connection reached the destination");
    assert_eq!(outside.requests(), 1, "only pod A's request reached the destination");
    let pb = mesh.b.clone();
    let holed =
        mesh.ns.enter(move || pb.metric("envoy_tcp_downstream_cx_total{envoy_tcp_prefix=\"BlackHoleCluster\"}"));
    assert_eq!(holed, 1.0);
}
