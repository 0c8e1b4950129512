//! The admin server (loopback only): Envoy's endpoint names and formats where it matters.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

use crate::app::App;
use crate::telemetry::stats::metrics;

pub async fn serve(listener: TcpListener, app: Arc<App>) {
    serve_http(listener, move |req| route(&app, req)).await
}

/// Sidecar/router modes: Istio's readiness port (`GET /healthz/ready`, 15021) and Prometheus port
/// (`GET /stats/prometheus`, 15090), each on its own listener.
pub async fn serve_probe(listener: TcpListener, app: Arc<App>) {
    serve_http(listener, move |req| match req.uri().path() {
        "/healthz/ready" if app.state() == "LIVE" => text(StatusCode::OK, "ready\n"),
        "/healthz/ready" => text(StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", app.state())),
        "/stats/prometheus" | "/metrics" => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics().render())
        }
        _ => text(StatusCode::NOT_FOUND, "/healthz/ready or /stats/prometheus\n"),
    })
    .await
}

/// HTTP/1 on `listener`, each request answered by `handle` (the admin and probe ports: small,
/// synchronous answers).
async fn serve_http<F>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| std::future::ready(Ok::<_, Infallible>(handle(req))));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=UTF-8", body)
}

fn json_reply(v: serde_json::Value) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, "application/json", serde_json::to_vec_pretty(&v).unwrap_or_default())
}

fn query_param<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn route(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let post = req.method() == Method::POST;
    match (req.uri().path(), post) {
        ("/ready", _) => match app.state() {
            "LIVE" => text(StatusCode::OK, "LIVE\n"),
            s => text(StatusCode::SERVICE_UNAVAILABLE, format!("{s}\n")),
        },
        ("/stats/prometheus", _) => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics().render())
        }
        ("/config_dump", false) => json_reply(config_dump(app)),
        ("/listeners", false) => listeners(app, query_param(&req, "format") == Some("json")),
        ("/clusters", false) => clusters(app),
        ("/server_info", false) => {
            let snap = app.live.load();
            json_reply(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "state": app.state(),
                "uptime_current_epoch": format!("{}s", app.started.elapsed().as_secs()),
                "node": {"id": snap.node_id, "cluster": snap.node_cluster},
                "command_line_options": {"concurrency": app.concurrency},
                "health_address": app.probe_addrs.0.map(|a| a.to_string()),
                "prometheus_address": app.probe_addrs.1.map(|a| a.to_string()),
            }))
        }
        ("/logging", true) => match query_param(&req, "level") {
            Some(level) => match app.set_log_level(level) {
                Ok(()) => text(StatusCode::OK, format!("log level set to {level}\n")),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            },
            None => text(StatusCode::BAD_REQUEST, "usage: POST /logging?level=<trace|debug|info|warn|error>\n"),
        },
        ("/drain_listeners", true) => {
            app.drain_listeners();
            text(StatusCode::OK, "OK\n")
        }
        ("/quitquitquit", true) => {
            app.quit();
            text(StatusCode::OK, "OK\n")
        }
        ("/logging" | "/drain_listeners" | "/quitquitquit", false) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "this endpoint needs POST\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "admin commands: /ready /config_dump /listeners /clusters /server_info /stats/prometheus \
             POST /logging?level= POST /drain_listeners POST /quitquitquit\n",
        ),
    }
}

fn config_dump(app: &App) -> serde_json::Value {
    let snap = app.live.load();
    let b = &snap.source.to_json();
    crate::app::release_free_memory();
    let updated = &app.loaded_at;
    let listeners: Vec<_> = b["staticResources"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| json!({"listener": l, "last_updated": updated}))
        .collect();
    let clusters: Vec<_> = b["staticResources"]["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"cluster": c, "last_updated": updated}))
        .collect();
    // Resources from xDS, in Envoy's dump shapes, each with its version and update time.
    let dynamic = app.xds.as_ref().map(|x| x.to_json()).unwrap_or_default();
    let of = |type_url: &str, key: &str| -> Vec<serde_json::Value> {
        dynamic[type_url]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                json!({"name": r["name"], "version_info": r["version_info"], "last_updated": r["last_updated"], key: r["resource"]})
            })
            .collect()
    };
    use outrigger_api::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
    let dyn_listeners: Vec<_> = of(LISTENER, "listener")
        .into_iter()
        .map(|mut l| {
            let name = l["name"].take();
            json!({"name": name, "active_state": l})
        })
        .collect();
    json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": b, "last_updated": updated},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "version_info": snap.version.to_string(),
         "static_listeners": listeners, "dynamic_listeners": dyn_listeners},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "version_info": snap.version.to_string(),
         "static_clusters": clusters, "dynamic_active_clusters": of(CLUSTER, "cluster")},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": of(ROUTE, "route_config")},
        {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump", "dynamic_endpoint_configs": of(ENDPOINT, "endpoint_config")},
    ]})
}

fn listeners(app: &App, as_json: bool) -> Response<Full<Bytes>> {
    let bound: Vec<(String, SocketAddr)> = app.listeners.bound();
    if as_json {
        let list: Vec<_> = bound
            .iter()
            .map(|(n, a)| {
                json!({"name": n, "local_address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}}})
            })
            .collect();
        return json_reply(json!({"listener_statuses": list}));
    }
    text(StatusCode::OK, bound.iter().map(|(n, a)| format!("{n}::{a}\n")).collect::<String>())
}

/// Envoy's `/clusters` health flags.
fn health_flags(e: &crate::upstream::Endpoint) -> String {
    let mut f = String::new();
    if e.health.hc_failed.load(std::sync::atomic::Ordering::Relaxed) {
        f.push_str("/failed_active_hc");
    }
    if e.health.is_ejected() {
        f.push_str("/failed_outlier_check");
    }
    if e.eds_unhealthy {
        f.push_str("/failed_eds_health");
    }
    if f.is_empty() {
        f.push_str("healthy");
    }
    f
}

fn clusters(app: &App) -> Response<Full<Bytes>> {
    let snap = app.live.load();
    let mut names: Vec<&Arc<str>> = snap.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for n in names {
        let c = &snap.clusters[n];
        for e in c.endpoints.load().list.iter() {
            let a = e.addr;
            out.push_str(&format!("{n}::{a}::weight::{}\n", e.weight));
            out.push_str(&format!(
                "{n}::{a}::rq_active::{}\n",
                e.active_requests.load(std::sync::atomic::Ordering::Relaxed)
            ));
            out.push_str(&format!("{n}::{a}::health_flags::{}\n", health_flags(e)));
        }
    }
    text(StatusCode::OK, out)
}
