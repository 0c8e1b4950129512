//! VirtualService `retries`, `mirror(s)`, `fault`, `headers` and DestinationRule hashing on the
//! generated routes, compared with what istiod 1.30 emits for the same YAML: the istiod function
//! and, where the 1.22.3 reference dump (../shared/interop/istio-config) has the shape, its line.
use serde_json::{json, Value};

use super::tests::{dumped, load_text_dir, WEB};
use super::*;

const MIRROR_SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: shadow, namespace: shop }
spec:
  hosts: [shadow.shop.svc.cluster.local]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 10.1.0.9 }]
";

fn shop_proxy() -> ProxyInfo {
    ProxyInfo { namespace: "shop".into(), ..Default::default() }
}

/// The routes of web's virtual host on port 8080, as istiod dumps them.
fn web_routes(extra: &str) -> Vec<Value> {
    let reg = load_text_dir(&format!("{WEB}---\n{MIRROR_SE}---\n{extra}")).unwrap();
    let g = dumped(&reg, &shop_proxy());
    let vhs = g[ROUTE]["8080"]["virtual_hosts"].as_array().unwrap().clone();
    let vh = vhs.into_iter().find(|v| v["name"] == "web.shop.svc.cluster.local:8080").unwrap();
    vh["routes"].as_array().unwrap().clone()
}

fn vs(http: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web, namespace: shop }}\nspec:\n  hosts: [web]\n  http:\n{http}")
}

/// istiod's default policy (retry.go `cachedDefaultPolicy`); the dump's (line 20883) also has
/// `retriable_status_codes: [503]`, which Istio dropped from the default in 1.24 (#52111).
fn default_retry() -> Value {
    json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}
        }],
        "host_selection_retry_max_attempts": "5"
    })
}

#[test]
fn routes_without_retries_get_istiods_default_retry_policy() {
    let routes = web_routes(&vs("  - route: [{ destination: { host: web } }]\n"));
    assert_eq!(routes[0]["route"]["retry_policy"], default_retry());
    // The default route after the rules (istiod's `BuildDefaultHTTPOutboundRoute`) too; the
    // catch-all virtual host has none (dump: allow_any routes carry no retry_policy).
    assert_eq!(routes.last().unwrap()["name"], "default");
    assert_eq!(routes.last().unwrap()["route"]["retry_policy"], default_retry());
    let reg = load_text_dir(WEB).unwrap();
    let g = dumped(&reg, &shop_proxy());
    let vhs = g[ROUTE]["8080"]["virtual_hosts"].as_array().unwrap();
    assert_eq!(vhs.last().unwrap()["name"], "allow_any");
    assert!(vhs.last().unwrap()["routes"][0]["route"].get("retry_policy").is_none());
}

#[test]
fn retries_set_attempts_per_try_timeout_and_split_status_codes_out_of_retry_on() {
    let routes = web_routes(&vs(
        "  - route: [{ destination: { host: web } }]\n    retries: { attempts: 3, perTryTimeout: 1.5s, retryOn: \"5xx,503,gateway-error,404\" }\n",
    ));
    // `ConvertPolicy` + `parseRetryOn`: status codes go to retriable_status_codes, and
    // retriable-status-codes is added to retry_on for them.
    let mut want = default_retry();
    want["num_retries"] = json!(3);
    want["per_try_timeout"] = json!("1.500s");
    want["retry_on"] = json!("5xx,gateway-error,retriable-status-codes");
    want["retriable_status_codes"] = json!([503, 404]);
    assert_eq!(routes[0]["route"]["retry_policy"], want);
}

#[test]
fn zero_attempts_turn_retries_off_and_ignoring_previous_hosts_can_be_turned_off() {
    let routes = web_routes(&vs(
        "  - match: [{ uri: { prefix: /a } }]\n    route: [{ destination: { host: web } }]\n    retries: { attempts: 0 }\n  - route: [{ destination: { host: web } }]\n    retries: { attempts: 1, retryIgnorePreviousHosts: false }\n",
    ));
    assert!(routes[0]["route"].get("retry_policy").is_none(), "{}", routes[0]);
    let p = &routes[1]["route"]["retry_policy"];
    assert_eq!(p["num_retries"], 1);
    assert!(p.get("retry_host_predicate").is_none(), "{p}");
}

#[test]
fn mirrors_are_per_million_fractions_with_trace_sampling_off_and_no_shadow_suffix() {
    let routes = web_routes(&vs("  - match: [{ uri: { prefix: /one } }]
    route: [{ destination: { host: web } }]
    mirror: { host: shadow }
    mirrorPercentage: { value: 12.5 }
  - match: [{ uri: { prefix: /all } }]
    route: [{ destination: { host: web } }]
    mirror: { host: shadow }
  - route: [{ destination: { host: web } }]
    mirrors:
    - { destination: { host: shadow }, percentage: { value: 0.5 } }
    - { destination: { host: shadow }, percentage: { value: 0 } }
    - { destination: { host: web } }
"));
    // `MirrorPercent`/`MirrorPercentByPolicy` + `TranslateRequestMirrorPolicy`: a Percent is
    // per million, the 100 % default per hundred (the proto default denominator, so absent);
    // DISABLE_SHADOW_HOST_SUFFIX is true by default since 1.28.
    let mirror = |cluster: &str, fraction: Value| {
        json!({"cluster": cluster, "runtime_fraction": {"default_value": fraction}, "trace_sampled": false,
               "disable_shadow_host_suffix_append": true})
    };
    let shadow = "outbound|8080||shadow.shop.svc.cluster.local";
    let web = "outbound|8080||web.shop.svc.cluster.local";
    assert_eq!(
        routes[0]["route"]["request_mirror_policies"],
        json!([mirror(shadow, json!({"numerator": 125000, "denominator": "MILLION"}))])
    );
    assert_eq!(routes[1]["route"]["request_mirror_policies"], json!([mirror(shadow, json!({"numerator": 100}))]));
    // An explicit 0 % mirrors nothing.
    assert_eq!(
        routes[2]["route"]["request_mirror_policies"],
        json!([
            mirror(shadow, json!({"numerator": 5000, "denominator": "MILLION"})),
            mirror(web, json!({"numerator": 100}))
        ])
    );
}

#[test]
fn fault_is_the_routes_fault_filter_config_and_connection_managers_carry_the_filter_before_the_router() {
    let text = format!(
        "{WEB}---\n{MIRROR_SE}---\n{}",
        vs("  - route: [{ destination: { host: web } }]
    fault:
      delay: { fixedDelay: 2s, percentage: { value: 10 } }
      abort: { httpStatus: 503, percentage: { value: 0.1 } }
")
    );
    let reg = load_text_dir(&text).unwrap();
    let g = dumped(&reg, &shop_proxy());
    let vh = &g[ROUTE]["8080"]["virtual_hosts"][0];
    // `TranslateFault`: percentages per million, truncated.
    assert_eq!(
        vh["routes"][0]["typed_per_filter_config"],
        json!({"envoy.filters.http.fault": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {"fixed_delay": "2s", "percentage": {"numerator": 100000, "denominator": "MILLION"}},
            "abort": {"http_status": 503, "percentage": {"numerator": 1000, "denominator": "MILLION"}}
        }})
    );
    // listener_builder.go: fault (an empty HTTPFault, dump line 1098) then the router; the
    // same for inbound (dump line 9999) and proxyless gRPC (grpcgen `supportedFilters`).
    let fault = json!({"name": "envoy.filters.http.fault",
                       "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}});
    let chains = g[LISTENER]["virtualOutbound"]["filter_chains"].as_array().unwrap();
    let hcm = &chains.iter().find(|c| c["filter_chain_match"]["destination_port"] == 8080).unwrap()["filters"][0]
        ["typed_config"];
    let filters = hcm["http_filters"].as_array().unwrap();
    assert_eq!(filters.len(), 2, "{filters:?}");
    assert_eq!(filters[0], fault);
    assert_eq!(filters[1]["name"], "envoy.filters.http.router");
}

#[test]
fn grpc_status_aborts_and_delays_without_percentage_follow_istiod() {
    let routes = web_routes(&vs("  - route: [{ destination: { host: web } }]
    fault:
      delay: { fixedDelay: 100ms }
      abort: { grpcStatus: UNAVAILABLE }
"));
    // `TranslateFault`: a delay without `percentage` takes the deprecated integer percent (0,
    // so no request is delayed); an abort without one has none.
    assert_eq!(
        routes[0]["typed_per_filter_config"]["envoy.filters.http.fault"],
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "delay": {"fixed_delay": "0.100s", "percentage": {}},
            "abort": {"grpc_status": 14}
        })
    );
}

#[test]
fn header_set_overwrites_add_appends_and_the_authority_becomes_the_host_rewrite() {
    let routes = web_routes(&vs("  - route: [{ destination: { host: web } }]
    headers:
      request:
        set: { x-b: \"2\", x-a: \"1\", \":authority\": web.internal }
        add: { x-trace: on }
        remove: [x-secret]
      response:
        set: { cache-control: no-store }
        remove: [server]
"));
    let r = &routes[0];
    // `TranslateHeadersOperations`: sets (sorted by name) before adds, pseudo-headers and Host
    // left out; APPEND_IF_EXISTS_OR_ADD is the enum's default, so absent here.
    assert_eq!(
        r["request_headers_to_add"],
        json!([
            {"header": {"key": "x-a", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-b", "value": "2"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
            {"header": {"key": "x-trace", "value": "on"}}
        ])
    );
    assert_eq!(r["request_headers_to_remove"], json!(["x-secret"]));
    assert_eq!(
        r["response_headers_to_add"],
        json!([{"header": {"key": "cache-control", "value": "no-store"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}])
    );
    assert_eq!(r["response_headers_to_remove"], json!(["server"]));
    assert_eq!(r["route"]["host_rewrite_literal"], "web.internal");
}

fn web_dr(lb: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{ name: web, namespace: shop }}\nspec:\n  host: web\n  trafficPolicy: {{ loadBalancer: {lb} }}\n  subsets: [{{ name: v1, labels: {{ version: v1 }} }}]\n")
}

#[test]
fn consistent_hash_keys_become_route_hash_policies_and_keep_retries_on_the_same_host() {
    let cases = [
        ("{ consistentHash: { httpHeaderName: x-user } }", json!({"header": {"header_name": "x-user"}})),
        (
            "{ consistentHash: { httpCookie: { name: sticky, path: /, ttl: 60s } } }",
            json!({"cookie": {"name": "sticky", "ttl": "60s", "path": "/"}}),
        ),
        ("{ consistentHash: { useSourceIp: true } }", json!({"connection_properties": {"source_ip": true}})),
        ("{ consistentHash: { httpQueryParameterName: user } }", json!({"query_parameter": {"name": "user"}})),
    ];
    for (lb, want) in cases {
        let routes = web_routes(&format!(
            "{}---\n{}",
            web_dr(lb),
            vs("  - route: [{ destination: { host: web, subset: v1 } }]\n")
        ));
        // `ConsistentHashToHashPolicy`, from `HashForHTTPDestination` (the subset inherits the
        // DestinationRule's hash).
        assert_eq!(routes[0]["route"]["hash_policy"], json!([want]), "{lb}");
        // `ConvertPolicy(_, hashPolicy: true)`: no previous-hosts predicate.
        let mut no_predicate = default_retry();
        no_predicate.as_object_mut().unwrap().remove("retry_host_predicate");
        assert_eq!(routes[0]["route"]["retry_policy"], no_predicate, "{lb}");
        // The default route gets the service's hash (`hashForService`) but keeps the default
        // retry policy (`BuildDefaultHTTPOutboundRoute` passes hashPolicy: false).
        let last = routes.last().unwrap();
        assert_eq!(last["route"]["hash_policy"], json!([want]), "{lb}");
        assert_eq!(last["route"]["retry_policy"], default_retry(), "{lb}");
    }
}

#[test]
fn weighted_destinations_each_add_their_hash_and_keep_the_previous_hosts_predicate() {
    let routes = web_routes(&format!(
        "{}---\n{}",
        web_dr("{ consistentHash: { httpHeaderName: x-user } }"),
        vs("  - route:\n    - { destination: { host: web, subset: v1 }, weight: 70 }\n    - { destination: { host: shadow }, weight: 30 }\n"),
    ));
    // Only web has a consistent hash; with two destinations istiod keeps the predicate.
    assert_eq!(routes[0]["route"]["hash_policy"], json!([{"header": {"header_name": "x-user"}}]));
    assert_eq!(routes[0]["route"]["retry_policy"], default_retry());
}

#[test]
fn bookinfo_ratings_and_details_policies_are_generated() {
    let g = dumped(&super::tests::bookinfo(), &ProxyInfo { namespace: "bookinfo".into(), ..Default::default() });
    let ratings = &g[CLUSTER]["outbound|9080||ratings.bookinfo.svc.cluster.local"];
    assert_eq!(ratings["outlier_detection"]["consecutive_5xx"], 5);
    assert_eq!(ratings["circuit_breakers"]["thresholds"][0]["max_connections"], 100);
    let vhs = g[ROUTE]["9080"]["virtual_hosts"].as_array().unwrap();
    let routes = |name: &str| vhs.iter().find(|v| v["name"] == name).unwrap()["routes"].as_array().unwrap().clone();
    let r = routes("ratings.bookinfo.svc.cluster.local:9080");
    assert_eq!(r[2]["route"]["retry_policy"]["retriable_status_codes"], json!([503]));
    assert_eq!(r[2]["request_headers_to_add"][0]["header"]["key"], "x-bookinfo-route");
    let d = routes("details.bookinfo.svc.cluster.local:9080");
    assert_eq!(d[0]["typed_per_filter_config"]["envoy.filters.http.fault"]["abort"]["http_status"], 503);
    assert!(d[1].get("typed_per_filter_config").is_none());
}
