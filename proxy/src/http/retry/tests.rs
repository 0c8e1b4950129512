//! The attempt loop on paused time: which outcomes are retried, how often, how long it waits,
//! and which timeout answers.
use std::collections::VecDeque;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

use super::*;

struct Resp(u16, HeaderMap);

impl Head for Resp {
    fn status(&self) -> u16 {
        self.0
    }
    fn headers(&self) -> &HeaderMap {
        &self.1
    }
}

/// Scripted attempts: each takes `delay`, then gives its outcome.
struct Script {
    outcomes: VecDeque<(Duration, Result<u16, Flag>)>,
    started: Vec<Instant>,
    allow_retry: bool,
    timeouts: u32,
}

impl Script {
    fn new(outcomes: &[(u64, Result<u16, Flag>)]) -> Script {
        Script {
            outcomes: outcomes.iter().map(|(ms, r)| (Duration::from_millis(*ms), *r)).collect(),
            started: Vec::new(),
            allow_retry: true,
            timeouts: 0,
        }
    }
}

impl Attempts for Script {
    type Response = Resp;
    async fn attempt(&mut self, _n: u32) -> Result<Resp, Flag> {
        self.started.push(Instant::now());
        let (d, r) = self.outcomes.pop_front().expect("no more attempts scripted");
        tokio::time::sleep(d).await;
        r.map(|s| Resp(s, HeaderMap::new()))
    }
    fn may_retry(&mut self) -> bool {
        self.allow_retry
    }
    fn timed_out(&mut self) {
        self.timeouts += 1;
    }
}

fn policy(on: &str, retries: u32) -> RetryPolicy {
    let mut bits = RetryOn::default();
    for n in on.split(',') {
        bits.0 |= RetryOn::NAMES.iter().find(|(name, _)| *name == n).unwrap().1;
    }
    RetryPolicy {
        on: bits,
        num_retries: retries,
        per_try_timeout: None,
        per_try_idle_timeout: None,
        retriable_status_codes: vec![503],
        retriable_headers: vec![],
        back_off_base: Duration::from_millis(25),
        back_off_max: Duration::from_millis(250),
        previous_hosts: false,
        host_selection_max_attempts: 1,
    }
}

#[tokio::test(start_paused = true)]
async fn retries_5xx_until_success_and_reports_the_attempts() {
    let p = policy("5xx", 3);
    let mut s = Script::new(&[(1, Ok(503)), (1, Ok(500)), (1, Ok(200))]);
    let o = run(Some(&p), None, None, &mut s).await;
    assert_eq!(o.result.unwrap().0, 200);
    assert_eq!(o.attempts, 3);
    assert!(!o.exhausted);
}

#[tokio::test(start_paused = true)]
async fn retries_that_run_out_return_the_last_response_marked_exhausted() {
    let p = policy("gateway-error", 2);
    let mut s = Script::new(&[(1, Ok(502)), (1, Ok(503)), (1, Ok(504))]);
    let o = run(Some(&p), None, None, &mut s).await;
    assert_eq!(o.result.unwrap().0, 504);
    assert_eq!(o.attempts, 3);
    assert!(o.exhausted);
}

#[tokio::test(start_paused = true)]
async fn conditions_decide_what_is_retried() {
    // gateway-error does not cover 500; retriable-status-codes covers only its list.
    let cases: [(&str, Result<u16, Flag>, bool); 9] = [
        ("gateway-error", Ok(500), false),
        ("gateway-error", Ok(503), true),
        ("retriable-status-codes", Ok(503), true),
        ("retriable-status-codes", Ok(502), false),
        ("retriable-4xx", Ok(409), true),
        ("connect-failure", Err(Flag::UpstreamConnectFailure), true),
        ("connect-failure", Err(Flag::UpstreamReset), false),
        ("reset", Err(Flag::UpstreamConnectionTermination), true),
        ("5xx", Err(Flag::DownstreamProtocolError), false),
    ];
    for (on, first, retried) in cases {
        let p = policy(on, 1);
        let mut s = Script::new(&[(1, first), (1, Ok(200))]);
        let o = run(Some(&p), None, None, &mut s).await;
        assert_eq!(o.attempts == 2, retried, "{on} on {first:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_status_in_headers_is_retried_by_its_condition() {
    let p = policy("unavailable", 1);
    let mut h = HeaderMap::new();
    h.insert("grpc-status", "14".parse().unwrap());
    assert!(p.retry_response(200, &h));
    h.insert("grpc-status", "4".parse().unwrap());
    assert!(!p.retry_response(200, &h));
}

#[tokio::test(start_paused = true)]
async fn no_retry_when_the_body_cannot_be_sent_again_or_the_breaker_says_no() {
    let p = policy("5xx", 3);
    let mut s = Script::new(&[(1, Ok(503))]);
    s.allow_retry = false;
    let o = run(Some(&p), None, None, &mut s).await;
    assert_eq!(o.result.unwrap().0, 503);
    assert_eq!(o.attempts, 1);
    assert!(!o.exhausted);
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_cuts_an_attempt_and_the_next_one_answers() {
    let mut p = policy("5xx", 1);
    p.per_try_timeout = Some(Duration::from_millis(100));
    let mut s = Script::new(&[(10_000, Ok(200)), (5, Ok(201))]);
    let start = Instant::now();
    let o = run(Some(&p), Some(Duration::from_secs(15)), None, &mut s).await;
    assert_eq!(o.result.unwrap().0, 201);
    assert_eq!(o.per_try_timeouts, 1);
    assert_eq!(s.timeouts, 1);
    // The second attempt started after the per-try timeout plus a backoff below 25 ms.
    let second = s.started[1] - start;
    assert!(second >= Duration::from_millis(100) && second < Duration::from_millis(125), "{second:?}");
}

#[tokio::test(start_paused = true)]
async fn the_route_timeout_spans_all_attempts() {
    let mut p = policy("5xx", 5);
    p.per_try_timeout = Some(Duration::from_millis(400));
    let mut s = Script::new(&[(10_000, Ok(200)), (10_000, Ok(200)), (10_000, Ok(200))]);
    let start = Instant::now();
    let o = run(Some(&p), Some(Duration::from_secs(1)), None, &mut s).await;
    assert!(matches!(o.result, Err(Flag::UpstreamTimeout)));
    assert_eq!(Instant::now() - start, Duration::from_secs(1));
    assert!(s.started.len() >= 2 && s.started.len() <= 3);
}

#[tokio::test(start_paused = true)]
async fn without_a_policy_one_attempt_under_the_route_timeout() {
    let mut s = Script::new(&[(2_000, Ok(200))]);
    let o = run(None, Some(Duration::from_millis(500)), None, &mut s).await;
    assert!(matches!(o.result, Err(Flag::UpstreamTimeout)));
    assert_eq!(o.attempts, 1);
    assert_eq!(o.per_try_timeouts, 0);
}

#[test]
fn backoff_is_jittered_below_a_doubling_interval_capped_at_max() {
    let mut b = Backoff::new(Duration::from_millis(25), Duration::from_millis(100));
    let caps = [25u64, 50, 100, 100, 100];
    for cap in caps {
        let w = b.next_wait();
        assert!(w < Duration::from_millis(cap), "{w:?} >= {cap}ms");
    }
    // Jitter: over many draws the first wait is not constant.
    let firsts: std::collections::HashSet<_> =
        (0..50).map(|_| Backoff::new(Duration::from_millis(25), Duration::from_millis(250)).next_wait()).collect();
    assert!(firsts.len() > 5);
}
