//! STRICT_DNS: resolve every host of the cluster now and every `dns_refresh_rate`; the endpoint set
//! is the union of the answers (Envoy's strict DNS semantics).
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use super::Cluster;
use crate::config::cluster::DnsFamily;
use crate::config::EndpointConfig;

pub async fn resolve_once(cluster: &Cluster) {
    let mut addrs: Vec<(SocketAddr, u32)> = Vec::new();
    for e in &cluster.config.endpoints {
        match e {
            EndpointConfig::Ip { addr, weight } => addrs.push((*addr, *weight)),
            EndpointConfig::Dns { host, port, weight } => match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(it) => {
                    let mut found: Vec<SocketAddr> = it.collect();
                    found.sort();
                    found.dedup();
                    let found = filter_family(found, cluster.config.dns_family);
                    addrs.extend(found.into_iter().map(|a| (a, *weight)));
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
