//! The xDS client: one ADS stream (state of the world) to the control plane named in the
//! bootstrap, carrying LDS, RDS, CDS and EDS. Each response is checked and translated as a whole;
//! any bad resource NACKs it (the last good config keeps serving); a good one is applied, then
//! ACKed. The stream reconnects with jittered exponential backoff and resubscribes, and the
//! proxy keeps serving its last config meanwhile.
mod client;
mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use client::run;

/// The node the proxy announces: id and cluster from the bootstrap, plus metadata (Istio's
/// NAMESPACE, WORKLOAD_NAME, ... in sidecar and router modes).
pub fn node(
    b: &crate::config::Bootstrap,
    metadata: BTreeMap<String, String>,
) -> envoy_types::pb::envoy::config::core::v3::Node {
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
    let fields = metadata.into_iter().map(|(k, v)| (k, Value { kind: Some(Kind::StringValue(v)) })).collect();
    envoy_types::pb::envoy::config::core::v3::Node {
        id: b.node_id.clone(),
        cluster: b.node_cluster.clone(),
        metadata: Some(Struct { fields }),
        user_agent_name: "outrigger".into(),
        ..Default::default()
    }
}

/// One accepted resource: the version it came with, when, and the resource itself (encoded; its
/// type is the key it is filed under). Version and time are shared by the resources of one update.
pub struct DumpEntry {
    pub version: Arc<str>,
    pub updated: Arc<str>,
    pub resource: Box<[u8]>,
}

/// Resources as received (with version and time), for `/config_dump`.
#[derive(Default)]
pub struct XdsDump {
    /// type URL → name → entry.
    /// The names are shared with the rest of the xDS state.
    pub resources: Mutex<BTreeMap<&'static str, BTreeMap<Arc<str>, DumpEntry>>>,
}

impl XdsDump {
    pub fn to_json(&self) -> serde_json::Value {
        let pool = outrigger_api::descriptor_pool();
        let res = self.resources.lock().unwrap();
        let mut out = serde_json::Map::new();
        for (type_url, by_name) in res.iter() {
            let list: Vec<serde_json::Value> = by_name
                .iter()
                .map(|(name, e)| {
                    serde_json::json!({
                        "name": &**name,
                        "version_info": &*e.version,
                        "last_updated": &*e.updated,
                        "resource": outrigger_api::json::to_json_encoded(&pool, type_url, &e.resource),
                    })
                })
                .collect();
            out.insert(type_url.to_string(), serde_json::Value::Array(list));
        }
        serde_json::Value::Object(out)
    }
}
