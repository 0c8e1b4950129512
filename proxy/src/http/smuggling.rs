//! Request-smuggling guard for HTTP/1.x downstream connections.
//!
//! hyper (correctly, per RFC 9112) lets `Transfer-Encoding` win over `Content-Length` and folds
//! repeated equal `Content-Length`s, so the router never sees those ambiguous framings. Envoy
//! rejects them with 400, and so do we: this reader sits between the socket and hyper, follows the
//! message framing (head, Content-Length body, chunked body), and when a head is ambiguous it
//! renames every `Content-Length` to the same-length marker `x-outrigger-cl` before hyper parses it.
//! The router answers any request carrying the marker with 400 and `connection: close`, so the
//! request never reaches an upstream.
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::HeaderName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub static MARKER: HeaderName = HeaderName::from_static("x-outrigger-cl");
const CONTENT_LENGTH: &[u8] = b"content-length";
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers {
        line_len: usize,
    },
    /// Not HTTP/1 heads any more (HTTP/2 preface, tunnel, or a head hyper will reject itself).
    Pass,
}

pub struct Guarded<IO> {
    io: IO,
    state: State,
    /// Bytes read but not yet given to hyper: an incomplete head.
    held: Vec<u8>,
    chunk_line: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    max_head: usize,
    max_headers: usize,
    eof: bool,
    /// `request_headers_timeout`: how long a head may stay incomplete (from its first byte, as
    /// in Envoy), and the running deadline while one is.
    head_timeout: Option<std::time::Duration>,
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, max_head: usize, max_headers: usize) -> Self {
        Guarded {
            io,
            state: State::Head,
            held: Vec::new(),
            chunk_line: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            max_head,
            max_headers,
            eof: false,
            head_timeout: None,
            head_deadline: None,
        }
    }

    /// Closes the connection (a read error) when a head stays incomplete for `timeout`.
    pub fn with_head_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
        self.head_timeout = timeout;
        self
    }

    /// Runs the framing state machine over `data` in place (renaming ambiguous headers) and
    /// returns how many leading bytes hyper may see now; the rest is an incomplete head to hold.
    fn process(&mut self, data: &mut [u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            let rest = data.len() - i;
            match self.state {
                State::Pass => return data.len(),
                State::Body(n) => {
                    let take = n.min(rest as u64);
                    i += take as usize;
                    self.state = if n == take { State::Head } else { State::Body(n - take) };
                }
                State::ChunkData(n) => {
                    let take = n.min(rest as u64);
                    i += take as usize;
                    self.state = if n == take { State::ChunkDataEnd(2) } else { State::ChunkData(n - take) };
                }
                State::ChunkDataEnd(k) => {
                    let take = (k as usize).min(rest);
                    i += take;
                    let left = k - take as u8;
                    self.state = if left == 0 { State::ChunkSize } else { State::ChunkDataEnd(left) };
                }
                State::ChunkSize => {
                    let (line_end, consumed) = match data[i..].iter().position(|&b| b == b'\n') {
                        Some(p) => (true, p + 1),
                        None => (false, rest),
                    };
                    self.chunk_line.extend_from_slice(&data[i..i + consumed]);
                    i += consumed;
                    if self.chunk_line.len() > 4096 {
                        self.state = State::Pass;
                    } else if line_end {
                        self.state = match chunk_size(&self.chunk_line) {
                            Some(0) => State::Trailers { line_len: 0 },
                            Some(n) => State::ChunkData(n),
                            None => State::Pass,
                        };
                        self.chunk_line.clear();
                    }
                }
                State::Trailers { mut line_len } => {
                    let mut done = false;
                    while i < data.len() {
                        let b = data[i];
                        i += 1;
                        if b == b'\n' {
                            if line_len == 0 {
                                done = true;
                                break;
                            }
                            line_len = 0;
                        } else if b != b'\r' {
                            line_len += 1;
                        }
                    }
                    self.state = if done { State::Head } else { State::Trailers { line_len } };
                }
                State::Head => {
                    // Empty lines before a request line are allowed and carry nothing.
                    while i < data.len() && matches!(data[i], b'\r' | b'\n') {
                        i += 1;
                    }
                    if i == data.len() {
                        return i;
                    }
                    if data[i..].starts_with(b"PRI ") {
                        self.state = State::Pass;
                        return data.len();
                    }
                    match find_head_end(&data[i..]) {
                        Some(end) => {
                            self.state = self.inspect(&mut data[i..i + end]);
                            i += end;
                        }
                        None if data.len() - i > self.max_head => {
                            // Too large: let hyper see it and answer 431.
                            self.state = State::Pass;
                            return data.len();
                        }
                        None => return i,
                    }
                }
            }
        }
        data.len()
    }

    /// Looks at one complete head; rewrites ambiguous framing and returns the next state.
    fn inspect(&self, head: &mut [u8]) -> State {
        let mut headers = vec![httparse::EMPTY_HEADER; self.max_headers.clamp(16, 1024)];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(_)) = req.parse(head) else {
            // hyper will reject it and close the connection.
            return State::Pass;
        };
        if req.method == Some("CONNECT") {
            return State::Pass;
        }
        let mut cl_count = 0;
        let mut cl_value = None;
        let mut te_chunked = false;
        let mut te_count = 0;
        let mut upgrade = false;
        let mut cl_offsets = Vec::new();
        let base = head.as_ptr() as usize;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl_count += 1;
                cl_offsets.push(h.name.as_ptr() as usize - base);
                cl_value = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te_count += 1;
                te_chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        if cl_count > 1 || (cl_count > 0 && te_count > 0) {
            for off in cl_offsets {
                head[off..off + CONTENT_LENGTH.len()].copy_from_slice(MARKER.as_str().as_bytes());
            }
            // The router answers 400 and closes; nothing after this head is parsed again.
            return State::Pass;
        }
        if upgrade {
            return State::Pass;
        }
        if te_count > 0 {
            return if te_chunked { State::ChunkSize } else { State::Pass };
        }
        match (cl_count, cl_value) {
            (0, _) | (_, Some(0)) => State::Head,
            (_, Some(n)) => State::Body(n),
            (_, None) => State::Pass,
        }
    }
}

/// Index just past the blank line ending a head (`\n\n` or `\n\r\n`).
fn find_head_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            if b.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits: Vec<u8> = line.iter().copied().take_while(|b| b.is_ascii_hexdigit()).collect();
    if digits.is_empty() || digits.len() > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).ok()
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = (this.out.len() - this.out_pos).min(buf.remaining());
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.held.is_empty() {
                this.head_deadline = None;
                if this.state == State::Pass {
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
                // Fast path: read straight into hyper's buffer and inspect in place; only an
                // incomplete head at the end is taken back out and held.
                let start = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                let end = buf.filled().len();
                if end == start {
                    return Poll::Ready(Ok(()));
                }
                let ok = this.process(&mut buf.filled_mut()[start..end]);
                if start + ok < end {
                    this.held.extend_from_slice(&buf.filled()[start + ok..end]);
                    buf.set_filled(start + ok);
                }
                if ok > 0 {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            if this.eof {
                // A partial head at EOF: hand it over as is and let hyper report it.
                this.out = std::mem::take(&mut this.held);
                if this.out.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let before = this.held.len();
            this.held.resize(before + READ_CHUNK, 0);
            let mut rb = ReadBuf::new(&mut this.held[before..]);
            let r = Pin::new(&mut this.io).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.held.truncate(before + n);
            if r.is_pending() {
                if let Some(t) = this.head_timeout {
                    let d = this.head_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request headers timeout")));
                    }
                }
                return Poll::Pending;
            }
            ready!(r)?;
            if n == 0 {
                this.eof = true;
                continue;
            }
            let mut held = std::mem::take(&mut this.held);
            let ok = this.process(&mut held);
            if ok > 0 {
                // A head completed: what is held now is the next one, with its own deadline.
                this.head_deadline = None;
            }
            this.held = held.split_off(ok);
            this.out = held;
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the parts as successive reads; returns what hyper would see and the final state.
    fn run(input: &[&[u8]]) -> (Vec<u8>, State) {
        let (seen, state, _) = run_held(input);
        (seen, state)
    }

    fn run_held(input: &[&[u8]]) -> (Vec<u8>, State, Vec<u8>) {
        let mut g = Guarded::new((), 60 * 1024, 100);
        let mut seen = Vec::new();
        for part in input {
            let mut data = std::mem::take(&mut g.held);
            data.extend_from_slice(part);
            let ok = g.process(&mut data);
            g.held = data.split_off(ok);
            seen.extend_from_slice(&data);
        }
        (seen, g.state, g.held)
    }

    #[test]
    fn plain_requests_pass_unchanged_across_any_split() {
        let req: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-t: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..req.len() {
            let (out, state) = run(&[&req[..split], &req[split..]]);
            assert_eq!(out, req, "split at {split}");
            assert_eq!(state, State::Head, "split at {split}");
        }
    }

    #[test]
    fn content_length_with_transfer_encoding_is_marked() {
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let (out, state) = run(&[req]);
        assert_eq!(state, State::Pass);
        assert!(String::from_utf8_lossy(&out).contains("x-outrigger-cl: 4"));
        assert_eq!(out.len(), req.len());
    }

    #[test]
    fn duplicate_content_length_is_marked_even_when_equal() {
        let req = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
        let (out, _) = run(&[req]);
        let s = String::from_utf8_lossy(&out);
        assert_eq!(s.matches("x-outrigger-cl").count(), 2, "{s}");
    }

    #[test]
    fn smuggled_request_in_a_body_is_not_inspected_as_a_head() {
        // The body of the first request happens to look like an ambiguous head: it is body data.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        let mut req = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        req.extend_from_slice(body);
        let (out, state) = run(&[&req]);
        assert_eq!(out, req);
        assert_eq!(state, State::Head);
    }

    #[test]
    fn h2_preface_switches_to_passthrough() {
        let (out, state) = run(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]);
        assert_eq!(state, State::Pass);
        assert_eq!(out, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    #[test]
    fn random_input_never_panics_and_loses_no_bytes() {
        for seed in 0..500u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(0..400);
            let alphabet = b"GET POST / HTTP/1.1\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n0a;\r\n";
            let data: Vec<u8> = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            let split = rng.usize(0..=data.len());
            let (mut seen, _, held) = run_held(&[&data[..split], &data[split..]]);
            seen.extend_from_slice(&held);
            assert_eq!(seen, data, "seed {seed}");
        }
    }
}
