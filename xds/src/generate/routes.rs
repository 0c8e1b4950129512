//! One RouteConfiguration per HTTP port, named by the port (as istiod names them), with a
//! virtual host per service host and the VirtualService rules for it.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{cluster_name, fqdn, json_duration, visible, GenerateError, ProxyInfo};
use crate::istio::model::{HttpMatch, HttpRoute, Metadata, StringMatch, VirtualService};
use crate::istio::Registry;

fn string_match(m: &StringMatch) -> Value {
    match m {
        StringMatch::Exact(s) => json!({"exact": s}),
        StringMatch::Prefix(s) => json!({"prefix": s}),
        StringMatch::Regex(s) => json!({"safe_regex": {"regex": s}}),
    }
}

fn route_match(m: &HttpMatch) -> Value {
    let mut out = match &m.uri {
        None => json!({"prefix": "/"}),
        Some(StringMatch::Exact(p)) => json!({"path": p}),
        Some(StringMatch::Prefix(p)) => json!({"prefix": p}),
        Some(StringMatch::Regex(r)) => json!({"safe_regex": {"regex": r}}),
    };
    if m.ignore_uri_case {
        out["case_sensitive"] = json!(false);
    }
    let mut headers: Vec<Value> =
        m.headers.iter().map(|(name, v)| json!({"name": name, "string_match": string_match(v)})).collect();
    if let Some(method) = &m.method {
        headers.push(json!({"name": ":method", "string_match": string_match(method)}));
    }
    if let Some(a) = &m.authority {
        headers.push(json!({"name": ":authority", "string_match": string_match(a)}));
    }
    if !headers.is_empty() {
        out["headers"] = json!(headers);
    }
    let q: Vec<Value> =
        m.query_params.iter().map(|(name, v)| json!({"name": name, "string_match": string_match(v)})).collect();
    if !q.is_empty() {
        out["query_parameters"] = json!(q);
    }
    out
}

fn redirect_code(code: Option<u16>) -> Result<&'static str, String> {
    Ok(match code.unwrap_or(301) {
        301 => "MOVED_PERMANENTLY",
        302 => "FOUND",
        303 => "SEE_OTHER",
        307 => "TEMPORARY_REDIRECT",
        308 => "PERMANENT_REDIRECT",
        other => return Err(format!("redirectCode {other} is not a redirect code")),
    })
}

fn action(rule: &HttpRoute, vs_ns: &str, port: u16, res: &str) -> Result<(&'static str, Value), GenerateError> {
    let err = |message: String| GenerateError { resource: res.to_string(), message };
    if let Some(r) = &rule.redirect {
        let mut v = json!({"response_code": redirect_code(r.redirect_code).map_err(err)?});
        if let Some(u) = &r.uri {
            v["path_redirect"] = json!(u);
        }
        if let Some(a) = &r.authority {
            v["host_redirect"] = json!(a);
        }
        return Ok(("redirect", v));
    }
    let dest_cluster = |d: &crate::istio::model::Destination| {
        let p = d.port.as_ref().map(|p| p.number).unwrap_or(port);
        cluster_name(p, d.subset.as_deref().unwrap_or(""), &fqdn(&d.host, vs_ns))
    };
    let mut v = if rule.route.len() == 1 {
        json!({"cluster": dest_cluster(&rule.route[0].destination)})
    } else {
        let clusters: Vec<Value> = rule
            .route
            .iter()
            .map(|d| json!({"name": dest_cluster(&d.destination), "weight": d.weight.unwrap_or(0)}))
            .collect();
        if clusters.iter().all(|c| c["weight"] == 0) {
            return Err(err("route weights must not all be 0".into()));
        }
        json!({"weighted_clusters": {"clusters": clusters}})
    };
    // Istio's default: no timeout.
    let timeout = match &rule.timeout {
        Some(t) => super::duration(t).ok_or_else(|| err(format!("timeout \"{t}\" is not a duration")))?,
        None => std::time::Duration::ZERO,
    };
    v["timeout"] = json!(json_duration(timeout));
    if let Some(rw) = &rule.rewrite {
        if let Some(u) = &rw.uri {
            v["prefix_rewrite"] = json!(u);
        }
        if let Some(a) = &rw.authority {
            v["host_rewrite_literal"] = json!(a);
        }
    }
    Ok(("route", v))
}

/// Domains a client may use for `host:port`: the host, with the port, and for Kubernetes service
/// names in the proxy's namespace the short forms.
fn domains(host: &str, port: u16, proxy_ns: &str, used: &mut BTreeSet<String>) -> Vec<String> {
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
    d.into_iter().filter(|x| used.insert(x.clone())).collect()
}

fn virtual_services_for<'a>(reg: &'a Registry, host: &str) -> Vec<&'a (Metadata, VirtualService)> {
    reg.virtual_services
        .iter()
        .filter(|(_, vs)| vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"))
        .filter(|(m, vs)| vs.hosts.iter().any(|h| fqdn(h, &m.namespace) == host))
        .collect()
}

pub fn routes(reg: &Registry, proxy: &ProxyInfo) -> Result<BTreeMap<String, Value>, GenerateError> {
    let mut by_port: BTreeMap<u16, Vec<Value>> = BTreeMap::new();
    let mut api: BTreeMap<String, Value> = BTreeMap::new();
    let mut used: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
    for (meta, se) in &reg.service_entries {
        for host in se.hosts.iter().filter(|h| visible(reg, proxy, meta, h)) {
            for port in se.ports.iter().filter(|p| p.is_http()) {
                let mut rts = Vec::new();
                for (vm, vs) in virtual_services_for(reg, host) {
                    let res = format!("VirtualService {}/{}", vm.namespace, vm.name);
                    for (i, rule) in vs.http.iter().enumerate() {
                        let matches: Vec<&HttpMatch> =
                            rule.matches.iter().filter(|m| m.port.is_none_or(|p| p == port.number)).collect();
                        if !rule.matches.is_empty() && matches.is_empty() {
                            continue;
                        }
                        let (kind, act) = action(rule, &vm.namespace, port.number, &res)?;
                        let name = rule.name.clone().unwrap_or_else(|| format!("{}.{}.{i}", vm.namespace, vm.name));
                        let ms: Vec<Value> = if matches.is_empty() {
                            vec![json!({"prefix": "/"})]
                        } else {
                            matches.iter().map(|m| route_match(m)).collect()
                        };
                        for m in ms {
                            rts.push(json!({"name": name, "match": m, kind: act}));
                        }
                    }
                }
                // Without a VirtualService (or after its rules), everything goes to the service.
                rts.push(json!({
                    "name": "default",
                    "match": {"prefix": "/"},
                    "route": {"cluster": cluster_name(port.number, "", host), "timeout": "0s"},
                }));
                // Proxyless gRPC clients (`xds:///host:port`) get a route configuration of their
                // own per service, named like their API listener.
                let api_name = format!("{host}:{}", port.number);
                if proxy.proxyless {
                    api.insert(
                        api_name.clone(),
                        json!({"name": api_name, "validate_clusters": false, "virtual_hosts": [{
                            "name": api_name, "domains": [api_name, host], "routes": rts.clone(),
                        }]}),
                    );
                }
                let d = domains(host, port.number, &proxy.namespace, used.entry(port.number).or_default());
                if d.is_empty() {
                    continue;
                }
                by_port.entry(port.number).or_default().push(json!({
                    "name": format!("{host}:{}", port.number),
                    "domains": d,
                    "routes": rts,
                }));
            }
        }
    }
    let mut out: BTreeMap<String, Value> = by_port
        .into_iter()
        .map(|(port, vhosts)| {
            let name = port.to_string();
            (name.clone(), json!({"name": name, "virtual_hosts": vhosts, "validate_clusters": false}))
        })
        .collect();
    out.extend(api);
    Ok(out)
}
