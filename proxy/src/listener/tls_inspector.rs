//! The tls_inspector listener filter: peeks (without consuming) at the first bytes of a
//! connection; if they are a TLS ClientHello, reads SNI and ALPN from it.
use std::time::Duration;

use tokio::net::TcpStream;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientHello {
    pub tls: bool,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
}

impl ClientHello {
    pub fn plaintext() -> Self {
        ClientHello::default()
    }
    pub fn transport_protocol(&self) -> &'static str {
        if self.tls {
            "tls"
        } else {
            "raw_buffer"
        }
    }
}

/// Envoy caps the inspected ClientHello at 64 KiB; so do we.
const MAX_HELLO: usize = 64 * 1024;

pub async fn peek(stream: &TcpStream, timeout: Duration) -> ClientHello {
    let mut buf = vec![0u8; 1024];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            _ => return ClientHello::plaintext(),
        };
        match parse(&buf[..n]) {
            Parse::Done(h) => return h,
            Parse::NotTls => return ClientHello::plaintext(),
            // The peer closed before a whole hello: not TLS we can inspect.
            Parse::NeedMore(_) if n == 0 => return ClientHello::plaintext(),
            Parse::NeedMore(want) => {
                if want > MAX_HELLO {
                    return ClientHello { tls: true, ..Default::default() };
                }
                if buf.len() < want {
                    buf.resize(want, 0);
                } else {
                    // The bytes are not all here yet: wait for more to arrive.
                    if tokio::time::timeout_at(deadline, stream.readable()).await.is_err() {
                        return ClientHello::plaintext();
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Parse {
    Done(ClientHello),
    NotTls,
    /// Needs at least this many bytes in total.
    NeedMore(usize),
}

/// Parses a TLS record holding a ClientHello (the whole hello must fit in the first record,
/// which it does in practice).
pub fn parse(b: &[u8]) -> Parse {
    if b.is_empty() {
        return Parse::NeedMore(5);
    }
    if b[0] != 0x16 {
        return Parse::NotTls;
    }
    if b.len() < 5 {
        return Parse::NeedMore(5);
    }
    if b[1] != 0x03 {
        return Parse::NotTls;
    }
    let rec_len = u16::from_be_bytes([b[3], b[4]]) as usize;
    if b.len() < 5 + rec_len {
        return Parse::NeedMore(5 + rec_len);
    }
    let hs = &b[5..5 + rec_len];
    match hello(hs) {
        Some(h) => Parse::Done(h),
        None => Parse::Done(ClientHello { tls: true, ..Default::default() }),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| b[0] as usize)
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

fn hello(hs: &[u8]) -> Option<ClientHello> {
    let mut r = Reader(hs);
    if r.u8()? != 1 {
        return None;
    }
    let len = r.take(3)?;
    let len = ((len[0] as usize) << 16) | ((len[1] as usize) << 8) | len[2] as usize;
    let mut r = Reader(r.take(len.min(r.0.len()))?);
    r.take(2 + 32)?; // version, random
    let sid = r.u8()?;
    r.take(sid)?;
    let cs = r.u16()?;
    r.take(cs)?;
    let cm = r.u8()?;
    r.take(cm)?;
    let mut out = ClientHello { tls: true, ..Default::default() };
    let Some(ext_len) = r.u16() else { return Some(out) };
    let mut ex = Reader(r.take(ext_len)?);
    while !ex.0.is_empty() {
        let ty = ex.u16()?;
        let l = ex.u16()?;
        let mut body = Reader(ex.take(l)?);
        match ty {
            0 => {
                let list = body.u16()?;
                let mut names = Reader(body.take(list)?);
                while !names.0.is_empty() {
                    let kind = names.u8()?;
                    let n = names.u16()?;
                    let name = names.take(n)?;
                    if kind == 0 {
                        out.sni = std::str::from_utf8(name).ok().map(|s| s.to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let list = body.u16()?;
                let mut protos = Reader(body.take(list)?);
                while !protos.0.is_empty() {
                    let n = protos.u8()?;
                    let p = protos.take(n)?;
                    if let Ok(p) = std::str::from_utf8(p) {
                        out.alpn.push(p.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello with SNI "api.example.com" and ALPN ["h2", "http/1.1"].
    fn client_hello() -> Vec<u8> {
        let mut ext = Vec::new();
        let name = b"api.example.com";
        let mut sni = vec![];
        sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name);
        ext.extend_from_slice(&0u16.to_be_bytes());
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut alpn = vec![];
        for p in [&b"h2"[..], b"http/1.1"] {
            alpn.push(p.len() as u8);
            alpn.extend_from_slice(p);
        }
        let mut alpn_ext = (alpn.len() as u16).to_be_bytes().to_vec();
        alpn_ext.extend_from_slice(&alpn);
        ext.extend_from_slice(&16u16.to_be_bytes());
        ext.extend_from_slice(&(alpn_ext.len() as u16).to_be_bytes());
        ext.extend_from_slice(&alpn_ext);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&2u16.to_be_bytes());
        body.extend_from_slice(&[0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_sni_and_alpn_from_client_hello() {
        let Parse::Done(h) = parse(&client_hello()) else { panic!("not parsed") };
        assert!(h.tls);
        assert_eq!(h.sni.as_deref(), Some("api.example.com"));
        assert_eq!(h.alpn, vec!["h2", "http/1.1"]);
    }

    #[test]
    fn partial_hello_asks_for_more_and_plaintext_is_not_tls() {
        let full = client_hello();
        assert!(matches!(parse(&full[..10]), Parse::NeedMore(n) if n == full.len()));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parse::NotTls);
    }

    #[test]
    fn truncated_or_garbage_hello_never_panics() {
        let full = client_hello();
        for cut in 0..full.len() {
            let mut b = full[..cut].to_vec();
            if b.len() >= 5 {
                let l = (b.len() - 5) as u16;
                b[3..5].copy_from_slice(&l.to_be_bytes());
            }
            let _ = parse(&b);
        }
        for seed in 0..2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut b = full.clone();
            for _ in 0..4 {
                let i = rng.usize(5..b.len());
                b[i] = rng.u8(..);
            }
            let _ = parse(&b);
        }
    }
}
