//! Load balancers: round robin (smooth weighted when weights differ), least request (power of
//! N choices, weighted by active requests) and random.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::cluster::{Cluster, Endpoint, EndpointSet};
use crate::config::LbPolicy;

/// The schedule is bounded so that extreme weights cannot blow memory; beyond it, weights are
/// scaled down proportionally.
const MAX_SCHEDULE: u64 = 4096;

/// Picks an endpoint that may take traffic. While some are out of rotation (ejected, failing
/// health checks, EDS-unhealthy), the policy's pick is repeated until it lands on one that is
/// not, unless fewer than `healthy_panic_threshold` percent are available: then, as Envoy's
/// panic mode, all of them are candidates.
pub fn pick<'a>(cluster: &Cluster, set: &'a EndpointSet, hash: Option<u64>) -> Option<&'a Arc<Endpoint>> {
    let unavailable = set.unavailable.load(Ordering::Relaxed);
    let n = set.list.len();
    let available = n.saturating_sub(unavailable);
    let panic =
        unavailable > 0 && ((available as f64) * 100.0 < cluster.config.panic_threshold * n as f64 || available == 0);
    if panic {
        cluster.stats.lb_healthy_panic.inc();
    }
    // Consistent hashing: the key's place in the table (without a key, a random endpoint).
    // Priorities and localities do not apply to it.
    if let Some(t) = &set.table {
        let h = hash.unwrap_or_else(|| fastrand::u64(..));
        let i = t.pick(h, n, |i| panic || unavailable == 0 || set.list[i].available())?;
        return set.list.get(i);
    }
    if let Some(levels) = &set.levels {
        return levels.pick(cluster, set, panic);
    }
    if unavailable == 0 || panic {
        return pick_any(cluster, set);
    }
    for _ in 0..2 * n {
        let e = pick_any(cluster, set)?;
        if e.available() {
            return Some(e);
        }
    }
    set.list.iter().find(|e| e.available())
}

fn pick_any<'a>(cluster: &Cluster, set: &'a EndpointSet) -> Option<&'a Arc<Endpoint>> {
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
        LbPolicy::Random | LbPolicy::ClusterProvided | LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. } => {
            set.list.get(fastrand::usize(0..n))
        }
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
pub(crate) fn score(e: &Endpoint) -> f64 {
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
    use crate::config::ClusterConfig;
    use std::collections::HashMap;

    fn cluster(lb: LbPolicy, weights: &[u32]) -> Arc<Cluster> {
        Cluster::new(ClusterConfig { lb, ..ClusterConfig::for_test("c", ClusterConfig::test_endpoints(1000, weights)) })
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

    #[test]
    fn unavailable_endpoints_are_skipped_until_the_panic_threshold() {
        use std::sync::atomic::Ordering::Relaxed;
        let c = cluster(LbPolicy::RoundRobin, &[1, 1, 1, 1]);
        let mark = |i: usize, down: bool| {
            c.endpoints.load().list[i].health.hc_failed.store(down, Relaxed);
            c.membership_changed();
        };
        mark(0, true);
        let m = counts(&c, 300);
        assert_eq!(m.get(&1000), None, "{m:?}");
        mark(1, true);
        // Half available is not below the default 50% threshold.
        assert_eq!(counts(&c, 200).get(&1001), None);
        mark(2, true);
        // One of four: panic, everyone gets traffic again.
        let m = counts(&c, 400);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(c.stats.lb_healthy_panic.get() >= 400);
    }
}
