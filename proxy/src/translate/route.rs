//! RouteConfiguration → RouteTable.
use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route::Action as PbAction,
    route_action::ClusterSpecifier,
    route_action::HostRewriteSpecifier,
    route_match::PathSpecifier,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route as PbRoute,
    RouteAction as PbRouteAction, RouteConfiguration, VirtualHost as PbVirtualHost,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, RegexMatcher, StringMatcher};
use http::StatusCode;
use regex::Regex;

use super::route_policy::{hash_policy, header_ops, mirror, retry_policy, DEFAULT_BUFFER_LIMIT};
use super::{duration, ConfigError, Ctx};
use crate::config::route::*;

/// Envoy's default route timeout.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

pub fn translate_route_config(rc: &RouteConfiguration) -> Result<RouteTable, ConfigError> {
    translate_route_config_in(&Ctx::new(format!("route_config \"{}\"", rc.name)), rc)
}

pub(crate) fn translate_route_config_in(ctx: &Ctx, rc: &RouteConfiguration) -> Result<RouteTable, ConfigError> {
    let mut b = TableBuilder::new(ctx, rc.virtual_hosts.len());
    for vh in &rc.virtual_hosts {
        b.add(vh)?;
    }
    Ok(b.finish(rc.name.clone(), rc.validate_clusters.map(|v| v.value)))
}

/// `RouteConfiguration.virtual_hosts`.
const VIRTUAL_HOSTS: u32 = 2;

/// An encoded RouteConfiguration (an RDS resource) → (name, RouteTable), one virtual host at a
/// time: the decoded form of a whole mesh's routes (a few KB of prost structs per virtual host)
/// never exists at once.
pub(crate) fn translate_route_config_encoded(bytes: &[u8]) -> Result<(String, RouteTable), ConfigError> {
    use prost::Message;
    let cannot = |e: &dyn std::fmt::Display| {
        ConfigError::invalid("resource", "", format!("cannot decode type.googleapis.com/{ROUTE_TYPE}: {e}"))
    };
    let bad = |e: prost::DecodeError| cannot(&e);
    // Everything but the virtual hosts, decoded as one message; the virtual hosts' byte ranges.
    let mut rest = Vec::new();
    let mut vhosts = Vec::new();
    let mut buf = bytes;
    while !buf.is_empty() {
        let start = bytes.len() - buf.len();
        let (number, wire_type) = prost::encoding::decode_key(&mut buf).map_err(bad)?;
        let ctx = prost::encoding::DecodeContext::default();
        if number == VIRTUAL_HOSTS && wire_type == prost::encoding::WireType::LengthDelimited {
            let len = prost::encoding::decode_varint(&mut buf).map_err(bad)? as usize;
            if len > buf.len() {
                return Err(cannot(&"buffer underflow"));
            }
            let at = bytes.len() - buf.len();
            vhosts.push(at..at + len);
            buf = &buf[len..];
        } else {
            prost::encoding::skip_field(wire_type, number, &mut buf, ctx).map_err(bad)?;
            rest.extend_from_slice(&bytes[start..bytes.len() - buf.len()]);
        }
    }
    let head = RouteConfiguration::decode(rest.as_slice()).map_err(bad)?;
    outrigger_api::strict::check_encoded(ROUTE_TYPE, bytes)?;
    let ctx = Ctx::new(format!("route_config \"{}\"", head.name));
    let mut b = TableBuilder::new(&ctx, vhosts.len());
    for range in vhosts {
        let vh = PbVirtualHost::decode(&bytes[range]).map_err(bad)?;
        b.add(&vh)?;
    }
    let validate = head.validate_clusters.map(|v| v.value);
    Ok((head.name.clone(), b.finish(head.name, validate)))
}

const ROUTE_TYPE: &str = "envoy.config.route.v3.RouteConfiguration";

/// Compiles virtual hosts one by one into a route table.
struct TableBuilder<'c> {
    ctx: &'c Ctx,
    vhosts: Vec<VirtualHost>,
    domains: DomainMatcher,
    /// Wildcard domain → the virtual host that has it (for the duplicate check).
    seen: HashMap<String, usize>,
}

impl<'c> TableBuilder<'c> {
    fn new(ctx: &'c Ctx, capacity: usize) -> Self {
        TableBuilder {
            ctx,
            vhosts: Vec::with_capacity(capacity),
            domains: DomainMatcher::default(),
            seen: HashMap::new(),
        }
    }

    fn add(&mut self, vh: &PbVirtualHost) -> Result<(), ConfigError> {
        let i = self.vhosts.len();
        let vctx = self.ctx.index("virtual_hosts", i);
        for (j, d) in vh.domains.iter().enumerate() {
            let d = d.to_ascii_lowercase();
            let domains = &mut self.domains;
            // Exact domains are their own duplicate check; wildcards have `seen`.
            let previous = if d == "*" || d.starts_with('*') || d.ends_with('*') {
                self.seen.insert(d.clone(), i)
            } else {
                domains.exact.get(&d)
            };
            if let Some(other) = previous {
                let other = if other == i { vh.name.as_str() } else { &self.vhosts[other].name };
                return Err(vctx
                    .index("domains", j)
                    .err(format!("domain \"{d}\" is also in virtual host \"{other}\"")));
            }
            if d == "*" {
                domains.any = Some(i);
            } else if let Some(s) = d.strip_prefix('*') {
                domains.suffixes.push((s.to_string(), i));
            } else if let Some(p) = d.strip_suffix('*') {
                domains.prefixes.push((p.to_string(), i));
            } else if d.is_empty() {
                return Err(vctx.index("domains", j).err("empty domain"));
            } else {
                domains.exact.insert(&d, i);
            }
        }
        self.vhosts.push(virtual_host(&vctx, vh)?);
        Ok(())
    }

    fn finish(mut self, name: String, validate_clusters: Option<bool>) -> RouteTable {
        // Longest wildcard first; equal lengths keep config order.
        self.domains.exact.shrink_to_fit();
        self.domains.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        self.domains.prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        RouteTable { name, virtual_hosts: self.vhosts, domains: self.domains, validate_clusters }
    }
}

fn virtual_host(ctx: &Ctx, vh: &PbVirtualHost) -> Result<VirtualHost, ConfigError> {
    if vh.domains.is_empty() {
        return Err(ctx.field("domains").err("at least one domain is required"));
    }
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(&ctx.index("routes", i), r, vh))
        .collect::<Result<Vec<_>, _>>()?;
    let index = RouteIndex::for_routes(&routes);
    Ok(VirtualHost { name: vh.name.as_str().into(), routes: routes.into_boxed_slice(), index })
}

fn route(ctx: &Ctx, r: &PbRoute, vh: &PbVirtualHost) -> Result<Route, ConfigError> {
    let mctx = ctx.field("match");
    let m = r.r#match.as_ref().ok_or_else(|| mctx.err("a route needs a match"))?;
    let case_sensitive = m.case_sensitive.map(|b| b.value).unwrap_or(true);
    let lower = |s: &String| if case_sensitive { s.clone() } else { s.to_ascii_lowercase() };
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(lower(p)),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(lower(p)),
        Some(PathSpecifier::SafeRegex(re)) => PathMatch::Regex(regex(&mctx.field("safe_regex"), re, true)?),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            if p.contains(['?', '#']) || p.ends_with('/') {
                return Err(mctx.field("path_separated_prefix").err("must not contain ?, # or end with /"));
            }
            PathMatch::Separated(lower(p))
        }
        Some(PathSpecifier::ConnectMatcher(_)) => PathMatch::Connect,
        Some(_) => return Err(mctx.err("unsupported path specifier")),
        None => return Err(mctx.err("a path specifier (prefix, path, safe_regex, ...) is required")),
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_match(&mctx.index("headers", i), h))
        .collect::<Result<Vec<_>, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .enumerate()
        .map(|(i, q)| query_match(&mctx.index("query_parameters", i), q))
        .collect::<Result<Vec<_>, _>>()?;
    let action = match &r.action {
        Some(PbAction::Route(a)) => {
            let mut ra = route_action(&ctx.field("route"), a)?;
            // The virtual host's retry policy is the default of its routes.
            if a.retry_policy.is_none() {
                if let Some(rp) = &vh.retry_policy {
                    ra.retry = Some(Box::new(retry_policy(&ctx.field("virtual_host.retry_policy"), rp)?));
                }
            }
            ra.attempt_count_header = vh.include_request_attempt_count;
            #[allow(deprecated)]
            let limit = r.per_request_buffer_limit_bytes.or(vh.per_request_buffer_limit_bytes);
            if let Some(l) = limit {
                ra.buffer_limit = l.value as usize;
            }
            Action::Route(ra)
        }
        Some(PbAction::Redirect(a)) => Action::Redirect(redirect(&ctx.field("redirect"), a)?),
        Some(PbAction::DirectResponse(a)) => direct(&ctx.field("direct_response"), a)?,
        Some(_) => return Err(ctx.err("unsupported route action")),
        None => return Err(ctx.err("a route needs an action (route, redirect or direct_response)")),
    };
    if matches!(path, PathMatch::Connect) {
        if let Action::Route(RouteAction { prefix_rewrite: Some(_), .. }) = &action {
            return Err(ctx.field("route.prefix_rewrite").err("not allowed on a CONNECT route"));
        }
        if let Action::Route(RouteAction { regex_rewrite: Some(_), .. }) = &action {
            return Err(ctx.field("route.regex_rewrite").err("not allowed on a CONNECT route"));
        }
    }
    let mut per_filter: Vec<_> = r.typed_per_filter_config.iter().collect();
    per_filter.sort_by(|a, b| a.0.cmp(b.0));
    let per_filter = per_filter
        .into_iter()
        .map(|(name, any)| {
            let c = crate::http::filters::per_route(&ctx.field(&format!("typed_per_filter_config[{name}]")), any)?;
            Ok((name.as_str().into(), c))
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    let request_headers = header_ops(
        ctx,
        "request_headers_to_add",
        &r.request_headers_to_add,
        "request_headers_to_remove",
        &r.request_headers_to_remove,
    )?;
    let response_headers = header_ops(
        ctx,
        "response_headers_to_add",
        &r.response_headers_to_add,
        "response_headers_to_remove",
        &r.response_headers_to_remove,
    )?;
    Ok(Route {
        name: r.name.clone(),
        path,
        case_sensitive,
        headers,
        query,
        grpc: m.grpc.is_some(),
        action,
        per_filter: PerFilter(per_filter.into_boxed_slice()),
        request_headers,
        response_headers,
    })
}

fn regex(ctx: &Ctx, re: &RegexMatcher, anchored: bool) -> Result<Regex, ConfigError> {
    // Envoy's safe_regex must match the whole value.
    let pattern = if anchored { format!("^(?:{})$", re.regex) } else { re.regex.clone() };
    Regex::new(&pattern).map_err(|e| ctx.field("regex").err(format!("invalid regex: {e}")))
}

pub(crate) fn string_match(ctx: &Ctx, m: &StringMatcher) -> Result<StringMatch, ConfigError> {
    let ic = m.ignore_case;
    let s = |v: &String| if ic { v.to_ascii_lowercase() } else { v.clone() };
    Ok(match &m.match_pattern {
        Some(MatchPattern::Exact(v)) => StringMatch::Exact(s(v), ic),
        Some(MatchPattern::Prefix(v)) => StringMatch::Prefix(s(v), ic),
        Some(MatchPattern::Suffix(v)) => StringMatch::Suffix(s(v), ic),
        Some(MatchPattern::Contains(v)) => StringMatch::Contains(s(v), ic),
        Some(MatchPattern::SafeRegex(re)) => StringMatch::Regex(regex(&ctx.field("safe_regex"), re, true)?),
        Some(_) => return Err(ctx.err("unsupported string matcher")),
        None => return Err(ctx.err("a match pattern is required")),
    })
}

#[allow(deprecated)]
pub(super) fn header_match(ctx: &Ctx, h: &HeaderMatcher) -> Result<HeaderMatch, ConfigError> {
    let name = match h.name.to_ascii_lowercase().as_str() {
        ":method" => HeaderKey::Method,
        ":authority" | "host" => HeaderKey::Authority,
        ":path" => HeaderKey::Path,
        ":scheme" => HeaderKey::Scheme,
        _ => HeaderKey::Header(
            http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| ctx.field("name").err(format!("invalid header name \"{}\"", h.name)))?,
        ),
    };
    let (matcher, present) = match &h.header_match_specifier {
        None => (None, true),
        Some(HeaderMatchSpecifier::PresentMatch(p)) => (None, *p),
        Some(HeaderMatchSpecifier::ExactMatch(v)) => (Some(StringMatch::Exact(v.clone(), false)), true),
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => (Some(StringMatch::Prefix(v.clone(), false)), true),
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => (Some(StringMatch::Suffix(v.clone(), false)), true),
        Some(HeaderMatchSpecifier::ContainsMatch(v)) => (Some(StringMatch::Contains(v.clone(), false)), true),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => {
            (Some(StringMatch::Regex(regex(&ctx.field("safe_regex_match"), re, true)?)), true)
        }
        Some(HeaderMatchSpecifier::StringMatch(m)) => (Some(string_match(&ctx.field("string_match"), m)?), true),
        Some(_) => return Err(ctx.err("unsupported header match")),
    };
    Ok(HeaderMatch { name, matcher, present, invert: h.invert_match })
}

fn query_match(ctx: &Ctx, q: &QueryParameterMatcher) -> Result<QueryMatch, ConfigError> {
    let matcher = match &q.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(m)) => Some(string_match(&ctx.field("string_match"), m)?),
        Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => None,
        Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
            return Err(ctx.field("present_match").err("present_match: false is not meaningful"))
        }
    };
    Ok(QueryMatch { name: q.name.clone(), matcher })
}

fn route_action(ctx: &Ctx, a: &PbRouteAction) -> Result<RouteAction, ConfigError> {
    let target = match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => WeightedTarget::Single(c.clone()),
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let wctx = ctx.field("weighted_clusters");
            let mut clusters = Vec::new();
            let mut total = 0u32;
            for (i, c) in w.clusters.iter().enumerate() {
                let weight = c.weight.map(|w| w.value).unwrap_or(0);
                if c.name.is_empty() {
                    return Err(wctx.index("clusters", i).field("name").err("cluster name is required"));
                }
                total = total.checked_add(weight).ok_or_else(|| wctx.err("weights overflow"))?;
                if weight > 0 {
                    clusters.push((c.name.clone(), total));
                }
            }
            if total == 0 {
                return Err(wctx.err("the sum of weights must be greater than 0"));
            }
            // Deprecated in Envoy but still checked there: a total that the weights do not add up
            // to is a mistake in the config, not a different split.
            #[allow(deprecated)]
            if let Some(tw) = w.total_weight.as_ref().filter(|t| t.value > 0) {
                if tw.value != total {
                    return Err(wctx
                        .field("total_weight")
                        .err(format!("the weights add up to {total}, not to total_weight {}", tw.value)));
                }
            }
            WeightedTarget::Weighted { clusters, total }
        }
        Some(ClusterSpecifier::Cluster(_)) => return Err(ctx.field("cluster").err("empty cluster name")),
        Some(_) => return Err(ctx.err("unsupported cluster specifier")),
        None => return Err(ctx.err("cluster or weighted_clusters is required")),
    };
    let timeout = match &a.timeout {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(_) => duration(&a.timeout).filter(|d| !d.is_zero()),
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => Some(
            http::HeaderValue::from_str(h)
                .map_err(|_| ctx.field("host_rewrite_literal").err("invalid header value"))?,
        ),
        Some(_) => return Err(ctx.err("only host_rewrite_literal is supported")),
    };
    let cluster_not_found = match a.cluster_not_found_response_code {
        0 => StatusCode::SERVICE_UNAVAILABLE,
        1 => StatusCode::NOT_FOUND,
        2 => StatusCode::INTERNAL_SERVER_ERROR,
        _ => return Err(ctx.field("cluster_not_found_response_code").err("unknown code")),
    };
    let mut terminate_connect = false;
    for (i, u) in a.upgrade_configs.iter().enumerate() {
        let uctx = ctx.index("upgrade_configs", i);
        if u.enabled.as_ref().is_some_and(|e| !e.value) {
            continue;
        }
        if u.upgrade_type.eq_ignore_ascii_case("connect") {
            terminate_connect = u.connect_config.is_some();
        } else if u.connect_config.is_some() {
            return Err(uctx.field("connect_config").err("only valid for upgrade_type CONNECT"));
        } else {
            return Err(uctx
                .field("upgrade_type")
                .err("per-route upgrade overrides other than CONNECT are not supported"));
        }
    }
    let prefix_rewrite = (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone());
    let regex_rewrite = match &a.regex_rewrite {
        None => None,
        Some(rr) => {
            let rctx = ctx.field("regex_rewrite");
            if prefix_rewrite.is_some() {
                return Err(rctx.err("only one of prefix_rewrite and regex_rewrite may be set"));
            }
            let pattern = rr.pattern.as_ref().ok_or_else(|| rctx.field("pattern").err("pattern is required"))?;
            let re = regex(&rctx.field("pattern"), pattern, false)?;
            Some(RegexRewrite { pattern: re, substitution: re2_substitution(&rr.substitution) })
        }
    };
    let retry =
        a.retry_policy.as_ref().map(|rp| retry_policy(&ctx.field("retry_policy"), rp)).transpose()?.map(Box::new);
    let mirrors = a
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(i, m)| mirror(&ctx.index("request_mirror_policies", i), m))
        .collect::<Result<Vec<_>, _>>()?
        .into_boxed_slice();
    Ok(RouteAction {
        target,
        timeout,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        cluster_not_found,
        terminate_connect,
        retry,
        mirrors,
        buffer_limit: DEFAULT_BUFFER_LIMIT,
        attempt_count_header: false,
        idle_timeout: a.idle_timeout.as_ref().map(|_| duration(&a.idle_timeout).filter(|d| !d.is_zero())),
        max_stream_duration: a
            .max_stream_duration
            .as_ref()
            .and_then(|m| duration(&m.max_stream_duration))
            .filter(|d| !d.is_zero()),
        grpc_timeout_max: a.max_stream_duration.as_ref().and_then(|m| {
            m.grpc_timeout_header_max.as_ref().map(|_| duration(&m.grpc_timeout_header_max).filter(|d| !d.is_zero()))
        }),
        grpc_timeout_offset: a
            .max_stream_duration
            .as_ref()
            .and_then(|m| duration(&m.grpc_timeout_header_offset))
            .unwrap_or_default(),
        hash_policy: a
            .hash_policy
            .iter()
            .enumerate()
            .map(|(i, h)| hash_policy(&ctx.index("hash_policy", i), h))
            .collect::<Result<Vec<_>, _>>()?
            .into_boxed_slice(),
    })
}

/// RE2's substitution syntax (`\1` for a group, `\\` for a backslash) in the `regex` crate's
/// (`${1}`, `$$` for a dollar).
fn re2_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str(&format!("${{{d}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn redirect(ctx: &Ctx, r: &RedirectAction) -> Result<Redirect, ConfigError> {
    let scheme = match &r.scheme_rewrite_specifier {
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::HttpsRedirect(false)) | None => None,
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let (path, prefix_rewrite) = match &r.path_rewrite_specifier {
        None => (None, None),
        Some(PathRewriteSpecifier::PathRedirect(p)) => (Some(p.clone()), None),
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => (None, Some(p.clone())),
        Some(_) => return Err(ctx.err("regex_rewrite in redirects is not supported")),
    };
    let status = match RedirectResponseCode::try_from(r.response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
        Ok(RedirectResponseCode::Found) => StatusCode::FOUND,
        Ok(RedirectResponseCode::SeeOther) => StatusCode::SEE_OTHER,
        Ok(RedirectResponseCode::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
        Ok(RedirectResponseCode::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
        Err(_) => return Err(ctx.field("response_code").err("unknown redirect code")),
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(u16::try_from(p).map_err(|_| ctx.field("port_redirect").err("port out of range"))?),
    };
    Ok(Redirect {
        scheme,
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port,
        path,
        prefix_rewrite,
        status,
        strip_query: r.strip_query,
    })
}

fn direct(ctx: &Ctx, d: &DirectResponseAction) -> Result<Action, ConfigError> {
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| ctx.field("status").err(format!("{} is not a valid status (200..599)", d.status)))?;
    let body = match &d.body {
        None => bytes::Bytes::new(),
        Some(ds) => super::listener::data_source(&ctx.field("body"), ds)?,
    };
    Ok(Action::Direct { status, body })
}
