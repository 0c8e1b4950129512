//! Differential property test: random streams of pipelined requests (good ones, and ones with
//! every framing defect the guard knows of) go through the guard and hyper's HTTP/1 server, in
//! random read splits; the requests the service sees (complete, with their bodies) must be exactly
//! those a strict RFC 9112 reader accepts, in order, and a tunnel must carry exactly the bytes
//! after the accepted upgrade.
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::{Codec, Gate, Guarded};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    path: String,
    body: Vec<u8>,
}

/// What a strict RFC 9112 reader makes of `stream`: the requests it accepts before the first
/// one it must reject, and the tunnel bytes if an upgrade to `/ws-ok` is accepted.
fn reference(stream: &[u8]) -> (Vec<Seen>, Option<Vec<u8>>) {
    let mut seen = Vec::new();
    let mut i = 0;
    loop {
        let rest = &stream[i..];
        if rest.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return (seen, None);
        }
        let mut slots = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut slots);
        let Ok(httparse::Status::Complete(n)) = req.parse(rest) else { return (seen, None) };
        let (method, path, version) = (req.method.unwrap().to_string(), req.path.unwrap().to_string(), req.version);
        let named = |name: &str| -> Vec<&[u8]> {
            req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).collect()
        };
        let (cl, te) = (named("content-length"), named("transfer-encoding"));
        let upgrade = !named("upgrade").is_empty();
        let after_head = &rest[n..];
        let framed = match (cl.as_slice(), te.as_slice()) {
            ([], []) => Some((Vec::new(), 0)),
            ([], [t]) if version == Some(1) && t.trim_ascii().eq_ignore_ascii_case(b"chunked") => dechunk(after_head),
            ([v], []) => decimal(v).and_then(|len| {
                let len = usize::try_from(len).ok()?;
                (after_head.len() >= len).then(|| (after_head[..len].to_vec(), len))
            }),
            _ => None,
        };
        let Some((body, used)) = framed else { return (seen, None) };
        i += n + used;
        if method == "CONNECT" || upgrade {
            // The service accepts only a WebSocket-style upgrade to /ws-ok; what follows an accepted
            // one is the tunnel's, a refused one is followed by the next request.
            if upgrade && version == Some(1) && path == "/ws-ok" && method != "CONNECT" {
                seen.push(Seen { method, path, body });
                return (seen, Some(stream[i..].to_vec()));
            }
            continue;
        }
        seen.push(Seen { method, path, body });
    }
}

fn decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// RFC 9112 7.1 chunked coding, strictly (CRLF only, no control characters, lines of at most
/// 4 KiB): the decoded body and the bytes it took.
fn dechunk(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut i = 0;
    let crlf_line = |from: usize| -> Option<(&[u8], usize)> {
        let end = from + b[from..].windows(2).position(|w| w == b"\r\n")?;
        let line = &b[from..end];
        (line.len() + 2 <= 4096 && !line.iter().any(|&c| c == b'\n' || c == b'\r')).then_some((line, end + 2))
    };
    loop {
        let (line, next) = crlf_line(i)?;
        let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return None;
        }
        let (size, mut tail) =
            (u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?, &line[digits..]);
        while let [b' ' | b'\t', t @ ..] = tail {
            tail = t;
        }
        if !tail.is_empty() && (tail[0] != b';' || tail.iter().any(|&c| (c < 0x20 && c != b'\t') || c == 0x7f)) {
            return None;
        }
        i = next;
        if size == 0 {
            loop {
                let (line, next) = crlf_line(i)?;
                i = next;
                if line.is_empty() {
                    return Some((body, i));
                }
                let colon = line.iter().position(|&c| c == b':')?;
                let token = |c: &u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c);
                if colon == 0 || !line[..colon].iter().all(token) || line.iter().any(|&c| c < 0x20 && c != b'\t') {
                    return None;
                }
            }
        }
        let size = usize::try_from(size).ok()?;
        if b.len() < i + size + 2 || &b[i + size..i + size + 2] != b"\r\n" {
            return None;
        }
        body.extend_from_slice(&b[i..i + size]);
        i += size + 2;
    }
}

/// One random request, good or with one of the framing defects.
fn random_request(rng: &mut fastrand::Rng, n: usize) -> Vec<u8> {
    let path = format!("/r{n}");
    let body: Vec<u8> = if rng.bool() {
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
    } else {
        (0..rng.usize(0..40)).map(|_| rng.alphanumeric() as u8).collect()
    };
    let head = |method: &str, extra: &str| format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").into_bytes();
    let chunked = |rng: &mut fastrand::Rng, body: &[u8]| {
        let mut out = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let k = rng.usize(1..=rest.len());
            let ext = if rng.u8(..8) == 0 { ";name=value" } else { "" };
            out.extend_from_slice(format!("{k:x}{ext}\r\n").as_bytes());
            out.extend_from_slice(&rest[..k]);
            out.extend_from_slice(b"\r\n");
            rest = &rest[k..];
        }
        out.extend_from_slice(if rng.bool() { b"0\r\n\r\n" } else { b"0\r\nx-trailer: t\r\n\r\n" });
        out
    };
    let with = |mut h: Vec<u8>, b: &[u8]| {
        h.extend_from_slice(b);
        h
    };
    let cl = format!("Content-Length: {}\r\n", body.len());
    match rng.u8(..20) {
        0..=3 => head("GET", ""),
        4..=5 => with(head("POST", &cl), &body),
        6..=7 => {
            let c = chunked(rng, &body);
            with(head("POST", "Transfer-Encoding: chunked\r\n"), &c)
        }
        8 => {
            let c = chunked(rng, &body);
            with(head("POST", &format!("{cl}Transfer-Encoding: chunked\r\n")), &c)
        }
        9 => with(head("POST", &format!("{cl}{cl}")), &body),
        10 => {
            let bad = ["+1", "1 1", "0x1", "", "1,1", "-1"][rng.usize(..6)];
            with(head("POST", &format!("Content-Length: {bad}\r\n")), b"x")
        }
        11 => {
            let te = ["gzip", "gzip, chunked", "chunked, chunked", "identity", "chunked\r\nTransfer-Encoding: chunked"]
                [rng.usize(..5)];
            let c = chunked(rng, &body);
            with(head("POST", &format!("Transfer-Encoding: {te}\r\n")), &c)
        }
        12 => {
            let mut c = chunked(rng, &body);
            // One defect in an otherwise good chunked body.
            let defect: &[u8] =
                [&b"zz\r\n"[..], b"5\n", b"5\r\nab", b"1;\x01\r\nx\r\n", b"0\r\nbad trailer\r\n\r\n"][rng.usize(..5)];
            c.splice(0..0, defect.iter().copied());
            with(head("POST", "Transfer-Encoding: chunked\r\n"), &c)
        }
        13 => head("GET", "X-Bad: a\rb\r\n"),
        14 => b"HELLO THERE\r\n\r\n".to_vec(),
        15..=16 => {
            let to = if rng.bool() { "/ws-ok" } else { "/ws-no" };
            format!("GET {to} HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").into_bytes()
        }
        17 => b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
        18 => format!("POST {path} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(),
        _ => format!("GET {path} HTTP/1.1\nHost: x\n\n").into_bytes(),
    }
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    tunnel: Mutex<Option<Vec<u8>>>,
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, close: bool) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    if close {
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    r
}

/// The router's part, reduced: refuse what the guard refused, accept the upgrade to /ws-ok, refuse
/// other upgrades and CONNECT, record every other request whose body arrived whole.
async fn serve(
    gate: Arc<Gate>,
    rec: Arc<Recorder>,
    mut req: Request<Incoming>,
) -> Result<Reply, std::convert::Infallible> {
    let ticket = gate.start();
    if ticket.refused() {
        return Ok(reply(StatusCode::BAD_REQUEST, true));
    }
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let upgrade = req.headers().contains_key(http::header::UPGRADE);
    if method == "CONNECT" || upgrade {
        if upgrade && req.version() == http::Version::HTTP_11 && path == "/ws-ok" && method != "CONNECT" {
            rec.seen.lock().unwrap().push(Seen { method, path, body: Vec::new() });
            let on = hyper::upgrade::on(&mut req);
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut io = TokioIo::new(on.await.expect("upgraded"));
                let mut bytes = Vec::new();
                let _ = io.read_to_end(&mut bytes).await;
                *rec.tunnel.lock().unwrap() = Some(bytes);
            });
            ticket.finish(true);
            let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, false);
            r.headers_mut().insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
            r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
            return Ok(r);
        }
        ticket.finish(false);
        return Ok(reply(StatusCode::FORBIDDEN, false));
    }
    match req.into_body().collect().await {
        Ok(b) => {
            rec.seen.lock().unwrap().push(Seen { method, path, body: b.to_bytes().to_vec() });
            Ok(reply(StatusCode::OK, false))
        }
        Err(_) => Ok(reply(StatusCode::BAD_REQUEST, true)),
    }
}

async fn through_guard(stream: Vec<u8>, splits: Vec<usize>) -> (Vec<Seen>, Option<Vec<u8>>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let gate = Arc::new(Gate::default());
    let rec = Arc::new(Recorder::default());
    let io = Guarded::new(server, Codec::Http1, gate.clone(), 60 * 1024, 100);
    let svc = {
        let rec = rec.clone();
        hyper::service::service_fn(move |req| serve(gate.clone(), rec.clone(), req))
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .max_headers(100)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let server = tokio::spawn(conn);
    let (mut rd, mut wr) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        let mut at = 0;
        for s in splits.into_iter().chain([stream.len()]) {
            let s = s.clamp(at, stream.len());
            if wr.write_all(&stream[at..s]).await.is_err() {
                return;
            }
            at = s;
            tokio::task::yield_now().await;
        }
        let _ = wr.shutdown().await;
    });
    let reader = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
    });
    let limit = std::time::Duration::from_secs(20);
    tokio::time::timeout(limit, server).await.expect("the connection ends").ok();
    // The duplex buffer holds any whole stream: the writer never waits on the reader.
    tokio::time::timeout(limit, writer).await.expect("the stream is written").ok();
    reader.abort();
    // A tunnel's reader finishes once the client's write side has closed.
    for _ in 0..200 {
        if rec.tunnel.lock().unwrap().is_some() || !rec.seen.lock().unwrap().iter().any(|s| s.path == "/ws-ok") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let seen = rec.seen.lock().unwrap().clone();
    let tunnel = rec.tunnel.lock().unwrap().clone();
    (seen, tunnel)
}

#[tokio::test(flavor = "current_thread")]
async fn upstream_sees_exactly_what_a_strict_parser_accepts() {
    for seed in 0..400u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut stream = Vec::new();
        for n in 0..rng.usize(1..6) {
            stream.extend(random_request(&mut rng, n));
        }
        let mut splits: Vec<usize> = (0..rng.usize(0..4)).map(|_| rng.usize(0..=stream.len())).collect();
        splits.sort_unstable();
        let (want, want_tunnel) = reference(&stream);
        let (got, got_tunnel) = through_guard(stream.clone(), splits.clone()).await;
        assert_eq!(got, want, "seed {seed}, splits {splits:?}, stream {:?}", String::from_utf8_lossy(&stream));
        assert_eq!(got_tunnel, want_tunnel, "seed {seed}: tunnel bytes");
    }
}
