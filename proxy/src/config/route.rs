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
    /// `validate_clusters` as configured (None: unset, whose default depends on where the table
    /// comes from: true inline, false over RDS).
    pub validate_clusters: Option<bool>,
}

impl RouteTable {
    /// Every cluster a route of this table can send to.
    pub fn clusters(&self) -> impl Iterator<Item = &str> {
        self.virtual_hosts.iter().flat_map(|v| v.routes.iter()).flat_map(|r| {
            let names: Vec<&str> = match &r.action {
                Action::Route(a) => match &a.target {
                    WeightedTarget::Single(c) => vec![c.as_str()],
                    WeightedTarget::Weighted { clusters, .. } => clusters.iter().map(|c| c.0.as_str()).collect(),
                },
                _ => vec![],
            };
            names
        })
    }
}

/// Envoy's virtual-host search order: exact, then `*.suffix` (longest first), then `prefix.*`
/// (longest first), then `*`.
#[derive(Debug, Default)]
pub struct DomainMatcher {
    pub exact: ExactDomains,
    /// (suffix including the dot, vhost), longest suffix first.
    pub suffixes: Vec<(String, usize)>,
    /// (prefix including the dot, vhost), longest prefix first.
    pub prefixes: Vec<(String, usize)>,
    pub any: Option<usize>,
}

/// Exact domains → virtual host. A mesh has tens of thousands of domains, so they are kept
/// compactly: the names one after the other in one string, and a `hashbrown` table of indexes
/// into them (keyed with the same randomly seeded SipHash as `HashMap`).
#[derive(Debug, Default)]
pub struct ExactDomains {
    text: String,
    /// Per domain: (end of its name in `text`, virtual host); a name starts where the previous
    /// one ends.
    entries: Vec<(u32, u32)>,
    table: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

fn entry_name<'a>(text: &'a str, entries: &[(u32, u32)], entry: u32) -> &'a str {
    let entry = entry as usize;
    let start = if entry == 0 { 0 } else { entries[entry - 1].0 as usize };
    &text[start..entries[entry].0 as usize]
}

impl ExactDomains {
    /// The virtual host of domain `host`.
    pub fn get(&self, host: &str) -> Option<usize> {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(host);
        let e = self.table.find(hash, |&e| entry_name(&self.text, &self.entries, e) == host)?;
        Some(self.entries[*e as usize].1 as usize)
    }

    /// Adds `domain` → `vhost`, unless the domain is there already: then returns its virtual host.
    pub fn insert(&mut self, domain: &str, vhost: usize) -> Option<usize> {
        use std::hash::BuildHasher;
        if let Some(v) = self.get(domain) {
            return Some(v);
        }
        self.text.push_str(domain);
        self.entries.push((self.text.len() as u32, vhost as u32));
        let Self { text, entries, table, hasher } = self;
        let e = entries.len() as u32 - 1;
        table.insert_unique(hasher.hash_one(domain), e, |&x| hasher.hash_one(entry_name(text, entries, x)));
        None
    }

    /// Gives back the spare capacity of building.
    pub fn shrink_to_fit(&mut self) {
        use std::hash::BuildHasher;
        self.text.shrink_to_fit();
        self.entries.shrink_to_fit();
        let Self { text, entries, table, hasher } = self;
        table.shrink_to_fit(|&x| hasher.hash_one(entry_name(text, entries, x)));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (domain, virtual host), in the order added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        (0..self.entries.len() as u32)
            .map(|e| (entry_name(&self.text, &self.entries, e), self.entries[e as usize].1 as usize))
    }
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: Box<str>,
    pub routes: Box<[Route]>,
    /// Only for virtual hosts with more than [`RouteIndex::MIN_ROUTES`] routes; fewer are
    /// scanned in order.
    pub index: Option<Box<RouteIndex>>,
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
    /// Below this many routes a scan is as fast as the index and needs no memory.
    pub const MIN_ROUTES: usize = 16;

    /// The index for `routes`, when they are that many.
    pub fn for_routes(routes: &[Route]) -> Option<Box<RouteIndex>> {
        (routes.len() > Self::MIN_ROUTES).then(|| Box::new(Self::build(routes)))
    }

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
    /// `typed_per_filter_config`, compiled: (filter name, that filter's config).
    pub per_filter: PerFilter,
    /// `request_headers_to_add` / `request_headers_to_remove`.
    pub request_headers: HeaderOps,
    /// `response_headers_to_add` / `response_headers_to_remove`.
    pub response_headers: HeaderOps,
}

/// Per-route filter configs, each downcast by the filter it belongs to.
#[derive(Default)]
pub struct PerFilter(pub Box<[(Box<str>, PerFilterConfig)]>);

/// One filter's per-route config, as that filter compiled it.
pub type PerFilterConfig = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl PerFilter {
    pub fn get(&self, filter: &str) -> Option<&(dyn std::any::Any + Send + Sync)> {
        self.0.iter().find(|(n, _)| **n == *filter).map(|(_, c)| &**c)
    }
}

impl std::fmt::Debug for PerFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(n, _)| n)).finish()
    }
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
    /// `regex_rewrite`: every match of the pattern in the path (not the query) is substituted.
    pub regex_rewrite: Option<RegexRewrite>,
    pub host_rewrite: Option<http::HeaderValue>,
    pub cluster_not_found: StatusCode,
    /// Route-level CONNECT termination (`upgrade_configs[].connect_config`): the proxy answers 200 and
    /// opens a TCP connection to the cluster itself.
    pub terminate_connect: bool,
    pub retry: Option<Box<RetryPolicy>>,
    /// `request_mirror_policies`.
    pub mirrors: Box<[Mirror]>,
    /// How much of a request body is kept to send it again (a retry, a shadow):
    /// `per_request_buffer_limit_bytes`, Envoy's 1 MiB connection buffer when unset.
    pub buffer_limit: usize,
    /// The virtual host's `include_request_attempt_count`: send `x-envoy-attempt-count` upstream.
    pub attempt_count_header: bool,
    /// `hash_policy`: the key of consistent-hash balancing.
    pub hash_policy: Box<[HashPolicy]>,
    /// `idle_timeout`: overrides the connection manager's `stream_idle_timeout` (Some(None):
    /// `0s`, disabled).
    pub idle_timeout: Option<Option<Duration>>,
    /// `max_stream_duration.max_stream_duration`: the whole exchange, body included.
    pub max_stream_duration: Option<Duration>,
    /// `max_stream_duration.grpc_timeout_header_max`: a request's `grpc-timeout` sets the
    /// maximum stream duration, capped at this (Some(None): `0s`, uncapped).
    pub grpc_timeout_max: Option<Option<Duration>>,
    /// `max_stream_duration.grpc_timeout_header_offset`: taken off the `grpc-timeout`.
    pub grpc_timeout_offset: Duration,
}

/// One `hash_policy` entry.
#[derive(Debug)]
pub struct HashPolicy {
    pub key: HashKey,
    /// Stop at this one when it gave a hash.
    pub terminal: bool,
}

#[derive(Debug)]
pub enum HashKey {
    Header(http::HeaderName),
    /// With `ttl`, a cookie the request does not carry is made up and set on the response.
    Cookie {
        name: String,
        ttl: Option<Duration>,
        path: Option<String>,
    },
    SourceIp,
    Query(String),
}

/// `request_headers_to_add` / `response_headers_to_add` and the removals, compiled.
#[derive(Debug, Default)]
pub struct HeaderOps {
    pub add: Vec<(http::HeaderName, http::HeaderValue, AppendAction)>,
    pub remove: Vec<http::HeaderName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendAction {
    AppendIfExistsOrAdd,
    AddIfAbsent,
    OverwriteIfExistsOrAdd,
    OverwriteIfExists,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Envoy's order: removals, then additions.
    pub fn apply(&self, h: &mut http::HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v, a) in &self.add {
            match a {
                AppendAction::AppendIfExistsOrAdd => {
                    h.append(n.clone(), v.clone());
                }
                AppendAction::AddIfAbsent => {
                    if !h.contains_key(n) {
                        h.insert(n.clone(), v.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd => {
                    h.insert(n.clone(), v.clone());
                }
                AppendAction::OverwriteIfExists => {
                    if h.contains_key(n) {
                        h.insert(n.clone(), v.clone());
                    }
                }
            }
        }
    }
}

/// `retry_policy`, compiled.
#[derive(Debug)]
pub struct RetryPolicy {
    pub on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    /// `retriable_headers`: a response with any of these is retried (`retriable-headers`).
    pub retriable_headers: Vec<HeaderMatch>,
    pub back_off_base: Duration,
    pub back_off_max: Duration,
    /// `retry_host_predicate` previous_hosts: a retry avoids the endpoints already tried.
    pub previous_hosts: bool,
    pub host_selection_max_attempts: u32,
}

/// The `retry_on` conditions, as bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(pub u32);

impl RetryOn {
    pub const X5XX: u32 = 1;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const RESET: u32 = 1 << 2;
    pub const CONNECT_FAILURE: u32 = 1 << 3;
    pub const REFUSED_STREAM: u32 = 1 << 4;
    pub const RETRIABLE_4XX: u32 = 1 << 5;
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    pub const RETRIABLE_HEADERS: u32 = 1 << 7;
    pub const GRPC_CANCELLED: u32 = 1 << 8;
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 9;
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 10;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 11;
    pub const GRPC_INTERNAL: u32 = 1 << 12;

    /// Envoy's names, as in `retry_on` (comma-separated).
    pub const NAMES: [(&'static str, u32); 13] = [
        ("5xx", Self::X5XX),
        ("gateway-error", Self::GATEWAY_ERROR),
        ("reset", Self::RESET),
        ("connect-failure", Self::CONNECT_FAILURE),
        ("refused-stream", Self::REFUSED_STREAM),
        ("retriable-4xx", Self::RETRIABLE_4XX),
        ("retriable-status-codes", Self::RETRIABLE_STATUS_CODES),
        ("retriable-headers", Self::RETRIABLE_HEADERS),
        ("cancelled", Self::GRPC_CANCELLED),
        ("deadline-exceeded", Self::GRPC_DEADLINE_EXCEEDED),
        ("resource-exhausted", Self::GRPC_RESOURCE_EXHAUSTED),
        ("unavailable", Self::GRPC_UNAVAILABLE),
        ("internal", Self::GRPC_INTERNAL),
    ];

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

/// One `request_mirror_policies` entry.
#[derive(Debug)]
pub struct Mirror {
    pub cluster: String,
    /// `runtime_fraction.default_value`: numerator out of denominator.
    pub numerator: u32,
    pub denominator: u32,
    /// `disable_shadow_host_suffix_append`: keep the authority as is (else `-shadow` is added).
    pub keep_host: bool,
}

#[derive(Debug)]
pub struct RegexRewrite {
    pub pattern: Regex,
    /// In the `regex` crate's replacement syntax.
    pub substitution: String,
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

#[cfg(test)]
mod tests {
    use super::ExactDomains;

    #[test]
    fn exact_domains_find_what_was_added_and_report_duplicates() {
        let mut d = ExactDomains::default();
        assert_eq!(d.get("a"), None);
        for i in 0..5000 {
            assert_eq!(d.insert(&format!("svc-{i}.ns.svc.cluster.local:{}", i % 7), i), None);
        }
        assert_eq!(d.insert("svc-42.ns.svc.cluster.local:0", 9), Some(42));
        d.shrink_to_fit();
        assert_eq!(d.len(), 5000);
        for i in 0..5000 {
            assert_eq!(d.get(&format!("svc-{i}.ns.svc.cluster.local:{}", i % 7)), Some(i));
            assert_eq!(d.get(&format!("svc-{i}.ns.svc.cluster.local:{}", i % 7 + 1)), None);
        }
        assert_eq!(d.get(""), None);
        assert_eq!(d.iter().nth(3), Some(("svc-3.ns.svc.cluster.local:3", 3)));
    }
}
