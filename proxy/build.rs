//! Locates the Envoy API file descriptor set that `envoy-types` ships (but does not export) and
//! copies it into OUT_DIR, so the bootstrap loader can read Envoy YAML/JSON through prost-reflect.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    let src = find_in_registry().unwrap_or_else(find_with_metadata);
    let dst = PathBuf::from(env::var("OUT_DIR").unwrap()).join("envoy_types.bin");
    fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../Cargo.lock");
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
