//! Load balancers: round robin (smooth weighted when weights differ), least request (power of
//! N choices, weighted by active requests) and random.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::cluster::{Cluster, Endpoint, EndpointSet};
use crate::config::LbPolicy;

/// The schedule is bounded so that extreme weights cannot blow memory; beyond it, weights are
/// scaled down proportionally.
const MAX_SCHEDULE: u64 = 4096;

pub fn pick<'a>(cluster: &Cluster, set: &'a EndpointSet) -> Option<&'a Arc<Endpoint>> {
    let n = set.list.len();
    if n == 0 {
        return None;
    }
    if n == 1 {
        return set.list.first();
    }
    match cluster.config.lb {
        LbPolicy::RoundRobin => {
            let i = cluster.next_rr();
            match &set.schedule {
                Some(s) => set.list.get(s[i % s.len()] as usize),
                None => set.list.get(i % n),
            }
        }
        LbPolicy::Random | LbPolicy::ClusterProvided => set.list.get(fastrand::usize(0..n)),
        LbPolicy::LeastRequest { choice_count } => {
            let mut best: Option<&Arc<Endpoint>> = None;
            for _ in 0..choice_count {
                let c = &set.list[fastrand::usize(0..n)];
                best = match best {
                    Some(b) if score(b) <= score(c) => Some(b),
                    _ => Some(c),
                };
            }
            best
        }
    }
}

/// Lower is better: active requests relative to weight.
fn score(e: &Endpoint) -> f64 {
    (e.active_requests.load(Ordering::Relaxed) as f64 + 1.0) / e.weight.max(1) as f64
}

/// Smooth weighted round robin (as nginx does), precomputed once per endpoint set.
pub fn weighted_schedule(list: &[Arc<Endpoint>]) -> Option<Vec<u32>> {
    let first = list.first()?.weight;
    if list.iter().all(|e| e.weight == first) {
        return None;
    }
    let total: u64 = list.iter().map(|e| e.weight as u64).sum();
    let scale = total.div_ceil(MAX_SCHEDULE).max(1);
    let weights: Vec<i64> = list.iter().map(|e| ((e.weight as u64 / scale).max(1)) as i64).collect();
    let sum: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += w;
        }
        let (best, _) = current.iter().enumerate().max_by_key(|(i, c)| (**c, -(*i as i64))).unwrap();
        current[best] -= sum;
        out.push(best as u32);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClusterConfig, DiscoveryType, EndpointConfig, UpstreamProtocol};
    use std::collections::HashMap;
    use std::time::Duration;

    fn cluster(lb: LbPolicy, weights: &[u32]) -> Arc<Cluster> {
        Cluster::new(ClusterConfig {
            name: "c".into(),
            discovery: DiscoveryType::Static,
            lb,
            connect_timeout: Duration::from_secs(1),
            protocol: UpstreamProtocol::Http1,
            endpoints: weights
                .iter()
                .enumerate()
                .map(|(i, w)| EndpointConfig::Ip { addr: ([127, 0, 0, 1], 1000 + i as u16).into(), weight: *w })
                .collect(),
            dns_refresh: Duration::from_secs(5),
            dns_family: crate::config::cluster::DnsFamily::Auto,
            idle_timeout: None,
            eds_fetch_timeout: None,
        })
    }

    fn counts(c: &Cluster, n: usize) -> HashMap<u16, usize> {
        let mut m = HashMap::new();
        for _ in 0..n {
            *m.entry(c.pick().unwrap().addr.port()).or_default() += 1;
        }
        m
    }

    #[test]
    fn round_robin_cycles_evenly() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 1, 1]);
        let m = counts(&c, 300);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![100, 100, 100]);
    }

    #[test]
    fn weighted_round_robin_follows_weights_and_interleaves() {
        let c = cluster(LbPolicy::RoundRobin, &[3, 1]);
        let seq: Vec<u16> = (0..8).map(|_| c.pick().unwrap().addr.port()).collect();
        assert_eq!(seq.iter().filter(|p| **p == 1000).count(), 6);
        // Smooth: the light endpoint never waits for the heavy one's whole share.
        assert!(seq.windows(4).all(|w| w.contains(&1000)));
    }

    #[test]
    fn least_request_avoids_busy_endpoint() {
        let c = cluster(LbPolicy::LeastRequest { choice_count: 2 }, &[1, 1]);
        c.endpoints.load().list[0].active_requests.store(100, Ordering::Relaxed);
        let m = counts(&c, 1000);
        // Only picked when both choices land on it (~25%).
        assert!(m.get(&1000).copied().unwrap_or(0) < 400, "{m:?}");
    }

    #[test]
    fn random_reaches_every_endpoint() {
        let c = cluster(LbPolicy::Random, &[1, 1, 1, 1]);
        assert_eq!(counts(&c, 400).len(), 4);
    }

    #[test]
    fn empty_cluster_picks_nothing() {
        let c = cluster(LbPolicy::RoundRobin, &[]);
        assert!(c.pick().is_none());
    }
}
