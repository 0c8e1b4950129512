//! HttpConnectionManager → HttpConnManagerConfig.
use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3::{access_log::ConfigType as AlConfig, AccessLog};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{CodecType, RouteSpecifier, ServerHeaderTransformation},
    http_filter::ConfigType as HfConfig,
    HttpConnectionManager,
};

use super::{decode_any, duration, route::translate_route_config_in, ConfigError, Ctx};
use crate::config::{AccessLogSink, Codec, HttpConnManagerConfig, RouteSource, ServerHeader};

const ROUTER: &str = "envoy.extensions.filters.http.router.v3.Router";
const STDOUT_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_LOG: &str = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog";
const FILE_LOG: &str = "envoy.extensions.access_loggers.file.v3.FileAccessLog";

pub(crate) fn translate_hcm(ctx: &Ctx, h: &HttpConnectionManager) -> Result<HttpConnManagerConfig, ConfigError> {
    if h.stat_prefix.is_empty() {
        return Err(ctx.field("stat_prefix").err("stat_prefix is required"));
    }
    let codec = match CodecType::try_from(h.codec_type) {
        Ok(CodecType::Auto) => Codec::Auto,
        Ok(CodecType::Http1) => Codec::Http1,
        Ok(CodecType::Http2) => Codec::Http2,
        _ => return Err(ctx.field("codec_type").err("only AUTO, HTTP1 and HTTP2 are supported")),
    };
    let mut rds_fetch_timeout = None;
    let routes = match &h.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(Arc::new(translate_route_config_in(&ctx.field("route_config"), rc)?))
        }
        Some(RouteSpecifier::Rds(rds)) => {
            rds_fetch_timeout = super::ads_source(&ctx.field("rds.config_source"), &rds.config_source)?;
            if rds.route_config_name.is_empty() {
                return Err(ctx.field("rds.route_config_name").err("route_config_name is required"));
            }
            RouteSource::Rds(rds.route_config_name.clone())
        }
        _ => return Err(ctx.field("route_config").err("route_config or rds is required")),
    };
    // The router last; before it, filters from the registry, in order.
    if h.http_filters.is_empty() {
        return Err(ctx.field("http_filters").err("the router filter is required"));
    }
    let scope = crate::http::filters::FilterScope { stat_prefix: h.stat_prefix.clone() };
    let mut http_filters = Vec::new();
    let mut respect_expected_rq_timeout = false;
    for (i, f) in h.http_filters.iter().enumerate() {
        let fctx = ctx.index("http_filters", i);
        let last = i + 1 == h.http_filters.len();
        let any = match &f.config_type {
            Some(HfConfig::TypedConfig(any)) => any,
            None if f.name == "envoy.filters.http.router" && last => continue,
            _ => return Err(fctx.err(format!("filter \"{}\" needs a typed_config", f.name))),
        };
        let tname = super::type_name(&any.type_url);
        if tname == ROUTER {
            if !last {
                return Err(fctx.err("the router filter must be the last HTTP filter"));
            }
            let router: envoy_types::pb::envoy::extensions::filters::http::router::v3::Router =
                decode_any(&fctx.field("typed_config"), any, ROUTER)?;
            respect_expected_rq_timeout = router.respect_expected_rq_timeout;
            continue;
        }
        if last {
            return Err(fctx.err("the last HTTP filter must be the router"));
        }
        if f.is_optional || f.disabled {
            return Err(fctx.field(if f.disabled { "disabled" } else { "is_optional" }).err("not supported"));
        }
        let factory = crate::http::filters::factory(tname)
            .ok_or_else(|| fctx.field("typed_config").err(format!("unsupported HTTP filter {tname}")))?;
        let filter = (factory.build)(&fctx.field("typed_config"), any, &scope)?;
        http_filters.push(crate::http::filters::Configured { name: f.name.clone(), filter });
    }
    let server_name = if h.server_name.is_empty() { "outrigger".to_string() } else { h.server_name.clone() };
    let server_name =
        http::HeaderValue::from_str(&server_name).map_err(|_| ctx.field("server_name").err("invalid header value"))?;
    let server_header = match ServerHeaderTransformation::try_from(h.server_header_transformation) {
        Ok(ServerHeaderTransformation::Overwrite) => ServerHeader::Overwrite(server_name),
        Ok(ServerHeaderTransformation::AppendIfAbsent) => ServerHeader::AppendIfAbsent(server_name),
        Ok(ServerHeaderTransformation::PassThrough) => ServerHeader::PassThrough,
        Err(_) => return Err(ctx.field("server_header_transformation").err("unknown value")),
    };
    let max_kb = h.max_request_headers_kb.as_ref().map(|v| v.value).unwrap_or(60);
    if !(1..=8192).contains(&max_kb) {
        return Err(ctx.field("max_request_headers_kb").err("must be between 1 and 8192"));
    }
    let common = h.common_http_protocol_options.unwrap_or_default();
    let max_headers_count = common.max_headers_count.as_ref().map(|v| v.value as usize).unwrap_or(100);
    let idle_timeout = match &common.idle_timeout {
        None => Some(std::time::Duration::from_secs(3600)),
        Some(_) => duration(&common.idle_timeout).filter(|d| !d.is_zero()),
    };
    let mut upgrades = Vec::new();
    let mut allow_connect = false;
    for (i, u) in h.upgrade_configs.iter().enumerate() {
        let uctx = ctx.index("upgrade_configs", i);
        if u.upgrade_type.is_empty() {
            return Err(uctx.field("upgrade_type").err("upgrade_type is required"));
        }
        if !u.filters.is_empty() {
            return Err(uctx.field("filters").err("per-upgrade filter chains are not supported"));
        }
        if u.enabled.as_ref().is_some_and(|e| !e.value) {
            continue;
        }
        if u.upgrade_type.eq_ignore_ascii_case("connect") {
            allow_connect = true;
        } else {
            upgrades.push(u.upgrade_type.to_ascii_lowercase());
        }
    }
    let h2 = h.http2_protocol_options.clone().unwrap_or_default();
    Ok(HttpConnManagerConfig {
        stat_prefix: h.stat_prefix.clone(),
        http_filters,
        codec,
        routes,
        rds_fetch_timeout,
        server_header,
        use_remote_address: h.use_remote_address.as_ref().is_some_and(|v| v.value),
        xff_num_trusted_hops: h.xff_num_trusted_hops,
        skip_xff_append: h.skip_xff_append,
        generate_request_id: h.generate_request_id.as_ref().map(|v| v.value).unwrap_or(true),
        preserve_external_request_id: h.preserve_external_request_id,
        max_request_headers_bytes: max_kb as usize * 1024,
        max_headers_count,
        idle_timeout,
        max_requests_per_connection: common.max_requests_per_connection.map(|v| v.value).filter(|v| *v > 0),
        max_connection_duration: duration(&common.max_connection_duration).filter(|d| !d.is_zero()),
        request_headers_timeout: duration(&h.request_headers_timeout).filter(|d| !d.is_zero()),
        respect_expected_rq_timeout,
        request_timeout: duration(&h.request_timeout).filter(|d| !d.is_zero()),
        stream_idle_explicit: h.stream_idle_timeout.is_some(),
        stream_idle_timeout: match &h.stream_idle_timeout {
            None => Some(std::time::Duration::from_secs(300)),
            Some(_) => duration(&h.stream_idle_timeout).filter(|d| !d.is_zero()),
        },
        upgrades,
        allow_connect,
        access_log: access_logs(&ctx.field("access_log"), &h.access_log)?,
        h2_max_concurrent_streams: h2.max_concurrent_streams.map(|v| v.value),
        h2_initial_stream_window: h2.initial_stream_window_size.map(|v| v.value),
        h2_initial_connection_window: h2.initial_connection_window_size.map(|v| v.value),
    })
}

pub(crate) fn access_logs(ctx: &Ctx, logs: &[AccessLog]) -> Result<Vec<AccessLogSink>, ConfigError> {
    logs.iter()
        .enumerate()
        .map(|(i, l)| {
            let lctx = Ctx { resource: ctx.resource.clone(), path: format!("{}[{i}]", ctx.path) };
            let any = match &l.config_type {
                Some(AlConfig::TypedConfig(any)) => any,
                _ => return Err(lctx.field("typed_config").err("typed_config is required")),
            };
            let tctx = lctx.field("typed_config");
            match super::type_name(&any.type_url) {
                STDOUT_LOG => Ok(AccessLogSink::Stdout),
                STDERR_LOG => Ok(AccessLogSink::Stderr),
                FILE_LOG => {
                    let f: FileAccessLog = decode_any(&tctx, any, FILE_LOG)?;
                    if f.path.is_empty() {
                        return Err(tctx.field("path").err("path is required"));
                    }
                    Ok(AccessLogSink::File(f.path))
                }
                other => Err(tctx.err(format!("unsupported access logger {other}"))),
            }
        })
        .collect()
}
