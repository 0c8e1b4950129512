//! What the state-of-the-world and incremental streams share: where resources come from
//! ([`Source`]), who watches the exchange ([`Observer`]), the connected proxies and the push
//! metrics ([`Hub`]), and one stream's connection to them ([`Conn`]: the first request's node,
//! the proxy's current configuration, its status for `/debug/syncz`).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::value::Kind;
use tokio::sync::watch;

use super::cache::Served;
use super::{Metrics, ProxyStatus};
use crate::generate::ProxyInfo;

/// The resources streams serve: the control plane's generated per-proxy configurations, or in
/// tests whatever the test has set.
pub trait Source: Send + Sync {
    /// The configuration `proxy` gets now.
    fn served_for(&self, proxy: &ProxyInfo) -> Result<Arc<Served>, String>;
    /// Moves whenever [`Source::served_for`] may answer differently.
    fn changes(&self) -> watch::Receiver<u64>;
}

/// Sees each stream's traffic. A request is reported once it has been handled, after every
/// response it called for: a test that sees an ACK knows what the server did about it.
pub trait Observer: Send + Sync {
    fn stream_opened(&self) {}
    fn request(&self, _r: &DiscoveryRequest) {}
    fn delta_request(&self, _r: &DeltaDiscoveryRequest) {}
    fn response(&self, _r: &DiscoveryResponse) {}
    fn delta_response(&self, _r: &DeltaDiscoveryResponse) {}
}

/// Shared by every ADS stream.
pub struct Hub {
    source: Arc<dyn Source>,
    pub(super) observer: Option<Arc<dyn Observer>>,
    /// Connection id → what that proxy has been sent and has said back.
    pub proxies: Mutex<BTreeMap<u64, ProxyStatus>>,
    next_conn: AtomicU64,
    pub metrics: Metrics,
}

impl Hub {
    pub fn new(source: Arc<dyn Source>, observer: Option<Arc<dyn Observer>>) -> Arc<Hub> {
        Arc::new(Hub {
            source,
            observer,
            proxies: Mutex::new(BTreeMap::new()),
            next_conn: AtomicU64::new(1),
            metrics: Metrics::new(),
        })
    }

    /// Records a proxy's ACK (`error` None) or NACK of `type_url` for `/debug/syncz` and metrics.
    pub fn record_reply(&self, conn: u64, type_url: &str, version: &str, error: Option<&str>) {
        let mut proxies = self.proxies.lock().unwrap();
        let Some(p) = proxies.get_mut(&conn) else { return };
        match error {
            Some(e) => {
                self.metrics.nacks.inc();
                tracing::warn!(proxy = %p.id, type_url, error = e, "NACK");
                p.nacked.insert(type_url.to_string(), e.to_string());
            }
            None => {
                p.nacked.remove(type_url);
                p.acked.insert(type_url.to_string(), version.to_string());
            }
        }
    }

    fn with_status(&self, conn: u64, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(p) = self.proxies.lock().unwrap().get_mut(&conn) {
            f(p);
        }
    }
}

/// The proxy a node describes: Istio's metadata (NAMESPACE, LABELS, INSTANCE_IPS).
pub fn proxy_info(node: &Node) -> ProxyInfo {
    let md = node.metadata.as_ref().map(|m| &m.fields);
    let get = |k: &str| {
        md.and_then(|f| f.get(k)).and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
    };
    let namespace = get("NAMESPACE")
        .or_else(|| node.id.split('~').nth(2).and_then(|s| s.rsplit('.').next()).map(str::to_string))
        .unwrap_or_else(|| "default".into());
    let labels = get("LABELS")
        .map(|l| {
            l.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
        })
        .unwrap_or_default();
    let instance_ip =
        get("INSTANCE_IPS").and_then(|s| s.split(',').next().map(str::to_string)).filter(|s| !s.is_empty());
    let proxyless = get("GENERATOR").is_some_and(|g| g == "grpc")
        || !(node.id.starts_with("sidecar~") || node.id.starts_with("router~"));
    ProxyInfo { id: node.id.clone(), namespace, labels, instance_ip, proxyless }
}

/// One stream's view of the hub; counted as connected while it lives.
pub(super) struct Conn {
    hub: Arc<Hub>,
    id: u64,
    proxy: Option<ProxyInfo>,
    /// The proxy's configuration as last fetched from the source.
    pub(super) resources: Arc<Served>,
}

impl Conn {
    pub(super) fn open(hub: Arc<Hub>) -> Conn {
        let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
        hub.metrics.connected.inc();
        if let Some(o) = &hub.observer {
            o.stream_opened();
        }
        Conn { hub, id, proxy: None, resources: Arc::default() }
    }

    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.hub.source.changes()
    }

    /// Every request may carry the node, the first one must: who the proxy is decides what it
    /// gets. The error ends the stream.
    pub(super) fn identify(&mut self, node: Option<&Node>) -> Result<(), tonic::Status> {
        if self.proxy.is_some() {
            return Ok(());
        }
        let node = node.ok_or_else(|| tonic::Status::invalid_argument("the first request must carry the node"))?;
        let info = proxy_info(node);
        let status = ProxyStatus {
            id: info.id.clone(),
            namespace: info.namespace.clone(),
            info: info.clone(),
            ..Default::default()
        };
        self.hub.proxies.lock().unwrap().insert(self.id, status);
        self.proxy = Some(info);
        self.fetch();
        Ok(())
    }

    /// The source moved: this proxy's configuration again (false: unchanged, nothing to push).
    pub(super) fn refresh(&mut self) -> bool {
        let start = std::time::Instant::now();
        let ok = self.fetch();
        if ok {
            self.hub.metrics.push_time.observe(start.elapsed().as_secs_f64());
        }
        ok
    }

    fn fetch(&mut self) -> bool {
        let Some(p) = &self.proxy else { return false };
        match self.hub.source.served_for(p) {
            Ok(res) => {
                self.resources = res;
                true
            }
            Err(e) => {
                tracing::error!(proxy = %p.id, error = %e, "cannot generate configuration for a proxy");
                false
            }
        }
    }

    /// An ACK or NACK of the response `nonce` answered (delta ACKs carry no version: the nonce
    /// stands for it). Requests that answer nothing are not replies.
    pub(super) fn reply(&self, type_url: &str, nonce: &str, version: &str, error: Option<&str>) {
        if !nonce.is_empty() {
            self.hub.record_reply(self.id, type_url, version, error);
        }
    }

    pub(super) fn sent(&self, resp: &DiscoveryResponse) {
        self.count_sent(&resp.type_url, &resp.version_info);
        if let Some(o) = &self.hub.observer {
            o.response(resp);
        }
    }

    pub(super) fn delta_sent(&self, resp: &DeltaDiscoveryResponse) {
        self.count_sent(&resp.type_url, &resp.system_version_info);
        if let Some(o) = &self.hub.observer {
            o.delta_response(resp);
        }
    }

    fn count_sent(&self, type_url: &str, version: &str) {
        self.hub.metrics.pushes.inc();
        self.hub.with_status(self.id, |p| {
            p.sent.insert(type_url.to_string(), version.to_string());
            p.responses += 1;
        });
    }

    pub(super) fn handled(&self, r: &DiscoveryRequest) {
        self.hub.with_status(self.id, |p| p.requests += 1);
        if let Some(o) = &self.hub.observer {
            o.request(r);
        }
    }

    pub(super) fn delta_handled(&self, r: &DeltaDiscoveryRequest) {
        self.hub.with_status(self.id, |p| p.requests += 1);
        if let Some(o) = &self.hub.observer {
            o.delta_request(r);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.hub.proxies.lock().unwrap().remove(&self.id);
        self.hub.metrics.connected.dec();
    }
}
