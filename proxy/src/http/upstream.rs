//! The HTTP client side: take or open a connection to the chosen endpoint and send the request.
use std::sync::Arc;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::local_reply::Flag;
use crate::upstream::pool::{connect_tcp, ConnectError};
use crate::upstream::{Cluster, Endpoint};

/// Hands an HTTP/1.1 connection back to its pool; made only once the response body is complete.
pub struct PoolReturn {
    endpoint: Arc<Endpoint>,
    sender: http1::SendRequest<Incoming>,
}

impl PoolReturn {
    pub fn give_back(self) {
        self.endpoint.pool.put_h1(self.sender);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// Opens a TCP connection, counting it against the cluster's stats.
pub async fn open(cluster: &Cluster, ep: &Endpoint) -> Result<tokio::net::TcpStream, Flag> {
    match connect_tcp(ep.addr, cluster.config.connect_timeout).await {
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

/// Sends the request and returns the response head; the body streams afterwards.
pub async fn send(
    cluster: &Cluster,
    ep: &Arc<Endpoint>,
    wire: Wire,
    req: Request<Incoming>,
) -> Result<(Response<Incoming>, Option<PoolReturn>), Flag> {
    match wire {
        Wire::Http1 => send_h1(cluster, ep, req).await,
        Wire::Http2 => send_h2(cluster, ep, req).await.map(|r| (r, None)),
    }
}

async fn send_h1(
    cluster: &Cluster,
    ep: &Arc<Endpoint>,
    mut req: Request<Incoming>,
) -> Result<(Response<Incoming>, Option<PoolReturn>), Flag> {
    *req.version_mut() = Version::HTTP_11;
    // Reuse idle connections; a request that a stale connection did not take is sent again.
    while let Some(mut sender) = ep.pool.take_h1(cluster.config.idle_timeout) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, Some(PoolReturn { endpoint: ep.clone(), sender }))),
            Err(mut e) => match e.take_message() {
                Some(r) => req = r,
                None => return Err(classify(e.error())),
            },
        }
    }
    let stream = open(cluster, ep).await?;
    let (mut sender, conn) =
        http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(|_| Flag::UpstreamConnectFailure)?;
    let stats = cluster.stats.clone();
    stats.cx_active.inc();
    tokio::spawn(async move {
        let _ = conn.await;
        stats.cx_active.dec();
    });
    match sender.send_request(req).await {
        Ok(resp) => Ok((resp, Some(PoolReturn { endpoint: ep.clone(), sender }))),
        Err(e) => Err(classify(&e)),
    }
}

async fn send_h2(
    cluster: &Cluster,
    ep: &Arc<Endpoint>,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, Flag> {
    *req.version_mut() = Version::HTTP_2;
    let mut sender = match ep.pool.h2() {
        Some(s) => s,
        None => {
            // One connection per endpoint and worker: concurrent first requests share it.
            let _connecting = ep.pool.h2_connect_lock().await;
            if let Some(s) = ep.pool.h2() {
                s
            } else {
                let stream = open(cluster, ep).await?;
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|_| Flag::UpstreamConnectFailure)?;
                let stats = cluster.stats.clone();
                stats.cx_active.inc();
                tokio::spawn(async move {
                    let _ = conn.await;
                    stats.cx_active.dec();
                });
                ep.pool.set_h2(sender.clone());
                sender
            }
        }
    };
    if sender.ready().await.is_err() {
        return Err(Flag::UpstreamConnectionTermination);
    }
    sender.send_request(req).await.map_err(|e| classify(&e))
}

fn classify(e: &hyper::Error) -> Flag {
    // The request body failed while being sent: that body is the downstream's (a malformed
    // chunked body, or the client went away), so it is the client's error, not the upstream's.
    if e.is_user() && std::error::Error::source(e).is_some_and(|s| s.is::<hyper::Error>()) {
        Flag::DownstreamProtocolError
    } else if e.is_parse() || e.is_parse_status() {
        Flag::UpstreamProtocolError
    } else if e.is_canceled() || e.is_incomplete_message() || e.is_closed() {
        Flag::UpstreamConnectionTermination
    } else {
        Flag::UpstreamReset
    }
}
