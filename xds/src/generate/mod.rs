//! Istio's API → Envoy resources, as istiod generates them for a sidecar, with Istio's names:
//! clusters `outbound|PORT|SUBSET|HOST` (EDS, or STRICT_DNS for `resolution: DNS`), one
//! RouteConfiguration per HTTP port (named by the port), and the `virtualOutbound` (15001) and
//! `virtualInbound` (15006) listeners with a filter chain per destination port.
//!
//! Resources are written as proto3 JSON and encoded through Envoy's descriptors, then checked
//! with the proxy's own translation, so what is served is what an Envoy-API proxy accepts.
mod clusters;
mod listeners;
mod routes;

use std::collections::BTreeMap;

use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;

use crate::istio::model::{Metadata, OutboundMode};
use crate::istio::Registry;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
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

/// Istio durations: "1s", "0.5s", "100ms", "1m", "1h".
pub fn duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).map(|i| s.split_at(i)).unwrap_or((s, "s"));
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| std::time::Duration::from_secs_f64(secs))
}

pub(crate) fn json_duration(d: std::time::Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// What the proxy in `proxy` may see: Sidecar egress hosts (`ns/host`, `./*`, `*/*`) when a
/// Sidecar applies to it, otherwise everything.
fn visible(reg: &Registry, proxy: &ProxyInfo, se_meta: &Metadata, host: &str) -> bool {
    let sidecar =
        reg.sidecars.iter().filter(|(m, _)| m.namespace == proxy.namespace).find(|(_, s)| match &s.workload_selector {
            Some(sel) => sel.labels.iter().all(|(k, v)| proxy.labels.get(k) == Some(v)),
            None => true,
        });
    let Some((_, sidecar)) = sidecar else { return true };
    sidecar.egress.iter().flat_map(|e| e.hosts.iter()).any(|h| {
        let (ns, pattern) = h.split_once('/').unwrap_or(("*", h));
        let ns_ok = ns == "*" || (ns == "." && se_meta.namespace == proxy.namespace) || ns == se_meta.namespace;
        let host_ok = pattern == "*" || pattern == host || pattern.strip_prefix('*').is_some_and(|s| host.ends_with(s));
        ns_ok && host_ok
    })
}

fn outbound_mode(reg: &Registry, proxy: &ProxyInfo) -> OutboundMode {
    reg.sidecars
        .iter()
        .filter(|(m, _)| m.namespace == proxy.namespace)
        .find_map(|(_, s)| s.outbound_traffic_policy.as_ref().map(|p| p.mode))
        .or(reg.mesh.outbound_traffic_policy.as_ref().map(|p| p.mode))
        .unwrap_or_default()
}

/// Generates the full configuration for one proxy, each resource checked with the proxy's own
/// translation (what `validate` and the tests use).
pub fn generate(reg: &Registry, proxy: &ProxyInfo, pool: &DescriptorPool) -> Result<Resources, GenerateError> {
    generate_with(reg, proxy, pool, true)
}

/// As [`generate`]; `check: false` skips the per-resource acceptance check, which costs about
/// as much as generating (serving relies on `validate` and the tests having run it, and on
/// proxies NACKing anything they refuse while keeping their last good config).
pub fn generate_with(
    reg: &Registry,
    proxy: &ProxyInfo,
    pool: &DescriptorPool,
    check: bool,
) -> Result<Resources, GenerateError> {
    let mut json: BTreeMap<&'static str, BTreeMap<String, Value>> = BTreeMap::new();
    let mode = outbound_mode(reg, proxy);
    let (cl, eps) = clusters::clusters(reg, proxy, mode);
    let rts = routes::routes(reg, proxy)?;
    let ls = listeners::listeners(reg, proxy, mode);
    json.insert(CLUSTER, cl);
    json.insert(ENDPOINT, eps);
    json.insert(ROUTE, rts);
    json.insert(LISTENER, ls);
    let mut out = Resources::new();
    for (t, by_name) in json {
        let mut enc = BTreeMap::new();
        for (name, v) in by_name {
            let any = encode(pool, t, &v).map_err(|message| GenerateError { resource: name.clone(), message })?;
            // The proxy's own translation is the acceptance test for every generated resource
            // (API listeners are for proxyless gRPC clients, which the proxy is not).
            if check && !(t == LISTENER && is_api_listener(&name)) {
                outrigger_proxy::translate::resource::decode(pool, t, &any).map_err(|e| GenerateError {
                    resource: name.clone(),
                    message: format!("generated an invalid resource: {e}"),
                })?;
            }
            enc.insert(name, any);
        }
        out.insert(t, enc);
    }
    Ok(out)
}

/// API listeners are named `host:port`; socket listeners never contain a colon.
pub fn is_api_listener(name: &str) -> bool {
    name.contains(':')
}

pub fn encode(pool: &DescriptorPool, type_url: &str, v: &Value) -> Result<Any, String> {
    let desc = pool.get_message_by_name(type_url.rsplit('/').next().unwrap_or(type_url)).ok_or("unknown type")?;
    let msg = DynamicMessage::deserialize(desc, v.clone()).map_err(|e| e.to_string())?;
    Ok(Any { type_url: type_url.to_string(), value: prost::Message::encode_to_vec(&msg) })
}

#[cfg(test)]
mod tests;
