//! Monitoring on 15014: `/metrics` (Prometheus), `/debug/syncz` (each connected proxy: what it
//! ACKed or NACKed; and the config directory's current errors), `/debug/config_dump?proxyID=`.
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Control;

pub async fn serve(listener: TcpListener, control: Arc<Control>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let control = control.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(route(&control, req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn reply(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn route(control: &Control, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => {
            let mut out = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut out, &control.registry_metrics.lock().unwrap());
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", out)
        }
        "/debug/syncz" => {
            let proxies: Vec<_> = control.hub.proxies.lock().unwrap().values().cloned().collect();
            let errors: Vec<String> = control.errors.lock().unwrap().iter().map(|e| e.to_string()).collect();
            let body = serde_json::json!({"proxies": proxies, "config_errors": errors});
            reply(StatusCode::OK, "application/json", serde_json::to_vec_pretty(&body).unwrap_or_default())
        }
        "/debug/config_dump" => {
            let id = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("proxyID="))
                    .map(|v| v.replace("%7E", "~").replace("%7e", "~"))
            });
            match id.and_then(|id| super::ads::dump_for(control, &id)) {
                Some(v) => reply(StatusCode::OK, "application/json", serde_json::to_vec_pretty(&v).unwrap_or_default()),
                None => reply(StatusCode::NOT_FOUND, "text/plain", "no connected proxy with that proxyID\n"),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "/metrics /debug/syncz /debug/config_dump?proxyID=\n"),
    }
}
