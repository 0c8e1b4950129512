//! xDS resources → runtime config: the same strict check and translation as the bootstrap, one
//! resource at a time, with errors naming the resource (they become NACK error details).
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use super::{cluster, listener, route, strict, ConfigError, Ctx};
use crate::config::{ClusterConfig, DiscoveryType, EndpointConfig, ListenerConfig, RouteTable};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

pub enum Resource {
    Listener(ListenerConfig),
    Cluster(ClusterConfig),
    Routes(Arc<RouteTable>),
    Endpoints(Vec<EndpointConfig>),
}

/// Decodes, checks and translates one resource of `type_url`; returns its name. The strict check
/// runs on the encoded bytes against a static descriptor table (no descriptor pool), after prost
/// has decoded them.
pub fn decode(type_url: &str, any: &Any) -> Result<(String, Resource), ConfigError> {
    if any.type_url != type_url {
        return Err(ConfigError::invalid("resource", "", format!("type {} in a {type_url} response", any.type_url)));
    }
    let bytes = any.value.as_slice();
    let bad = |e: prost::DecodeError| ConfigError::invalid("resource", "", format!("cannot decode {type_url}: {e}"));
    let check = || strict::check_encoded(super::type_name(type_url), bytes);
    Ok(match type_url {
        LISTENER => {
            let l = Listener::decode(bytes).map_err(bad)?;
            check()?;
            let cfg = listener::translate_listener_in(&Ctx::new(format!("listener \"{}\"", l.name)), &l)?;
            (l.name, Resource::Listener(cfg))
        }
        CLUSTER => {
            let c = Cluster::decode(bytes).map_err(bad)?;
            check()?;
            let cfg = cluster::translate_cluster(&c)?;
            (c.name, Resource::Cluster(cfg))
        }
        ROUTE => {
            let (name, table) = route::translate_route_config_encoded(bytes)?;
            (name, Resource::Routes(Arc::new(table)))
        }
        ENDPOINT => {
            let la = ClusterLoadAssignment::decode(bytes).map_err(bad)?;
            check()?;
            let ctx = Ctx::new(format!("cluster_load_assignment \"{}\"", la.cluster_name));
            let eps = cluster::translate_endpoints(&ctx, &la, &DiscoveryType::Eds(la.cluster_name.as_str().into()))?;
            (la.cluster_name, Resource::Endpoints(eps))
        }
        other => return Err(ConfigError::invalid("resource", "", format!("unsupported type {other}"))),
    })
}

/// A resource as proto3 JSON, for `/config_dump`.
pub fn to_json(pool: &DescriptorPool, any: &Any) -> serde_json::Value {
    to_json_encoded(pool, &any.type_url, &any.value)
}

/// An encoded resource of `type_url` as proto3 JSON.
pub fn to_json_encoded(pool: &DescriptorPool, type_url: &str, value: &[u8]) -> serde_json::Value {
    let Some(desc) = pool.get_message_by_name(super::type_name(type_url)) else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(desc, value) else { return serde_json::Value::Null };
    let opts = prost_reflect::SerializeOptions::new().skip_default_fields(true);
    let mut ser = serde_json::Serializer::new(Vec::new());
    if dynamic.serialize_with_options(&mut ser, &opts).is_err() {
        return serde_json::Value::Null;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&ser.into_inner()).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("@type".into(), serde_json::Value::String(type_url.to_string()));
    }
    v
}
