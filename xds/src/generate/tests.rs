//! Istio YAML in, Envoy resources out, compared on the fields that matter. Bookinfo (written as
//! ServiceEntry/WorkloadEntry) is the fixture, with its reviews canary.
use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::istio::load_dir;

pub(super) fn bookinfo() -> Registry {
    load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/bookinfo")).unwrap()
}

fn proxy(labels: &[(&str, &str)]) -> ProxyInfo {
    ProxyInfo {
        id: "sidecar~10.0.0.10~productpage-v1.bookinfo~bookinfo.svc.cluster.local".into(),
        namespace: "bookinfo".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        instance_ip: Some("10.0.0.10".into()),
        proxyless: false,
    }
}

/// Generated resources back as JSON, by type and name.
pub(super) fn generated(reg: &Registry, p: &ProxyInfo) -> BTreeMap<&'static str, BTreeMap<String, Value>> {
    let pool = outrigger_api::descriptor_pool();
    let res = generate(reg, p).unwrap();
    res.into_iter()
        .map(|(t, by)| (t, by.into_iter().map(|(n, a)| (n, outrigger_api::json::to_json(&pool, &a))).collect()))
        .collect()
}

#[test]
fn bookinfo_clusters_follow_istio_naming_with_subsets() {
    let g = generated(&bookinfo(), &proxy(&[("app", "productpage"), ("version", "v1")]));
    let clusters = &g[CLUSTER];
    for name in [
        "outbound|9080||reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v1|reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
        "outbound|9080|v3|reviews.bookinfo.svc.cluster.local",
        "outbound|9080||details.bookinfo.svc.cluster.local",
        "outbound|3306||mysqldb.bookinfo.svc.cluster.local",
        "inbound|9080||",
    ] {
        assert!(clusters.contains_key(name), "missing {name}: {:?}", clusters.keys());
    }
    let v2 = &clusters["outbound|9080|v2|reviews.bookinfo.svc.cluster.local"];
    assert_eq!(v2["type"], "EDS");
    assert_eq!(v2["lbPolicy"], "LEAST_REQUEST");
    // Subset endpoints are the matching workloads only.
    let eds = &g[ENDPOINT]["outbound|9080|v2|reviews.bookinfo.svc.cluster.local"];
    let eps = eds["endpoints"][0]["lbEndpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0]["endpoint"]["address"]["socketAddress"]["address"], "10.0.0.22");
    let all = &g[ENDPOINT]["outbound|9080||reviews.bookinfo.svc.cluster.local"];
    assert_eq!(all["endpoints"][0]["lbEndpoints"].as_array().unwrap().len(), 3);
    // A workload's named port overrides the service port.
    let ratings = &g[ENDPOINT]["outbound|9080||ratings.bookinfo.svc.cluster.local"];
    assert_eq!(ratings["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"]["socketAddress"]["portValue"], 9081);
}

#[test]
fn reviews_canary_routes_jason_to_v2_and_splits_the_rest() {
    let g = generated(&bookinfo(), &proxy(&[("app", "productpage")]));
    let rc = &g[ROUTE]["9080"];
    let vh = rc["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["domains"].as_array().unwrap().iter().any(|d| d == "reviews"))
        .expect("reviews virtual host with its short name");
    let routes = vh["routes"].as_array().unwrap();
    assert_eq!(routes[0]["match"]["headers"][0]["name"], "end-user");
    assert_eq!(routes[0]["match"]["headers"][0]["stringMatch"]["exact"], "jason");
    assert_eq!(routes[0]["route"]["cluster"], "outbound|9080|v2|reviews.bookinfo.svc.cluster.local");
    let w = routes[1]["route"]["weightedClusters"]["clusters"].as_array().unwrap();
    assert_eq!(w[0]["name"], "outbound|9080|v1|reviews.bookinfo.svc.cluster.local");
    assert_eq!(w[0]["weight"], 50);
    assert_eq!(w[1]["name"], "outbound|9080|v3|reviews.bookinfo.svc.cluster.local");
    assert_eq!(routes[1]["route"]["timeout"], "2s");
    assert!(vh["domains"].as_array().unwrap().iter().any(|d| d == "reviews.bookinfo.svc.cluster.local:9080"));
}

#[test]
fn rewrites_redirects_and_method_matches_translate() {
    let g = generated(&bookinfo(), &proxy(&[]));
    let rc = &g[ROUTE]["9080"];
    let vh = rc["virtualHosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "ratings.bookinfo.svc.cluster.local:9080")
        .unwrap();
    let r = vh["routes"].as_array().unwrap();
    assert_eq!(r[0]["match"]["prefix"], "/legacy/");
    assert_eq!(r[0]["match"]["headers"][0]["name"], ":method");
    assert_eq!(r[0]["route"]["prefixRewrite"], "/v1/");
    assert_eq!(r[1]["match"]["path"], "/old");
    assert_eq!(r[1]["redirect"]["pathRedirect"], "/new");
    assert_eq!(r[1]["redirect"]["responseCode"], "PERMANENT_REDIRECT");
}

#[test]
fn virtual_listeners_have_a_chain_per_port_and_original_destination() {
    let g = generated(&bookinfo(), &proxy(&[("app", "productpage"), ("version", "v1")]));
    let out = &g[LISTENER]["virtualOutbound"];
    assert_eq!(out["address"]["socketAddress"]["portValue"], 15001);
    assert_eq!(out["address"]["socketAddress"]["address"], "10.0.0.10");
    assert_eq!(out["useOriginalDst"], true);
    let chains = out["filterChains"].as_array().unwrap();
    let http = chains.iter().find(|c| c["filterChainMatch"]["destinationPort"] == 9080).unwrap();
    assert_eq!(http["filters"][0]["typedConfig"]["rds"]["routeConfigName"], "9080");
    let tcp = chains.iter().find(|c| c["filterChainMatch"]["destinationPort"] == 3306).unwrap();
    assert_eq!(tcp["filters"][0]["typedConfig"]["cluster"], "outbound|3306||mysqldb.bookinfo.svc.cluster.local");
    let inbound = &g[LISTENER]["virtualInbound"];
    assert_eq!(inbound["address"]["socketAddress"]["portValue"], 15006);
    let c = &inbound["filterChains"][0];
    assert_eq!(c["filterChainMatch"]["destinationPort"], 9080);
}

#[test]
fn sidecar_resource_limits_what_a_namespace_receives() {
    let mut reg = bookinfo();
    let text = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: default, namespace: bookinfo }\nspec:\n  egress: [{ hosts: [\"./reviews.bookinfo.svc.cluster.local\"] }]\n";
    let mut errors = vec![];
    crate::istio::load::load_text("sidecar.yaml", text, &mut reg, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let g = generated(&reg, &proxy(&[]));
    assert!(
        g[CLUSTER].keys().all(|k| !k.starts_with("outbound") || k.ends_with("reviews.bookinfo.svc.cluster.local")),
        "{:?}",
        g[CLUSTER].keys()
    );
}

#[test]
fn bad_documents_name_file_document_and_field() {
    let mut reg = Registry::default();
    let mut errors = vec![];
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: a }\nspec: { hosts: [a.example.com], ports: [{ number: 80, name: http }] }\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: b }\nspec:\n  hosts: [a.example.com]\n  http:\n  - route: [{ destination: { host: a.example.com } }]\n    corsPolicy: { allowOrigins: [{ exact: \"*\" }] }\n";
    crate::istio::load::load_text("vs.yaml", text, &mut reg, &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(e.contains("vs.yaml") && e.contains("document 1") && e.contains("VirtualService default/b"), "{e}");
    assert!(e.contains("spec.http[0]") && e.contains("corsPolicy"), "{e}");
    let mut errors = vec![];
    crate::istio::load::load_text(
        "k.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: { name: g }\nspec: {}\n",
        &mut reg,
        &mut errors,
    );
    assert!(errors[0].to_string().contains("Gateway"), "{:?}", errors);
}

#[test]
fn proxyless_grpc_clients_get_api_listeners_and_sidecars_do_not() {
    let reg = bookinfo();
    let sidecar = generated(&reg, &proxy(&[]));
    assert!(!sidecar[LISTENER].keys().any(|n| is_api_listener(n)));
    let grpc = generated(&reg, &ProxyInfo { proxyless: true, ..proxy(&[]) });
    let api = &grpc[LISTENER]["reviews.bookinfo.svc.cluster.local:9080"];
    assert_eq!(api["apiListener"]["apiListener"]["rds"]["routeConfigName"], "reviews.bookinfo.svc.cluster.local:9080");
    let rc = &grpc[ROUTE]["reviews.bookinfo.svc.cluster.local:9080"];
    assert_eq!(rc["virtualHosts"][0]["domains"][0], "reviews.bookinfo.svc.cluster.local:9080");
}

#[test]
fn namespace_scoped_export_is_refused_rather_than_widened() {
    let dir = std::env::temp_dir().join(format!("outrigger-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("se.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: s, namespace: a }\nspec: { hosts: [s.example.com], ports: [{ number: 80, name: http }], exportTo: [\".\"] }\n",
    )
    .unwrap();
    let errors = load_dir(&dir).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(errors[0].to_string().contains("spec.exportTo") && errors[0].to_string().contains("se.yaml"), "{errors:?}");
}

#[test]
fn load_assignments_are_the_ones_generate_serves() {
    let reg = bookinfo();
    let res = generate(&reg, &proxy(&[("app", "productpage"), ("version", "v1")])).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (meta, se) in &reg.service_entries {
        for (name, any) in load_assignments(&reg, meta, se) {
            assert_eq!(Some(&any), res[ENDPOINT].get(&name), "{name}");
            seen.insert(name);
        }
    }
    // Every CLA of Bookinfo (all of it is EDS) comes from one ServiceEntry or another.
    assert_eq!(seen.len(), res[ENDPOINT].len());
    assert!(seen.contains("outbound|9080|v2|reviews.bookinfo.svc.cluster.local"));
}

#[test]
fn indexed_lookups_agree_with_scans() {
    let mut reg = bookinfo();
    let text = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: { name: elsewhere, namespace: other }\nspec: { address: 10.9.0.1, labels: { app: reviews, version: v2 } }\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: all, namespace: bookinfo }\nspec: { hosts: [all.bookinfo.svc.cluster.local], ports: [{ number: 80, name: http }], workloadSelector: { labels: {} } }\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: reviews-later, namespace: bookinfo }\nspec: { host: reviews.bookinfo.svc.cluster.local, subsets: [{ name: later }] }\n";
    let mut errors = vec![];
    crate::istio::load::load_text("extra.yaml", text, &mut reg, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let p = proxy(&[]);
    let idx = Index::new(&reg, &p);
    for (meta, se) in &reg.service_entries {
        assert_eq!(idx.endpoints(&meta.namespace, se), endpoints_scan(&reg, &meta.namespace, se), "{}", meta.name);
        for host in &se.hosts {
            assert_eq!(
                idx.destination_rule(host).map(|d| d as *const _),
                destination_rule_scan(&reg, host).map(|d| d as *const _),
                "{host}"
            );
        }
    }
    let all = reg.service_entries.iter().find(|(m, _)| m.name == "all").unwrap();
    assert_eq!(idx.endpoints("bookinfo", &all.1).len(), 6);
    // The first DestinationRule for a host wins, as before.
    assert!(idx.destination_rule("reviews.bookinfo.svc.cluster.local").unwrap().subsets.len() == 3);
}

/// A directory holding `text` as one file, loaded as `serve` loads it (with the cross-document
/// checks).
pub(super) fn load_text_dir(text: &str) -> Result<Registry, Vec<crate::istio::LoadError>> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("outrigger-gen-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.yaml"), text).unwrap();
    let r = load_dir(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// As [`generated`], without the proxy's acceptance check: the shape of what is generated for
/// fields the proxy may not take yet.
pub(super) fn generated_unchecked(reg: &Registry, p: &ProxyInfo) -> BTreeMap<&'static str, BTreeMap<String, Value>> {
    let pool = outrigger_api::descriptor_pool();
    generate_with(reg, p, false)
        .unwrap()
        .into_iter()
        .map(|(t, by)| (t, by.into_iter().map(|(n, a)| (n, outrigger_api::json::to_json(&pool, &a))).collect()))
        .collect()
}

pub(super) const WEB: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: web, namespace: shop }
spec:
  hosts: [web.shop.svc.cluster.local]
  ports: [{ number: 8080, name: http, protocol: HTTP }]
  resolution: STATIC
  endpoints: [{ address: 10.1.0.1 }]
";

fn shop_routes(extra: &str, proxy_ns: &str) -> Vec<Value> {
    let reg = load_text_dir(&format!("{WEB}---\n{extra}")).unwrap();
    let g = generated_unchecked(&reg, &ProxyInfo { namespace: proxy_ns.into(), ..Default::default() });
    g[ROUTE]["8080"]["virtualHosts"].as_array().unwrap().clone()
}

#[test]
fn uri_rewrite_is_prefix_rewrite_and_uri_regex_rewrite_is_regex_rewrite_as_istiod_generates() {
    let vhs = shop_routes(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: web, namespace: shop }
spec:
  hosts: [web]
  http:
  - match: [{ uri: { regex: \"^/api/v[0-9]+/.*\" } }]
    rewrite: { uri: /legacy }
    route: [{ destination: { host: web } }]
  - match: [{ uri: { regex: \"^/items/([0-9]+)$\" } }]
    rewrite: { uriRegexRewrite: { match: \"^/items/([0-9]+)$\", rewrite: \"/item?id=\\\\1\" } }
    route: [{ destination: { host: web } }]
",
        "shop",
    );
    let routes = vhs[0]["routes"].as_array().unwrap();
    // istiod: `rewrite.uri` is prefix_rewrite whatever the match (for a regex, Envoy swaps the
    // whole path).
    assert_eq!(routes[0]["match"]["safeRegex"]["regex"], "^/api/v[0-9]+/.*");
    assert_eq!(routes[0]["route"]["prefixRewrite"], "/legacy");
    assert!(routes[0]["route"].get("regexRewrite").is_none(), "{}", routes[0]);
    assert_eq!(routes[1]["route"]["regexRewrite"]["pattern"]["regex"], "^/items/([0-9]+)$");
    assert_eq!(routes[1]["route"]["regexRewrite"]["substitution"], "/item?id=\\1");
    assert!(routes[1]["route"].get("prefixRewrite").is_none(), "{}", routes[1]);
}

#[test]
fn uri_and_uri_regex_rewrite_together_are_refused_by_name() {
    let errors = load_text_dir(&format!(
        "{WEB}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web, namespace: shop }}\nspec:\n  hosts: [web]\n  http:\n  - rewrite: {{ uri: /a, uriRegexRewrite: {{ match: x, rewrite: y }} }}\n    route: [{{ destination: {{ host: web }} }}]\n"
    ))
    .unwrap_err();
    let e = errors[0].to_string();
    assert!(e.contains("document 1 (VirtualService shop/web): spec.http[0].rewrite: uri and uriRegexRewrite"), "{e}");
}

#[test]
fn unknown_hosts_get_istio_catch_all_virtual_host_for_the_outbound_mode() {
    let allow = shop_routes("", "shop");
    let last = allow.last().unwrap();
    assert_eq!(last["name"], "allow_any");
    assert_eq!(last["domains"], serde_json::json!(["*"]));
    assert_eq!(last["routes"][0]["route"]["cluster"], "PassthroughCluster");
    let block = shop_routes(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: { name: default, namespace: shop }\nspec: { outboundTrafficPolicy: { mode: REGISTRY_ONLY } }\n",
        "shop",
    );
    let last = block.last().unwrap();
    assert_eq!(last["name"], "block_all");
    assert_eq!(last["routes"][0]["directResponse"]["status"], 502);
    // The Sidecar is the shop namespace's: other namespaces keep the mesh default.
    assert_eq!(shop_routes("", "elsewhere").last().unwrap()["name"], "allow_any");
}

const DB: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: db, namespace: data }
spec:
  hosts: [db.data.svc.cluster.local]
  ports: [{ number: 5432, name: tcp-pg, protocol: TCP }, { number: 5433, name: tcp-replica, protocol: TCP }]
  resolution: STATIC
  endpoints:
  - { address: 10.2.0.1, labels: { version: v1 } }
  - { address: 10.2.0.2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: db, namespace: data }
spec:
  host: db
  subsets: [{ name: v1, labels: { version: v1 } }, { name: v2, labels: { version: v2 } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: db, namespace: data }
spec:
  hosts: [db]
  tcp:
  - match: [{ port: 5432, sourceLabels: { app: batch } }]
    route: [{ destination: { host: db, subset: v2 } }]
  - match: [{ port: 5432 }]
    route:
    - { destination: { host: db, subset: v1 }, weight: 80 }
    - { destination: { host: db, subset: v2 }, weight: 20 }
";

fn outbound_tcp(reg: &Registry, labels: &[(&str, &str)], port: u16) -> Value {
    let p = ProxyInfo {
        namespace: "data".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let g = generated(reg, &p);
    let chains = g[LISTENER]["virtualOutbound"]["filterChains"].as_array().unwrap().clone();
    let chain = chains.iter().find(|c| c["filterChainMatch"]["destinationPort"] == port).unwrap();
    chain["filters"][0]["typedConfig"].clone()
}

#[test]
fn tcp_routes_send_a_port_to_weighted_subsets_and_match_source_labels() {
    let reg = load_text_dir(DB).unwrap();
    let tcp = outbound_tcp(&reg, &[("app", "web")], 5432);
    let w = tcp["weightedClusters"]["clusters"].as_array().unwrap();
    assert_eq!(w.len(), 2, "{tcp}");
    assert_eq!(w[0]["name"], "outbound|5432|v1|db.data.svc.cluster.local");
    assert_eq!(w[0]["weight"], 80);
    assert_eq!(w[1]["name"], "outbound|5432|v2|db.data.svc.cluster.local");
    assert_eq!(w[1]["weight"], 20);
    assert_eq!(tcp["statPrefix"], "db.data");
    // The first rule whose match holds for the proxy wins: batch jobs go to v2 only.
    let batch = outbound_tcp(&reg, &[("app", "batch")], 5432);
    assert_eq!(batch["cluster"], "outbound|5432|v2|db.data.svc.cluster.local");
    // No rule matches the other port: the service's own cluster.
    let replica = outbound_tcp(&reg, &[("app", "web")], 5433);
    assert_eq!(replica["cluster"], "outbound|5433||db.data.svc.cluster.local");
}

#[test]
fn tcp_route_destination_subnets_and_source_subnet_are_refused_by_name() {
    let text = DB.replace(
        "match: [{ port: 5432 }]",
        "match: [{ port: 5432, destinationSubnets: [10.2.0.0/16], sourceSubnet: 10.0.0.0/8 }]",
    );
    let errors = load_text_dir(&text).unwrap_err();
    let all = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(
        all.contains(
            "config.yaml: document 2 (VirtualService data/db): spec.tcp[1].match[0].destinationSubnets: not supported"
        ),
        "{all}"
    );
    assert!(all.contains("spec.tcp[1].match[0].sourceSubnet: not supported"), "{all}");
}

#[test]
fn workload_locality_is_the_endpoint_locality_in_the_load_assignment() {
    let text = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: api, namespace: geo }
spec:
  hosts: [api.geo.svc.cluster.local]
  ports: [{ number: 80, name: http }]
  resolution: STATIC
  workloadSelector: { labels: { app: api } }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: west, namespace: geo }
spec: { address: 10.3.0.1, labels: { app: api }, locality: us-west1/us-west1-b, weight: 3 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: east, namespace: geo }
spec: { address: 10.3.0.2, labels: { app: api }, locality: us-east1/us-east1-c/rack7 }
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: west2, namespace: geo }
spec: { address: 10.3.0.3, labels: { app: api }, locality: us-west1/us-west1-b }
";
    let reg = load_text_dir(text).unwrap();
    let g = generated(&reg, &ProxyInfo { namespace: "geo".into(), ..Default::default() });
    let groups = g[ENDPOINT]["outbound|80||api.geo.svc.cluster.local"]["endpoints"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 2, "{groups:?}");
    // Sorted by locality, as istiod sorts them; weighted by the sum of their endpoints' weights.
    assert_eq!(
        groups[0]["locality"],
        serde_json::json!({"region": "us-east1", "zone": "us-east1-c", "subZone": "rack7"})
    );
    assert_eq!(groups[0]["lbEndpoints"].as_array().unwrap().len(), 1);
    assert_eq!(groups[1]["locality"], serde_json::json!({"region": "us-west1", "zone": "us-west1-b"}));
    assert_eq!(groups[1]["lbEndpoints"].as_array().unwrap().len(), 2);
    assert_eq!(groups[1]["loadBalancingWeight"], 4);
}

#[test]
fn workload_service_account_network_and_a_custom_trust_domain_are_refused_by_name() {
    let errors = load_text_dir(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: { name: vm, namespace: geo }
spec: { address: 10.3.0.1, serviceAccount: vm-sa, network: net2 }
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: { name: ext, namespace: geo }
spec:
  hosts: [ext.example.com]
  ports: [{ number: 80, name: http }]
  endpoints: [{ address: 10.4.0.1, serviceAccount: ext-sa }]
",
    )
    .unwrap_err();
    let all = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(
        all.contains("config.yaml: document 0 (WorkloadEntry geo/vm): spec.serviceAccount: not supported"),
        "{all}"
    );
    assert!(all.contains("(WorkloadEntry geo/vm): spec.network: not supported"), "{all}");
    assert!(
        all.contains("document 1 (ServiceEntry geo/ext): spec.endpoints[0].serviceAccount: not supported"),
        "{all}"
    );

    let dir = std::env::temp_dir().join(format!("outrigger-mesh-td-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mesh.yaml"), "trustDomain: example.org\n").unwrap();
    let errors = load_dir(&dir).unwrap_err();
    std::fs::write(dir.join("mesh.yaml"), "trustDomain: cluster.local\n").unwrap();
    let default_ok = load_dir(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        errors[0].to_string().contains("mesh.yaml: document 0 (mesh): trustDomain: only \"cluster.local\""),
        "{errors:?}"
    );
    assert!(default_ok.is_ok(), "{default_ok:?}");
}

#[test]
fn an_invalid_regex_is_a_load_error_naming_its_field() {
    let errors = load_text_dir(&format!(
        "{WEB}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{ name: web, namespace: shop }}\nspec:\n  hosts: [web]\n  http:\n  - match: [{{ headers: {{ x-user: {{ regex: \"(unclosed\" }} }} }}]\n    route: [{{ destination: {{ host: web }} }}]\n"
    ))
    .unwrap_err();
    let e = errors[0].to_string();
    assert!(
        e.contains("document 1 (VirtualService shop/web): spec.http[0].match[0].headers.x-user.regex: \"(unclosed\" is not a valid regex"),
        "{e}"
    );
}

/// Generated resources (checked, as `generate` checks them) in the form of istiod's config
/// dumps: proto field names, `@type` on every Any, int64 as strings. By type and name.
pub(super) fn dumped(reg: &Registry, p: &ProxyInfo) -> BTreeMap<&'static str, BTreeMap<String, Value>> {
    let pool = outrigger_api::descriptor_pool();
    let opts = prost_reflect::SerializeOptions::new().skip_default_fields(true).use_proto_field_name(true);
    let json = |a: &Any| {
        let desc = pool.get_message_by_name(outrigger_api::type_name(&a.type_url)).unwrap();
        let msg = prost_reflect::DynamicMessage::decode(desc, a.value.as_slice()).unwrap();
        let mut ser = serde_json::Serializer::new(Vec::new());
        msg.serialize_with_options(&mut ser, &opts).unwrap();
        serde_json::from_slice::<Value>(&ser.into_inner()).unwrap()
    };
    let res = generate(reg, p).unwrap();
    res.into_iter().map(|(t, by)| (t, by.into_iter().map(|(n, a)| (n, json(&a))).collect())).collect()
}
