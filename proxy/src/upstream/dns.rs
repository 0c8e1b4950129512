//! STRICT_DNS: resolve every host of the cluster now and every `dns_refresh_rate`; the endpoint set
//! is the union of the answers (Envoy's strict DNS semantics).
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use super::cluster::EndpointSpec;
use super::Cluster;
use crate::config::cluster::DnsFamily;
use crate::config::EndpointConfig;

pub async fn resolve_once(cluster: &Cluster) {
    let mut addrs: Vec<EndpointSpec> = Vec::new();
    for e in &cluster.config.endpoints {
        match e {
            EndpointConfig::Ip { .. } => addrs.extend(EndpointSpec::of(e)),
            EndpointConfig::Dns { host, port, weight } => match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(it) => {
                    let mut found: Vec<SocketAddr> = it.collect();
                    found.sort();
                    found.dedup();
                    let found = filter_family(found, cluster.config.dns_family);
                    addrs.extend(found.into_iter().map(|addr| EndpointSpec {
                        addr,
                        weight: *weight,
                        eds_unhealthy: false,
                        placement: None,
                    }));
                }
                Err(err) => {
                    tracing::warn!(cluster = %cluster.config.name, %host, %err, "DNS resolution failed; keeping last answer");
                    return;
                }
            },
        }
    }
    cluster.update_endpoints(addrs);
}

fn filter_family(found: Vec<SocketAddr>, family: DnsFamily) -> Vec<SocketAddr> {
    let v4: Vec<SocketAddr> = found.iter().copied().filter(|a| a.is_ipv4()).collect();
    let v6: Vec<SocketAddr> = found.iter().copied().filter(|a| a.is_ipv6()).collect();
    match family {
        DnsFamily::V4Only => v4,
        DnsFamily::V6Only => v6,
        DnsFamily::All => found,
        // AUTO prefers v6, V4_PREFERRED prefers v4; each falls back to the other family.
        DnsFamily::Auto => {
            if v6.is_empty() {
                v4
            } else {
                v6
            }
        }
        DnsFamily::V4Preferred => {
            if v4.is_empty() {
                v6
            } else {
                v4
            }
        }
    }
}

/// Refreshes until the cluster is dropped (a config update replaced it).
pub async fn refresh_loop(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let every = c.config.dns_refresh;
        resolve_once(&c).await;
        drop(c);
        tokio::time::sleep(every).await;
    }
}

pub fn needs_dns(c: &Arc<Cluster>) -> bool {
    c.config.endpoints.iter().any(|e| matches!(e, EndpointConfig::Dns { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, DiscoveryType};
    use std::time::Duration;

    fn localhost_cluster(refresh: Duration) -> Arc<Cluster> {
        Cluster::new(ClusterConfig {
            discovery: DiscoveryType::StrictDns,
            dns_refresh: refresh,
            dns_family: DnsFamily::V4Only,
            ..ClusterConfig::for_test(
                "dns",
                vec![EndpointConfig::Dns { host: "localhost".into(), port: 80, weight: 1 }],
            )
        })
    }

    /// Whether the cluster has endpoints again within a few seconds after losing them.
    async fn restored(c: &Arc<Cluster>) -> bool {
        c.update_endpoints(Vec::new());
        for _ in 0..100 {
            if c.pick().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn dns_refresh_rate_sets_how_often_hosts_are_resolved_again() {
        let fast = localhost_cluster(Duration::from_millis(20));
        tokio::spawn(refresh_loop(Arc::downgrade(&fast)));
        let slow = localhost_cluster(Duration::from_secs(3600));
        tokio::spawn(refresh_loop(Arc::downgrade(&slow)));
        for c in [&fast, &slow] {
            for _ in 0..100 {
                if c.pick().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(c.pick().is_some(), "localhost did not resolve");
        }
        // The lost endpoints come back with the next resolution: soon for a short refresh rate,
        // not at all within the test for an hour.
        assert!(restored(&fast).await);
        assert!(!restored(&slow).await);
    }
}
