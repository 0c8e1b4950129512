//! outrigger-xds: a small control plane. It reads Istio's API from a directory
//! ([`istio`]), generates Envoy resources per proxy ([`generate`]) and serves them over ADS
//! ([`server`]), with monitoring on its own port.
pub mod generate;
pub mod istio;
pub mod server;
