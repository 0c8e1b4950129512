//! An HTTP/1.1 upstream that misbehaves on command, for the resilience tests: answer 5xx to the
//! next N requests, answer slowly, reset in the middle of a response, close idle keep-alive
//! connections after a random 50–150 ms (or any range), stall in the middle of a body. It records what it received (host,
//! body, `x-envoy-attempt-count`) and answers `x-backend: <name>` with body `<name>`; a failed
//! answer (by `fail_next`) also carries `x-faulty: failed`.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::backend::{run, Runner};

type BoxBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub host: String,
    pub body: Vec<u8>,
    pub attempt_count: Option<String>,
    pub headers: http::HeaderMap,
}

#[derive(Default)]
struct State {
    /// Answers still to fail, and with what status.
    fail_next: AtomicUsize,
    fail_status: AtomicU64,
    delay_ms: AtomicU64,
    reset_mid_response: AtomicBool,
    /// Answers send part of their body, then wait this long before the rest.
    stall_body_ms: AtomicU64,
    /// (min, max) ms after which an idle keep-alive connection is closed; (0, 0) never.
    idle_close: Mutex<(u64, u64)>,
    received: Mutex<Vec<Received>>,
    connections: AtomicUsize,
}

pub struct Faulty {
    pub addr: SocketAddr,
    pub name: String,
    state: Arc<State>,
    _runner: Runner,
}

impl Faulty {
    pub fn start(name: &str) -> Faulty {
        Faulty::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    /// On a given address (in a network namespace, call it inside `enter`).
    pub fn start_on(name: &str, addr: SocketAddr) -> Faulty {
        let state = Arc::new(State::default());
        let (s, n) = (state.clone(), name.to_string());
        let (addr, runner) = run(addr, move |l| accept(l, n, s));
        Faulty { addr, name: name.to_string(), state, _runner: runner }
    }

    /// The next `n` requests get `status` (`usize::MAX`: all of them).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state.fail_status.store(status as u64, Ordering::SeqCst);
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.state.fail_next.store(0, Ordering::SeqCst);
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Answers send their headers and part of the body, then the connection is reset.
    pub fn reset_mid_response(&self, on: bool) {
        self.state.reset_mid_response.store(on, Ordering::SeqCst);
    }

    /// Answers send their headers and part of the body, then stall this long before the rest.
    pub fn stall_body(&self, ms: u64) {
        self.state.stall_body_ms.store(ms, Ordering::SeqCst);
    }

    /// Idle keep-alive connections are closed after a uniformly random `min..=max` ms.
    pub fn close_idle_after(&self, min_ms: u64, max_ms: u64) {
        *self.state.idle_close.lock().unwrap() = (min_ms, max_ms);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

async fn accept(l: TcpListener, name: String, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = l.accept().await else { continue };
        state.connections.fetch_add(1, Ordering::SeqCst);
        let (name, state) = (name.clone(), state.clone());
        tokio::spawn(async move {
            let busy = Arc::new(AtomicUsize::new(0));
            let last = Arc::new(Mutex::new(tokio::time::Instant::now()));
            let (b, t, st, n) = (busy.clone(), last.clone(), state.clone(), name.clone());
            let svc = service_fn(move |req| {
                let (b, t, st, n) = (b.clone(), t.clone(), st.clone(), n.clone());
                async move {
                    b.fetch_add(1, Ordering::SeqCst);
                    let r = answer(&n, &st, req).await;
                    *t.lock().unwrap() = tokio::time::Instant::now();
                    b.fetch_sub(1, Ordering::SeqCst);
                    r
                }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            let range = *state.idle_close.lock().unwrap();
            if range.1 == 0 {
                let _ = conn.await;
                return;
            }
            let idle_for = Duration::from_millis(fastrand::u64(range.0..=range.1));
            loop {
                let deadline = *last.lock().unwrap() + idle_for;
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = tokio::time::sleep_until(deadline) => {
                        if busy.load(Ordering::SeqCst) == 0 && *last.lock().unwrap() + idle_for <= tokio::time::Instant::now() {
                            // Idle long enough: close, as a server's keep-alive timeout does.
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn answer(name: &str, state: &State, req: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    state.received.lock().unwrap().push(Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        host: parts.headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_string(),
        body,
        attempt_count: parts.headers.get("x-envoy-attempt-count").and_then(|h| h.to_str().ok()).map(str::to_string),
        headers: parts.headers.clone(),
    });
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let fail = state.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let status = if fail {
        StatusCode::from_u16(state.fail_status.load(Ordering::SeqCst) as u16).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
    } else {
        StatusCode::OK
    };
    let mut resp = Response::builder().status(status).header("x-backend", name);
    if fail {
        resp = resp.header("x-faulty", "failed");
    }
    if state.reset_mid_response.load(Ordering::SeqCst) {
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"partial"))),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset mid-response")),
        ];
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(resp.header("content-length", "100").body(BodyExt::boxed(body)).unwrap());
    }
    let stall = state.stall_body_ms.load(Ordering::SeqCst);
    if stall > 0 {
        let chunks = futures_util::stream::unfold(0u8, move |step| async move {
            match step {
                0 => Some((Ok(Frame::data(Bytes::from_static(b"first,"))), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_millis(stall)).await;
                    Some((Ok(Frame::data(Bytes::from_static(b"second"))), 2))
                }
                _ => None,
            }
        });
        return Ok(resp.header("content-length", "12").body(BodyExt::boxed(StreamBody::new(chunks))).unwrap());
    }
    let body = Full::new(Bytes::from(name.to_string())).map_err(|never| match never {});
    Ok(resp.body(BodyExt::boxed(body)).unwrap())
}
