//! Priorities and locality-weighted balancing, as Envoy's: each priority's health is the share of
//! its endpoints that may take traffic times the overprovisioning factor (1.4), capped at 100 %;
//! priority 0 takes the load its health allows and the next priorities take the rest in order
//! (normalised when together they cannot take it all). Within a priority, with
//! `locality_weighted_lb_config`, a locality is chosen by its weight times its own health; then
//! the cluster's policy picks among that locality's available endpoints.
use std::sync::Arc;

use super::cluster::{Cluster, Endpoint, EndpointSet};
use crate::config::LbPolicy;

/// The endpoints of one set by priority (ascending) and locality, as indexes into its list.
#[derive(Debug)]
pub struct Levels {
    levels: Vec<Level>,
    locality_weighted: bool,
}

#[derive(Debug)]
struct Level {
    overprovisioning: f64,
    members: Vec<u32>,
    /// (locality weight, members), when locality weighting is on.
    localities: Vec<(u32, Vec<u32>)>,
}

impl Levels {
    /// None when there is nothing to choose between (one priority, no locality weighting).
    pub fn build(list: &[Arc<Endpoint>], locality_weighted: bool) -> Option<Levels> {
        let priority = |e: &Endpoint| e.placement.as_ref().map_or(0, |p| p.priority);
        if !locality_weighted && list.iter().all(|e| priority(e) == 0) {
            return None;
        }
        let mut priorities: Vec<u32> = list.iter().map(|e| priority(e)).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let levels = priorities
            .into_iter()
            .map(|p| {
                let members: Vec<u32> = (0..list.len() as u32).filter(|&i| priority(&list[i as usize]) == p).collect();
                let overprovisioning = members
                    .first()
                    .and_then(|&i| list[i as usize].placement.as_ref())
                    .map_or(1.4, |pl| pl.overprovisioning as f64 / 100.0);
                let mut localities: Vec<(String, u32, Vec<u32>)> = Vec::new();
                if locality_weighted {
                    for &i in &members {
                        let (name, weight) = list[i as usize]
                            .placement
                            .as_ref()
                            .map_or((String::new(), 0), |pl| (pl.locality.clone(), pl.locality_weight));
                        match localities.iter_mut().find(|l| l.0 == name) {
                            Some(l) => l.2.push(i),
                            None => localities.push((name, weight, vec![i])),
                        }
                    }
                }
                Level { overprovisioning, members, localities: localities.into_iter().map(|l| (l.1, l.2)).collect() }
            })
            .collect();
        Some(Levels { levels, locality_weighted })
    }

    /// The endpoint for this request, or None when the set is empty.
    pub fn pick<'a>(&self, cluster: &Cluster, set: &'a EndpointSet, panic: bool) -> Option<&'a Arc<Endpoint>> {
        let list = &set.list;
        let ok = |i: u32| panic || list[i as usize].available();
        let health = |members: &[u32], over: f64| {
            let avail = members.iter().filter(|&&i| ok(i)).count() as f64;
            (over * avail / members.len().max(1) as f64).min(1.0)
        };
        // Priority load: each level takes what its health allows of what is left.
        let healths: Vec<f64> = self.levels.iter().map(|l| health(&l.members, l.overprovisioning)).collect();
        let total: f64 = healths.iter().sum();
        let mut loads = Vec::with_capacity(healths.len());
        let mut left = 1.0f64;
        for h in &healths {
            let take = if total < 1.0 && total > 0.0 { h / total } else { h.min(left) };
            loads.push(take);
            left = (left - take).max(0.0);
        }
        let roll = fastrand::f64();
        let mut acc = 0.0;
        let level = self
            .levels
            .iter()
            .zip(&loads)
            .find(|(_, load)| {
                acc += **load;
                roll < acc
            })
            .map(|(l, _)| l)
            .or_else(|| self.levels.first())?;
        let candidates: &[u32] = if self.locality_weighted && !level.localities.is_empty() {
            let weights: Vec<f64> =
                level.localities.iter().map(|(w, m)| *w as f64 * health(m, level.overprovisioning)).collect();
            let sum: f64 = weights.iter().sum();
            if sum > 0.0 {
                let mut r = fastrand::f64() * sum;
                let i = weights.iter().position(|w| {
                    r -= w;
                    r < 0.0
                });
                &level.localities[i.unwrap_or(weights.len() - 1)].1
            } else {
                &level.members
            }
        } else {
            &level.members
        };
        pick_among(cluster, list, candidates, &ok)
    }
}

/// The cluster's policy over `candidates` (indexes into `list`) that `ok` accepts.
fn pick_among<'a>(
    cluster: &Cluster,
    list: &'a [Arc<Endpoint>],
    candidates: &[u32],
    ok: &dyn Fn(u32) -> bool,
) -> Option<&'a Arc<Endpoint>> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    let at = |k: usize| candidates[k % n];
    let chosen = match cluster.config.lb {
        LbPolicy::RoundRobin => {
            let start = cluster.next_rr();
            (0..n).map(|k| at(start + k)).find(|&i| ok(i))
        }
        LbPolicy::LeastRequest { choice_count } => {
            let mut best: Option<u32> = None;
            for _ in 0..choice_count {
                let c = at(fastrand::usize(0..n));
                if !ok(c) {
                    continue;
                }
                best = match best {
                    Some(b) if super::lb::score(&list[b as usize]) <= super::lb::score(&list[c as usize]) => Some(b),
                    _ => Some(c),
                };
            }
            best.or_else(|| candidates.iter().copied().find(|&i| ok(i)))
        }
        _ => {
            let start = fastrand::usize(0..n);
            (0..n).map(|k| at(start + k)).find(|&i| ok(i))
        }
    };
    chosen.or(candidates.first().copied()).map(|i| &list[i as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cluster::Placement;
    use crate::config::{ClusterConfig, EndpointConfig};
    use std::collections::HashMap;
    use std::sync::atomic::Ordering::Relaxed;

    fn endpoint(port: u16, priority: u32, locality: &str, locality_weight: u32) -> EndpointConfig {
        EndpointConfig::Ip {
            addr: ([127, 0, 0, 1], port).into(),
            weight: 1,
            eds_unhealthy: false,
            placement: Some(Arc::new(Placement {
                priority,
                locality: locality.into(),
                locality_weight,
                overprovisioning: 140,
            })),
        }
    }

    fn share(c: &Cluster, n: usize) -> HashMap<u16, usize> {
        let mut m = HashMap::new();
        for _ in 0..n {
            *m.entry(c.pick().unwrap().addr.port()).or_default() += 1;
        }
        m
    }

    #[test]
    fn lower_priorities_take_the_load_the_first_cannot() {
        let eps = vec![endpoint(1, 0, "a", 1), endpoint(2, 0, "a", 1), endpoint(3, 1, "b", 1), endpoint(4, 1, "b", 1)];
        let c = Cluster::new(ClusterConfig { panic_threshold: 0.0, ..ClusterConfig::for_test("prio", eps) });
        let m = share(&c, 1000);
        assert_eq!(m.get(&3).copied().unwrap_or(0) + m.get(&4).copied().unwrap_or(0), 0, "{m:?}");
        // Half of priority 0 down: its health is 1.4 × 50 % = 70 %; priority 1 takes 30 %.
        c.endpoints.load().list[0].health.hc_failed.store(true, Relaxed);
        c.membership_changed();
        let m = share(&c, 4000);
        let p1 = m.get(&3).copied().unwrap_or(0) + m.get(&4).copied().unwrap_or(0);
        // 4,000 draws at 30 %: the standard deviation is 29; ±200 is seven of them.
        assert!((1000..1400).contains(&p1), "{m:?}");
        assert_eq!(m.get(&1), None);
        // All of priority 0 down: everything to priority 1.
        c.endpoints.load().list[1].health.hc_failed.store(true, Relaxed);
        c.membership_changed();
        let m = share(&c, 500);
        assert_eq!(m.get(&3).copied().unwrap_or(0) + m.get(&4).copied().unwrap_or(0), 500, "{m:?}");
    }

    #[test]
    fn localities_get_traffic_by_weight_and_health() {
        let eps = vec![endpoint(1, 0, "r/z1/", 1), endpoint(2, 0, "r/z2/", 3), endpoint(3, 0, "r/z2/", 3)];
        let c = Cluster::new(ClusterConfig {
            locality_weighted: true,
            panic_threshold: 0.0,
            ..ClusterConfig::for_test("localities", eps)
        });
        let m = share(&c, 4000);
        let z1 = m.get(&1).copied().unwrap_or(0);
        // Weights 1:3, so 25 % to z1 (standard deviation 27 over 4,000 draws).
        assert!((800..1200).contains(&z1), "{m:?}");
        // One of z2's two down: its health 1.4 × 50 % = 70 %, its share 3 × 0.7 : 1 → 68 %.
        c.endpoints.load().list[1].health.hc_failed.store(true, Relaxed);
        c.membership_changed();
        let m = share(&c, 4000);
        let z1 = m.get(&1).copied().unwrap_or(0);
        assert!((1100..1500).contains(&z1), "{m:?}");
        assert_eq!(m.get(&2), None);
    }
}
