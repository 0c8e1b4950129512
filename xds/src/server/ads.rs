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
use futures_stream::Stream;
use tokio::sync::mpsc;

use super::{Control, ProxyStatus};
use crate::generate::{generate, ProxyInfo, Resources, CLUSTER, ENDPOINT, LISTENER, ROUTE};

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

pub(super) fn digest_one(a: &envoy_types::pb::google::protobuf::Any) -> String {
    let mut h = 0xcbf29ce484222325u64;
    for b in a.value.iter() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

fn digest(by_name: &BTreeMap<String, envoy_types::pb::google::protobuf::Any>) -> String {
    let mut h = 0xcbf29ce484222325u64;
    for (n, a) in by_name {
        for b in n.as_bytes().iter().chain(a.value.iter()) {
            h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

/// Push order: clusters before their endpoints, listeners before their routes (Envoy's warming).
pub(super) const ORDER: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];

struct Stream1 {
    conn: u64,
    proxy: Option<ProxyInfo>,
    /// type → (names subscribed, empty = all; version last sent)
    subs: HashMap<String, (Vec<String>, String)>,
    resources: Arc<Resources>,
    nonce: u64,
}

impl Stream1 {
    fn response(&mut self, t: &str) -> Option<DiscoveryResponse> {
        let (names, sent) = self.subs.get(t)?;
        let empty = BTreeMap::new();
        let all = self.resources.get(t).unwrap_or(&empty);
        // A wildcard LDS subscription (a sidecar) gets socket listeners; API listeners go only
        // to clients that name them (proxyless gRPC). Named subscriptions look their names up.
        let selected: BTreeMap<String, envoy_types::pb::google::protobuf::Any> = if names.is_empty() {
            all.iter()
                .filter(|(n, _)| !(t == LISTENER && crate::generate::is_api_listener(n)))
                .map(|(n, a)| (n.clone(), a.clone()))
                .collect()
        } else {
            names.iter().filter_map(|n| all.get(n).map(|a| (n.clone(), a.clone()))).collect()
        };
        let version = digest(&selected);
        if *sent == version {
            return None;
        }
        self.nonce += 1;
        let resp = DiscoveryResponse {
            version_info: version.clone(),
            resources: selected.into_values().collect(),
            type_url: t.to_string(),
            nonce: self.nonce.to_string(),
            ..Default::default()
        };
        self.subs.get_mut(t).unwrap().1 = version;
        Some(resp)
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
                        let entry = s.subs.entry(r.type_url.clone()).or_insert_with(|| (Vec::new(), String::new()));
                        let names_changed = entry.0 != r.resource_names;
                        entry.0 = r.resource_names.clone();
                        // A new subscription, or a reconnect that holds an older version: (re)send.
                        if names_changed || r.response_nonce.is_empty() {
                            entry.1 = if r.response_nonce.is_empty() { r.version_info.clone() } else { String::new() };
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

/// The configuration for `proxy`, generated once per configuration generation for every proxy
/// that looks the same to the generator (namespace, labels, address): a fleet of identical
/// sidecars costs one generation, not one each.
pub(super) fn regenerate_for(
    control: &Control,
    proxy: &ProxyInfo,
) -> Result<Arc<Resources>, crate::generate::GenerateError> {
    let generation = *control.generation.borrow();
    let key = format!("{}|{:?}|{:?}", proxy.namespace, proxy.labels, proxy.instance_ip);
    {
        let mut cache = control.cache.lock().unwrap();
        if cache.0 != generation {
            *cache = (generation, HashMap::new());
        }
        if let Some(r) = cache.1.get(&key) {
            return Ok(r.clone());
        }
    }
    let started = std::time::Instant::now();
    let r = Arc::new(crate::generate::generate_with(&control.registry(), proxy, &control.pool, false)?);
    tracing::debug!(proxy = %proxy.id, ms = started.elapsed().as_millis() as u64, "configuration generated");
    let mut cache = control.cache.lock().unwrap();
    if cache.0 == generation {
        cache.1.insert(key, r.clone());
    }
    Ok(r)
}

fn regenerate(control: &Control, s: &mut Stream1) -> Result<(), crate::generate::GenerateError> {
    let Some(p) = &s.proxy else { return Ok(()) };
    s.resources = regenerate_for(control, p)?;
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
    let res = generate(&control.registry(), &info, &control.pool).ok()?;
    let mut out = serde_json::Map::new();
    for (t, by_name) in res {
        let list: Vec<_> =
            by_name.values().map(|a| outrigger_proxy::translate::resource::to_json(&control.pool, a)).collect();
        out.insert(t.to_string(), serde_json::Value::Array(list));
    }
    Some(serde_json::Value::Object(out))
}
