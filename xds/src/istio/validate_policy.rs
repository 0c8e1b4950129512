//! Checks of the traffic policy fields (VirtualService `retries`, `fault`, `mirror(s)`,
//! `headers`; DestinationRule `connectionPool`, `outlierDetection`, `loadBalancer`), as Istio's
//! validation webhook makes them, plus refusals of what outrigger does not generate. Every
//! message starts with the field path; the caller adds file, document and resource.
use super::model::HttpRoute;
use super::policy::*;

/// Where an error goes: the message names the field path.
type Err<'a> = &'a mut dyn FnMut(String);

/// The policies Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` accept, as Istio's
/// validation lists them.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Istio's `ValidateDuration`: at least 1ms, in whole milliseconds.
fn duration(d: Option<&Duration>, field: &str, err: Err) {
    let Some(Duration(d)) = d else { return };
    if *d < std::time::Duration::from_millis(1) {
        err(format!("{field}: {d:?} must be at least 1ms"));
    } else if d.subsec_nanos() % 1_000_000 != 0 {
        err(format!("{field}: {d:?} is finer than a millisecond (only whole milliseconds are supported)"));
    }
}

/// An Istio int32 (or, with `max` u32::MAX, a uint32) that must not be negative.
fn count(v: Option<i64>, max: i64, field: &str, err: Err) {
    match v {
        Some(n) if n < 0 => err(format!("{field}: {n} must not be negative")),
        Some(n) if n > max => err(format!("{field}: {n} is larger than {max}")),
        _ => {}
    }
}

fn int32(v: Option<i64>, field: &str, err: Err) {
    count(v, i32::MAX.into(), field, err);
}

fn uint32(v: Option<i64>, field: &str, err: Err) {
    count(v, u32::MAX.into(), field, err);
}

fn percent_int(v: Option<i64>, field: &str, err: Err) {
    if let Some(n) = v.filter(|n| !(0..=100).contains(n)) {
        err(format!("{field}: {n} is not a percentage from 0 to 100"));
    }
}

fn percent(p: Option<&Percent>, field: &str, err: Err) {
    if let Some(v) = p.map(|p| p.value).filter(|v| !(0.0..=100.0).contains(v)) {
        err(format!("{field}.value: {v} is not a percentage from 0 to 100"));
    }
}

/// A fault's percentage, as Istio's `validatePercentage`: 0, or from 0.0001 to 100 (the
/// smallest step of a per-million fraction).
fn fault_percent(p: Option<&Percent>, field: &str, err: Err) {
    percent(p, field, err);
    if let Some(v) = p.map(|p| p.value).filter(|v| *v > 0.0 && *v < 0.0001) {
        err(format!("{field}.value: {v} is neither 0 nor at least 0.0001"));
    }
}

/// One `spec.http[i]` rule (`at` is its path). `known_host` says whether a host (as written in
/// the VirtualService's namespace) is a service of the registry.
pub(super) fn http_rule(r: &HttpRoute, at: &str, known_host: &dyn Fn(&str) -> bool, err: Err) {
    if let Some(rt) = &r.retries {
        retries(rt, &format!("{at}.retries"), err);
    }
    if let Some(f) = &r.fault {
        fault(f, &format!("{at}.fault"), err);
    }
    mirrors(r, at, known_host, err);
    if let Some(h) = &r.headers {
        headers(h, r.rewrite.as_ref().and_then(|rw| rw.authority.as_deref()), &format!("{at}.headers"), err);
    }
    if r.redirect.is_some() {
        // Istio refuses a fault next to a redirect; retries and mirrors have no effect on a
        // redirect (istiod drops them), which here is refused rather than accepted unused.
        let with = [
            ("fault", r.fault.is_some()),
            ("retries", r.retries.is_some()),
            ("mirror", r.mirror.is_some()),
            ("mirrors", !r.mirrors.is_empty()),
        ];
        for (field, set) in with {
            if set {
                err(format!("{at}.{field}: cannot be combined with redirect"));
            }
        }
    }
}

fn retries(r: &HttpRetry, at: &str, err: Err) {
    int32(Some(r.attempts), &format!("{at}.attempts"), err);
    // An empty retryOn is unset, for Istio as for istiod.
    let retry_on = r.retry_on.as_deref().filter(|s| !s.is_empty());
    if r.attempts == 0 && (r.per_try_timeout.is_some() || retry_on.is_some() || r.retry_remote_localities.is_some()) {
        err(format!("{at}: perTryTimeout, retryOn or retryRemoteLocalities is set while attempts is 0 (retries off)"));
    }
    duration(r.per_try_timeout.as_ref(), &format!("{at}.perTryTimeout"), err);
    if let Some(on) = retry_on {
        // As Istio: the comma-separated parts as written (no trimming), each a policy Envoy
        // knows or an HTTP status code.
        for part in on.split(',') {
            let status = part.parse::<i64>().is_ok_and(known_http_status);
            if !status && !RETRY_ON.contains(&part) {
                err(format!(
                    "{at}.retryOn: \"{part}\" is not a retry policy (one of {}) or an HTTP status code",
                    RETRY_ON.join(", ")
                ));
            }
        }
    }
    if r.retry_remote_localities == Some(true) {
        err(format!(
            "{at}.retryRemoteLocalities: not supported (istiod retries through Envoy's previous_priorities, and the proxy has a single priority)"
        ));
    }
}

fn fault(f: &HttpFault, at: &str, err: Err) {
    if f.delay.is_none() && f.abort.is_none() {
        err(format!("{at}: must have an abort and/or a delay"));
    }
    if let Some(d) = &f.delay {
        let at = format!("{at}.delay");
        match &d.fixed_delay {
            None => err(format!("{at}.fixedDelay: is required (the only delay type istiod generates)")),
            Some(fd) => duration(Some(fd), &format!("{at}.fixedDelay"), err),
        }
        fault_percent(d.percentage.as_ref(), &format!("{at}.percentage"), err);
        percent_int(d.percent, &format!("{at}.percent"), err);
    }
    if let Some(a) = &f.abort {
        let at = format!("{at}.abort");
        match (a.http_status, &a.grpc_status, &a.http2_error) {
            (_, _, Some(_)) => err(format!("{at}.http2Error: not supported (nor is it by istiod)")),
            (Some(s), None, None) if !(200..=599).contains(&s) => {
                err(format!("{at}.httpStatus: {s} is not in the range 200-599"))
            }
            (None, Some(g), None) if grpc_status_code(g).is_none() => {
                err(format!("{at}.grpcStatus: \"{g}\" is not a gRPC status name such as NOT_FOUND or UNAVAILABLE"))
            }
            (Some(_), Some(_), None) => err(format!("{at}: only one of httpStatus and grpcStatus can be set")),
            (None, None, None) => err(format!("{at}: httpStatus or grpcStatus is required")),
            _ => {}
        }
        fault_percent(a.percentage.as_ref(), &format!("{at}.percentage"), err);
    }
}

fn mirrors(r: &HttpRoute, at: &str, known_host: &dyn Fn(&str) -> bool, err: Err) {
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        err(format!("{at}: mirror and mirrors cannot both be set"));
    }
    if let Some(m) = &r.mirror {
        if !known_host(&m.host) {
            err(format!("{at}.mirror.host: \"{}\" is not a known service host", m.host));
        }
    } else {
        // istiod ignores them without a mirror; here that is an error rather than unused config.
        for (field, set) in
            [("mirrorPercentage", r.mirror_percentage.is_some()), ("mirrorPercent", r.mirror_percent.is_some())]
        {
            if set {
                err(format!("{at}.{field}: has no effect without mirror"));
            }
        }
    }
    percent(r.mirror_percentage.as_ref(), &format!("{at}.mirrorPercentage"), err);
    percent_int(r.mirror_percent, &format!("{at}.mirrorPercent"), err);
    for (j, m) in r.mirrors.iter().enumerate() {
        if !known_host(&m.destination.host) {
            err(format!("{at}.mirrors[{j}].destination.host: \"{}\" is not a known service host", m.destination.host));
        }
        percent(m.percentage.as_ref(), &format!("{at}.mirrors[{j}].percentage"), err);
    }
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn headers(h: &Headers, rewrite_authority: Option<&str>, at: &str, err: Err) {
    let mut authority = rewrite_authority.map(|a| ("rewrite.authority".to_string(), a));
    if let Some(req) = &h.request {
        for (op, map) in [("set", &req.set), ("add", &req.add)] {
            for (name, value) in map {
                let field = format!("{at}.request.{op}.{name}");
                if name.is_empty() {
                    err(format!("{at}.request.{op}: a header name cannot be empty"));
                } else if is_authority(name) {
                    // The authority becomes the route's host rewrite: it can be set once.
                    if let Some((first, _)) = &authority {
                        err(format!("{field}: the authority is already set by {first}"));
                    }
                    authority = Some((field.clone(), value.as_str()));
                } else if name.starts_with(':') {
                    err(format!("{field}: a header name cannot start with ':'"));
                }
                header_value(value, &field, err);
            }
        }
        for name in &req.remove {
            header_name(name, &format!("{at}.request.remove"), err);
        }
    }
    if let Some(resp) = &h.response {
        for (op, map) in [("set", &resp.set), ("add", &resp.add)] {
            for (name, value) in map {
                header_name(name, &format!("{at}.response.{op}"), err);
                header_value(value, &format!("{at}.response.{op}.{name}"), err);
            }
        }
        for name in &resp.remove {
            header_name(name, &format!("{at}.response.remove"), err);
        }
    }
}

/// Istio's `ValidateHTTPHeaderOperationName`: not empty, not Host, no pseudo-header.
fn header_name(name: &str, field: &str, err: Err) {
    if name.is_empty() {
        err(format!("{field}: a header name cannot be empty"));
    } else if name.eq_ignore_ascii_case("host") {
        err(format!("{field}: \"{name}\" cannot be changed here"));
    } else if name.starts_with(':') {
        err(format!("{field}: \"{name}\": a header name cannot start with ':'"));
    }
}

/// Istio's header value check: no control characters other than tab.
fn header_value(value: &str, field: &str, err: Err) {
    if value.chars().any(|c| (c.is_ascii_control() && c != '\t') || c == '\u{7f}') {
        err(format!("{field}: the value contains a control character"));
    }
}

/// One `trafficPolicy` (`at` is its path), with its port-level settings.
pub(super) fn traffic_policy(tp: &TrafficPolicy, at: &str, err: Err) {
    components(tp.load_balancer.as_ref(), tp.connection_pool.as_ref(), tp.outlier_detection.as_ref(), at, err);
    for (j, p) in tp.port_level_settings.iter().enumerate() {
        let at = format!("{at}.portLevelSettings[{j}]");
        match &p.port {
            None => err(format!("{at}.port: is required")),
            Some(port) if port.number == 0 => err(format!("{at}.port.number: must be 1-65535")),
            _ => {}
        }
        if p.load_balancer.is_none() && p.connection_pool.is_none() && p.outlier_detection.is_none() {
            err(format!("{at}: needs at least one of loadBalancer, connectionPool, outlierDetection"));
        }
        components(p.load_balancer.as_ref(), p.connection_pool.as_ref(), p.outlier_detection.as_ref(), &at, err);
    }
}

fn components(
    lb: Option<&LoadBalancer>,
    pool: Option<&ConnectionPool>,
    outlier: Option<&OutlierDetection>,
    at: &str,
    err: Err,
) {
    if let Some(lb) = lb {
        load_balancer(lb, &format!("{at}.loadBalancer"), err);
    }
    if let Some(p) = pool {
        connection_pool(p, &format!("{at}.connectionPool"), err);
    }
    if let Some(o) = outlier {
        outlier_detection(o, &format!("{at}.outlierDetection"), err);
    }
}

fn load_balancer(lb: &LoadBalancer, at: &str, err: Err) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        err(format!("{at}: only one of simple and consistentHash can be set"));
    }
    if let Some(ch) = &lb.consistent_hash {
        let at = format!("{at}.consistentHash");
        let keys = ch.keys();
        if keys.len() > 1 {
            err(format!("{at}: only one hash key can be set, found {}", keys.join(", ")));
        }
        if let Some(c) = &ch.http_cookie {
            if c.name.is_empty() {
                err(format!("{at}.httpCookie.name: is required"));
            }
        }
        let algorithms = [
            ("ringHash", ch.ring_hash.is_some()),
            ("maglev", ch.maglev.is_some()),
            ("minimumRingSize", ch.minimum_ring_size.is_some_and(|n| n != 0)),
        ];
        let set: Vec<&str> = algorithms.iter().filter(|(_, s)| *s).map(|(k, _)| *k).collect();
        if set.len() > 1 {
            err(format!("{at}: only one of ringHash, maglev and minimumRingSize can be set, found {}", set.join(", ")));
        }
        if let Some(m) = &ch.maglev {
            match m.table_size.unwrap_or(0) {
                0 => err(format!("{at}.maglev.tableSize: is required")),
                n if n >= 5_000_011 => err(format!("{at}.maglev.tableSize: {n} must be less than 5000011")),
                n if !is_prime(n) => err(format!("{at}.maglev.tableSize: {n} must be a prime number")),
                _ => {}
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        let set = [
            ("distribute", !l.distribute.is_empty()),
            ("failover", !l.failover.is_empty()),
            ("failoverPriority", !l.failover_priority.is_empty()),
        ];
        for (field, _) in set.iter().filter(|(_, s)| *s) {
            err(format!(
                "{at}.localityLbSetting.{field}: not supported (it needs the proxy's locality and endpoint priorities, which outrigger does not have)"
            ));
        }
    }
}

/// Envoy's (and Istio's) primality test for Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut f = 3;
    while f * f <= x {
        if x.rem_euclid(f) == 0 {
            return false;
        }
        f += 2;
    }
    true
}

fn connection_pool(p: &ConnectionPool, at: &str, err: Err) {
    if p.tcp.is_none() && p.http.is_none() {
        err(format!("{at}: needs at least one of tcp and http"));
    }
    if let Some(t) = &p.tcp {
        let at = format!("{at}.tcp");
        int32(t.max_connections, &format!("{at}.maxConnections"), err);
        duration(t.connect_timeout.as_ref(), &format!("{at}.connectTimeout"), err);
        duration(t.max_connection_duration.as_ref(), &format!("{at}.maxConnectionDuration"), err);
        // 0s turns the idle timeout off.
        duration(t.idle_timeout.as_ref().filter(|d| !d.0.is_zero()), &format!("{at}.idleTimeout"), err);
        if let Some(k) = &t.tcp_keepalive {
            uint32(k.probes, &format!("{at}.tcpKeepalive.probes"), err);
            duration(k.time.as_ref(), &format!("{at}.tcpKeepalive.time"), err);
            duration(k.interval.as_ref(), &format!("{at}.tcpKeepalive.interval"), err);
        }
    }
    if let Some(h) = &p.http {
        let at = format!("{at}.http");
        for (field, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            int32(v, &format!("{at}.{field}"), err);
        }
        duration(h.idle_timeout.as_ref(), &format!("{at}.idleTimeout"), err);
        // The proxy's upstream HTTP/2 client takes the server's stream limit and has no
        // per-connection limit of its own (Envoy opens more connections past it).
        if h.max_concurrent_streams.is_some() {
            err(format!("{at}.maxConcurrentStreams: not supported by the proxy"));
        }
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol {
            err(format!("{at}.useClientProtocol: cannot be true when h2UpgradePolicy is UPGRADE"));
        }
    }
}

fn outlier_detection(o: &OutlierDetection, at: &str, err: Err) {
    uint32(o.consecutive_5xx_errors, &format!("{at}.consecutive5xxErrors"), err);
    uint32(o.consecutive_gateway_errors, &format!("{at}.consecutiveGatewayErrors"), err);
    uint32(o.consecutive_local_origin_failures, &format!("{at}.consecutiveLocalOriginFailures"), err);
    if !o.split_external_local_origin_errors && o.consecutive_local_origin_failures.is_some_and(|n| n > 0) {
        err(format!("{at}.consecutiveLocalOriginFailures: needs splitExternalLocalOriginErrors: true"));
    }
    duration(o.interval.as_ref(), &format!("{at}.interval"), err);
    duration(o.base_ejection_time.as_ref(), &format!("{at}.baseEjectionTime"), err);
    percent_int(o.max_ejection_percent, &format!("{at}.maxEjectionPercent"), err);
    percent_int(o.min_health_percent, &format!("{at}.minHealthPercent"), err);
}
