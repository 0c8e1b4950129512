//! What the ADS stream has delivered and accepted so far, and how one update is applied. This
//! part is the same for both protocol variants; `sotw.rs` and `delta.rs` turn responses into
//! [`Update`]s and outcomes into their own requests.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;

use crate::config::{self, ClusterConfig, EndpointConfig, ListenerConfig, NetworkFilter, RouteSource, RouteTable};
use crate::snapshot::Inputs;
use crate::translate::resource::{self, Resource, CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// Per type: the last accepted version, the last nonce seen, and the names subscribed to.
#[derive(Default, Clone)]
pub struct TypeState {
    pub version: String,
    pub nonce: String,
    pub names: BTreeSet<String>,
    /// At least one response of this type has been accepted.
    pub accepted: bool,
}

#[derive(Default, Clone)]
pub struct Store {
    pub listeners: BTreeMap<String, ListenerConfig>,
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub routes: HashMap<String, Arc<RouteTable>>,
    pub endpoints: HashMap<String, Vec<EndpointConfig>>,
}

pub struct State {
    pub node: Node,
    pub base: config::Bootstrap,
    pub dynamic: config::DynamicConfig,
    pub types: BTreeMap<&'static str, TypeState>,
    pub store: Store,
    pub version: u64,
}

/// One response, whatever the protocol variant.
pub struct Update<'a> {
    pub type_url: &'static str,
    /// The version the response carries (SotW `version_info`, delta `system_version_info`).
    pub version: &'a str,
    pub nonce: &'a str,
    /// (name, version, resource); the name is given by delta responses, read from SotW ones.
    pub resources: Vec<(Option<&'a str>, &'a str, &'a Any)>,
    pub removed: &'a [String],
    /// State of the world for LDS/CDS: resources not listed are gone.
    pub replace_all: bool,
}

/// A subscription change that follows from an accepted update.
pub struct SubChange {
    pub type_url: &'static str,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

pub struct Outcome {
    pub error: Option<String>,
    pub subs: Vec<SubChange>,
}

pub fn type_key(url: &str) -> Option<&'static str> {
    [LISTENER, CLUSTER, ROUTE, ENDPOINT].into_iter().find(|t| *t == url)
}

impl State {
    pub fn new(node: Node, base: config::Bootstrap, dynamic: config::DynamicConfig) -> State {
        let mut s = State { node, base, dynamic, types: BTreeMap::new(), store: Store::default(), version: 1 };
        s.refresh_subscriptions();
        s
    }

    /// Decodes the whole update; on any error nothing changes (NACK). Otherwise the store is
    /// updated and `apply` publishes it; its error NACKs too and restores the store.
    pub fn handle(
        &mut self,
        u: Update<'_>,
        apply: impl FnOnce(Inputs, &HashSet<String>) -> Result<(), String>,
        dump: &super::XdsDump,
    ) -> Outcome {
        let t = u.type_url;
        let started = std::time::Instant::now();
        self.types.entry(t).or_default().nonce = u.nonce.to_string();
        let mut decoded = Vec::with_capacity(u.resources.len());
        for (given, version, any) in &u.resources {
            match resource::decode(t, any) {
                Ok((name, _)) if given.is_some_and(|g| g != name) => {
                    let msg = format!("resource named \"{}\" carries \"{name}\"", given.unwrap_or_default());
                    return self.nack(t, msg);
                }
                Ok((name, r)) => decoded.push((name, r, *version, (*any).clone())),
                Err(e) => return self.nack(t, e.to_string()),
            }
        }
        let decoded_at = started.elapsed();
        let previous = self.store.clone();
        let mut gone: Vec<String> = u.removed.to_vec();
        if u.replace_all {
            let listed: HashSet<&str> = decoded.iter().map(|d| d.0.as_str()).collect();
            let existing: Vec<String> = match t {
                LISTENER => self.store.listeners.keys().cloned().collect(),
                CLUSTER => self.store.clusters.keys().cloned().collect(),
                _ => vec![],
            };
            gone.extend(existing.into_iter().filter(|n| !listed.contains(n.as_str())));
        }
        for name in &gone {
            match t {
                LISTENER => drop(self.store.listeners.remove(name)),
                CLUSTER => drop(self.store.clusters.remove(name)),
                ROUTE => drop(self.store.routes.remove(name)),
                _ => drop(self.store.endpoints.remove(name)),
            }
        }
        for (name, r, _, _) in &decoded {
            match r {
                Resource::Listener(l) => drop(self.store.listeners.insert(name.clone(), l.clone())),
                Resource::Cluster(c) => drop(self.store.clusters.insert(name.clone(), c.clone())),
                Resource::Routes(table) => drop(self.store.routes.insert(name.clone(), table.clone())),
                Resource::Endpoints(eps) => drop(self.store.endpoints.insert(name.clone(), eps.clone())),
            }
        }
        self.version += 1;
        // Listeners whose resource changed (not merely resent): their connections drain.
        let changed: HashSet<String> = if t == LISTENER {
            let res = dump.resources.lock().unwrap();
            let old = res.get(LISTENER);
            decoded
                .iter()
                .filter(|(name, _, _, any)| {
                    old.and_then(|o| o.get(name)).is_some_and(|e| e.resource.value != any.value)
                })
                .map(|(name, _, _, _)| name.clone())
                .collect()
        } else {
            HashSet::new()
        };
        let subs = self.refresh_subscriptions();
        let stored_at = started.elapsed();
        if let Err(e) = apply(self.inputs(), &changed) {
            self.store = previous;
            self.refresh_subscriptions();
            return self.nack(t, e);
        }
        let applied_at = started.elapsed();
        {
            let now = crate::telemetry::access_log::now_rfc3339();
            let mut res = dump.resources.lock().unwrap();
            let by_name = res.entry(t.to_string()).or_default();
            for name in &gone {
                by_name.remove(name);
            }
            for (name, _, version, any) in decoded {
                let version = if version.is_empty() { u.version } else { version };
                let entry = super::DumpEntry { version: version.to_string(), updated: now.clone(), resource: any };
                by_name.insert(name, entry);
            }
        }
        let ts = self.types.entry(t).or_default();
        ts.version = u.version.to_string();
        ts.accepted = true;
        tracing::debug!(
            type_url = t,
            resources = u.resources.len(),
            decode_ms = decoded_at.as_secs_f64() * 1e3,
            store_ms = (stored_at - decoded_at).as_secs_f64() * 1e3,
            apply_ms = (applied_at - stored_at).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "xDS update applied"
        );
        Outcome { error: None, subs }
    }

    fn nack(&mut self, t: &'static str, error: String) -> Outcome {
        tracing::warn!(type_url = t, %error, "rejecting xDS update (NACK); the last good config stays");
        Outcome { error: Some(error), subs: vec![] }
    }

    /// Recomputes the RDS and EDS names needed by the current listeners and clusters, dropping
    /// what is no longer needed; returns the changes.
    pub fn refresh_subscriptions(&mut self) -> Vec<SubChange> {
        let mut rds = BTreeSet::new();
        for l in self.base.listeners.iter().chain(self.store.listeners.values()) {
            for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                if let NetworkFilter::Http(h) = &fc.filter {
                    if let RouteSource::Rds(name) = &h.routes {
                        rds.insert(name.clone());
                    }
                }
            }
        }
        let mut eds = BTreeSet::new();
        for c in self.base.clusters.iter().chain(self.store.clusters.values()) {
            if let config::DiscoveryType::Eds(service) = &c.discovery {
                eds.insert(service.clone());
            }
        }
        self.store.routes.retain(|k, _| rds.contains(k));
        self.store.endpoints.retain(|k, _| eds.contains(k));
        let mut out = Vec::new();
        for (t, names) in [(ROUTE, rds), (ENDPOINT, eds)] {
            let ts = self.types.entry(t).or_default();
            if ts.names != names {
                let added = names.difference(&ts.names).cloned().collect();
                let removed = ts.names.difference(&names).cloned().collect();
                out.push(SubChange { type_url: t, added, removed });
                ts.names = names;
            }
        }
        out
    }

    /// Everything the next snapshot is built from: static resources plus accepted dynamic ones.
    pub fn inputs(&self) -> Inputs {
        let mut listeners = self.base.listeners.clone();
        listeners.extend(self.store.listeners.values().cloned());
        let mut clusters = self.base.clusters.clone();
        clusters.extend(self.store.clusters.values().cloned());
        Inputs {
            version: self.version,
            node_id: self.base.node_id.clone(),
            node_cluster: self.base.node_cluster.clone(),
            listeners,
            clusters,
            routes: self.store.routes.clone(),
            endpoints: self.store.endpoints.clone(),
            source: self.base.source.clone(),
        }
    }

    /// The wildcard types this proxy asks for, and the named ones it currently needs.
    pub fn wanted_types(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.dynamic.cds {
            out.push(CLUSTER);
        }
        if self.dynamic.lds {
            out.push(LISTENER);
        }
        for t in [ROUTE, ENDPOINT] {
            if self.types.get(t).is_some_and(|s| !s.names.is_empty()) {
                out.push(t);
            }
        }
        out
    }

    /// Initialised (ready) once every configured wildcard type has been accepted once.
    pub fn initialized(&self) -> bool {
        let ok = |t| self.types.get(t).is_some_and(|s| s.accepted);
        (!self.dynamic.lds || ok(LISTENER)) && (!self.dynamic.cds || ok(CLUSTER))
    }
}
