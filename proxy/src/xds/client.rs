//! The ADS stream: connect, send the initial subscriptions, handle responses, reconnect with
//! jittered exponential backoff.
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use tokio::sync::mpsc;

use super::state::State;
use crate::app::App;
use crate::config;
use crate::telemetry::stats::metrics;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub async fn run(app: Arc<App>, base: config::Bootstrap, dynamic: config::DynamicConfig) {
    let node = Node { id: base.node_id.clone(), cluster: base.node_cluster.clone(), ..Default::default() };
    let mut state = State::new(node, base, dynamic);
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        match session(&app, &mut state).await {
            Ok(()) => tracing::info!("xDS stream closed by the control plane"),
            Err(e) => tracing::warn!(error = %e, "xDS stream failed"),
        }
        metrics().xds_connected.set(0);
        // A stream that lived a while resets the backoff; a failing one doubles it.
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        let jitter = fastrand::u64(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn session(app: &Arc<App>, state: &mut State) -> anyhow::Result<()> {
    let addr = {
        let snap = app.live.load();
        let cluster = snap
            .clusters
            .get(&state.dynamic.ads_cluster)
            .ok_or_else(|| anyhow::anyhow!("ADS cluster \"{}\" is missing", state.dynamic.ads_cluster))?;
        cluster.pick().ok_or_else(|| anyhow::anyhow!("ADS cluster has no endpoint"))?.addr
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
    for r in state.initial_requests() {
        tx.send(r)?;
    }
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    tracing::info!(%addr, "xDS stream connected");
    metrics().xds_connected.set(1);
    while let Some(resp) = stream.message().await? {
        let kind = super::state::type_key(&resp.type_url).map(short).unwrap_or("unknown");
        let dump = app.xds.clone().unwrap_or_default();
        let out =
            state.handle(&resp, |inputs, changed| app.apply(inputs, changed).map_err(|e| format!("{e:#}")), &dump);
        match &out.error {
            None => {
                metrics().xds_update(kind, true);
                if state.initialized() && app.listeners_warm(state.store.listeners.keys()) {
                    app.mark_initialized();
                }
                crate::app::release_free_memory();
            }
            Some(_) => metrics().xds_update(kind, false),
        }
        for r in out.requests {
            tx.send(r)?;
        }
    }
    Ok(())
}

fn short(type_url: &str) -> &'static str {
    use crate::translate::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
    match type_url {
        LISTENER => "lds",
        CLUSTER => "cds",
        ROUTE => "rds",
        ENDPOINT => "eds",
        _ => "unknown",
    }
}
