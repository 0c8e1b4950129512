//! The ADS stream: connect, send the initial subscriptions, handle responses, reconnect with
//! jittered exponential backoff. State of the world (`GRPC`) or incremental (`DELTA_GRPC`).
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::rpc::Status;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::state::{type_key, Outcome, State, Update};
use crate::app::App;
use crate::config;
use crate::telemetry::stats::metrics;
use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub async fn run(app: Arc<App>, base: config::Bootstrap, dynamic: config::DynamicConfig, node: Node) {
    let delta = dynamic.delta;
    let state = tokio::sync::Mutex::new(State::new(node, base, dynamic));
    let session = || async {
        let mut state = state.lock().await;
        expire_fetches(&app, &mut state);
        let r = if delta { delta_session(&app, &mut state).await } else { sotw_session(&app, &mut state).await };
        match r {
            Ok(()) => tracing::info!("xDS stream closed by the control plane"),
            Err(e) => tracing::warn!(error = %e, "xDS stream failed"),
        }
        metrics().xds_connected.set(0);
    };
    // Initial fetches time out whether or not there is a stream.
    let (state_ref, app_ref) = (&state, &app);
    let pause = |wake: tokio::time::Instant| async move {
        let mut state = state_ref.lock().await;
        expiring(app_ref, &mut state, tokio::time::sleep_until(wake)).await;
    };
    reconnecting(session, pause).await
}

/// Runs `session` again and again, waiting between runs: jittered exponential backoff, half to
/// all of 250 ms doubling to 30 s. A session that lived longer than the cap resets it.
/// `pause(until)` waits between sessions (doing whatever must go on meanwhile).
async fn reconnecting<F, Fut, P, PFut>(mut session: F, mut pause: P) -> !
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
    P: FnMut(tokio::time::Instant) -> PFut,
    PFut: std::future::Future<Output = ()>,
{
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = tokio::time::Instant::now();
        session().await;
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        let jitter = fastrand::u64(0..=backoff.as_millis() as u64 / 2);
        pause(tokio::time::Instant::now() + backoff / 2 + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Resolves at `deadline` (never without one).
async fn until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Ends timed-out warming (`initial_fetch_timeout`) and publishes the result.
fn expire_fetches(app: &App, state: &mut State) {
    if !state.expire_fetches(std::time::Instant::now()) {
        return;
    }
    if let Err(e) = app.apply(state.inputs(), &Default::default()) {
        tracing::warn!(error = %format!("{e:#}"), "applying the config after an initial fetch timeout failed");
    }
    mark_if_initialized(app, state);
}

/// As Envoy: initialisation (and so `/ready`) waits for the wildcard types, every listener's
/// routes and every EDS cluster's first assignment; each source's `initial_fetch_timeout` ends
/// that wait (`expire_fetches` puts stand-ins in place).
fn mark_if_initialized(app: &App, state: &State) {
    if state.initialized() && app.listeners_warm(state.store.listeners.keys()) && state.clusters_warm() {
        app.mark_initialized();
    }
}

/// Awaits `fut`, meanwhile ending the warming of whatever initial fetch times out.
async fn expiring<T>(app: &App, state: &mut State, fut: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(fut);
    loop {
        let deadline = state.next_fetch_deadline();
        tokio::select! {
            r = &mut fut => return r,
            _ = until(deadline) => expire_fetches(app, state),
        }
    }
}

/// Connects, meanwhile ending the warming of whatever times out.
async fn connect_expiring(
    app: &App,
    state: &mut State,
) -> anyhow::Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> {
    loop {
        let deadline = state.next_fetch_deadline();
        let connected = tokio::select! {
            c = connect(app, state) => Some(c),
            _ = until(deadline) => None,
        };
        match connected {
            Some(c) => return c,
            None => expire_fetches(app, state),
        }
    }
}

async fn connect(
    app: &App,
    state: &State,
) -> anyhow::Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> {
    let addr = {
        let snap = app.live.load();
        let cluster = snap
            .clusters
            .get(state.dynamic.ads_cluster.as_str())
            .ok_or_else(|| anyhow::anyhow!("ADS cluster \"{}\" is missing", state.dynamic.ads_cluster))?;
        cluster.pick().ok_or_else(|| anyhow::anyhow!("ADS cluster has no endpoint"))?.addr
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await?;
    tracing::info!(%addr, "xDS stream connecting");
    Ok(AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

/// After an update: metrics, readiness, and memory the parse left behind (now, and once more
/// a moment later).
fn record(app: &App, state: &State, type_url: &str, out: &Outcome, trim_at: &mut Option<tokio::time::Instant>) {
    metrics().xds_update(short(type_url), out.error.is_none());
    if out.error.is_none() {
        mark_if_initialized(app, state);
        crate::app::release_free_memory();
        *trim_at = Some(tokio::time::Instant::now() + TRIM_AGAIN_AFTER);
    }
}

fn nack_status(error: &Option<String>) -> Option<Status> {
    error.as_ref().map(|message| Status { code: 3, message: message.clone(), details: vec![] })
}

// ---- state of the world ----

/// `first`: the stream's first request, the one that always carries the node.
fn sotw_request(state: &State, t: &'static str, nonce: &str, error: &Option<String>, first: bool) -> DiscoveryRequest {
    let ts = state.types.get(t);
    DiscoveryRequest {
        version_info: ts.map(|s| s.version.clone()).unwrap_or_default(),
        node: (first || !state.dynamic.node_on_first_message_only).then(|| state.node.clone()),
        resource_names: ts.map(|s| s.names.iter().map(|n| n.to_string()).collect()).unwrap_or_default(),
        type_url: t.to_string(),
        response_nonce: nonce.to_string(),
        error_detail: nack_status(error),
        ..Default::default()
    }
}

async fn sotw_session(app: &Arc<App>, state: &mut State) -> anyhow::Result<()> {
    let mut client = connect_expiring(app, state).await?;
    let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
    // On a new stream: everything wanted, with the versions already held, and no nonce.
    let mut first = true;
    let mut request = |state: &State, t: &'static str, nonce: &str, error: &Option<String>| {
        let r = sotw_request(state, t, nonce, error, first);
        first = false;
        r
    };
    for t in state.wanted_types() {
        tx.send(request(state, t, "", &None))?;
    }
    // grpc-go servers send the response headers with their first message: an initial fetch
    // times out even while the stream is still opening.
    let open = client.stream_aggregated_resources(UnboundedReceiverStream::new(rx));
    let mut stream = expiring(app, state, open).await?.into_inner();
    metrics().xds_connected.set(1);
    let mut trim_at = None;
    loop {
        let Some(mut resp) = expiring(app, state, next_message(&mut stream, &mut trim_at)).await? else { break };
        let out = handle_sotw(app, state, &mut resp);
        let t = type_key(&resp.type_url).unwrap_or(LISTENER);
        let (type_url, nonce) = (std::mem::take(&mut resp.type_url), std::mem::take(&mut resp.nonce));
        drop(resp);
        record(app, state, &type_url, &out, &mut trim_at);
        tx.send(request(state, t, &nonce, &out.error))?;
        for sub in out.subs {
            let nonce = state.types.get(sub.type_url).map(|s| s.nonce.clone()).unwrap_or_default();
            tx.send(request(state, sub.type_url, &nonce, &None))?;
        }
    }
    Ok(())
}

/// How long after an update the heap is trimmed once more: by then the ACK (with every
/// subscribed name, for EDS tens of thousands) has been encoded and sent, and freed.
const TRIM_AGAIN_AFTER: Duration = Duration::from_millis(200);

/// The next response; meanwhile, the delayed trim when it is due.
async fn next_message<T>(
    stream: &mut tonic::Streaming<T>,
    trim_at: &mut Option<tokio::time::Instant>,
) -> Result<Option<T>, tonic::Status> {
    loop {
        let Some(at) = *trim_at else { return stream.message().await };
        tokio::select! {
            m = stream.message() => return m,
            _ = tokio::time::sleep_until(at) => {
                *trim_at = None;
                crate::app::release_free_memory();
            }
        }
    }
}

fn handle_sotw(app: &Arc<App>, state: &mut State, resp: &mut DiscoveryResponse) -> Outcome {
    let Some(t) = type_key(&resp.type_url) else {
        return Outcome { error: Some(format!("unsupported type {}", resp.type_url)), subs: vec![] };
    };
    let DiscoveryResponse { version_info, nonce, resources, .. } = resp;
    let update = Update {
        type_url: t,
        version: version_info,
        nonce,
        resources: resources.iter_mut().map(|a| (None, "", a)).collect(),
        removed: &[],
        replace_all: matches!(t, LISTENER | CLUSTER),
    };
    let dump = app.xds.clone().unwrap_or_default();
    state.handle(update, |inputs, changed| app.apply(inputs, changed).map_err(|e| format!("{e:#}")), &dump)
}

// ---- incremental (delta) ----

async fn delta_session(app: &Arc<App>, state: &mut State) -> anyhow::Result<()> {
    let mut client = connect_expiring(app, state).await?;
    let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let dump = app.xds.clone().unwrap_or_default();
    // On a new stream: subscribe again, telling the server which versions are already held.
    for t in state.wanted_types() {
        let initial_resource_versions = dump
            .resources
            .lock()
            .unwrap()
            .get(t)
            .map(|m| m.iter().map(|(n, e)| (n.to_string(), e.version.to_string())).collect())
            .unwrap_or_default();
        let names = state.types.get(t).map(|s| s.names.iter().map(|n| n.to_string()).collect()).unwrap_or_default();
        tx.send(DeltaDiscoveryRequest {
            node: Some(state.node.clone()),
            type_url: t.to_string(),
            resource_names_subscribe: if matches!(t, LISTENER | CLUSTER) { vec![] } else { names },
            initial_resource_versions,
            ..Default::default()
        })?;
    }
    // grpc-go servers send the response headers with their first message: an initial fetch
    // times out even while the stream is still opening.
    let open = client.delta_aggregated_resources(UnboundedReceiverStream::new(rx));
    let mut stream = expiring(app, state, open).await?.into_inner();
    metrics().xds_connected.set(1);
    let mut trim_at = None;
    loop {
        let Some(mut resp) = expiring(app, state, next_message(&mut stream, &mut trim_at)).await? else { break };
        let out = handle_delta(app, state, &mut resp, &dump);
        let (type_url, nonce) = (std::mem::take(&mut resp.type_url), std::mem::take(&mut resp.nonce));
        drop(resp);
        record(app, state, &type_url, &out, &mut trim_at);
        tx.send(DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail: nack_status(&out.error),
            ..Default::default()
        })?;
        for sub in out.subs {
            tx.send(DeltaDiscoveryRequest {
                type_url: sub.type_url.to_string(),
                resource_names_subscribe: sub.added,
                resource_names_unsubscribe: sub.removed,
                ..Default::default()
            })?;
        }
    }
    Ok(())
}

fn handle_delta(
    app: &Arc<App>,
    state: &mut State,
    resp: &mut DeltaDiscoveryResponse,
    dump: &Arc<super::XdsDump>,
) -> Outcome {
    let Some(t) = type_key(&resp.type_url) else {
        return Outcome { error: Some(format!("unsupported type {}", resp.type_url)), subs: vec![] };
    };
    let DeltaDiscoveryResponse { system_version_info, nonce, resources: rs, removed_resources, .. } = resp;
    let mut resources = Vec::with_capacity(rs.len());
    for r in rs.iter_mut() {
        let Resource { name, version, resource, .. } = r;
        match resource {
            Some(any) => resources.push((Some(name.as_str()), version.as_str(), any)),
            None => return Outcome { error: Some(format!("resource \"{name}\" has no body")), subs: vec![] },
        }
    }
    let update = Update {
        type_url: t,
        version: system_version_info,
        nonce,
        resources,
        removed: removed_resources,
        replace_all: false,
    };
    state.handle(update, |inputs, changed| app.apply(inputs, changed).map_err(|e| format!("{e:#}")), dump)
}

fn short(type_url: &str) -> &'static str {
    match type_url {
        LISTENER => "lds",
        CLUSTER => "cds",
        ROUTE => "rds",
        ENDPOINT => "eds",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    /// When each of the first `n` sessions of `reconnecting` started, on paused time; `lived`
    /// says how long session i runs before it ends.
    async fn starts(lived: impl Fn(usize) -> Duration, n: usize) -> Vec<Duration> {
        let t0 = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut i = 0;
        let run = super::reconnecting(
            move || {
                let d = lived(i);
                i += 1;
                let _ = tx.send(t0.elapsed());
                tokio::time::sleep(d)
            },
            tokio::time::sleep_until,
        );
        let collect = async {
            let mut at = Vec::new();
            while at.len() < n {
                at.push(rx.recv().await.unwrap());
            }
            at
        };
        tokio::select! {
            _ = run => unreachable!(),
            at = collect => at,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_sessions_back_off_from_250ms_doubling_to_30s_with_jitter() {
        let at = starts(|_| Duration::ZERO, 12).await;
        assert_eq!(at.len(), 12);
        let mut cap = Duration::from_millis(250);
        for w in at.windows(2) {
            let gap = w[1] - w[0];
            // Half to all of the current step (1 ms: the timer's resolution).
            assert!(gap >= cap / 2 && gap <= cap + Duration::from_millis(1), "gap {gap:?} for step {cap:?}: {at:?}");
            cap = (cap * 2).min(Duration::from_secs(30));
        }
        assert_eq!(cap, Duration::from_secs(30), "the steps reached the cap");
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_that_lived_past_the_cap_resets_the_backoff() {
        // Five quick failures, then a long-lived stream, then another failure.
        let at = starts(|i| if i == 5 { Duration::from_secs(60) } else { Duration::ZERO }, 8).await;
        let wait_after = |i: usize, lived: Duration| at[i + 1] - at[i] - lived;
        assert!(wait_after(4, Duration::ZERO) >= Duration::from_secs(2), "{at:?}");
        let reset = wait_after(5, Duration::from_secs(60));
        assert!(reset <= Duration::from_millis(251), "after a long-lived stream: {reset:?}");
    }
}
