//! `outrigger sidecar` and `outrigger router`: the Envoy bootstrap Istio's agent would write,
//! built from flags and the workload's identity, then loaded like any bootstrap file.
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The workload identity (DESIGN.md: flags, each also read from an environment variable).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub workload_name: String,
    pub namespace: String,
    pub service_account: String,
    pub instance_ip: String,
    pub labels: BTreeMap<String, String>,
    pub trust_domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sidecar,
    Router,
}

impl Mode {
    fn prefix(self) -> &'static str {
        match self {
            Mode::Sidecar => "sidecar",
            Mode::Router => "router",
        }
    }
}

/// Istio's node id: `sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`.
pub fn node_id(mode: Mode, id: &Identity) -> String {
    format!(
        "{}~{}~{}.{}~{}.svc.cluster.local",
        mode.prefix(),
        id.instance_ip,
        id.workload_name,
        id.namespace,
        id.namespace
    )
}

/// The node metadata Istio's proxies announce, which the control plane selects config by.
pub fn node_metadata(id: &Identity) -> BTreeMap<String, String> {
    let labels = id.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    BTreeMap::from([
        ("NAMESPACE".to_string(), id.namespace.clone()),
        ("WORKLOAD_NAME".to_string(), id.workload_name.clone()),
        ("SERVICE_ACCOUNT".to_string(), id.service_account.clone()),
        ("LABELS".to_string(), labels),
        ("CLUSTER_ID".to_string(), "Kubernetes".to_string()),
        ("INSTANCE_IPS".to_string(), id.instance_ip.clone()),
        ("TRUST_DOMAIN".to_string(), id.trust_domain.clone()),
    ])
}

pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!("label \"{kv}\" is not key=value")),
        })
        .collect()
}

/// The bootstrap: admin on 127.0.0.1:`admin_port`, a static `xds-grpc` cluster to the control
/// plane (HTTP/2), and LDS/CDS over ADS.
pub fn bootstrap_yaml(mode: Mode, id: &Identity, xds: &str, admin_port: u16, delta: bool) -> Result<String, String> {
    let hostport = xds.strip_prefix("http://").unwrap_or(xds).trim_end_matches('/');
    if xds.starts_with("https://") {
        return Err("--xds-address: TLS to the control plane is not implemented yet; use http://".into());
    }
    let (host, port) =
        hostport.rsplit_once(':').ok_or_else(|| format!("--xds-address {xds}: expected http://host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| format!("--xds-address {xds}: bad port"))?;
    let kind = if host.parse::<IpAddr>().is_ok() { "STATIC" } else { "STRICT_DNS" };
    let api = if delta { "DELTA_GRPC" } else { "GRPC" };
    let node = node_id(mode, id);
    Ok(format!(
        r#"node:
  id: "{node}"
  cluster: "{workload}.{ns}"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds-grpc }} }}]
  # As Istio's bootstrap: a sidecar is not ready before its control plane has answered.
  lds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s }}
  cds_config: {{ ads: {{}}, resource_api_version: V3, initial_fetch_timeout: 0s }}
static_resources:
  clusters:
  - name: xds-grpc
    type: {kind}
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: "{host}", port_value: {port} }} }} }} }}] }}]
"#,
        workload = id.workload_name,
        ns = id.namespace,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            workload_name: "reviews-v1-abc".into(),
            namespace: "bookinfo".into(),
            service_account: "reviews".into(),
            instance_ip: "10.0.0.7".into(),
            labels: parse_labels("app=reviews,version=v1").unwrap(),
            trust_domain: "cluster.local".into(),
        }
    }

    #[test]
    fn node_id_follows_istio() {
        assert_eq!(
            node_id(Mode::Sidecar, &id()),
            "sidecar~10.0.0.7~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local"
        );
        assert!(node_id(Mode::Router, &id()).starts_with("router~"));
        let md = node_metadata(&id());
        assert_eq!(md["LABELS"], "app=reviews,version=v1");
        assert_eq!(md["NAMESPACE"], "bookinfo");
    }

    #[test]
    fn generated_bootstrap_compiles() {
        let y = bootstrap_yaml(Mode::Sidecar, &id(), "http://127.0.0.1:15010", 15000, true).unwrap();
        let b = crate::translate::parse_bootstrap(&y, false).unwrap();
        let b = crate::translate::translate_bootstrap(&b).unwrap();
        let d = b.dynamic.unwrap();
        assert!(d.delta && d.lds && d.cds);
        assert_eq!(d.ads_cluster, "xds-grpc");
        assert!(bootstrap_yaml(Mode::Sidecar, &id(), "istiod.istio-system.svc:15010", 15000, false).is_ok());
        assert!(bootstrap_yaml(Mode::Sidecar, &id(), "http://nohost", 15000, false).is_err());
        assert!(parse_labels("novalue").is_err());
    }
}
