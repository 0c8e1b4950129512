//! Evidence for the resilience fields: fault injection, retries, mirroring, circuit breakers,
//! outlier detection.
use super::Evidence::{self, Effect, Informational};

const E2E: &str = "tests/tests/resilience.rs";
const TIMEOUTS: &str = "tests/tests/timeouts.rs";
const BALANCING: &str = "tests/tests/balancing.rs";
const TRANSLATE: &str = "proxy/src/translate/resilience_tests.rs";
const OUTLIER: &str = "proxy/src/upstream/outlier.rs";

const FAULTS: Evidence = Effect(E2E, "fault_filter_aborts_and_delays_by_route_override_and_headers");
const RETRIES: Evidence = Effect(E2E, "retries_resend_to_another_endpoint_until_success_with_attempt_count");
const RETRY_COMPILE: Evidence = Effect(TRANSLATE, "retry_policy_compiles_conditions_backoff_and_headers");
const VHOST: Evidence = Effect(TRANSLATE, "virtual_host_retry_policy_and_buffer_limit_apply_to_its_routes");
const BODY: Evidence = Effect(E2E, "request_body_is_replayed_on_retry_within_the_buffer_limit_and_not_past_it");
const MIRROR: Evidence = Effect(E2E, "mirror_sends_a_copy_to_the_shadow_without_touching_the_primary");
const BREAKER: Evidence = Effect(E2E, "circuit_breaker_overflow_returns_503_with_uo_flag");
const BREAKER_COMPILE: Evidence =
    Effect(TRANSLATE, "circuit_breakers_compile_with_envoys_defaults_and_high_priority_is_refused");
const EJECT: Evidence = Effect(E2E, "outlier_detection_ejects_a_failing_endpoint_and_returns_it");
const OUTLIER_COMPILE: Evidence =
    Effect(TRANSLATE, "outlier_detection_and_panic_threshold_compile_with_envoys_defaults");
const GATEWAY: Evidence = Effect(OUTLIER, "gateway_failures_eject_only_when_enforced_and_other_5xx_break_the_run");
const SPLIT: Evidence = Effect(OUTLIER, "split_local_origin_failures_count_apart_from_5xx");
const SUCCESS_RATE: Evidence = Effect(OUTLIER, "success_rate_ejects_the_endpoint_far_below_the_others");
const HEADER_OPS: Evidence = Effect(E2E, "route_header_operations_set_add_and_remove_request_and_response_headers");
const HASH: Evidence = Effect(BALANCING, "hash_policy_keeps_a_key_on_one_endpoint_and_sets_the_cookie");
const HASH_COMPILE: Evidence = Effect(TRANSLATE, "hash_balancers_compile_their_table_sizes_and_refuse_bad_ones");
const RETIRE: Evidence = Effect(TIMEOUTS, "upstream_connections_are_retired_after_max_requests_or_max_duration");
const KEEPALIVE: Evidence = Effect(TIMEOUTS, "upstream_tcp_keepalive_is_set_on_upstream_sockets");
const MSD: Evidence = Effect(TIMEOUTS, "max_stream_duration_and_grpc_timeout_bound_the_whole_exchange");
const HC: Evidence = Effect(BALANCING, "active_health_checks_take_failing_endpoints_out_and_bring_them_back");
const HC_COMPILE: Evidence =
    Effect(TRANSLATE, "health_checks_compile_with_envoys_default_status_and_refuse_what_is_missing");
const SOCKET: Evidence = Effect("proxy/src/upstream/pool.rs", "tcp_keepalive_options_are_set_on_the_socket");

pub(super) const EVIDENCE: &[(&str, Evidence)] = &[
    // The fault filter, on the HTTP filter chain and per route.
    ("envoy.config.route.v3.Route.typed_per_filter_config", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.HTTPFault.delay", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.HTTPFault.abort", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.HTTPFault.max_active_faults", FAULTS),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay.fixed_delay", FAULTS),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay.header_delay", FAULTS),
    ("envoy.extensions.filters.common.fault.v3.FaultDelay.percentage", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.http_status", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.grpc_status", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.header_abort", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.percentage", FAULTS),
    ("envoy.extensions.filters.http.fault.v3.FaultAbort.response_body", FAULTS),
    ("envoy.type.v3.FractionalPercent.numerator", FAULTS),
    ("envoy.type.v3.FractionalPercent.denominator", FAULTS),
    // Retries.
    ("envoy.config.route.v3.RouteAction.retry_policy", RETRIES),
    ("envoy.config.route.v3.VirtualHost.retry_policy", VHOST),
    ("envoy.config.route.v3.VirtualHost.include_request_attempt_count", RETRIES),
    ("envoy.config.route.v3.VirtualHost.per_request_buffer_limit_bytes", VHOST),
    ("envoy.config.route.v3.Route.per_request_buffer_limit_bytes", BODY),
    ("envoy.config.route.v3.RetryPolicy.retry_on", RETRIES),
    (
        "envoy.config.route.v3.RetryPolicy.num_retries",
        Effect(E2E, "retries_run_out_with_urx_and_the_retry_breaker_stops_them"),
    ),
    (
        "envoy.config.route.v3.RetryPolicy.per_try_timeout",
        Effect(E2E, "per_try_timeout_moves_a_slow_attempt_to_another_endpoint"),
    ),
    ("envoy.config.route.v3.RetryPolicy.retry_host_predicate", RETRIES),
    (
        "envoy.config.route.v3.RetryPolicy.per_try_idle_timeout",
        Effect(E2E, "per_try_idle_timeout_moves_an_attempt_that_gets_no_answer"),
    ),
    ("envoy.config.route.v3.RetryPolicy.host_selection_retry_max_attempts", RETRIES),
    ("envoy.config.route.v3.RetryPolicy.retriable_status_codes", RETRIES),
    ("envoy.config.route.v3.RetryPolicy.retry_back_off", RETRY_COMPILE),
    (
        "envoy.config.route.v3.RetryPolicy.retriable_headers",
        Effect(E2E, "retriable_headers_retry_a_response_that_carries_them"),
    ),
    ("envoy.config.route.v3.RetryPolicy.RetryHostPredicate.name", super::NAMED_EXTENSION),
    ("envoy.config.route.v3.RetryPolicy.RetryHostPredicate.typed_config", RETRIES),
    ("envoy.config.route.v3.RetryPolicy.RetryBackOff.base_interval", RETRY_COMPILE),
    ("envoy.config.route.v3.RetryPolicy.RetryBackOff.max_interval", RETRY_COMPILE),
    // Mirroring.
    ("envoy.config.route.v3.RouteAction.request_mirror_policies", MIRROR),
    ("envoy.config.route.v3.RouteAction.RequestMirrorPolicy.cluster", MIRROR),
    ("envoy.config.route.v3.RouteAction.RequestMirrorPolicy.runtime_fraction", MIRROR),
    ("envoy.config.route.v3.RouteAction.RequestMirrorPolicy.disable_shadow_host_suffix_append", MIRROR),
    (
        "envoy.config.route.v3.RouteAction.RequestMirrorPolicy.trace_sampled",
        Informational("a tracing decision for the shadow's span; there is no tracing yet, so nothing to sample"),
    ),
    ("envoy.config.core.v3.RuntimeFractionalPercent.default_value", MIRROR),
    // Circuit breakers.
    ("envoy.config.cluster.v3.Cluster.circuit_breakers", BREAKER),
    ("envoy.config.cluster.v3.CircuitBreakers.thresholds", BREAKER),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.priority", BREAKER_COMPILE),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_connections", BREAKER),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_pending_requests", BREAKER),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_requests", BREAKER),
    (
        "envoy.config.cluster.v3.CircuitBreakers.Thresholds.max_retries",
        Effect(E2E, "retries_run_out_with_urx_and_the_retry_breaker_stops_them"),
    ),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.track_remaining", BREAKER),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.retry_budget", BREAKER_COMPILE),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget.budget_percent", BREAKER_COMPILE),
    ("envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget.min_retry_concurrency", BREAKER_COMPILE),
    ("envoy.type.v3.Percent.value", OUTLIER_COMPILE),
    // Outlier detection and the panic threshold.
    ("envoy.config.cluster.v3.Cluster.outlier_detection", EJECT),
    ("envoy.config.cluster.v3.Cluster.common_lb_config", OUTLIER_COMPILE),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.locality_weighted_lb_config",
        Effect("proxy/src/upstream/priority.rs", "localities_get_traffic_by_weight_and_health"),
    ),
    (
        "envoy.config.cluster.v3.Cluster.CommonLbConfig.healthy_panic_threshold",
        Effect("proxy/src/upstream/lb.rs", "unavailable_endpoints_are_skipped_until_the_panic_threshold"),
    ),
    ("envoy.config.cluster.v3.OutlierDetection.consecutive_5xx", EJECT),
    ("envoy.config.cluster.v3.OutlierDetection.interval", EJECT),
    ("envoy.config.cluster.v3.OutlierDetection.base_ejection_time", EJECT),
    (
        "envoy.config.cluster.v3.OutlierDetection.max_ejection_percent",
        Effect(OUTLIER, "max_ejection_percent_bounds_ejections_but_one_is_always_allowed"),
    ),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_consecutive_5xx", OUTLIER_COMPILE),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_success_rate", SUCCESS_RATE),
    ("envoy.config.cluster.v3.OutlierDetection.success_rate_minimum_hosts", SUCCESS_RATE),
    ("envoy.config.cluster.v3.OutlierDetection.success_rate_request_volume", SUCCESS_RATE),
    ("envoy.config.cluster.v3.OutlierDetection.success_rate_stdev_factor", SUCCESS_RATE),
    ("envoy.config.cluster.v3.OutlierDetection.consecutive_gateway_failure", GATEWAY),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_consecutive_gateway_failure", GATEWAY),
    ("envoy.config.cluster.v3.OutlierDetection.split_external_local_origin_errors", SPLIT),
    ("envoy.config.cluster.v3.OutlierDetection.consecutive_local_origin_failure", SPLIT),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_consecutive_local_origin_failure", OUTLIER_COMPILE),
    ("envoy.config.cluster.v3.OutlierDetection.enforcing_local_origin_success_rate", HASH_COMPILE),
    // Stream idle timeouts.
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.stream_idle_timeout",
        Effect(TIMEOUTS, "stream_idle_timeout_answers_408_while_waiting_and_cuts_a_stalled_body"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.request_timeout",
        Effect(TIMEOUTS, "request_timeout_answers_408_to_a_body_that_does_not_arrive_in_time"),
    ),
    (
        "envoy.config.route.v3.RouteAction.idle_timeout",
        Effect(TIMEOUTS, "stream_idle_timeout_answers_408_while_waiting_and_cuts_a_stalled_body"),
    ),
    ("envoy.config.route.v3.RouteAction.max_stream_duration", MSD),
    ("envoy.config.route.v3.RouteAction.MaxStreamDuration.max_stream_duration", MSD),
    ("envoy.config.route.v3.RouteAction.MaxStreamDuration.grpc_timeout_header_max", MSD),
    (
        "envoy.config.route.v3.RouteAction.MaxStreamDuration.grpc_timeout_header_offset",
        Effect(TRANSLATE, "max_stream_duration_compiles_with_its_grpc_timeout_offset"),
    ),
    // Route header operations.
    ("envoy.config.route.v3.Route.request_headers_to_add", HEADER_OPS),
    ("envoy.config.route.v3.Route.request_headers_to_remove", HEADER_OPS),
    ("envoy.config.route.v3.Route.response_headers_to_add", HEADER_OPS),
    ("envoy.config.route.v3.Route.response_headers_to_remove", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValueOption.header", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValueOption.append_action", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValue.key", HEADER_OPS),
    ("envoy.config.core.v3.HeaderValue.value", HEADER_OPS),
    // Consistent hashing.
    ("envoy.config.route.v3.RouteAction.hash_policy", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.header", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.cookie", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.connection_properties", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.query_parameter", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.terminal", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Header.header_name", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Cookie.name", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Cookie.ttl", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.Cookie.path", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.ConnectionProperties.source_ip", HASH),
    ("envoy.config.route.v3.RouteAction.HashPolicy.QueryParameter.name", HASH),
    ("envoy.config.cluster.v3.Cluster.ring_hash_lb_config", HASH),
    ("envoy.config.cluster.v3.Cluster.maglev_lb_config", HASH),
    ("envoy.config.cluster.v3.Cluster.RingHashLbConfig.minimum_ring_size", HASH_COMPILE),
    ("envoy.config.cluster.v3.Cluster.MaglevLbConfig.table_size", HASH_COMPILE),
    // Active health checks.
    ("envoy.config.cluster.v3.Cluster.health_checks", HC),
    ("envoy.config.core.v3.HealthCheck.timeout", HC_COMPILE),
    ("envoy.config.core.v3.HealthCheck.interval", HC),
    ("envoy.config.core.v3.HealthCheck.unhealthy_threshold", HC),
    ("envoy.config.core.v3.HealthCheck.healthy_threshold", HC),
    ("envoy.config.core.v3.HealthCheck.no_traffic_interval", HC),
    ("envoy.config.core.v3.HealthCheck.http_health_check", HC),
    ("envoy.config.core.v3.HealthCheck.tcp_health_check", HC),
    ("envoy.config.core.v3.HealthCheck.HttpHealthCheck.path", HC),
    ("envoy.config.core.v3.HealthCheck.HttpHealthCheck.host", HC),
    ("envoy.config.core.v3.HealthCheck.HttpHealthCheck.expected_statuses", HC),
    ("envoy.type.v3.Int64Range.start", HC_COMPILE),
    ("envoy.type.v3.Int64Range.end", HC_COMPILE),
    // Upstream connections.
    ("envoy.config.core.v3.HttpProtocolOptions.max_requests_per_connection", RETIRE),
    ("envoy.config.core.v3.HttpProtocolOptions.max_connection_duration", RETIRE),
    ("envoy.config.cluster.v3.Cluster.upstream_connection_options", KEEPALIVE),
    ("envoy.config.cluster.v3.UpstreamConnectionOptions.tcp_keepalive", KEEPALIVE),
    ("envoy.config.core.v3.TcpKeepalive.keepalive_probes", SOCKET),
    ("envoy.config.core.v3.TcpKeepalive.keepalive_time", SOCKET),
    ("envoy.config.core.v3.TcpKeepalive.keepalive_interval", SOCKET),
    (
        "envoy.config.cluster.v3.OutlierDetection.max_ejection_time",
        Effect(OUTLIER, "ejection_time_grows_with_each_ejection_up_to_max_ejection_time"),
    ),
];
