//! One RouteConfiguration per HTTP port, named by the port (as istiod names them), with a
//! virtual host per service host and the VirtualService rules for it.
use std::collections::{BTreeMap, HashSet};

use envoy_types::pb::envoy::config::route::v3::{header_matcher, query_parameter_matcher};
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action, route, route_action, route_match, weighted_cluster, DirectResponseAction, HeaderMatcher,
    QueryParameterMatcher, RedirectAction, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
    WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::{
    bool_value, cluster_name, pb_duration, route_policy, to_any, traffic_policy, u32_value, GenerateError, Index, ROUTE,
};
use crate::istio::model::{HttpMatch, HttpRoute, OutboundMode, StringMatch};

fn regex(r: &str) -> RegexMatcher {
    RegexMatcher { regex: r.to_string(), ..Default::default() }
}

fn string_match(m: &StringMatch) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(s) => string_matcher::MatchPattern::Exact(s.clone()),
        StringMatch::Prefix(s) => string_matcher::MatchPattern::Prefix(s.clone()),
        StringMatch::Regex(s) => string_matcher::MatchPattern::SafeRegex(regex(s)),
    };
    StringMatcher { match_pattern: Some(pattern), ..Default::default() }
}

fn header(name: &str, m: &StringMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(string_match(m))),
        ..Default::default()
    }
}

/// Everything: `{"prefix": "/"}`.
fn match_all() -> RouteMatch {
    RouteMatch { path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())), ..Default::default() }
}

fn route_match(m: &HttpMatch) -> RouteMatch {
    let path = match &m.uri {
        None => route_match::PathSpecifier::Prefix("/".into()),
        Some(StringMatch::Exact(p)) => route_match::PathSpecifier::Path(p.clone()),
        Some(StringMatch::Prefix(p)) => route_match::PathSpecifier::Prefix(p.clone()),
        Some(StringMatch::Regex(r)) => route_match::PathSpecifier::SafeRegex(regex(r)),
    };
    let mut out = RouteMatch { path_specifier: Some(path), ..Default::default() };
    if m.ignore_uri_case {
        out.case_sensitive = bool_value(false);
    }
    out.headers = m.headers.iter().map(|(name, v)| header(name, v)).collect();
    if let Some(method) = &m.method {
        out.headers.push(header(":method", method));
    }
    if let Some(a) = &m.authority {
        out.headers.push(header(":authority", a));
    }
    out.query_parameters = m
        .query_params
        .iter()
        .map(|(name, v)| QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                string_match(v),
            )),
        })
        .collect();
    out
}

fn redirect_code(code: Option<u16>) -> Result<redirect_action::RedirectResponseCode, String> {
    use redirect_action::RedirectResponseCode as C;
    Ok(match code.unwrap_or(301) {
        301 => C::MovedPermanently,
        302 => C::Found,
        303 => C::SeeOther,
        307 => C::TemporaryRedirect,
        308 => C::PermanentRedirect,
        other => return Err(format!("redirectCode {other} is not a redirect code")),
    })
}

/// The Envoy route of one VirtualService rule, without its name and match (set per match):
/// the action, then the rule's header operations and fault, as istiod's `TranslateRoute`.
fn rule_route(idx: &Index<'_>, rule: &HttpRoute, vs_ns: &str, port: u16, res: &str) -> Result<Route, GenerateError> {
    let headers = rule.headers.as_ref().map(route_policy::header_operations).unwrap_or_default();
    let mut out = Route {
        action: Some(action(idx, rule, vs_ns, port, res, headers.authority.as_deref())?),
        ..Default::default()
    };
    out.request_headers_to_add = headers.request_add;
    out.request_headers_to_remove = headers.request_remove;
    out.response_headers_to_add = headers.response_add;
    out.response_headers_to_remove = headers.response_remove;
    if let Some(f) = &rule.fault {
        out.typed_per_filter_config.insert(route_policy::FAULT_FILTER.into(), route_policy::fault(f));
    }
    Ok(out)
}

/// `authority`: the host the rule's `headers` set, which `rewrite.authority` overrides.
fn action(
    idx: &Index<'_>,
    rule: &HttpRoute,
    vs_ns: &str,
    port: u16,
    res: &str,
    authority: Option<&str>,
) -> Result<route::Action, GenerateError> {
    let err = |message: String| GenerateError { resource: res.to_string(), message };
    if let Some(r) = &rule.redirect {
        let mut v =
            RedirectAction { response_code: redirect_code(r.redirect_code).map_err(err)? as i32, ..Default::default() };
        if let Some(u) = &r.uri {
            v.path_rewrite_specifier = Some(redirect_action::PathRewriteSpecifier::PathRedirect(u.clone()));
        }
        if let Some(a) = &r.authority {
            v.host_redirect = a.clone();
        }
        return Ok(route::Action::Redirect(v));
    }
    let dest_cluster = |d: &crate::istio::model::Destination| idx.destination_cluster(d, vs_ns, port);
    let specifier = if rule.route.len() == 1 {
        route_action::ClusterSpecifier::Cluster(dest_cluster(&rule.route[0].destination))
    } else {
        if rule.route.iter().all(|d| d.weight.unwrap_or(0) == 0) {
            return Err(err("route weights must not all be 0".into()));
        }
        let clusters = rule
            .route
            .iter()
            .map(|d| weighted_cluster::ClusterWeight {
                name: dest_cluster(&d.destination),
                weight: u32_value(d.weight.unwrap_or(0)),
                ..Default::default()
            })
            .collect();
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster { clusters, ..Default::default() })
    };
    // Istio's default: no timeout.
    let timeout = match &rule.timeout {
        Some(t) => super::duration(t).ok_or_else(|| err(format!("timeout \"{t}\" is not a duration")))?,
        None => std::time::Duration::ZERO,
    };
    let mut v =
        RouteAction { cluster_specifier: Some(specifier), timeout: Some(pb_duration(timeout)), ..Default::default() };
    // istiod's `applyHTTPRouteDestination`: a hash policy per destination whose DestinationRule
    // hashes consistently (weighted ones of weight 0 are left out); a single such destination
    // keeps retries on the same host.
    let hash = |d: &crate::istio::model::Destination| {
        let dr = idx.destination_rule(&super::fqdn(&d.host, vs_ns));
        traffic_policy::hash_for_destination(dr, d)
    };
    let hashed: Vec<_> = if let [only] = rule.route.as_slice() {
        vec![hash(&only.destination)]
    } else {
        rule.route.iter().filter(|d| d.weight.unwrap_or(0) != 0).map(|d| hash(&d.destination)).collect()
    };
    v.hash_policy = hashed.iter().flatten().filter_map(|ch| route_policy::hash_policy(ch)).collect();
    let consistent_hash = rule.route.len() == 1 && hashed[0].is_some();
    v.retry_policy = route_policy::retry_policy(rule.retries.as_ref(), consistent_hash);
    v.request_mirror_policies = route_policy::mirror_policies(rule, dest_cluster);
    if let Some(a) = authority {
        v.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(a.to_string()));
    }
    if let Some(rw) = &rule.rewrite {
        // As istiod: `uri` is Envoy's prefix_rewrite whatever the match (for a regex match Envoy
        // swaps the whole path), `uriRegexRewrite` its regex_rewrite.
        if let Some(u) = &rw.uri {
            v.prefix_rewrite = u.clone();
        }
        if let Some(r) = &rw.uri_regex_rewrite {
            v.regex_rewrite =
                Some(RegexMatchAndSubstitute { pattern: Some(regex(&r.pattern)), substitution: r.rewrite.clone() });
        }
        if let Some(a) = &rw.authority {
            v.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(a.clone()));
        }
    }
    Ok(route::Action::Route(v))
}

/// Domains a client may use for `host:port`: the host, with the port, and for Kubernetes service
/// names in the proxy's namespace the short forms; none that an earlier host of the same port's
/// configuration already has (`used`, to which the caller adds these).
fn domains(host: &str, port: u16, proxy_ns: &str, used: &HashSet<String>) -> Vec<String> {
    let mut d = vec![host.to_string(), format!("{host}:{port}")];
    if let Some(rest) = host.strip_suffix(".svc.cluster.local") {
        if let Some((name, ns)) = rest.split_once('.') {
            d.push(format!("{name}.{ns}"));
            d.push(format!("{name}.{ns}:{port}"));
            if ns == proxy_ns {
                d.push(name.to_string());
                d.push(format!("{name}:{port}"));
            }
        }
    }
    let mut out: Vec<String> = Vec::with_capacity(d.len());
    for x in d {
        if !used.contains(&x) && !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// istiod's last virtual host of an outbound route configuration, for a Host no service has:
/// `allow_any` to where the connection was going (ALLOW_ANY), or `block_all` answering 502
/// (REGISTRY_ONLY).
fn catch_all(mode: OutboundMode) -> VirtualHost {
    let (name, action) = match mode {
        OutboundMode::AllowAny => (
            "allow_any",
            route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("PassthroughCluster".into())),
                timeout: Some(pb_duration(std::time::Duration::ZERO)),
                ..Default::default()
            }),
        ),
        OutboundMode::RegistryOnly => {
            ("block_all", route::Action::DirectResponse(DirectResponseAction { status: 502, ..Default::default() }))
        }
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: name.into(),
            r#match: Some(match_all()),
            action: Some(action),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn routes(idx: &Index<'_>, mode: OutboundMode) -> Result<BTreeMap<String, Any>, GenerateError> {
    let (reg, proxy) = (idx.reg, idx.proxy);
    // The per-port configurations' virtual hosts, each encoded as it is made: 10,000 services
    // are 10,000 virtual hosts, and none of them needs to be kept as a struct.
    let mut by_port: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    let mut out: BTreeMap<String, Any> = BTreeMap::new();
    // The domains each port's configuration has so far: at most six per host, sized once.
    let mut hosts: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, se) in &reg.service_entries {
        for port in se.ports.iter().filter(|p| p.is_http()) {
            *hosts.entry(port.number).or_default() += se.hosts.len();
        }
    }
    let mut used: BTreeMap<u16, HashSet<String>> =
        hosts.into_iter().map(|(port, n)| (port, HashSet::with_capacity(6 * n))).collect();
    for (meta, se) in &reg.service_entries {
        for host in se.hosts.iter().filter(|h| idx.visible(meta, h)) {
            for port in se.ports.iter().filter(|p| p.is_http()) {
                let mut rts = Vec::new();
                for (vm, vs) in idx.virtual_services(host).iter().copied() {
                    let res = format!("VirtualService {}/{}", vm.namespace, vm.name);
                    for (i, rule) in vs.http.iter().enumerate() {
                        let matches: Vec<&HttpMatch> =
                            rule.matches.iter().filter(|m| m.port.is_none_or(|p| p == port.number)).collect();
                        if !rule.matches.is_empty() && matches.is_empty() {
                            continue;
                        }
                        let template = rule_route(idx, rule, &vm.namespace, port.number, &res)?;
                        let name = rule.name.clone().unwrap_or_else(|| format!("{}.{}.{i}", vm.namespace, vm.name));
                        let ms: Vec<RouteMatch> = if matches.is_empty() {
                            vec![match_all()]
                        } else {
                            matches.iter().map(|m| route_match(m)).collect()
                        };
                        for m in ms {
                            rts.push(Route { name: name.clone(), r#match: Some(m), ..template.clone() });
                        }
                    }
                }
                // Without a VirtualService (or after its rules), everything goes to the service:
                // istiod's `BuildDefaultHTTPOutboundRoute`, with the default retry policy and
                // the DestinationRule's hash for the port (`hashForService`).
                let hash = traffic_policy::hash_for_service(idx.destination_rule(host), port.number);
                rts.push(Route {
                    name: "default".into(),
                    r#match: Some(match_all()),
                    action: Some(route::Action::Route(RouteAction {
                        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster_name(
                            port.number,
                            "",
                            host,
                        ))),
                        timeout: Some(pb_duration(std::time::Duration::ZERO)),
                        retry_policy: route_policy::retry_policy(None, false),
                        hash_policy: hash.and_then(route_policy::hash_policy).into_iter().collect(),
                        ..Default::default()
                    })),
                    ..Default::default()
                });
                // Proxyless gRPC clients (`xds:///host:port`) get a route configuration of their
                // own per service, named like their API listener.
                let api_name = format!("{host}:{}", port.number);
                if proxy.proxyless {
                    let rc = RouteConfiguration {
                        name: api_name.clone(),
                        validate_clusters: bool_value(false),
                        virtual_hosts: vec![VirtualHost {
                            name: api_name.clone(),
                            domains: vec![api_name.clone(), host.clone()],
                            routes: rts.clone(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    };
                    out.insert(api_name.clone(), to_any(ROUTE, &rc));
                }
                let used = used.get_mut(&port.number).expect("every HTTP port has a set");
                let d = domains(host, port.number, &proxy.namespace, used);
                if d.is_empty() {
                    continue;
                }
                let vh = VirtualHost { name: api_name, domains: d, routes: rts, ..Default::default() };
                // A message holding only this virtual host encodes as its `virtual_hosts` entry.
                let mut rc = RouteConfiguration { virtual_hosts: vec![vh], ..Default::default() };
                rc.encode(by_port.entry(port.number).or_default()).expect("a Vec grows");
                used.extend(rc.virtual_hosts.pop().into_iter().flat_map(|vh| vh.domains));
            }
        }
    }
    for (port, mut virtual_hosts) in by_port {
        if !used.get(&port).is_some_and(|u| u.contains("*")) {
            let rc = RouteConfiguration { virtual_hosts: vec![catch_all(mode)], ..Default::default() };
            rc.encode(&mut virtual_hosts).expect("a Vec grows");
        }
        let name = port.to_string();
        // Named by a number, so never one of the API ones (`host:port`).
        out.entry(name.clone())
            .or_insert_with(|| Any { type_url: ROUTE.to_string(), value: port_config(name, &virtual_hosts) });
    }
    Ok(out)
}

/// `{"name": name, "virtual_hosts": [...], "validate_clusters": false}` from its encoded virtual
/// hosts: the fields in the order prost writes them (encoded messages concatenate; repeated
/// fields append).
fn port_config(name: String, virtual_hosts: &[u8]) -> Vec<u8> {
    let head = RouteConfiguration { name, ..Default::default() };
    let tail = RouteConfiguration { validate_clusters: bool_value(false), ..Default::default() };
    let mut buf = Vec::with_capacity(head.encoded_len() + virtual_hosts.len() + tail.encoded_len());
    head.encode(&mut buf).expect("a Vec grows");
    buf.extend_from_slice(virtual_hosts);
    tail.encode(&mut buf).expect("a Vec grows");
    buf
}
