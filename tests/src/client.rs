//! Clients: hyper HTTP/1.1 and HTTP/2 (prior knowledge) on fresh connections, and raw bytes over
//! a `TcpStream` for requests no well-behaved client would send.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Per-request bound: generous, as the machine may be loaded.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    /// The body as JSON (the echo backend's description of the request it got).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A request header as the echo backend saw it.
    pub fn upstream_header(&self, name: &str) -> Option<String> {
        self.json()["headers"][name].as_str().map(str::to_string)
    }
}

/// A GET request with a Host header (HTTP/1.1) or :authority (HTTP/2), plus extra headers.
pub fn get(host: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    request("GET", host, path, headers, Bytes::new())
}

pub fn request(method: &str, host: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(path).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body)).unwrap()
}

/// Sends one request on a new HTTP/1.1 connection and reads the whole response.
pub async fn send_h1<B>(addr: SocketAddr, req: Request<B>) -> Resp
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    send_h1_from(None, addr, req).await
}

/// As [`send_h1`], from the source address `src` when given (one of several pods on a host).
pub async fn send_h1_from<B>(src: Option<IpAddr>, addr: SocketAddr, req: Request<B>) -> Resp
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::time::timeout(TIMEOUT, async move {
        let s = connect_from(src, addr).await.expect("connect to proxy");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.expect("h1 handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.expect("h1 request");
        collect(resp).await
    })
    .await
    .expect("HTTP/1.1 request timed out")
}

/// Sends one request on a new HTTP/2 prior-knowledge (h2c) connection.
pub async fn send_h2(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    tokio::time::timeout(TIMEOUT, async move {
        let s = TcpStream::connect(addr).await.expect("connect to proxy");
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.expect("h2 handshake");
        tokio::spawn(conn);
        let resp = sender.send_request(to_h2(req)).await.expect("h2 request");
        collect(resp).await
    })
    .await
    .expect("HTTP/2 request timed out")
}

/// HTTP/2 carries the host in :authority: turn the Host header into an absolute URI.
pub fn to_h2<B>(mut req: Request<B>) -> Request<B> {
    if let Some(host) = req.headers_mut().remove("host") {
        let pq = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or("/".into());
        *req.uri_mut() = format!("http://{}{pq}", host.to_str().unwrap()).parse().unwrap();
    }
    *req.version_mut() = Version::HTTP_2;
    req
}

pub async fn collect(resp: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Resp { status: parts.status, version: parts.version, headers: parts.headers, body }
}

/// GET over HTTP/1.1 on a fresh connection.
pub async fn get_h1(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    send_h1(addr, get(host, path, headers)).await
}

/// Writes `bytes` on a new connection, then reads until the peer closes, a whole response with a
/// Content-Length has arrived, or 10 s pass; returns what came back. A reset after the response
/// (the proxy closing on a request it rejected) still returns what was read.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The peer may answer and close before reading everything: a failed write is not an error here.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if response_complete(&out) {
            break;
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

fn response_complete(b: &[u8]) -> bool {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    let len = head.lines().find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()));
    matches!(len, Some(n) if b.len() >= end + 4 + n)
}

/// The status code of the first response in raw HTTP/1.1 output.
pub fn raw_status(resp: &str) -> Option<u16> {
    let line = resp.lines().next()?;
    line.strip_prefix("HTTP/1.1 ").or_else(|| line.strip_prefix("HTTP/1.0 "))?.get(..3)?.parse().ok()
}

/// A minimal TLS 1.2/1.3 ClientHello record carrying SNI `sni` (when given) and ALPN `h2`,
/// `http/1.1` — enough for a tls_inspector, without a TLS library.
pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let name = name.as_bytes();
        let mut list = vec![0u8]; // host_name
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&list);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ext.extend_from_slice(&body);
    }
    let mut alpn = Vec::new();
    for p in [&b"h2"[..], b"http/1.1"] {
        alpn.push(p.len() as u8);
        alpn.extend_from_slice(p);
    }
    let mut body = (alpn.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&alpn);
    ext.extend_from_slice(&16u16.to_be_bytes());
    ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
    ext.extend_from_slice(&body);

    let mut hello = vec![3, 3];
    hello.extend_from_slice(&[7u8; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&4u16.to_be_bytes());
    hello.extend_from_slice(&[0x13, 0x01, 0xc0, 0x2f]); // cipher suites
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    hello.extend_from_slice(&ext);
    let mut hs = vec![1u8]; // ClientHello
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// A TCP connection to `addr`, from the source address `src` when given.
pub async fn connect_from(src: Option<IpAddr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ip) = src else { return TcpStream::connect(addr).await };
    let s = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    s.bind(SocketAddr::new(ip, 0))?;
    s.connect(addr).await
}

/// As [`tcp_exchange`], from `src`, with the failure returned rather than a panic: a peer that
/// closes or resets without answering (a black hole) is what some tests expect.
pub async fn try_tcp_exchange_from(src: Option<IpAddr>, addr: SocketAddr, send: &[u8]) -> std::io::Result<Vec<u8>> {
    let send = send.to_vec();
    tokio::time::timeout(TIMEOUT, async move {
        let mut s = connect_from(src, addr).await?;
        // The peer may close before reading: what matters is what comes back.
        let _ = s.write_all(&send).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok(out)
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TCP exchange timed out")))
}

/// Connects, writes `send`, shuts down writing, and reads everything until EOF (bounded).
pub async fn tcp_exchange(addr: SocketAddr, send: &[u8]) -> Vec<u8> {
    tokio::time::timeout(TIMEOUT, async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(send).await.expect("write");
        s.shutdown().await.expect("shutdown");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        out
    })
    .await
    .expect("TCP exchange timed out")
}

/// One HTTP/1.1 keep-alive connection for many sequential requests.
pub struct H1Conn(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl H1Conn {
    pub async fn open(addr: SocketAddr) -> H1Conn {
        let s = TcpStream::connect(addr).await.expect("connect to proxy");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.expect("h1 handshake");
        tokio::spawn(conn);
        H1Conn(sender)
    }

    /// Whether the proxy has closed this connection.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        tokio::time::timeout(TIMEOUT, async {
            self.0.ready().await.expect("connection ready");
            collect(self.0.send_request(req).await.expect("h1 request")).await
        })
        .await
        .expect("request timed out")
    }
}

/// An HTTP/2 frame as read off the wire.
#[derive(Debug, Clone)]
pub struct H2Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl H2Frame {
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const END_STREAM: u8 = 0x1;

    pub fn end_stream(&self) -> bool {
        matches!(self.kind, H2Frame::DATA | H2Frame::HEADERS) && self.flags & H2Frame::END_STREAM != 0
    }
}

/// A bare HTTP/2 (h2c prior knowledge) client that shows every frame the server sends, for what
/// hyper's client hides (GOAWAY). Requests are HPACK literals without Huffman coding.
pub struct H2Raw(TcpStream);

impl H2Raw {
    /// Connects and sends the connection preface with empty SETTINGS.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.expect("preface");
        let mut h = H2Raw(s);
        h.write_frame(H2Frame::SETTINGS, 0, 0, &[]).await.expect("SETTINGS");
        h
    }

    async fn write_frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> std::io::Result<()> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        self.0.write_all(&f).await
    }

    /// Sends a GET (HEADERS with END_STREAM) on `stream` (odd, increasing).
    pub async fn get(&mut self, stream: u32, authority: &str, path: &str, headers: &[(&str, &str)]) {
        let mut block = Vec::new();
        let all = [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)];
        for (n, v) in all.iter().chain(headers) {
            block.push(0); // literal header field without indexing, new name
            for s in [n.as_bytes(), v.as_bytes()] {
                assert!(s.len() < 127, "H2Raw only encodes short header fields");
                block.push(s.len() as u8);
                block.extend_from_slice(s);
            }
        }
        // END_STREAM | END_HEADERS
        self.write_frame(H2Frame::HEADERS, 0x5, stream, &block).await.expect("HEADERS");
    }

    /// The next frame (SETTINGS are acknowledged as they come); None when the peer closed or
    /// nothing came within `TIMEOUT`.
    pub async fn next_frame(&mut self) -> Option<H2Frame> {
        let mut head = [0u8; 9];
        tokio::time::timeout(TIMEOUT, self.0.read_exact(&mut head)).await.ok()?.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        tokio::time::timeout(TIMEOUT, self.0.read_exact(&mut payload)).await.ok()?.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let f = H2Frame { kind: head[3], flags: head[4], stream, payload };
        if f.kind == H2Frame::SETTINGS && f.flags & 1 == 0 {
            // The peer may be closing: a failed ACK is not this reader's concern.
            let _ = self.write_frame(H2Frame::SETTINGS, 1, 0, &[]).await;
        }
        Some(f)
    }
}
