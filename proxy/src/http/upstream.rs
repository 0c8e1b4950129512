//! The HTTP client side: take or open a connection to the chosen endpoint and send the request,
//! within the cluster's circuit breakers.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::local_reply::Flag;
use super::request_body::{RequestBody, Tee};
use crate::telemetry::stats::ClusterStats;
use crate::upstream::pool::{connect_tcp, ConnectError, H1Conn};
use crate::upstream::{Cluster, Endpoint};

/// Hands an HTTP/1.1 connection back to its pool; made only once the response body is complete.
pub struct PoolReturn {
    endpoint: Arc<Endpoint>,
    conn: H1Conn,
    stats: ClusterStats,
    max_uses: Option<u32>,
    max_age: Option<std::time::Duration>,
}

impl PoolReturn {
    pub fn give_back(self) {
        self.endpoint.pool.put_h1(self.conn, self.max_uses, self.max_age);
        self.stats.connection_freed();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// Where the body of the request comes from, for each attempt.
pub enum BodySource {
    /// No body: every attempt can be made.
    Empty,
    /// The downstream body, for one attempt only.
    Once(Option<Incoming>),
    /// Teed: attempts while the copy fits the buffer bound.
    Tee(Tee),
    /// A whole body captured earlier, for one attempt (a shadow).
    Captured(Option<std::collections::VecDeque<http_body::Frame<bytes::Bytes>>>),
}

/// A request as the router prepared it, from which each attempt's request is made.
pub struct Outgoing {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: BodySource,
}

impl Outgoing {
    /// Whether a (further) attempt can be made.
    pub fn can_send(&self) -> bool {
        match &self.body {
            BodySource::Empty => true,
            BodySource::Once(b) => b.is_some(),
            BodySource::Tee(t) => t.replayable(),
            BodySource::Captured(b) => b.is_some(),
        }
    }

    /// The request for one attempt. The head is copied when `again` says a later attempt may
    /// follow (and the body allows one); otherwise it is moved out.
    pub fn request(&mut self, again: bool) -> Option<Request<RequestBody>> {
        let (body, keep) = match &mut self.body {
            BodySource::Empty => (RequestBody::Empty, again),
            BodySource::Once(b) => (RequestBody::Stream(b.take()?), false),
            BodySource::Tee(t) => (t.attempt()?, again),
            BodySource::Captured(b) => (RequestBody::Captured(b.take()?), false),
        };
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.version_mut() = self.version;
        if keep {
            *req.uri_mut() = self.uri.clone();
            *req.headers_mut() = self.headers.clone();
        } else {
            *req.uri_mut() = std::mem::take(&mut self.uri);
            *req.headers_mut() = std::mem::take(&mut self.headers);
        }
        Some(req)
    }

    /// Takes back a request that was not sent (its connection was found closed first).
    fn put_back(&mut self, req: Request<RequestBody>) {
        let (parts, body) = req.into_parts();
        self.uri = parts.uri;
        self.headers = parts.headers;
        match (&mut self.body, body) {
            (BodySource::Once(slot), RequestBody::Stream(b)) => *slot = Some(b),
            (BodySource::Captured(slot), RequestBody::Captured(b)) => *slot = Some(b),
            _ => {}
        }
    }
}

/// Opens a TCP connection, counting it against the cluster's stats.
pub async fn open(cluster: &Cluster, ep: &Endpoint) -> Result<tokio::net::TcpStream, Flag> {
    match connect_tcp(ep.addr, cluster.config.connect_timeout, cluster.config.tcp_keepalive.as_ref()).await {
        Ok(s) => {
            cluster.stats.cx.inc();
            Ok(s)
        }
        Err(e) => {
            cluster.stats.connect_fail.inc();
            if matches!(e, ConnectError::Timeout) {
                cluster.stats.connect_timeout.inc();
            }
            tracing::debug!(cluster = %cluster.config.name, endpoint = %ep.addr, error = %e, "upstream connect failed");
            Err(Flag::UpstreamConnectFailure)
        }
    }
}

/// Sends one attempt and returns the response head; the body streams afterwards. `again`: the
/// caller may make another attempt (a retry policy), so the request head is kept.
pub async fn send(
    cluster: &Cluster,
    ep: &Arc<Endpoint>,
    wire: Wire,
    out: &mut Outgoing,
    again: bool,
) -> Result<(Response<Incoming>, Option<PoolReturn>), Flag> {
    match wire {
        Wire::Http1 => send_h1(cluster, ep, out, again).await,
        Wire::Http2 => send_h2(cluster, ep, out, again).await.map(|r| (r, None)),
    }
}

async fn send_h1(
    cluster: &Cluster,
    ep: &Arc<Endpoint>,
    out: &mut Outgoing,
    again: bool,
) -> Result<(Response<Incoming>, Option<PoolReturn>), Flag> {
    out.version = Version::HTTP_11;
    let pool_return = |conn| PoolReturn {
        endpoint: ep.clone(),
        conn,
        stats: cluster.stats.clone(),
        max_uses: cluster.config.max_requests_per_connection,
        max_age: cluster.config.max_connection_duration,
    };
    // Reuse idle connections. One that turns out closed before it took the request is skipped;
    // one that closes after taking it but before answering (the keep-alive race: the server
    // timed it out as we wrote) costs no failure when the request can be sent again: it is, once,
    // on a fresh connection. A server times out a keep-alive connection only once it has been
    // idle for a while (never under a millisecond), so the head is kept for that resend only
    // when the connection has been idle that long: under load, reuse copies nothing.
    let mut raced = false;
    loop {
        let mut sender = match ep.pool.take_h1(cluster.config.idle_timeout) {
            Some((conn, idle)) => H1 { conn, racy: idle >= RACE_IDLE },
            None => match open_h1(cluster, ep).await? {
                Some(s) => s,
                // At max_connections with nothing idle: wait for a connection to come back.
                None => continue,
            },
        };
        if sender.conn.sender.ready().await.is_err() {
            continue;
        }
        let resend = sender.racy && out.can_send();
        let Some(req) = out.request(again || resend) else {
            return Err(Flag::UpstreamConnectionTermination);
        };
        sender.conn.uses += 1;
        match sender.conn.sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, Some(pool_return(sender.conn)))),
            Err(mut e) => match e.take_message() {
                Some(r) => out.put_back(r),
                None => {
                    let flag = classify(e.error());
                    if resend && !raced && closed_before_answer(flag) && out.can_send() {
                        raced = true;
                        cluster.stats.rq_reset_before_response.inc();
                        tracing::debug!(endpoint = %ep.addr, "reused connection closed before answering; sending again");
                        continue;
                    }
                    return Err(flag);
                }
            },
        }
    }
}

/// How long a pooled connection must have been idle for its reuse to race a server's
/// keep-alive timeout.
const RACE_IDLE: std::time::Duration = std::time::Duration::from_millis(1);

/// An HTTP/1.1 sender; `racy`: a pooled one idle long enough that the server may be closing it.
struct H1 {
    conn: H1Conn,
    racy: bool,
}

/// Opens a new HTTP/1.1 connection, or — at the cluster's `max_connections` — waits as a pending
/// request (bounded by `max_pending_requests`) until a connection is freed, then returns None so
/// that the caller looks in the pool again.
async fn open_h1(cluster: &Cluster, ep: &Arc<Endpoint>) -> Result<Option<H1>, Flag> {
    let stats = &cluster.stats;
    if !stats.at_max_connections() {
        let stream = open(cluster, ep).await?;
        let (sender, conn) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(|_| Flag::UpstreamConnectFailure)?;
        let stats = stats.clone();
        stats.cx_active.inc();
        tokio::spawn(async move {
            let _ = conn.await;
            stats.cx_active.dec();
            stats.connection_freed();
        });
        return Ok(Some(H1 { conn: H1Conn { sender, created: std::time::Instant::now(), uses: 0 }, racy: false }));
    }
    stats.cx_overflow.inc();
    let Some(_pending) = stats.begin_pending() else {
        stats.rq_pending_overflow.inc();
        return Err(Flag::UpstreamOverflow);
    };
    stats.wait_for_connection(|| ep.pool.idle_h1() > 0 || !stats.at_max_connections()).await;
    Ok(None)
}

async fn send_h2(
    cluster: &Cluster,
    ep: &Arc<Endpoint>,
    out: &mut Outgoing,
    again: bool,
) -> Result<Response<Incoming>, Flag> {
    out.version = Version::HTTP_2;
    let mut raced = false;
    loop {
        let max_uses = cluster.config.max_requests_per_connection;
        let (mut sender, fresh) = match ep.pool.h2(max_uses) {
            Some(s) => (s, false),
            None => {
                // One connection per endpoint and worker: concurrent first requests share it.
                let _connecting = ep.pool.h2_connect_lock().await;
                match ep.pool.h2(max_uses) {
                    Some(s) => (s, false),
                    None => (open_h2(cluster, ep).await?, true),
                }
            }
        };
        if sender.ready().await.is_err() {
            if fresh {
                return Err(Flag::UpstreamConnectionTermination);
            }
            ep.pool.clear_h2();
            continue;
        }
        let Some(req) = out.request(again || (!fresh && out.can_send())) else {
            return Err(Flag::UpstreamConnectionTermination);
        };
        match sender.send_request(req).await {
            Ok(resp) => return Ok(resp),
            Err(e) => {
                let flag = classify(&e);
                // A stream refused or cut by the connection going away before any answer.
                if !fresh && !raced && closed_before_answer(flag) && out.can_send() {
                    raced = true;
                    ep.pool.clear_h2();
                    cluster.stats.rq_reset_before_response.inc();
                    continue;
                }
                return Err(flag);
            }
        }
    }
}

async fn open_h2(cluster: &Cluster, ep: &Arc<Endpoint>) -> Result<http2::SendRequest<RequestBody>, Flag> {
    if cluster.stats.at_max_connections() {
        cluster.stats.cx_overflow.inc();
        cluster.stats.rq_pending_overflow.inc();
        return Err(Flag::UpstreamOverflow);
    }
    let stream = open(cluster, ep).await?;
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(hyper_util::rt::TokioTimer::new());
    let (sender, conn) = b.handshake(TokioIo::new(stream)).await.map_err(|_| Flag::UpstreamConnectFailure)?;
    let stats = cluster.stats.clone();
    stats.cx_active.inc();
    let idle = cluster.config.idle_timeout;
    let uses = ep.pool.set_h2(sender.clone());
    let endpoint = ep.clone();
    if let Some(d) = cluster.config.max_connection_duration {
        let (ep, uses) = (ep.clone(), uses.clone());
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            ep.pool.retire_h2(&uses);
        });
    }
    tokio::spawn(async move {
        tokio::pin!(conn);
        // Closed after `idle_timeout` without a request started or in flight, as the HTTP/1.1
        // pool drops connections idle that long (dropping the connection closes it).
        match idle {
            Some(t) => {
                let mut seen = uses.load(Ordering::Relaxed);
                loop {
                    tokio::select! {
                        _ = conn.as_mut() => break,
                        _ = tokio::time::sleep(t) => {
                            let now = uses.load(Ordering::Relaxed);
                            if now == seen && endpoint.active_requests.load(Ordering::Relaxed) == 0 {
                                tracing::debug!(endpoint = %endpoint.addr, "upstream HTTP/2 connection idle; closing");
                                break;
                            }
                            seen = now;
                        }
                    }
                }
            }
            None => {
                let _ = conn.as_mut().await;
            }
        }
        stats.cx_active.dec();
        stats.connection_freed();
    });
    Ok(sender)
}

/// A reused connection that failed this way before any response byte arrived was closed by
/// the server as the request went out (closed or reset): the request can be sent again.
fn closed_before_answer(flag: Flag) -> bool {
    matches!(flag, Flag::UpstreamConnectionTermination | Flag::UpstreamReset | Flag::UpstreamRefusedStream)
}

fn classify(e: &hyper::Error) -> Flag {
    // The request body failed while being sent: that body is the downstream's (a malformed
    // chunked body, or the client went away), so it is the client's error, not the upstream's.
    if e.is_user() && std::error::Error::source(e).is_some_and(|s| s.is::<hyper::Error>()) {
        Flag::DownstreamProtocolError
    } else if refused_stream(e) {
        Flag::UpstreamRefusedStream
    } else if e.is_parse() || e.is_parse_status() {
        Flag::UpstreamProtocolError
    } else if e.is_canceled() || e.is_incomplete_message() || e.is_closed() {
        Flag::UpstreamConnectionTermination
    } else {
        Flag::UpstreamReset
    }
}

/// An HTTP/2 REFUSED_STREAM reset: the server did not process the request (safe to retry).
fn refused_stream(e: &hyper::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = cur {
        if let Some(h2e) = err.downcast_ref::<h2::Error>() {
            return h2e.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cur = err.source();
    }
    false
}
