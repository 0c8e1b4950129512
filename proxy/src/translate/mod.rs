//! Envoy v3 protobufs in, compiled runtime config out. Protobuf types stop here.
mod cluster;
mod hcm;
mod listener;
mod load;
pub mod resource;
mod route;
mod route_policy;

use std::path::Path;

pub use cluster::translate_cluster;
pub use load::{load_bootstrap_file, parse_bootstrap, parse_bootstrap_with};
pub use outrigger_api::type_name;
pub use route::translate_route_config;

/// A configuration error: names the file, the resource and the field, and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{}line {line} column {column}: {message}", file_prefix(file))]
    Syntax { file: Option<String>, line: usize, column: usize, message: String },
    #[error("{}{resource}: {}{message}", file_prefix(file), field_prefix(field))]
    Invalid { file: Option<String>, resource: String, field: String, message: String },
}

fn file_prefix(f: &Option<String>) -> String {
    f.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

fn field_prefix(f: &str) -> String {
    if f.is_empty() {
        String::new()
    } else {
        format!("field {f}: ")
    }
}

/// The API layer's errors name the resource and field the same way; a file is added by the caller.
impl From<outrigger_api::ApiError> for ConfigError {
    fn from(e: outrigger_api::ApiError) -> Self {
        ConfigError::Invalid { file: None, resource: e.resource, field: e.field, message: e.message }
    }
}

impl ConfigError {
    pub(crate) fn invalid(resource: impl Into<String>, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { file: None, resource: resource.into(), field: field.into(), message: message.into() }
    }

    pub fn in_file(mut self, path: &Path) -> Self {
        let name = path.display().to_string();
        match &mut self {
            ConfigError::Syntax { file, .. } | ConfigError::Invalid { file, .. } => *file = Some(name),
            ConfigError::Io { .. } => {}
        }
        self
    }
}

/// Errors inside one resource carry the field path relative to it; `Ctx` builds those paths
/// (public for the HTTP filters' own translation).
#[derive(Clone)]
pub struct Ctx {
    pub resource: String,
    pub path: String,
}

impl Ctx {
    pub fn new(resource: impl Into<String>) -> Self {
        Ctx { resource: resource.into(), path: String::new() }
    }
    pub fn field(&self, name: &str) -> Ctx {
        let path = if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) };
        Ctx { resource: self.resource.clone(), path }
    }
    pub fn index(&self, name: &str, i: usize) -> Ctx {
        self.field(&format!("{name}[{i}]"))
    }
    pub fn err(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.resource.clone(), self.path.clone(), message)
    }
}

/// Decodes an `Any` whose type URL must be `T`'s.
pub fn decode_any<T: prost::Message + Default>(
    ctx: &Ctx,
    any: &envoy_types::pb::google::protobuf::Any,
    expected: &str,
) -> Result<T, ConfigError> {
    let url = type_name(&any.type_url);
    if url != expected {
        return Err(ctx.err(format!("unsupported type {}: expected {expected}", any.type_url)));
    }
    T::decode(any.value.as_slice()).map_err(|e| ctx.err(format!("cannot decode {}: {e}", any.type_url)))
}

pub fn duration(d: &Option<envoy_types::pb::google::protobuf::Duration>) -> Option<std::time::Duration> {
    d.as_ref().map(|d| std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
}

pub use listener::translate_bootstrap;

/// A `ConfigSource` must be `ads: {}` (xDS over the bootstrap's ADS stream): the only transport
/// Outrigger implements.
/// Returns the source's `initial_fetch_timeout`: Envoy's default of 15 s when unset, None for
/// `0s` (wait for ever).
pub(crate) fn ads_source(
    ctx: &Ctx,
    src: &Option<envoy_types::pb::envoy::config::core::v3::ConfigSource>,
) -> Result<Option<std::time::Duration>, ConfigError> {
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    // AUTO (0) and V3 (2) both mean v3 now; V2 is gone from Envoy.
    if src.as_ref().is_some_and(|s| !matches!(s.resource_api_version, 0 | 2)) {
        return Err(ctx.field("resource_api_version").err("only V3 is supported"));
    }
    let timeout = match src.as_ref().map(|s| &s.initial_fetch_timeout) {
        Some(t @ Some(_)) => duration(t).filter(|d| !d.is_zero()),
        _ => Some(std::time::Duration::from_secs(15)),
    };
    match src.as_ref().and_then(|s| s.config_source_specifier.as_ref()) {
        Some(ConfigSourceSpecifier::Ads(_)) => Ok(timeout),
        Some(_) => Err(ctx.err("only ads: {} config sources are supported")),
        None => Err(ctx.err("a config source (ads: {}) is required")),
    }
}

/// The resources as loaded, kept only to answer `/config_dump`.
#[derive(Clone)]
pub struct SourceConfig(std::sync::Arc<envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap>);

impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceConfig")
    }
}

impl SourceConfig {
    /// The bootstrap in proto3 JSON (camelCase names, `@type` on Any), as Envoy dumps it.
    pub fn to_json(&self) -> serde_json::Value {
        outrigger_api::json::bootstrap_to_json(&outrigger_api::descriptor_pool(), &self.0)
    }
}

#[cfg(test)]
mod honesty_tests;
#[cfg(test)]
mod resilience_tests;
#[cfg(test)]
mod tests;
