//! Proto3 JSON rendering (camelCase names, `@type` on Any), as Envoy dumps its config.
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::google::protobuf::Any;
use prost_reflect::{DescriptorPool, DynamicMessage};

/// A resource as proto3 JSON, for `/config_dump`.
pub fn to_json(pool: &DescriptorPool, any: &Any) -> serde_json::Value {
    to_json_encoded(pool, &any.type_url, &any.value)
}

/// An encoded resource of `type_url` as proto3 JSON.
pub fn to_json_encoded(pool: &DescriptorPool, type_url: &str, value: &[u8]) -> serde_json::Value {
    let Some(desc) = pool.get_message_by_name(crate::type_name(type_url)) else {
        return serde_json::Value::Null;
    };
    let Ok(dynamic) = DynamicMessage::decode(desc, value) else { return serde_json::Value::Null };
    let mut v = serialize(&dynamic);
    if let Some(o) = v.as_object_mut() {
        o.insert("@type".into(), serde_json::Value::String(type_url.to_string()));
    }
    v
}

/// A bootstrap as proto3 JSON.
pub fn bootstrap_to_json(pool: &DescriptorPool, bootstrap: &Bootstrap) -> serde_json::Value {
    let Some(desc) = pool.get_message_by_name("envoy.config.bootstrap.v3.Bootstrap") else {
        return serde_json::Value::Null;
    };
    let mut dynamic = DynamicMessage::new(desc);
    if dynamic.transcode_from(bootstrap).is_err() {
        return serde_json::Value::Null;
    }
    serialize(&dynamic)
}

fn serialize(dynamic: &DynamicMessage) -> serde_json::Value {
    let opts = prost_reflect::SerializeOptions::new().skip_default_fields(true);
    let mut ser = serde_json::Serializer::new(Vec::new());
    if dynamic.serialize_with_options(&mut ser, &opts).is_err() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&ser.into_inner()).unwrap_or(serde_json::Value::Null)
}
