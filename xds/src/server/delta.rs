//! Incremental ADS (DELTA_GRPC): per stream and type, the client's subscription and the version
//! of every resource it has; a push carries only what changed for it, and `removed_resources`.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::ads::{proxy_info, ORDER};
use super::cache::{served_for, Served};
use super::{Control, ProxyStatus};
use crate::generate::{is_api_listener, ProxyInfo, LISTENER};

#[derive(Default)]
struct Sub {
    wildcard: bool,
    names: HashSet<String>,
    /// name → version the client has.
    /// name → digest of the version the client has (versions are our digests in hex; anything
    /// else a client claims reads as 0, which no resource has, so it is resent).
    have: HashMap<String, u64>,
}

type Out = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

pub fn stream(control: Arc<Control>, mut inbound: tonic::Streaming<DeltaDiscoveryRequest>) -> Out {
    let (tx, rx) = mpsc::channel(16);
    let conn = control.next_conn.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        control.metrics.connected.inc();
        let mut gen = control.generation.subscribe();
        let mut proxy: Option<ProxyInfo> = None;
        let mut resources: Arc<Served> = Arc::default();
        let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
        let mut nonce = 0u64;
        loop {
            let types: Vec<String> = tokio::select! {
                msg = inbound.message() => {
                    let Ok(Some(r)) = msg else { break };
                    if proxy.is_none() {
                        let Some(node) = r.node.as_ref() else {
                            let _ = tx.send(Err(tonic::Status::invalid_argument("the first request must carry the node"))).await;
                            break;
                        };
                        let info = proxy_info(node);
                        control.proxies.lock().unwrap().insert(
                            conn,
                            ProxyStatus { id: info.id.clone(), namespace: info.namespace.clone(), info: info.clone(), ..Default::default() },
                        );
                        match served_for(&control.cache, &info) {
                            Ok(res) => resources = res,
                            Err(e) => tracing::error!(error = %e, "cannot generate configuration for a proxy"),
                        }
                        proxy = Some(info);
                    }
                    record(&control, conn, &r);
                    let first = !subs.contains_key(&r.type_url);
                    let sub = subs.entry(r.type_url.clone()).or_default();
                    if first {
                        sub.wildcard = r.resource_names_subscribe.is_empty() || r.resource_names_subscribe.iter().any(|n| n == "*");
                        sub.have = r
                            .initial_resource_versions
                            .iter()
                            .map(|(n, v)| (n.clone(), u64::from_str_radix(v, 16).unwrap_or(0)))
                            .collect();
                    }
                    sub.names.extend(r.resource_names_subscribe.iter().filter(|n| *n != "*").cloned());
                    for n in &r.resource_names_unsubscribe {
                        sub.names.remove(n);
                        sub.have.remove(n);
                    }
                    if first || !r.resource_names_subscribe.is_empty() { vec![r.type_url.clone()] } else { vec![] }
                }
                changed = gen.changed() => {
                    if changed.is_err() { break }
                    let start = std::time::Instant::now();
                    let Some(p) = &proxy else { continue };
                    match served_for(&control.cache, p) {
                        Ok(res) => resources = res,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot generate configuration for a proxy");
                            continue;
                        }
                    }
                    control.metrics.push_time.observe(start.elapsed().as_secs_f64());
                    subs.keys().cloned().collect()
                }
            };
            for t in ORDER.iter().filter(|t| types.iter().any(|x| x == *t)) {
                let Some(sub) = subs.get_mut(*t) else { continue };
                if let Some(resp) = diff(t, sub, &resources, &mut nonce) {
                    control.metrics.pushes.inc();
                    if let Some(p) = control.proxies.lock().unwrap().get_mut(&conn) {
                        p.sent.insert(t.to_string(), resp.system_version_info.clone());
                    }
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
            }
        }
        control.proxies.lock().unwrap().remove(&conn);
        control.metrics.connected.dec();
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

fn diff(t: &str, sub: &mut Sub, resources: &Served, nonce: &mut u64) -> Option<DeltaDiscoveryResponse> {
    let empty = BTreeMap::new();
    let all = resources.get(t).map(|m| &**m).unwrap_or(&empty);
    let in_scope = |n: &str| match sub.wildcard {
        true => !(t == LISTENER && is_api_listener(n)),
        false => sub.names.contains(n),
    };
    let mut out = Vec::new();
    for (name, r) in all.iter().filter(|(n, _)| in_scope(n)) {
        if sub.have.get(name) != Some(&r.hash) {
            sub.have.insert(name.clone(), r.hash);
            let version = format!("{:016x}", r.hash);
            out.push(Resource { name: name.clone(), version, resource: Some(r.any.clone()), ..Default::default() });
        }
    }
    let removed: Vec<String> = sub.have.keys().filter(|n| !all.contains_key(*n) || !in_scope(n)).cloned().collect();
    for n in &removed {
        sub.have.remove(n);
    }
    if out.is_empty() && removed.is_empty() {
        return None;
    }
    *nonce += 1;
    Some(DeltaDiscoveryResponse {
        system_version_info: nonce.to_string(),
        resources: out,
        type_url: t.to_string(),
        removed_resources: removed,
        nonce: nonce.to_string(),
        ..Default::default()
    })
}

/// Delta ACKs carry no version: the nonce answered stands for it.
fn record(control: &Control, conn: u64, r: &DeltaDiscoveryRequest) {
    if !r.response_nonce.is_empty() {
        control.record_reply(conn, &r.type_url, &r.response_nonce, r.error_detail.as_ref().map(|e| e.message.as_str()));
    }
}
