//! Upstream servers for the tests. Each runs on its own thread and Tokio runtime, so a test can
//! block (waiting for the proxy to exit, say) without starving them; each stops when dropped.
//!
//! [`Backend`] is an HTTP/1.1 + HTTP/2 (h2c) echo server. It answers with a JSON description of
//! the request it received — `backend` (its name), `method`, `uri`, `path`, `version`, `headers`
//! (repeated headers joined with ", "), `body_len` — and obeys these request headers:
//! * `x-delay-ms: N` — wait N ms (after reading the body) before answering;
//! * `x-status: N` — answer with status N;
//! * `x-response-bytes: N` — answer with N bytes of body, generated and streamed in 64 KiB chunks;
//! * `x-echo-hop: 1` — add hop-by-hop response headers (`connection: x-hop-resp`, `x-hop-resp`,
//!   `keep-alive`) that a proxy must remove.
//!
//! Every response carries `server: echo-backend` and `x-backend: <name>`.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Runs `serve(listener)` on a dedicated thread until the returned guard is dropped.
pub(crate) struct Runner {
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub(crate) fn run<F, Fut>(addr: SocketAddr, serve: F) -> (SocketAddr, Runner)
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let std_listener = std::net::TcpListener::bind(addr).expect("bind backend");
    std_listener.set_nonblocking(true).unwrap();
    let local = std_listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            tokio::select! {
                _ = serve(listener) => {}
                _ = rx => {}
            }
        });
    });
    (local, Runner { stop: Some(tx) })
}

/// The HTTP echo server described in the module docs.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    _runner: Runner,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Backend::start_on(name, "127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(name: &str, addr: SocketAddr) -> Backend {
        Backend::start_full(name, addr, 0)
    }

    /// A backend that waits `delay_ms` before every answer (plus any `x-delay-ms`).
    pub fn start_slow(name: &str, delay_ms: u64) -> Backend {
        Backend::start_full(name, "127.0.0.1:0".parse().unwrap(), delay_ms)
    }

    fn start_full(name: &str, addr: SocketAddr, delay_ms: u64) -> Backend {
        let requests = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, c, n) = (requests.clone(), connections.clone(), name.to_string());
        let (addr, runner) = run(addr, move |l| accept_http(l, n, r, c, delay_ms));
        Backend { addr, name: name.to_string(), requests, connections, _runner: runner }
    }

    /// Requests whose head reached this backend.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn accept_http(
    l: TcpListener,
    name: String,
    requests: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    delay_ms: u64,
) {
    loop {
        let Ok((stream, _)) = l.accept().await else { continue };
        connections.fetch_add(1, Ordering::SeqCst);
        let (name, requests) = (name.clone(), requests.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| echo(name.clone(), requests.clone(), delay_ms, req));
            let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

async fn echo(
    name: String,
    requests: Arc<AtomicUsize>,
    delay_ms: u64,
    req: Request<Incoming>,
) -> Result<Response<BoxBody>, Infallible> {
    requests.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    // Count the body without keeping it: uploads of any size use flat memory here too.
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_len += d.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    let delay = delay_ms + header_u64(&parts.headers, "x-delay-ms").unwrap_or(0);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = header_u64(&parts.headers, "x-status")
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp =
        Response::builder().status(status).header("server", "echo-backend").header("x-backend", name.as_str());
    if parts.headers.get("x-echo-hop").is_some() {
        resp = resp.header("connection", "x-hop-resp").header("x-hop-resp", "1").header("keep-alive", "timeout=30");
    }
    if let Some(n) = header_u64(&parts.headers, "x-response-bytes") {
        let body = StreamBody::new(futures_util::stream::unfold(n, |left| async move {
            if left == 0 {
                return None;
            }
            let chunk = left.min(64 * 1024);
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; chunk as usize]))), left - chunk))
        }));
        return Ok(resp.header("content-length", n).body(BodyExt::boxed(body)).unwrap());
    }
    let mut headers = serde_json::Map::new();
    for k in parts.headers.keys() {
        let v: Vec<String> =
            parts.headers.get_all(k).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).to_string()).collect();
        headers.insert(k.as_str().to_string(), json!(v.join(", ")));
    }
    let info = json!({
        "backend": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "authority": parts.uri.authority().map(|a| a.as_str()),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let body = Full::new(Bytes::from(serde_json::to_vec(&info).unwrap()));
    Ok(resp.header("content-type", "application/json").body(BodyExt::boxed(body)).unwrap())
}

/// What a [`TcpServer`] does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum TcpMode {
    /// Echo every byte back until the client closes, then close.
    Echo,
    /// Read until the client shuts down its write side, then answer `received <n> bytes` and close.
    ReplyAfterEof,
    /// Send the given greeting and close the write side; discard whatever the client sends.
    Greet(&'static str),
    /// Read a request head (recorded as the first bytes), answer with the given bytes whatever
    /// the request was, then close: an upstream that answers garbage where HTTP belongs.
    AnswerHead(&'static str),
    /// An HTTP proxy's CONNECT handling: read a request head (recorded as the first bytes),
    /// answer `200 Connection Established`, then echo every byte as `Echo` does.
    HttpConnect,
}

/// A raw TCP server; records the first bytes of each connection.
pub struct TcpServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    first_bytes: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    _runner: Runner,
}

impl TcpServer {
    pub fn start(mode: TcpMode) -> TcpServer {
        TcpServer::start_on(mode, "127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(mode: TcpMode, addr: SocketAddr) -> TcpServer {
        let connections = Arc::new(AtomicUsize::new(0));
        let first_bytes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, f) = (connections.clone(), first_bytes.clone());
        let (addr, runner) = run(addr, move |l| accept_tcp(l, mode, c, f));
        TcpServer { addr, connections, first_bytes, _runner: runner }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The first read of each connection, in accept order (empty when the peer sent nothing).
    pub fn first_bytes(&self) -> Vec<Vec<u8>> {
        self.first_bytes.lock().unwrap().clone()
    }
}

async fn accept_tcp(
    l: TcpListener,
    mode: TcpMode,
    connections: Arc<AtomicUsize>,
    first: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) {
    loop {
        let Ok((s, _)) = l.accept().await else { continue };
        connections.fetch_add(1, Ordering::SeqCst);
        let first = first.clone();
        tokio::spawn(async move {
            let _ = serve_tcp(s, mode, first).await;
        });
    }
}

/// Reads byte by byte up to the end of a request head, records it as the connection's first bytes;
/// false when the peer closed first.
async fn read_head(s: &mut TcpStream, first: &std::sync::Mutex<Vec<Vec<u8>>>) -> std::io::Result<bool> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            first.lock().unwrap().push(head);
            return Ok(false);
        }
        head.push(b[0]);
    }
    first.lock().unwrap().push(head);
    Ok(true)
}

async fn serve_tcp(mut s: TcpStream, mode: TcpMode, first: Arc<std::sync::Mutex<Vec<Vec<u8>>>>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    if let TcpMode::Greet(g) = mode {
        first.lock().unwrap().push(Vec::new());
        s.write_all(g.as_bytes()).await?;
        s.shutdown().await?;
        // Drain what the peer sends, so that closing never turns into a reset.
        while s.read(&mut buf).await? > 0 {}
        return Ok(());
    }
    if let TcpMode::AnswerHead(answer) = mode {
        if read_head(&mut s, &first).await? {
            s.write_all(answer.as_bytes()).await?;
        }
        return s.shutdown().await;
    }
    if let TcpMode::HttpConnect = mode {
        if !read_head(&mut s, &first).await? {
            return Ok(());
        }
        s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await?;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return s.shutdown().await;
            }
            s.write_all(&buf[..n]).await?;
        }
    }
    let mut total = 0usize;
    let mut recorded = false;
    loop {
        let n = s.read(&mut buf).await?;
        if !recorded {
            first.lock().unwrap().push(buf[..n].to_vec());
            recorded = true;
        }
        if n == 0 {
            break;
        }
        total += n;
        if let TcpMode::Echo = mode {
            s.write_all(&buf[..n]).await?;
        }
    }
    if let TcpMode::ReplyAfterEof = mode {
        s.write_all(format!("received {total} bytes").as_bytes()).await?;
    }
    s.shutdown().await
}

/// A WebSocket echo server (tokio-tungstenite): text and binary messages come back unchanged.
pub struct WsServer {
    pub addr: SocketAddr,
    _runner: Runner,
}

impl WsServer {
    pub fn start() -> WsServer {
        let (addr, runner) = run("127.0.0.1:0".parse().unwrap(), |l| async move {
            loop {
                let Ok((s, _)) = l.accept().await else { continue };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else { return };
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() || m.is_binary() {
                            if ws.send(m).await.is_err() {
                                break;
                            }
                        } else if m.is_close() {
                            break;
                        }
                    }
                });
            }
        });
        WsServer { addr, _runner: runner }
    }
}

/// A gRPC server with tonic-health's generated Health service; `svc` is reported SERVING.
pub struct GrpcServer {
    pub addr: SocketAddr,
    reporter: tonic_health::server::HealthReporter,
    rt: tokio::runtime::Handle,
    _runner: Runner,
}

impl GrpcServer {
    pub fn start(serving: &str) -> GrpcServer {
        let serving = serving.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        let (addr, runner) = run("127.0.0.1:0".parse().unwrap(), move |l| async move {
            let (reporter, service) = tonic_health::server::health_reporter();
            reporter.set_service_status(serving.as_str(), tonic_health::ServingStatus::Serving).await;
            let _ = tx.send((reporter, tokio::runtime::Handle::current()));
            let incoming = tokio_stream_shim::incoming(l);
            let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
        });
        let (reporter, rt) = rx.recv_timeout(Duration::from_secs(10)).expect("grpc server started");
        GrpcServer { addr, reporter, rt, _runner: runner }
    }

    /// Changes a service's status (seen by `Watch` streams).
    pub fn set_status(&self, service: &str, serving: bool) {
        let r = self.reporter.clone();
        let service = service.to_string();
        let status =
            if serving { tonic_health::ServingStatus::Serving } else { tonic_health::ServingStatus::NotServing };
        self.rt.spawn(async move { r.set_service_status(service.as_str(), status).await });
    }
}

pub(crate) mod tokio_stream_shim {
    use futures_util::Stream;
    use tokio::net::{TcpListener, TcpStream};

    /// A listener as the stream of accepted connections that tonic's `serve_with_incoming` takes.
    pub fn incoming(l: TcpListener) -> impl Stream<Item = std::io::Result<TcpStream>> {
        futures_util::stream::unfold(l, |l| async move {
            let r = l.accept().await.map(|(s, _)| s);
            Some((r, l))
        })
    }
}
