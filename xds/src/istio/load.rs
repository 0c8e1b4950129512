//! Reads a directory of Istio YAML (multi-document files) into a [`Registry`]. Every problem is
//! reported with the file, the document's index in it, the resource and the field path; a
//! directory with any error is not used (the caller keeps its last good registry).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::model::*;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{file}: document {index}{}: {message}", resource.as_ref().map(|r| format!(" ({r})")).unwrap_or_default())]
pub struct LoadError {
    pub file: String,
    pub index: usize,
    pub resource: Option<String>,
    pub message: String,
}

/// Everything the directory declares, by kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    pub service_entries: Vec<(Metadata, ServiceEntry)>,
    pub workload_entries: Vec<(Metadata, WorkloadEntry)>,
    pub virtual_services: Vec<(Metadata, VirtualService)>,
    pub destination_rules: Vec<(Metadata, DestinationRule)>,
    pub sidecars: Vec<(Metadata, Sidecar)>,
    pub mesh: MeshConfig,
}

/// Istio's default trust domain: the one value of `trustDomain` that changes nothing here.
const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

const API_GROUPS: &[&str] = &["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"];

/// Loads every `*.yaml`/`*.yml` file (sorted by name; `mesh.yaml` is the mesh config).
pub fn load_dir(dir: &Path) -> Result<Registry, Vec<LoadError>> {
    DirLoader::default().load(dir)
}

/// What identifies a file's content without reading it: size, modification time and inode (a
/// rename-into-place is a new inode even within one mtime tick).
type Stamp = (u64, std::time::SystemTime, u64);

/// One file, parsed.
#[derive(Default)]
struct Parsed {
    reg: Registry,
    mesh: Option<MeshConfig>,
    errors: Vec<LoadError>,
}

/// Loads a directory again and again, parsing only the files that changed since the last load
/// (a change to one file of a 10,000-service registry costs that file, not the directory).
/// Changed files are parsed in parallel.
#[derive(Default)]
pub struct DirLoader {
    files: BTreeMap<PathBuf, (Stamp, Parsed)>,
}

impl DirLoader {
    /// Whether the directory still holds exactly the files last loaded (a cheap stat of each).
    pub fn is_current(&self, dir: &Path) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else { return false };
        let mut n = 0;
        for e in rd.flatten() {
            let p = e.path();
            if !p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                continue;
            }
            n += 1;
            match (self.files.get(&p), stamp(&e)) {
                (Some(f), Some(st)) if f.0 == st => {}
                _ => return false,
            }
        }
        n == self.files.len()
    }

    /// The registry the directory declares now, or every error in it.
    pub fn load(&mut self, dir: &Path) -> Result<Registry, Vec<LoadError>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => {
                return Err(vec![LoadError {
                    file: dir.display().to_string(),
                    index: 0,
                    resource: None,
                    message: e.to_string(),
                }])
            }
        };
        let mut now: BTreeMap<PathBuf, Option<Stamp>> = BTreeMap::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                now.insert(p, stamp(&e));
            }
        }
        self.files.retain(|p, _| now.contains_key(p));
        let stale: Vec<&PathBuf> = now
            .iter()
            .filter(|(p, st)| st.is_none() || self.files.get(*p).map(|f| Some(f.0)) != Some(**st))
            .map(|(p, _)| p)
            .collect();
        let parsed = parse_files(&stale);
        for (p, parsed) in stale.into_iter().zip(parsed) {
            // A file that cannot be stat'ed is parsed (and reported) every time.
            let st = now[p].unwrap_or((0, std::time::UNIX_EPOCH, 0));
            self.files.insert(p.clone(), (st, parsed));
        }
        let mut reg = Registry::default();
        let mut errors = Vec::new();
        for (_, f) in self.files.values() {
            reg.service_entries.extend_from_slice(&f.reg.service_entries);
            reg.workload_entries.extend_from_slice(&f.reg.workload_entries);
            reg.virtual_services.extend_from_slice(&f.reg.virtual_services);
            reg.destination_rules.extend_from_slice(&f.reg.destination_rules);
            reg.sidecars.extend_from_slice(&f.reg.sidecars);
            if let Some(m) = &f.mesh {
                reg.mesh = m.clone();
            }
            errors.extend_from_slice(&f.errors);
        }
        validate(&reg, &mut errors);
        if errors.is_empty() {
            Ok(reg)
        } else {
            Err(errors)
        }
    }
}

fn stamp(e: &std::fs::DirEntry) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(e.path()).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// Parses `files` on up to as many threads as there are cores.
fn parse_files(files: &[&PathBuf]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len()).max(1);
    if threads == 1 {
        return files.iter().map(|f| parse_file(f)).collect();
    }
    let per = files.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> =
            files.chunks(per).map(|c| s.spawn(move || c.iter().map(|f| parse_file(f)).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("parser thread")).collect()
    })
}

fn parse_file(f: &Path) -> Parsed {
    let name = f.display().to_string();
    let mut out = Parsed::default();
    let text = match std::fs::read_to_string(f) {
        Ok(t) => t,
        Err(e) => {
            out.errors.push(LoadError { file: name, index: 0, resource: None, message: e.to_string() });
            return out;
        }
    };
    if f.file_name().is_some_and(|n| n == "mesh.yaml" || n == "mesh.yml") {
        match typed::<MeshConfig>(serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null)) {
            Ok(m) if m.trust_domain.as_deref().is_some_and(|t| t != DEFAULT_TRUST_DOMAIN) => {
                out.errors.push(LoadError {
                    file: name,
                    index: 0,
                    resource: Some("mesh".into()),
                    message: format!(
                        "trustDomain: only \"{DEFAULT_TRUST_DOMAIN}\" is supported (SPIFFE identities need mTLS, which is not implemented)"
                    ),
                })
            }
            Ok(m) => out.mesh = Some(m),
            Err(message) => out.errors.push(LoadError { file: name, index: 0, resource: Some("mesh".into()), message }),
        }
        return out;
    }
    load_text(&name, &text, &mut out.reg, &mut out.errors);
    out
}

/// Parses one file's documents into `reg`.
pub fn load_text(file: &str, text: &str, reg: &mut Registry, errors: &mut Vec<LoadError>) {
    for (index, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err =
            |resource: Option<String>, message: String| LoadError { file: file.to_string(), index, resource, message };
        let value = match serde_yaml::Value::deserialize(de) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(err(None, e.to_string()));
                // A syntax error ends the stream of documents.
                break;
            }
        };
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        let api = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default().to_string();
        let metadata = match typed::<Metadata>(value.get("metadata").cloned().unwrap_or_default()) {
            Ok(mut m) => {
                m.source = format!("{file}: document {index}");
                m
            }
            Err(m) => {
                errors.push(err(Some(kind.clone()), format!("metadata.{m}")));
                continue;
            }
        };
        let resource = Some(format!("{kind} {}/{}", metadata.namespace, metadata.name));
        if let Some(extra) = value.as_mapping().and_then(|m| {
            m.keys()
                .filter_map(|k| k.as_str())
                .find(|k| !matches!(*k, "apiVersion" | "kind" | "metadata" | "spec"))
                .map(str::to_string)
        }) {
            errors.push(err(resource, format!("{extra}: unknown top-level field")));
            continue;
        }
        if !API_GROUPS.contains(&api.as_str()) {
            errors.push(err(resource, format!("apiVersion: \"{api}\" is not one of {API_GROUPS:?}")));
            continue;
        }
        let spec = value.get("spec").cloned().unwrap_or_default();
        let parsed = match kind.as_str() {
            "ServiceEntry" => typed(spec).map(|s| reg.service_entries.push((metadata, s))),
            "WorkloadEntry" => typed(spec).map(|s| reg.workload_entries.push((metadata, s))),
            "VirtualService" => typed(spec).map(|s| reg.virtual_services.push((metadata, s))),
            "DestinationRule" => typed(spec).map(|s| reg.destination_rules.push((metadata, s))),
            "Sidecar" => typed(spec).map(|s| reg.sidecars.push((metadata, s))),
            other => Err(format!("kind: \"{other}\" is not supported")),
        };
        if let Err(m) = parsed {
            let m = if m.starts_with("kind:") { m } else { format!("spec.{m}") };
            errors.push(err(resource, m));
        }
    }
}

/// Deserializes with the failing field's path in the message (`ports[0].number: invalid type`).
fn typed<T: DeserializeOwned>(v: serde_yaml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let inner = inner.split(" at line ").next().unwrap_or(&inner).to_string();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// `exportTo` scoping is not implemented: only "everywhere" is accepted, never silently widened.
fn export_to(m: &Metadata, kind: &str, export: &[String], errors: &mut Vec<LoadError>) {
    if !export.iter().all(|e| e == "*") {
        let res = format!("{kind} {}/{}", m.namespace, m.name);
        errors.push(source_err(m, &res, "spec.exportTo: only [\"*\"] is supported".into()));
    }
}

/// Cross-document checks: what one resource names must exist and be consistent.
fn validate(reg: &Registry, errors: &mut Vec<LoadError>) {
    for (m, se) in &reg.service_entries {
        export_to(m, "ServiceEntry", &se.export_to, errors);
    }
    for (m, vs) in &reg.virtual_services {
        export_to(m, "VirtualService", &vs.export_to, errors);
    }
    for (m, dr) in &reg.destination_rules {
        export_to(m, "DestinationRule", &dr.export_to, errors);
    }
    let mut seen = BTreeMap::new();
    for (m, se) in &reg.service_entries {
        let res = format!("ServiceEntry {}/{}", m.namespace, m.name);
        let e = |message: String| source_err(m, &res, message);
        if se.hosts.is_empty() {
            errors.push(e("spec.hosts: at least one host is required".into()));
        }
        if se.ports.is_empty() {
            errors.push(e("spec.ports: at least one port is required".into()));
        }
        for (i, p) in se.ports.iter().enumerate() {
            if p.number == 0 {
                errors.push(e(format!("spec.ports[{i}].number: must be 1-65535")));
            }
        }
        if !se.endpoints.is_empty() && se.workload_selector.is_some() {
            errors.push(e("spec.workloadSelector: cannot be combined with spec.endpoints".into()));
        }
        for (i, ep) in se.endpoints.iter().enumerate() {
            workload_fields(ep, &format!("spec.endpoints[{i}]."), &mut |m| errors.push(e(m)));
            if se.resolution == Resolution::Static && ep.address.parse::<std::net::IpAddr>().is_err() {
                errors.push(e(format!(
                    "spec.endpoints[{i}].address: \"{}\" is not an IP (resolution STATIC)",
                    ep.address
                )));
            }
        }
        for h in &se.hosts {
            if let Some(other) = seen.insert(h.clone(), res.clone()) {
                errors.push(e(format!("spec.hosts: \"{h}\" is also declared by {other}")));
            }
        }
    }
    for (m, we) in &reg.workload_entries {
        let res = format!("WorkloadEntry {}/{}", m.namespace, m.name);
        workload_fields(we, "spec.", &mut |message| errors.push(source_err(m, &res, message)));
    }
    let hosts: std::collections::HashSet<&str> =
        reg.service_entries.iter().flat_map(|(_, se)| se.hosts.iter().map(String::as_str)).collect();
    for (m, vs) in &reg.virtual_services {
        let res = format!("VirtualService {}/{}", m.namespace, m.name);
        let e = |message: String| source_err(m, &res, message);
        let known_host = |h: &str| hosts.contains(crate::generate::fqdn(h, &m.namespace).as_str());
        for (i, r) in vs.tcp.iter().enumerate() {
            if r.route.is_empty() {
                errors.push(e(format!("spec.tcp[{i}].route: at least one destination is required")));
            } else if r.route.len() > 1 && r.route.iter().all(|d| d.weight.unwrap_or(0) == 0) {
                errors.push(e(format!("spec.tcp[{i}].route: weights must not all be 0")));
            }
            for (j, mt) in r.matches.iter().enumerate() {
                // Outbound filter chains match the destination port only; a subnet match would
                // be silently ignored.
                if !mt.destination_subnets.is_empty() {
                    errors.push(e(format!(
                        "spec.tcp[{i}].match[{j}].destinationSubnets: not supported (filter chains match the destination port only)"
                    )));
                }
                if mt.source_subnet.is_some() {
                    errors.push(e(format!("spec.tcp[{i}].match[{j}].sourceSubnet: not supported")));
                }
            }
        }
        for (i, r) in vs.http.iter().enumerate() {
            // The proxy compiles every regex; one it cannot is this document's error, not a NACK.
            let mut regexes: Vec<(String, &str)> = Vec::new();
            for (j, mt) in r.matches.iter().enumerate() {
                let at = |field: &str| format!("spec.http[{i}].match[{j}].{field}");
                let singles = [("uri", &mt.uri), ("method", &mt.method), ("authority", &mt.authority)];
                for (field, m) in singles {
                    if let Some(StringMatch::Regex(re)) = m {
                        regexes.push((at(&format!("{field}.regex")), re));
                    }
                }
                for (kind, map) in [("headers", &mt.headers), ("queryParams", &mt.query_params)] {
                    for (name, m) in map {
                        if let StringMatch::Regex(re) = m {
                            regexes.push((at(&format!("{kind}.{name}.regex")), re));
                        }
                    }
                }
            }
            if let Some(rr) = r.rewrite.as_ref().and_then(|rw| rw.uri_regex_rewrite.as_ref()) {
                regexes.push((format!("spec.http[{i}].rewrite.uriRegexRewrite.match"), &rr.pattern));
            }
            for (field, re) in regexes {
                if let Err(err) = regex::Regex::new(re) {
                    let first = err.to_string().lines().last().unwrap_or_default().to_string();
                    errors.push(e(format!("{field}: \"{re}\" is not a valid regex ({first})")));
                }
            }
            if r.rewrite.as_ref().is_some_and(|rw| rw.uri.is_some() && rw.uri_regex_rewrite.is_some()) {
                errors.push(e(format!("spec.http[{i}].rewrite: uri and uriRegexRewrite cannot both be set")));
            }
            if r.route.is_empty() && r.redirect.is_none() {
                errors.push(e(format!("spec.http[{i}]: route or redirect is required")));
            }
            if let Some(t) = &r.timeout {
                if crate::generate::duration(t).is_none() {
                    errors.push(e(format!("spec.http[{i}].timeout: \"{t}\" is not a duration like 1.5s")));
                }
            }
            super::validate_policy::http_rule(r, &format!("spec.http[{i}]"), &known_host, &mut |m| errors.push(e(m)));
        }
    }
    for (m, dr) in &reg.destination_rules {
        let res = format!("DestinationRule {}/{}", m.namespace, m.name);
        let mut err = |message: String| errors.push(source_err(m, &res, message));
        if dr.host.is_empty() {
            err("spec.host is required".into());
        }
        if let Some(tp) = &dr.traffic_policy {
            super::validate_policy::traffic_policy(tp, "spec.trafficPolicy", &mut err);
        }
        for (k, s) in dr.subsets.iter().enumerate() {
            if let Some(tp) = &s.traffic_policy {
                super::validate_policy::traffic_policy(tp, &format!("spec.subsets[{k}].trafficPolicy"), &mut err);
            }
        }
    }
}

/// WorkloadEntry fields that would shape what istiod generates in ways not implemented here:
/// refused rather than accepted without effect.
fn workload_fields(we: &WorkloadEntry, prefix: &str, err: &mut dyn FnMut(String)) {
    if we.service_account.is_some() {
        err(format!("{prefix}serviceAccount: not supported (it names the mTLS identity, and mTLS is not implemented)"));
    }
    if we.network.is_some() {
        err(format!("{prefix}network: not supported (multi-network routing through gateways is not implemented)"));
    }
    if let Some(l) = &we.locality {
        if l.is_empty() || l.split('/').any(str::is_empty) {
            err(format!("{prefix}locality: \"{l}\" is not region[/zone[/subzone]]"));
        }
    }
}

fn source_err(m: &Metadata, resource: &str, message: String) -> LoadError {
    let (file, index) = m.source.rsplit_once(": document ").unwrap_or((&m.source, "0"));
    LoadError {
        file: file.to_string(),
        index: index.parse().unwrap_or(0),
        resource: Some(resource.to_string()),
        message,
    }
}
