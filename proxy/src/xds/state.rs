//! What the ADS stream has delivered and accepted so far, and how one update is applied. This
//! part is the same for both protocol variants; `sotw.rs` and `delta.rs` turn responses into
//! [`Update`]s and outcomes into their own requests.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;

use crate::config::{self, ClusterConfig, EndpointConfig, ListenerConfig, NetworkFilter, RouteSource, RouteTable};
use crate::snapshot::Inputs;
use crate::translate::resource::{self, Resource};
use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// Per type: the last accepted version, the last nonce seen, and the names subscribed to.
#[derive(Default, Clone)]
pub struct TypeState {
    pub version: String,
    pub nonce: String,
    pub names: BTreeSet<Arc<str>>,
    /// At least one response of this type has been accepted.
    pub accepted: bool,
}

/// The accepted dynamic resources. Each map is shared (copy on write): an update copies only
/// the maps it changes, and only their entries' handles, so that it can be rolled back.
/// The large maps (clusters and endpoints, one entry per service) have shared keys too, so that
/// such a copy allocates only its table.
#[derive(Default, Clone)]
pub struct Store {
    pub listeners: Arc<BTreeMap<String, ListenerConfig>>,
    pub clusters: Arc<HashMap<Arc<str>, Arc<ClusterConfig>>>,
    pub routes: Arc<HashMap<String, Arc<RouteTable>>>,
    pub endpoints: Arc<HashMap<Arc<str>, Arc<[EndpointConfig]>>>,
}

/// Names held in many places (above all the clusters' and EDS services': store keys, configs,
/// snapshot, stats, config dump), one allocation each.
#[derive(Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(a) = self.0.get(name) {
            return a.clone();
        }
        let a: Arc<str> = name.into();
        self.0.insert(a.clone());
        a
    }

    /// The shared form of `name`: the one held, else this one (now held).
    pub fn adopt(&mut self, name: &Arc<str>) -> Arc<str> {
        if let Some(a) = self.0.get(&**name) {
            return a.clone();
        }
        self.0.insert(name.clone());
        name.clone()
    }

    /// Forgets the names that nothing else holds any more.
    pub fn prune(&mut self) {
        self.0.retain(|a| Arc::strong_count(a) > 1);
    }
}

impl Store {
    /// Removes `gone` and stores `decoded` (of type `t`); returns the names stored. A cluster or
    /// endpoint set equal to the one held keeps the held one, so that resending the same config
    /// allocates (and rebuilds) nothing.
    fn update(
        &mut self,
        t: &str,
        gone: &[String],
        decoded: Vec<(String, Resource)>,
        shared: &mut Names,
    ) -> Vec<String> {
        let mut names = Vec::with_capacity(decoded.len());
        match t {
            LISTENER => {
                let m = Arc::make_mut(&mut self.listeners);
                gone.iter().for_each(|n| drop(m.remove(n)));
                for (name, r) in decoded {
                    if let Resource::Listener(l) = r {
                        m.insert(name.clone(), l);
                    }
                    names.push(name);
                }
            }
            ROUTE => {
                let m = Arc::make_mut(&mut self.routes);
                gone.iter().for_each(|n| drop(m.remove(n)));
                for (name, r) in decoded {
                    if let Resource::Routes(table) = r {
                        m.insert(name.clone(), table);
                    }
                    names.push(name);
                }
            }
            CLUSTER => {
                let changes = decoded.iter().any(|(name, r)| match r {
                    Resource::Cluster(c) => self.clusters.get(name.as_str()).is_none_or(|old| **old != *c),
                    _ => false,
                });
                if changes || !gone.is_empty() {
                    let m = Arc::make_mut(&mut self.clusters);
                    gone.iter().for_each(|n| drop(m.remove(n.as_str())));
                    for (name, r) in decoded {
                        if let Resource::Cluster(mut c) = r {
                            if m.get(name.as_str()).is_none_or(|old| **old != c) {
                                c.name = shared.adopt(&c.name);
                                if let config::DiscoveryType::Eds(service) = &mut c.discovery {
                                    *service = shared.adopt(service);
                                }
                                m.insert(c.name.clone(), Arc::new(c));
                            }
                        }
                        names.push(name);
                    }
                } else {
                    names.extend(decoded.into_iter().map(|(name, _)| name));
                }
            }
            _ => {
                let changes = decoded.iter().any(|(name, r)| match r {
                    Resource::Endpoints(e) => self.endpoints.get(name.as_str()).is_none_or(|old| **old != **e),
                    _ => false,
                });
                if changes || !gone.is_empty() {
                    let m = Arc::make_mut(&mut self.endpoints);
                    gone.iter().for_each(|n| drop(m.remove(n.as_str())));
                    for (name, r) in decoded {
                        if let Resource::Endpoints(e) = r {
                            if m.get(name.as_str()).is_none_or(|old| **old != *e) {
                                m.insert(shared.get(&name), e.into());
                            }
                        }
                        names.push(name);
                    }
                } else {
                    names.extend(decoded.into_iter().map(|(name, _)| name));
                }
            }
        }
        names
    }
}

pub struct State {
    pub node: Node,
    pub base: config::Bootstrap,
    /// The bootstrap's clusters, shared with every snapshot built.
    pub(super) base_clusters: Vec<Arc<ClusterConfig>>,
    pub dynamic: config::DynamicConfig,
    pub types: BTreeMap<&'static str, TypeState>,
    pub store: Store,
    pub version: u64,
    pub(super) names: Names,
    /// When each RDS/EDS name was first wanted, and when the client started (LDS/CDS): the
    /// start of their `initial_fetch_timeout`.
    pub(super) wanted_since: HashMap<(&'static str, Arc<str>), std::time::Instant>,
    pub(super) started: std::time::Instant,
    /// LDS/CDS whose initial fetch timed out: initialisation went ahead without them.
    pub(super) fetch_timed_out: BTreeSet<&'static str>,
}

/// One response, whatever the protocol variant.
pub struct Update<'a> {
    pub type_url: &'static str,
    /// The version the response carries (SotW `version_info`, delta `system_version_info`).
    pub version: &'a str,
    pub nonce: &'a str,
    /// (name, version, resource); the name is given by delta responses, read from SotW ones.
    /// An accepted resource's bytes are moved into the config dump.
    pub resources: Vec<(Option<&'a str>, &'a str, &'a mut Any)>,
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
        let base_clusters = base.clusters.iter().cloned().map(Arc::new).collect();
        let mut s = State {
            node,
            base,
            base_clusters,
            dynamic,
            types: BTreeMap::new(),
            store: Store::default(),
            version: 1,
            names: Names::default(),
            wanted_since: HashMap::new(),
            started: std::time::Instant::now(),
            fetch_timed_out: BTreeSet::new(),
        };
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
        let count = u.resources.len();
        let mut decoded = Vec::with_capacity(count);
        for (given, _, any) in &u.resources {
            match resource::decode(t, any) {
                Ok((name, _)) if given.is_some_and(|g| g != name) => {
                    let msg = format!("resource named \"{}\" carries \"{name}\"", given.unwrap_or_default());
                    return self.nack(t, msg);
                }
                Ok(d) => decoded.push(d),
                Err(e) => return self.nack(t, e.to_string()),
            }
        }
        if let Err(e) = self.check_validate_clusters(&decoded) {
            return self.nack(t, e);
        }
        let decoded_at = started.elapsed();
        let previous = self.store.clone();
        let mut gone: Vec<String> = u.removed.to_vec();
        if u.replace_all {
            let listed: HashSet<&str> = decoded.iter().map(|d| d.0.as_str()).collect();
            let existing: Vec<String> = match t {
                LISTENER => self.store.listeners.keys().filter(|n| !listed.contains(n.as_str())).cloned().collect(),
                CLUSTER => {
                    self.store.clusters.keys().filter(|n| !listed.contains(&***n)).map(|n| n.to_string()).collect()
                }
                _ => vec![],
            };
            gone.extend(existing);
        }
        let names = self.store.update(t, &gone, decoded, &mut self.names);
        self.version += 1;
        // Listeners whose resource changed (not merely resent): their connections drain.
        let changed: HashSet<String> = if t == LISTENER {
            let res = dump.resources.lock().unwrap();
            let old = res.get(LISTENER);
            names
                .iter()
                .zip(&u.resources)
                .filter(|(name, (_, _, any))| {
                    old.and_then(|o| o.get(name.as_str())).is_some_and(|e| *e.resource != *any.value)
                })
                .map(|(name, _)| name.clone())
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
        drop(previous);
        let applied_at = started.elapsed();
        {
            // One timestamp and (state of the world) one version for the whole update.
            let now: Arc<str> = crate::telemetry::access_log::now_rfc3339().into();
            let update_version: Arc<str> = u.version.into();
            let mut res = dump.resources.lock().unwrap();
            let by_name = res.entry(t).or_default();
            for name in &gone {
                by_name.remove(name.as_str());
            }
            for (name, (_, version, any)) in names.into_iter().zip(u.resources) {
                let version = if version.is_empty() { update_version.clone() } else { version.into() };
                match by_name.get_mut(name.as_str()) {
                    // A resend: the bytes held stay (no churn of long-lived allocations).
                    Some(e) => {
                        if *e.resource != *any.value {
                            e.resource = std::mem::take(&mut any.value).into_boxed_slice();
                        }
                        e.version = version;
                        e.updated = now.clone();
                    }
                    None => {
                        let resource = std::mem::take(&mut any.value).into_boxed_slice();
                        let entry = super::DumpEntry { version, updated: now.clone(), resource };
                        by_name.insert(self.names.get(&name), entry);
                    }
                }
            }
        }
        self.names.prune();
        let ts = self.types.entry(t).or_default();
        ts.version = u.version.to_string();
        ts.accepted = true;
        tracing::debug!(
            type_url = t,
            resources = count,
            decode_ms = decoded_at.as_secs_f64() * 1e3,
            store_ms = (stored_at - decoded_at).as_secs_f64() * 1e3,
            apply_ms = (applied_at - stored_at).as_secs_f64() * 1e3,
            total_ms = started.elapsed().as_secs_f64() * 1e3,
            "xDS update applied"
        );
        Outcome { error: None, subs }
    }

    /// `validate_clusters: true` (default false for RDS, and only honoured when explicit for
    /// route tables inside LDS listeners, whose clusters may still be on their way over CDS):
    /// a table naming a cluster the proxy does not have is refused.
    fn check_validate_clusters(&self, decoded: &[(String, Resource)]) -> Result<(), String> {
        let known = |c: &str| self.store.clusters.contains_key(c) || self.base_clusters.iter().any(|b| &*b.name == c);
        let check = |table: &RouteTable, what: &str| match table.clusters().find(|c| !known(c)) {
            Some(c) => Err(format!("{what}: validate_clusters: route references unknown cluster \"{c}\"")),
            None => Ok(()),
        };
        for (name, r) in decoded {
            match r {
                Resource::Routes(table) if table.validate_clusters == Some(true) => {
                    check(table, &format!("route_config \"{name}\""))?
                }
                Resource::Listener(l) => {
                    for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                        if let NetworkFilter::Http(h) = &fc.filter {
                            if let RouteSource::Inline(table) = &h.routes {
                                if table.validate_clusters == Some(true) {
                                    check(table, &format!("listener \"{name}\""))?;
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn nack(&mut self, t: &'static str, error: String) -> Outcome {
        tracing::warn!(type_url = t, %error, "rejecting xDS update (NACK); the last good config stays");
        Outcome { error: Some(error), subs: vec![] }
    }

    /// Recomputes the RDS and EDS names needed by the current listeners and clusters, dropping
    /// what is no longer needed; returns the changes.
    pub fn refresh_subscriptions(&mut self) -> Vec<SubChange> {
        let mut rds: BTreeSet<&str> = BTreeSet::new();
        for l in self.base.listeners.iter().chain(self.store.listeners.values()) {
            for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                if let NetworkFilter::Http(h) = &fc.filter {
                    if let RouteSource::Rds(name) = &h.routes {
                        rds.insert(name);
                    }
                }
            }
        }
        let mut eds: BTreeSet<&str> = BTreeSet::new();
        for c in self.base.clusters.iter().chain(self.store.clusters.values().map(|c| &**c)) {
            if let config::DiscoveryType::Eds(service) = &c.discovery {
                eds.insert(service);
            }
        }
        let mut out = Vec::new();
        for (t, names) in [(ROUTE, &rds), (ENDPOINT, &eds)] {
            let ts = self.types.entry(t).or_default();
            if !ts.names.iter().map(|n| &**n).eq(names.iter().copied()) {
                let added: Vec<String> =
                    names.iter().filter(|n| !ts.names.contains(**n)).map(|n| n.to_string()).collect();
                let removed: Vec<String> =
                    ts.names.iter().filter(|n| !names.contains(&***n)).map(|n| n.to_string()).collect();
                let now = std::time::Instant::now();
                for n in &added {
                    self.wanted_since.entry((t, self.names.get(n.as_str()))).or_insert(now);
                }
                for n in &removed {
                    self.wanted_since.remove(&(t, Arc::<str>::from(n.as_str())));
                }
                out.push(SubChange { type_url: t, added, removed });
                ts.names = names.iter().map(|n| self.names.get(n)).collect();
            }
        }
        // Copy a map (its handles) only when something in it goes.
        if self.store.routes.keys().any(|k| !rds.contains(k.as_str())) {
            let keep: HashSet<String> = rds.iter().map(|n| n.to_string()).collect();
            Arc::make_mut(&mut self.store.routes).retain(|k, _| keep.contains(k));
        }
        if self.store.endpoints.keys().any(|k| !eds.contains(&**k)) {
            let keep: HashSet<String> = eds.iter().map(|n| n.to_string()).collect();
            Arc::make_mut(&mut self.store.endpoints).retain(|k, _| keep.contains(&**k));
        }
        out
    }

    /// Everything the next snapshot is built from: static resources plus accepted dynamic ones.
    pub fn inputs(&self) -> Inputs {
        let mut listeners = self.base.listeners.clone();
        listeners.extend(self.store.listeners.values().cloned());
        let mut clusters = Vec::with_capacity(self.base_clusters.len() + self.store.clusters.len());
        clusters.extend(self.base_clusters.iter().cloned());
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

    /// Whether every EDS cluster held has had its ClusterLoadAssignment (Envoy's cluster warming,
    /// which holds initialisation until then or the initial fetch timeout).
    pub fn clusters_warm(&self) -> bool {
        self.store.clusters.values().all(|c| match &c.discovery {
            config::DiscoveryType::Eds(service) => self.store.endpoints.contains_key(&**service),
            _ => true,
        })
    }

    /// Initialised (ready) once every configured wildcard type has been accepted once.
    pub fn initialized(&self) -> bool {
        let ok = |t| self.types.get(t).is_some_and(|s| s.accepted) || self.fetch_timed_out.contains(t);
        (!self.dynamic.lds || ok(LISTENER)) && (!self.dynamic.cds || ok(CLUSTER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn any(type_url: &str, json: serde_json::Value) -> Any {
        let pool = outrigger_api::descriptor_pool();
        let desc = pool.get_message_by_name(outrigger_api::type_name(type_url)).unwrap();
        let value = prost_reflect::DynamicMessage::deserialize(desc, json).unwrap().encode_to_vec();
        Any { type_url: type_url.to_string(), value }
    }

    fn cluster(name: &str) -> Any {
        any(
            CLUSTER,
            serde_json::json!({"name": name, "type": "EDS", "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": {"ads": {}}, "service_name": name}}),
        )
    }

    fn endpoints(name: &str, port: u32) -> Any {
        any(
            ENDPOINT,
            serde_json::json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": port}}}}]}]}),
        )
    }

    fn state() -> State {
        let yaml = "node: { id: n, cluster: c }\ndynamic_resources:\n  cds_config: { ads: {} }\n  ads_config: { api_type: GRPC, grpc_services: [{ envoy_grpc: { cluster_name: xds } }] }\nstatic_resources:\n  clusters:\n  - name: xds\n    connect_timeout: 1s\n    load_assignment: { cluster_name: xds, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 1 } } } }] }] }\n";
        let b =
            crate::translate::translate_bootstrap(&crate::translate::parse_bootstrap(yaml, false).unwrap()).unwrap();
        let dynamic = b.dynamic.clone().unwrap();
        State::new(Node::default(), b, dynamic)
    }

    fn update<'a>(t: &'static str, resources: &'a mut [Any], replace_all: bool) -> Update<'a> {
        Update {
            type_url: t,
            version: "v1",
            nonce: "n",
            resources: resources.iter_mut().map(|a| (None, "", a)).collect(),
            removed: &[],
            replace_all,
        }
    }

    #[test]
    fn names_are_shared_and_resent_resources_keep_what_is_held() {
        let mut s = state();
        let dump = super::super::XdsDump::default();
        let ok = |_: Inputs, _: &HashSet<String>| Ok(());
        let out = s.handle(update(CLUSTER, &mut [cluster("a"), cluster("b")], true), ok, &dump);
        assert!(out.error.is_none(), "{:?}", out.error);
        let out = s.handle(update(ENDPOINT, &mut [endpoints("a", 1), endpoints("b", 2)], false), ok, &dump);
        assert!(out.error.is_none(), "{:?}", out.error);

        // One allocation per name: store keys, the config, its EDS service, the subscription,
        // the endpoints' key and the dump's keys.
        let (key, config) = s.store.clusters.get_key_value("a").unwrap();
        assert!(Arc::ptr_eq(key, &config.name));
        let config::DiscoveryType::Eds(service) = &config.discovery else { panic!("EDS") };
        assert!(Arc::ptr_eq(key, service));
        assert!(Arc::ptr_eq(key, s.types[ENDPOINT].names.get("a").unwrap()));
        assert!(Arc::ptr_eq(key, s.store.endpoints.get_key_value("a").unwrap().0));
        {
            let res = dump.resources.lock().unwrap();
            assert!(Arc::ptr_eq(key, res[CLUSTER].get_key_value("a").unwrap().0));
            assert!(Arc::ptr_eq(key, res[ENDPOINT].get_key_value("a").unwrap().0));
        }

        // Resent unchanged: the same config, endpoints and dumped bytes stay.
        let (held, eps) = (config.clone(), s.store.endpoints["a"].clone());
        let bytes = dump.resources.lock().unwrap()[CLUSTER]["a"].resource.as_ptr();
        assert!(s.handle(update(CLUSTER, &mut [cluster("a"), cluster("b")], true), ok, &dump).error.is_none());
        assert!(s
            .handle(update(ENDPOINT, &mut [endpoints("a", 1), endpoints("b", 3)], false), ok, &dump)
            .error
            .is_none());
        assert!(Arc::ptr_eq(&held, &s.store.clusters["a"]));
        assert!(Arc::ptr_eq(&eps, &s.store.endpoints["a"]));
        assert_eq!(
            s.store.endpoints["b"][0],
            EndpointConfig::Ip { addr: ([10, 0, 0, 1], 3).into(), weight: 1, eds_unhealthy: false, placement: None }
        );
        assert_eq!(dump.resources.lock().unwrap()[CLUSTER]["a"].resource.as_ptr(), bytes);

        // A cluster gone (state of the world) takes its endpoints, subscription and dump entry.
        assert!(s.handle(update(CLUSTER, &mut [cluster("a")], true), ok, &dump).error.is_none());
        assert!(!s.store.clusters.contains_key("b") && !s.store.endpoints.contains_key("b"));
        assert!(!s.types[ENDPOINT].names.contains("b"));
        assert!(!dump.resources.lock().unwrap()[CLUSTER].contains_key("b"));

        // A failed apply restores the store.
        let fail = |_: Inputs, _: &HashSet<String>| Err("bind".to_string());
        let out = s.handle(update(CLUSTER, &mut [cluster("c")], true), fail, &dump);
        assert_eq!(out.error.as_deref(), Some("bind"));
        assert!(s.store.clusters.contains_key("a") && !s.store.clusters.contains_key("c"));
        assert!(s.types[ENDPOINT].names.contains("a") && !s.types[ENDPOINT].names.contains("c"));
    }

    fn routes(name: &str, cluster: &str, validate: Option<bool>) -> Any {
        let mut rc = serde_json::json!({"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]});
        if let Some(v) = validate {
            rc["validate_clusters"] = serde_json::json!(v);
        }
        any(ROUTE, rc)
    }

    #[test]
    fn rds_validate_clusters_true_refuses_routes_to_unknown_clusters() {
        let mut s = state();
        let dump = super::super::XdsDump::default();
        let ok = |_: Inputs, _: &HashSet<String>| Ok(());
        assert!(s.handle(update(CLUSTER, &mut [cluster("known")], true), ok, &dump).error.is_none());
        let out = s.handle(update(ROUTE, &mut [routes("r", "unknown", Some(true))], false), ok, &dump);
        let err = out.error.expect("NACK");
        assert!(err.contains("validate_clusters") && err.contains("\"unknown\""), "{err}");
        // RDS defaults to false: the same table is accepted (the route answers 503 NC).
        assert!(s.handle(update(ROUTE, &mut [routes("r", "unknown", None)], false), ok, &dump).error.is_none());
        assert!(s.handle(update(ROUTE, &mut [routes("r", "known", Some(true))], false), ok, &dump).error.is_none());
    }

    #[test]
    fn initial_fetch_timeout_ends_eds_warming_and_cds_initialisation() {
        let mut s = state();
        let start = std::time::Instant::now();
        // CDS never answered: after its 15 s default the proxy is initialised anyway.
        assert!(!s.initialized());
        assert!(s.next_fetch_deadline().is_some_and(|d| d <= start + std::time::Duration::from_secs(16)));
        assert!(!s.expire_fetches(start));
        assert!(s.expire_fetches(start + std::time::Duration::from_secs(16)));
        assert!(s.initialized());
        // An EDS cluster whose endpoints never come is used without endpoints after its timeout.
        let dump = super::super::XdsDump::default();
        let ok = |_: Inputs, _: &HashSet<String>| Ok(());
        assert!(s.handle(update(CLUSTER, &mut [cluster("a")], true), ok, &dump).error.is_none());
        assert!(!s.store.endpoints.contains_key("a"));
        let later = std::time::Instant::now() + std::time::Duration::from_secs(16);
        assert!(s.expire_fetches(later));
        assert_eq!(s.store.endpoints.get("a").map(|e| e.len()), Some(0));
        assert_eq!(s.next_fetch_deadline(), None);
        // The real endpoints replace the stand-in.
        assert!(s.handle(update(ENDPOINT, &mut [endpoints("a", 1)], false), ok, &dump).error.is_none());
        assert_eq!(s.store.endpoints.get("a").map(|e| e.len()), Some(1));
    }
}
