//! Evidence for the fields of Istio's traffic policy as outrigger-xds generates them (retries,
//! mirrors, faults, header operations, hashing, circuit breakers, outlier detection). The
//! tests are the proxy's, written with its side of these fields in tests/tests/resilience.rs.
use super::Evidence::{self, Effect};

const RESILIENCE: &str = "tests/tests/resilience.rs";

const HEADER_OPS: Evidence =
    Effect(RESILIENCE, "route_header_operations_set_add_and_remove_request_and_response_headers");
const FAULT_DELAY: Evidence = Effect(RESILIENCE, "fault_filter_delays_requests_by_the_fixed_delay_for_the_percentage");
const FAULT_ABORT: Evidence =
    Effect(RESILIENCE, "fault_filter_aborts_requests_with_the_http_or_grpc_status_for_the_percentage");
const RETRIES: Evidence = Effect(RESILIENCE, "retry_policy_retries_on_the_configured_conditions_up_to_num_retries");
const RETRY_OTHER_HOST: Evidence =
    Effect(RESILIENCE, "retry_previous_hosts_predicate_sends_the_retry_to_another_endpoint");
const MIRROR: Evidence =
    Effect(RESILIENCE, "request_mirror_policy_copies_requests_to_the_mirror_cluster_for_the_fraction");
const HASH: Evidence = Effect(RESILIENCE, "hash_policy_sends_requests_with_the_same_key_to_the_same_endpoint");
const BREAKERS: Evidence = Effect(RESILIENCE, "circuit_breaker_thresholds_overflow_with_503_uo");
const OUTLIER_5XX: Evidence = Effect(RESILIENCE, "outlier_detection_ejects_an_endpoint_after_consecutive_5xx");
const OUTLIER_GATEWAY: Evidence = Effect(RESILIENCE, "outlier_detection_ejects_after_consecutive_gateway_errors");
const OUTLIER_LOCAL: Evidence = Effect(RESILIENCE, "outlier_detection_counts_local_origin_failures_apart_when_split");
const SUCCESS_RATE_OFF: Evidence =
    Effect(RESILIENCE, "outlier_detection_success_rate_ejection_is_off_when_not_enforced");
const PANIC: Evidence = Effect(RESILIENCE, "healthy_panic_threshold_zero_never_sends_to_ejected_endpoints");
const KEEPALIVE: Evidence = Effect(RESILIENCE, "upstream_tcp_keepalive_sets_the_socket_options");
const RING_HASH: Evidence = Effect(RESILIENCE, "ring_hash_keeps_a_key_on_one_endpoint");
const MAGLEV: Evidence = Effect(RESILIENCE, "maglev_keeps_a_key_on_one_endpoint");

pub(super) const EVIDENCE: &[(&str, Evidence)] = &[
    ("envoy.config.route.v3.Route.typed_per_filter_config", FAULT_ABORT),
    ("envoy.config.route.v3.Route.request_headers_to_add", HEADER_OPS),
    ("envoy.config.route.v3.Route.request_headers_to_remove", HEADER_OPS),
    ("envoy.config.route.v3.Route.response_headers_to_add", HEADER_OPS),
    ("envoy.config.route.v3.Route.response_headers_to_remove", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValueOption.header", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValueOption.append_action", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValue.key", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValue.value", HEADER_OPS),
    ("envoy.extensions.filters.http.fault.v3.HTTPFault.delay", FAULT_DELAY),
    ("envoy.extensions.filters.http.fault.v3.HTTPFault.abort", FAULT_ABORT),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay.fixed_delay", FAULT_DELAY),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay.percentage", FAULT_DELAY),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.http_status", FAULT_ABORT),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.grpc_status", FAULT_ABORT),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.percentage", FAULT_ABORT),
    (
        "envoy.type.v3.FractionalPercent.numerator",
        Effect(RESILIENCE, "mirror_and_fault_percentages_sample_the_configured_share_of_requests"),
    ),
    (
        "envoy.type.v3.FractionalPercent.denominator",
        Effect(RESILIENCE, "mirror_and_fault_percentages_sample_the_configured_share_of_requests"),
    ),
    ("envoy.config.route.v3.RouteAction.retry_policy", RETRIES),
    ("envoy.config.route.v3.RetryPolicy.retry_on", RETRIES),
    ("envoy.config.route.v3.RetryPolicy.num_retries", RETRIES),
    (
        "envoy.config.route.v3.RetryPolicy.per_try_timeout",
        Effect(RESILIENCE, "retry_per_try_timeout_bounds_each_attempt"),
    ),
    ("envoy.config.route.v3.RetryPolicy.retry_host_predicate", RETRY_OTHER_HOST),
    ("envoy.config.route.v3.RetryPolicy.host_selection_retry_max_attempts", RETRY_OTHER_HOST),
    (
        "envoy.config.route.v3.RetryPolicy.retriable_status_codes",
        Effect(RESILIENCE, "retriable_status_codes_retry_only_the_listed_statuses"),
    ),
    ("envoy.config.route.v3.RetryPolicy.RetryHostPredicate.name", RETRY_OTHER_HOST),
    ("envoy.config.route.v3.RetryPolicy.RetryHostPredicate.typed_config", RETRY_OTHER_HOST),
    ("envoy.config.route.v3.RouteAction.request_mirror_policies", MIRROR),
    ("envoy.config.route.v3.RouteAction.RequestMirrorPolicy.cluster", MIRROR),
    ("envoy.config.route.v3.RouteAction.RequestMirrorPolicy.runtime_fraction", MIRROR),
    ("envoy.config.core.v3.RuntimeFractionalPercent.default_value", MIRROR),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy.trace_sampled",
        Effect(RESILIENCE, "mirrored_requests_are_not_trace_sampled_when_trace_sampled_is_false"),
    ),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy.disable_shadow_host_suffix_append",
        Effect(RESILIENCE, "mirrored_requests_keep_their_host_when_the_shadow_suffix_is_disabled"),
    ),
    ("envoy.config.route.v3.RouteAction.hash_policy", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.header", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.cookie", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.connection_properties", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.query_parameter", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Header.header_name", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Cookie.name", HASH),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.Cookie.ttl",
        Effect(RESILIENCE, "hash_policy_cookie_is_generated_with_ttl_and_path_when_absent"),
    ),
    (
        "envoy.config.route.v3.RouteAction.HashPolicy.Cookie.path",
        Effect(RESILIENCE, "hash_policy_cookie_is_generated_with_ttl_and_path_when_absent"),
    ),
    ("envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties.source_ip", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter.name", HASH),
    ("envoy.config.cluster.v3.Cluster.circuit_breakers", BREAKERS),
    ("envoy.config.cluster.v3.CircuitBreakers.thresholds", BREAKERS),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_connections", BREAKERS),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_pending_requests", BREAKERS),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_requests", BREAKERS),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_retries",
        Effect(RESILIENCE, "circuit_breaker_max_retries_limits_concurrent_retries"),
    ),
    ("envoy.config.cluster.v3.Cluster.outlier_detection", OUTLIER_5XX),
    ("envoy.config.cluster.v3.OutlierDetection.consecutive_5xx", OUTLIER_5XX),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_consecutive_5xx", OUTLIER_5XX),
    ("envoy.config.cluster.v3.OutlierDetection.interval", OUTLIER_5XX),
    ("envoy.config.cluster.v3.OutlierDetection.base_ejection_time", OUTLIER_5XX),
    (
        "envoy.config.cluster.v3.OutlierDetection.max_ejection_percent",
        Effect(RESILIENCE, "outlier_detection_ejects_no_more_than_max_ejection_percent"),
    ),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_success_rate", SUCCESS_RATE_OFF),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_local_origin_success_rate", SUCCESS_RATE_OFF),
    ("envoy.config.cluster.v3.OutlierDetection.consecutive_gateway_failure", OUTLIER_GATEWAY),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_consecutive_gateway_failure", OUTLIER_GATEWAY),
    ("envoy.config.cluster.v3.OutlierDetection.split_external_local_origin_errors", OUTLIER_LOCAL),
    ("envoy.config.cluster.v3.OutlierDetection.consecutive_local_origin_failure", OUTLIER_LOCAL),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_consecutive_local_origin_failure", OUTLIER_LOCAL),
    ("envoy.config.cluster.v3.Cluster.common_lb_config", PANIC),
    ("envoy.config.cluster.v3.Cluster.CommonLbConfig.healthy_panic_threshold", PANIC),
    ("envoy.type.v3.Percent.value", PANIC),
    ("envoy.config.cluster.v3.Cluster.upstream_connection_options", KEEPALIVE),
    ("envoy.config.cluster.v3.UpstreamConnectionOptions.tcp_keepalive", KEEPALIVE),
    ("envoy.config.core.v3.TcpKeepalive.keepalive_probes", KEEPALIVE),
    ("envoy.config.core.v3.TcpKeepalive.keepalive_time", KEEPALIVE),
    ("envoy.config.core.v3.TcpKeepalive.keepalive_interval", KEEPALIVE),
    ("envoy.config.cluster.v3.Cluster.ring_hash_lb_config", RING_HASH),
    ("envoy.config.cluster.v3.Cluster.RingHashLbConfig.minimum_ring_size", RING_HASH),
    ("envoy.config.cluster.v3.Cluster.maglev_lb_config", MAGLEV),
    ("envoy.config.cluster.v3.Cluster.MaglevLbConfig.table_size", MAGLEV),
    (
        "envoy.config.core.v3.HttpProtocolOptions.max_requests_per_connection",
        Effect(RESILIENCE, "upstream_max_requests_per_connection_closes_the_connection_after_n_requests"),
    ),
    (
        "envoy.config.core.v3.HttpProtocolOptions.max_connection_duration",
        Effect(RESILIENCE, "upstream_max_connection_duration_drains_old_connections"),
    ),
];
