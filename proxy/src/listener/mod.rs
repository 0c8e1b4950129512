//! Listeners: bind, accept, pick the filter chain, hand the connection to its network filter.
pub mod accept;
pub mod filter_chain;
pub mod manager;
pub mod original_dst;
pub mod tls_inspector;

pub use accept::{bind, run_accept_loop};
pub use manager::ListenerManager;
