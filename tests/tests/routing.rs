//! Route configuration: virtual host selection by domain, route matching (path, prefix,
//! safe_regex, headers, query parameters) and route actions (cluster, weighted_clusters, timeout,
//! prefix_rewrite, host_rewrite_literal, redirect, direct_response).
use std::collections::HashMap;

use outrigger_tests::client::{get, get_h1, send_h2, H1Conn};
use outrigger_tests::config::*;
use outrigger_tests::{Backend, Proxy};
use serde_json::{json, Value};

fn direct(body: &str) -> Value {
    json!({"status": 200, "body": {"inline_string": body}})
}

fn answer(name: &str) -> Value {
    json!([{"match": {"prefix": "/"}, "direct_response": direct(name)}])
}

#[tokio::test]
async fn virtual_host_domains_exact_then_suffix_then_prefix_then_any() {
    let vhosts = json!([
        vhost("any", &["*"], answer("any")),
        vhost("prefix", &["api.*"], answer("prefix")),
        vhost("suffix", &["*.example.com"], answer("suffix")),
        vhost("longer-suffix", &["*.b.example.com"], answer("longer-suffix")),
        vhost("exact", &["api.example.com", "alias.test"], answer("exact")),
    ]);
    let p = Proxy::start(&bootstrap(vec![http_listener("http", vhosts)], vec![]));
    let cases = [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("alias.test", "exact"),
        ("www.example.com", "suffix"),
        ("x.b.example.com", "longer-suffix"),
        ("api.example.org", "prefix"),
        ("other.net", "any"),
    ];
    for (host, want) in cases {
        let r = get_h1(p.addr("http"), host, "/", &[]).await;
        assert_eq!(r.text(), want, "Host: {host}");
    }
    // HTTP/2 routes on :authority.
    let r = send_h2(p.addr("http"), get("www.example.com", "/", &[])).await;
    assert_eq!(r.text(), "suffix");
}

/// Path and query, request headers, expected answer.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn route_matches_path_prefix_regex_headers_and_query() {
    let routes = json!([
        {"match": {"path": "/exact"}, "direct_response": direct("path")},
        {"match": {"prefix": "/api/", "headers": [{"name": "x-version", "string_match": {"exact": "v2"}}]},
         "direct_response": direct("header-v2")},
        {"match": {"prefix": "/api/", "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}]},
         "direct_response": direct("query-debug")},
        {"match": {"prefix": "/api/"}, "direct_response": direct("prefix-api")},
        {"match": {"safe_regex": {"regex": "/users/[0-9]+"}}, "direct_response": direct("regex")},
        {"match": {"prefix": "/static", "case_sensitive": false}, "direct_response": direct("case-insensitive")},
        {"match": {"prefix": "/", "headers": [{"name": "x-present", "present_match": true}]},
         "direct_response": direct("present")},
    ]);
    let p = Proxy::start(&bootstrap(vec![http_listener("http", json!([vhost("all", &["*"], routes)]))], vec![]));
    let a = p.addr("http");
    let cases: &[Case] = &[
        ("/exact", &[], "path"),
        ("/api/items", &[("x-version", "v2")], "header-v2"),
        ("/api/items", &[("x-version", "v1")], "prefix-api"),
        ("/api/items?debug=1", &[], "query-debug"),
        ("/api/items?debug=2", &[], "prefix-api"),
        ("/api/items?a=b&debug=1", &[], "query-debug"),
        ("/users/42", &[], "regex"),
        ("/STATIC/app.js", &[], "case-insensitive"),
        ("/users/42/orders", &[("x-present", "")], "present"),
        ("/exact/more", &[("x-present", "yes")], "present"),
    ];
    for (path, headers, want) in cases {
        let r = get_h1(a, "x", path, headers).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, *want), "{path} {headers:?}");
    }
    // The regex is anchored to the whole path; /exact is not a prefix match.
    for path in ["/users/42/orders", "/exact/more", "/users/abc"] {
        assert_eq!(get_h1(a, "x", path, &[]).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn no_route_returns_404_with_nr_flag() {
    let b = Backend::start("app");
    let routes = json!([route("/only", "app")]);
    let p = Proxy::start(&bootstrap(
        vec![http_listener("http", json!([vhost("only", &["known.test"], routes)]))],
        vec![cluster("app", &[b.addr])],
    ));
    let r = get_h1(p.addr("http"), "known.test", "/elsewhere", &[]).await;
    assert_eq!(r.status, 404);
    let log = p.access_log("NR log", |l| l["path"] == "/elsewhere").await;
    assert_eq!(log["response_flags"], "NR");
    assert_eq!(log["response_code"], 404);
    // An unknown host has no virtual host at all: also NR.
    let r = get_h1(p.addr("http"), "unknown.test", "/only", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn weighted_clusters_split_traffic_by_weight() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let routes = json!([{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"clusters": [
        {"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}}}]);
    let p = Proxy::start(&bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("a", &[a.addr]), cluster("b", &[b.addr])],
    ));
    let mut conn = H1Conn::open(p.addr("http")).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        let r = conn.send(get("x", "/", &[])).await;
        *seen.entry(r.header("x-backend").unwrap().to_string()).or_default() += 1;
    }
    let (na, nb) = (seen.get("a").copied().unwrap_or(0), seen.get("b").copied().unwrap_or(0));
    assert_eq!(na + nb, 400);
    // Expected 320/80; binomial sd is 8, so this band is > 7 sd wide on each side.
    assert!((260..=380).contains(&na), "a got {na}, b got {nb}");
}

#[tokio::test]
async fn route_timeout_returns_504_with_ut_flag() {
    let b = Backend::start("slow");
    let routes = json!([{"match": {"prefix": "/"}, "route": {"cluster": "slow", "timeout": "0.5s"}}]);
    let p = Proxy::start(&bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("slow", &[b.addr])],
    ));
    let r = get_h1(p.addr("http"), "x", "/slow", &[("x-delay-ms", "5000")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "upstream request timeout");
    let log = p.access_log("UT log", |l| l["path"] == "/slow").await;
    assert_eq!(log["response_flags"], "UT");
    assert_eq!(log["response_code"], 504);
    assert_eq!(p.metric("envoy_cluster_upstream_rq_timeout_total{envoy_cluster_name=\"slow\"}"), 1.0);
    // A fast answer on the same route is not affected.
    assert_eq!(get_h1(p.addr("http"), "x", "/fast", &[]).await.status, 200);
}

#[tokio::test]
async fn prefix_rewrite_and_host_rewrite_literal_change_what_upstream_sees() {
    let b = Backend::start("app");
    let routes = json!([
        {"match": {"prefix": "/old/"}, "route": {"cluster": "app", "prefix_rewrite": "/new/"}},
        {"match": {"prefix": "/host"}, "route": {"cluster": "app", "host_rewrite_literal": "internal.svc"}},
    ]);
    let p = Proxy::start(&bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("app", &[b.addr])],
    ));
    let r = get_h1(p.addr("http"), "public.test", "/old/a/b?q=1", &[]).await;
    assert_eq!(r.json()["path"], "/new/a/b?q=1");
    assert_eq!(r.upstream_header("host").as_deref(), Some("public.test"));
    let r = get_h1(p.addr("http"), "public.test", "/host/x", &[]).await;
    assert_eq!(r.json()["path"], "/host/x");
    assert_eq!(r.upstream_header("host").as_deref(), Some("internal.svc"));
    let r = send_h2(p.addr("http"), get("public.test", "/host/y", &[])).await;
    assert_eq!(r.upstream_header("host").as_deref(), Some("internal.svc"));
}

#[tokio::test]
async fn redirects_set_status_and_location() {
    let routes = json!([
        {"match": {"prefix": "/go"}, "redirect": {
            "host_redirect": "new.example.com", "path_redirect": "/landing", "response_code": "PERMANENT_REDIRECT"}},
        {"match": {"prefix": "/secure"}, "redirect": {"https_redirect": true}},
        {"match": {"prefix": "/docs/"}, "redirect": {"prefix_rewrite": "/documentation/", "response_code": "FOUND"}},
    ]);
    let p = Proxy::start(&bootstrap(vec![http_listener("http", json!([vhost("all", &["*"], routes)]))], vec![]));
    let r = get_h1(p.addr("http"), "old.example.com", "/go/somewhere", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("http://new.example.com/landing"));
    let r = get_h1(p.addr("http"), "old.example.com", "/secure/page?x=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://old.example.com/secure/page?x=1"));
    let r = get_h1(p.addr("http"), "old.example.com", "/docs/intro", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://old.example.com/documentation/intro"));
}

#[tokio::test]
async fn direct_response_answers_without_an_upstream() {
    let b = Backend::start("app");
    let routes = json!([
        {"match": {"path": "/teapot"}, "direct_response": {"status": 418, "body": {"inline_string": "short and stout"}}},
        {"match": {"path": "/empty"}, "direct_response": {"status": 204}},
        route("/", "app"),
    ]);
    let p = Proxy::start(&bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("app", &[b.addr])],
    ));
    let r = get_h1(p.addr("http"), "x", "/teapot", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (418, "short and stout"));
    let r = get_h1(p.addr("http"), "x", "/empty", &[]).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(b.requests(), 0);
}

#[tokio::test]
async fn prefix_rewrite_replaces_the_whole_path_of_a_regex_or_exact_match() {
    let b = Backend::start("app");
    let routes = json!([
        {"match": {"safe_regex": {"regex": "/re/[a-z]+"}}, "route": {"cluster": "app", "prefix_rewrite": "/rewritten"}},
        {"match": {"path": "/exact"}, "route": {"cluster": "app", "prefix_rewrite": "/other"}},
    ]);
    let p = Proxy::start(&bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("app", &[b.addr])],
    ));
    let r = get_h1(p.addr("http"), "x", "/re/abc?q=1", &[]).await;
    assert_eq!(r.json()["path"], "/rewritten?q=1");
    let r = get_h1(p.addr("http"), "x", "/exact", &[]).await;
    assert_eq!(r.json()["path"], "/other");
}

#[tokio::test]
async fn regex_rewrite_substitutes_every_match_in_the_path() {
    let b = Backend::start("app");
    // What istiod generates for a regex uri match with rewrite.uri, plus a capture group.
    let routes = json!([
        {"match": {"safe_regex": {"regex": "/v1/.*"}}, "route": {"cluster": "app", "regex_rewrite": {
            "pattern": {"regex": "^/v1/(\\w+)/(\\w+)"}, "substitution": "/v2/\\2/\\1"}}},
        {"match": {"prefix": "/dash"}, "route": {"cluster": "app", "regex_rewrite": {
            "pattern": {"regex": "-"}, "substitution": "_"}}},
    ]);
    let p = Proxy::start(&bootstrap(
        vec![http_listener("http", json!([vhost("all", &["*"], routes)]))],
        vec![cluster("app", &[b.addr])],
    ));
    let r = get_h1(p.addr("http"), "x", "/v1/users/42/tail?a-b=c", &[]).await;
    assert_eq!(r.json()["path"], "/v2/42/users/tail?a-b=c");
    // Every match, in the path only (not the query).
    let r = get_h1(p.addr("http"), "x", "/dash/a-b-c?x-y=1", &[]).await;
    assert_eq!(r.json()["path"], "/dash/a_b_c?x-y=1");
}

#[tokio::test]
async fn redirect_prefix_rewrite_on_an_exact_path_replaces_the_path() {
    let routes = json!([{"match": {"path": "/old"}, "redirect": {"prefix_rewrite": "/new"}}]);
    let p = Proxy::start(&bootstrap(vec![http_listener("http", json!([vhost("all", &["*"], routes)]))], vec![]));
    let r = get_h1(p.addr("http"), "h.test", "/old?x=1", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://h.test/new?x=1"));
}

#[tokio::test]
async fn route_to_a_missing_cluster_answers_503_with_nc_flag() {
    let routes = json!([route("/", "nowhere")]);
    let mut cfg = bootstrap(vec![http_listener("http", json!([vhost("all", &["*"], routes)]))], vec![]);
    // validate_clusters: false lets a static route name a cluster that does not exist.
    first_filter(&mut cfg, 0)["route_config"]["validate_clusters"] = json!(false);
    let p = Proxy::start(&cfg);
    let r = get_h1(p.addr("http"), "x", "/nc", &[]).await;
    assert_eq!(r.status, 503);
    let log = p.access_log("NC log", |l| l["path"] == "/nc").await;
    assert_eq!(log["response_flags"], "NC");
    assert_eq!(log["response_code"], 503);
}

#[tokio::test]
async fn weighted_clusters_total_weight_must_be_what_the_weights_add_up_to() {
    let b = Backend::start("a");
    let routes = |total: u32| {
        json!([{"match": {"prefix": "/"}, "route": {"weighted_clusters": {"total_weight": total, "clusters": [
            {"name": "a", "weight": 60}, {"name": "a", "weight": 40}]}}}])
    };
    let cfg = |total| {
        bootstrap(
            vec![http_listener("http", json!([vhost("all", &["*"], routes(total))]))],
            vec![cluster("a", &[b.addr])],
        )
    };
    let out = outrigger_tests::proxy::run_to_exit(
        "bootstrap.json",
        &serde_json::to_string(&cfg(7)).unwrap(),
        &["--mode", "validate"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("total_weight"), "{err}");
    let p = Proxy::start(&cfg(100));
    assert_eq!(get_h1(p.addr("http"), "x", "/", &[]).await.status, 200);
}
