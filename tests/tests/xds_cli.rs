//! `outrigger-xds validate DIR`: every error with file, document and field; exit 1 if any.
use std::process::Command;

use outrigger_tests::ads::{CLUSTER, ENDPOINT};
use outrigger_tests::proxy::{temp_dir, xds_binary};
use outrigger_tests::xds::ControlPlane;

#[test]
fn validate_accepts_bookinfo_and_reports_every_error_with_file_document_and_field() {
    let bookinfo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../xds/testdata/bookinfo");
    let ok = Command::new(xds_binary()).arg("validate").arg(&bookinfo).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let dir = temp_dir();
    std::fs::write(
        dir.join("a.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: s }\nspec: { hosts: [s.example.com], ports: [{ number: 80, name: http, protokol: HTTP }] }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ok }\nspec: { hosts: [s.example.com], http: [{ route: [{ destination: { host: s.example.com } }] }] }\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: bad }\nspec: { host: s.example.com, trafficPolicy: { connectionPool: {} } }\n",
    )
    .unwrap();
    let out = Command::new(xds_binary()).arg("validate").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.yaml: document 0 (ServiceEntry default/s): spec.ports[0]") && err.contains("protokol"),
        "{err}"
    );
    assert!(
        err.contains("b.yaml: document 1 (DestinationRule default/bad): spec.trafficPolicy")
            && err.contains("connectionPool"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_checks_what_each_workload_proxy_receives_and_names_the_one_that_fails() {
    // The broken route (a redirect code that is not one) is hidden by Sidecars from every proxy without labels;
    // only the proxy of WorkloadEntry apps/canary-1, whose own Sidecar shows everything, gets it.
    let dir = temp_dir();
    std::fs::write(
        dir.join("sidecars.yaml"),
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: default }
spec: { egress: [{ hosts: [\"./*\"] }] }
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: apps }
spec: { egress: [{ hosts: [\"./*\"] }] }
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: canary, namespace: apps }
spec: { workloadSelector: { labels: { app: canary } }, egress: [{ hosts: [\"*/*\"] }] }
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: { name: default, namespace: legacy }
spec: { egress: [{ hosts: [\"apps/*\"] }] }
",
    )
    .unwrap();
    std::fs::write(
        dir.join("workloads.yaml"),
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: canary-1, namespace: apps }
spec: { address: 10.5.0.1, labels: { app: canary } }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: legacy, namespace: legacy }
spec: { hosts: [legacy.legacy.svc.cluster.local], ports: [{ number: 80, name: http }], resolution: STATIC, endpoints: [{ address: 10.6.0.1 }] }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: legacy, namespace: legacy }
spec:
  hosts: [legacy]
  http: [{ match: [{ uri: { exact: /old } }], redirect: { uri: /new, redirectCode: 399 } }]
",
    )
    .unwrap();
    let out = Command::new(xds_binary()).arg("validate").arg(&dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the proxy of WorkloadEntry apps/canary-1 (labels app=canary)"), "{err}");
    assert!(err.contains("redirectCode 399 is not a redirect code"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_directory_with_errors_at_start() {
    let dir = temp_dir();
    std::fs::write(dir.join("x.yaml"), "apiVersion: v1\nkind: Service\nmetadata: { name: s }\nspec: {}\n").unwrap();
    let out = Command::new(xds_binary())
        .args(["serve", "--config-dir"])
        .arg(&dir)
        .args(["--xds-port", "0", "--monitor-port", "0", "--bind", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x.yaml: document 0"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that NACKs: the control plane records the error per proxy and type, counts it, and
/// does not resend the same version; the ACK that follows clears it.
#[tokio::test]
async fn control_plane_records_nacks_and_acks_per_proxy() {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::google::rpc::Status;

    let bookinfo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../xds/testdata/bookinfo");
    let cp = ControlPlane::start(&bookinfo);
    let (xds, monitor) = (cp.xds_port, cp.monitor_port);
    let mut client = loop {
        if let Ok(c) = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds}")).await {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let node = Node {
        id: "sidecar~10.0.0.10~productpage-v1.bookinfo~bookinfo.svc.cluster.local".into(),
        ..Default::default()
    };
    let cds = CLUSTER.to_string();
    tx.send(DiscoveryRequest { node: Some(node.clone()), type_url: cds.clone(), ..Default::default() }).unwrap();
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.resources.len() > 5);
    tx.send(DiscoveryRequest {
        type_url: cds.clone(),
        response_nonce: first.nonce.clone(),
        error_detail: Some(Status { code: 3, message: "cluster \"x\": nope".into(), details: vec![] }),
        ..Default::default()
    })
    .unwrap();
    let syncz = || async {
        let r =
            outrigger_tests::client::get_h1(format!("127.0.0.1:{monitor}").parse().unwrap(), "x", "/debug/syncz", &[])
                .await;
        r.json()
    };
    let deadline = tokio::time::Instant::now() + outrigger_tests::WAIT;
    loop {
        let s = syncz().await;
        if s["proxies"][0]["nacked"][&cds] == "cluster \"x\": nope" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "NACK not recorded: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The same version is not sent again after a NACK: with the NACK handled, one response.
    let status = cp.handled(&node.id, 2).await;
    assert_eq!(status["responses"], 1, "{status}");
    tx.send(DiscoveryRequest {
        type_url: cds.clone(),
        version_info: first.version_info.clone(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .unwrap();
    let deadline = tokio::time::Instant::now() + outrigger_tests::WAIT;
    loop {
        let s = syncz().await;
        if s["proxies"][0]["acked"][&cds] == first.version_info.as_str()
            && s["proxies"][0]["nacked"].get(&cds).is_none()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "ACK not recorded: {s}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let metrics =
        outrigger_tests::client::get_h1(format!("127.0.0.1:{monitor}").parse().unwrap(), "x", "/metrics", &[]).await;
    assert!(metrics.text().contains("pilot_total_xds_rejects_total 1"), "{}", metrics.text());
    drop(cp);
}

/// A burst of file writes becomes one push: the watcher waits for the directory to settle.
#[tokio::test]
async fn a_burst_of_changes_is_pushed_once() {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

    let dir = temp_dir();
    let se = |i: usize| {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: s{i} }}\nspec: {{ hosts: [s{i}.example.com], ports: [{{ number: 80, name: http }}], resolution: STATIC, endpoints: [{{ address: 10.0.0.{i} }}] }}\n")
    };
    std::fs::write(dir.join("s0.yaml"), se(0)).unwrap();
    let cp = ControlPlane::start(&dir);
    let xds = cp.xds_port;
    let mut client = loop {
        if let Ok(c) = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds}")).await {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let node_id = "sidecar~10.0.0.1~a.default~default.svc.cluster.local";
    let node = Node { id: node_id.into(), ..Default::default() };
    let cds = CLUSTER.to_string();
    tx.send(DiscoveryRequest { node: Some(node), type_url: cds.clone(), ..Default::default() }).unwrap();
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let ack = |r: &envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse| DiscoveryRequest {
        type_url: r.type_url.clone(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    };
    tx.send(ack(&first)).unwrap();
    // Five files, 2 ms apart (as `cp` or `kubectl apply` writes them): one settled change.
    for i in 1..=5 {
        std::fs::write(dir.join(format!("s{i}.yaml")), se(i)).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let second = tokio::time::timeout(outrigger_tests::WAIT, stream.message()).await.expect("a push").unwrap().unwrap();
    tx.send(ack(&second)).unwrap();
    let names = second.resources.len();
    // All five new services in that one push (plus the first, and the fixed passthrough clusters).
    assert_eq!(names, first.resources.len() + 5, "the push did not carry the whole burst");
    // The ACK of that push handled: nothing else was sent (a second load of the same burst would
    // have pushed before the ACK of its first push could be handled, or not at all).
    let status = cp.handled(node_id, 3).await;
    assert_eq!(status["responses"], 2, "a second push followed the same burst: {status}");
    drop(cp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An endpoint change is an incremental EDS push: the client gets one ClusterLoadAssignment (not
/// the registry, not the clusters again), and a real proxy's traffic follows it.
#[tokio::test]
async fn an_endpoint_change_pushes_only_that_assignment_and_traffic_follows() {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
    use outrigger_tests::backend::Backend;
    use outrigger_tests::config::*;
    use prost::Message;

    let (old, new) = (Backend::start("old"), Backend::start("new"));
    let dir = temp_dir();
    let se = |name: &str, port: u16| {
        format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{ name: {name}, namespace: t }}\nspec: {{ hosts: [{name}.t.svc.cluster.local], ports: [{{ number: 8080, name: http, protocol: HTTP }}], resolution: STATIC, endpoints: [{{ address: 127.0.0.1, ports: {{ http: {port} }} }}] }}\n")
    };
    let write = |b_port: u16| {
        let docs = [se("a", 1), se("b", b_port), se("c", 3)].join("---\n");
        let tmp = dir.join("tmp.swap");
        std::fs::write(&tmp, docs).unwrap();
        std::fs::rename(&tmp, dir.join("services.yaml")).unwrap();
    };
    write(old.addr.port());
    let cp = ControlPlane::start(&dir);
    let xds: std::net::SocketAddr = format!("127.0.0.1:{}", cp.xds_port).parse().unwrap();

    // A real proxy: a static listener routing to the control plane's cluster for b.
    let b = "outbound|8080||b.t.svc.cluster.local";
    let mut boot = outrigger_tests::xds::dynamic_bootstrap(xds);
    boot["dynamic_resources"].as_object_mut().unwrap().remove("lds_config");
    boot["static_resources"]["listeners"] = serde_json::json!([http_listener(
        "in",
        serde_json::json!([vhost("all", &["*"], serde_json::json!([route("/", b)]))])
    )]);
    let proxy = outrigger_tests::proxy::Proxy::start(&boot);
    let via = proxy.addr("in");
    let backend_of = || async move {
        outrigger_tests::client::get_h1(via, "b", "/", &[]).await.header("x-backend").map(str::to_string)
    };
    let deadline = tokio::time::Instant::now() + outrigger_tests::WAIT;
    while backend_of().await.as_deref() != Some("old") {
        assert!(tokio::time::Instant::now() < deadline, "the proxy never reached the first endpoint");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A raw ADS client holding the clusters and every assignment.
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}")).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let node_id = "sidecar~10.0.0.1~x.t~t.svc.cluster.local";
    let node = Node { id: node_id.into(), ..Default::default() };
    let (cds, eds) = (CLUSTER, ENDPOINT);
    let names: Vec<String> =
        ["a", "b", "c"].iter().map(|n| format!("outbound|8080||{n}.t.svc.cluster.local")).collect();
    tx.send(DiscoveryRequest { node: Some(node), type_url: cds.into(), ..Default::default() }).unwrap();
    tx.send(DiscoveryRequest { type_url: eds.into(), resource_names: names.clone(), ..Default::default() }).unwrap();
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    async fn next(stream: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
        tokio::time::timeout(outrigger_tests::WAIT, stream.message()).await.expect("a push").unwrap().unwrap()
    }
    let ack = |r: &DiscoveryResponse, names: Vec<String>| DiscoveryRequest {
        type_url: r.type_url.clone(),
        version_info: r.version_info.clone(),
        response_nonce: r.nonce.clone(),
        resource_names: names,
        ..Default::default()
    };
    let mut initial = Vec::new();
    for _ in 0..2 {
        let r = next(&mut stream).await;
        tx.send(ack(&r, if r.type_url == eds { names.clone() } else { vec![] })).unwrap();
        initial.push((r.type_url.clone(), r.resources.len()));
    }
    initial.sort();
    assert_eq!(initial[1], (eds.to_string(), 3), "{initial:?}");

    write(new.addr.port());
    let r = next(&mut stream).await;
    assert_eq!(r.type_url, eds, "the first push after an endpoint change is EDS, not {}", r.type_url);
    assert_eq!(r.resources.len(), 1, "only the changed assignment is pushed");
    let cla = ClusterLoadAssignment::decode(r.resources[0].value.as_slice()).unwrap();
    assert_eq!(cla.cluster_name, b);
    tx.send(ack(&r, names.clone())).unwrap();

    let deadline = tokio::time::Instant::now() + outrigger_tests::WAIT;
    while backend_of().await.as_deref() != Some("new") {
        assert!(tokio::time::Instant::now() < deadline, "the proxy never moved to the new endpoint");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Nothing else followed: no cluster push for an endpoint change. Five requests handled (two
    // subscriptions, three ACKs), three responses.
    let status = cp.handled(node_id, 5).await;
    assert_eq!(status["responses"], 3, "unexpected push after the endpoint change: {status}");
    let _ = std::fs::remove_dir_all(&dir);
}
