//! The HTTP connection manager and the router: one request's path, top to bottom, is
//! `conn_manager::serve` → `router::handle` → `route_match::select` → `upstream::send`.
pub mod body;
pub mod conn_manager;
pub mod filters;
pub mod forward;
pub mod headers;
pub mod local_reply;
pub mod mirror;
pub mod request_body;
pub mod retry;
pub mod route_match;
pub mod router;
pub mod smuggling;
pub mod upgrade;
pub mod upstream;
