//! The control plane checks what it generates with the API layer (decode and strict field
//! check); translating into runtime config is the proxy's part. Here the two meet without a
//! network: every resource generated for bookinfo's proxies goes through the proxy's own xDS
//! translation, as a sidecar would apply it.
use outrigger_xds::generate::{generate, is_api_listener, ProxyInfo, LISTENER};

fn proxy(name: &str, labels: &[(&str, &str)], ip: &str, proxyless: bool) -> ProxyInfo {
    ProxyInfo {
        id: format!("sidecar~{ip}~{name}.bookinfo~bookinfo.svc.cluster.local"),
        namespace: "bookinfo".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        instance_ip: Some(ip.into()),
        proxyless,
    }
}

#[test]
fn every_resource_generated_for_bookinfo_translates_in_the_proxy() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../xds/testdata/bookinfo");
    let reg = outrigger_xds::istio::load_dir(&dir).unwrap();
    let proxies = [
        proxy("productpage-v1", &[("app", "productpage"), ("version", "v1")], "10.0.0.10", false),
        proxy("reviews-v2", &[("app", "reviews"), ("version", "v2")], "10.0.0.22", false),
        proxy("unknown", &[], "10.0.0.99", false),
    ];
    let mut checked = 0;
    for p in &proxies {
        let resources = generate(&reg, p).unwrap();
        for (t, by_name) in &resources {
            for (name, any) in by_name {
                // API listeners are for proxyless gRPC clients, which the proxy is not.
                if *t == LISTENER && is_api_listener(name) {
                    continue;
                }
                if let Err(e) = outrigger_proxy::translate::resource::decode(t, any) {
                    panic!("{}: {t} {name}: {e}", p.id);
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} resources generated");
}
