//! curl (Debian's `curl` package) as a real external client: a different HTTP/1.1 and HTTP/2
//! implementation (libcurl, nghttp2) from the hyper clients in [`crate::client`], so that a bug
//! shared by hyper on both sides of the proxy can show.
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

/// What curl got: the status and HTTP version it reports (`%{http_code}`, `%{http_version}`),
/// the response headers (names lower-cased) and the body.
#[derive(Debug)]
pub struct Curl {
    /// 0 when no response arrived (curl's exit code is then in `exit`).
    pub status: u16,
    /// "1.1" or "2".
    pub http_version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub exit: Option<i32>,
    pub stderr: String,
}

impl Curl {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON (the echo backend's description of the request it got).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }
}

/// Runs `curl -sS <args> http://<addr><path>` (bounded by `--max-time 30`) and parses what it got.
pub async fn curl(addr: SocketAddr, path: &str, args: &[&str]) -> Curl {
    let dir = crate::proxy::temp_dir();
    let (head, body) = (dir.join("head"), dir.join("body"));
    let url = format!("http://{addr}{path}");
    let out = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "-D"])
            .arg(&head)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code} %{http_version}"])
            .args(args)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("curl did not finish")
    .expect("running curl (apt-get install curl)");
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let mut w = written.split_whitespace();
    let status = w.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let http_version = w.next().unwrap_or_default().to_string();
    let head = std::fs::read_to_string(&head).unwrap_or_default();
    // With several responses (100 Continue, say), the last block is the final response.
    let last = head.trim_end().rsplit("\r\n\r\n").next().unwrap_or_default();
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    Curl {
        status,
        http_version,
        headers,
        body,
        exit: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}
