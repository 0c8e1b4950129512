//! `request_mirror_policies`: a copy of the request goes to the shadow cluster, authority
//! suffixed `-shadow`, fire and forget. The copy is made once the primary has read the whole
//! body (within the route's buffer bound; a body past it is not mirrored). The shadow's answer
//! is read and dropped; nothing it does reaches the primary. Shadows in flight are bounded, and
//! the shadow cluster's circuit breakers apply: overflow is counted and dropped, never queued.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, Uri, Version};
use http_body_util::BodyExt;

use super::upstream::{self, BodySource, Outgoing, Wire};
use crate::config::route::Mirror;
use crate::upstream::Cluster;

/// Shadows in flight in the whole process: each holds a connection and its buffers (~20 KiB),
/// so this bounds the memory a slow shadow can take (~5 MiB).
const MAX_IN_FLIGHT: usize = 256;
/// A shadow with no route timeout still ends.
const MAX_SHADOW_TIME: Duration = Duration::from_secs(60);

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a shadow copies of the primary request.
pub struct Original<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    pub host: &'a str,
    /// None: no body; Some: the primary's tee, complete once it has been read.
    pub body: Option<super::request_body::Tee>,
}

/// Whether this request is mirrored by `m` (its `runtime_fraction`).
pub fn sampled(m: &Mirror) -> bool {
    m.numerator > 0 && fastrand::u32(0..m.denominator) < m.numerator
}

/// Starts the shadow of `req` to `cluster`.
pub fn spawn(m: &Mirror, cluster: Arc<Cluster>, wire: Wire, req: Original<'_>, timeout: Option<Duration>) {
    let stats = cluster.stats.clone();
    if IN_FLIGHT.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
        stats.shadow_overflow.inc();
        return;
    }
    let slot = Slot;
    let mut headers = req.headers.clone();
    let host = if m.keep_host { req.host.to_string() } else { shadow_host(req.host) };
    let Ok(host_value) = HeaderValue::from_str(&host) else { return };
    headers.insert(header::HOST, host_value);
    let uri = match wire {
        Wire::Http1 => req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").parse().unwrap_or_default(),
        Wire::Http2 => Uri::builder()
            .scheme("http")
            .authority(host.as_str())
            .path_and_query(req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .build()
            .unwrap_or_default(),
    };
    if wire == Wire::Http2 {
        headers.remove(header::HOST);
    }
    let method = req.method.clone();
    let version = req.version;
    let tee = req.body;
    let limit = timeout.unwrap_or(MAX_SHADOW_TIME).min(MAX_SHADOW_TIME);
    tokio::spawn(async move {
        let _slot = slot;
        // The whole shadow, the wait for the primary's body included, within the limit: a body
        // the primary never finishes reading does not hold the slot for ever.
        let _ = tokio::time::timeout(limit, async move {
            let body = match tee {
                None => BodySource::Empty,
                Some(t) => match t.complete().await {
                    Some(frames) => BodySource::Captured(Some(frames.into())),
                    // Past the buffer bound, or the client's body failed: no shadow.
                    None => {
                        stats.shadow_overflow.inc();
                        return;
                    }
                },
            };
            let mut out = Outgoing { method, uri, version, headers, body };
            shadow(&cluster, wire, &mut out).await;
        })
        .await;
    });
}

async fn shadow(cluster: &Cluster, wire: Wire, out: &mut Outgoing) {
    let stats = &cluster.stats;
    if stats.at_max_requests() {
        stats.shadow_overflow.inc();
        stats.rq_pending_overflow.inc();
        return;
    }
    let Some(ep) = cluster.pick() else {
        stats.none_healthy.inc();
        return;
    };
    stats.shadow_sent.inc();
    stats.rq.inc();
    let _flight = super::forward::InFlight::new(ep.clone(), cluster.stats.clone());
    let r = upstream::send(cluster, &ep, wire, out, false).await;
    if let Ok((resp, pool)) = r {
        stats.response(resp.status().as_u16());
        // Read to the end so that the connection can be used again.
        if resp.into_body().collect().await.is_ok() {
            if let Some(p) = pool {
                p.give_back();
            }
        }
    }
}

/// `host` or `host:port` → `host-shadow[:port]`, as Envoy names the shadow's authority.
fn shadow_host(host: &str) -> String {
    if let Some((h, p)) = host.rsplit_once(':') {
        let bare_ipv6 = host.starts_with('[') && !h.ends_with(']');
        if !bare_ipv6 && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            return format!("{h}-shadow:{p}");
        }
    }
    format!("{host}-shadow")
}

#[cfg(test)]
mod tests {
    #[test]
    fn shadow_authority_gets_the_suffix_before_the_port() {
        assert_eq!(super::shadow_host("api.example.com"), "api.example.com-shadow");
        assert_eq!(super::shadow_host("api:8080"), "api-shadow:8080");
        assert_eq!(super::shadow_host("[::1]:80"), "[::1]-shadow:80");
        assert_eq!(super::shadow_host("[::1]"), "[::1]-shadow");
    }
}
