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
use super::request_body::Tee;
use super::route_match::{self, RouteInput};
use super::upstream::{BodySource, Outgoing, Wire};
use super::{filters, forward, headers, mirror, smuggling, upgrade};
use crate::config::{Action, PathMatch, Redirect, Route, RouteAction, UpstreamProtocol};
use crate::snapshot::{HttpManager, Snapshot};
use crate::telemetry::access_log::{now_rfc3339, Entry, Logger};
use crate::upstream::hash::HashInput;

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
    /// Shared with the connection's HTTP/1 framing guard.
    pub gate: Arc<smuggling::Gate>,
    /// Requests seen, for `max_requests_per_connection`.
    pub requests: std::sync::atomic::AtomicU32,
    /// Signalled when the connection must drain (its request limit was reached).
    pub retire: tokio::sync::Notify,
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
    /// Adds a response flag (after any already there).
    pub fn flag(&mut self, f: Flag) {
        if self.entry.response_flags == "-" {
            self.entry.response_flags = f.as_str().into();
        } else {
            self.entry.response_flags = format!("{},{}", self.entry.response_flags, f.as_str());
        }
    }

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
    let ticket = ctx.gate.start();
    let is_connect = req.method() == Method::CONNECT;
    let is_h2 = req.version() == Version::HTTP_2;
    let mut log = hcm.log.as_ref().map(|l| Box::new(LogRecord::new(l.clone(), &ctx, &req)));
    let mut flags = Vec::new();
    let mut held = filters::Held::default();
    let result = if ticket.refused() {
        tracing::debug!(peer = %ctx.peer, "rejected ambiguous or invalid request framing");
        Err(Flag::DownstreamProtocolError)
    } else {
        proxy(&ctx, req, &mut log, &mut flags, &mut held).await
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(flag) => {
            let mut r = local_reply::for_flag(flag);
            if flag == Flag::DownstreamProtocolError {
                // What follows a framing error cannot be parsed: the connection ends here.
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            flags.insert(0, flag);
            r
        }
    };
    filters::response_phase(&hcm.config.http_filters, &mut resp, &mut held);
    if let Some(max) = hcm.config.max_requests_per_connection {
        if ctx.requests.fetch_add(1, Ordering::Relaxed) + 1 >= max {
            if !is_h2 {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ctx.retire.notify_one();
        }
    }
    drop(held);
    if let Some(l) = log.as_mut() {
        if !flags.is_empty() {
            l.entry.response_flags = flags.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(",");
        }
    }
    // hyper switches the connection to a tunnel exactly on these answers.
    let status = resp.status();
    ticket.finish(status == StatusCode::SWITCHING_PROTOCOLS || (is_connect && status.is_success()));
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
            downstream_remote_address: {
                let cfg = &ctx.hcm.config;
                headers::trusted_client(req.headers(), ctx.peer, cfg.use_remote_address, cfg.xff_num_trusted_hops)
                    .to_string()
            },
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
    flags: &mut Vec<Flag>,
    held: &mut filters::Held,
) -> Result<Response<ProxyBody>, Flag> {
    let cfg = &ctx.hcm.config;
    let started = tokio::time::Instant::now();
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
    let route = route_match::select(routes, &input);
    if let (Some(l), Some(r)) = (log.as_mut(), route) {
        l.entry.route_name = Some(r.name.clone());
    }
    // The filters see the request before the router acts on the route (as in Envoy, where a
    // filter may answer before the router runs).
    if !cfg.http_filters.is_empty() {
        if let Some(r) = filters::request_phase(&cfg.http_filters, &mut req, route, flags, held).await {
            return Ok(r);
        }
    }
    let Some(route) = route else { return Err(Flag::NoRoute) };
    let action = match &route.action {
        Action::Direct { status, body } => {
            let mut r = Response::new(ProxyBody::full(body.clone()));
            *r.status_mut() = *status;
            if !body.is_empty() {
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            route.response_headers.apply(r.headers_mut());
            return Ok(r);
        }
        Action::Redirect(rd) => {
            let mut r = redirect(rd, route, &req, &host, ctx.tls);
            route.response_headers.apply(r.headers_mut());
            return Ok(r);
        }
        Action::Route(a) => a,
    };

    let cluster_name = action.target.pick();
    let Some(cluster) = snap.clusters.get(cluster_name) else {
        // The status is the route's cluster_not_found_response_code; the flag is always NC.
        flags.push(Flag::NoCluster);
        return Ok(local_reply::response(action.cluster_not_found, ""));
    };
    if let Some(l) = log.as_mut() {
        l.entry.upstream_cluster = Some(cluster_name.to_string());
    }

    // Request headers as the upstream must see them.
    let downstream_version = req.version();
    let trusted = !cfg.use_remote_address || {
        let client = headers::trusted_client(req.headers(), ctx.peer, true, cfg.xff_num_trusted_hops);
        headers::is_internal(client.ip())
    };
    let asked = headers::timeout_headers(req.headers_mut(), trusted, cfg.respect_expected_rq_timeout);
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
    if !route.request_headers.is_empty() {
        route.request_headers.apply(req.headers_mut());
    }

    if upgrade.is_some() || is_connect {
        let Some(ep) = cluster.pick_for(ctx.original_dst) else {
            cluster.stats.none_healthy.inc();
            return Err(Flag::NoHealthyUpstream);
        };
        if let Some(l) = log.as_mut() {
            l.entry.upstream_host = Some(ep.addr.to_string());
        }
        cluster.stats.rq.inc();
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

    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        BodySource::Empty
    } else if action.retry.is_some() || !action.mirrors.is_empty() || cfg.request_timeout.is_some() {
        // Kept for a retry or a shadow, or watched for its end (request_timeout).
        BodySource::Tee(Tee::new(body, action.buffer_limit))
    } else {
        BodySource::Once(Some(body))
    };
    for m in action.mirrors.iter() {
        let Some(shadow) = snap.clusters.get(m.cluster.as_str()).filter(|_| mirror::sampled(m)) else { continue };
        let original = mirror::Original {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            host: &host,
            body: match &body {
                BodySource::Tee(t) => Some(t.clone()),
                _ => None,
            },
        };
        let shadow_wire = if shadow.config.protocol == UpstreamProtocol::Http2 { Wire::Http2 } else { Wire::Http1 };
        mirror::spawn(m, shadow.clone(), shadow_wire, original, action.timeout);
    }
    let (hash, new_cookie) = if action.hash_policy.is_empty() {
        (None, None)
    } else {
        let input = HashInput { headers: &parts.headers, query: parts.uri.query(), peer: ctx.peer };
        crate::upstream::hash::request_hash(&action.hash_policy, &input)
    };
    let mut out =
        Outgoing { method: parts.method, uri: parts.uri, version: parts.version, headers: parts.headers, body };
    // The stream idle timeout (the route's, else the connection manager's): with nothing left
    // to send (no request body), waiting for the answer is idleness too.
    let idle = action.idle_timeout.unwrap_or(cfg.stream_idle_timeout);
    let no_body = matches!(out.body, BodySource::Empty);
    // The maximum stream duration: a gRPC caller's grpc-timeout when the route takes it, else
    // the route's; it covers the body too.
    let grpc_timeout = action.grpc_timeout_max.and_then(|cap| Some((cap, headers::grpc_timeout(&out.headers)?)));
    let max_duration = match grpc_timeout {
        Some((cap, t)) => {
            let t = t.saturating_sub(action.grpc_timeout_offset);
            Some(cap.map_or(t, |c| t.min(c)))
        }
        None => action.max_stream_duration,
    };
    let stream_deadline = max_duration.map(|d| tokio::time::Instant::now() + d);
    // request_timeout: the whole request must have arrived by then (or the answer have begun).
    let upload = match (&out.body, cfg.request_timeout) {
        (BodySource::Tee(t), Some(rt)) => Some((t.clone(), started + rt)),
        _ => None,
    };
    // Pinned where it is: the wrappers below hold a pointer to it, so its (large) state is not
    // copied into each of them.
    let forwarding = forward::forward(cluster, action, wire, &mut out, ctx.original_dst, hash, asked);
    tokio::pin!(forwarding);
    let sending = async {
        match stream_deadline {
            Some(at) => tokio::time::timeout_at(at, forwarding.as_mut()).await.map_err(|_| Flag::MaxStreamDuration),
            None => Ok(forwarding.as_mut().await),
        }
    };
    let sending = async {
        match upload {
            Some((tee, at)) => tokio::select! {
                r = sending => r,
                _ = overdue(&tee, at) => Err(Flag::RequestTimeout),
            },
            None => sending.await,
        }
    };
    let sent = match idle.filter(|i| no_body && action.timeout.is_none_or(|t| *i < t)) {
        Some(i) => match tokio::time::timeout(i, sending).await {
            Ok(s) => s?,
            Err(_) => return Err(Flag::StreamIdleTimeout),
        },
        None => sending.await?,
    };
    if let (Some(l), Some(h)) = (log.as_mut(), sent.upstream_host) {
        l.entry.upstream_host = Some(h.to_string());
    }
    if sent.exhausted {
        flags.push(Flag::RetryLimitExceeded);
    }
    let fw = sent.result?;
    let mut resp = fw.resp;
    *resp.version_mut() = downstream_version;
    cluster.stats.response(resp.status().as_u16());
    headers::remove_hop_by_hop(resp.headers_mut(), false);
    route.response_headers.apply(resp.headers_mut());
    if let Some(c) = new_cookie {
        if let Ok(v) = HeaderValue::from_str(&c.set_cookie()) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    // The body relay is watched when the timeout was asked for (the route's, or an explicit
    // stream_idle_timeout): a timer per response is not worth it for the 5-minute default.
    let body_idle = match action.idle_timeout {
        Some(i) => i,
        None if cfg.stream_idle_explicit => cfg.stream_idle_timeout,
        None => None,
    };
    let mut done = StreamDone {
        idle: body_idle,
        idle_timer: None,
        deadline: stream_deadline,
        deadline_timer: None,
        pool: fw.pool,
        flight: Some(fw.flight),
        log: None,
        bytes_sent: 0,
        complete: false,
    };
    if resp.body().is_end_stream() {
        done.complete = true;
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, ProxyBody::Upstream { body, done: Some(done) }))
}

/// Resolves at `at` unless the body has been read to its end by then (then never).
async fn overdue(tee: &Tee, at: tokio::time::Instant) {
    tokio::select! {
        _ = tee.finished() => std::future::pending().await,
        _ = tokio::time::sleep_until(at) => {}
    }
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
    let path = req.uri().path();
    let new_path = if let Some(rr) = &action.regex_rewrite {
        rr.pattern.replace_all(path, rr.substitution.as_str()).into_owned()
    } else if let Some(new_prefix) = &action.prefix_rewrite {
        let Some(matched) = matched_len(&route.path, path) else { return };
        format!("{new_prefix}{}", path.get(matched..).unwrap_or(""))
    } else {
        return;
    };
    let mut new_path = new_path;
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

/// How much of `path` a prefix rewrite replaces: the matched prefix, or for exact and regex
/// matches (which match the whole path) all of it, as Envoy does.
fn matched_len(m: &PathMatch, path: &str) -> Option<usize> {
    match m {
        PathMatch::Prefix(p) | PathMatch::Separated(p) => Some(p.len()),
        PathMatch::Exact(_) | PathMatch::Regex(_) => Some(path.len()),
        PathMatch::Connect => None,
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
        (None, Some(pr), m) => match matched_len(m, path) {
            Some(n) => format!("{pr}{}", path.get(n..).unwrap_or("")),
            None => path.to_string(),
        },
        (None, None, _) => path.to_string(),
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
