//! Incremental ADS (DELTA_GRPC): per stream and type, the client's subscription and the version
//! of every resource it has; a push carries only what changed for it, and `removed_resources`.
use std::collections::{BTreeMap, HashMap, HashSet};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};

use super::ads::{Tx, ORDER};
use super::cache::Served;
use super::stream::Conn;
use crate::generate::{is_api_listener, LISTENER};

#[derive(Default)]
struct Sub {
    wildcard: bool,
    names: HashSet<String>,
    /// name → digest of the version the client has (versions are our digests in hex; anything
    /// else a client claims reads as 0, which no resource has, so it is resent).
    have: HashMap<String, u64>,
}

pub(super) async fn stream(
    mut conn: Conn,
    mut inbound: tonic::Streaming<DeltaDiscoveryRequest>,
    tx: Tx<DeltaDiscoveryResponse>,
) {
    let mut changes = conn.changes();
    let mut subs: BTreeMap<String, Sub> = BTreeMap::new();
    let mut nonce = 0u64;
    loop {
        let (types, request): (Vec<String>, _) = tokio::select! {
            msg = inbound.message() => {
                let Ok(Some(r)) = msg else { break };
                if let Err(status) = conn.identify(r.node.as_ref()) {
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                conn.reply(&r.type_url, &r.response_nonce, &r.response_nonce, r.error_detail.as_ref().map(|e| e.message.as_str()));
                let types = if subscribe(&mut subs, &r) { vec![r.type_url.clone()] } else { vec![] };
                (types, Some(r))
            }
            changed = changes.changed() => {
                if changed.is_err() { break }
                if !conn.refresh() { continue }
                (subs.keys().cloned().collect(), None)
            }
        };
        for t in ORDER.iter().filter(|t| types.iter().any(|x| x == *t)) {
            let Some(sub) = subs.get_mut(*t) else { continue };
            if let Some(resp) = diff(t, sub, &conn.resources, &mut nonce) {
                conn.delta_sent(&resp);
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        }
        if let Some(r) = request {
            conn.delta_handled(&r);
        }
    }
}

/// Takes in a request's subscription changes; returns whether its type needs a push considered.
fn subscribe(subs: &mut BTreeMap<String, Sub>, r: &DeltaDiscoveryRequest) -> bool {
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
    first || !r.resource_names_subscribe.is_empty()
}

/// What `sub` lacks of `t`, and what it has that is gone. A type the source has nothing of (not
/// even an empty set) is not answered.
fn diff(t: &str, sub: &mut Sub, resources: &Served, nonce: &mut u64) -> Option<DeltaDiscoveryResponse> {
    let all = resources.get(t)?;
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
