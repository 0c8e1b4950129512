//! DestinationRule `connectionPool`, `outlierDetection`, `loadBalancer` and their subset and
//! port-level overrides on the generated clusters, compared with what istiod 1.30 emits
//! (cluster_traffic_policy.go; the 1.22.3 reference dump's line where it has the shape).
use serde_json::{json, Value};

use super::tests::{dumped, load_text_dir};
use super::*;

/// Two ports, so that port-level settings have something to tell apart.
const API: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api, namespace: shop }
spec:
  hosts: [api.shop.svc.cluster.local]
  ports: [{ number: 8080, name: http, protocol: HTTP }, { number: 9090, name: grpc, protocol: GRPC }]
  resolution: STATIC
  endpoints: [{ address: 10.1.0.1, labels: { version: v1 } }, { address: 10.1.0.2, labels: { version: v2 } }]
";

fn clusters(dr_spec: &str) -> std::collections::BTreeMap<String, Value> {
    let dr = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: api, namespace: shop }}\nspec:\n  host: api\n{dr_spec}"
    );
    let reg = load_text_dir(&format!("{API}---\n{dr}")).unwrap();
    dumped(&reg, &ProxyInfo { namespace: "shop".into(), ..Default::default() }).remove(CLUSTER).unwrap()
}

/// `getDefaultCircuitBreakerThresholds`: the dump's (line 2851) without `track_remaining`,
/// which istiod stopped setting in 1.29 (DISABLE_TRACK_REMAINING_CB_METRICS, #58070).
fn default_breakers() -> Value {
    json!({"thresholds": [{"max_connections": 4294967295u32, "max_pending_requests": 4294967295u32,
                           "max_requests": 4294967295u32, "max_retries": 4294967295u32}]})
}

#[test]
fn every_service_and_passthrough_cluster_gets_istiods_default_circuit_breakers_and_least_request() {
    let c = clusters("  subsets: [{ name: v1, labels: { version: v1 } }]\n");
    for name in [
        "outbound|8080||api.shop.svc.cluster.local",
        "outbound|8080|v1|api.shop.svc.cluster.local",
        "PassthroughCluster",
        "InboundPassthroughCluster",
    ] {
        assert_eq!(c[name]["circuit_breakers"], default_breakers(), "{name}");
        assert_eq!(c[name]["connect_timeout"], "10s", "{name}");
    }
    // `applySimpleDefaultLoadBalancer`: LEAST_REQUEST is istiod's default algorithm.
    assert_eq!(c["outbound|8080||api.shop.svc.cluster.local"]["lb_policy"], "LEAST_REQUEST");
    // The black hole has no connection pool (`buildBlackHoleCluster`).
    assert!(c["BlackHoleCluster"].get("circuit_breakers").is_none());
    // Without outlier detection there is no panic threshold to set.
    assert!(c["outbound|8080||api.shop.svc.cluster.local"].get("common_lb_config").is_none());
}

#[test]
fn connection_pool_sets_thresholds_connect_timeout_keepalive_and_upstream_http_options() {
    let c = clusters(
        "  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 250ms
        tcpKeepalive: { probes: 3, time: 7200.5s, interval: 75s }
        maxConnectionDuration: 1h
        idleTimeout: 30s
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 5
        maxRetries: 0
        idleTimeout: 60s
",
    );
    let http = &c["outbound|8080||api.shop.svc.cluster.local"];
    // `applyConnectionPool`: maxRetries 0 keeps the default (istiod cannot tell 0 from unset).
    assert_eq!(
        http["circuit_breakers"],
        json!({"thresholds": [{"max_connections": 100, "max_pending_requests": 10, "max_requests": 1000,
                               "max_retries": 4294967295u32}]})
    );
    assert_eq!(http["connect_timeout"], "0.250s");
    // `setKeepAliveSettings`: whole seconds.
    assert_eq!(
        http["upstream_connection_options"],
        json!({"tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 7200, "keepalive_interval": 75}})
    );
    // The http idle timeout wins over the tcp one; an HTTP/1.1 cluster says so explicitly (Envoy
    // requires one of the protocol options).
    let options = json!({"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": "60s", "max_connection_duration": "3600s", "max_requests_per_connection": 5},
        "explicit_http_config": {"http_protocol_options": {}}});
    assert_eq!(
        http["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"],
        options
    );
    let grpc = &c["outbound|9090||api.shop.svc.cluster.local"];
    let mut h2 = options.clone();
    h2["explicit_http_config"] = json!({"http2_protocol_options": {}});
    assert_eq!(grpc["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], h2);
}

#[test]
fn h2_upgrade_makes_the_cluster_http2_and_use_client_protocol_follows_the_client() {
    let c = clusters(
        "  trafficPolicy:
    connectionPool: { http: { h2UpgradePolicy: UPGRADE } }
  subsets:
  - name: v1
    labels: { version: v1 }
    trafficPolicy: { connectionPool: { http: { useClientProtocol: true } } }
",
    );
    let key = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    // `shouldH2Upgrade`: UPGRADE is honoured on any port.
    assert_eq!(
        c["outbound|8080||api.shop.svc.cluster.local"]["typed_extension_protocol_options"][key]["explicit_http_config"],
        json!({"http2_protocol_options": {}})
    );
    // `setUseDownstreamProtocol`, and no upgrade with useClientProtocol.
    assert_eq!(
        c["outbound|8080|v1|api.shop.svc.cluster.local"]["typed_extension_protocol_options"][key],
        json!({"@type": format!("type.googleapis.com/{key}"),
               "use_downstream_protocol_config": {"http_protocol_options": {}, "http2_protocol_options": {}}})
    );
}

#[test]
fn outlier_detection_enforces_consecutive_errors_turns_success_rate_off_and_sets_the_panic_threshold() {
    let c = clusters(
        "  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      consecutiveGatewayErrors: 0
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 2
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
",
    );
    let api = &c["outbound|8080||api.shop.svc.cluster.local"];
    // `applyOutlierDetection`: enforcing 100 for counts above 0, 0 for an explicit 0.
    assert_eq!(
        api["outlier_detection"],
        json!({
            "consecutive_5xx": 5, "enforcing_consecutive_5xx": 100,
            "consecutive_gateway_failure": 0, "enforcing_consecutive_gateway_failure": 0,
            "interval": "10s", "base_ejection_time": "30s", "max_ejection_percent": 50,
            "enforcing_success_rate": 0,
            "split_external_local_origin_errors": true,
            "consecutive_local_origin_failure": 2, "enforcing_consecutive_local_origin_failure": 100,
            "enforcing_local_origin_success_rate": 0
        })
    );
    // minHealthPercent unset is 0: panic mode off.
    assert_eq!(api["common_lb_config"], json!({"healthy_panic_threshold": {}}));
    let c = clusters("  trafficPolicy: { outlierDetection: { consecutive5xxErrors: 1, minHealthPercent: 40 } }\n");
    assert_eq!(
        c["outbound|8080||api.shop.svc.cluster.local"]["common_lb_config"],
        json!({"healthy_panic_threshold": {"value": 40.0}})
    );
}

#[test]
fn subsets_replace_the_top_level_part_by_part_and_port_level_settings_replace_the_whole_policy() {
    let c = clusters(
        "  trafficPolicy:
    loadBalancer: { simple: RANDOM }
    connectionPool: { tcp: { maxConnections: 10 } }
    portLevelSettings:
    - port: { number: 9090 }
      outlierDetection: { consecutive5xxErrors: 3 }
  subsets:
  - name: v1
    labels: { version: v1 }
    trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }
  - name: v2
    labels: { version: v2 }
    trafficPolicy:
      portLevelSettings:
      - port: { number: 8080 }
        connectionPool: { tcp: { maxConnections: 7 } }
",
    );
    let max = |name: &str| c[name]["circuit_breakers"]["thresholds"][0]["max_connections"].clone();
    // ROUND_ROBIN is the enum's default, so a dump leaves it out.
    let lb = |name: &str| json!(c[name]["lb_policy"].as_str().unwrap_or("ROUND_ROBIN"));
    let top = "outbound|8080||api.shop.svc.cluster.local";
    assert_eq!((lb(top), max(top)), (json!("RANDOM"), json!(10)));
    // Port 9090's settings replace the whole policy: default LB and pool, their outlier detection.
    let port = "outbound|9090||api.shop.svc.cluster.local";
    assert_eq!(c[port]["lb_policy"], "LEAST_REQUEST");
    assert_eq!(max(port), json!(4294967295u32));
    assert_eq!(c[port]["outlier_detection"]["consecutive_5xx"], 3);
    // v1 replaces the load balancer only (`mergeTrafficPolicy`).
    let v1 = "outbound|8080|v1|api.shop.svc.cluster.local";
    assert_eq!((lb(v1), max(v1)), (json!("ROUND_ROBIN"), json!(10)));
    // v2 has settings for 8080: every part is v2's there (default LB), the top level on 9090.
    let v2 = "outbound|8080|v2|api.shop.svc.cluster.local";
    assert_eq!((lb(v2), max(v2)), (json!("LEAST_REQUEST"), json!(7)));
    let v2_9090 = "outbound|9090|v2|api.shop.svc.cluster.local";
    assert_eq!(c[v2_9090]["outlier_detection"]["consecutive_5xx"], 3);
}

#[test]
fn consistent_hash_is_ring_hash_or_maglev_with_istiods_sizes() {
    // `ApplyRingHashLoadBalancer`: RING_HASH with Envoy's 1024 entries unless said otherwise.
    let cases = [
        ("{ httpHeaderName: x }", json!("RING_HASH"), json!({"minimum_ring_size": "1024"}), "ring_hash_lb_config"),
        (
            "{ httpHeaderName: x, minimumRingSize: 2048 }",
            json!("RING_HASH"),
            json!({"minimum_ring_size": "2048"}),
            "ring_hash_lb_config",
        ),
        (
            "{ httpHeaderName: x, ringHash: { minimumRingSize: 4096 } }",
            json!("RING_HASH"),
            json!({"minimum_ring_size": "4096"}),
            "ring_hash_lb_config",
        ),
        (
            "{ useSourceIp: true, maglev: { tableSize: 65537 } }",
            json!("MAGLEV"),
            json!({"table_size": "65537"}),
            "maglev_lb_config",
        ),
    ];
    for (ch, policy, config, field) in cases {
        let c = clusters(&format!("  trafficPolicy: {{ loadBalancer: {{ consistentHash: {ch} }} }}\n"));
        let api = &c["outbound|8080||api.shop.svc.cluster.local"];
        assert_eq!(api["lb_policy"], policy, "{ch}");
        assert_eq!(api[field], config, "{ch}");
    }
    // A ring hash without a size setting has no ring_hash_lb_config.
    let c = clusters("  trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x, ringHash: {} } } }\n");
    assert!(c["outbound|8080||api.shop.svc.cluster.local"].get("ring_hash_lb_config").is_none());
}

#[test]
fn the_inbound_cluster_takes_its_services_connection_pool_and_nothing_else() {
    let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: api, namespace: shop }
spec:
  host: api
  trafficPolicy:
    loadBalancer: { simple: RANDOM }
    connectionPool: { tcp: { maxConnections: 20, connectTimeout: 1s } }
    outlierDetection: { consecutive5xxErrors: 3 }
";
    let reg = load_text_dir(&format!("{API}---\n{dr}")).unwrap();
    let proxy = ProxyInfo {
        namespace: "shop".into(),
        labels: [("version".to_string(), "v1".to_string())].into(),
        instance_ip: Some("10.1.0.1".into()),
        ..Default::default()
    };
    let c = dumped(&reg, &proxy).remove(CLUSTER).unwrap();
    // `buildInboundCluster` + `applyTrafficPolicy` for inbound: the connection pool only.
    let inbound = &c["inbound|8080||"];
    assert_eq!(inbound["circuit_breakers"]["thresholds"][0]["max_connections"], 20);
    assert_eq!(inbound["connect_timeout"], "1s");
    assert!(inbound.get("outlier_detection").is_none() && inbound.get("lb_policy").is_none(), "{inbound}");
    // A gRPC port's inbound cluster speaks HTTP/2 to the application (`setUpstreamProtocol`).
    assert_eq!(
        c["inbound|9090||"]["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"],
        json!({"http2_protocol_options": {}})
    );
}

#[test]
fn proxyless_grpc_clients_get_the_policy_as_istiods_grpcgen_applies_it() {
    let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: api, namespace: shop }
spec:
  host: api
  trafficPolicy:
    loadBalancer: { simple: RANDOM }
    connectionPool: { tcp: { maxConnections: 20 }, http: { http2MaxRequests: 50 } }
    outlierDetection: { consecutive5xxErrors: 3 }
  subsets:
  - { name: v1, labels: { version: v1 }, trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x } } } }
";
    let reg = load_text_dir(&format!("{API}---\n{dr}")).unwrap();
    let grpc = ProxyInfo { namespace: "shop".into(), proxyless: true, ..Default::default() };
    let c = dumped(&reg, &grpc).remove(CLUSTER).unwrap();
    // grpcgen cds.go: RANDOM is not for gRPC (round robin stays), only max_requests (gRFC A32),
    // no outlier detection; a consistent hash is ring hash as for sidecars.
    let api = &c["outbound|8080||api.shop.svc.cluster.local"];
    assert!(api.get("lb_policy").is_none() && api.get("outlier_detection").is_none(), "{api}");
    assert_eq!(api["circuit_breakers"], json!({"thresholds": [{"max_requests": 50}]}));
    assert_eq!(c["outbound|8080|v1|api.shop.svc.cluster.local"]["lb_policy"], "RING_HASH");
    assert!(c["PassthroughCluster"].get("circuit_breakers").is_none());
}
