//! A test-only ADS server (state of the world): the test sets the resources of each type as
//! proto3 JSON; every connected proxy gets them pushed, and every request the proxy sends (ACKs,
//! NACKs, subscriptions) is recorded for assertions.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use prost_reflect::DynamicMessage;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::backend::{run, tokio_stream_shim, Runner};

pub use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// A type's current version and its (name, resource) list.
type Versioned = (u64, Vec<(String, Any)>);

#[derive(Default)]
struct Inner {
    /// type URL → (version, [(name, resource)]).
    resources: Mutex<HashMap<String, Versioned>>,
    requests: Mutex<Vec<DiscoveryRequest>>,
    delta_requests: Mutex<Vec<DeltaDiscoveryRequest>>,
    streams: Mutex<usize>,
}

pub struct AdsServer {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    changed: watch::Sender<u64>,
    _runner: Runner,
}

/// Proto3 JSON of `type_url` → `Any`, through the proxy's own descriptor subset.
pub fn any(type_url: &str, json: &Value) -> Any {
    let pool = outrigger_api::descriptor_pool();
    let desc = pool.get_message_by_name(outrigger_api::type_name(type_url)).expect("known type");
    let msg = DynamicMessage::deserialize(desc, json.clone()).unwrap_or_else(|e| panic!("{type_url}: {e}: {json}"));
    Any { type_url: type_url.to_string(), value: prost::Message::encode_to_vec(&msg) }
}

impl AdsServer {
    pub fn start() -> AdsServer {
        AdsServer::start_on("127.0.0.1:0".parse().unwrap(), Arc::default())
    }

    /// A fresh control plane on a given address (None while the port cannot be bound yet).
    pub fn try_start_on(addr: SocketAddr) -> Option<AdsServer> {
        std::net::TcpListener::bind(addr).ok()?;
        Some(AdsServer::start_on(addr, Arc::default()))
    }

    fn start_on(addr: SocketAddr, inner: Arc<Inner>) -> AdsServer {
        let (changed, rx) = watch::channel(0u64);
        let svc = Svc { inner: inner.clone(), changed: rx };
        let (addr, runner) = run(addr, move |l| async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(svc))
                .serve_with_incoming(tokio_stream_shim::incoming(l))
                .await;
        });
        AdsServer { addr, inner, changed, _runner: runner }
    }

    /// Replaces every resource of `type_url` (JSON objects with a `name`/`cluster_name`) and pushes.
    pub fn set(&self, type_url: &str, resources: Vec<Value>) {
        let list = resources
            .iter()
            .map(|r| {
                let name = r["name"].as_str().or(r["cluster_name"].as_str()).unwrap_or_default().to_string();
                (name, any(type_url, r))
            })
            .collect();
        self.set_raw(type_url, list);
    }

    /// As `set`, with resources already encoded (for deliberately odd ones).
    pub fn set_raw(&self, type_url: &str, list: Vec<(String, Any)>) {
        {
            let mut res = self.inner.resources.lock().unwrap();
            let entry = res.entry(type_url.to_string()).or_default();
            entry.0 += 1;
            entry.1 = list;
        }
        self.changed.send_modify(|g| *g += 1);
    }

    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        self.inner.requests.lock().unwrap().clone()
    }

    pub fn delta_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        self.inner.delta_requests.lock().unwrap().clone()
    }

    /// Streams opened so far (a reconnecting proxy opens another).
    pub fn streams(&self) -> usize {
        *self.inner.streams.lock().unwrap()
    }
}

struct Svc {
    inner: Arc<Inner>,
    changed: watch::Receiver<u64>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Svc {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let inner = self.inner.clone();
        let mut changed = self.changed.clone();
        *inner.streams.lock().unwrap() += 1;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            // type → (subscribed names, version last sent)
            let mut subs: HashMap<String, (Vec<String>, u64)> = HashMap::new();
            let mut nonce = 0u64;
            let send = |t: &str, names: &[String], nonce: &mut u64| -> Option<(DiscoveryResponse, u64)> {
                let res = inner.resources.lock().unwrap();
                let (version, list) = res.get(t)?;
                *nonce += 1;
                let resources = list
                    .iter()
                    .filter(|(n, _)| names.is_empty() || names.contains(n))
                    .map(|(_, a)| a.clone())
                    .collect();
                Some((
                    DiscoveryResponse {
                        version_info: version.to_string(),
                        resources,
                        type_url: t.to_string(),
                        nonce: nonce.to_string(),
                        ..Default::default()
                    },
                    *version,
                ))
            };
            loop {
                tokio::select! {
                    msg = inbound.message() => {
                        let Ok(Some(r)) = msg else { return };
                        inner.requests.lock().unwrap().push(r.clone());
                        let current = inner.resources.lock().unwrap().get(&r.type_url).map(|e| e.0);
                        let entry = subs.entry(r.type_url.clone()).or_insert((r.resource_names.clone(), 0));
                        let names_changed = entry.0 != r.resource_names;
                        entry.0 = r.resource_names.clone();
                        if names_changed || current.is_some_and(|v| v != entry.1) {
                            if let Some((resp, v)) = send(&r.type_url, &entry.0, &mut nonce) {
                                entry.1 = v;
                                if tx.send(Ok(resp)).await.is_err() { return }
                            }
                        }
                    }
                    r = changed.changed() => {
                        if r.is_err() { return }
                        let types: Vec<String> = subs.keys().cloned().collect();
                        for t in types {
                            let current = inner.resources.lock().unwrap().get(&t).map(|e| e.0);
                            let entry = subs.get_mut(&t).unwrap();
                            if current.is_some_and(|v| v != entry.1) {
                                if let Some((resp, v)) = send(&t, &entry.0, &mut nonce) {
                                    entry.1 = v;
                                    if tx.send(Ok(resp)).await.is_err() { return }
                                }
                            }
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let mut inbound = req.into_inner();
        let inner = self.inner.clone();
        let mut changed = self.changed.clone();
        *inner.streams.lock().unwrap() += 1;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut subs: HashMap<String, DeltaSub> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                let types: Vec<String> = tokio::select! {
                    msg = inbound.message() => {
                        let Ok(Some(r)) = msg else { return };
                        inner.delta_requests.lock().unwrap().push(r.clone());
                        let first = !subs.contains_key(&r.type_url);
                        let sub = subs.entry(r.type_url.clone()).or_default();
                        if first {
                            sub.wildcard = r.resource_names_subscribe.is_empty()
                                || r.resource_names_subscribe.iter().any(|n| n == "*");
                            sub.sent = r.initial_resource_versions.clone();
                        }
                        sub.names.extend(r.resource_names_subscribe.iter().filter(|n| *n != "*").cloned());
                        for n in &r.resource_names_unsubscribe {
                            sub.names.remove(n);
                            sub.sent.remove(n);
                        }
                        vec![r.type_url.clone()]
                    }
                    r = changed.changed() => {
                        if r.is_err() { return }
                        subs.keys().cloned().collect()
                    }
                };
                for t in types {
                    let sub = subs.get_mut(&t).unwrap();
                    if let Some(resp) = delta_diff(&inner, &t, sub, &mut nonce) {
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// One delta stream's subscription to a type, and the resource versions it has been sent.
#[derive(Default)]
struct DeltaSub {
    wildcard: bool,
    names: std::collections::HashSet<String>,
    sent: HashMap<String, String>,
}

/// What changed for `sub` since it was last sent: new or changed resources, and removals.
fn delta_diff(inner: &Inner, t: &str, sub: &mut DeltaSub, nonce: &mut u64) -> Option<DeltaDiscoveryResponse> {
    use envoy_types::pb::envoy::service::discovery::v3::Resource;
    let res = inner.resources.lock().unwrap();
    let (version, list) = res.get(t).cloned().unwrap_or_default();
    let in_scope = |n: &str| sub.wildcard || sub.names.contains(n);
    let mut resources = Vec::new();
    for (name, any) in list.iter().filter(|(n, _)| in_scope(n)) {
        // A resource's version is a digest of its bytes: resending an unchanged one is skipped.
        let v = format!(
            "{:x}",
            any.value.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
        );
        if sub.sent.get(name) != Some(&v) {
            sub.sent.insert(name.clone(), v.clone());
            resources.push(Resource {
                name: name.clone(),
                version: v,
                resource: Some(any.clone()),
                ..Default::default()
            });
        }
    }
    let present: std::collections::HashSet<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    let removed: Vec<String> = sub.sent.keys().filter(|n| !present.contains(n.as_str())).cloned().collect();
    for n in &removed {
        sub.sent.remove(n);
    }
    if resources.is_empty() && removed.is_empty() {
        return None;
    }
    *nonce += 1;
    Some(DeltaDiscoveryResponse {
        system_version_info: version.to_string(),
        resources,
        type_url: t.to_string(),
        removed_resources: removed,
        nonce: nonce.to_string(),
        ..Default::default()
    })
}
