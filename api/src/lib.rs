//! The Envoy v3 API layer that the data plane and the control plane share: the descriptor subset
//! (built by build.rs, with the wire table of the strict check), the strict field check, proto3
//! JSON rendering, a typed decode and check of xDS resources, and the resource type URLs.
//!
//! Nothing here knows the proxy's runtime types: translating resources into runtime config is the
//! proxy's job, generating them the control plane's.
mod descriptors;
pub mod json;
pub mod resource;
pub mod strict;
pub mod type_url;

pub use descriptors::descriptor_pool;

/// A resource or field the API layer refuses: names the resource and the field path inside it,
/// and says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {}{message}", field_prefix(field))]
pub struct ApiError {
    /// `listener "x"`, `cluster "y"`, `bootstrap`, or `resource` when the name is not known yet.
    pub resource: String,
    /// The field path inside the resource; empty for the resource as a whole.
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn invalid(resource: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { resource: resource.into(), field: field.into(), message: message.into() }
    }
}

fn field_prefix(f: &str) -> String {
    if f.is_empty() {
        String::new()
    } else {
        format!("field {f}: ")
    }
}

/// The message name of a type URL (`type.googleapis.com/envoy.config.listener.v3.Listener` →
/// `envoy.config.listener.v3.Listener`).
pub fn type_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}
