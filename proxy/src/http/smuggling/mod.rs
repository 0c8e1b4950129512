//! Request-smuggling guard for HTTP/1.x downstream connections.
//!
//! hyper (correctly, per RFC 9112) lets `Transfer-Encoding` win over `Content-Length`, folds
//! repeated equal `Content-Length`s and accepts `Transfer-Encoding: gzip, chunked`, so the router
//! never sees those ambiguous framings. Envoy rejects them with 400, and so do we: this reader sits
//! between the socket and hyper and follows the message framing (head, Content-Length body,
//! chunked body, trailers) with a strict RFC 9112 parser of its own. It fails closed:
//!
//! * A head whose framing is ambiguous or invalid is handed to hyper (which answers 400 itself, or
//!   dispatches it to the router, which answers 400 `DPE` with `connection: close` because the
//!   [`Gate`] marks it refused), and no byte after it ever reaches hyper.
//! * A malformed chunked body ends the read side with an error: hyper's body fails, the router
//!   answers 400 `DPE`, and no byte after the error reaches hyper.
//! * After an `Upgrade:` or `CONNECT` request the following bytes are held until the router has
//!   answered it: they pass through untouched only once the answer switched protocols (101, or a
//!   2xx to CONNECT); otherwise they are parsed as the next request.
//! * The only other pass-through is the HTTP/2 connection preface, at the start of a connection
//!   whose codec allows HTTP/2.
//!
//! hyper has no hook to reject a framing before it parses it, which is why this is a reader.
mod gate;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use gate::{Gate, Ticket};

const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size line (with extensions) accepted; hyper's own limit is larger.
const MAX_CHUNK_LINE: usize = 4096;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Header slots on the stack; more than this many headers are parsed into a heap buffer.
const STACK_HEADERS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The first bytes of a connection that may be HTTP/2.
    Preface,
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCr,
    ChunkLf,
    Trailers {
        count: usize,
        bytes: usize,
    },
    /// After an upgrade request: nothing passes until the router has answered it.
    AwaitUpgrade,
    /// HTTP/2, or a tunnel the router set up.
    Pass,
    /// A framing error (`body`: in a chunked body, else a refused head): nothing more reaches
    /// hyper, every further read fails. hyper has what it needs to answer a refused head (400 or
    /// 431; the router answers one that hyper dispatches), and a read error never leaves it
    /// waiting for bytes that will not come.
    Failed {
        body: bool,
    },
}

pub struct Guarded<IO> {
    io: IO,
    state: State,
    gate: Arc<Gate>,
    /// Heads handed to hyper so far (the index of the next one).
    heads: u64,
    /// The message being read is an upgrade request: hold what follows it.
    upgrade: bool,
    /// Bytes read but not yet given to hyper: an incomplete head, or what follows an upgrade
    /// request or a framing error.
    held: Vec<u8>,
    chunk_line: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    max_head: usize,
    max_headers: usize,
    eof: bool,
    /// `request_headers_timeout`: how long a head may stay incomplete (from its first byte, as
    /// in Envoy), and the running deadline while one is. hyper's own header timer cannot do
    /// this: it never sees a head the guard still holds.
    head_timeout: Option<std::time::Duration>,
    head_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Which protocols the connection's codec accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Http1,
    Http2,
    Auto,
}

impl<IO> Guarded<IO> {
    pub fn new(io: IO, codec: Codec, gate: Arc<Gate>, max_head: usize, max_headers: usize) -> Self {
        let state = match codec {
            Codec::Http1 => State::Head,
            Codec::Auto => State::Preface,
            Codec::Http2 => State::Pass,
        };
        Guarded {
            io,
            state,
            gate,
            heads: 0,
            upgrade: false,
            held: Vec::new(),
            chunk_line: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            max_head,
            max_headers: max_headers.max(1),
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

    fn end_of_message(&mut self) -> State {
        if std::mem::take(&mut self.upgrade) {
            State::AwaitUpgrade
        } else {
            State::Head
        }
    }

    /// Runs the framing state machine over `data` and returns how many leading bytes hyper may
    /// see now; the rest is held (an incomplete head, or bytes that must wait or never pass).
    fn process(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            match self.state {
                State::Pass => return data.len(),
                State::AwaitUpgrade | State::Failed { .. } => return i,
                State::Preface => {
                    let n = rest.len().min(H2_PREFACE.len());
                    if rest[..n] != H2_PREFACE[..n] {
                        self.state = State::Head;
                    } else if n == H2_PREFACE.len() {
                        self.state = State::Pass;
                    } else {
                        return i;
                    }
                }
                State::Body(n) => {
                    let take = n.min(rest.len() as u64);
                    i += take as usize;
                    self.state = if n == take { self.end_of_message() } else { State::Body(n - take) };
                }
                State::ChunkData(n) => {
                    let take = n.min(rest.len() as u64);
                    i += take as usize;
                    self.state = if n == take { State::ChunkCr } else { State::ChunkData(n - take) };
                }
                State::ChunkCr | State::ChunkLf => {
                    let want = if self.state == State::ChunkCr { b'\r' } else { b'\n' };
                    if rest[0] != want {
                        self.state = State::Failed { body: true };
                        return i;
                    }
                    i += 1;
                    self.state = if want == b'\r' { State::ChunkLf } else { State::ChunkSize };
                }
                State::ChunkSize => {
                    let (consumed, complete) = line(rest);
                    self.chunk_line.extend_from_slice(&rest[..consumed]);
                    i += consumed;
                    if self.chunk_line.len() > MAX_CHUNK_LINE {
                        self.state = State::Failed { body: true };
                        return i;
                    }
                    if complete {
                        self.state = match chunk_size(&self.chunk_line) {
                            Some(0) => State::Trailers { count: 0, bytes: 0 },
                            Some(n) => State::ChunkData(n),
                            None => State::Failed { body: true },
                        };
                        self.chunk_line.clear();
                    }
                }
                State::Trailers { count, bytes } => {
                    let (consumed, complete) = line(rest);
                    self.chunk_line.extend_from_slice(&rest[..consumed]);
                    i += consumed;
                    let bytes = bytes + consumed;
                    if bytes > self.max_head {
                        self.state = State::Failed { body: true };
                        return i;
                    }
                    if !complete {
                        self.state = State::Trailers { count, bytes };
                        continue;
                    }
                    let ok = trailer_line_ok(&self.chunk_line);
                    let last = self.chunk_line == b"\r\n";
                    self.chunk_line.clear();
                    self.state = if !ok || count >= self.max_headers {
                        State::Failed { body: true }
                    } else if last {
                        self.end_of_message()
                    } else {
                        State::Trailers { count: count + 1, bytes }
                    };
                }
                State::Head => match self.inspect(rest) {
                    Head::Partial => return i,
                    Head::Accepted { len, next } => {
                        i += len;
                        self.state = next;
                    }
                    Head::Refused { len } => {
                        // hyper gets the head to answer it; nothing after it is parsed.
                        self.gate.refuse_from(self.heads);
                        self.state = State::Failed { body: false };
                        return i + len;
                    }
                },
            }
        }
        data.len()
    }

    /// Looks at the head at the start of `data`.
    fn inspect(&mut self, data: &[u8]) -> Head {
        // Uninitialised slots, as hyper's own parse uses: no 4 KiB of zeroing per request.
        let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let mut heap = Vec::new();
        let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if self.max_headers <= STACK_HEADERS {
            &mut stack[..self.max_headers]
        } else {
            heap.resize_with(self.max_headers, MaybeUninit::uninit);
            &mut heap
        };
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(data, slots) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if data.len() <= self.max_head => return Head::Partial,
            // Too large: hyper answers 431 once its buffer is full, so it gets all of it.
            Ok(httparse::Status::Partial) => return Head::Refused { len: data.len() },
            // Unparsable: hyper answers 400 on the same bytes; it gets them up to the first empty
            // line (where its parser would stop too) and nothing after.
            Err(_) => {
                // httparse skips empty lines before the request line; so must the search for the
                // head's end, or hyper would get only those and wait for the rest.
                let skip = data.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                let len = head_end(&data[skip..]).map_or(data.len(), |e| skip + e);
                return Head::Refused { len };
            }
        };
        let refused = Head::Refused { len };
        let mut content_length = None;
        let mut cl_count = 0;
        let mut te_count = 0;
        let mut te_chunked = false;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl_count += 1;
                content_length = digits(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te_count += 1;
                te_chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        // RFC 9112 6.1 and 6.3: Transfer-Encoding in a request must be exactly `chunked` (no other
        // coding is implemented), HTTP/1.1 only, and never with Content-Length; one valid
        // Content-Length otherwise.
        let next = match (cl_count, te_count) {
            (0, 0) => None,
            (0, 1) if te_chunked && req.version == Some(1) => Some(State::ChunkSize),
            (1, 0) => match content_length {
                Some(0) => None,
                Some(n) => Some(State::Body(n)),
                None => return refused,
            },
            _ => return refused,
        };
        self.heads += 1;
        self.upgrade = upgrade;
        if upgrade {
            self.gate.wait_on(self.heads - 1);
        }
        let next = next.unwrap_or_else(|| self.end_of_message());
        Head::Accepted { len, next }
    }

    /// Releases held bytes once the router decided about the upgrade request.
    fn resume(&mut self, decision: gate::Decision) {
        self.gate.clear_wait();
        self.state = match decision {
            gate::Decision::Tunnel => State::Pass,
            gate::Decision::Refused => State::Head,
        };
    }
}

enum Head {
    /// More bytes are needed.
    Partial,
    Accepted {
        len: usize,
        next: State,
    },
    /// hyper gets these `len` bytes and nothing after them.
    Refused {
        len: usize,
    },
}

/// Index just past the first empty line (`\n\n` or `\n\r\n`), where any head ends.
fn head_end(b: &[u8]) -> Option<usize> {
    let lf = b.iter().enumerate().filter(|(_, &c)| c == b'\n').map(|(i, _)| i);
    for i in lf {
        match b.get(i + 1..) {
            Some([b'\n', ..]) => return Some(i + 2),
            Some([b'\r', b'\n', ..]) => return Some(i + 3),
            _ => {}
        }
    }
    None
}

/// Bytes up to and including the first LF, and whether the LF was found.
fn line(b: &[u8]) -> (usize, bool) {
    match b.iter().position(|&c| c == b'\n') {
        Some(p) => (p + 1, true),
        None => (b.len(), false),
    }
}

/// `chunk-size [ chunk-ext ] CRLF` (RFC 9112 7.1): 1 to 16 hex digits, optional whitespace, then
/// optionally `;` and extensions free of control characters.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let n = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if n == 0 || n > 16 {
        return None;
    }
    let rest = &line[n..];
    let ext = rest.trim_ascii_start();
    if rest.iter().take(rest.len() - ext.len()).any(|&b| b != b' ' && b != b'\t') {
        return None;
    }
    if !ext.is_empty() && (ext[0] != b';' || ext.iter().any(|&b| is_ctl(b))) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..n]).ok()?, 16).ok()
}

/// A trailer line: `CRLF` alone (the end), or `name: value CRLF` with no other CR, LF or controls.
fn trailer_line_ok(line: &[u8]) -> bool {
    let Some(body) = line.strip_suffix(b"\r\n") else { return false };
    if body.is_empty() {
        return true;
    }
    let Some(colon) = body.iter().position(|&b| b == b':') else { return false };
    colon > 0 && body[..colon].iter().all(|&b| is_tchar(b)) && !body[colon + 1..].iter().any(|&b| is_ctl(b))
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `Content-Length = 1*DIGIT` (no sign, no whitespace inside, no list).
fn digits(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
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
            match this.state {
                State::Failed { body } => {
                    let what = if body { "malformed request body framing" } else { "refused request head" };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, what)));
                }
                State::AwaitUpgrade => match this.gate.poll_decision(cx.waker()) {
                    None => return Poll::Pending,
                    Some(d) => {
                        this.resume(d);
                        // What was held is looked at again in the new state.
                        let held = std::mem::take(&mut this.held);
                        let ok = this.process(&held);
                        this.out = held;
                        this.held = this.out.split_off(ok);
                        continue;
                    }
                },
                _ => {}
            }
            if this.held.is_empty() {
                this.head_deadline = None;
                if this.state == State::Pass {
                    return Pin::new(&mut this.io).poll_read(cx, buf);
                }
                // Fast path: read straight into hyper's buffer and inspect in place; only what
                // hyper may not see yet is taken back out and held.
                let start = buf.filled().len();
                ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                let end = buf.filled().len();
                if end == start {
                    return Poll::Ready(Ok(()));
                }
                let ok = this.process(&buf.filled()[start..end]);
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
                // The timeout runs from a head's first byte (empty lines before it do not count)
                // while hyper waits for it, not while an earlier request is being answered.
                let waiting = this.gate.idle() && this.held.iter().any(|b| !matches!(b, b'\r' | b'\n'));
                match this.head_timeout {
                    Some(t) if waiting => {
                        let d = this.head_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                        if d.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "request headers timeout",
                            )));
                        }
                    }
                    _ => this.head_deadline = None,
                }
                return Poll::Pending;
            }
            ready!(r)?;
            if n == 0 {
                this.eof = true;
                continue;
            }
            let held = std::mem::take(&mut this.held);
            let ok = this.process(&held);
            if ok > 0 {
                // A head completed: what is held now is the next one, with its own deadline.
                this.head_deadline = None;
            }
            this.out = held;
            this.held = this.out.split_off(ok);
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
