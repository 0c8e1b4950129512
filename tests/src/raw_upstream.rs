//! An HTTP/1.1 upstream that records every byte it receives, per connection, so a test can assert
//! exactly what the proxy forwarded. It answers each request head without a body with `200 ok`,
//! never answers one with a body, and answers a head carrying `Upgrade:` to a path
//! starting with `/ws` with `101 Switching Protocols`, after which the connection is a tunnel
//! whose bytes are recorded too.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::backend::{run, Runner};

pub struct RawUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    _runner: Runner,
}

impl RawUpstream {
    pub fn start() -> RawUpstream {
        let received = Arc::new(Mutex::new(Vec::new()));
        let r = received.clone();
        let (addr, runner) = run("127.0.0.1:0".parse().unwrap(), move |l| accept(l, r));
        RawUpstream { addr, received, _runner: runner }
    }

    /// Everything received, connection after connection in accept order.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().concat()
    }

    /// The bytes of connection `i` (in accept order), once it has received any.
    pub fn connection(&self, i: usize) -> Option<Vec<u8>> {
        self.received.lock().unwrap().get(i).filter(|c| !c.is_empty()).cloned()
    }

    pub fn connections(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn accept(l: TcpListener, received: Arc<Mutex<Vec<Vec<u8>>>>) {
    loop {
        let Ok((s, _)) = l.accept().await else { continue };
        let slot = {
            let mut r = received.lock().unwrap();
            r.push(Vec::new());
            r.len() - 1
        };
        let received = received.clone();
        tokio::spawn(async move {
            let _ = serve(s, slot, received).await;
        });
    }
}

async fn serve(mut s: TcpStream, slot: usize, received: Arc<Mutex<Vec<Vec<u8>>>>) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = Vec::new();
    let mut tunnel = false;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        received.lock().unwrap()[slot].extend_from_slice(&buf[..n]);
        if tunnel {
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
            pending.drain(..end + 4);
            let path = head.split(' ').nth(1).unwrap_or("");
            if head.contains("\r\nupgrade:") && path.starts_with("/ws") {
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
                    .await?;
                tunnel = true;
                break;
            }
            if head.contains("\r\ntransfer-encoding:") || head.contains("\r\ncontent-length:") {
                // A request with a body is recorded and never answered: the proxy's answer is
                // then about how that body went.
                continue;
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await?;
        }
    }
}
