//! Outlier detection (Envoy's `outlier_detection`): consecutive 5xx, consecutive gateway
//! failures, consecutive local-origin failures (with `split_external_local_origin_errors`) and
//! success-rate outliers eject an endpoint for `base_ejection_time` × its ejection count (capped
//! by `max_ejection_time`), never more than `max_ejection_percent` of the cluster (but always one).
//! A task per cluster runs every `interval`: it returns endpoints whose time is up, lowers the
//! multiplier of those that stayed healthy, and computes success rates.
//! Active health checks (`health_check.rs`) keep their verdict here too.
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::cluster::{Cluster, Endpoint};
use crate::config::cluster::OutlierDetection;

/// Per-endpoint health: outlier counters and verdicts, and the active health check's.
#[derive(Debug, Default)]
pub struct Health {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    /// Milliseconds since [`epoch`] when the ejection ends; 0 while not ejected.
    ejected_until: AtomicU64,
    /// How many times it was ejected (the multiplier of the ejection time).
    ejections: AtomicU32,
    /// Success-rate window: responses and successes since the last interval.
    total: AtomicU32,
    success: AtomicU32,
    /// The active health check says it is down.
    pub(crate) hc_failed: AtomicBool,
    /// Active health check: successes and failures in a row, and whether it was checked yet.
    pub(crate) hc_successes: AtomicU32,
    pub(crate) hc_failures: AtomicU32,
    pub(crate) hc_checked: AtomicBool,
}

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

impl Health {
    pub fn available(&self) -> bool {
        !self.is_ejected() && !self.hc_failed.load(Ordering::Relaxed)
    }
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }
    pub fn ejection_count(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }
}

/// What an attempt on an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// Connect failure, reset or timeout: an error of local origin.
    LocalFailure,
}

#[derive(Clone, Copy)]
enum Reason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocal,
    SuccessRate,
}

/// Records an outcome of `ep`, and ejects it when a detector trips.
pub fn report(cluster: &Cluster, ep: &Endpoint, outcome: Outcome) {
    let Some(od) = &cluster.config.outlier else { return };
    let h = &ep.health;
    // Without the split, a local-origin failure counts as a gateway error (Envoy maps it to 503).
    let status = match outcome {
        Outcome::Status(s) => Some(s),
        Outcome::LocalFailure if !od.split_external_local_origin_errors => Some(503),
        Outcome::LocalFailure => None,
    };
    let Some(status) = status else {
        let n = h.consecutive_local.fetch_add(1, Ordering::Relaxed) + 1;
        if od.consecutive_local_origin_failure > 0 && n >= od.consecutive_local_origin_failure {
            h.consecutive_local.store(0, Ordering::Relaxed);
            cluster.stats.ejections_detected_local.inc();
            eject(cluster, ep, od, Reason::ConsecutiveLocal, od.enforcing_consecutive_local_origin_failure);
        }
        return;
    };
    h.total.fetch_add(1, Ordering::Relaxed);
    if od.split_external_local_origin_errors {
        // A response means the connection worked.
        h.consecutive_local.store(0, Ordering::Relaxed);
    }
    if status < 500 {
        h.success.fetch_add(1, Ordering::Relaxed);
        h.consecutive_5xx.store(0, Ordering::Relaxed);
        h.consecutive_gateway.store(0, Ordering::Relaxed);
        return;
    }
    let n = h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
    if od.consecutive_5xx > 0 && n >= od.consecutive_5xx {
        h.consecutive_5xx.store(0, Ordering::Relaxed);
        cluster.stats.ejections_detected_5xx.inc();
        eject(cluster, ep, od, Reason::Consecutive5xx, od.enforcing_consecutive_5xx);
    }
    if matches!(status, 502..=504) {
        let n = h.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1;
        if od.consecutive_gateway_failure > 0 && n >= od.consecutive_gateway_failure {
            h.consecutive_gateway.store(0, Ordering::Relaxed);
            cluster.stats.ejections_detected_gw.inc();
            eject(cluster, ep, od, Reason::ConsecutiveGateway, od.enforcing_consecutive_gateway_failure);
        }
    } else {
        h.consecutive_gateway.store(0, Ordering::Relaxed);
    }
}

fn eject(cluster: &Cluster, ep: &Endpoint, od: &OutlierDetection, why: Reason, enforcing: u32) {
    if ep.health.is_ejected() || fastrand::u32(0..100) >= enforcing {
        return;
    }
    let set = cluster.endpoints.load();
    let total = set.list.len().max(1);
    let ejected = set.list.iter().filter(|e| e.health.is_ejected()).count();
    // Always at least one; beyond that, not past max_ejection_percent.
    if ejected > 0 && (ejected + 1) * 100 > od.max_ejection_percent as usize * total {
        cluster.stats.ejections_overflow.inc();
        return;
    }
    let n = ep.health.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let time = ejection_time(od, n);
    let until = now_ms() + time.as_millis() as u64;
    if ep.health.ejected_until.compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed).is_err() {
        return;
    }
    let s = &cluster.stats;
    s.ejections_enforced.inc();
    s.ejections_active.inc();
    match why {
        Reason::Consecutive5xx => s.ejections_enforced_5xx.inc(),
        Reason::ConsecutiveGateway => s.ejections_enforced_gw.inc(),
        Reason::ConsecutiveLocal => s.ejections_enforced_local.inc(),
        Reason::SuccessRate => s.ejections_enforced_sr.inc(),
    }
    tracing::info!(cluster = %cluster.name, endpoint = %ep.addr, ejections = n, seconds = time.as_secs_f64(), "endpoint ejected");
    cluster.membership_changed();
}

/// How long the `n`-th ejection lasts: `base_ejection_time` × n, capped by `max_ejection_time`
/// (or the base, if that is longer).
fn ejection_time(od: &OutlierDetection, n: u32) -> Duration {
    let cap = od.max_ejection_time.max(od.base_ejection_time);
    od.base_ejection_time.saturating_mul(n).min(cap)
}

/// Starts the interval task of a cluster; it ends when the cluster is dropped.
pub fn start(cluster: &Arc<Cluster>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let Some(od) = cluster.config.outlier.clone() else { return };
    let weak = Arc::downgrade(cluster);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(od.interval.max(Duration::from_millis(1)));
        tick.tick().await;
        loop {
            tick.tick().await;
            if !interval(&weak, &od) {
                return;
            }
        }
    });
}

/// One interval; false once the cluster is gone.
fn interval(weak: &Weak<Cluster>, od: &OutlierDetection) -> bool {
    let Some(cluster) = weak.upgrade() else { return false };
    let set = cluster.endpoints.load();
    let now = now_ms();
    let mut changed = false;
    for ep in &set.list {
        let h = &ep.health;
        let until = h.ejected_until.load(Ordering::Relaxed);
        if until != 0 && now >= until {
            h.ejected_until.store(0, Ordering::Relaxed);
            cluster.stats.ejections_active.dec();
            changed = true;
            tracing::info!(cluster = %cluster.name, endpoint = %ep.addr, "endpoint returned from ejection");
        } else if until == 0 {
            let _ = h.ejections.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
    if changed {
        cluster.membership_changed();
    }
    success_rate(&cluster, &set.list, od);
    true
}

/// Envoy's success-rate detector: among endpoints with `request_volume` responses in the
/// interval (at least `minimum_hosts` of them), those below mean − factor·stdev are outliers.
fn success_rate(cluster: &Cluster, list: &[Arc<Endpoint>], od: &OutlierDetection) {
    let rates: Vec<(usize, f64)> = list
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let total = e.health.total.swap(0, Ordering::Relaxed);
            let ok = e.health.success.swap(0, Ordering::Relaxed);
            (total >= od.success_rate_request_volume && total > 0).then(|| (i, ok as f64 * 100.0 / total as f64))
        })
        .collect();
    if rates.len() < od.success_rate_minimum_hosts.max(1) as usize {
        return;
    }
    let n = rates.len() as f64;
    let mean = rates.iter().map(|r| r.1).sum::<f64>() / n;
    let stdev = (rates.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n).sqrt();
    let threshold = mean - (od.success_rate_stdev_factor as f64 / 1000.0) * stdev;
    for (i, rate) in rates {
        if rate < threshold {
            cluster.stats.ejections_detected_sr.inc();
            eject(cluster, &list[i], od, Reason::SuccessRate, od.enforcing_success_rate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterConfig;

    fn cluster(name: &str, n: u16, od: OutlierDetection) -> Arc<Cluster> {
        let endpoints = ClusterConfig::test_endpoints(2000, &vec![1; n as usize]);
        Cluster::new(ClusterConfig { outlier: Some(Box::new(od)), ..ClusterConfig::for_test(name, endpoints) })
    }

    #[test]
    fn consecutive_5xx_ejects_and_success_resets_the_count() {
        let c = cluster("od-5xx", 10, OutlierDetection { consecutive_5xx: 3, ..Default::default() });
        let eps = c.endpoints.load_full();
        let ep = &eps.list[0];
        report(&c, ep, Outcome::Status(500));
        report(&c, ep, Outcome::Status(503));
        report(&c, ep, Outcome::Status(200));
        report(&c, ep, Outcome::Status(500));
        report(&c, ep, Outcome::Status(500));
        assert!(!ep.health.is_ejected());
        report(&c, ep, Outcome::Status(502));
        assert!(ep.health.is_ejected());
        assert_eq!(ep.health.ejection_count(), 1);
        assert!(!ep.available());
    }

    #[test]
    fn max_ejection_percent_bounds_ejections_but_one_is_always_allowed() {
        let c = cluster(
            "od-max",
            4,
            OutlierDetection { consecutive_5xx: 1, max_ejection_percent: 10, ..Default::default() },
        );
        let eps = c.endpoints.load_full();
        for ep in &eps.list {
            report(&c, ep, Outcome::Status(500));
        }
        assert_eq!(eps.list.iter().filter(|e| e.health.is_ejected()).count(), 1);
        assert_eq!(c.stats.ejections_overflow.get(), 3);
    }

    #[test]
    fn split_local_origin_failures_count_apart_from_5xx() {
        let od = OutlierDetection {
            consecutive_5xx: 2,
            consecutive_local_origin_failure: 2,
            split_external_local_origin_errors: true,
            ..Default::default()
        };
        let c = cluster("od-split", 2, od);
        let eps = c.endpoints.load_full();
        let ep = &eps.list[0];
        report(&c, ep, Outcome::Status(500));
        report(&c, ep, Outcome::LocalFailure);
        assert!(!ep.health.is_ejected(), "one of each is not two in a row of either");
        report(&c, ep, Outcome::LocalFailure);
        assert!(ep.health.is_ejected());
        assert_eq!(c.stats.ejections_enforced_local.get(), 1);
    }

    #[test]
    fn gateway_failures_eject_only_when_enforced_and_other_5xx_break_the_run() {
        let od = OutlierDetection {
            consecutive_5xx: 0,
            consecutive_gateway_failure: 2,
            enforcing_consecutive_gateway_failure: 100,
            ..Default::default()
        };
        let c = cluster("od-gw", 4, od);
        let eps = c.endpoints.load_full();
        let ep = &eps.list[0];
        report(&c, ep, Outcome::Status(502));
        report(&c, ep, Outcome::Status(500));
        report(&c, ep, Outcome::Status(503));
        assert!(!ep.health.is_ejected(), "500 is not a gateway error: the run restarted");
        report(&c, ep, Outcome::Status(504));
        assert!(ep.health.is_ejected());
        // Envoy's default enforcing for gateway failures is 0: detected, never ejected.
        let c = cluster(
            "od-gw0",
            4,
            OutlierDetection { consecutive_5xx: 0, consecutive_gateway_failure: 1, ..Default::default() },
        );
        let eps = c.endpoints.load_full();
        report(&c, &eps.list[0], Outcome::Status(503));
        assert!(!eps.list[0].health.is_ejected());
        assert_eq!(c.stats.ejections_detected_gw.get(), 1);
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_up_to_max_ejection_time() {
        let od = OutlierDetection {
            consecutive_5xx: 1,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: 100,
            ..Default::default()
        };
        let c = cluster("od-time", 2, od.clone());
        let eps = c.endpoints.load_full();
        let ep = &eps.list[0];
        for n in 1..=3 {
            report(&c, ep, Outcome::Status(500));
            assert!(ep.health.is_ejected());
            assert_eq!(ep.health.ejection_count(), n);
            // Returned by hand, as the interval would once the time is up.
            ep.health.ejected_until.store(0, Ordering::Relaxed);
        }
        let lengths: Vec<u64> = (1..=3).map(|n| ejection_time(&od, n).as_secs()).collect();
        assert_eq!(lengths, [10, 20, 25]);
    }

    #[test]
    fn success_rate_ejects_the_endpoint_far_below_the_others() {
        let od = OutlierDetection {
            consecutive_5xx: 0,
            success_rate_minimum_hosts: 5,
            success_rate_request_volume: 20,
            max_ejection_percent: 100,
            ..Default::default()
        };
        let c = cluster("od-sr", 6, od.clone());
        let eps = c.endpoints.load_full();
        for (i, ep) in eps.list.iter().enumerate() {
            for n in 0..40 {
                let fail = if i == 0 { n % 2 == 0 } else { n == 0 };
                report(&c, ep, Outcome::Status(if fail { 503 } else { 200 }));
            }
        }
        success_rate(&c, &eps.list, &od);
        let ejected: Vec<bool> = eps.list.iter().map(|e| e.health.is_ejected()).collect();
        assert_eq!(ejected, [true, false, false, false, false, false]);
        // Below request_volume nobody is judged.
        let c = cluster("od-sr-low", 6, od.clone());
        let eps = c.endpoints.load_full();
        for ep in &eps.list {
            report(&c, ep, Outcome::Status(503));
        }
        success_rate(&c, &eps.list, &od);
        assert!(eps.list.iter().all(|e| !e.health.is_ejected()));
    }
}
