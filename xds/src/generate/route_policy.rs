//! A VirtualService rule's policies on its Envoy route, as istiod (1.30) writes them:
//! `retries` → `retry_policy` (`retry.ConvertPolicy`), `mirror`/`mirrors` →
//! `request_mirror_policies` (`MirrorPercent`, `MirrorPercentByPolicy`,
//! `TranslateRequestMirrorPolicy`), `fault` → the route's `typed_per_filter_config` for the
//! fault filter (`TranslateFault`), `headers` → the route's header operations
//! (`TranslateHeadersOperations`), and a DestinationRule's `consistentHash` → `hash_policy`
//! (`ConsistentHashToHashPolicy`), all in pilot/pkg/networking/core/route/.
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{hash_policy, HashPolicy, RequestMirrorPolicy};
use envoy_types::pb::envoy::config::route::v3::{retry_policy, RetryPolicy};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{fault_delay, FaultDelay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, FaultAbort, HttpFault};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::Any;

use super::{bool_value, pb_duration, to_any, u32_value};
use crate::istio::model::{Destination, HttpRoute};
use crate::istio::policy::{self, ConsistentHash, Headers, HttpFault as IstioFault, HttpRetry, Percent};

/// The fault filter's name: the HTTP filter in every connection manager, and the key of a
/// route's fault in `typed_per_filter_config`.
pub(crate) const FAULT_FILTER: &str = "envoy.filters.http.fault";
pub(crate) const HTTP_FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_PREDICATE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// istiod's default `retry_on` (retry.go `defaultRetryOn`). Since Istio 1.24 the default no
/// longer lists 503 in `retriable_status_codes` (a 503 from the application may have had side
/// effects), so `retriable-status-codes` names an empty list.
const DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// The empty HTTPFault that the connection managers carry: routes hold the actual faults.
pub(crate) fn empty_fault_filter() -> Any {
    to_any(HTTP_FAULT, &HttpFault::default())
}

fn previous_hosts() -> retry_policy::RetryHostPredicate {
    retry_policy::RetryHostPredicate {
        name: PREVIOUS_HOSTS.into(),
        config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(to_any(
            PREVIOUS_HOSTS_PREDICATE,
            &PreviousHostsPredicate {},
        ))),
    }
}

/// istiod's `newRetryPolicy`: 2 retries on the default conditions, 5 host selection attempts,
/// and (unless the destination hashes consistently, where a retry must stay on the same host)
/// the previous-hosts predicate.
fn base_policy(consistent_hash: bool) -> RetryPolicy {
    RetryPolicy {
        num_retries: u32_value(2),
        retry_on: DEFAULT_RETRY_ON.into(),
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: if consistent_hash { Vec::new() } else { vec![previous_hosts()] },
        ..Default::default()
    }
}

/// The retry policy of a route (`retry.ConvertPolicy`): the default when `retries` is absent,
/// none for `attempts: 0`. `consistent_hash`: the route's only destination uses a consistent
/// hash load balancer.
pub fn retry_policy(r: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let Some(r) = r else { return Some(base_policy(consistent_hash)) };
    if r.attempts <= 0 {
        return None;
    }
    let mut out = base_policy(consistent_hash);
    out.num_retries = u32_value(r.attempts as u32);
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        let (names, codes) = parse_retry_on(on);
        out.retry_on = names;
        // Status codes alone still need the condition that retries on them.
        if !codes.is_empty() && !out.retry_on.contains("retriable-status-codes") {
            out.retry_on.push_str(",retriable-status-codes");
        }
        out.retriable_status_codes = codes;
    }
    if let Some(t) = &r.per_try_timeout {
        out.per_try_timeout = Some(pb_duration(t.0));
    }
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore { vec![previous_hosts()] } else { Vec::new() };
    }
    // retryRemoteLocalities: true is refused at load (no retry priorities in the proxy).
    Some(out)
}

/// istiod's `parseRetryOn`: numbers that are HTTP status codes become `retriable_status_codes`,
/// the rest stays the `retry_on` list.
fn parse_retry_on(on: &str) -> (String, Vec<u32>) {
    let mut names = Vec::new();
    let mut codes = Vec::new();
    for part in on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<i64>() {
            Ok(code) if policy::known_http_status(code) => codes.push(code as u32),
            _ => names.push(part),
        }
    }
    (names.join(","), codes)
}

/// A `Percent` as istiod encodes it: per million, truncated (`translatePercentToFractionalPercent`).
fn per_million(p: &Percent) -> FractionalPercent {
    FractionalPercent { numerator: (p.value * 10000.0) as u32, denominator: DenominatorType::Million as i32 }
}

/// An integer percent as istiod encodes it: per hundred (`translateIntegerToFractionalPercent`).
fn per_hundred(p: i64) -> FractionalPercent {
    FractionalPercent { numerator: p as u32, denominator: DenominatorType::Hundred as i32 }
}

fn mirror(cluster: String, fraction: FractionalPercent) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent { default_value: Some(fraction), ..Default::default() }),
        trace_sampled: bool_value(false),
        // istiod's DISABLE_SHADOW_HOST_SUFFIX, true by default since 1.28: the mirrored request
        // keeps its Host.
        disable_shadow_host_suffix_append: true,
        ..Default::default()
    }
}

/// The rule's mirrors: `mirror` (with `mirrorPercentage`, else the deprecated `mirrorPercent`,
/// else 100 %) and each of `mirrors`; an explicit 0 % mirrors nothing. `cluster` names a
/// destination's cluster as the route's destinations are named.
pub fn mirror_policies(rule: &HttpRoute, cluster: impl Fn(&Destination) -> String) -> Vec<RequestMirrorPolicy> {
    let mut out = Vec::new();
    if let Some(m) = &rule.mirror {
        let fraction = match (&rule.mirror_percentage, rule.mirror_percent) {
            (Some(p), _) => (p.value > 0.0).then(|| per_million(p)),
            (None, Some(p)) => (p > 0).then(|| per_hundred(p)),
            (None, None) => Some(per_hundred(100)),
        };
        out.extend(fraction.map(|f| mirror(cluster(m), f)));
    }
    for m in &rule.mirrors {
        let fraction = match &m.percentage {
            Some(p) => (p.value > 0.0).then(|| per_million(p)),
            None => Some(per_hundred(100)),
        };
        out.extend(fraction.map(|f| mirror(cluster(&m.destination), f)));
    }
    out
}

/// The route's fault filter config (`TranslateFault`). A delay without a `percentage` takes the
/// deprecated integer `percent` (0 when absent, as istiod does: no request is delayed); an abort
/// without one leaves it unset (Envoy's default, 0 %).
pub fn fault(f: &IstioFault) -> Any {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay?;
        Some(FaultDelay {
            percentage: Some(
                d.percentage.as_ref().map(per_million).unwrap_or_else(|| per_hundred(d.percent.unwrap_or(0))),
            ),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(pb_duration(fixed.0))),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = match (a.http_status, &a.grpc_status) {
            (Some(s), _) => fault_abort::ErrorType::HttpStatus(s as u32),
            (None, Some(g)) => fault_abort::ErrorType::GrpcStatus(policy::grpc_status_code(g)?),
            (None, None) => return None,
        };
        Some(FaultAbort {
            percentage: a.percentage.as_ref().map(per_million),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    to_any(HTTP_FAULT, &HttpFault { delay, abort, ..Default::default() })
}

/// What `headers` does to a route (`TranslateHeadersOperations`).
#[derive(Default)]
pub struct HeaderOps {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
    /// `:authority` or `host` in request `set` (else `add`): istiod's host rewrite.
    pub authority: Option<String>,
}

/// Pseudo-headers and Host are not Envoy's to add or remove (the authority becomes a rewrite).
fn is_internal(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// `set` overwrites (OVERWRITE_IF_EXISTS_OR_ADD), `add` appends (APPEND_IF_EXISTS_OR_ADD); each
/// sorted by name, the sets first, as istiod lists them.
fn to_add<'a>(
    set: impl IntoIterator<Item = (&'a String, &'a String)>,
    add: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<HeaderValueOption> {
    let option = |(k, v): (&String, &String), action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue { key: k.clone(), value: v.clone(), ..Default::default() }),
        append_action: action as i32,
        ..Default::default()
    };
    let set =
        set.into_iter().filter(|(k, _)| !is_internal(k)).map(|h| option(h, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add =
        add.into_iter().filter(|(k, _)| !is_internal(k)).map(|h| option(h, HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add).collect()
}

pub fn header_operations(h: &Headers) -> HeaderOps {
    let mut out = HeaderOps::default();
    let remove = |names: &[String]| names.iter().filter(|n| !is_internal(n)).cloned().collect::<Vec<_>>();
    if let Some(req) = &h.request {
        out.request_add = to_add(&req.set, &req.add);
        out.request_remove = remove(&req.remove);
        let authority = |m: &std::collections::BTreeMap<String, String>| {
            m.iter().rev().find(|(k, _)| is_authority(k)).map(|(_, v)| v.clone())
        };
        out.authority = authority(&req.set).or_else(|| authority(&req.add));
    }
    if let Some(resp) = &h.response {
        out.response_add = to_add(&resp.set, &resp.add);
        out.response_remove = remove(&resp.remove);
    }
    out
}

/// A DestinationRule's consistent hash as the route's hash policy; none without a hash key.
pub fn hash_policy(ch: &ConsistentHash) -> Option<HashPolicy> {
    use hash_policy::PolicySpecifier as P;
    let specifier = if let Some(h) = &ch.http_header_name {
        P::Header(hash_policy::Header { header_name: h.clone(), ..Default::default() })
    } else if let Some(c) = &ch.http_cookie {
        P::Cookie(hash_policy::Cookie {
            name: c.name.clone(),
            ttl: c.ttl.map(|t| pb_duration(t.0)),
            path: c.path.clone().unwrap_or_default(),
            ..Default::default()
        })
    } else if let Some(ip) = ch.use_source_ip {
        P::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: ip })
    } else if let Some(q) = &ch.http_query_parameter_name {
        P::QueryParameter(hash_policy::QueryParameter { name: q.clone() })
    } else {
        return None;
    };
    Some(HashPolicy { policy_specifier: Some(specifier), ..Default::default() })
}
