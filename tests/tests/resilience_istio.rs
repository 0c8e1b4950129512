//! The resilience features from Istio YAML: outrigger-xds maps a VirtualService's fault, retries
//! and mirror and a DestinationRule's outlier detection, connection pool and consistent hash as
//! istiod does, a real sidecar gets them over ADS, and captured traffic in a network namespace
//! shows their effect on upstreams that misbehave on command.
use bytes::Bytes;
use outrigger_tests::client::{get, request, send_h1};
use outrigger_tests::mesh::{Mesh, REVIEWS};
use outrigger_tests::{Faulty, WAIT};

/// The reviews service (REVIEWS), a shadow and a slow one.
const SERVICES: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: shadow, namespace: bookinfo }
spec:
  hosts: [shadow.bookinfo.svc.cluster.local]
  addresses: [10.99.0.30]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.31 }]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: slow, namespace: bookinfo }
spec:
  hosts: [slow.bookinfo.svc.cluster.local]
  addresses: [10.99.0.40]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.41 }]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: hashed, namespace: bookinfo }
spec:
  hosts: [hashed.bookinfo.svc.cluster.local]
  addresses: [10.99.0.50]
  ports: [{ number: 9080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 127.0.0.51 }, { address: 127.0.0.52 }, { address: 127.0.0.53 }]
";

const POLICY: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews, namespace: bookinfo }
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: { simple: ROUND_ROBIN }
    outlierDetection: { consecutive5xxErrors: 3, interval: 0.2s, baseEjectionTime: 30s, maxEjectionPercent: 100 }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: slow, namespace: bookinfo }
spec:
  host: slow
  trafficPolicy:
    connectionPool: { tcp: { maxConnections: 1 }, http: { http1MaxPendingRequests: 1, http2MaxRequests: 1 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: hashed, namespace: bookinfo }
spec:
  host: hashed
  trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user, maglev: { tableSize: 1031 } } } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews, namespace: bookinfo }
spec:
  hosts: [reviews]
  http:
  - match: [{ uri: { prefix: /fault } }]
    fault: { abort: { httpStatus: 418, percentage: { value: 100 } } }
    route: [{ destination: { host: reviews } }]
  - match: [{ uri: { prefix: /mirror } }]
    mirror: { host: shadow }
    mirrorPercentage: { value: 100 }
    route: [{ destination: { host: reviews } }]
  - route: [{ destination: { host: reviews } }]
    retries: { attempts: 3, retryOn: 5xx }
";

#[test]
fn istio_fault_retries_outlier_detection_mirror_connection_pool_and_hashing_reach_a_sidecar() {
    let services = format!("{REVIEWS}---\n{SERVICES}");
    let mesh = Mesh::start(&[("services.yaml", &services), ("policy.yaml", POLICY)]);
    let (v1, v2, shadow, slow) = mesh.ns.enter(|| {
        (
            Faulty::start_on("v1", "127.0.0.11:9080".parse().unwrap()),
            Faulty::start_on("v2", "127.0.0.12:9080".parse().unwrap()),
            Faulty::start_on("shadow", "127.0.0.31:9080".parse().unwrap()),
            Faulty::start_on("slow", "127.0.0.41:9080".parse().unwrap()),
        )
    });
    let reviews: std::net::SocketAddr = "10.99.0.10:9080".parse().unwrap();

    // Fault: aborted by the sidecar, never reaching an endpoint.
    let r = mesh.block_on(move || async move { send_h1(reviews, get("reviews", "/fault", &[])).await });
    assert_eq!((r.status.as_u16(), r.text().as_str()), (418, "fault filter abort"));
    assert_eq!(v1.requests() + v2.requests(), 0);

    // Retries on 5xx go to the other endpoint; three 5xx in a row eject v1, which then gets
    // nothing (its ejection lasts 30 s).
    v1.fail_next(usize::MAX, 503);
    let statuses = mesh.block_on(move || async move {
        let mut out = Vec::new();
        for _ in 0..20 {
            let r = send_h1(reviews, get("reviews", "/", &[])).await;
            out.push((r.status.as_u16(), r.header("x-backend").map(str::to_string)));
        }
        out
    });
    assert!(statuses.iter().all(|(s, b)| *s == 200 && b.as_deref() == Some("v2")), "{statuses:?}");
    assert_eq!(v1.requests(), 3, "ejected after its third 5xx");
    let a = mesh.a.clone();
    let clusters = mesh.ns.enter(move || a.admin_get("/clusters").1);
    assert!(
        clusters.contains(
            "outbound|9080||reviews.bookinfo.svc.cluster.local::127.0.0.11:9080::health_flags::/failed_outlier_check"
        ),
        "{clusters}"
    );

    // Mirror: the shadow service gets a copy, body included.
    let r = mesh.block_on(move || async move {
        send_h1(reviews, request("POST", "reviews", "/mirror", &[], Bytes::from_static(b"copy me"))).await
    });
    assert_eq!((r.status.as_u16(), r.header("x-backend")), (200, Some("v2")));
    let deadline = std::time::Instant::now() + WAIT;
    while shadow.requests() == 0 {
        assert!(std::time::Instant::now() < deadline, "no shadow copy arrived");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        (shadow.received()[0].path.as_str(), shadow.received()[0].body.as_slice()),
        ("/mirror", &b"copy me"[..])
    );

    // Connection pool: one request in flight to the slow service, one pending; a third overflows.
    slow.set_delay(1_500);
    let slow_addr: std::net::SocketAddr = "10.99.0.40:9080".parse().unwrap();
    let statuses = mesh.block_on(move || async move {
        let sends: Vec<_> = (0..3)
            .map(|i| {
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(200 * i)).await;
                    let r = send_h1(slow_addr, get("slow", "/", &[])).await;
                    (r.status.as_u16(), r.header("x-envoy-overloaded").map(str::to_string))
                })
            })
            .collect();
        let mut out = Vec::new();
        for s in sends {
            out.push(s.await.unwrap());
        }
        out
    });
    assert_eq!(statuses.iter().filter(|(s, _)| *s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().any(|(s, o)| *s == 503 && o.as_deref() == Some("true")), "{statuses:?}");

    // Consistent hashing on a header (MAGLEV): a user stays on one endpoint; users spread.
    let _hashed: Vec<Faulty> = (1..=3)
        .map(|i| {
            mesh.ns.enter(move || Faulty::start_on(&format!("h{i}"), format!("127.0.0.5{i}:9080").parse().unwrap()))
        })
        .collect();
    let owners = mesh.block_on(move || async move {
        let hashed: std::net::SocketAddr = "10.99.0.50:9080".parse().unwrap();
        let mut out = Vec::new();
        for user in 0..12 {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..3 {
                let r = send_h1(hashed, get("hashed", "/", &[("x-user", &format!("u{user}"))])).await;
                seen.insert(r.header("x-backend").unwrap_or("none").to_string());
            }
            out.push(seen);
        }
        out
    });
    assert!(owners.iter().all(|s| s.len() == 1), "a user moved between endpoints: {owners:?}");
    let all: std::collections::HashSet<_> = owners.iter().flatten().collect();
    // 12 users over 3 endpoints all on one: (1/3)^11, about 6e-6.
    assert!(all.len() >= 2, "{all:?}");
}
