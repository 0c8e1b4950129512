//! The ADS server (state of the world): each stream learns its proxy from the node, gets the
//! configuration generated for that proxy, and is pushed again whenever the configuration
//! changes — only the types whose content changed for it. Versions are per proxy and per type
//! (a digest of what was sent), and every ACK and NACK is recorded for `/debug/syncz`.
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::Any;
use futures_stream::Stream;
use std::hash::Hasher;
use tokio::sync::mpsc;

use super::cache::{served_for, Res, Served};
use super::{Control, ProxyStatus};
use crate::generate::{generate, ProxyInfo, CLUSTER, ENDPOINT, LISTENER, ROUTE};

mod futures_stream {
    pub use tokio_stream::Stream;
}

pub struct Ads {
    pub control: Arc<Control>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// The proxy a node describes: Istio's metadata (NAMESPACE, LABELS, INSTANCE_IPS).
pub fn proxy_info(node: &Node) -> ProxyInfo {
    let md = node.metadata.as_ref().map(|m| &m.fields);
    let get = |k: &str| {
        md.and_then(|f| f.get(k)).and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
    };
    let namespace = get("NAMESPACE")
        .or_else(|| node.id.split('~').nth(2).and_then(|s| s.rsplit('.').next()).map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let labels = get("LABELS")
        .map(|l| {
            l.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
        })
        .unwrap_or_default();
    let instance_ip =
        get("INSTANCE_IPS").and_then(|s| s.split(',').next().map(str::to_string)).filter(|s| !s.is_empty());
    let proxyless = get("GENERATOR").is_some_and(|g| g == "grpc")
        || !(node.id.starts_with("sidecar~") || node.id.starts_with("router~"));
    ProxyInfo { id: node.id.clone(), namespace, labels, instance_ip, proxyless }
}

/// A version for a set of resources: a digest of their digests, in name order.
fn version_of<'a>(resources: impl Iterator<Item = &'a Arc<Res>>) -> String {
    let mut h = std::hash::DefaultHasher::new();
    for r in resources {
        h.write_u64(r.hash);
    }
    format!("{:016x}", h.finish())
}

/// Push order: clusters before their endpoints, listeners before their routes (Envoy's warming).
pub(super) const ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// One type's subscription on a state-of-the-world stream.
#[derive(Default)]
struct Sub {
    /// Names subscribed; empty = wildcard.
    names: Vec<String>,
    /// The version last sent (or that the client said it has, on reconnect).
    version: String,
    /// Digest of every resource the client has been sent, by name.
    sent: HashMap<String, u64>,
}

struct Stream1 {
    conn: u64,
    proxy: Option<ProxyInfo>,
    subs: HashMap<String, Sub>,
    resources: Arc<Served>,
    nonce: u64,
}

impl Stream1 {
    /// The response `t` needs, if its content changed for this client. Listeners and clusters
    /// are always the complete set (the protocol's rule for them); routes and endpoints carry
    /// only what the client lacks, as the protocol allows for them (an endpoint change of one
    /// service is one resource, not the whole registry).
    fn response(&mut self, t: &str) -> Option<DiscoveryResponse> {
        let sub = self.subs.get_mut(t)?;
        let empty = BTreeMap::new();
        let all = self.resources.get(t).map(|m| &**m).unwrap_or(&empty);
        // A wildcard LDS subscription (a sidecar) gets socket listeners; API listeners go only
        // to clients that name them (proxyless gRPC). Named subscriptions look their names up.
        let selected: Vec<(&String, &Arc<Res>)> = if sub.names.is_empty() {
            all.iter().filter(|(n, _)| !(t == LISTENER && crate::generate::is_api_listener(n))).collect()
        } else {
            let mut v: Vec<_> = sub.names.iter().filter_map(|n| all.get_key_value(n)).collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            v
        };
        let version = version_of(selected.iter().map(|(_, r)| *r));
        if sub.version == version {
            return None;
        }
        let full_state = t == LISTENER || t == CLUSTER || sub.sent.is_empty();
        let resources: Vec<Any> = selected
            .iter()
            .filter(|(n, r)| full_state || sub.sent.get(*n) != Some(&r.hash))
            .map(|(_, r)| r.any.clone())
            .collect();
        sub.version = version.clone();
        for (n, r) in &selected {
            if sub.sent.get(*n) != Some(&r.hash) {
                sub.sent.insert((*n).clone(), r.hash);
            }
        }
        if resources.is_empty() && !full_state {
            return None;
        }
        self.nonce += 1;
        Some(DiscoveryResponse {
            version_info: version,
            resources,
            type_url: t.to_string(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        })
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let control = self.control.clone();
        let (tx, rx) = mpsc::channel(16);
        let conn = control.next_conn.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            control.metrics.connected.inc();
            let mut gen = control.generation.subscribe();
            let mut s = Stream1 { conn, proxy: None, subs: HashMap::new(), resources: Arc::default(), nonce: 0 };
            loop {
                let types: Vec<String> = tokio::select! {
                    msg = inbound.message() => {
                        let Ok(Some(r)) = msg else { break };
                        if s.proxy.is_none() {
                            let Some(node) = r.node.as_ref() else {
                                let _ = tx.send(Err(tonic::Status::invalid_argument("the first request must carry the node"))).await;
                                break;
                            };
                            let info = proxy_info(node);
                            control.proxies.lock().unwrap().insert(
                                s.conn,
                                ProxyStatus { id: info.id.clone(), namespace: info.namespace.clone(), info: info.clone(), ..Default::default() },
                            );
                            s.proxy = Some(info);
                            if let Err(e) = regenerate(&control, &mut s) {
                                tracing::error!(error = %e, "cannot generate configuration for a proxy");
                            }
                        }
                        record(&control, &s, &r);
                        let entry = s.subs.entry(r.type_url.clone()).or_default();
                        let names_changed = entry.names != r.resource_names;
                        entry.names = r.resource_names.clone();
                        if r.response_nonce.is_empty() {
                            // A new stream: the client has what its version says (a reconnect
                            // that is up to date gets nothing), and we know nothing it holds.
                            entry.version = r.version_info.clone();
                            entry.sent.clear();
                            vec![r.type_url.clone()]
                        } else if names_changed {
                            // Names it no longer asks for are forgotten: asked again, resent.
                            let names: std::collections::HashSet<&String> = entry.names.iter().collect();
                            entry.sent.retain(|n, _| names.is_empty() || names.contains(n));
                            entry.version.clear();
                            vec![r.type_url.clone()]
                        } else {
                            vec![]
                        }
                    }
                    changed = gen.changed() => {
                        if changed.is_err() { break }
                        let start = std::time::Instant::now();
                        if let Err(e) = regenerate(&control, &mut s) {
                            tracing::error!(error = %e, "cannot generate configuration for a proxy");
                            continue;
                        }
                        control.metrics.push_time.observe(start.elapsed().as_secs_f64());
                        ORDER.iter().map(|t| t.to_string()).collect()
                    }
                };
                for t in ORDER.iter().filter(|t| types.iter().any(|x| x == *t)) {
                    if let Some(resp) = s.response(t) {
                        control.metrics.pushes.inc();
                        if let Some(p) = control.proxies.lock().unwrap().get_mut(&s.conn) {
                            p.sent.insert(t.to_string(), resp.version_info.clone());
                        }
                        if tx.send(Ok(resp)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            control.proxies.lock().unwrap().remove(&s.conn);
            control.metrics.connected.dec();
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        Ok(tonic::Response::new(super::delta::stream(self.control.clone(), req.into_inner())))
    }
}

fn regenerate(control: &Control, s: &mut Stream1) -> Result<(), String> {
    let Some(p) = &s.proxy else { return Ok(()) };
    s.resources = served_for(&control.cache, p)?;
    Ok(())
}

fn record(control: &Control, s: &Stream1, r: &DiscoveryRequest) {
    if !r.response_nonce.is_empty() {
        control.record_reply(s.conn, &r.type_url, &r.version_info, r.error_detail.as_ref().map(|e| e.message.as_str()));
    }
}

/// The resources a connected proxy would get now, for `/debug/config_dump?proxyID=`.
pub fn dump_for(control: &Control, proxy_id: &str) -> Option<serde_json::Value> {
    let info = {
        let proxies = control.proxies.lock().unwrap();
        let p = proxies.values().find(|p| p.id == proxy_id)?;
        p.info.clone()
    };
    let res = generate(&control.registry(), &info).ok()?;
    let mut out = serde_json::Map::new();
    for (t, by_name) in res {
        let list: Vec<_> = by_name.values().map(|a| outrigger_api::json::to_json(&control.pool, a)).collect();
        out.insert(t.to_string(), serde_json::Value::Array(list));
    }
    Some(serde_json::Value::Object(out))
}
