//! Generated configurations, shared by every stream: one per proxy class (proxies that look the
//! same to the generator) and registry generation. A fleet of identical sidecars costs one
//! generation, and an endpoint-only change patches the cached configurations in place instead of
//! regenerating them.
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::sync::{Arc, OnceLock};

use envoy_types::pb::google::protobuf::Any;

use crate::generate::{ProxyInfo, Resources, ENDPOINT};
use crate::istio::Registry;

/// One generated resource and a digest of it (name and bytes), computed once: streams compare
/// digests to decide what a proxy lacks.
#[derive(Debug)]
pub struct Res {
    pub any: Any,
    pub hash: u64,
}

/// A proxy's configuration: type URL → name → resource. The per-type maps are shared so that
/// patching one type copies only that type's map.
pub type Served = BTreeMap<&'static str, Arc<BTreeMap<String, Arc<Res>>>>;

type Cell = Arc<OnceLock<Result<Arc<Served>, String>>>;

pub struct Cache {
    pub generation: u64,
    pub registry: Arc<Registry>,
    classes: HashMap<String, Cell>,
}

pub fn digest(name: &str, any: &Any) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    h.write(name.as_bytes());
    h.write(&any.value);
    h.finish()
}

fn served(res: Resources) -> Served {
    res.into_iter()
        .map(|(t, by)| {
            let by = by
                .into_iter()
                .map(|(n, any)| {
                    let hash = digest(&n, &any);
                    (n, Arc::new(Res { any, hash }))
                })
                .collect();
            (t, Arc::new(by))
        })
        .collect()
}

fn class_key(p: &ProxyInfo) -> String {
    format!("{}|{:?}|{:?}|{}", p.namespace, p.labels, p.instance_ip, p.proxyless)
}

impl Cache {
    pub fn new(registry: Registry) -> Cache {
        Cache { generation: 1, registry: Arc::new(registry), classes: HashMap::new() }
    }

    /// A new registry that changes more than endpoints: everything is generated afresh.
    pub fn replace(&mut self, registry: Registry) {
        self.generation += 1;
        self.registry = Arc::new(registry);
        self.classes.clear();
    }

    /// A new registry whose only change is the given ClusterLoadAssignments: every cached
    /// configuration that has one of them gets the new one.
    pub fn patch_endpoints(&mut self, registry: Registry, assignments: &BTreeMap<String, Any>) {
        let patched: Vec<(String, Arc<Res>)> = assignments
            .iter()
            .map(|(n, a)| (n.clone(), Arc::new(Res { any: a.clone(), hash: digest(n, a) })))
            .collect();
        let mut classes = HashMap::new();
        for (key, cell) in &self.classes {
            let Some(Ok(served)) = cell.get() else { continue };
            let mut s = (**served).clone();
            if let Some(eds) = s.get_mut(ENDPOINT) {
                let eds = Arc::make_mut(eds);
                for (n, r) in &patched {
                    if let Some(slot) = eds.get_mut(n) {
                        *slot = r.clone();
                    }
                }
            }
            classes.insert(key.clone(), Arc::new(OnceLock::from(Ok(Arc::new(s)))));
        }
        self.generation += 1;
        self.registry = Arc::new(registry);
        self.classes = classes;
    }
}

/// The control plane's source for its ADS streams: the configurations generated from the
/// registry in force.
pub struct CacheSource {
    pub cache: std::sync::Mutex<Cache>,
    /// Follows the cache's generation; streams look at the cache again when it moves.
    pub generation: tokio::sync::watch::Sender<u64>,
}

impl super::stream::Source for CacheSource {
    fn served_for(&self, proxy: &ProxyInfo) -> Result<Arc<Served>, String> {
        served_for(&self.cache, proxy)
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The configuration for `proxy` at the current generation, generated at most once per class
/// (streams of one class that ask together wait for the same generation).
pub fn served_for(cache: &std::sync::Mutex<Cache>, proxy: &ProxyInfo) -> Result<Arc<Served>, String> {
    let (registry, cell) = {
        let mut c = cache.lock().unwrap();
        let cell = c.classes.entry(class_key(proxy)).or_default().clone();
        (c.registry.clone(), cell)
    };
    cell.get_or_init(|| {
        let started = std::time::Instant::now();
        let r = crate::generate::generate_with(&registry, proxy, false).map(|r| Arc::new(served(r)));
        tracing::debug!(proxy = %proxy.id, ms = started.elapsed().as_millis() as u64, "configuration generated");
        r.map_err(|e| e.to_string())
    })
    .clone()
}

/// The ClusterLoadAssignments of the given ServiceEntries (indices into `reg`), by name, as a
/// full generation yields them (the generator's own per-service code path).
pub fn load_assignments(reg: &Registry, services: &[usize]) -> BTreeMap<String, Any> {
    services
        .iter()
        .flat_map(|&i| {
            let (meta, se) = &reg.service_entries[i];
            crate::generate::load_assignments(reg, meta, se)
        })
        .collect()
}
