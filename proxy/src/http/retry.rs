//! Retries: which outcomes a route's `retry_policy` retries, the jittered exponential backoff,
//! and the attempt loop under the route timeout (all attempts) and the per-try timeout (each).
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::local_reply::Flag;
use crate::config::route::{RetryOn, RetryPolicy};

/// What the loop needs to know of an attempt's response.
pub trait Head {
    fn status(&self) -> u16;
    fn headers(&self) -> &HeaderMap;
}

/// How the attempts ended.
#[derive(Debug)]
pub struct Outcome<R> {
    pub result: Result<R, Flag>,
    /// Attempts made (1 without retries).
    pub attempts: u32,
    /// The last outcome was retriable but no retry was left (`URX`).
    pub exhausted: bool,
    pub per_try_timeouts: u32,
}

impl RetryPolicy {
    /// Whether a response is one `retry_on` retries.
    pub fn retry_response(&self, status: u16, headers: &HeaderMap) -> bool {
        let on = self.on;
        (on.has(RetryOn::X5XX) && status >= 500)
            || (on.has(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
            || (on.has(RetryOn::RETRIABLE_4XX) && status == 409)
            || (on.has(RetryOn::RETRIABLE_STATUS_CODES) && self.retriable_status_codes.contains(&status))
            || (on.has(RetryOn::RETRIABLE_HEADERS)
                && self.retriable_headers.iter().any(|m| super::route_match::header_matches(m, headers)))
            || grpc_retriable(on, headers)
    }

    /// Whether a failure without a response is retried: connect failures, resets and per-try
    /// timeouts under the conditions Envoy has for them. Never the client's own errors nor a
    /// circuit breaker's overflow.
    pub fn retry_error(&self, flag: Flag) -> bool {
        let on = self.on;
        let any_5xx = on.has(RetryOn::X5XX) || on.has(RetryOn::GATEWAY_ERROR);
        match flag {
            Flag::UpstreamConnectFailure => any_5xx || on.has(RetryOn::CONNECT_FAILURE) || on.has(RetryOn::RESET),
            Flag::UpstreamConnectionTermination | Flag::UpstreamReset | Flag::UpstreamTimeout => {
                any_5xx || on.has(RetryOn::RESET)
            }
            Flag::UpstreamRefusedStream => any_5xx || on.has(RetryOn::RESET) || on.has(RetryOn::REFUSED_STREAM),
            _ => false,
        }
    }
}

/// gRPC statuses in a trailers-only response (`grpc-status` in the headers).
fn grpc_retriable(on: RetryOn, headers: &HeaderMap) -> bool {
    let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok())
    else {
        return false;
    };
    match code {
        1 => on.has(RetryOn::GRPC_CANCELLED),
        4 => on.has(RetryOn::GRPC_DEADLINE_EXCEEDED),
        8 => on.has(RetryOn::GRPC_RESOURCE_EXHAUSTED),
        13 => on.has(RetryOn::GRPC_INTERNAL),
        14 => on.has(RetryOn::GRPC_UNAVAILABLE),
        _ => false,
    }
}

/// Envoy's jittered exponential backoff: the n-th wait is uniform in [0, base·2ⁿ⁻¹), the
/// interval capped at `max`.
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { next: base.max(Duration::from_millis(1)), max }
    }
    pub fn next_wait(&mut self) -> Duration {
        let cap = self.next;
        self.next = if self.next > self.max / 2 { self.max } else { self.next * 2 };
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(fastrand::u64(0..ms)).min(self.max)
    }
}

/// The attempts of one request, as the loop drives them.
pub(crate) trait Attempts {
    type Response: Head;
    /// Makes attempt `n` (0 first).
    async fn attempt(&mut self, n: u32) -> Result<Self::Response, Flag>;
    /// Whether a retry may be made now (the body can be sent again, the retry circuit breaker
    /// is closed); called only when the outcome is retriable and retries are left.
    fn may_retry(&mut self) -> bool;
    /// The attempt in flight timed out (per try or the route's) and was dropped.
    fn timed_out(&mut self) {}
}

/// Makes attempts until one is not retriable, the retries run out, `may_retry` says no, or the
/// route timeout passes (504 `UT`). `per_try_timeout` (a request's header) overrides the
/// policy's.
pub(crate) async fn run<A: Attempts>(
    policy: Option<&RetryPolicy>,
    timeout: Option<Duration>,
    per_try_timeout: Option<Duration>,
    a: &mut A,
) -> Outcome<A::Response> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut backoff = policy.map(|p| Backoff::new(p.back_off_base, p.back_off_max));
    let mut n = 0;
    let mut per_try_timeouts = 0;
    let timed_out = |attempts, per_try_timeouts| Outcome {
        result: Err(Flag::UpstreamTimeout),
        attempts,
        exhausted: false,
        per_try_timeouts,
    };
    loop {
        let per_try = per_try_timeout.or(policy.and_then(|p| p.per_try_timeout)).map(|t| Instant::now() + t);
        let limit = match (per_try, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let result = match limit {
            None => a.attempt(n).await,
            Some(at) => match tokio::time::timeout_at(at, a.attempt(n)).await {
                Ok(r) => r,
                Err(_) => {
                    a.timed_out();
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return timed_out(n + 1, per_try_timeouts);
                    }
                    per_try_timeouts += 1;
                    Err(Flag::UpstreamTimeout)
                }
            },
        };
        let done = |result, exhausted| Outcome { result, attempts: n + 1, exhausted, per_try_timeouts };
        let (Some(p), Some(b)) = (policy, backoff.as_mut()) else { return done(result, false) };
        let retriable = match &result {
            Ok(r) => p.retry_response(r.status(), r.headers()),
            Err(f) => p.retry_error(*f),
        };
        if !retriable {
            return done(result, false);
        }
        if n >= p.num_retries {
            return done(result, true);
        }
        if !a.may_retry() {
            return done(result, false);
        }
        drop(result);
        let wait = Instant::now() + b.next_wait();
        if let Some(d) = deadline.filter(|d| wait >= *d) {
            tokio::time::sleep_until(d).await;
            return timed_out(n + 1, per_try_timeouts);
        }
        tokio::time::sleep_until(wait).await;
        n += 1;
    }
}

#[cfg(test)]
mod tests;
