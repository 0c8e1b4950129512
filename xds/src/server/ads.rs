//! The ADS server (state of the world): each stream learns its proxy from the node, gets the
//! configuration its [`Source`](super::stream::Source) has for that proxy, and is pushed again
//! whenever the source moves — only the types whose content changed for it. Versions are per
//! proxy and per type (a digest of what was sent), and every ACK and NACK is recorded for
//! `/debug/syncz`.
use std::collections::HashMap;
use std::hash::Hasher;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::cache::{Res, Served};
use super::stream::{Conn, Hub};
use super::Control;
use crate::generate::{generate, CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// The ADS service over a hub: the control plane's, or a test's.
pub struct Ads {
    pub hub: Arc<Hub>,
}

type Out<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

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

#[derive(Default)]
struct Subs {
    by_type: HashMap<String, Sub>,
    nonce: u64,
}

impl Subs {
    /// Takes in a request; returns whether its type needs a response considered.
    fn update(&mut self, r: &DiscoveryRequest) -> bool {
        let entry = self.by_type.entry(r.type_url.clone()).or_default();
        let names_changed = entry.names != r.resource_names;
        entry.names = r.resource_names.clone();
        if r.response_nonce.is_empty() {
            // A new stream: the client has what its version says (a reconnect that is up to
            // date gets nothing), and we know nothing it holds.
            entry.version = r.version_info.clone();
            entry.sent.clear();
            true
        } else if names_changed {
            // Names it no longer asks for are forgotten: asked again, resent.
            let names: std::collections::HashSet<&String> = entry.names.iter().collect();
            entry.sent.retain(|n, _| names.is_empty() || names.contains(n));
            entry.version.clear();
            true
        } else {
            false
        }
    }

    /// The response `t` needs, if its content changed for this client. Listeners and clusters
    /// are always the complete set (the protocol's rule for them); routes and endpoints carry
    /// only what the client lacks, as the protocol allows for them (an endpoint change of one
    /// service is one resource, not the whole registry). A type the source has nothing of
    /// (not even an empty set) is not answered.
    fn response(&mut self, t: &str, resources: &Served) -> Option<DiscoveryResponse> {
        let sub = self.by_type.get_mut(t)?;
        let all = resources.get(t)?;
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
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(sotw(Conn::open(self.hub.clone()), req.into_inner(), tx));
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(super::delta::stream(Conn::open(self.hub.clone()), req.into_inner(), tx));
        Ok(tonic::Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

pub(super) type Tx<T> = mpsc::Sender<Result<T, tonic::Status>>;

async fn sotw(mut conn: Conn, mut inbound: tonic::Streaming<DiscoveryRequest>, tx: Tx<DiscoveryResponse>) {
    let mut changes = conn.changes();
    let mut subs = Subs::default();
    loop {
        let (types, request): (Vec<&str>, _) = tokio::select! {
            msg = inbound.message() => {
                let Ok(Some(r)) = msg else { break };
                if let Err(status) = conn.identify(r.node.as_ref()) {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                conn.reply(&r.type_url, &r.response_nonce, &r.version_info, r.error_detail.as_ref().map(|e| e.message.as_str()));
                let types = if subs.update(&r) { ORDER.iter().copied().filter(|t| *t == r.type_url).collect() } else { vec![] };
                (types, Some(r))
            }
            changed = changes.changed() => {
                if changed.is_err() { break }
                if !conn.refresh() { continue }
                (ORDER.to_vec(), None)
            }
        };
        for t in types {
            if let Some(resp) = subs.response(t, &conn.resources) {
                conn.sent(&resp);
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        }
        if let Some(r) = request {
            conn.handled(&r);
        }
    }
}

/// The resources a connected proxy would get now, for `/debug/config_dump?proxyID=`.
pub fn dump_for(control: &Control, proxy_id: &str) -> Option<serde_json::Value> {
    let info = {
        let proxies = control.hub.proxies.lock().unwrap();
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
