//! gRPC end to end through the proxy (h2c downstream, HTTP/2 upstream): tonic-health's generated
//! client against tonic-health's server — unary, error statuses, server streaming and trailers.
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outrigger_tests::backend::GrpcServer;
use outrigger_tests::config::*;
use outrigger_tests::Proxy;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

fn grpc_proxy(server: &GrpcServer) -> Proxy {
    let mut cfg = simple(&[server.addr]);
    let c = cfg["static_resources"]["clusters"][0].take();
    cfg["static_resources"]["clusters"][0] = http2(c);
    Proxy::start(&cfg)
}

async fn client(p: &Proxy) -> HealthClient<tonic::transport::Channel> {
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", p.addr("http")))
        .unwrap()
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("gRPC channel to the proxy");
    HealthClient::new(ch)
}

#[tokio::test]
async fn grpc_unary_call_succeeds_through_the_proxy() {
    let server = GrpcServer::start("shop.Cart");
    let p = grpc_proxy(&server);
    let mut c = client(&p).await;
    let r = c.check(HealthCheckRequest { service: "shop.Cart".into() }).await.expect("Check");
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
    let log = p.access_log("gRPC access log", |l| l["path"] == "/grpc.health.v1.Health/Check").await;
    assert_eq!(log["response_code"], 200);
    assert_eq!(log["protocol"], "HTTP/2.0");
}

#[tokio::test]
async fn grpc_error_status_reaches_the_client() {
    let server = GrpcServer::start("shop.Cart");
    let p = grpc_proxy(&server);
    let mut c = client(&p).await;
    let err = c.check(HealthCheckRequest { service: "no.Such".into() }).await.expect_err("unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn grpc_server_streaming_delivers_each_message() {
    let server = GrpcServer::start("shop.Cart");
    let p = grpc_proxy(&server);
    let mut c = client(&p).await;
    let mut stream = c.watch(HealthCheckRequest { service: "shop.Cart".into() }).await.expect("Watch").into_inner();
    let first = next(&mut stream).await;
    assert_eq!(first.unwrap().status, ServingStatus::Serving as i32);
    // A change on the server arrives while the stream stays open.
    server.set_status("shop.Cart", false);
    let second = next(&mut stream).await;
    assert_eq!(second.unwrap().status, ServingStatus::NotServing as i32);
}

async fn next(
    s: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> Option<tonic_health::pb::HealthCheckResponse> {
    tokio::time::timeout(Duration::from_secs(20), s.message()).await.expect("stream message").unwrap()
}

/// The grpc-status trailer itself, seen by a plain HTTP/2 client.
#[tokio::test]
async fn grpc_trailers_pass_through() {
    let server = GrpcServer::start("svc");
    let p = grpc_proxy(&server);
    let s = tokio::net::TcpStream::connect(p.addr("http")).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    // HealthCheckRequest{service: "svc"} in one length-prefixed gRPC message.
    static MSG: [u8; 10] = [0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c'];
    let req = http::Request::post(format!("http://{}/grpc.health.v1.Health/Check", p.addr("http")))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&MSG)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive after the body");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
    let body = collected.to_bytes();
    // One message: SERVING is field 1 = 1.
    assert_eq!(&body[..], &[0u8, 0, 0, 0, 2, 0x08, 1]);
}
