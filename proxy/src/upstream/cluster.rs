//! The runtime cluster: its config, the current endpoint set (swapped atomically when DNS
//! changes), and the stats. Endpoints carry their own connection pools and request counters.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::lb;
use super::outlier::Health;
use super::pool::Pool;
use crate::config::cluster::Placement;
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
    /// RING_HASH / MAGLEV: the table, built for this set.
    pub(crate) table: Option<super::hash::Table>,
    /// Priorities and localities, when there is more than one level or locality weighting.
    pub(crate) levels: Option<super::priority::Levels>,
    /// Endpoints the balancer must skip (ejected, failing health checks, EDS-unhealthy): while
    /// 0, picking needs no health check.
    pub(crate) unavailable: AtomicUsize,
}

/// An endpoint as the current set has it. Its runtime state is shared with the endpoint of the
/// same address in earlier and later sets: a weight or health change, or a cluster update,
/// keeps the pool, the request counts and the outlier state.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    /// Given no traffic by EDS (health_status UNHEALTHY, DRAINING, TIMEOUT).
    pub eds_unhealthy: bool,
    /// Priority and locality (None: priority 0, no locality weighting).
    pub placement: Option<Arc<Placement>>,
    pub state: Arc<EndpointState>,
}

#[derive(Debug, Default)]
pub struct EndpointState {
    pub active_requests: AtomicU32,
    pub pool: Pool,
    pub health: Health,
}

impl std::ops::Deref for Endpoint {
    type Target = EndpointState;
    fn deref(&self) -> &EndpointState {
        &self.state
    }
}

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32) -> Arc<Endpoint> {
        Arc::new(Endpoint { addr, weight, eds_unhealthy: false, placement: None, state: Default::default() })
    }

    /// Whether the load balancer may pick it now.
    pub fn available(&self) -> bool {
        !self.eds_unhealthy && self.health.available()
    }
}

impl EndpointSet {
    pub fn new(list: Vec<Arc<Endpoint>>, config: &ClusterConfig) -> EndpointSet {
        use crate::config::LbPolicy;
        let schedule = lb::weighted_schedule(&list);
        let unavailable = AtomicUsize::new(list.iter().filter(|e| !e.available()).count());
        let levels = super::priority::Levels::build(&list, config.locality_weighted);
        let table = match config.lb {
            LbPolicy::RingHash { min_size, max_size } => super::hash::Table::ring(&list, min_size, max_size),
            LbPolicy::Maglev { table_size } => super::hash::Table::maglev(&list, table_size),
            _ => None,
        };
        EndpointSet { list, schedule, table, levels, unavailable }
    }
}

/// An endpoint as configured: what an endpoint set is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub addr: SocketAddr,
    pub weight: u32,
    pub eds_unhealthy: bool,
    pub placement: Option<Arc<Placement>>,
}

impl EndpointSpec {
    /// The spec of an IP endpoint (None for a DNS name, resolved later).
    pub fn of(e: &EndpointConfig) -> Option<EndpointSpec> {
        match e {
            EndpointConfig::Ip { addr, weight, eds_unhealthy, placement } => Some(EndpointSpec {
                addr: *addr,
                weight: *weight,
                eds_unhealthy: *eds_unhealthy,
                placement: placement.clone(),
            }),
            EndpointConfig::Dns { .. } => None,
        }
    }

    fn same(&self, e: &Endpoint) -> bool {
        self.addr == e.addr
            && self.weight == e.weight
            && self.eds_unhealthy == e.eds_unhealthy
            && self.placement == e.placement
    }
}

/// A new endpoint; with active health checks it waits out of rotation for its first check.
fn new_endpoint(spec: EndpointSpec, checked: bool) -> Arc<Endpoint> {
    let state = EndpointState::default();
    state.health.hc_failed.store(checked, Ordering::Relaxed);
    let EndpointSpec { addr, weight, eds_unhealthy, placement } = spec;
    Arc::new(Endpoint { addr, weight, eds_unhealthy, placement, state: Arc::new(state) })
}

/// The endpoints `specs`, sharing state with those of `old` at the same address.
fn carry_over(old: &EndpointSet, specs: Vec<EndpointSpec>, checked: bool) -> Vec<Arc<Endpoint>> {
    specs
        .into_iter()
        .map(|spec| match old.list.iter().find(|e| e.addr == spec.addr) {
            Some(e) if spec.same(e) => e.clone(),
            Some(e) => {
                let EndpointSpec { addr, weight, eds_unhealthy, placement } = spec;
                Arc::new(Endpoint { addr, weight, eds_unhealthy, placement, state: e.state.clone() })
            }
            None => new_endpoint(spec, checked),
        })
        .collect()
}

impl Cluster {
    pub fn new(config: ClusterConfig) -> Arc<Cluster> {
        Cluster::from_shared(Arc::new(config), None)
    }

    /// A cluster of `config`, with the EDS endpoints `eds` (else the configured ones).
    pub fn from_shared(config: Arc<ClusterConfig>, eds: Option<&[EndpointConfig]>) -> Arc<Cluster> {
        Cluster::replacing(config, eds, None)
    }

    /// As [`Cluster::from_shared`], taking over the runtime state of `previous`'s endpoints
    /// (a cluster of the same name whose config changed).
    pub fn replacing(
        config: Arc<ClusterConfig>,
        eds: Option<&[EndpointConfig]>,
        previous: Option<&Cluster>,
    ) -> Arc<Cluster> {
        let specs: Vec<_> = eds.unwrap_or(&config.endpoints).iter().filter_map(EndpointSpec::of).collect();
        let old = previous.map(|p| p.endpoints.load_full());
        let checked = config.health_check.is_some();
        let list = match &old {
            Some(old) => carry_over(old, specs, checked),
            None => specs.into_iter().map(|s| new_endpoint(s, checked)).collect(),
        };
        let stats = ClusterStats::named(&config.name);
        stats.set_limits(&config.circuit_breakers);
        let set = EndpointSet::new(list, &config);
        let cluster = Arc::new(Cluster {
            name: config.name.clone(),
            stats,
            config,
            endpoints: ArcSwap::from_pointee(set),
            rr: AtomicUsize::new(0),
        });
        cluster.membership_changed();
        if cluster.config.outlier.is_some() {
            super::outlier::start(&cluster);
        }
        if cluster.config.health_check.is_some() {
            super::health_check::start(&cluster);
        }
        cluster
    }

    /// Replaces the endpoint set, keeping the runtime state of the addresses that remain.
    pub fn update_endpoints(&self, specs: Vec<EndpointSpec>) {
        let old = self.endpoints.load();
        if old.list.len() == specs.len() && old.list.iter().zip(&specs).all(|(e, s)| s.same(e)) {
            return;
        }
        let list = carry_over(&old, specs, self.config.health_check.is_some());
        self.endpoints.store(Arc::new(EndpointSet::new(list, &self.config)));
        self.membership_changed();
    }

    /// Updates the membership gauges (and the count of endpoints out of rotation).
    pub fn membership_changed(&self) {
        let set = self.endpoints.load();
        let healthy = set.list.iter().filter(|e| e.available()).count();
        self.stats.membership_total.set(set.list.len() as i64);
        self.stats.membership_healthy.set(healthy as i64);
        set.unavailable.store(set.list.len() - healthy, Ordering::Relaxed);
    }

    /// Picks an endpoint by the cluster's policy; None when there is none.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        lb::pick(self, &set, None).cloned()
    }

    /// As [`Cluster::pick`], with the request's hash for RING_HASH and MAGLEV.
    pub fn pick_hashed(&self, hash: Option<u64>) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        lb::pick(self, &set, hash).cloned()
    }

    /// As [`Cluster::pick`], for a connection whose original destination is `original_dst`:
    /// an ORIGINAL_DST cluster sends it there (a fresh endpoint; passthrough is not pooled).
    pub fn pick_for(&self, original_dst: Option<SocketAddr>) -> Option<Arc<Endpoint>> {
        self.pick_for_hashed(original_dst, None)
    }

    pub fn pick_for_hashed(&self, original_dst: Option<SocketAddr>, hash: Option<u64>) -> Option<Arc<Endpoint>> {
        match self.config.discovery {
            crate::config::DiscoveryType::OriginalDst => original_dst.map(|a| Endpoint::new(a, 1)),
            _ => self.pick_hashed(hash),
        }
    }

    /// As [`Cluster::pick`], avoiding the endpoints in `avoid` (a retry's previous hosts): up to
    /// `attempts` picks, then the last one whatever it is.
    pub fn pick_avoiding(&self, avoid: &[SocketAddr], attempts: u32) -> Option<Arc<Endpoint>> {
        let set = self.endpoints.load();
        let mut last = None;
        for _ in 0..attempts.max(1) {
            let e = lb::pick(self, &set, None)?;
            if !avoid.contains(&e.addr) {
                return Some(e.clone());
            }
            last = Some(e.clone());
        }
        last
    }

    pub fn next_rr(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }
}
