//! What the ADS stream has delivered and accepted so far, per resource type, and the requests
//! (ACK, NACK, subscription changes) that follow from each response.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status;

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

/// The outcome of handling one response: requests to send and, when accepted, what to apply.
pub struct Outcome {
    pub requests: Vec<DiscoveryRequest>,
    pub error: Option<String>,
}

pub fn type_key(url: &str) -> Option<&'static str> {
    [LISTENER, CLUSTER, ROUTE, ENDPOINT].into_iter().find(|t| *t == url)
}

impl State {
    pub fn new(node: Node, base: config::Bootstrap, dynamic: config::DynamicConfig) -> State {
        State { node, base, dynamic, types: BTreeMap::new(), store: Store::default(), version: 1 }
    }

    fn request(&self, type_url: &'static str, error: Option<String>, nonce: &str) -> DiscoveryRequest {
        let ts = self.types.get(type_url).cloned().unwrap_or_default();
        DiscoveryRequest {
            version_info: ts.version,
            node: Some(self.node.clone()),
            resource_names: ts.names.into_iter().collect(),
            type_url: type_url.to_string(),
            response_nonce: nonce.to_string(),
            error_detail: error.map(|message| Status { code: 3, message, details: vec![] }),
            ..Default::default()
        }
    }

    /// The first requests of a (re)connected stream: wildcard LDS/CDS, and the RDS/EDS names
    /// already known, with the versions already accepted.
    pub fn initial_requests(&mut self) -> Vec<DiscoveryRequest> {
        let mut out = Vec::new();
        if self.dynamic.cds {
            out.push(self.request(CLUSTER, None, ""));
        }
        if self.dynamic.lds {
            out.push(self.request(LISTENER, None, ""));
        }
        self.refresh_subscriptions();
        for t in [ROUTE, ENDPOINT] {
            if self.types.get(t).is_some_and(|s| !s.names.is_empty()) {
                out.push(self.request(t, None, ""));
            }
        }
        out
    }

    /// Decodes the whole response; on any error nothing changes and the response is NACKed.
    /// Otherwise the store is updated and `apply` is asked to publish it; its error NACKs too.
    pub fn handle(
        &mut self,
        resp: &DiscoveryResponse,
        apply: impl FnOnce(Inputs, &HashSet<String>) -> Result<(), String>,
        dump: &super::XdsDump,
    ) -> Outcome {
        let Some(t) = type_key(&resp.type_url) else {
            return Outcome { requests: vec![], error: Some(format!("unsupported type {}", resp.type_url)) };
        };
        self.types.entry(t).or_default().nonce = resp.nonce.clone();
        let pool = crate::translate::descriptor_pool();
        let mut decoded = Vec::with_capacity(resp.resources.len());
        for any in &resp.resources {
            match resource::decode(&pool, t, any) {
                Ok((name, r)) => decoded.push((name, r, any.clone())),
                Err(e) => return self.nack(t, &resp.nonce, e.to_string()),
            }
        }
        drop(pool);
        let previous = self.store.clone();
        match t {
            LISTENER => self.store.listeners.clear(),
            CLUSTER => self.store.clusters.clear(),
            _ => {}
        }
        for (name, r, _) in &decoded {
            match r {
                Resource::Listener(l) => {
                    self.store.listeners.insert(name.clone(), l.clone());
                }
                Resource::Cluster(c) => {
                    self.store.clusters.insert(name.clone(), c.clone());
                }
                Resource::Routes(table) => {
                    self.store.routes.insert(name.clone(), table.clone());
                }
                Resource::Endpoints(eps) => {
                    self.store.endpoints.insert(name.clone(), eps.clone());
                }
            }
        }
        self.version += 1;
        // Listeners whose resource changed (not merely resent): their connections drain.
        let changed: HashSet<String> = if t == LISTENER {
            let res = dump.resources.lock().unwrap();
            let old = res.get(LISTENER);
            decoded
                .iter()
                .filter(|(name, _, any)| old.and_then(|o| o.get(name)).is_some_and(|e| e.resource.value != any.value))
                .map(|(name, _, _)| name.clone())
                .collect()
        } else {
            HashSet::new()
        };
        if let Err(e) = apply(self.inputs(), &changed) {
            self.store = previous;
            return self.nack(t, &resp.nonce, e);
        }
        {
            let now = crate::telemetry::access_log::now_rfc3339();
            let mut res = dump.resources.lock().unwrap();
            let by_name = res.entry(t.to_string()).or_default();
            if matches!(t, LISTENER | CLUSTER) {
                by_name.clear();
            }
            for (name, _, any) in decoded {
                let entry =
                    super::DumpEntry { version: resp.version_info.clone(), updated: now.clone(), resource: any };
                by_name.insert(name, entry);
            }
        }
        let ts = self.types.entry(t).or_default();
        ts.version = resp.version_info.clone();
        ts.accepted = true;
        let mut requests = vec![self.request(t, None, &resp.nonce)];
        // New listeners or clusters may need routes or endpoints not subscribed to yet (or no
        // longer need some): the subscription follows.
        for (sub, changed) in self.refresh_subscriptions() {
            if changed {
                let nonce = self.types.get(sub).map(|s| s.nonce.clone()).unwrap_or_default();
                requests.push(self.request(sub, None, &nonce));
            }
        }
        Outcome { requests, error: None }
    }

    fn nack(&mut self, t: &'static str, nonce: &str, error: String) -> Outcome {
        tracing::warn!(type_url = t, %error, "rejecting xDS update (NACK); the last good config stays");
        Outcome { requests: vec![self.request(t, Some(error.clone()), nonce)], error: Some(error) }
    }

    /// Recomputes the RDS and EDS names needed by the current listeners and clusters.
    fn refresh_subscriptions(&mut self) -> Vec<(&'static str, bool)> {
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
            let changed = ts.names != names;
            ts.names = names;
            out.push((t, changed));
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

    /// Initialised (ready) once every configured wildcard type has been accepted once.
    pub fn initialized(&self) -> bool {
        let ok = |t| self.types.get(t).is_some_and(|s| s.accepted);
        (!self.dynamic.lds || ok(LISTENER)) && (!self.dynamic.cds || ok(CLUSTER))
    }
}
