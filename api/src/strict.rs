//! The strict field check: every field that is set in the config must be one Outrigger implements
//! (or one that is purely informational). Anything else is an error naming the resource and the
//! field path, never silently ignored. Runs on the dynamic (reflected) form, so one table covers
//! every message and every `Any` extension.
use prost_reflect::{DescriptorPool, DynamicMessage, MapKey, ReflectMessage, Value};

use crate::ApiError;

mod supported;
use supported::SUPPORTED;

fn supported(type_name: &str) -> Option<&'static [&'static str]> {
    SUPPORTED.iter().find(|(n, _)| *n == type_name).map(|(_, f)| *f)
}

/// Checks one xDS resource (Listener, Cluster, RouteConfiguration, ClusterLoadAssignment) in its
/// dynamic form: the reference that [`check_encoded`] is tested against.
#[cfg(test)]
pub fn check_resource(pool: &DescriptorPool, msg: &DynamicMessage) -> Result<(), ApiError> {
    let mut c = Checker { pool, resource: String::new() };
    c.resource_scoped(msg, "")
}

/// Checks a whole bootstrap. Errors name the top-level resource (`listener "x"`, `cluster "y"`)
/// and the field path inside it.
pub fn check(pool: &DescriptorPool, msg: &DynamicMessage) -> Result<(), ApiError> {
    let mut c = Checker { pool, resource: "bootstrap".to_string() };
    c.message(msg, "")
}

struct Checker<'a> {
    pool: &'a DescriptorPool,
    resource: String,
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

impl Checker<'_> {
    fn message(&mut self, msg: &DynamicMessage, path: &str) -> Result<(), ApiError> {
        let desc = msg.descriptor();
        let name = desc.full_name();
        if name.starts_with("google.protobuf.") {
            if name == "google.protobuf.Any" {
                return self.any(msg, path);
            }
            return Ok(());
        }
        let Some(allowed) = supported(name) else {
            return Err(self.err(path, format!("{name} is not supported")));
        };
        if allowed == ["*"] {
            return Ok(());
        }
        for (field, value) in msg.fields() {
            let fpath = join(path, field.name());
            if !allowed.contains(&field.name()) {
                return Err(self.err(&fpath, format!("field is not supported by outrigger ({name})")));
            }
            self.value(value, &fpath)?;
        }
        Ok(())
    }

    fn value(&mut self, value: &Value, path: &str) -> Result<(), ApiError> {
        match value {
            Value::Message(m) => self.resource_scoped(m, path),
            Value::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.value(v, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            Value::Map(map) => {
                for (k, v) in map {
                    let key = match k {
                        MapKey::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    self.value(v, &format!("{path}[{key}]"))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Listeners and clusters are the resources users name; errors inside them say which one.
    fn resource_scoped(&mut self, m: &DynamicMessage, path: &str) -> Result<(), ApiError> {
        let (kind, name_field) = match m.descriptor().full_name() {
            "envoy.config.listener.v3.Listener" => ("listener", "name"),
            "envoy.config.cluster.v3.Cluster" => ("cluster", "name"),
            "envoy.config.route.v3.RouteConfiguration" => ("route_config", "name"),
            "envoy.config.endpoint.v3.ClusterLoadAssignment" => ("cluster_load_assignment", "cluster_name"),
            _ => return self.message(m, path),
        };
        let name = m.get_field_by_name(name_field).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let label = if path.is_empty() { format!("{kind} \"{name}\"") } else { format!("{kind} \"{name}\" ({path})") };
        let saved = std::mem::replace(&mut self.resource, label);
        let r = self.message(m, "");
        self.resource = saved;
        r
    }

    fn any(&mut self, any: &DynamicMessage, path: &str) -> Result<(), ApiError> {
        let url = any.get_field_by_name("type_url").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let bytes = any.get_field_by_name("value").and_then(|v| v.as_bytes().cloned()).unwrap_or_default();
        let tname = crate::type_name(&url);
        if supported(tname).is_none() {
            return Err(self.err(path, format!("unsupported extension {url}")));
        }
        let desc = self.pool.get_message_by_name(tname).ok_or_else(|| self.err(path, format!("unknown type {url}")))?;
        let inner =
            DynamicMessage::decode(desc, bytes).map_err(|e| self.err(path, format!("cannot decode {url}: {e}")))?;
        self.resource_scoped(&inner, path)
    }

    fn err(&self, path: &str, message: String) -> ApiError {
        ApiError::invalid(self.resource.clone(), path, message)
    }
}

mod wire;
pub use wire::check_encoded;

#[cfg(test)]
mod evidence;
