//! Outrigger's data plane: an Envoy-API L4/L7 proxy.
//!
//! Config flows `translate` (Envoy protobufs → `config` types) → `snapshot` (live, swapped
//! atomically) → `listener` → `tcp_proxy` or `http` (connection manager → router) → `upstream`.
pub mod admin;
pub mod app;
pub mod config;
pub mod drain;
pub mod http;
pub mod listener;
pub mod modes;
pub mod snapshot;
pub mod tcp_proxy;
pub mod telemetry;
pub mod translate;
pub mod upstream;
pub mod xds;
