//! The response body handed to the downstream codec: either the upstream's body, streamed, or a
//! local body. The upstream variant carries a guard that returns the HTTP/1.1 connection to its
//! pool only once the body has been read to the end (a half-read connection is never reused).
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::forward::InFlight;
use super::upstream::PoolReturn;

pub enum ProxyBody {
    Upstream { body: Incoming, done: Option<StreamDone> },
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub fn full(b: impl Into<Bytes>) -> ProxyBody {
        let b = b.into();
        ProxyBody::Full(if b.is_empty() { None } else { Some(b) })
    }
    pub fn empty() -> ProxyBody {
        ProxyBody::Full(None)
    }
}

/// Work to do when the upstream response has been fully relayed (or abandoned).
pub struct StreamDone {
    /// The stream idle timeout while relaying the body: armed only when the upstream has nothing
    /// to give, reset by each frame; when it fires the stream ends in error (flag `SI`).
    pub idle: Option<std::time::Duration>,
    pub idle_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The maximum stream duration's end: the body is cut there (flag `UMSDR`).
    pub deadline: Option<tokio::time::Instant>,
    pub deadline_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    pub pool: Option<PoolReturn>,
    /// Counts the request as active on its endpoint and cluster until the response is done.
    pub flight: Option<InFlight>,
    pub log: Option<Box<super::router::LogRecord>>,
    pub bytes_sent: u64,
    pub complete: bool,
}

impl Drop for StreamDone {
    fn drop(&mut self) {
        self.flight.take();
        if self.complete {
            if let Some(p) = self.pool.take() {
                p.give_back();
            }
        }
        if let Some(mut log) = self.log.take() {
            log.finish(self.bytes_sent, !self.complete);
        }
    }
}

/// The stream idle timeout or the maximum stream duration ended the response body.
#[derive(Debug, thiserror::Error)]
#[error("stream timeout")]
pub struct StreamIdle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream { body, done } => {
                let r = Pin::new(&mut *body).poll_frame(cx).map(|o| o.map(|r| r.map_err(BoxError::from)));
                if let Some(d) = done.as_mut() {
                    match &r {
                        Poll::Ready(Some(Ok(f))) => {
                            if let (Some(t), Some(idle)) = (d.idle_timer.as_mut(), d.idle) {
                                t.as_mut().reset(tokio::time::Instant::now() + idle);
                            }
                            if let Some(data) = f.data_ref() {
                                d.bytes_sent += data.len() as u64;
                            }
                            if body_is_end(body) {
                                d.complete = true;
                                done.take();
                            }
                        }
                        Poll::Ready(None) => {
                            d.complete = true;
                            done.take();
                        }
                        Poll::Ready(Some(Err(_))) => {
                            done.take();
                        }
                        Poll::Pending => {
                            if let Some(at) = d.deadline {
                                let t = d.deadline_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                                if t.as_mut().poll(cx).is_ready() {
                                    if let Some(log) = d.log.as_mut() {
                                        log.flag(super::local_reply::Flag::MaxStreamDuration);
                                    }
                                    done.take();
                                    return Poll::Ready(Some(Err(Box::new(StreamIdle))));
                                }
                            }
                            if let Some(idle) = d.idle {
                                let t = d.idle_timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                                if t.as_mut().poll(cx).is_ready() {
                                    if let Some(log) = d.log.as_mut() {
                                        log.flag(super::local_reply::Flag::StreamIdleTimeout);
                                    }
                                    done.take();
                                    return Poll::Ready(Some(Err(Box::new(StreamIdle))));
                                }
                            }
                        }
                    }
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream { body, .. } => body.size_hint(),
        }
    }
}

fn body_is_end(b: &Incoming) -> bool {
    b.is_end_stream()
}
