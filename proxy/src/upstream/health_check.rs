//! Active health checks (Envoy's `health_checks`, HTTP and TCP): a task per cluster probes every
//! endpoint each `interval` (`no_traffic_interval` while the cluster has had no requests). An
//! endpoint leaves the rotation after `unhealthy_threshold` failures in a row and returns after
//! `healthy_threshold` successes; as in Envoy, a new endpoint waits for its first check (one
//! success brings it in), and while too few are available the panic threshold sends traffic to
//! all of them anyway.
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::cluster::{Cluster, Endpoint};
use super::pool::connect_tcp;
use crate::config::cluster::{HealthCheck, HealthCheckKind};

/// Starts the checks of a cluster; they end when the cluster is dropped.
pub fn start(cluster: &Arc<Cluster>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let Some(hc) = cluster.config.health_check.clone() else { return };
    let weak = Arc::downgrade(cluster);
    rt.spawn(async move {
        let mut last_rq = u64::MAX;
        loop {
            let Some(cluster) = weak.upgrade() else { return };
            let rq = cluster.stats.rq.get();
            // Envoy's no_traffic_interval: probe less often a cluster nobody uses.
            let pause = if rq == last_rq { hc.no_traffic_interval } else { hc.interval };
            last_rq = rq;
            round(&cluster, &hc).await;
            drop(cluster);
            tokio::time::sleep(pause).await;
            if Weak::strong_count(&weak) == 0 {
                return;
            }
        }
    });
}

/// Checks every endpoint of the current set, concurrently.
async fn round(cluster: &Arc<Cluster>, hc: &HealthCheck) {
    let set = cluster.endpoints.load_full();
    let checks = set.list.iter().map(|ep| async move {
        cluster.stats.health_check_attempt.inc();
        let ok = tokio::time::timeout(hc.timeout, probe(cluster, ep, hc)).await.unwrap_or(false);
        if ok {
            cluster.stats.health_check_success.inc();
        } else {
            cluster.stats.health_check_failure.inc();
        }
        record(cluster, ep, hc, ok)
    });
    let changed = futures_util::future::join_all(checks).await.into_iter().any(|c| c);
    if changed {
        cluster.membership_changed();
    }
}

/// Applies one verdict; true when the endpoint changed state.
fn record(cluster: &Cluster, ep: &Endpoint, hc: &HealthCheck, ok: bool) -> bool {
    let h = &ep.health;
    let failed = h.hc_failed.load(Ordering::Relaxed);
    if ok {
        h.hc_failures.store(0, Ordering::Relaxed);
        let n = h.hc_successes.fetch_add(1, Ordering::Relaxed) + 1;
        let first = !h.hc_checked.swap(true, Ordering::Relaxed);
        if failed && (first || n >= hc.healthy_threshold) {
            h.hc_failed.store(false, Ordering::Relaxed);
            tracing::info!(cluster = %cluster.name, endpoint = %ep.addr, "health check passed; endpoint in rotation");
            return true;
        }
    } else {
        h.hc_successes.store(0, Ordering::Relaxed);
        h.hc_checked.store(true, Ordering::Relaxed);
        let n = h.hc_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !failed && n >= hc.unhealthy_threshold {
            h.hc_failed.store(true, Ordering::Relaxed);
            tracing::info!(cluster = %cluster.name, endpoint = %ep.addr, failures = n, "health check failed; endpoint out of rotation");
            return true;
        }
    }
    false
}

async fn probe(cluster: &Cluster, ep: &Endpoint, hc: &HealthCheck) -> bool {
    let Ok(stream) = connect_tcp(ep.addr, hc.timeout, None).await else { return false };
    match &hc.kind {
        HealthCheckKind::Tcp => true,
        HealthCheckKind::Http { path, host, expected } => {
            let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
                return false;
            };
            tokio::spawn(conn);
            let host = host.as_deref().unwrap_or(&cluster.name);
            let req = http::Request::get(path.as_str())
                .header(http::header::HOST, host)
                .header(http::header::USER_AGENT, "Envoy/HC")
                .header(http::header::CONNECTION, "close")
                .body(Empty::<bytes::Bytes>::new());
            let Ok(req) = req else { return false };
            match sender.send_request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16() as i64;
                    let _ = resp.into_body().collect().await;
                    expected.iter().any(|(start, end)| (*start..*end).contains(&status))
                }
                Err(_) => false,
            }
        }
    }
}

/// Envoy's `no_traffic_interval` when unset: how often a cluster without requests is checked.
pub const DEFAULT_NO_TRAFFIC_INTERVAL: Duration = Duration::from_secs(60);
