//! Istio YAML in, Envoy resources out, compared on the fields that matter. Bookinfo (written as
//! ServiceEntry/WorkloadEntry) is the fixture, with its reviews canary.
use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::istio::load_dir;

fn bookinfo() -> Registry {
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
fn generated(reg: &Registry, p: &ProxyInfo) -> BTreeMap<&'static str, BTreeMap<String, Value>> {
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
    let text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: { name: a }\nspec: { hosts: [a.example.com], ports: [{ number: 80, name: http }] }\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: b }\nspec:\n  hosts: [a.example.com]\n  http:\n  - route: [{ destination: { host: a.example.com } }]\n    retries: { attempts: 3 }\n";
    crate::istio::load::load_text("vs.yaml", text, &mut reg, &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(e.contains("vs.yaml") && e.contains("document 1") && e.contains("VirtualService default/b"), "{e}");
    assert!(e.contains("spec.http[0]") && e.contains("retries"), "{e}");
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
