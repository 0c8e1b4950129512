//! The live configuration: one immutable `Snapshot`, swapped atomically. A connection loads it
//! once and keeps it, so an update never changes the rules under a request in flight.
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{
    self, ChainMatch, HttpConnManagerConfig, ListenerConfig, NetworkFilter, RouteTable, TcpProxyConfig,
};
use crate::telemetry::access_log::Logger;
use crate::telemetry::stats::{HttpStats, ListenerStats, TcpStats};
use crate::upstream::Cluster;

pub struct Snapshot {
    pub version: u64,
    pub node_id: String,
    pub node_cluster: String,
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: HashMap<Arc<str>, Arc<Cluster>>,
    /// RDS route tables by name: a request on an existing connection routes with the current one.
    pub rds: Arc<HashMap<String, Arc<RouteTable>>>,
    pub source: crate::translate::SourceConfig,
}

pub struct Listener {
    pub config: ListenerConfig,
    pub stats: ListenerStats,
    pub chains: Vec<Chain>,
    pub default_chain: Option<Chain>,
}

pub struct Chain {
    pub name: String,
    pub matcher: ChainMatch,
    pub filter: Filter,
}

#[derive(Clone)]
pub enum Filter {
    Tcp(Arc<TcpProxy>),
    Http(Arc<HttpManager>),
}

pub struct TcpProxy {
    pub config: Arc<TcpProxyConfig>,
    pub stats: TcpStats,
    pub log: Option<Logger>,
}

pub struct HttpManager {
    pub config: Arc<HttpConnManagerConfig>,
    /// The route table: inline, or the RDS one current when this snapshot was built.
    pub routes: Arc<RouteTable>,
    /// The RDS name, when the routes come from RDS.
    pub rds_name: Option<String>,
    pub stats: HttpStats,
    pub log: Option<Logger>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("listener \"{listener}\": access log: {source}")]
    AccessLog { listener: String, source: std::io::Error },
}

/// Everything a snapshot is built from: the bootstrap's static resources plus what xDS delivered.
#[derive(Clone)]
pub struct Inputs {
    pub version: u64,
    pub node_id: String,
    pub node_cluster: String,
    pub listeners: Vec<ListenerConfig>,
    /// Shared with the xDS store: a cluster built from one keeps it as its config.
    pub clusters: Vec<Arc<config::ClusterConfig>>,
    /// RDS route tables by name.
    pub routes: Arc<HashMap<String, Arc<RouteTable>>>,
    /// EDS endpoints by service name.
    pub endpoints: Arc<HashMap<Arc<str>, Arc<[config::EndpointConfig]>>>,
    pub source: crate::translate::SourceConfig,
}

impl Inputs {
    pub fn from_bootstrap(version: u64, b: config::Bootstrap) -> Inputs {
        Inputs {
            version,
            node_id: b.node_id,
            node_cluster: b.node_cluster,
            listeners: b.listeners,
            clusters: b.clusters.into_iter().map(Arc::new).collect(),
            routes: Default::default(),
            endpoints: Default::default(),
            source: b.source,
        }
    }
}

impl Snapshot {
    pub fn build(version: u64, b: config::Bootstrap) -> Result<Snapshot, BuildError> {
        Snapshot::build_from(Inputs::from_bootstrap(version, b), None)
    }

    /// Builds the next snapshot. Warming follows Envoy: an EDS cluster is used only once its
    /// endpoints have arrived, a listener only once its RDS routes have; until then the previous
    /// version (if any) stays. Unchanged clusters keep their runtime object, so their connection
    /// pools survive the update, and an endpoint change keeps the endpoints that remain.
    pub fn build_from(inputs: Inputs, previous: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
        let mut clusters = HashMap::with_capacity(inputs.clusters.len());
        for c in inputs.clusters {
            let eds = match &c.discovery {
                config::DiscoveryType::Eds(service) => match inputs.endpoints.get(&**service) {
                    Some(eps) => Some(eps),
                    None => {
                        if let Some(old) = previous.and_then(|p| p.clusters.get(&*c.name)) {
                            clusters.insert(old.name.clone(), old.clone());
                        }
                        continue;
                    }
                },
                _ => None,
            };
            let reused =
                previous.and_then(|p| p.clusters.get(&*c.name)).filter(|old| same_but_endpoints(&old.config, &c));
            let cluster = match (reused, eds) {
                (Some(old), Some(eps)) => {
                    old.update_endpoints(eps.iter().filter_map(crate::upstream::cluster::EndpointSpec::of).collect());
                    old.clone()
                }
                (Some(old), None) => old.clone(),
                (None, eds) => {
                    let old = previous.and_then(|p| p.clusters.get(&*c.name));
                    Cluster::replacing(c.clone(), eds.map(|e| &e[..]), old.map(|o| &**o))
                }
            };
            clusters.insert(cluster.name.clone(), cluster);
        }
        let mut listeners = Vec::new();
        for l in inputs.listeners {
            let rds_ready = l.filter_chains.iter().chain(l.default_filter_chain.iter()).all(|fc| match &fc.filter {
                NetworkFilter::Http(h) => match &h.routes {
                    config::RouteSource::Rds(name) => inputs.routes.contains_key(name),
                    config::RouteSource::Inline(_) => true,
                },
                NetworkFilter::TcpProxy(_) => true,
            });
            if !rds_ready {
                if let Some(old) = previous.and_then(|p| p.listeners.iter().find(|o| o.config.name == l.name)) {
                    listeners.push(old.clone());
                }
                continue;
            }
            let chain = |fc: &config::FilterChainConfig| -> Result<Chain, BuildError> {
                let io = |source| BuildError::AccessLog { listener: l.name.clone(), source };
                let filter = match &fc.filter {
                    NetworkFilter::TcpProxy(t) => Filter::Tcp(Arc::new(TcpProxy {
                        stats: TcpStats::new(&t.stat_prefix),
                        log: Logger::open(&t.access_log).map_err(io)?,
                        config: t.clone(),
                    })),
                    NetworkFilter::Http(h) => Filter::Http(Arc::new(HttpManager {
                        stats: HttpStats::new(&h.stat_prefix),
                        log: Logger::open(&h.access_log).map_err(io)?,
                        routes: match &h.routes {
                            config::RouteSource::Inline(t) => t.clone(),
                            config::RouteSource::Rds(name) => inputs.routes[name].clone(),
                        },
                        rds_name: match &h.routes {
                            config::RouteSource::Inline(_) => None,
                            config::RouteSource::Rds(name) => Some(name.clone()),
                        },
                        config: h.clone(),
                    })),
                };
                Ok(Chain { name: fc.name.clone(), matcher: fc.matcher.clone(), filter })
            };
            let chains = l.filter_chains.iter().map(chain).collect::<Result<Vec<_>, _>>()?;
            let default_chain = l.default_filter_chain.as_ref().map(chain).transpose()?;
            // Envoy keys listener stats by stat_prefix when set, else by address. Port 0 is not an
            // address yet (the snapshot is rebuilt once bound): no series for it.
            let stats = if let Some(prefix) = &l.stat_prefix {
                ListenerStats::new(prefix)
            } else if l.address.port() == 0 {
                ListenerStats::unregistered()
            } else {
                ListenerStats::new(&l.address.to_string().replace([':', '[', ']'], "_"))
            };
            listeners.push(Arc::new(Listener { stats, config: l, chains, default_chain }));
        }
        Ok(Snapshot {
            version: inputs.version,
            node_id: inputs.node_id,
            node_cluster: inputs.node_cluster,
            listeners,
            clusters,
            rds: inputs.routes,
            source: inputs.source,
        })
    }
}

fn same_but_endpoints(a: &Arc<config::ClusterConfig>, b: &Arc<config::ClusterConfig>) -> bool {
    if Arc::ptr_eq(a, b) {
        return true;
    }
    a.name == b.name
        && a.discovery == b.discovery
        && a.lb == b.lb
        && a.connect_timeout == b.connect_timeout
        && a.protocol == b.protocol
        && a.dns_refresh == b.dns_refresh
        && a.dns_family == b.dns_family
        && a.idle_timeout == b.idle_timeout
        && (matches!(a.discovery, config::DiscoveryType::Eds(_)) || a.endpoints == b.endpoints)
}
