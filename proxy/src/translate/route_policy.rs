//! The resilience parts of a route: retry policy, mirrors, hash policy, header operations.
use std::time::Duration;

use super::route::header_match;
use super::{duration, ConfigError, Ctx};
use crate::config::route::*;

/// Envoy's default `per_connection_buffer_limit_bytes`, the bound of a body kept for a retry
/// or a shadow when the route does not set `per_request_buffer_limit_bytes`.
pub(super) const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

const PREVIOUS_HOSTS: &str = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

pub(super) fn retry_policy(
    ctx: &Ctx,
    rp: &envoy_types::pb::envoy::config::route::v3::RetryPolicy,
) -> Result<RetryPolicy, ConfigError> {
    use envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType;
    let mut on = RetryOn::default();
    for name in rp.retry_on.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match RetryOn::NAMES.iter().find(|(n, _)| *n == name) {
            Some((_, bit)) => on.0 |= bit,
            None => return Err(ctx.field("retry_on").err(format!("unsupported retry condition \"{name}\""))),
        }
    }
    let mut previous_hosts = false;
    for (i, p) in rp.retry_host_predicate.iter().enumerate() {
        let pctx = ctx.index("retry_host_predicate", i);
        match &p.config_type {
            Some(ConfigType::TypedConfig(any)) if super::type_name(&any.type_url) == PREVIOUS_HOSTS => {
                previous_hosts = true
            }
            Some(ConfigType::TypedConfig(any)) => {
                return Err(pctx
                    .field("typed_config")
                    .err(format!("unsupported retry host predicate {}", any.type_url)))
            }
            None => return Err(pctx.err("typed_config is required")),
        }
    }
    let retriable_status_codes = rp
        .retriable_status_codes
        .iter()
        .enumerate()
        .map(|(i, c)| {
            u16::try_from(*c)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| ctx.index("retriable_status_codes", i).err(format!("{c} is not an HTTP status")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let retriable_headers = rp
        .retriable_headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_match(&ctx.index("retriable_headers", i), h))
        .collect::<Result<Vec<_>, _>>()?;
    if retriable_headers.iter().any(|h| !matches!(h.name, HeaderKey::Header(_))) {
        return Err(ctx.field("retriable_headers").err("pseudo-headers are not response headers"));
    }
    let (base, max) = match &rp.retry_back_off {
        None => (Duration::from_millis(25), Duration::from_millis(250)),
        Some(b) => {
            let base = duration(&b.base_interval)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| ctx.field("retry_back_off.base_interval").err("must be greater than 0"))?;
            let max = duration(&b.max_interval).unwrap_or(base * 10);
            if max < base {
                return Err(ctx.field("retry_back_off.max_interval").err("must not be less than base_interval"));
            }
            (base, max)
        }
    };
    let attempts = rp.host_selection_retry_max_attempts;
    if attempts < 0 {
        return Err(ctx.field("host_selection_retry_max_attempts").err("must not be negative"));
    }
    Ok(RetryPolicy {
        on,
        num_retries: rp.num_retries.map(|v| v.value).unwrap_or(1),
        per_try_timeout: duration(&rp.per_try_timeout).filter(|d| !d.is_zero()),
        per_try_idle_timeout: duration(&rp.per_try_idle_timeout).filter(|d| !d.is_zero()),
        retriable_status_codes,
        retriable_headers,
        back_off_base: base,
        back_off_max: max,
        previous_hosts,
        host_selection_max_attempts: (attempts.min(100) as u32).max(1),
    })
}

pub(super) fn mirror(
    ctx: &Ctx,
    m: &envoy_types::pb::envoy::config::route::v3::route_action::RequestMirrorPolicy,
) -> Result<Mirror, ConfigError> {
    if m.cluster.is_empty() {
        return Err(ctx.field("cluster").err("cluster is required"));
    }
    let (numerator, denominator) = match m.runtime_fraction.as_ref() {
        None => (100, 100),
        Some(rf) => {
            if !rf.runtime_key.is_empty() {
                return Err(ctx.field("runtime_fraction.runtime_key").err("runtime keys are not supported"));
            }
            let p = rf.default_value.unwrap_or_default();
            let den = match p.denominator {
                0 => 100,
                1 => 10_000,
                2 => 1_000_000,
                _ => return Err(ctx.field("runtime_fraction.default_value.denominator").err("unknown denominator")),
            };
            (p.numerator.min(den), den)
        }
    };
    Ok(Mirror { cluster: m.cluster.clone(), numerator, denominator, keep_host: m.disable_shadow_host_suffix_append })
}

pub(super) fn hash_policy(
    ctx: &Ctx,
    h: &envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy,
) -> Result<HashPolicy, ConfigError> {
    use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier as P;
    let key = match &h.policy_specifier {
        Some(P::Header(hd)) => {
            HashKey::Header(http::HeaderName::from_bytes(hd.header_name.as_bytes()).map_err(|_| {
                ctx.field("header.header_name").err(format!("invalid header name \"{}\"", hd.header_name))
            })?)
        }
        Some(P::Cookie(c)) => {
            if c.name.is_empty() {
                return Err(ctx.field("cookie.name").err("a cookie name is required"));
            }
            HashKey::Cookie {
                name: c.name.clone(),
                ttl: duration(&c.ttl),
                path: (!c.path.is_empty()).then(|| c.path.clone()),
            }
        }
        Some(P::ConnectionProperties(cp)) if cp.source_ip => HashKey::SourceIp,
        Some(P::ConnectionProperties(_)) => {
            return Err(ctx.field("connection_properties.source_ip").err("must be true"))
        }
        Some(P::QueryParameter(q)) if !q.name.is_empty() => HashKey::Query(q.name.clone()),
        Some(P::QueryParameter(_)) => {
            return Err(ctx.field("query_parameter.name").err("a parameter name is required"))
        }
        Some(_) => return Err(ctx.err("unsupported hash policy")),
        None => {
            return Err(ctx.err("a hash policy (header, cookie, connection_properties, query_parameter) is required"))
        }
    };
    Ok(HashPolicy { key, terminal: h.terminal })
}

/// Route header additions and removals. Values are Envoy format strings: `%%` is a literal `%`;
/// command operators (`%REQ(...)%`, ...) are not implemented and refused.
pub(super) fn header_ops(
    ctx: &Ctx,
    add_field: &str,
    add: &[envoy_types::pb::envoy::config::core::v3::HeaderValueOption],
    remove_field: &str,
    remove: &[String],
) -> Result<HeaderOps, ConfigError> {
    let mut ops = HeaderOps::default();
    for (i, o) in add.iter().enumerate() {
        let octx = ctx.index(add_field, i);
        let hv = o.header.as_ref().ok_or_else(|| octx.field("header").err("header is required"))?;
        let name = http::HeaderName::from_bytes(hv.key.as_bytes())
            .map_err(|_| octx.field("header.key").err(format!("invalid header name \"{}\"", hv.key)))?;
        if hv.key.starts_with(':') || name == http::header::HOST {
            return Err(octx.field("header.key").err("pseudo-headers and host cannot be set here"));
        }
        let literal = unescape_format(&hv.value).ok_or_else(|| {
            octx.field("header.value").err("format operators (%...%) are not supported; write %% for %")
        })?;
        let value = http::HeaderValue::from_str(&literal)
            .map_err(|_| octx.field("header.value").err("invalid header value"))?;
        let action = match o.append_action {
            0 => AppendAction::AppendIfExistsOrAdd,
            1 => AppendAction::AddIfAbsent,
            2 => AppendAction::OverwriteIfExistsOrAdd,
            3 => AppendAction::OverwriteIfExists,
            _ => return Err(octx.field("append_action").err("unknown value")),
        };
        ops.add.push((name, value, action));
    }
    for (i, n) in remove.iter().enumerate() {
        let name = http::HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| ctx.index(remove_field, i).err(format!("invalid header name \"{n}\"")))?;
        ops.remove.push(name);
    }
    Ok(ops)
}

/// `%%` → `%`; None when the value has a format operator.
fn unescape_format(v: &str) -> Option<String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() != Some('%') {
            return None;
        }
        out.push(c);
    }
    Some(out)
}
