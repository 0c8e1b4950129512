//! The HTTP connection manager: runs the downstream codec (HTTP/1.1, HTTP/2 by prior knowledge, or
//! either by sniffing the preface) on one accepted connection and hands each request to the router.
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use super::router::{self, ConnCtx};
use super::smuggling;
use crate::config::Codec;
use crate::drain::Drain;
use crate::snapshot::{HttpManager, Snapshot};

pub async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    original_dst: Option<SocketAddr>,
    live: Arc<arc_swap::ArcSwap<Snapshot>>,
    hcm: Arc<HttpManager>,
    drain: Drain,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = hcm.config.clone();
    hcm.stats.cx.inc();
    hcm.stats.cx_active.inc();
    let gate = Arc::new(smuggling::Gate::default());
    let ctx = Arc::new(ConnCtx {
        live,
        hcm: hcm.clone(),
        peer,
        original_dst,
        tls: false,
        activity: Default::default(),
        gate: gate.clone(),
        requests: Default::default(),
        retire: tokio::sync::Notify::new(),
    });
    let activity = ctx.clone();
    let svc = service_fn(move |req| router::handle(ctx.clone(), req));

    let codec = match cfg.codec {
        Codec::Auto => smuggling::Codec::Auto,
        Codec::Http1 => smuggling::Codec::Http1,
        Codec::Http2 => smuggling::Codec::Http2,
    };
    // hyper's head buffer is never below 8 KiB; the guard refuses a head where hyper would
    // answer 431, so that hyper does answer it.
    let max_head = cfg.max_request_headers_bytes.max(8192);
    let io = TokioIo::new(
        smuggling::Guarded::new(io, codec, gate, max_head, cfg.max_headers_count)
            .with_head_timeout(cfg.request_headers_timeout),
    );
    let idle_timeout = cfg.idle_timeout;
    // hyper-util's auto builder sniffs the preface even when told one protocol only, so a
    // fixed codec_type gets hyper's own single-protocol connection instead.
    match cfg.codec {
        Codec::Auto => {
            let mut b = auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .max_buf_size(cfg.max_request_headers_bytes.max(8192))
                .max_headers(cfg.max_headers_count)
                .header_read_timeout(None);
            b.http2()
                .timer(TokioTimer::new())
                .max_header_list_size(cfg.max_request_headers_bytes as u32)
                .max_concurrent_streams(cfg.h2_max_concurrent_streams.or(Some(1024)));
            if let Some(w) = cfg.h2_initial_stream_window {
                b.http2().initial_stream_window_size(w);
            }
            if let Some(w) = cfg.h2_initial_connection_window {
                b.http2().initial_connection_window_size(w);
            }
            let conn = b.serve_connection_with_upgrades(io, svc);
            drive(conn, |c| c.graceful_shutdown(), peer, &drain, &activity, idle_timeout).await;
        }
        Codec::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .max_buf_size(cfg.max_request_headers_bytes.max(8192))
                .max_headers(cfg.max_headers_count)
                .header_read_timeout(None);
            let conn = b.serve_connection(io, svc).with_upgrades();
            drive(conn, |c| c.graceful_shutdown(), peer, &drain, &activity, idle_timeout).await;
        }
        Codec::Http2 => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_header_list_size(cfg.max_request_headers_bytes as u32)
                .max_concurrent_streams(cfg.h2_max_concurrent_streams.or(Some(1024)));
            if let Some(w) = cfg.h2_initial_stream_window {
                b.initial_stream_window_size(w);
            }
            if let Some(w) = cfg.h2_initial_connection_window {
                b.initial_connection_window_size(w);
            }
            let conn = b.serve_connection(io, svc);
            drive(conn, |c| c.graceful_shutdown(), peer, &drain, &activity, idle_timeout).await;
        }
    }
    hcm.stats.cx_active.dec();
}

/// Runs one downstream connection until it ends, drains or idles out (both gracefully: HTTP/1.1
/// finishes the request in flight then closes; HTTP/2 sends GOAWAY).
async fn drive<C, E>(
    conn: C,
    shutdown: fn(std::pin::Pin<&mut C>),
    peer: SocketAddr,
    drain: &Drain,
    activity: &ConnCtx,
    idle_timeout: Option<std::time::Duration>,
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let max_age = activity.hcm.config.max_connection_duration;
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "downstream connection error");
            }
        }
        _ = drain.signaled() => {
            shutdown(conn.as_mut());
            let _ = conn.await;
        }
        // max_requests_per_connection reached, or max_connection_duration up: drain as for a
        // shutdown (HTTP/1.1 finishes the request in flight, HTTP/2 sends GOAWAY). Unconfigured,
        // the branches are not polled at all.
        _ = activity.retire.notified(), if activity.hcm.config.max_requests_per_connection.is_some() => {
            shutdown(conn.as_mut());
            let _ = conn.await;
        }
        _ = sleep_or_never(max_age), if max_age.is_some() => {
            tracing::debug!(%peer, "max_connection_duration reached");
            shutdown(conn.as_mut());
            let _ = conn.await;
        }
        _ = idle(activity, idle_timeout) => {
            tracing::debug!(%peer, "idle timeout");
            shutdown(conn.as_mut());
            let _ = conn.await;
        }
    }
}

async fn sleep_or_never(d: Option<std::time::Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// `common_http_protocol_options.idle_timeout`: no request for this long closes the connection
/// (gracefully, so a response still streaming finishes first).
async fn idle(ctx: &ConnCtx, timeout: Option<std::time::Duration>) {
    match timeout {
        Some(t) => ctx.activity.idle_for(t).await,
        None => std::future::pending().await,
    }
}
