//! Compiling a large configuration, through the proxy's public API.
//!
//! `config_compile_10k_clusters`: an Envoy v3 bootstrap in YAML with one HTTP listener and 10,000
//! STATIC clusters (one endpoint each, `connect_timeout`, `ROUND_ROBIN`), as `outrigger -c` reads it:
//! * `parse_bootstrap` — YAML text → envoy-types `Bootstrap` (descriptor-driven proto3 JSON mapping
//!   plus the strict unknown-field/extension check);
//! * `translate_bootstrap` — `Bootstrap` → the compiled runtime config (validation, cluster
//!   reference check, the `/config_dump` copy);
//! * `parse_and_translate` — both, i.e. the whole start-up config cost.
//!
//! `route_config_compile_10k_routes`: `translate_route_config` of a `RouteConfiguration` with
//! 10,000 prefix/exact routes — what an RDS update of that size costs before it is swapped in.
//!
//! `xds_generate_10k_services`: the control plane's side, through outrigger-xds's public API, for
//! the registry of the `xds_scale` bench (10,000 ServiceEntries `svc-i.scale.svc.cluster.local`,
//! one HTTP port 8080, STATIC, 3 endpoints each):
//! * `generate_with` — one proxy class's whole configuration as the server generates it (no
//!   acceptance check): 10,003 clusters, 10,000 CLAs, one RouteConfiguration, two listeners;
//! * `load_assignments` — one ServiceEntry's CLAs, what an endpoint change re-sends.
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier, Route, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost,
};
use outrigger_proxy::translate::{parse_bootstrap, translate_bootstrap, translate_route_config};
use outrigger_xds::generate::{generate_with, load_assignments, ProxyInfo, CLUSTER, ENDPOINT};
use outrigger_xds::istio::model::{Metadata, Port, Resolution, ServiceEntry, WorkloadEntry};
use outrigger_xds::istio::Registry;

const CLUSTERS: usize = 10_000;
const ROUTES: usize = 10_000;
const SERVICES: usize = 10_000;

fn bootstrap_yaml(clusters: usize) -> String {
    let mut y = String::with_capacity(clusters * 400 + 2048);
    y.push_str(
        r#"node:
  id: bench
  cluster: bench
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
static_resources:
  listeners:
  - name: http
    address:
      socket_address: { address: 127.0.0.1, port_value: 10000 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: cluster-0 }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
"#,
    );
    for i in 0..clusters {
        // Loopback addresses only; nothing connects to them.
        let _ = write!(
            y,
            r#"  - name: cluster-{i}
    type: STATIC
    connect_timeout: 1s
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: cluster-{i}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.{}.{}, port_value: 8080 }}
"#,
            i / 250,
            i % 250 + 1
        );
    }
    y
}

fn route_config(routes: usize) -> RouteConfiguration {
    let routes = (0..routes)
        .map(|i| Route {
            name: format!("r{i}"),
            r#match: Some(RouteMatch {
                path_specifier: Some(if i % 2 == 0 {
                    PathSpecifier::Path(format!("/api/service-{i}/get"))
                } else {
                    PathSpecifier::Prefix(format!("/api/service-{i}/"))
                }),
                ..Default::default()
            }),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(format!("cluster-{}", i % 100))),
                ..Default::default()
            })),
            ..Default::default()
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

/// The `xds_scale` bench's registry, built in memory.
fn scale_registry(services: usize) -> Registry {
    let mut reg = Registry::default();
    for i in 0..services {
        let (a, b) = (i / 250, i % 250);
        let meta = Metadata { name: format!("svc-{i}"), namespace: "scale".into(), ..Default::default() };
        let se = ServiceEntry {
            hosts: vec![format!("svc-{i}.scale.svc.cluster.local")],
            ports: vec![Port { number: 8080, protocol: "HTTP".into(), name: "http".into(), target_port: None }],
            resolution: Resolution::Static,
            endpoints: (1..=3)
                .map(|o| WorkloadEntry { address: format!("10.{a}.{b}.{o}"), ..Default::default() })
                .collect(),
            ..Default::default()
        };
        reg.service_entries.push((meta, se));
    }
    reg
}

fn config_compile(c: &mut Criterion) {
    let text = bootstrap_yaml(CLUSTERS);
    // Check once, outside the timing, that the config is accepted and complete.
    let parsed = parse_bootstrap(&text, false).expect("bootstrap parses");
    let compiled = translate_bootstrap(&parsed).expect("bootstrap compiles");
    assert_eq!(compiled.clusters.len(), CLUSTERS);
    assert_eq!(compiled.listeners.len(), 1);

    let mut group = c.benchmark_group("config_compile_10k_clusters");
    // Each iteration takes long: one flat batch per sample instead of criterion's linear ramp.
    group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(3));
    group.bench_function("parse_bootstrap", |b| b.iter(|| parse_bootstrap(black_box(&text), false).unwrap()));
    group.bench_function("translate_bootstrap", |b| b.iter(|| translate_bootstrap(black_box(&parsed)).unwrap()));
    group.bench_function("parse_and_translate", |b| {
        b.iter(|| translate_bootstrap(&parse_bootstrap(black_box(&text), false).unwrap()).unwrap())
    });
    group.finish();

    let rc = route_config(ROUTES);
    assert_eq!(translate_route_config(&rc).expect("routes compile").virtual_hosts[0].routes.len(), ROUTES);
    let mut group = c.benchmark_group("route_config_compile_10k_routes");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(3));
    group.bench_function("translate_route_config", |b| b.iter(|| translate_route_config(black_box(&rc)).unwrap()));
    group.finish();

    let reg = scale_registry(SERVICES);
    let proxy = ProxyInfo {
        id: "sidecar~10.0.0.1~bench.scale~scale.svc.cluster.local".into(),
        namespace: "scale".into(),
        ..Default::default()
    };
    let full = generate_with(&reg, &proxy, false).expect("configuration generates");
    assert_eq!(full[CLUSTER].len(), SERVICES + 3);
    assert_eq!(full[ENDPOINT].len(), SERVICES);
    drop(full);
    let (meta, se) = &reg.service_entries[SERVICES / 2];
    assert_eq!(load_assignments(&reg, meta, se).len(), 1);
    let mut group = c.benchmark_group("xds_generate_10k_services");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(3));
    group.bench_function("generate_with", |b| {
        b.iter(|| generate_with(black_box(&reg), black_box(&proxy), false).unwrap())
    });
    group.bench_function("load_assignments", |b| b.iter(|| load_assignments(black_box(&reg), meta, se)));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = config_compile
}
criterion_main!(benches);
