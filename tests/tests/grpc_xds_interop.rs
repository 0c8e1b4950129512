//! Interoperability: a proxyless gRPC client — grpcio's own xDS resolver from PyPI, not our
//! code — resolves a service through outrigger-xds (LDS → RDS → CDS → EDS) and its calls reach
//! the right endpoints, in the proportions the VirtualService's weights say.
use std::path::Path;
use std::process::Command;

use outrigger_tests::backend::GrpcServer;
use outrigger_tests::proxy::temp_dir;
use outrigger_tests::xds::ControlPlane;
use serde_json::Value;

fn config(v1: std::net::SocketAddr, v2: std::net::SocketAddr, w1: u32, w2: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{ name: echo, namespace: default }}
spec:
  hosts: [echo.default.svc.cluster.local]
  ports: [{{ number: 50051, name: grpc, protocol: GRPC }}]
  resolution: STATIC
  endpoints:
  - {{ address: {ip1}, ports: {{ grpc: {p1} }}, labels: {{ version: v1 }} }}
  - {{ address: {ip2}, ports: {{ grpc: {p2} }}, labels: {{ version: v2 }} }}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{ name: echo, namespace: default }}
spec:
  host: echo
  subsets: [{{ name: v1, labels: {{ version: v1 }} }}, {{ name: v2, labels: {{ version: v2 }} }}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{ name: echo, namespace: default }}
spec:
  hosts: [echo]
  http:
  - route:
    - {{ destination: {{ host: echo, subset: v1 }}, weight: {w1} }}
    - {{ destination: {{ host: echo, subset: v2 }}, weight: {w2} }}
",
        ip1 = v1.ip(),
        p1 = v1.port(),
        ip2 = v2.ip(),
        p2 = v2.port(),
    )
}

fn calls(xds_port: u16, n: usize) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/xds_client.py");
    let out = Command::new("timeout")
        .args(["120", "python3"])
        .arg(script)
        .args(["--target", "xds:///echo.default.svc.cluster.local:50051"])
        .args(["--xds", &format!("127.0.0.1:{xds_port}")])
        .args(["--calls", &n.to_string()])
        .output()
        .expect("python3 (with grpcio from PyPI: pip install grpcio) runs");
    assert!(out.status.success(), "grpc client failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn grpc_proxyless_client_resolves_through_outrigger_xds_with_weights() {
    let (a, b) = (GrpcServer::start("v1"), GrpcServer::start("v2"));
    let dir = temp_dir();
    std::fs::write(dir.join("echo.yaml"), config(a.addr, b.addr, 75, 25)).unwrap();
    let cp = ControlPlane::start(&dir);
    let xds_port = cp.xds_port;
    let got = calls(xds_port, 200);
    assert_eq!(got["errors"], serde_json::json!([]), "{got}");
    let (v1, v2) = (got["v1"].as_u64().unwrap(), got["v2"].as_u64().unwrap());
    assert_eq!(v1 + v2, 200, "{got}");
    // 75/25: both endpoints are reached, the v1 share is far from 50% and from 100%.
    assert!((120..=185).contains(&v1), "weights not followed: {got}");

    // All traffic to v2 once the weights say so.
    // A fresh client each round: once the control plane has the new weights, every call goes to v2.
    std::fs::write(dir.join("echo.yaml"), config(a.addr, b.addr, 0, 100)).unwrap();
    let deadline = std::time::Instant::now() + outrigger_tests::WAIT;
    loop {
        let got = calls(xds_port, 20);
        assert_eq!(got["errors"], serde_json::json!([]), "{got}");
        if got["v2"] == 20 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "traffic never moved to v2: {got}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
