//! Virtual host and route selection, with Envoy's semantics.
use http::{HeaderMap, Method};

use crate::config::route::{HeaderKey, HeaderMatch};
use crate::config::{PathMatch, Route, RouteTable, VirtualHost};

/// The parts of a request that routing looks at.
pub struct RouteInput<'a> {
    pub host: &'a str,
    /// Path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    /// "http" or "https", for `:scheme` matches.
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
}

pub fn select<'t>(table: &'t RouteTable, input: &RouteInput<'_>) -> Option<&'t Route> {
    let vh = virtual_host(table, input.host)?;
    route(vh, input)
}

pub fn virtual_host<'t>(table: &'t RouteTable, host: &str) -> Option<&'t VirtualHost> {
    let d = &table.domains;
    let lower;
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        lower = host.to_ascii_lowercase();
        lower.as_str()
    } else {
        host
    };
    let idx = d
        .exact
        .get(host)
        .or_else(|| d.suffixes.iter().find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str())).map(|x| x.1))
        .or_else(|| d.prefixes.iter().find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str())).map(|x| x.1))
        .or(d.any)?;
    table.virtual_hosts.get(idx)
}

pub fn route<'t>(vh: &'t VirtualHost, input: &RouteInput<'_>) -> Option<&'t Route> {
    let Some(idx) = vh.index.as_deref() else {
        // A few routes: the first that matches completely, in config order.
        return vh.routes.iter().find(|r| full_match(r, input));
    };
    let path = input.path;
    // Candidates in config order: the first one that matches completely wins.
    let mut best: Option<u32> = None;
    let mut consider = |list: &[u32]| {
        for &i in list {
            if best.is_some_and(|b| b <= i) {
                break;
            }
            if full_match(&vh.routes[i as usize], input) {
                best = Some(i);
                break;
            }
        }
    };
    if let Some(l) = idx.exact.get(path) {
        consider(l);
    }
    for &len in &idx.prefix_lens {
        if len > path.len() {
            break;
        }
        if !path.is_char_boundary(len) {
            continue;
        }
        if let Some(l) = idx.prefix.get(&path[..len]) {
            consider(l);
        }
    }
    consider(&idx.always);
    best.map(|i| &vh.routes[i as usize])
}

fn full_match(r: &Route, input: &RouteInput<'_>) -> bool {
    let is_connect = input.method == Method::CONNECT;
    let path_ok = match &r.path {
        PathMatch::Connect => is_connect,
        _ if is_connect => false,
        PathMatch::Prefix(p) => starts_with(input.path, p, r.case_sensitive),
        PathMatch::Exact(p) => {
            if r.case_sensitive {
                input.path == p
            } else {
                input.path.eq_ignore_ascii_case(p)
            }
        }
        PathMatch::Separated(p) => {
            starts_with(input.path, p, r.case_sensitive)
                && matches!(input.path.as_bytes().get(p.len()), None | Some(b'/'))
        }
        PathMatch::Regex(re) => re.is_match(input.path),
    };
    if !path_ok {
        return false;
    }
    if r.grpc
        && !input.headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        return false;
    }
    r.headers.iter().all(|hm| {
        let name = match &hm.name {
            HeaderKey::Header(n) => n,
            pseudo => {
                let v = match pseudo {
                    HeaderKey::Method => input.method.as_str(),
                    HeaderKey::Authority => input.host,
                    HeaderKey::Path => input.path,
                    _ => input.scheme,
                };
                let matched = match &hm.matcher {
                    None => hm.present,
                    Some(m) => m.matches(v),
                };
                return matched != hm.invert;
            }
        };
        header_value_matches(hm, name, input.headers)
    }) && r.query.iter().all(|qm| {
        let q = input.query.unwrap_or("");
        let found = q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == qm.name).then_some(v)
        });
        match (&qm.matcher, found) {
            (None, f) => f.is_some(),
            (Some(m), Some(v)) => m.matches(v),
            (Some(_), None) => false,
        }
    })
}

/// Whether a header matcher on a regular header (not a pseudo-header) holds for `headers`; for
/// a pseudo-header matcher, false.
pub fn header_matches(hm: &HeaderMatch, headers: &http::HeaderMap) -> bool {
    match &hm.name {
        HeaderKey::Header(n) => header_value_matches(hm, n, headers),
        _ => false,
    }
}

fn header_value_matches(hm: &HeaderMatch, name: &http::HeaderName, headers: &http::HeaderMap) -> bool {
    let values = headers.get_all(name);
    let mut it = values.iter().peekable();
    let matched = match &hm.matcher {
        None => it.peek().is_some() == hm.present,
        Some(m) => {
            // Envoy joins repeated headers with ',' before matching.
            let joined: Option<String> = if values.iter().count() > 1 {
                Some(values.iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(","))
            } else {
                None
            };
            match (joined, values.iter().next()) {
                (Some(j), _) => m.matches(&j),
                (None, Some(v)) => v.to_str().is_ok_and(|v| m.matches(v)),
                (None, None) => false,
            }
        }
    };
    matched != hm.invert
}

fn starts_with(path: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        path.starts_with(prefix)
    } else {
        path.len() >= prefix.len()
            && path.is_char_boundary(prefix.len())
            && path[..prefix.len()].eq_ignore_ascii_case(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

    fn table(json: serde_json::Value) -> RouteTable {
        let pool = outrigger_api::descriptor_pool();
        let desc = pool.get_message_by_name("envoy.config.route.v3.RouteConfiguration").unwrap();
        let msg = prost_reflect::DynamicMessage::deserialize(desc, json).unwrap();
        let rc: RouteConfiguration = msg.transcode_to().unwrap();
        crate::translate::translate_route_config(&rc).unwrap()
    }

    #[test]
    fn pseudo_headers_method_and_authority_can_be_matched() {
        let t = table(serde_json::json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"name": "post", "match": {"prefix": "/", "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]}, "direct_response": {"status": 201}},
            {"name": "api", "match": {"prefix": "/", "headers": [{"name": ":authority", "string_match": {"prefix": "api."}}]}, "direct_response": {"status": 202}},
            {"name": "rest", "match": {"prefix": "/"}, "direct_response": {"status": 200}},
        ]}]}));
        let h = HeaderMap::new();
        let pick = |m: &Method, host: &str| {
            select(&t, &RouteInput { host, path: "/x", query: None, method: m, scheme: "http", headers: &h })
                .unwrap()
                .name
                .clone()
        };
        assert_eq!(pick(&Method::POST, "svc"), "post");
        assert_eq!(pick(&Method::GET, "api.example.com"), "api");
        assert_eq!(pick(&Method::GET, "svc"), "rest");
    }

    #[test]
    fn small_virtual_hosts_are_scanned_with_the_same_result_as_the_index() {
        let mut routes = Vec::new();
        for i in 0..40 {
            routes.push(serde_json::json!({"name": format!("p{i}"), "match": {"prefix": format!("/p/{i}")}, "direct_response": {"status": 200}}));
            routes.push(serde_json::json!({"name": format!("e{i}"), "match": {"path": format!("/e/{i}")}, "direct_response": {"status": 200}}));
            if i % 5 == 0 {
                routes.push(serde_json::json!({"name": format!("r{i}"), "match": {"safe_regex": {"regex": format!("/r/{i}.*")}}, "direct_response": {"status": 200}}));
                routes.push(serde_json::json!({"name": format!("i{i}"), "match": {"prefix": format!("/P/{i}"), "case_sensitive": false}, "direct_response": {"status": 200}}));
            }
        }
        routes.push(serde_json::json!({"name": "rest", "match": {"prefix": "/"}, "direct_response": {"status": 200}}));
        let mut t = table(
            serde_json::json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]}),
        );
        assert!(t.virtual_hosts[0].index.is_some());
        let h = HeaderMap::new();
        let paths: Vec<String> = (0..45)
            .flat_map(|i| {
                [
                    format!("/p/{i}"),
                    format!("/p/{i}/x"),
                    format!("/e/{i}"),
                    format!("/r/{i}x"),
                    format!("/p/{i}/"),
                    format!("/e/{i}/"),
                ]
            })
            .chain(["/", "/x", "/e", "/p"].map(String::from))
            .collect();
        let pick = |t: &RouteTable, p: &str| {
            select(
                t,
                &RouteInput { host: "h", path: p, query: None, method: &Method::GET, scheme: "http", headers: &h },
            )
            .map(|r| r.name.clone())
        };
        let indexed: Vec<_> = paths.iter().map(|p| pick(&t, p)).collect();
        t.virtual_hosts[0].index = None;
        let scanned: Vec<_> = paths.iter().map(|p| pick(&t, p)).collect();
        assert_eq!(indexed, scanned);
        assert_eq!(scanned[0].as_deref(), Some("p0"));
    }

    #[test]
    fn header_query_and_string_matchers_follow_envoy() {
        let route = |name: &str, m: serde_json::Value| {
            let mut m = m;
            if m.get("prefix").is_none() && m.get("path_separated_prefix").is_none() {
                m["prefix"] = serde_json::json!("/");
            }
            serde_json::json!({"name": name, "match": m, "direct_response": {"status": 200}})
        };
        let hm = |spec: serde_json::Value| serde_json::json!({"headers": [spec]});
        let t = table(serde_json::json!({"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            route("exact", hm(serde_json::json!({"name": "x-exact", "exact_match": "a"}))),
            route("prefix", hm(serde_json::json!({"name": "x-prefix", "prefix_match": "pre"}))),
            route("suffix", hm(serde_json::json!({"name": "x-suffix", "suffix_match": "fix"}))),
            route("contains", hm(serde_json::json!({"name": "x-contains", "contains_match": "mid"}))),
            route("regex", hm(serde_json::json!({"name": "x-regex", "safe_regex_match": {"regex": "[0-9]+"}}))),
            route("absent", hm(serde_json::json!({"name": "x-absent", "present_match": false}))),
            route("inverted", hm(serde_json::json!({"name": "x-inv", "string_match": {"exact": "no"}, "invert_match": true}))),
            route("s-suffix", hm(serde_json::json!({"name": "x-s", "string_match": {"suffix": ".test"}}))),
            route("s-contains", hm(serde_json::json!({"name": "x-s", "string_match": {"contains": "ore"}}))),
            route("s-regex", hm(serde_json::json!({"name": "x-s", "string_match": {"safe_regex": {"regex": "v[0-9]"}}}))),
            route("s-ignore-case", hm(serde_json::json!({"name": "x-s", "string_match": {"exact": "MiXeD", "ignore_case": true}}))),
            route("q-present", serde_json::json!({"query_parameters": [{"name": "debug", "present_match": true}]})),
            route("separated", serde_json::json!({"path_separated_prefix": "/sep"})),
            route("grpc", serde_json::json!({"grpc": {}})),
            route("rest", serde_json::json!({})),
        ]}]}));
        let pick = |path: &str, query: Option<&str>, headers: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            // Every case but "absent" and "inverted" sends both headers those routes look for.
            if !headers.iter().any(|(k, _)| *k == "x-absent") {
                h.insert("x-absent", "1".parse().unwrap());
            }
            if !headers.iter().any(|(k, _)| *k == "x-inv") {
                h.insert("x-inv", "no".parse().unwrap());
            }
            let input = RouteInput { host: "h", path, query, method: &Method::GET, scheme: "http", headers: &h };
            select(&t, &input).unwrap().name.clone()
        };
        let x = |k: &'static str, v: &'static str| [(k, v)];
        assert_eq!(pick("/", None, &x("x-exact", "a")), "exact");
        assert_eq!(pick("/", None, &x("x-exact", "ab")), "rest");
        assert_eq!(pick("/", None, &x("x-prefix", "prefab")), "prefix");
        assert_eq!(pick("/", None, &x("x-suffix", "affix")), "suffix");
        assert_eq!(pick("/", None, &x("x-contains", "amidst")), "contains");
        assert_eq!(pick("/", None, &x("x-regex", "123")), "regex");
        assert_eq!(pick("/", None, &x("x-regex", "12a")), "rest");
        assert_eq!(pick("/", None, &[("x-absent", "1"), ("x-inv", "no")]), "rest");
        let mut h = HeaderMap::new();
        h.insert("x-inv", "no".parse().unwrap());
        let none = RouteInput { host: "h", path: "/", query: None, method: &Method::GET, scheme: "http", headers: &h };
        assert_eq!(select(&t, &none).unwrap().name, "absent");
        assert_eq!(pick("/", None, &x("x-inv", "yes")), "inverted");
        assert_eq!(pick("/", None, &x("x-s", "a.test")), "s-suffix");
        assert_eq!(pick("/", None, &x("x-s", "more")), "s-contains");
        assert_eq!(pick("/", None, &x("x-s", "v2")), "s-regex");
        assert_eq!(pick("/", None, &x("x-s", "mixed")), "s-ignore-case");
        assert_eq!(pick("/", Some("a=1&debug"), &[]), "q-present");
        assert_eq!(pick("/sep", None, &[]), "separated");
        assert_eq!(pick("/sep/x", None, &[]), "separated");
        assert_eq!(pick("/separate", None, &[]), "rest");
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/grpc".parse().unwrap());
        h.insert("x-absent", "1".parse().unwrap());
        h.insert("x-inv", "no".parse().unwrap());
        let g =
            RouteInput { host: "h", path: "/svc/M", query: None, method: &Method::POST, scheme: "http", headers: &h };
        assert_eq!(select(&t, &g).unwrap().name, "grpc");
    }
}
