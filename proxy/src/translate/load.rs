//! Reads an Envoy v3 bootstrap file (YAML or JSON, proto3 JSON mapping) into envoy-types' structs.
//!
//! The file is first read into a `prost_reflect::DynamicMessage` against Envoy's descriptor set, so
//! `@type` on `Any`, wrapper types and `"5s"` durations follow the proto3 JSON mapping exactly; the
//! strict field check then runs on the dynamic form, and only then is it transcoded into typed structs.
use std::path::Path;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage};

use outrigger_api::{descriptor_pool, strict};

use super::ConfigError;

const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// Parses and strictly checks a bootstrap file.
pub fn load_bootstrap_file(path: &Path) -> Result<Bootstrap, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::Io { file: path.display().to_string(), source: e })?;
    let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    parse_bootstrap(&text, is_json).map_err(|e| e.in_file(path))
}

/// Parses bootstrap text; `is_json` selects the JSON parser (better positions for JSON files).
pub fn parse_bootstrap(text: &str, is_json: bool) -> Result<Bootstrap, ConfigError> {
    parse_bootstrap_with(&descriptor_pool(), text, is_json)
}

/// As [`parse_bootstrap`], with a descriptor pool the caller keeps (tests and benchmarks that
/// parse many configs).
pub fn parse_bootstrap_with(pool: &DescriptorPool, text: &str, is_json: bool) -> Result<Bootstrap, ConfigError> {
    let parsed = match parse_checked(pool, text, is_json) {
        // serde_json's errors carry no field path; the YAML reader (JSON is YAML) reports the
        // same failure with one; the JSON reader's position is the more precise.
        Err(ConfigError::Syntax { file, line, column, message }) if is_json => match parse_checked(pool, text, false) {
            Err(ConfigError::Syntax { message, .. }) => Err(ConfigError::Syntax { file, line, column, message }),
            _ => Err(ConfigError::Syntax { file, line, column, message }),
        },
        other => other,
    };
    parsed.map_err(|e| match e {
        ConfigError::Syntax { file, line, column, message } => {
            ConfigError::Syntax { file, line, column, message: name_resource(text, is_json, message) }
        }
        other => other,
    })
}

/// Syntax-level errors come with a field path; put the resource's name in front when the path is
/// inside a listener or cluster, so the message says which one (as translation errors do).
fn name_resource(text: &str, is_json: bool, message: String) -> String {
    let kinds = [
        ("static_resources.listeners[", "listener", "listeners"),
        ("static_resources.clusters[", "cluster", "clusters"),
    ];
    for (prefix, kind, key) in kinds {
        let Some(rest) = message.strip_prefix(prefix) else { continue };
        let Some((idx, _)) = rest.split_once(']') else { continue };
        let Ok(idx) = idx.parse::<usize>() else { continue };
        let doc: Option<serde_json::Value> =
            if is_json { serde_json::from_str(text).ok() } else { serde_yaml::from_str(text).ok() };
        let name = doc.as_ref().and_then(|d| d["static_resources"][key][idx]["name"].as_str().map(str::to_string));
        if let Some(name) = name {
            return format!("{kind} \"{name}\": {message}");
        }
    }
    message
}

fn parse_checked(pool: &DescriptorPool, text: &str, is_json: bool) -> Result<Bootstrap, ConfigError> {
    let desc = pool.get_message_by_name(BOOTSTRAP).expect("bootstrap descriptor");
    let opts = DeserializeOptions::new().deny_unknown_fields(true);
    let msg = if is_json {
        let mut de = serde_json::Deserializer::from_str(text);
        let msg = DynamicMessage::deserialize_with_options(desc, &mut de, &opts).map_err(|e| ConfigError::Syntax {
            file: None,
            line: e.line(),
            column: e.column(),
            message: strip_pos(&e.to_string()),
        })?;
        de.end().map_err(|e| ConfigError::Syntax {
            file: None,
            line: e.line(),
            column: e.column(),
            message: strip_pos(&e.to_string()),
        })?;
        msg
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        DynamicMessage::deserialize_with_options(desc, de, &opts).map_err(|e| {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            ConfigError::Syntax { file: None, line, column, message: strip_pos(&e.to_string()) }
        })?
    };
    strict::check(pool, &msg)?;
    msg.transcode_to::<Bootstrap>().map_err(|e| ConfigError::Invalid {
        file: None,
        resource: "bootstrap".into(),
        field: String::new(),
        message: e.to_string(),
    })
}

/// serde appends " at line X column Y"; we report the position in our own fields. An `Any` whose
/// type is not in our descriptor subset is an extension Outrigger does not implement.
fn strip_pos(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    if let Some((path, rest)) = msg.rsplit_once(": message '") {
        if let Some(name) = rest.strip_suffix("' not found") {
            return format!("{path}: unsupported extension type.googleapis.com/{name}");
        }
    }
    msg.to_string()
}
