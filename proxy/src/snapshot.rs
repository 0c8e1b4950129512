//! The live configuration: one immutable `Snapshot`, swapped atomically. A connection loads it
//! once and keeps it, so an update never changes the rules under a request in flight.
use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{self, ChainMatch, HttpConnManagerConfig, ListenerConfig, NetworkFilter, TcpProxyConfig};
use crate::telemetry::access_log::Logger;
use crate::telemetry::stats::{HttpStats, ListenerStats, TcpStats};
use crate::upstream::Cluster;

pub struct Snapshot {
    pub version: u64,
    pub node_id: String,
    pub node_cluster: String,
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: HashMap<String, Arc<Cluster>>,
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
    pub stats: HttpStats,
    pub log: Option<Logger>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("listener \"{listener}\": access log: {source}")]
    AccessLog { listener: String, source: std::io::Error },
}

impl Snapshot {
    pub fn build(version: u64, b: config::Bootstrap) -> Result<Snapshot, BuildError> {
        let clusters = b.clusters.into_iter().map(|c| (c.name.clone(), Cluster::new(c))).collect();
        let mut listeners = Vec::new();
        for l in b.listeners {
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
                        config: h.clone(),
                    })),
                };
                Ok(Chain { name: fc.name.clone(), matcher: fc.matcher.clone(), filter })
            };
            let chains = l.filter_chains.iter().map(chain).collect::<Result<Vec<_>, _>>()?;
            let default_chain = l.default_filter_chain.as_ref().map(chain).transpose()?;
            let addr = l.address.to_string().replace([':', '[', ']'], "_");
            listeners.push(Arc::new(Listener { stats: ListenerStats::new(&addr), config: l, chains, default_chain }));
        }
        Ok(Snapshot {
            version,
            node_id: b.node_id,
            node_cluster: b.node_cluster,
            listeners,
            clusters,
            source: b.source,
        })
    }
}
