//! Responses the proxy makes itself, with Envoy's status codes, bodies and response flags.
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// Envoy's response flags, as they appear in access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    None,
    /// UF: upstream connection failure.
    UpstreamConnectFailure,
    /// UT: upstream request timeout.
    UpstreamTimeout,
    /// NR: no route.
    NoRoute,
    /// UH: no healthy upstream.
    NoHealthyUpstream,
    /// NC: no cluster.
    NoCluster,
    /// UC: upstream connection termination.
    UpstreamConnectionTermination,
    /// UR: upstream remote reset.
    UpstreamReset,
    /// DC: downstream connection termination.
    DownstreamTermination,
    /// DPE: downstream protocol error.
    DownstreamProtocolError,
    /// UPE: upstream protocol error.
    UpstreamProtocolError,
    /// UR too: the upstream HTTP/2 server refused the stream (REFUSED_STREAM).
    UpstreamRefusedStream,
    /// UO: upstream overflow (a circuit breaker is open).
    UpstreamOverflow,
    /// FI: the fault filter aborted the request.
    FaultInjected,
    /// DI: the fault filter delayed the request.
    DelayInjected,
    /// URX: the retries (or connect attempts) ran out.
    RetryLimitExceeded,
    /// SI: the stream idle timeout fired.
    StreamIdleTimeout,
    /// UMSDR: the route's maximum stream duration was reached.
    MaxStreamDuration,
    /// The whole request did not arrive within `request_timeout` (Envoy logs no flag for it).
    RequestTimeout,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::None => "-",
            Flag::UpstreamConnectFailure => "UF",
            Flag::UpstreamTimeout => "UT",
            Flag::NoRoute => "NR",
            Flag::NoHealthyUpstream => "UH",
            Flag::NoCluster => "NC",
            Flag::UpstreamConnectionTermination => "UC",
            Flag::UpstreamReset => "UR",
            Flag::DownstreamTermination => "DC",
            Flag::DownstreamProtocolError => "DPE",
            Flag::UpstreamProtocolError => "UPE",
            Flag::UpstreamRefusedStream => "UR",
            Flag::UpstreamOverflow => "UO",
            Flag::FaultInjected => "FI",
            Flag::DelayInjected => "DI",
            Flag::RetryLimitExceeded => "URX",
            Flag::StreamIdleTimeout => "SI",
            Flag::MaxStreamDuration => "UMSDR",
            Flag::RequestTimeout => "-",
        }
    }

    /// The status and body Envoy answers with for this flag.
    pub fn reply(self) -> (StatusCode, &'static str) {
        match self {
            Flag::UpstreamConnectFailure => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            Flag::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
            Flag::StreamIdleTimeout => (StatusCode::REQUEST_TIMEOUT, "stream timeout"),
            Flag::MaxStreamDuration => (StatusCode::REQUEST_TIMEOUT, "upstream max stream duration reached"),
            Flag::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request timeout"),
            Flag::NoRoute => (StatusCode::NOT_FOUND, ""),
            Flag::NoHealthyUpstream => (StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            Flag::NoCluster => (StatusCode::SERVICE_UNAVAILABLE, ""),
            Flag::UpstreamConnectionTermination => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
            ),
            Flag::UpstreamReset => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: remote reset",
            ),
            Flag::UpstreamRefusedStream => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset",
            ),
            Flag::UpstreamProtocolError => (StatusCode::BAD_GATEWAY, "upstream sent an invalid response"),
            Flag::DownstreamProtocolError => (StatusCode::BAD_REQUEST, "Bad Request"),
            Flag::UpstreamOverflow => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
            Flag::None
            | Flag::DownstreamTermination
            | Flag::FaultInjected
            | Flag::DelayInjected
            | Flag::RetryLimitExceeded => (StatusCode::INTERNAL_SERVER_ERROR, ""),
        }
    }
}

pub fn response(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::full(body));
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

pub fn for_flag(flag: Flag) -> Response<ProxyBody> {
    let (s, b) = flag.reply();
    let mut r = response(s, b);
    if flag == Flag::UpstreamOverflow {
        r.headers_mut().insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    }
    r
}
