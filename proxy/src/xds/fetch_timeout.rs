//! `initial_fetch_timeout` (Envoy's `ConfigSource`): warming does not wait for ever. Once a
//! source's timeout has passed without its resource, initialisation goes ahead with what there
//! is: a listener waiting for its routes serves with an empty route table (404 NR), a cluster
//! waiting for its endpoints is used without any (503 UH), and missing LDS/CDS no longer hold
//! back readiness. A resource that arrives later replaces the stand-in as usual.
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::state::State;
use crate::config::{self, NetworkFilter, RouteSource, RouteTable};
use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// What is still awaited: (type, name, deadline).
type Pending = (&'static str, Arc<str>, Instant);

impl State {
    fn pending_fetches(&self) -> Vec<Pending> {
        let mut out = Vec::new();
        let wildcard = [
            (LISTENER, self.dynamic.lds, self.dynamic.lds_fetch_timeout),
            (CLUSTER, self.dynamic.cds, self.dynamic.cds_fetch_timeout),
        ];
        for (t, on, timeout) in wildcard {
            let accepted = self.types.get(t).is_some_and(|s| s.accepted);
            if let (true, false, Some(d)) = (on, accepted || self.fetch_timed_out.contains(t), timeout) {
                out.push((t, Arc::from(""), self.started + d));
            }
        }
        let mut named = |t: &'static str, name: &str, timeout: Option<Duration>| {
            let Some(d) = timeout else { return };
            if let Some((key, since)) = self.wanted_since.get_key_value(&(t, Arc::from(name))) {
                out.push((t, key.1.clone(), *since + d));
            }
        };
        for l in self.base.listeners.iter().chain(self.store.listeners.values()) {
            for fc in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                if let NetworkFilter::Http(h) = &fc.filter {
                    if let RouteSource::Rds(name) = &h.routes {
                        if !self.store.routes.contains_key(name) {
                            named(ROUTE, name, h.rds_fetch_timeout);
                        }
                    }
                }
            }
        }
        for c in self.base_clusters.iter().chain(self.store.clusters.values()) {
            if let config::DiscoveryType::Eds(service) = &c.discovery {
                if !self.store.endpoints.contains_key(&**service) {
                    named(ENDPOINT, service, c.eds_fetch_timeout);
                }
            }
        }
        out
    }

    /// The earliest moment an initial fetch times out, if any is still awaited.
    pub fn next_fetch_deadline(&self) -> Option<Instant> {
        self.pending_fetches().into_iter().map(|p| p.2).min()
    }

    /// Ends the warming of everything whose initial fetch has timed out by `now`; true when
    /// something changed (the snapshot is then to be rebuilt).
    pub fn expire_fetches(&mut self, now: Instant) -> bool {
        let due: Vec<Pending> = self.pending_fetches().into_iter().filter(|p| p.2 <= now).collect();
        for (t, name, _) in &due {
            tracing::warn!(type_url = *t, name = &**name, "initial fetch timed out; going on without it");
            match *t {
                ROUTE => {
                    let empty = RouteTable {
                        name: name.to_string(),
                        virtual_hosts: Vec::new(),
                        domains: Default::default(),
                        validate_clusters: None,
                    };
                    Arc::make_mut(&mut self.store.routes).insert(name.to_string(), Arc::new(empty));
                }
                ENDPOINT => {
                    let name = self.names.get(name);
                    Arc::make_mut(&mut self.store.endpoints).insert(name, Arc::from([]));
                }
                t => {
                    self.fetch_timed_out.insert(t);
                }
            }
        }
        if !due.is_empty() {
            self.version += 1;
        }
        !due.is_empty()
    }
}
