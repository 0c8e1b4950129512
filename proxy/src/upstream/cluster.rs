//! The runtime cluster: its config, the current endpoint set (swapped atomically when DNS
//! changes), and the stats. Endpoints carry their own connection pools and request counters.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::lb;
use super::pool::Pool;
use crate::config::{ClusterConfig, EndpointConfig};
use crate::telemetry::stats::ClusterStats;

#[derive(Debug)]
pub struct Cluster {
    /// `config.name`, shared by the snapshots' cluster maps (rebuilt on every update).
    pub name: Arc<str>,
    /// Shared with the xDS store. An EDS cluster's endpoints are in `endpoints` only.
    pub config: Arc<ClusterConfig>,
    pub endpoints: ArcSwap<EndpointSet>,
    pub stats: ClusterStats,
    pub(crate) rr: AtomicUsize,
}

#[derive(Debug, Default)]
pub struct EndpointSet {
    pub list: Vec<Arc<Endpoint>>,
    /// Smooth weighted round-robin order, when weights differ.
    pub(crate) schedule: Option<Vec<u32>>,
}

#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub active_requests: AtomicU32,
    pub pool: Pool,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint { addr, weight, active_requests: AtomicU32::new(0), pool: Pool::new() })
    }
}

impl EndpointSet {
    pub fn new(list: Vec<Arc<Endpoint>>) -> EndpointSet {
        let schedule = lb::weighted_schedule(&list);
        EndpointSet { list, schedule }
    }
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Arc<Cluster> {
        Cluster::from_shared(Arc::new(config), None)
    }

    /// A cluster of `config`, with the EDS endpoints `eds` (else the configured ones).
    pub fn from_shared(config: Arc<ClusterConfig>, eds: Option<&[EndpointConfig]>) -> Arc<Cluster> {
        let list = eds
            .unwrap_or(&config.endpoints)
            .iter()
            .filter_map(|e| match e {
                EndpointConfig::Ip { addr, weight } => Some(Endpoint::new(*addr, *weight)),
                EndpointConfig::Dns { .. } => None,
            })
            .collect();
        Arc::new(Cluster {
            name: config.name.clone(),
            stats: ClusterStats::named(&config.name),
            config,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(list)),
            rr: AtomicUsize::new(0),
        })
    }

    /// Replaces the endpoint set, keeping the existing endpoint objects (and their pools) for
    /// addresses that remain.
    pub fn update_endpoints(&self, addrs: Vec<(SocketAddr, u32)>) {
        let old = self.endpoints.load();
        if old.list.len() == addrs.len()
            && old.list.iter().zip(&addrs).all(|(e, (a, w))| e.addr == *a && e.weight == *w)
        {
            return;
        }
        let list = addrs
            .into_iter()
            .map(|(a, w)| {
                old.list.iter().find(|e| e.addr == a && e.weight == w).cloned().unwrap_or_else(|| Endpoint::new(a, w))
            })
            .collect();
        self.endpoints.store(Arc::new(EndpointSet::new(list)));
    }

    /// Picks an endpoint by the cluster's policy; None when there is none.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        lb::pick(self, &set).cloned()
    }

    /// As [`Cluster::pick`], for a connection whose original destination is `original_dst`:
    /// an ORIGINAL_DST cluster sends it there (a fresh endpoint; passthrough is not pooled).
    pub fn pick_for(&self, original_dst: Option<SocketAddr>) -> Option<Arc<Endpoint>> {
        match self.config.discovery {
            crate::config::DiscoveryType::OriginalDst => original_dst.map(|a| Endpoint::new(a, 1)),
            _ => self.pick(),
        }
    }

    pub fn next_rr(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }
}
