//! The test control plane: the control plane's own ADS server (state of the world and
//! incremental), fed with resources the test sets as proto3 JSON instead of generated ones.
//! Every connected proxy gets them pushed, and every request the proxy sends (ACKs, NACKs,
//! subscriptions) and every response it gets is recorded for assertions.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use outrigger_xds::generate::{ProxyInfo, TYPES};
use outrigger_xds::server::ads::Ads;
use outrigger_xds::server::cache::{digest, Res, Served};
use outrigger_xds::server::stream::{Hub, Observer, Source};
use prost_reflect::DynamicMessage;
use serde_json::Value;
use tokio::sync::watch;

use crate::backend::{run, tokio_stream_shim, Runner};

pub use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// What the test has set, served to every proxy alike.
struct Fixed {
    served: Mutex<Arc<Served>>,
    changed: watch::Sender<u64>,
}

impl Source for Fixed {
    fn served_for(&self, _: &ProxyInfo) -> Result<Arc<Served>, String> {
        Ok(self.served.lock().unwrap().clone())
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Everything the server saw and sent, each with its place in one sequence over all streams.
#[derive(Default)]
struct Log {
    seq: AtomicU64,
    requests: Mutex<Vec<(u64, DiscoveryRequest)>>,
    delta_requests: Mutex<Vec<(u64, DeltaDiscoveryRequest)>>,
    responses: Mutex<Vec<(u64, DiscoveryResponse)>>,
    delta_responses: Mutex<Vec<(u64, DeltaDiscoveryResponse)>>,
    streams: AtomicUsize,
}

impl Log {
    fn push<T: Clone>(&self, list: &Mutex<Vec<(u64, T)>>, item: &T) {
        let mut list = list.lock().unwrap();
        list.push((self.seq.fetch_add(1, Ordering::SeqCst), item.clone()));
    }
}

impl Observer for Log {
    fn stream_opened(&self) {
        self.streams.fetch_add(1, Ordering::SeqCst);
    }
    fn request(&self, r: &DiscoveryRequest) {
        self.push(&self.requests, r);
    }
    fn delta_request(&self, r: &DeltaDiscoveryRequest) {
        self.push(&self.delta_requests, r);
    }
    fn response(&self, r: &DiscoveryResponse) {
        self.push(&self.responses, r);
    }
    fn delta_response(&self, r: &DeltaDiscoveryResponse) {
        self.push(&self.delta_responses, r);
    }
}

fn items<T: Clone>(list: &Mutex<Vec<(u64, T)>>) -> Vec<T> {
    list.lock().unwrap().iter().map(|(_, t)| t.clone()).collect()
}

pub struct AdsServer {
    pub addr: SocketAddr,
    source: Arc<Fixed>,
    log: Arc<Log>,
    gate: Arc<Gate>,
    _runner: Runner,
}

/// While `refusing`, every stream is answered with an error at once (a control plane that is up
/// but failing), and when it was refused is recorded.
#[derive(Default)]
struct Gate {
    refusing: AtomicBool,
    refused: Mutex<Vec<std::time::Instant>>,
}

impl Gate {
    fn check(&self) -> Result<(), tonic::Status> {
        if !self.refusing.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.refused.lock().unwrap().push(std::time::Instant::now());
        Err(tonic::Status::unavailable("refusing streams"))
    }
}

struct Gated {
    ads: Ads,
    gate: Arc<Gate>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Gated {
    type StreamAggregatedResourcesStream = <Ads as AggregatedDiscoveryService>::StreamAggregatedResourcesStream;
    type DeltaAggregatedResourcesStream = <Ads as AggregatedDiscoveryService>::DeltaAggregatedResourcesStream;

    async fn stream_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::StreamAggregatedResourcesStream>, tonic::Status> {
        self.gate.check()?;
        self.ads.stream_aggregated_resources(req).await
    }

    async fn delta_aggregated_resources(
        &self,
        req: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<Self::DeltaAggregatedResourcesStream>, tonic::Status> {
        self.gate.check()?;
        self.ads.delta_aggregated_resources(req).await
    }
}

/// Proto3 JSON of `type_url` → `Any`, through the proxy's own descriptor subset.
pub fn any(type_url: &str, json: &Value) -> Any {
    let pool = outrigger_api::descriptor_pool();
    let desc = pool.get_message_by_name(outrigger_api::type_name(type_url)).expect("known type");
    let msg = DynamicMessage::deserialize(desc, json.clone()).unwrap_or_else(|e| panic!("{type_url}: {e}: {json}"));
    Any { type_url: type_url.to_string(), value: prost::Message::encode_to_vec(&msg) }
}

impl AdsServer {
    pub fn start() -> AdsServer {
        AdsServer::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// A fresh control plane on a given address (None while the port cannot be bound yet).
    pub fn try_start_on(addr: SocketAddr) -> Option<AdsServer> {
        std::net::TcpListener::bind(addr).ok()?;
        Some(AdsServer::start_on(addr))
    }

    fn start_on(addr: SocketAddr) -> AdsServer {
        let source = Arc::new(Fixed { served: Mutex::default(), changed: watch::channel(0).0 });
        let log = Arc::new(Log::default());
        let hub = Hub::new(source.clone(), Some(log.clone()));
        let gate = Arc::new(Gate::default());
        let svc = Gated { ads: Ads { hub }, gate: gate.clone() };
        let (addr, runner) = run(addr, move |l| async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(svc))
                .serve_with_incoming(tokio_stream_shim::incoming(l))
                .await;
        });
        AdsServer { addr, source, log, gate, _runner: runner }
    }

    /// Replaces every resource of `type_url` (JSON objects with a `name`/`cluster_name`) and pushes.
    pub fn set(&self, type_url: &str, resources: Vec<Value>) {
        let list = resources
            .iter()
            .map(|r| {
                let name = r["name"].as_str().or(r["cluster_name"].as_str()).unwrap_or_default().to_string();
                (name, any(type_url, r))
            })
            .collect();
        self.set_raw(type_url, list);
    }

    /// As `set`, with resources already encoded (for deliberately odd ones).
    pub fn set_raw(&self, type_url: &str, list: Vec<(String, Any)>) {
        let t = TYPES.iter().copied().find(|t| *t == type_url).unwrap_or_else(|| panic!("not an ADS type: {type_url}"));
        let by_name: BTreeMap<String, Arc<Res>> = list
            .into_iter()
            .map(|(n, any)| {
                let hash = digest(&n, &any);
                (n, Arc::new(Res { any, hash }))
            })
            .collect();
        {
            let mut served = self.source.served.lock().unwrap();
            Arc::make_mut(&mut served).insert(t, Arc::new(by_name));
        }
        self.source.changed.send_modify(|g| *g += 1);
    }

    /// State-of-the-world requests handled so far, in order (a request is listed once every
    /// response it called for has been sent).
    pub fn requests(&self) -> Vec<DiscoveryRequest> {
        items(&self.log.requests)
    }

    pub fn delta_requests(&self) -> Vec<DeltaDiscoveryRequest> {
        items(&self.log.delta_requests)
    }

    /// State-of-the-world responses sent so far, in order.
    pub fn responses(&self) -> Vec<DiscoveryResponse> {
        items(&self.log.responses)
    }

    pub fn delta_responses(&self) -> Vec<DeltaDiscoveryResponse> {
        items(&self.log.delta_responses)
    }

    /// The last state-of-the-world response sent for `type_url`, once the proxy has answered it
    /// (ACK or NACK, by nonce) and the server has handled that answer; None before.
    pub fn answered(&self, type_url: &str) -> Option<DiscoveryResponse> {
        let (at, last) =
            self.log.responses.lock().unwrap().iter().rev().find(|(_, r)| r.type_url == type_url).cloned()?;
        let requests = self.log.requests.lock().unwrap();
        requests
            .iter()
            .any(|(s, r)| *s > at && r.type_url == type_url && r.response_nonce == last.nonce)
            .then_some(last)
    }

    /// Responses sent so far, of both protocols: a test that has seen its last push answered
    /// checks with this that nothing followed.
    pub fn sent(&self) -> usize {
        self.log.responses.lock().unwrap().len() + self.log.delta_responses.lock().unwrap().len()
    }

    /// While `on`, every new stream fails at once with UNAVAILABLE.
    pub fn refuse_streams(&self, on: bool) {
        self.gate.refusing.store(on, Ordering::SeqCst);
    }

    /// When each refused stream was asked for.
    pub fn refused(&self) -> Vec<std::time::Instant> {
        self.gate.refused.lock().unwrap().clone()
    }

    /// Streams opened so far (a reconnecting proxy opens another).
    pub fn streams(&self) -> usize {
        self.log.streams.load(Ordering::SeqCst)
    }
}
