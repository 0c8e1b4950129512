//! xDS resources decoded into envoy-types' structs and strictly checked, without translating them
//! into anything: what the control plane checks its output with, and the first steps of the
//! proxy's own decoding.
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use crate::{strict, ApiError};

/// One checked resource of a type Outrigger serves and accepts (boxed: the structs are kilobytes).
#[derive(Debug, Clone)]
pub enum Resource {
    Listener(Box<Listener>),
    Cluster(Box<Cluster>),
    Routes(Box<RouteConfiguration>),
    Endpoints(Box<ClusterLoadAssignment>),
}

impl Resource {
    /// The name the resource is known by (`cluster_name` for a ClusterLoadAssignment).
    pub fn name(&self) -> &str {
        match self {
            Resource::Listener(l) => &l.name,
            Resource::Cluster(c) => &c.name,
            Resource::Routes(r) => &r.name,
            Resource::Endpoints(e) => &e.cluster_name,
        }
    }
}

/// Decodes one resource of `type_url` and runs the strict field check on its encoded bytes
/// (against the static wire table: no descriptor pool).
pub fn decode(type_url: &str, any: &Any) -> Result<Resource, ApiError> {
    expect_type(type_url, any)?;
    let bytes = any.value.as_slice();
    let bad = |e| undecodable(type_url, e);
    let r = match type_url {
        LISTENER => Resource::Listener(Box::new(Listener::decode(bytes).map_err(bad)?)),
        CLUSTER => Resource::Cluster(Box::new(Cluster::decode(bytes).map_err(bad)?)),
        ROUTE => Resource::Routes(Box::new(RouteConfiguration::decode(bytes).map_err(bad)?)),
        ENDPOINT => Resource::Endpoints(Box::new(ClusterLoadAssignment::decode(bytes).map_err(bad)?)),
        other => return Err(unsupported(other)),
    };
    check_encoded(type_url, bytes)?;
    Ok(r)
}

/// The response's type URL must be the resource's.
pub fn expect_type(type_url: &str, any: &Any) -> Result<(), ApiError> {
    if any.type_url != type_url {
        return Err(ApiError::invalid("resource", "", format!("type {} in a {type_url} response", any.type_url)));
    }
    Ok(())
}

/// The strict field check of an encoded resource of `type_url`.
pub fn check_encoded(type_url: &str, bytes: &[u8]) -> Result<(), ApiError> {
    strict::check_encoded(crate::type_name(type_url), bytes)
}

/// The bytes are not a resource of `type_url`.
pub fn undecodable(type_url: &str, e: prost::DecodeError) -> ApiError {
    ApiError::invalid("resource", "", format!("cannot decode {type_url}: {e}"))
}

/// A type URL Outrigger neither serves nor accepts.
pub fn unsupported(type_url: &str) -> ApiError {
    ApiError::invalid("resource", "", format!("unsupported type {type_url}"))
}
