//! The request body sent upstream. Without a policy that needs the body again it is the
//! downstream's body, streamed as is (no copy, no lock). A retry or mirror policy wraps it in a
//! [`Tee`]: each attempt streams it while the frames seen so far are kept, up to a bound, so that
//! a later attempt (or the shadow) replays them before reading on. Past the bound the copy is
//! dropped and the body can no longer be sent again.
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pub enum RequestBody {
    /// The downstream body, once.
    Stream(Incoming),
    /// No body: replayable for free.
    Empty,
    /// One attempt at a teed body.
    Attempt { tee: Tee, attempt: u32, pos: usize },
    /// A body captured whole (a shadow's copy of the primary's).
    Captured(std::collections::VecDeque<Frame<Bytes>>),
}

impl RequestBody {
    /// The downstream's body: `Empty` when it has none (so that it can be sent again).
    pub fn new(body: Incoming) -> RequestBody {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Stream(body)
        }
    }
}

/// A body shared by the attempts (and the shadow) of one request.
#[derive(Clone)]
pub struct Tee(Arc<Mutex<TeeState>>);

struct TeeState {
    source: Incoming,
    /// Every frame read so far, while they fit in `limit`.
    frames: Vec<Frame<Bytes>>,
    bytes: usize,
    limit: usize,
    /// The copy was dropped (the body outgrew `limit`): no attempt can start over.
    overflowed: bool,
    /// The source ended (all frames are in `frames` unless `overflowed`).
    ended: bool,
    /// The source failed: nothing can be sent again.
    failed: bool,
    /// Only the newest attempt reads the source; an abandoned one sees the end.
    current: u32,
    /// Woken when the source ends or fails (the mirror waits for the whole body).
    waiting: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Tee {
    pub fn new(source: Incoming, limit: usize) -> Tee {
        Tee(Arc::new(Mutex::new(TeeState {
            source,
            frames: Vec::new(),
            bytes: 0,
            limit,
            overflowed: false,
            ended: false,
            failed: false,
            current: 0,
            waiting: Vec::new(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, TeeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new attempt, which replays what was read and then reads on; None when the body cannot
    /// be sent again. Earlier attempts stop reading.
    pub fn attempt(&self) -> Option<RequestBody> {
        let mut s = self.lock();
        if s.overflowed || s.failed {
            return None;
        }
        s.current += 1;
        Some(RequestBody::Attempt { tee: self.clone(), attempt: s.current, pos: 0 })
    }

    /// Resolves once the downstream body has been read to its end (or has failed).
    pub async fn finished(&self) {
        let rx = {
            let mut s = self.lock();
            if s.ended || s.failed {
                return;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            s.waiting.push(tx);
            rx
        };
        let _ = rx.await;
    }

    /// Whether another attempt could be made now.
    pub fn replayable(&self) -> bool {
        let s = self.lock();
        !s.overflowed && !s.failed
    }

    /// The whole body, once the primary has read it (None if it outgrew the bound or failed).
    pub async fn complete(&self) -> Option<Vec<Frame<Bytes>>> {
        let rx = {
            let mut s = self.lock();
            if s.overflowed || s.failed {
                return None;
            }
            if s.ended {
                return Some(s.frames.iter().map(copy_frame).collect());
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            s.waiting.push(tx);
            rx
        };
        let _ = rx.await;
        let s = self.lock();
        (s.ended && !s.overflowed && !s.failed).then(|| s.frames.iter().map(copy_frame).collect())
    }
}

fn copy_frame(f: &Frame<Bytes>) -> Frame<Bytes> {
    match f.data_ref() {
        Some(d) => Frame::data(d.clone()),
        None => Frame::trailers(f.trailers_ref().cloned().unwrap_or_default()),
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Stream(b) => Pin::new(b).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Captured(f) => Poll::Ready(f.pop_front().map(Ok)),
            RequestBody::Attempt { tee, attempt, pos } => {
                let mut s = tee.lock();
                if *attempt != s.current {
                    return Poll::Ready(None);
                }
                if let Some(f) = s.frames.get(*pos) {
                    *pos += 1;
                    return Poll::Ready(Some(Ok(copy_frame(f))));
                }
                if s.ended || s.failed {
                    return Poll::Ready(None);
                }
                let r = Pin::new(&mut s.source).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if !s.overflowed {
                            let len = f.data_ref().map(|d| d.len()).unwrap_or(0);
                            if s.bytes + len > s.limit {
                                s.overflowed = true;
                                s.frames = Vec::new();
                            } else {
                                s.bytes += len;
                                s.frames.push(copy_frame(f));
                                *pos += 1;
                            }
                        }
                        if s.source.is_end_stream() {
                            s.ended = true;
                            s.waiting.clear();
                        }
                    }
                    Poll::Ready(None) => {
                        s.ended = true;
                        s.waiting.clear();
                    }
                    Poll::Ready(Some(Err(_))) => {
                        s.failed = true;
                        s.waiting.clear();
                    }
                    Poll::Pending => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream(b) => b.is_end_stream(),
            RequestBody::Empty => true,
            RequestBody::Captured(f) => f.is_empty(),
            RequestBody::Attempt { tee, attempt, pos } => {
                let s = tee.lock();
                *attempt != s.current || ((s.ended || s.failed) && *pos >= s.frames.len())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream(b) => b.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Captured(f) => {
                SizeHint::with_exact(f.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum())
            }
            // The length is in the request's content-length header when there is one.
            RequestBody::Attempt { tee, pos, .. } => {
                let s = tee.lock();
                if *pos != 0 || s.overflowed {
                    return SizeHint::default();
                }
                let (h, read) = (s.source.size_hint(), s.bytes as u64);
                match h.exact() {
                    Some(n) => SizeHint::with_exact(n + read),
                    None => {
                        let mut o = SizeHint::new();
                        o.set_lower(h.lower() + read);
                        if let Some(u) = h.upper() {
                            o.set_upper(u + read);
                        }
                        o
                    }
                }
            }
        }
    }
}
