//! Compiled route tables. Matching semantics are Envoy's (first matching route wins); the indexes
//! below only skip routes that cannot match, so the order is preserved.
use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use regex::Regex;

#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub domains: DomainMatcher,
}

/// Envoy's virtual-host search order: exact, then `*.suffix` (longest first), then `prefix.*`
/// (longest first), then `*`.
#[derive(Debug, Default)]
pub struct DomainMatcher {
    pub exact: HashMap<String, usize>,
    /// (suffix including the dot, vhost), longest suffix first.
    pub suffixes: Vec<(String, usize)>,
    /// (prefix including the dot, vhost), longest prefix first.
    pub prefixes: Vec<(String, usize)>,
    pub any: Option<usize>,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    pub index: RouteIndex,
}

/// Candidate routes for a path, by index, so that thousands of prefix/exact routes cost a few hash
/// lookups rather than a scan. Routes the index cannot describe (regex, case-insensitive, CONNECT)
/// are always candidates.
#[derive(Debug, Default)]
pub struct RouteIndex {
    pub exact: HashMap<Box<str>, Vec<u32>>,
    pub prefix: HashMap<Box<str>, Vec<u32>>,
    /// Distinct prefix lengths present in `prefix`, ascending.
    pub prefix_lens: Vec<usize>,
    pub always: Vec<u32>,
}

impl RouteIndex {
    pub fn build(routes: &[Route]) -> RouteIndex {
        let mut idx = RouteIndex::default();
        for (i, r) in routes.iter().enumerate() {
            let i = i as u32;
            match (&r.path, r.case_sensitive) {
                (PathMatch::Exact(p), true) => idx.exact.entry(p.as_str().into()).or_default().push(i),
                (PathMatch::Prefix(p), true) => idx.prefix.entry(p.as_str().into()).or_default().push(i),
                _ => idx.always.push(i),
            }
        }
        let mut lens: Vec<usize> = idx.prefix.keys().map(|k| k.len()).collect();
        lens.sort_unstable();
        lens.dedup();
        idx.prefix_lens = lens;
        idx
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub grpc: bool,
    pub action: Action,
}

#[derive(Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    /// `path_separated_prefix`: the prefix, then end of path, `?` or `/`.
    Separated(String),
    /// `connect_matcher`: CONNECT requests only.
    Connect,
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: HeaderKey,
    /// None: present match.
    pub matcher: Option<StringMatch>,
    pub present: bool,
    pub invert: bool,
}

/// A header name, or one of the pseudo-headers Envoy lets routes match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderKey {
    Header(http::HeaderName),
    Method,
    Authority,
    Path,
    Scheme,
}

#[derive(Debug)]
pub struct QueryMatch {
    pub name: String,
    /// None: present match.
    pub matcher: Option<StringMatch>,
}

#[derive(Debug)]
pub enum StringMatch {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
}

impl StringMatch {
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StringMatch::Exact(s, false) => v == s,
            StringMatch::Exact(s, true) => v.eq_ignore_ascii_case(s),
            StringMatch::Prefix(s, false) => v.starts_with(s.as_str()),
            StringMatch::Prefix(s, true) => {
                v.len() >= s.len() && v.is_char_boundary(s.len()) && v[..s.len()].eq_ignore_ascii_case(s)
            }
            StringMatch::Suffix(s, false) => v.ends_with(s.as_str()),
            StringMatch::Suffix(s, true) => {
                v.len() >= s.len()
                    && v.is_char_boundary(v.len() - s.len())
                    && v[v.len() - s.len()..].eq_ignore_ascii_case(s)
            }
            StringMatch::Contains(s, false) => v.contains(s.as_str()),
            StringMatch::Contains(s, true) => v.to_ascii_lowercase().contains(s.as_str()),
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Debug)]
pub enum Action {
    Route(RouteAction),
    Redirect(Redirect),
    Direct { status: StatusCode, body: bytes::Bytes },
}

#[derive(Debug)]
pub struct RouteAction {
    pub target: WeightedTarget,
    /// Upstream response-headers timeout; None disables (Envoy's `timeout: 0s`).
    pub timeout: Option<Duration>,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite: Option<http::HeaderValue>,
    pub cluster_not_found: StatusCode,
    /// Route-level CONNECT termination (`upgrade_configs[].connect_config`): the proxy answers 200 and
    /// opens a TCP connection to the cluster itself.
    pub terminate_connect: bool,
}

#[derive(Debug)]
pub enum WeightedTarget {
    Single(String),
    /// (cluster, cumulative weight); pick uniformly in 0..total.
    Weighted {
        clusters: Vec<(String, u32)>,
        total: u32,
    },
}

impl WeightedTarget {
    pub fn pick(&self) -> &str {
        match self {
            WeightedTarget::Single(c) => c,
            WeightedTarget::Weighted { clusters, total } => {
                let r = fastrand::u32(0..*total);
                clusters.iter().find(|(_, cum)| r < *cum).map(|(c, _)| c.as_str()).unwrap_or(&clusters[0].0)
            }
        }
    }
}

#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub status: StatusCode,
    pub strip_query: bool,
}
