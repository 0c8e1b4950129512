//! One HTTP request's path through the proxy: check, route, pick a cluster and endpoint, rewrite
//! headers, send upstream, relay the response, record the outcome.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::body::{ProxyBody, StreamDone};
use super::local_reply::{self, Flag};
use super::route_match::{self, RouteInput};
use super::upstream::{self, Wire};
use super::{headers, smuggling, upgrade};
use crate::config::{Action, PathMatch, Redirect, Route, RouteAction, UpstreamProtocol};
use crate::snapshot::{HttpManager, Snapshot};
use crate::telemetry::access_log::{now_rfc3339, Entry, Logger};

/// What every request on a downstream connection shares.
pub struct ConnCtx {
    /// The live snapshot: each request routes with the route tables and clusters current when
    /// it starts (Envoy's RDS/CDS semantics); the listener settings stay the connection's own.
    pub live: Arc<arc_swap::ArcSwap<Snapshot>>,
    pub hcm: Arc<HttpManager>,
    pub peer: SocketAddr,
    /// Where the connection was headed before iptables REDIRECT (for ORIGINAL_DST clusters).
    pub original_dst: Option<SocketAddr>,
    pub tls: bool,
    /// For the connection idle timeout: requests being handled, and when the last one ended.
    pub activity: Activity,
}

/// A connection is idle when no request is being handled; `last` is when that started.
pub struct Activity {
    base: tokio::time::Instant,
    active: std::sync::atomic::AtomicU32,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity { base: tokio::time::Instant::now(), active: Default::default(), last_ms: Default::default() }
    }
}

impl Activity {
    fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
    }
    fn end(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.active.fetch_sub(1, Ordering::Relaxed);
    }
    /// Resolves once the connection has been idle for `timeout`.
    pub async fn idle_for(&self, timeout: std::time::Duration) {
        loop {
            let last = self.base + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if self.active.load(Ordering::Relaxed) == 0 && tokio::time::Instant::now() >= deadline {
                return;
            }
            let now = tokio::time::Instant::now();
            tokio::time::sleep_until(if deadline > now { deadline } else { now + timeout }).await;
        }
    }
}

/// The access-log record of one request, written when the response ends.
pub struct LogRecord {
    logger: Logger,
    entry: Entry,
    start: Instant,
}

impl LogRecord {
    pub fn finish(&mut self, bytes_sent: u64, aborted: bool) {
        self.entry.bytes_sent = bytes_sent;
        if aborted && self.entry.response_flags == "-" {
            self.entry.response_flags = "DC".into();
        }
        self.entry.duration_ms = self.start.elapsed().as_millis() as u64;
        self.logger.log(&self.entry);
    }
}

pub async fn handle(ctx: Arc<ConnCtx>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let hcm = &ctx.hcm;
    hcm.stats.rq.inc();
    hcm.stats.rq_active.inc();
    ctx.activity.begin();
    let mut log = hcm.log.as_ref().map(|l| Box::new(LogRecord::new(l.clone(), &ctx, &req)));
    let resp = match proxy(&ctx, req, &mut log).await {
        Ok(r) => r,
        Err(flag) => {
            let r = local_reply::for_flag(flag);
            if let Some(l) = log.as_mut() {
                l.entry.response_flags = flag.as_str().into();
            }
            r
        }
    };
    hcm.stats.rq_active.dec();
    ctx.activity.end();
    hcm.stats.response(resp.status().as_u16());
    Ok(finish_response(&ctx, resp, log))
}

impl LogRecord {
    fn new(logger: Logger, ctx: &ConnCtx, req: &Request<Incoming>) -> LogRecord {
        let entry = Entry {
            start_time: now_rfc3339(),
            method: Some(req.method().to_string()),
            path: req.uri().path_and_query().map(|p| p.to_string()),
            protocol: format!("{:?}", req.version()),
            response_flags: "-".into(),
            downstream_remote_address: ctx.peer.to_string(),
            authority: host_of(req).map(str::to_string),
            x_request_id: req.headers().get(&headers::X_REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_string),
            ..Default::default()
        };
        LogRecord { logger, entry, start: Instant::now() }
    }
}

fn finish_response(ctx: &ConnCtx, mut resp: Response<ProxyBody>, log: Option<Box<LogRecord>>) -> Response<ProxyBody> {
    headers::server(resp.headers_mut(), &ctx.hcm.config.server_header);
    let Some(mut log) = log else { return resp };
    log.entry.response_code = resp.status().as_u16();
    match resp.body_mut() {
        ProxyBody::Upstream { done: Some(d), .. } => d.log = Some(log),
        ProxyBody::Full(b) => log.finish(b.as_ref().map(|b| b.len() as u64).unwrap_or(0), false),
        ProxyBody::Upstream { done: None, .. } => log.finish(0, false),
    }
    resp
}

fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
}

async fn proxy(
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    log: &mut Option<Box<LogRecord>>,
) -> Result<Response<ProxyBody>, Flag> {
    let cfg = &ctx.hcm.config;
    if req.headers().contains_key(&smuggling::MARKER) {
        tracing::debug!(peer = %ctx.peer, "rejected ambiguous request framing (Content-Length)");
        let mut r = local_reply::response(StatusCode::BAD_REQUEST, "Bad Request");
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(r);
    }
    let Some(host) = host_of(&req).map(str::to_string) else {
        return Ok(local_reply::response(StatusCode::BAD_REQUEST, "missing host header"));
    };
    let upgrade = upgrade::requested(&req);
    let is_connect = req.method() == Method::CONNECT;
    if let Some(u) = &upgrade {
        if !cfg.upgrades.iter().any(|a| a.eq_ignore_ascii_case(u)) {
            return Ok(local_reply::response(StatusCode::FORBIDDEN, ""));
        }
    }
    if is_connect && !cfg.allow_connect {
        return Ok(local_reply::response(StatusCode::FORBIDDEN, ""));
    }

    let input = RouteInput {
        host: &host,
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        scheme: if ctx.tls { "https" } else { "http" },
        headers: req.headers(),
    };
    let snap = ctx.live.load_full();
    let routes = match &ctx.hcm.rds_name {
        Some(name) => snap.rds.get(name).unwrap_or(&ctx.hcm.routes),
        None => &ctx.hcm.routes,
    };
    let Some(route) = route_match::select(routes, &input) else { return Err(Flag::NoRoute) };
    if let Some(l) = log.as_mut() {
        l.entry.route_name = Some(route.name.clone());
    }
    let action = match &route.action {
        Action::Direct { status, body } => {
            let mut r = Response::new(ProxyBody::full(body.clone()));
            *r.status_mut() = *status;
            if !body.is_empty() {
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            return Ok(r);
        }
        Action::Redirect(rd) => return Ok(redirect(rd, route, &req, &host, ctx.tls)),
        Action::Route(a) => a,
    };

    let cluster_name = action.target.pick();
    let Some(cluster) = snap.clusters.get(cluster_name) else {
        // Envoy's NC flag, with the status the route's cluster_not_found_response_code names.
        if let Some(l) = log.as_mut() {
            l.entry.response_flags = Flag::NoCluster.as_str().into();
        }
        return Ok(local_reply::response(action.cluster_not_found, ""));
    };
    if let Some(l) = log.as_mut() {
        l.entry.upstream_cluster = Some(cluster_name.to_string());
    }
    let Some(ep) = cluster.pick_for(ctx.original_dst) else {
        cluster.stats.none_healthy.inc();
        return Err(Flag::NoHealthyUpstream);
    };
    if let Some(l) = log.as_mut() {
        l.entry.upstream_host = Some(ep.addr.to_string());
    }
    cluster.stats.rq.inc();

    // Request headers as the upstream must see them.
    let downstream_version = req.version();
    {
        let h = req.headers_mut();
        headers::remove_hop_by_hop(h, upgrade.is_some());
        headers::forwarded(h, ctx.peer.ip(), cfg.use_remote_address, cfg.skip_xff_append, ctx.tls);
        let id =
            headers::request_id(h, cfg.generate_request_id, cfg.preserve_external_request_id, cfg.use_remote_address);
        if let (Some(l), Some(id)) = (log.as_mut(), id) {
            l.entry.x_request_id = id.to_str().ok().map(str::to_string);
        }
    }
    rewrite(&mut req, route, action, &host);

    if upgrade.is_some() || is_connect {
        let r = upgrade::tunnel(cluster, &ep, req, action.terminate_connect && is_connect).await;
        if let Ok(resp) = &r {
            cluster.stats.response(resp.status().as_u16());
        }
        return r;
    }

    let wire = match cluster.config.protocol {
        UpstreamProtocol::Http1 => Wire::Http1,
        UpstreamProtocol::Http2 => Wire::Http2,
        UpstreamProtocol::Downstream if downstream_version == Version::HTTP_2 => Wire::Http2,
        UpstreamProtocol::Downstream => Wire::Http1,
    };
    prepare_uri(&mut req, wire, &host);

    ep.active_requests.fetch_add(1, Ordering::Relaxed);
    let mut done = StreamDone { pool: None, endpoint: Some(ep.clone()), log: None, bytes_sent: 0, complete: false };
    let sent = upstream::send(cluster, &ep, wire, req);
    let result = match action.timeout {
        Some(t) => match tokio::time::timeout(t, sent).await {
            Ok(r) => r,
            Err(_) => {
                cluster.stats.rq_timeout.inc();
                Err(Flag::UpstreamTimeout)
            }
        },
        None => sent.await,
    };
    let (mut resp, pool) = result?;
    *resp.version_mut() = downstream_version;
    cluster.stats.response(resp.status().as_u16());
    headers::remove_hop_by_hop(resp.headers_mut(), false);
    done.pool = pool;
    if resp.body().is_end_stream() {
        done.complete = true;
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::Upstream { body, done: Some(done) }))
}

/// prefix_rewrite and host_rewrite_literal.
fn rewrite(req: &mut Request<Incoming>, route: &Route, action: &RouteAction, host: &str) {
    if let Some(h) = &action.host_rewrite {
        req.headers_mut().insert(header::HOST, h.clone());
        if req.version() == Version::HTTP_2 {
            if let Ok(uri) = with_authority(req.uri(), h.to_str().unwrap_or(host)) {
                *req.uri_mut() = uri;
            }
        }
    }
    let Some(new_prefix) = &action.prefix_rewrite else { return };
    let path = req.uri().path();
    let matched = match &route.path {
        PathMatch::Prefix(p) | PathMatch::Separated(p) => p.len(),
        PathMatch::Exact(p) => p.len(),
        _ => return,
    };
    let mut new_path = String::with_capacity(path.len() + new_prefix.len());
    new_path.push_str(new_prefix);
    new_path.push_str(path.get(matched..).unwrap_or(""));
    if let Some(q) = req.uri().query() {
        new_path.push('?');
        new_path.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = new_path.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(u) = Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
}

fn with_authority(uri: &Uri, authority: &str) -> Result<Uri, http::Error> {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Uri::builder().scheme(uri.scheme_str().unwrap_or("http")).authority(authority).path_and_query(pq).build()
}

/// HTTP/1.1 upstreams get origin-form and a Host header; HTTP/2 upstreams get scheme and authority.
fn prepare_uri(req: &mut Request<Incoming>, wire: Wire, host: &str) {
    match wire {
        Wire::Http1 => {
            if req.uri().authority().is_some() {
                let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
                if !req.headers().contains_key(header::HOST) {
                    if let Ok(v) = HeaderValue::from_str(&authority) {
                        req.headers_mut().insert(header::HOST, v);
                    }
                }
                let pq = req.uri().path_and_query().cloned();
                let mut parts = http::uri::Parts::default();
                parts.path_and_query = pq.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
                if let Ok(u) = Uri::from_parts(parts) {
                    *req.uri_mut() = u;
                }
            }
        }
        Wire::Http2 => {
            let authority = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(host).to_string();
            if let Ok(u) = with_authority(req.uri(), &authority) {
                *req.uri_mut() = u;
            }
            req.headers_mut().remove(header::HOST);
        }
    }
}

fn redirect(rd: &Redirect, route: &Route, req: &Request<Incoming>, host: &str, tls: bool) -> Response<ProxyBody> {
    let orig_scheme = if tls { "https" } else { "http" };
    let scheme = rd.scheme.as_deref().unwrap_or(orig_scheme);
    let (orig_host, orig_port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host.starts_with('[') => (h, Some(p)),
        _ => (host, None),
    };
    let new_host = rd.host.as_deref().unwrap_or(orig_host);
    let port = match (rd.port, orig_port) {
        (Some(p), _) => Some(p.to_string()),
        // Changing the scheme drops the old scheme's port, as Envoy does.
        (None, Some(_)) if scheme != orig_scheme => None,
        (None, p) if rd.host.is_none() => p.map(str::to_string),
        _ => None,
    };
    let path = req.uri().path();
    let new_path = match (&rd.path, &rd.prefix_rewrite, &route.path) {
        (Some(p), _, _) => p.clone(),
        (None, Some(pr), PathMatch::Prefix(p) | PathMatch::Separated(p)) => {
            format!("{pr}{}", path.get(p.len()..).unwrap_or(""))
        }
        _ => path.to_string(),
    };
    let mut loc = format!("{scheme}://{new_host}");
    if let Some(p) = port {
        loc.push(':');
        loc.push_str(&p);
    }
    loc.push_str(&new_path);
    if !rd.strip_query && rd.path.as_deref().is_none_or(|p| !p.contains('?')) {
        if let Some(q) = req.uri().query() {
            loc.push('?');
            loc.push_str(q);
        }
    }
    let mut r = Response::new(ProxyBody::empty());
    *r.status_mut() = rd.status;
    if let Ok(v) = HeaderValue::from_str(&loc) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
