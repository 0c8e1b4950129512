//! Helpers for Outrigger's end-to-end tests.
//!
//! Every test starts the real `outrigger` binary (see [`proxy`]) on a bootstrap written to a
//! temporary directory, with every port 0, between real upstream servers ([`backend`]) and real
//! clients ([`client`]) on loopback. Config is built as proto3 JSON with the helpers in
//! [`config`] and written as JSON (or as YAML text where the test is about YAML).
//!
//! The binary: `OUTRIGGER_BIN` if set; otherwise the helper runs
//! `cargo build -p outrigger-proxy --bin outrigger` once per test process (a no-op when it is up to
//! date) into the same target directory and profile as the test binary, so a test never runs a
//! stale proxy.
pub mod ads;
pub mod backend;
pub mod client;
pub mod config;
pub mod curl;
pub mod faulty;
pub mod mesh;
pub mod netns;
pub mod proxy;
pub mod raw_upstream;
pub mod xds;

pub use backend::{Backend, TcpServer};
pub use client::Resp;
pub use faulty::Faulty;
pub use proxy::Proxy;

use std::time::Duration;

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `f` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
