//! The mesh in a network namespace: outrigger-xds on a directory of Istio YAML, two pods'
//! sidecars (A and B) configured by it, and iptables capture of the service range, as in pods.
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::NetNs;
use crate::proxy::temp_dir;
use crate::xds::ControlPlane;
use crate::{Proxy, WAIT};

/// The sidecar's uid (Istio's 1337): capture never redirects its own connections.
pub const PROXY_UID: u32 = 1337;

/// The pods' addresses: A (namespace bookinfo, ALLOW_ANY) and B (namespace other, REGISTRY_ONLY
/// through its namespace's Sidecar).
pub const POD_A: &str = "127.0.0.1";
pub const POD_B: &str = "127.0.0.2";

/// The reviews service: VIP 10.99.0.10:9080, endpoints 127.0.0.11 (v1) and 127.0.0.12 (v2).
pub const REVIEWS: &str = "apiVersion: networking.istio.io/v1
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
";

/// Writes a file so the watcher sees one complete change (write elsewhere, then rename).
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn start_control_plane(ns: &NetNs, dir: &Path) -> ControlPlane {
    let dir = dir.to_path_buf();
    ns.enter(move || ControlPlane::start_on(&dir, 15010, 15014))
}

pub fn sidecar(ns: &NetNs, pod: &str, namespace: &str, ip: &str, labels: &str, delta: bool) -> Arc<Proxy> {
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

pub fn syncz(ns: &NetNs) -> Value {
    ns.enter(|| {
        let (_, body) = crate::proxy::http_request(([127, 0, 0, 1], 15014).into(), "GET", "/debug/syncz")
            .expect("GET /debug/syncz");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    })
}

/// A network namespace as a host of two pods with sidecars (A and B) and the control plane.
/// Capture: TCP to the service range goes to the sidecar of the pod it comes from (REDIRECT to
/// A's outbound port, or DNAT to B's for B's source address), except the sidecars' own traffic
/// (their uid), so passthrough reaches the real destination.
pub struct Mesh {
    pub ns: NetNs,
    pub dir: std::path::PathBuf,
    pub cp: Option<ControlPlane>,
    pub a: Arc<Proxy>,
    pub b: Arc<Proxy>,
}

impl Mesh {
    /// Starts it on `files` (name, YAML) and waits until both sidecars ACKed every type.
    pub fn start(files: &[(&str, &str)]) -> Mesh {
        let ns = NetNs::new("mesh");
        ns.exec(&["ip", "route", "add", "local", "10.99.0.0/24", "dev", "lo"]);
        let uid = PROXY_UID.to_string();
        let capture = |from: &[&str], to: &[&str]| {
            let mut args = vec!["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp"];
            args.extend_from_slice(from);
            args.extend_from_slice(&["-d", "10.99.0.0/24", "-m", "owner", "!", "--uid-owner", &uid]);
            args.extend_from_slice(to);
            ns.exec(&args);
        };
        let b_outbound = format!("{POD_B}:15001");
        capture(&["-s", POD_B], &["-j", "DNAT", "--to-destination", &b_outbound]);
        capture(&[], &["-j", "REDIRECT", "--to-ports", "15001"]);
        let dir = temp_dir();
        for (name, text) in files {
            write_atomic(&dir.join(name), text);
        }
        let cp = Some(start_control_plane(&ns, &dir));
        // The sidecar that carries most traffic speaks incremental xDS; the other state of the world.
        let a = sidecar(&ns, "productpage-v1", "bookinfo", POD_A, "app=productpage", true);
        let b = sidecar(&ns, "ratings-v1", "other", POD_B, "app=ratings", false);
        // An ACK follows the apply, so poll.
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
        Mesh { ns, dir, cp, a, b }
    }

    /// Runs `f` on a current-thread runtime inside the namespace.
    pub fn block_on<T: Send + 'static, F: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        self.ns.enter(move || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f()))
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        drop(self.cp.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
