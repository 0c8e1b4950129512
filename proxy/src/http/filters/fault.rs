//! `envoy.filters.http.fault`: delays and aborts, by percentage, from the filter's config, a
//! route's override, or (when configured so) the request's `x-envoy-fault-*` headers. A delayed
//! request is logged `DI`, an aborted one `FI`; an aborted request never reaches the upstream.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort::ErrorType, HttpFault};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::Any as PbAny;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};

use super::{Exchange, Factory, FilterScope, HttpFilter, PerRoute, Verdict};
use crate::http::body::ProxyBody;
use crate::http::local_reply::Flag;
use crate::telemetry::stats::{metrics, Labels};
use crate::translate::{decode_any, duration, ConfigError, Ctx};

const TYPE: &str = "envoy.extensions.filters.http.fault.v3.HTTPFault";

pub const FACTORY: Factory = Factory { type_name: TYPE, build, per_route: Some((TYPE, build_per_route)) };

/// What to inject: the filter's config, or a route's, which replaces it whole.
#[derive(Debug, Default)]
pub struct FaultConfig {
    delay: Option<Delay>,
    abort: Option<Abort>,
    max_active: Option<u32>,
}

#[derive(Debug)]
struct Delay {
    /// None: from `x-envoy-fault-delay-request` (milliseconds).
    fixed: Option<Duration>,
    percent: Percent,
}

#[derive(Debug)]
enum AbortWith {
    Http(StatusCode),
    Grpc(u32),
    /// From `x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request`.
    Header,
}

#[derive(Debug)]
struct Abort {
    with: AbortWith,
    percent: Percent,
    body: bytes::Bytes,
}

/// `FractionalPercent`: numerator out of denominator.
#[derive(Debug, Clone, Copy)]
struct Percent {
    numerator: u32,
    denominator: u32,
}

impl Percent {
    /// The configured share, or the header's numerator capped by it (Envoy's rule for the
    /// `-percentage` headers).
    fn roll(self, header: Option<u32>) -> bool {
        let n = header.map_or(self.numerator, |h| h.min(self.numerator));
        fastrand::u32(0..self.denominator) < n
    }
}

#[derive(Debug)]
pub struct Fault {
    config: FaultConfig,
    shared: Arc<Shared>,
}

/// Shared with the guards of faults in progress.
#[derive(Debug)]
struct Shared {
    active: AtomicU32,
    stats: Stats,
}

#[derive(Debug)]
struct Stats {
    delays: Counter,
    aborts: Counter,
    overflow: Counter,
    active: Gauge,
}

fn header_u32(h: &HeaderMap, name: &str) -> Option<u32> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Counted while a fault is being injected (for `max_active_faults`).
struct Active(Arc<Shared>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.stats.active.dec();
    }
}

impl Fault {
    fn abort_response(abort: &Abort, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
        let with = match abort.with {
            AbortWith::Http(s) => AbortWith::Http(s),
            AbortWith::Grpc(g) => AbortWith::Grpc(g),
            AbortWith::Header => match header_u32(headers, "x-envoy-fault-abort-grpc-request") {
                Some(g) => AbortWith::Grpc(g),
                None => AbortWith::Http(
                    header_u32(headers, "x-envoy-fault-abort-request")
                        .filter(|s| (200..600).contains(s))
                        .and_then(|s| StatusCode::from_u16(s as u16).ok())?,
                ),
            },
        };
        Some(match with {
            AbortWith::Http(s) => {
                let mut r = Response::new(ProxyBody::full(abort.body.clone()));
                *r.status_mut() = s;
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                r
            }
            // A trailers-only gRPC answer: the status in the headers.
            _ => {
                let AbortWith::Grpc(code) = with else { unreachable!() };
                let mut r = Response::new(ProxyBody::empty());
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                h.insert("grpc-status", HeaderValue::from(code));
                if let Ok(m) = HeaderValue::from_bytes(&abort.body) {
                    h.insert("grpc-message", m);
                }
                r
            }
        })
    }
}

impl HttpFilter for Fault {
    fn on_request(&self, x: &mut Exchange<'_>) -> Verdict {
        let cfg = x.per_route.and_then(|p| p.downcast_ref::<FaultConfig>()).unwrap_or(&self.config);
        let headers = x.req.headers();
        let delay = cfg.delay.as_ref().and_then(|d| {
            let ms = match d.fixed {
                Some(f) => f,
                None => Duration::from_millis(header_u32(headers, "x-envoy-fault-delay-request")? as u64),
            };
            d.percent.roll(header_u32(headers, "x-envoy-fault-delay-request-percentage")).then_some(ms)
        });
        let abort = cfg
            .abort
            .as_ref()
            .filter(|a| a.percent.roll(header_u32(headers, "x-envoy-fault-abort-request-percentage")))
            .and_then(|a| Fault::abort_response(a, headers));
        if delay.is_none() && abort.is_none() {
            return Verdict::Continue;
        }
        let max = cfg.max_active.or(self.config.max_active);
        let shared = &self.shared;
        if max.is_some_and(|m| shared.active.load(Ordering::Relaxed) >= m) {
            shared.stats.overflow.inc();
            return Verdict::Continue;
        }
        shared.active.fetch_add(1, Ordering::Relaxed);
        shared.stats.active.inc();
        let guard = Active(shared.clone());
        if abort.is_some() {
            shared.stats.aborts.inc();
        }
        let Some(d) = delay else {
            x.flags.push(Flag::FaultInjected);
            drop(guard);
            return Verdict::Respond(Box::new(abort.unwrap_or_else(|| Response::new(ProxyBody::empty()))));
        };
        shared.stats.delays.inc();
        x.flags.push(Flag::DelayInjected);
        if abort.is_some() {
            x.flags.push(Flag::FaultInjected);
        }
        Verdict::Wait(Box::pin(async move {
            tokio::time::sleep(d).await;
            drop(guard);
            match abort {
                Some(r) => Verdict::Respond(Box::new(r)),
                None => Verdict::Continue,
            }
        }))
    }
}

fn percent(ctx: &Ctx, p: &Option<FractionalPercent>) -> Result<Percent, ConfigError> {
    let p = p.unwrap_or_default();
    let denominator = match p.denominator {
        0 => 100,
        1 => 10_000,
        2 => 1_000_000,
        _ => return Err(ctx.field("denominator").err("unknown denominator")),
    };
    Ok(Percent { numerator: p.numerator.min(denominator), denominator })
}

fn config(ctx: &Ctx, f: &HttpFault) -> Result<FaultConfig, ConfigError> {
    #[allow(deprecated)]
    let refused: [(bool, &str); 11] = [
        (!f.upstream_cluster.is_empty(), "upstream_cluster"),
        (!f.headers.is_empty(), "headers"),
        (!f.downstream_nodes.is_empty(), "downstream_nodes"),
        (f.response_rate_limit.is_some(), "response_rate_limit"),
        (!f.delay_percent_runtime.is_empty(), "delay_percent_runtime"),
        (!f.abort_percent_runtime.is_empty(), "abort_percent_runtime"),
        (!f.delay_duration_runtime.is_empty(), "delay_duration_runtime"),
        (!f.abort_http_status_runtime.is_empty(), "abort_http_status_runtime"),
        (!f.max_active_faults_runtime.is_empty(), "max_active_faults_runtime"),
        (!f.abort_grpc_status_runtime.is_empty(), "abort_grpc_status_runtime"),
        (f.filter_metadata.is_some(), "filter_metadata"),
    ];
    if let Some((_, field)) = refused.iter().find(|(set, _)| *set) {
        return Err(ctx.field(field).err("not supported"));
    }
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let dctx = ctx.field("delay");
            let fixed = match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(fd)) => Some(duration(&Some(*fd)).unwrap_or_default()),
                Some(FaultDelaySecifier::HeaderDelay(_)) => None,
                None => return Err(dctx.err("fixed_delay or header_delay is required")),
            };
            Some(Delay { fixed, percent: percent(&dctx.field("percentage"), &d.percentage)? })
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let actx = ctx.field("abort");
            let with = match a.error_type {
                Some(ErrorType::HttpStatus(s)) => AbortWith::Http(
                    (200..600)
                        .contains(&s)
                        .then(|| StatusCode::from_u16(s as u16).ok())
                        .flatten()
                        .ok_or_else(|| actx.field("http_status").err("must be between 200 and 599"))?,
                ),
                Some(ErrorType::GrpcStatus(g)) => AbortWith::Grpc(g),
                Some(ErrorType::HeaderAbort(_)) => AbortWith::Header,
                None => return Err(actx.err("http_status, grpc_status or header_abort is required")),
            };
            let body =
                if a.response_body.is_empty() { "fault filter abort".to_string() } else { a.response_body.clone() };
            Some(Abort { with, percent: percent(&actx.field("percentage"), &a.percentage)?, body: body.into() })
        }
    };
    Ok(FaultConfig { delay, abort, max_active: f.max_active_faults.map(|v| v.value) })
}

fn families() -> &'static [Family<Labels, Counter>; 3] {
    static F: OnceLock<[Family<Labels, Counter>; 3]> = OnceLock::new();
    F.get_or_init(|| {
        let m = metrics();
        [
            m.counter_family("envoy_http_fault_delays_injected", "Requests delayed by the fault filter"),
            m.counter_family("envoy_http_fault_aborts_injected", "Requests aborted by the fault filter"),
            m.counter_family("envoy_http_fault_faults_overflow", "Faults not injected because of max_active_faults"),
        ]
    })
}

fn active_family() -> &'static Family<Labels, Gauge> {
    static F: OnceLock<Family<Labels, Gauge>> = OnceLock::new();
    F.get_or_init(|| metrics().gauge_family("envoy_http_fault_active_faults", "Faults being injected now"))
}

fn build(ctx: &Ctx, any: &PbAny, scope: &FilterScope) -> Result<Arc<dyn HttpFilter>, ConfigError> {
    let f: HttpFault = decode_any(ctx, any, TYPE)?;
    let config = config(ctx, &f)?;
    let labels = vec![("envoy_http_conn_manager_prefix".to_string(), scope.stat_prefix.clone())];
    let [d, a, o] = families();
    let stats = Stats {
        delays: d.get_or_create(&labels).clone(),
        aborts: a.get_or_create(&labels).clone(),
        overflow: o.get_or_create(&labels).clone(),
        active: active_family().get_or_create(&labels).clone(),
    };
    Ok(Arc::new(Fault { config, shared: Arc::new(Shared { active: AtomicU32::new(0), stats }) }))
}

fn build_per_route(ctx: &Ctx, any: &PbAny) -> Result<PerRoute, ConfigError> {
    let f: HttpFault = decode_any(ctx, any, TYPE)?;
    Ok(Arc::new(config(ctx, &f)?))
}
