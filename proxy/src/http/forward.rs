//! A routed request's way upstream: each attempt picks an endpoint (a retry avoids the previous
//! ones when the route asks), passes the cluster's request circuit breaker, is sent, and its
//! outcome is reported to outlier detection; the retry loop decides whether another follows.
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response};
use hyper::body::Incoming;

use super::local_reply::Flag;
use super::retry::{self, Attempts, Head};
use super::upstream::{self, Outgoing, PoolReturn, Wire};
use crate::config::RouteAction;
use crate::telemetry::stats::ClusterStats;
use crate::upstream::outlier::{self, Outcome};
use crate::upstream::{Cluster, Endpoint};

/// A request in flight on an endpoint: counted in the endpoint's and the cluster's active
/// requests until dropped (when the response has been relayed, or the attempt abandoned).
pub struct InFlight {
    pub endpoint: Arc<Endpoint>,
    stats: ClusterStats,
}

impl InFlight {
    pub(crate) fn new(endpoint: Arc<Endpoint>, stats: ClusterStats) -> InFlight {
        endpoint.active_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats.rq_active.inc();
        InFlight { endpoint, stats }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active_requests.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        self.stats.rq_active.dec();
    }
}

/// The upstream's answer to the attempt that was kept.
pub struct Forwarded {
    pub resp: Response<Incoming>,
    pub pool: Option<PoolReturn>,
    pub flight: InFlight,
}

impl Head for Forwarded {
    fn status(&self) -> u16 {
        self.resp.status().as_u16()
    }
    fn headers(&self) -> &HeaderMap {
        self.resp.headers()
    }
}

/// The result, and what the access log needs to know of the attempts.
pub struct Sent {
    pub result: Result<Forwarded, Flag>,
    /// The endpoint of the last attempt.
    pub upstream_host: Option<SocketAddr>,
    /// Retries ran out (`URX`).
    pub exhausted: bool,
}

struct Upstream<'a> {
    cluster: &'a Arc<Cluster>,
    action: &'a RouteAction,
    wire: Wire,
    out: &'a mut Outgoing,
    original_dst: Option<SocketAddr>,
    /// The request's consistent-hash key.
    hash: Option<u64>,
    tried: Vec<SocketAddr>,
    /// Retries granted by the retry circuit breaker, released when the request is done.
    retries: i64,
}

impl Attempts for Upstream<'_> {
    type Response = Forwarded;

    async fn attempt(&mut self, n: u32) -> Result<Forwarded, Flag> {
        let cluster = self.cluster;
        let stats = &cluster.stats;
        let policy = self.action.retry.as_deref();
        let ep = match policy {
            Some(p) if n > 0 && p.previous_hosts => cluster.pick_avoiding(&self.tried, p.host_selection_max_attempts),
            _ => cluster.pick_for_hashed(self.original_dst, self.hash),
        };
        let Some(ep) = ep else {
            stats.none_healthy.inc();
            return Err(Flag::NoHealthyUpstream);
        };
        self.tried.push(ep.addr);
        if stats.at_max_requests() {
            stats.rq_pending_overflow.inc();
            return Err(Flag::UpstreamOverflow);
        }
        stats.rq.inc();
        let flight = InFlight::new(ep.clone(), stats.clone());
        if self.action.attempt_count_header {
            self.out.headers.insert("x-envoy-attempt-count", HeaderValue::from(n + 1));
        }
        match upstream::send(cluster, &ep, self.wire, self.out, policy.is_some()).await {
            Ok((resp, pool)) => {
                outlier::report(cluster, &ep, Outcome::Status(resp.status().as_u16()));
                Ok(Forwarded { resp, pool, flight })
            }
            Err(flag) => {
                if !matches!(flag, Flag::DownstreamProtocolError | Flag::UpstreamOverflow) {
                    outlier::report(cluster, &ep, Outcome::LocalFailure);
                }
                Err(flag)
            }
        }
    }

    fn may_retry(&mut self) -> bool {
        if !self.out.can_send() {
            return false;
        }
        let stats = &self.cluster.stats;
        let cb = &self.cluster.config.circuit_breakers;
        let active = stats.rq_retry_active.get().max(0) as u64;
        let limit = match cb.retry_budget {
            // Retries in flight may be this share of the requests in flight (and pending).
            Some((pct, min)) => {
                let base = (stats.rq_active.get() + stats.rq_pending_active.get()).max(0) as f64;
                ((base * pct / 100.0) as u64).max(min as u64)
            }
            None => cb.max_retries,
        };
        if active >= limit {
            stats.rq_retry_overflow.inc();
            return false;
        }
        stats.rq_retry.inc();
        stats.rq_retry_active.inc();
        self.retries += 1;
        true
    }

    fn timed_out(&mut self) {
        if let Some(addr) = self.tried.last() {
            let set = self.cluster.endpoints.load();
            if let Some(ep) = set.list.iter().find(|e| e.addr == *addr) {
                outlier::report(self.cluster, ep, Outcome::LocalFailure);
            }
        }
    }
}

impl Drop for Upstream<'_> {
    fn drop(&mut self) {
        for _ in 0..self.retries {
            self.cluster.stats.rq_retry_active.dec();
        }
    }
}

/// Sends `out` to `cluster` under the route's retry policy and timeouts.
pub async fn forward(
    cluster: &Arc<Cluster>,
    action: &RouteAction,
    wire: Wire,
    out: &mut Outgoing,
    original_dst: Option<SocketAddr>,
    hash: Option<u64>,
    asked: crate::http::headers::TimeoutHeaders,
) -> Sent {
    let mut up = Upstream { cluster, action, wire, out, original_dst, hash, tried: Vec::new(), retries: 0 };
    let policy = action.retry.as_deref();
    let timeout = asked.global.unwrap_or(action.timeout);
    // per_try_idle_timeout: with no request body to send, an attempt waiting for its answer is
    // idle, so it bounds the attempt as a per-try timeout does.
    let idle =
        policy.and_then(|p| p.per_try_idle_timeout).filter(|_| matches!(up.out.body, upstream::BodySource::Empty));
    let per_try = match (asked.per_try.or(policy.and_then(|p| p.per_try_timeout)), idle) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let o = retry::run(policy, timeout, per_try, &mut up).await;
    let stats = &cluster.stats;
    stats.rq_per_try_timeout.add(o.per_try_timeouts as u64);
    if matches!(o.result, Err(Flag::UpstreamTimeout)) {
        stats.rq_timeout.inc();
    }
    if o.exhausted {
        stats.rq_retry_limit_exceeded.inc();
    } else if o.attempts > 1 && o.result.is_ok() {
        stats.rq_retry_success.inc();
    }
    Sent { upstream_host: up.tried.last().copied(), result: o.result, exhausted: o.exhausted }
}
