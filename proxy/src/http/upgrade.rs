//! HTTP/1.1 Upgrade (WebSocket) and CONNECT tunnels: after the handshake, bytes are copied both
//! ways until either side closes.
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::body::ProxyBody;
use super::local_reply::Flag;
use super::upstream::open;
use crate::upstream::{Cluster, Endpoint};

/// The upgrade protocol the client asks for, lower-cased (`websocket`), if any. Only HTTP/1.1
/// upgrades (hyper, like Envoy, switches protocols on no other version).
pub fn requested<B>(req: &Request<B>) -> Option<String> {
    if req.version() != http::Version::HTTP_11 {
        return None;
    }
    let conn = req.headers().get(header::CONNECTION)?.to_str().ok()?;
    if !conn.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    let up = req.headers().get(header::UPGRADE)?.to_str().ok()?;
    Some(up.trim().to_ascii_lowercase())
}

/// Sets up the tunnel. With `terminate`, a CONNECT is answered here and the tunnel goes to the
/// endpoint as raw TCP; otherwise the upgrade request itself is forwarded on a fresh connection.
pub async fn tunnel(
    cluster: &Cluster,
    ep: &Arc<Endpoint>,
    mut req: Request<Incoming>,
    terminate: bool,
) -> Result<Response<ProxyBody>, Flag> {
    let downstream = hyper::upgrade::on(&mut req);
    if terminate {
        let upstream = open(cluster, ep).await?;
        tokio::spawn(async move {
            if let Ok(d) = downstream.await {
                let mut d = TokioIo::new(d);
                let mut u = upstream;
                let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
            }
        });
        return Ok(Response::new(ProxyBody::empty()));
    }
    let stream = open(cluster, ep).await?;
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|_| Flag::UpstreamConnectFailure)?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let is_connect = req.method() == Method::CONNECT;
    *req.version_mut() = http::Version::HTTP_11;
    let mut resp = sender.send_request(req).await.map_err(|_| Flag::UpstreamConnectionTermination)?;
    let ok = if is_connect { resp.status().is_success() } else { resp.status() == StatusCode::SWITCHING_PROTOCOLS };
    if ok {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(d), Ok(u)) = (downstream.await, upstream.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(d), &mut TokioIo::new(u)).await;
            }
        });
    }
    let (mut parts, body) = resp.into_parts();
    if ok && !is_connect {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if ok {
        // The tunnel's bytes travel through the upgrade, never through this body.
        return Ok(Response::from_parts(parts, ProxyBody::empty()));
    }
    Ok(Response::from_parts(parts, ProxyBody::Upstream { body, done: None }))
}
