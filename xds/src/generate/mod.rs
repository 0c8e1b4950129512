//! Istio's API → Envoy resources, as istiod generates them for a sidecar, with Istio's names:
//! clusters `outbound|PORT|SUBSET|HOST` (EDS, or STRICT_DNS for `resolution: DNS`), one
//! RouteConfiguration per HTTP port (named by the port), and the `virtualOutbound` (15001) and
//! `virtualInbound` (15006) listeners with a filter chain per destination port.
//!
//! Resources are built as envoy-types structs and encoded with prost (nested `typed_config`s as
//! `Any`s the same way); `generate` also checks each with the proxy's own translation, so what
//! is served is what an Envoy-API proxy accepts. Lookups (DestinationRules and VirtualServices
//! by host, WorkloadEntries by namespace and label, the proxy's Sidecar) are indexed once per
//! generation, so the cost grows linearly with the number of services.
mod clusters;
mod listeners;
mod route_policy;
mod routes;
mod traffic_policy;

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::core::v3::{
    address, config_source, socket_address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};

use crate::istio::model::{
    Destination, DestinationRule, Metadata, OutboundMode, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
use crate::istio::Registry;

pub use clusters::load_assignments;

pub use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
pub const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Who is asking: the proxy's namespace and labels select what it receives.
#[derive(Debug, Clone, Default)]
pub struct ProxyInfo {
    pub id: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// The address the virtual listeners bind (Istio's INSTANCE_IPS), when the proxy says.
    pub instance_ip: Option<String>,
    /// A proxyless gRPC client (metadata GENERATOR=grpc, or a node id that is not Istio's
    /// `sidecar~`/`router~`): it gets API listeners and per-service routes instead of sockets.
    pub proxyless: bool,
}

/// A proxy's full configuration: type URL → name → resource.
pub type Resources = BTreeMap<&'static str, BTreeMap<String, Any>>;

#[derive(Debug, thiserror::Error)]
#[error("{resource}: {message}")]
pub struct GenerateError {
    pub resource: String,
    pub message: String,
}

/// Istio's fully qualified host for `host` as written in `ns` (short names are Kubernetes services).
pub fn fqdn(host: &str, ns: &str) -> String {
    if host.contains('.') || host == "*" {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.cluster.local")
    }
}

pub fn cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// Istio durations: protobuf's decimal seconds ("1.5s"), or a number with a unit ("100ms",
/// "1m", "1h", as humantime reads them).
pub fn duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if let Some(secs) = s.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
        // try_from: a value too large for a Duration is not one, rather than a panic.
        return std::time::Duration::try_from_secs_f64(secs).ok();
    }
    humantime::parse_duration(s).ok()
}

/// `google.protobuf.Duration` of a std duration.
pub(crate) fn pb_duration(d: std::time::Duration) -> Duration {
    Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub(crate) fn seconds(s: i64) -> Option<Duration> {
    Some(Duration { seconds: s, nanos: 0 })
}

pub(crate) fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

pub(crate) fn u32_value(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// A message as an `Any` of `type_url`.
pub(crate) fn to_any(type_url: &str, m: &impl prost::Message) -> Any {
    Any { type_url: type_url.to_string(), value: m.encode_to_vec() }
}

/// `{"ads": {}, "resource_api_version": "V3"}`.
pub(crate) fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    })
}

/// `{"socket_address": {"address": address, "port_value": port}}`.
pub(crate) fn socket(address: &str, port: u32) -> Option<envoy_types::pb::envoy::config::core::v3::Address> {
    Some(envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

/// Whether `labels` select a workload with `have`.
fn selects(labels: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    labels.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// The endpoints of a ServiceEntry: its own `endpoints`, or the WorkloadEntries of its
/// namespace that it selects (in registry order), found by a scan. [`Index::endpoints`] is the
/// same through the index.
fn endpoints_scan<'a>(reg: &'a Registry, ns: &str, se: &'a ServiceEntry) -> Vec<&'a WorkloadEntry> {
    match &se.workload_selector {
        Some(sel) => reg
            .workload_entries
            .iter()
            .filter(|(m, we)| m.namespace == ns && selects(&sel.labels, &we.labels))
            .map(|(_, we)| we)
            .collect(),
        None => se.endpoints.iter().collect(),
    }
}

/// The DestinationRule for `host` (the first one naming it), found by a scan.
fn destination_rule_scan<'a>(reg: &'a Registry, host: &str) -> Option<&'a DestinationRule> {
    reg.destination_rules.iter().find(|(m, d)| fqdn(&d.host, &m.namespace) == host).map(|(_, d)| d)
}

/// What one generation looks up per host, indexed once.
pub(crate) struct Index<'a> {
    pub reg: &'a Registry,
    pub proxy: &'a ProxyInfo,
    /// The Sidecar that applies to the proxy: the first in its namespace whose selector matches
    /// its labels, else the first there without a selector.
    sidecar: Option<&'a Sidecar>,
    /// DestinationRules by fully qualified host; the first one for a host wins.
    drs: HashMap<String, &'a DestinationRule>,
    /// VirtualServices bound to the mesh, by fully qualified host, in registry order.
    vss: HashMap<String, Vec<&'a (Metadata, VirtualService)>>,
    /// WorkloadEntry positions by namespace, and by (namespace, label, value), ascending.
    we_by_ns: HashMap<&'a str, Vec<usize>>,
    we_by_label: HashMap<(&'a str, &'a str, &'a str), Vec<usize>>,
    /// The ServiceEntries (positions) of which the proxy runs a workload, in its namespace.
    owned: Vec<usize>,
    /// ServiceEntries by host; the first one for a host wins (a second is a load error).
    services: HashMap<&'a str, &'a ServiceEntry>,
}

impl<'a> Index<'a> {
    pub fn new(reg: &'a Registry, proxy: &'a ProxyInfo) -> Self {
        // As istiod: a Sidecar whose selector matches the proxy wins over the namespace's
        // default (the one without a selector).
        let in_ns = || reg.sidecars.iter().filter(|(m, _)| m.namespace == proxy.namespace).map(|(_, s)| s);
        let sidecar = in_ns()
            .find(|s| s.workload_selector.as_ref().is_some_and(|sel| selects(&sel.labels, &proxy.labels)))
            .or_else(|| in_ns().find(|s| s.workload_selector.is_none()));
        let mut drs = HashMap::with_capacity(reg.destination_rules.len());
        for (m, d) in &reg.destination_rules {
            drs.entry(fqdn(&d.host, &m.namespace)).or_insert(d);
        }
        let mut vss: HashMap<String, Vec<&(Metadata, VirtualService)>> = HashMap::new();
        for entry in &reg.virtual_services {
            let (m, vs) = entry;
            if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
                continue;
            }
            for h in &vs.hosts {
                let list = vss.entry(fqdn(h, &m.namespace)).or_default();
                // A VirtualService naming one host twice (`reviews` and its FQDN) counts once.
                if !list.last().is_some_and(|last| std::ptr::eq(*last, entry)) {
                    list.push(entry);
                }
            }
        }
        let mut we_by_ns: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut we_by_label: HashMap<(&str, &str, &str), Vec<usize>> = HashMap::new();
        for (i, (m, we)) in reg.workload_entries.iter().enumerate() {
            we_by_ns.entry(m.namespace.as_str()).or_default().push(i);
            for (k, v) in &we.labels {
                we_by_label.entry((m.namespace.as_str(), k.as_str(), v.as_str())).or_default().push(i);
            }
        }
        let mut services = HashMap::with_capacity(reg.service_entries.len());
        for (_, se) in &reg.service_entries {
            for h in &se.hosts {
                services.entry(h.as_str()).or_insert(se);
            }
        }
        let mut idx = Index { reg, proxy, sidecar, drs, vss, we_by_ns, we_by_label, owned: Vec::new(), services };
        // A workload is the proxy's when all of its (non-empty) labels are the proxy's.
        if !proxy.labels.is_empty() {
            idx.owned = (reg.service_entries.iter().enumerate())
                .filter(|(_, (meta, se))| {
                    meta.namespace == proxy.namespace
                        && idx.endpoints(&meta.namespace, se).iter().any(|we| clusters::proxy_owns(proxy, we))
                })
                .map(|(i, _)| i)
                .collect();
        }
        idx
    }

    /// istiod's `GetDestinationCluster`: the destination's port, else the service's only port,
    /// else the port the traffic came in on.
    pub fn destination_cluster(&self, d: &Destination, vs_ns: &str, listener_port: u16) -> String {
        let host = fqdn(&d.host, vs_ns);
        let port = match (&d.port, self.services.get(host.as_str())) {
            (Some(p), _) => p.number,
            (None, Some(se)) if se.ports.len() == 1 => se.ports[0].number,
            _ => listener_port,
        };
        cluster_name(port, d.subset.as_deref().unwrap_or(""), &host)
    }

    pub fn destination_rule(&self, host: &str) -> Option<&'a DestinationRule> {
        self.drs.get(host).copied()
    }

    pub fn virtual_services(&self, host: &str) -> &[&'a (Metadata, VirtualService)] {
        self.vss.get(host).map(Vec::as_slice).unwrap_or(&[])
    }

    /// As [`endpoints_scan`], through the index: the candidates are the workloads of the
    /// namespace carrying the selector's rarest label, still filtered by every label.
    pub fn endpoints(&self, ns: &str, se: &'a ServiceEntry) -> Vec<&'a WorkloadEntry> {
        let Some(sel) = &se.workload_selector else { return se.endpoints.iter().collect() };
        let candidates: &[usize] = if sel.labels.is_empty() {
            self.we_by_ns.get(ns).map(Vec::as_slice).unwrap_or(&[])
        } else {
            sel.labels
                .iter()
                .map(|(k, v)| self.we_by_label.get(&(ns, k.as_str(), v.as_str())).map(Vec::as_slice).unwrap_or(&[]))
                .min_by_key(|c| c.len())
                .unwrap_or(&[])
        };
        candidates
            .iter()
            .map(|&i| &self.reg.workload_entries[i].1)
            .filter(|we| selects(&sel.labels, &we.labels))
            .collect()
    }

    /// What the proxy may see: Sidecar egress hosts (`ns/host`, `./*`, `*/*`) when a Sidecar
    /// with `egress` applies to it, otherwise everything (Istio's default egress).
    pub fn visible(&self, se_meta: &Metadata, host: &str) -> bool {
        let Some(sidecar) = self.sidecar.filter(|s| !s.egress.is_empty()) else { return true };
        let proxy = self.proxy;
        sidecar.egress.iter().flat_map(|e| e.hosts.iter()).any(|h| {
            let (ns, pattern) = h.split_once('/').unwrap_or(("*", h));
            let ns_ok = ns == "*" || (ns == "." && se_meta.namespace == proxy.namespace) || ns == se_meta.namespace;
            let host_ok =
                pattern == "*" || pattern == host || pattern.strip_prefix('*').is_some_and(|s| host.ends_with(s));
            ns_ok && host_ok
        })
    }

    /// The ServiceEntries of which the proxy runs a workload (in its own namespace), in
    /// registry order.
    pub fn owned(&self) -> impl Iterator<Item = &'a (Metadata, ServiceEntry)> + '_ {
        self.owned.iter().map(|&i| &self.reg.service_entries[i])
    }
}

/// The Sidecar's outboundTrafficPolicy where the Sidecar that applies has one, else the mesh's.
fn outbound_mode(idx: &Index<'_>) -> OutboundMode {
    (idx.sidecar.and_then(|s| s.outbound_traffic_policy.as_ref()))
        .or(idx.reg.mesh.outbound_traffic_policy.as_ref())
        .map(|p| p.mode)
        .unwrap_or_default()
}

/// Generates the full configuration for one proxy, each resource checked with the proxy's own
/// translation (what `validate` and the tests use).
pub fn generate(reg: &Registry, proxy: &ProxyInfo) -> Result<Resources, GenerateError> {
    generate_with(reg, proxy, true)
}

/// As [`generate`]; `check: false` skips the per-resource acceptance check, which costs about
/// as much as generating (serving relies on `validate` and the tests having run it, and on
/// proxies NACKing anything they refuse while keeping their last good config).
pub fn generate_with(reg: &Registry, proxy: &ProxyInfo, check: bool) -> Result<Resources, GenerateError> {
    let idx = Index::new(reg, proxy);
    let mode = outbound_mode(&idx);
    let (cl, eps) = clusters::clusters(&idx, mode);
    let rts = routes::routes(&idx, mode)?;
    let ls = listeners::listeners(&idx, mode);
    let mut out = Resources::new();
    out.insert(CLUSTER, cl);
    out.insert(ENDPOINT, eps);
    out.insert(ROUTE, rts);
    out.insert(LISTENER, ls);
    if check {
        for (t, by_name) in &out {
            for (name, any) in by_name {
                // Every generated resource must decode and pass the proxy's strict field check (API
                // listeners are for proxyless gRPC clients, which the proxy is not).
                if *t == LISTENER && is_api_listener(name) {
                    continue;
                }
                outrigger_api::resource::decode(t, any).map_err(|e| GenerateError {
                    resource: name.clone(),
                    message: format!("generated an invalid resource: {e}"),
                })?;
            }
        }
    }
    Ok(out)
}

/// A kind of proxy the registry implies, for `validate`: what it is (for messages) and what it
/// presents.
pub struct ProxyClass {
    pub description: String,
    pub proxy: ProxyInfo,
}

/// Every distinct (namespace, labels) a sidecar could present given `reg`: a proxy without labels
/// in `default` and in each namespace that has resources, and one per workload (WorkloadEntry or
/// ServiceEntry endpoint) with its labels and address. What a proxy receives depends on exactly
/// these (Sidecar selection, short names, inbound listeners for its workloads).
pub fn proxy_classes(reg: &Registry) -> Vec<ProxyClass> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |description: String, namespace: &str, labels: &BTreeMap<String, String>, ip: Option<&str>| {
        if seen.insert((namespace.to_string(), labels.clone())) {
            let instance_ip = ip.filter(|a| a.parse::<std::net::IpAddr>().is_ok()).map(str::to_string);
            let id = format!(
                "sidecar~{}~validate.{namespace}~{namespace}.svc.cluster.local",
                instance_ip.as_deref().unwrap_or("0.0.0.0")
            );
            let proxy = ProxyInfo {
                id,
                namespace: namespace.to_string(),
                labels: labels.clone(),
                instance_ip,
                proxyless: false,
            };
            out.push(ProxyClass { description, proxy });
        }
    };
    let none = BTreeMap::new();
    add("a proxy in namespace default without labels".into(), "default", &none, None);
    let namespaces = (reg.service_entries.iter().map(|(m, _)| m))
        .chain(reg.workload_entries.iter().map(|(m, _)| m))
        .chain(reg.virtual_services.iter().map(|(m, _)| m))
        .chain(reg.destination_rules.iter().map(|(m, _)| m))
        .chain(reg.sidecars.iter().map(|(m, _)| m))
        .map(|m| m.namespace.as_str())
        .collect::<std::collections::BTreeSet<_>>();
    for ns in namespaces {
        add(format!("a proxy in namespace {ns} without labels"), ns, &none, None);
    }
    let show = |l: &BTreeMap<String, String>| l.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    for (m, we) in &reg.workload_entries {
        let d = format!("the proxy of WorkloadEntry {}/{} (labels {})", m.namespace, m.name, show(&we.labels));
        add(d, &m.namespace, &we.labels, Some(&we.address));
    }
    for (m, se) in &reg.service_entries {
        for (i, we) in se.endpoints.iter().enumerate().filter(|(_, we)| !we.labels.is_empty()) {
            let d = format!(
                "the proxy of ServiceEntry {}/{} endpoint {i} (labels {})",
                m.namespace,
                m.name,
                show(&we.labels)
            );
            add(d, &m.namespace, &we.labels, Some(&we.address));
        }
    }
    out
}

/// Generates, with the acceptance check, for every proxy class of `reg` as a sidecar and as a
/// proxyless gRPC client; returns each distinct error once, with the first class that met it.
pub fn check_all(reg: &Registry) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut errors = Vec::new();
    for class in proxy_classes(reg) {
        let grpc = ProxyInfo { proxyless: true, ..class.proxy.clone() };
        for (p, kind) in [(&class.proxy, "sidecar"), (&grpc, "proxyless gRPC client")] {
            if let Err(e) = generate(reg, p) {
                if seen.insert(e.to_string()) {
                    errors.push(format!("for {} as a {kind}: {e}", class.description));
                }
            }
        }
    }
    errors
}

/// API listeners are named `host:port`; socket listeners never contain a colon.
pub fn is_api_listener(name: &str) -> bool {
    name.contains(':')
}

#[cfg(test)]
mod policy_validation_tests;
#[cfg(test)]
mod route_policy_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod traffic_policy_tests;
