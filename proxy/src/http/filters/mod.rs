//! HTTP filters: what runs between the connection manager and the router. `http_filters` run in
//! config order, each with a request phase (before the router: continue, answer locally, change
//! the request, or wait first) and a response phase (in reverse order, on every response,
//! local replies included), the router last. A route's `typed_per_filter_config` reaches the
//! filter of that name.
//!
//! Adding a filter is a file here with its runtime config, phases and translation, plus one
//! line in [`REGISTRY`].
pub mod fault;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any as PbAny;
use http::{Request, Response};
use hyper::body::Incoming;

use super::body::ProxyBody;
use super::local_reply::Flag;
use crate::config::Route;
use crate::translate::{ConfigError, Ctx};

/// A filter's translation: its config type, how to build it, and its per-route config if it
/// has one.
pub struct Factory {
    /// The full name of the `typed_config` message.
    pub type_name: &'static str,
    pub build: Build,
    /// The full name and translation of the `typed_per_filter_config` message, if any.
    pub per_route: Option<(&'static str, PerRouteBuild)>,
}

pub type Build = fn(&Ctx, &PbAny, &FilterScope) -> Result<Arc<dyn HttpFilter>, ConfigError>;

pub type PerRouteBuild = fn(&Ctx, &PbAny) -> Result<PerRoute, ConfigError>;

/// Compiled per-route config, downcast by the filter it belongs to.
pub type PerRoute = crate::config::route::PerFilterConfig;

/// Every HTTP filter Outrigger implements (the router is built in).
pub const REGISTRY: &[Factory] = &[fault::FACTORY];

/// What a filter is built for: the connection manager's stats prefix.
pub struct FilterScope {
    pub stat_prefix: String,
}

/// One filter of a connection manager's chain.
#[derive(Clone, Debug)]
pub struct Configured {
    /// `http_filters[].name`: the key of route's `typed_per_filter_config`.
    pub name: String,
    pub filter: Arc<dyn HttpFilter>,
}

pub trait HttpFilter: Send + Sync + std::fmt::Debug {
    /// Before the router.
    fn on_request(&self, x: &mut Exchange<'_>) -> Verdict;
    /// On the response head, before it goes downstream.
    fn on_response(&self, _resp: &mut Response<ProxyBody>, _x: &mut Held) {}
}

/// What the request phase of a filter sees.
pub struct Exchange<'a> {
    pub req: &'a mut Request<Incoming>,
    /// The route the request matched, if any.
    pub route: Option<&'a Route>,
    /// This filter's `typed_per_filter_config` on that route.
    pub per_route: Option<&'a (dyn Any + Send + Sync)>,
    /// Response flags to log (`DI`, `FI`, ...).
    pub flags: &'a mut Vec<Flag>,
    /// Things a filter keeps until the response (guards of gauges, start times).
    pub held: &'a mut Held,
}

/// Per-request state filters keep until the response is sent.
#[derive(Default)]
pub struct Held(Vec<Box<dyn Any + Send>>);

impl Held {
    pub fn keep(&mut self, v: impl Any + Send) {
        self.0.push(Box::new(v));
    }
}

pub enum Verdict {
    Continue,
    /// Answer with this; the router does not run.
    Respond(Box<Response<ProxyBody>>),
    /// Wait for this, then decide (a delay, a fetch).
    Wait(Pin<Box<dyn Future<Output = Verdict> + Send>>),
}

/// Runs the request phases in order; Some(response) if a filter answered.
pub async fn request_phase(
    chain: &[Configured],
    req: &mut Request<Incoming>,
    route: Option<&Route>,
    flags: &mut Vec<Flag>,
    held: &mut Held,
) -> Option<Response<ProxyBody>> {
    for f in chain {
        let per_route = route.and_then(|r| r.per_filter.get(&f.name));
        let mut x = Exchange { req: &mut *req, route, per_route, flags: &mut *flags, held: &mut *held };
        let mut v = f.filter.on_request(&mut x);
        loop {
            match v {
                Verdict::Continue => break,
                Verdict::Respond(r) => return Some(*r),
                Verdict::Wait(fut) => v = fut.await,
            }
        }
    }
    None
}

/// Runs the response phases, last filter first.
pub fn response_phase(chain: &[Configured], resp: &mut Response<ProxyBody>, held: &mut Held) {
    for f in chain.iter().rev() {
        f.filter.on_response(resp, held);
    }
}

/// The factory for a `typed_config` type.
pub fn factory(type_name: &str) -> Option<&'static Factory> {
    REGISTRY.iter().find(|f| f.type_name == type_name)
}

/// Compiles a route's `typed_per_filter_config` entry, by the type of its config.
pub fn per_route(ctx: &Ctx, any: &PbAny) -> Result<PerRoute, ConfigError> {
    let t = crate::translate::type_name(&any.type_url);
    match REGISTRY.iter().find_map(|f| f.per_route.filter(|(n, _)| *n == t)) {
        Some((_, build)) => build(ctx, any),
        None => Err(ctx.err(format!("unsupported per-route filter config {t}"))),
    }
}
