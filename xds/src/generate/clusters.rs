//! Clusters and their endpoints: `outbound|PORT||HOST` and one per DestinationRule subset.
use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::google::protobuf::Any;

use super::traffic_policy::{self, Direction, Policy};
use super::{ads, cluster_name, seconds, socket, to_any, u32_value, Index, ProxyInfo, CLUSTER, ENDPOINT};
use crate::istio::model::{
    DestinationRule, Metadata, OutboundMode, Port, Resolution, ServiceEntry, Subset, WorkloadEntry,
};
use crate::istio::Registry;

fn endpoint(address: &str, port: u32, weight: Option<u32>) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: socket(address, port),
            ..Default::default()
        })),
        load_balancing_weight: weight.and_then(u32_value),
        ..Default::default()
    }
}

fn lb_endpoint(we: &WorkloadEntry, port_name: &str, port: u16) -> LbEndpoint {
    let p = we.ports.get(port_name).copied().unwrap_or(port);
    endpoint(&we.address, p.into(), Some(we.weight.unwrap_or(1).max(1)))
}

/// Istio's `region/zone/subzone`.
fn locality(label: &str) -> Locality {
    let mut parts = label.splitn(3, '/').map(str::to_string);
    Locality {
        region: parts.next().unwrap_or_default(),
        zone: parts.next().unwrap_or_default(),
        sub_zone: parts.next().unwrap_or_default(),
    }
}

/// The endpoints grouped by locality as istiod groups them: one group per locality label,
/// sorted by it, weighted by the sum of its endpoints' weights. No endpoints is one empty group
/// of weight 1 (proxyless gRPC requires a locality and its weight).
fn locality_groups(eps: &[&WorkloadEntry], port_name: &str, port: u16) -> Vec<LocalityLbEndpoints> {
    if eps.is_empty() {
        return vec![LocalityLbEndpoints {
            locality: Some(Locality::default()),
            load_balancing_weight: u32_value(1),
            ..Default::default()
        }];
    }
    let mut groups: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for we in eps {
        groups.entry(we.locality.as_deref().unwrap_or("")).or_default().push(lb_endpoint(we, port_name, port));
    }
    groups
        .into_iter()
        .map(|(label, lb_endpoints)| {
            let weight = lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.as_ref().map_or(1, |w| w.value))
                .fold(0u32, u32::saturating_add);
            LocalityLbEndpoints {
                locality: Some(locality(label)),
                lb_endpoints,
                load_balancing_weight: u32_value(weight),
                ..Default::default()
            }
        })
        .collect()
}

/// One `outbound|PORT|SUBSET|HOST` cluster of a ServiceEntry host.
struct HostCluster<'a> {
    name: String,
    port: &'a Port,
    subset: &'a str,
    /// The DestinationRule's traffic policy for this port and subset.
    policy: Policy<'a>,
    /// The ServiceEntry's endpoints that the subset selects (all of them for no subset).
    selected: Vec<&'a WorkloadEntry>,
}

impl HostCluster<'_> {
    fn target_port(&self) -> u16 {
        self.port.target_port.unwrap_or(self.port.number)
    }

    /// The EDS ClusterLoadAssignment.
    fn load_assignment(&self) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: self.name.clone(),
            endpoints: locality_groups(&self.selected, &self.port.name, self.target_port()),
            ..Default::default()
        }
    }
}

/// Every cluster that `host` of `se` yields, port by port, the service-wide one then one per
/// DestinationRule subset. The one place both [`clusters`] and [`load_assignments`] get them.
fn host_clusters<'a>(
    se: &'a ServiceEntry,
    host: &str,
    dr: Option<&'a DestinationRule>,
    eps: &[&'a WorkloadEntry],
) -> Vec<HostCluster<'a>> {
    static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
    let mut subsets: Vec<(&str, &BTreeMap<String, String>, Option<&Subset>)> = vec![("", &NO_LABELS, None)];
    if let Some(d) = dr {
        subsets.extend(d.subsets.iter().map(|s| (s.name.as_str(), &s.labels, Some(s))));
    }
    let mut out = Vec::with_capacity(se.ports.len() * subsets.len());
    for port in &se.ports {
        for &(subset, labels, s) in &subsets {
            let selected =
                eps.iter().copied().filter(|we| labels.iter().all(|(k, v)| we.labels.get(k) == Some(v))).collect();
            let policy = traffic_policy::policy_for(dr, s, port.number);
            out.push(HostCluster { name: cluster_name(port.number, subset, host), port, subset, policy, selected });
        }
    }
    out
}

fn is_dns(se: &ServiceEntry) -> bool {
    matches!(se.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
}

/// The ClusterLoadAssignments of one ServiceEntry (every host × port × subset it yields with
/// EDS resolution), by cluster name, exactly as `generate` would produce them.
pub fn load_assignments(reg: &Registry, meta: &Metadata, se: &ServiceEntry) -> Vec<(String, Any)> {
    if is_dns(se) {
        return Vec::new();
    }
    let eps = super::endpoints_scan(reg, &meta.namespace, se);
    let mut out = Vec::new();
    for host in &se.hosts {
        for c in host_clusters(se, host, super::destination_rule_scan(reg, host), &eps) {
            out.push((c.name.clone(), to_any(ENDPOINT, &c.load_assignment())));
        }
    }
    out
}

fn discovery(t: DiscoveryType) -> Option<ClusterDiscoveryType> {
    Some(ClusterDiscoveryType::Type(t as i32))
}

/// Returns (clusters, cluster load assignments) by name.
pub fn clusters(idx: &Index<'_>, mode: OutboundMode) -> (BTreeMap<String, Any>, BTreeMap<String, Any>) {
    let reg = idx.reg;
    // Proxyless gRPC clients take the traffic policy as istiod's grpcgen gives it.
    let proxyless = idx.proxy.proxyless;
    let mut clusters = BTreeMap::new();
    let mut cla = BTreeMap::new();
    for (meta, se) in &reg.service_entries {
        let eps = idx.endpoints(&meta.namespace, se);
        for host in se.hosts.iter().filter(|h| idx.visible(meta, h)) {
            for hc in host_clusters(se, host, idx.destination_rule(host), &eps) {
                let port = hc.port;
                let mut c = Cluster { name: hc.name.clone(), ..Default::default() };
                if proxyless {
                    traffic_policy::apply_proxyless(&mut c, &hc.policy, port);
                } else {
                    traffic_policy::apply(&mut c, &hc.policy, port, Direction::Outbound);
                }
                if is_dns(se) {
                    // DNS: the proxy resolves; without endpoints, the host itself.
                    let endpoints = if hc.selected.is_empty() && hc.subset.is_empty() {
                        vec![LocalityLbEndpoints {
                            lb_endpoints: vec![endpoint(host, hc.target_port().into(), None)],
                            ..Default::default()
                        }]
                    } else {
                        locality_groups(&hc.selected, &port.name, hc.target_port())
                    };
                    c.cluster_discovery_type = discovery(DiscoveryType::StrictDns);
                    c.load_assignment =
                        Some(ClusterLoadAssignment { cluster_name: hc.name.clone(), endpoints, ..Default::default() });
                } else {
                    c.cluster_discovery_type = discovery(DiscoveryType::Eds);
                    c.eds_cluster_config = Some(EdsClusterConfig { eds_config: ads(), service_name: hc.name.clone() });
                    cla.insert(hc.name.clone(), to_any(ENDPOINT, &hc.load_assignment()));
                }
                clusters.insert(hc.name, to_any(CLUSTER, &c));
            }
        }
    }
    // Where traffic goes that matches no service: to where it was going (ALLOW_ANY, the
    // original destination) or nowhere (REGISTRY_ONLY). Inbound passthrough is always there.
    let black_hole = Cluster {
        name: "BlackHoleCluster".into(),
        cluster_discovery_type: discovery(DiscoveryType::Static),
        connect_timeout: seconds(10),
        ..Default::default()
    };
    clusters.insert(black_hole.name.clone(), to_any(CLUSTER, &black_hole));
    let passthrough = |name: &str| {
        let mut c = Cluster {
            name: name.to_string(),
            cluster_discovery_type: discovery(DiscoveryType::OriginalDst),
            lb_policy: LbPolicy::ClusterProvided as i32,
            ..Default::default()
        };
        // istiod's passthrough clusters take the default connection pool (circuit breakers);
        // proxyless gRPC clients get none from istiod, so nothing more than before here.
        if proxyless {
            c.connect_timeout = seconds(10);
        } else {
            traffic_policy::apply_defaults(&mut c);
        }
        (c.name.clone(), to_any(CLUSTER, &c))
    };
    if mode == OutboundMode::AllowAny {
        clusters.extend([passthrough("PassthroughCluster")]);
    }
    clusters.extend([passthrough("InboundPassthroughCluster")]);
    // Inbound: the proxy's own workload, on loopback. As istiod's `buildInboundCluster`, the
    // service's DestinationRule sets the connection pool (the server side of its limits).
    for (_, se) in idx.owned() {
        let dr = se.hosts.first().and_then(|h| idx.destination_rule(h));
        for port in &se.ports {
            let target = port.target_port.unwrap_or(port.number);
            let name = format!("inbound|{target}||");
            clusters.entry(name.clone()).or_insert_with(|| {
                let mut c = Cluster {
                    cluster_discovery_type: discovery(DiscoveryType::Static),
                    load_assignment: Some(ClusterLoadAssignment {
                        cluster_name: name.clone(),
                        endpoints: vec![LocalityLbEndpoints {
                            lb_endpoints: vec![endpoint("127.0.0.1", target.into(), None)],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    name,
                    ..Default::default()
                };
                if proxyless {
                    c.connect_timeout = seconds(10);
                } else {
                    let policy = traffic_policy::policy_for(dr, None, port.number);
                    traffic_policy::apply(&mut c, &policy, port, Direction::Inbound);
                }
                to_any(CLUSTER, &c)
            });
        }
    }
    (clusters, cla)
}

/// A workload entry is the proxy's own when all of its labels are the proxy's.
pub fn proxy_owns(proxy: &ProxyInfo, we: &WorkloadEntry) -> bool {
    !we.labels.is_empty() && we.labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v))
}
