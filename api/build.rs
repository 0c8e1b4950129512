//! Locates the Envoy API file descriptor set that `envoy-types` ships (but does not export) and
//! copies it into OUT_DIR, so the bootstrap loader can read Envoy YAML/JSON through prost-reflect.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    let src = find_in_registry().unwrap_or_else(find_with_metadata);
    let dst = PathBuf::from(env::var("OUT_DIR").unwrap()).join("envoy_types.bin");
    let full = fs::read(&src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let subset = subset(&full);
    fs::write(&dst, &subset).unwrap_or_else(|e| panic!("write {}: {e}", dst.display()));
    let table = PathBuf::from(env::var("OUT_DIR").unwrap()).join("wire_table.rs");
    fs::write(&table, wire_table(&subset)).unwrap_or_else(|e| panic!("write {}: {e}", table.display()));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../Cargo.lock");
}

/// Proto files whose messages a bootstrap may contain (the bootstrap and every extension that
/// Outrigger implements); with their imports, the rest of Envoy's ~400 packages are left out,
/// which keeps the pool that config parsing builds (and its memory peak) small. A config naming
/// any other extension fails to parse with the unknown type URL, as it should.
const ROOTS: &[&str] = &[
    "envoy/config/bootstrap/v3/bootstrap.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/access_loggers/stream/v3/stream.proto",
    "envoy/extensions/access_loggers/file/v3/file.proto",
    "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto",
];

fn subset(full: &[u8]) -> Vec<u8> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(full).expect("envoy-types descriptor set decodes");
    let by_name: std::collections::HashMap<&str, &prost_types::FileDescriptorProto> =
        set.file.iter().map(|f| (f.name(), f)).collect();
    let mut keep = std::collections::BTreeSet::new();
    let mut stack: Vec<&str> = ROOTS.to_vec();
    while let Some(name) = stack.pop() {
        let f = by_name.get(name).unwrap_or_else(|| panic!("{name} is not in envoy-types' descriptor set"));
        if keep.insert(name) {
            stack.extend(f.dependency.iter().map(String::as_str));
        }
    }
    // Dependencies first, as the descriptor pool expects them.
    // Comments (source_code_info) are most of the bytes and nothing reads them.
    let file = set
        .file
        .iter()
        .filter(|f| keep.contains(f.name()))
        .cloned()
        .map(|mut f| {
            f.source_code_info = None;
            f
        })
        .collect();
    prost_types::FileDescriptorSet { file }.encode_to_vec()
}

/// The message types of the subset as static tables, for the strict check of xDS resources on
/// their wire form (no descriptor pool is built per response). `MESSAGES` is sorted by full
/// name: (name, first field, field count); each message's fields are sorted by number:
/// (number, name, kind, label, has presence, target, oneof index or -1), where kind is the
/// `FieldDescriptorProto.Type` number, label 0 single / 1 list / 2 map, and target the message
/// index for message and group fields, the default (first) value for enums, else 0.
fn wire_table(subset: &[u8]) -> String {
    use prost::Message;
    use prost_types::field_descriptor_proto::{Label, Type};
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let set = prost_types::FileDescriptorSet::decode(subset).expect("subset decodes");
    // Full name (".pkg.Msg") -> (descriptor, proto3?, is map entry).
    let mut messages: BTreeMap<String, (&prost_types::DescriptorProto, bool)> = BTreeMap::new();
    let mut enums: BTreeMap<String, i32> = BTreeMap::new();
    fn walk<'a>(
        prefix: &str,
        msgs: &'a [prost_types::DescriptorProto],
        en: &'a [prost_types::EnumDescriptorProto],
        proto3: bool,
        messages: &mut BTreeMap<String, (&'a prost_types::DescriptorProto, bool)>,
        enums: &mut BTreeMap<String, i32>,
    ) {
        for e in en {
            enums.insert(format!("{prefix}.{}", e.name()), e.value.first().map(|v| v.number()).unwrap_or(0));
        }
        for m in msgs {
            let name = format!("{prefix}.{}", m.name());
            walk(&name, &m.nested_type, &m.enum_type, proto3, messages, enums);
            messages.insert(name, (m, proto3));
        }
    }
    for f in &set.file {
        let prefix = if f.package().is_empty() { String::new() } else { format!(".{}", f.package()) };
        let proto3 = f.syntax() == "proto3";
        walk(&prefix, &f.message_type, &f.enum_type, proto3, &mut messages, &mut enums);
    }
    let index: BTreeMap<&str, usize> = messages.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    let mut out = String::new();
    let mut fields = String::new();
    let mut next = 0usize;
    out.push_str("pub(super) static MESSAGES: &[(&str, u32, u32)] = &[\n");
    for (name, (m, proto3)) in &messages {
        let mut fs: Vec<&prost_types::FieldDescriptorProto> = m.field.iter().collect();
        fs.sort_by_key(|f| f.number());
        writeln!(out, "    ({:?}, {next}, {}),", &name[1..], fs.len()).unwrap();
        for f in fs {
            let repeated = f.label() == Label::Repeated;
            let is_msg = matches!(f.r#type(), Type::Message | Type::Group);
            let map = repeated
                && is_msg
                && messages.get(f.type_name()).is_some_and(|(e, _)| e.options.as_ref().is_some_and(|o| o.map_entry()));
            let label = if map {
                2
            } else if repeated {
                1
            } else {
                0
            };
            let presence = f.proto3_optional() || f.oneof_index.is_some() || (!repeated && (is_msg || !*proto3));
            let target: i64 = match f.r#type() {
                Type::Message | Type::Group => {
                    *index.get(f.type_name()).unwrap_or_else(|| panic!("{} is not in the subset", f.type_name())) as i64
                }
                Type::Enum => *enums.get(f.type_name()).unwrap_or_else(|| panic!("enum {}", f.type_name())) as i64,
                _ => 0,
            };
            writeln!(
                fields,
                "    f({}, {:?}, {}, {label}, {presence}, {target}, {}),",
                f.number(),
                f.name(),
                f.r#type.unwrap_or_else(|| panic!("{name}.{} has no type", f.name())),
                f.oneof_index.unwrap_or(-1)
            )
            .unwrap();
            next += 1;
        }
    }
    out.push_str("];\n\npub(super) static FIELDS: &[Field] = &[\n");
    out.push_str(&fields);
    out.push_str("];\n");
    out
}

/// The usual case: the crate's source is unpacked in cargo's registry, at the version Cargo.lock pins.
fn find_in_registry() -> Option<PathBuf> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").ok()?);
    let lock = fs::read_to_string(manifest.parent()?.join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    let version = loop {
        let l = lines.next()?;
        if l == "name = \"envoy-types\"" {
            break lines.next()?.strip_prefix("version = \"")?.strip_suffix('"')?.to_string();
        }
    };
    let home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .ok()
        .or_else(|| Some(PathBuf::from(env::var("HOME").ok()?).join(".cargo")))?;
    for reg in fs::read_dir(home.join("registry/src")).ok()?.flatten() {
        let p = reg.path().join(format!("envoy-types-{version}/src/generated/types.bin"));
        if p.exists() {
            return Some(p);
        }
    }
    None
}

/// Vendored or git sources: ask cargo where the package lives.
fn find_with_metadata() -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.toml");
    let target = env::var("TARGET").unwrap();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--filter-platform", &target, "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let pkg = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .expect("envoy-types is a dependency");
    PathBuf::from(pkg["manifest_path"].as_str().unwrap()).parent().unwrap().join("src/generated/types.bin")
}
