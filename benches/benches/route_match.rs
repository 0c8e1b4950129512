//! Route matching over 10,000 routes, through the proxy's public API.
//!
//! An Envoy `RouteConfiguration` (envoy-types structs, as xDS or a bootstrap file would deliver it)
//! with one virtual host of 10,000 routes is compiled by `translate_route_config`, then looked up with
//! `route_match::select` for a request that hits an early route, a late route, or nothing.
//!
//! Routes alternate between exact `path` matches (even index) and `prefix` matches (odd index). The
//! paths use service names of different lengths, so the prefix index holds many distinct prefix
//! lengths, as a real mesh config would, rather than one length that a single hash probe resolves.
//!
//! A second group compiles the same routes with `case_sensitive: false`: the index cannot describe
//! those, so every lookup walks the routes in order. It shows what the index saves and is the
//! worst case a user can configure.
//!
//! A third group (`route_match_mesh_10k_hosts`) has the shape a mesh control plane sends a
//! sidecar: 10,000 virtual hosts, one per service, each with the six domains a Kubernetes service
//! is reached by (`svc-N.scale.svc.cluster.local`, `svc-N.scale`, `svc-N`, each with and without
//! `:8080`) and one `prefix: /` route: the cost is the virtual-host lookup.
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost,
};
use envoy_types::pb::google::protobuf::BoolValue;
use http::{HeaderMap, HeaderValue, Method};
use outrigger_proxy::config::RouteTable;
use outrigger_proxy::http::route_match::{select, RouteInput};
use outrigger_proxy::translate::translate_route_config;

const ROUTES: usize = 10_000;
/// Service names of different lengths: the prefixes get many distinct lengths.
const WORDS: [&str; 8] =
    ["db", "auth", "users", "orders", "payments", "inventory", "recommendations", "notification-gateway"];

/// Route `i`: even → exact `/api/vN/<word>-<i>/get`, odd → prefix `/api/vN/<word>-<i>/`.
fn route_path(i: usize) -> (bool, String) {
    let base = format!("/api/v{}/{}-{i}/", i % 3 + 1, WORDS[i % WORDS.len()]);
    if i % 2 == 0 {
        (true, format!("{base}get"))
    } else {
        (false, base)
    }
}

fn route_config(case_sensitive: bool) -> RouteConfiguration {
    let routes = (0..ROUTES)
        .map(|i| {
            let (exact, path) = route_path(i);
            Route {
                name: format!("r{i}"),
                r#match: Some(RouteMatch {
                    path_specifier: Some(if exact { PathSpecifier::Path(path) } else { PathSpecifier::Prefix(path) }),
                    case_sensitive: (!case_sensitive).then_some(BoolValue { value: false }),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(format!("cluster-{}", i % 100))),
                    ..Default::default()
                })),
                ..Default::default()
            }
        })
        .collect();
    RouteConfiguration {
        name: "bench".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn headers() -> HeaderMap {
    // What a typical proxied request carries by the time it is routed.
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("bench.example.com"));
    h.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert("x-request-id", HeaderValue::from_static("9f1c7a3e-2b1d-4c55-9a0e-5d1a2b3c4d5e"));
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    h
}

/// (bench id, request path, expected route name or None for a miss).
fn cases() -> Vec<(&'static str, String, Option<String>)> {
    let exact = |i: usize| route_path(i).1;
    let under_prefix = |i: usize| format!("{}items/42", route_path(i).1);
    vec![
        ("exact_early", exact(0), Some("r0".into())),
        ("exact_late", exact(ROUTES - 2), Some(format!("r{}", ROUTES - 2))),
        ("prefix_early", under_prefix(1), Some("r1".into())),
        ("prefix_late", under_prefix(ROUTES - 1), Some(format!("r{}", ROUTES - 1))),
        // Long enough that every indexed prefix length is probed.
        ("miss", "/api/v2/no-such-service-anywhere-in-this-mesh/items/42".into(), None),
    ]
}

fn bench_table(c: &mut Criterion, group_name: &str, table: &RouteTable) {
    let headers = headers();
    let method = Method::GET;
    let mut group = c.benchmark_group(group_name);
    for (id, path, expected) in cases() {
        let input = RouteInput {
            host: "bench.example.com",
            path: &path,
            query: None,
            method: &method,
            scheme: "http",
            headers: &headers,
        };
        // Check the benchmark measures what it says before timing it.
        let got = select(table, &input).map(|r| r.name.clone());
        assert_eq!(got, expected, "{group_name}/{id}: wrong route for {path}");
        group.bench_function(id, |b| b.iter(|| select(black_box(table), black_box(&input)).is_some()));
    }
    group.finish();
}

const SERVICES: usize = 10_000;

fn mesh_config() -> RouteConfiguration {
    let virtual_hosts = (0..SERVICES)
        .map(|i| {
            let host = format!("svc-{i}.scale.svc.cluster.local");
            let domains = [host.clone(), format!("svc-{i}.scale"), format!("svc-{i}")]
                .into_iter()
                .flat_map(|d| [format!("{d}:8080"), d])
                .collect();
            VirtualHost {
                name: format!("{host}:8080"),
                domains,
                routes: vec![Route {
                    name: "default".into(),
                    r#match: Some(RouteMatch {
                        path_specifier: Some(PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(Action::Route(RouteAction {
                        cluster_specifier: Some(ClusterSpecifier::Cluster(format!("outbound|8080||{host}"))),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    RouteConfiguration { name: "8080".into(), virtual_hosts, ..Default::default() }
}

fn mesh(c: &mut Criterion) {
    let table = translate_route_config(&mesh_config()).expect("mesh routes compile");
    let headers = headers();
    let method = Method::GET;
    let mut group = c.benchmark_group("route_match_mesh_10k_hosts");
    let cases = [
        ("fqdn_port", "svc-4321.scale.svc.cluster.local:8080", true),
        ("short", "svc-8765", true),
        ("unknown_host", "svc-12345.other.svc.cluster.local:8080", false),
    ];
    for (id, host, found) in cases {
        let input =
            RouteInput { host, path: "/api/items/42", query: None, method: &method, scheme: "http", headers: &headers };
        assert_eq!(select(&table, &input).is_some(), found, "{id}");
        group.bench_function(id, |b| b.iter(|| select(black_box(&table), black_box(&input)).is_some()));
    }
    group.finish();
}

fn route_match(c: &mut Criterion) {
    let table = translate_route_config(&route_config(true)).expect("route config compiles");
    bench_table(c, "route_match_10k", &table);
    let table = translate_route_config(&route_config(false)).expect("route config compiles");
    bench_table(c, "route_match_10k_case_insensitive", &table);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = route_match, mesh
}
criterion_main!(benches);
