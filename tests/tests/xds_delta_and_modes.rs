//! Incremental xDS (DELTA_GRPC), and `outrigger sidecar` / `wait`: the bootstrap built from flags
//! and identity, Istio's node id and metadata, readiness on its own port.
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use outrigger_tests::ads::{AdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use outrigger_tests::client::get_h1;
use outrigger_tests::proxy::binary;
use outrigger_tests::xds::*;
use outrigger_tests::{eventually, Backend, Proxy, WAIT};
use serde_json::{json, Value};

fn delta_bootstrap(ads: SocketAddr) -> Value {
    let mut b = dynamic_bootstrap(ads);
    b["dynamic_resources"]["ads_config"]["api_type"] = json!("DELTA_GRPC");
    b
}

async fn backend_name(addr: SocketAddr) -> Option<String> {
    let r = get_h1(addr, "svc.test", "/", &[]).await;
    (r.status == 200).then(|| r.json()["backend"].as_str().unwrap_or_default().to_string())
}

#[tokio::test]
async fn delta_xds_delivers_config_and_applies_changes_and_removals() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&delta_bootstrap(ads.addr));
    let addr = p.addr("dyn");
    assert_eq!(backend_name(addr).await.as_deref(), Some("blue"));

    // Wildcard for LDS/CDS, named subscriptions for RDS/EDS, every response ACKed by nonce.
    let reqs = ads.delta_requests();
    let first = |t: &str| reqs.iter().find(|r| r.type_url == t).unwrap().clone();
    assert!(first(LISTENER).resource_names_subscribe.is_empty());
    assert!(first(CLUSTER).resource_names_subscribe.is_empty());
    let rds: Vec<String> =
        reqs.iter().filter(|r| r.type_url == ROUTE).flat_map(|r| r.resource_names_subscribe.clone()).collect();
    assert_eq!(rds, vec!["r"]);
    // The ACK follows the apply: it may still be on its way when traffic already flows.
    eventually("an EDS ACK", WAIT, || {
        let acked = ads.delta_requests().iter().any(|r| r.type_url == ENDPOINT && !r.response_nonce.is_empty());
        acked.then_some(())
    })
    .await;

    // A changed resource is applied...
    ads.set(ROUTE, vec![weighted_routes("r", &[("green", 100)])]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while backend_name(addr).await.as_deref() != Some("green") {
        assert!(tokio::time::Instant::now() < deadline, "delta route change not applied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...a removed one is removed (the cluster goes: 503 NC), and its endpoints are unsubscribed.
    ads.set(CLUSTER, vec![eds_cluster("blue")]);
    let deadline = tokio::time::Instant::now() + WAIT;
    while get_h1(addr, "svc.test", "/", &[]).await.status != 503 {
        assert!(tokio::time::Instant::now() < deadline, "removed cluster still in use");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually("EDS unsubscribed from green", WAIT, || {
        ads.delta_requests()
            .iter()
            .any(|r| r.type_url == ENDPOINT && r.resource_names_unsubscribe == vec!["green".to_string()])
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn delta_nack_keeps_the_old_config_and_names_the_resource() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let p = Proxy::start(&delta_bootstrap(ads.addr));
    let mut bad = weighted_routes("r", &[("green", 100)]);
    bad["virtual_hosts"][0]["routes"][0]["route"]["timeout"] = json!("1s");
    bad["virtual_hosts"][0]["require_tls"] = json!("ALL");
    ads.set(ROUTE, vec![bad]);
    let nack = eventually("a delta NACK", WAIT, || {
        ads.delta_requests().into_iter().find(|r| r.type_url == ROUTE && r.error_detail.is_some())
    })
    .await;
    let msg = nack.error_detail.unwrap().message;
    assert!(msg.contains("route_config \"r\"") && msg.contains("require_tls"), "{msg}");
    assert_eq!(backend_name(p.addr("dyn")).await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn sidecar_mode_announces_istio_identity_and_reports_readiness() {
    let (blue, green) = (Backend::start("blue"), Backend::start("green"));
    let ads = AdsServer::start();
    serve_blue_green(&ads, &blue, &green, &[("blue", 100)]);
    let xds = format!("http://{}", ads.addr);
    let p = Proxy::start_args(
        &[
            "sidecar",
            "--xds-address",
            &xds,
            "--admin-port",
            "0",
            "--health-address",
            "127.0.0.1:0",
            "--prometheus-address",
            "127.0.0.1:0",
        ],
        &[
            ("POD_NAME", "reviews-v1-7f9"),
            ("POD_NAMESPACE", "bookinfo"),
            ("SERVICE_ACCOUNT", "reviews"),
            ("INSTANCE_IP", "10.1.2.3"),
            ("WORKLOAD_LABELS", "app=reviews,version=v1"),
        ],
    );
    let node = ads.requests()[0].node.clone().unwrap();
    assert_eq!(node.id, "sidecar~10.1.2.3~reviews-v1-7f9.bookinfo~bookinfo.svc.cluster.local");
    let md = node.metadata.unwrap().fields;
    let s = |k: &str| match md.get(k).and_then(|v| v.kind.clone()) {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => s,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(s("NAMESPACE"), "bookinfo");
    assert_eq!(s("WORKLOAD_NAME"), "reviews-v1-7f9");
    assert_eq!(s("SERVICE_ACCOUNT"), "reviews");
    assert_eq!(s("LABELS"), "app=reviews,version=v1");
    assert!(!s("CLUSTER_ID").is_empty());
    assert_eq!(backend_name(p.addr("dyn")).await.as_deref(), Some("blue"));

    let (_, info) = p.admin_get("/server_info");
    let info: Value = serde_json::from_str(&info).unwrap();
    let health: SocketAddr = info["health_address"].as_str().unwrap().parse().unwrap();
    let prom: SocketAddr = info["prometheus_address"].as_str().unwrap().parse().unwrap();
    let r = get_h1(health, "localhost", "/healthz/ready", &[]).await;
    assert_eq!(r.status, 200);
    let r = get_h1(prom, "localhost", "/stats/prometheus", &[]).await;
    assert!(r.text().contains("envoy_control_plane_connected_state 1"), "{}", r.text());
    let wait = Command::new(binary())
        .args(["wait", "--timeout", "5s", "--health-address", &health.to_string()])
        .status()
        .unwrap();
    assert!(wait.success());
}

#[test]
fn wait_times_out_when_nothing_is_ready() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let st = Command::new(binary())
        .args(["wait", "--timeout", "300ms", "--health-address", &addr.to_string()])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
}

#[test]
fn sidecar_refuses_to_run_without_the_ca_it_was_told_to_use() {
    let st = Command::new(binary()).args(["sidecar", "--ca-address", "http://127.0.0.1:15012"]).output().unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("not implemented"));
}

#[test]
fn sidecar_refuses_a_token_file_it_cannot_use() {
    let st = Command::new(binary())
        .args(["sidecar", "--token-file", "/var/run/secrets/tokens/istio-token"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("--token-file"));
}
