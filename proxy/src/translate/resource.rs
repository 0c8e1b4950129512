//! xDS resources → runtime config: the same strict check and translation as the bootstrap, one
//! resource at a time, with errors naming the resource (they become NACK error details).
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::Any;
use outrigger_api::resource::{check_encoded, expect_type, undecodable, unsupported};
use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use prost::Message;

use super::{cluster, listener, route, ConfigError, Ctx};
use crate::config::{ClusterConfig, DiscoveryType, EndpointConfig, ListenerConfig, RouteTable};

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
    expect_type(type_url, any)?;
    let bytes = any.value.as_slice();
    let bad = |e| undecodable(type_url, e);
    let check = || check_encoded(type_url, bytes);
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
        other => return Err(unsupported(other).into()),
    })
}
