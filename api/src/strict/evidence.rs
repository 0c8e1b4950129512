//! The rule of the strict allow-list, checked: every field Outrigger accepts either changes what
//! the proxy does, and a named test shows it (failing if the field were ignored), or is
//! informational, with the reason. A field added to `SUPPORTED` without an entry here, an entry
//! for a field that is not allowed, or a test that does not exist fails this test, so "accepted
//! and ignored" cannot come back silently.
use super::SUPPORTED;

mod resilience;

pub(super) enum Evidence {
    /// (file relative to the workspace root, test function): the test that shows the effect.
    Effect(&'static str, &'static str),
    /// Accepted and without effect on traffic, for this reason.
    Informational(&'static str),
}
use Evidence::{Effect, Informational};

const ROUTING: &str = "tests/tests/routing.rs";
const FIELDS: &str = "tests/tests/field_effects.rs";
const XDS: &str = "tests/tests/xds.rs";
const LISTENER: &str = "tests/tests/listener.rs";
const CLUSTERS: &str = "tests/tests/clusters.rs";
const PROTOCOLS: &str = "tests/tests/http_protocols.rs";
const SEMANTICS: &str = "tests/tests/proxy_semantics.rs";
const UPGRADES: &str = "tests/tests/upgrades.rs";
const TCP: &str = "tests/tests/tcp_proxy.rs";
const BOOTSTRAP: &str = "tests/tests/bootstrap.rs";
const TRANSLATE: &str = "proxy/src/translate/honesty_tests.rs";
const MATCHING: &str = "proxy/src/http/route_match.rs";
const HEADERS: &str = "proxy/src/http/headers.rs";

const XDS_ALL: Evidence = Effect(XDS, "listeners_routes_clusters_and_endpoints_arrive_over_ads_and_serve_traffic");
const JSON_BOOTSTRAP: Evidence = Effect(BOOTSTRAP, "json_bootstrap_proxies_http1_and_h2c_to_backend");
const ROUTE_MATCHES: Evidence = Effect(ROUTING, "route_matches_path_prefix_regex_headers_and_query");
const MATCHERS: Evidence = Effect(MATCHING, "header_query_and_string_matchers_follow_envoy");
const REDIRECTS: Evidence = Effect(ROUTING, "redirects_set_status_and_location");
const REDIRECT_MORE: Evidence = Effect(FIELDS, "redirect_scheme_port_and_strip_query_shape_the_location");
const WEIGHTED: Evidence = Effect(ROUTING, "weighted_clusters_split_traffic_by_weight");
const TCP_WEIGHTED: Evidence = Effect(FIELDS, "tcp_proxy_weighted_clusters_spread_connections");
const ROUND_ROBIN: Evidence = Effect(CLUSTERS, "round_robin_spreads_requests_evenly");
const H2_DOWNSTREAM: Evidence = Effect(FIELDS, "downstream_http2_options_are_announced_to_the_client");
const REQUEST_ID: Evidence = Effect(HEADERS, "request_id_generation_and_preservation_follow_the_flags");
const TCP_RELAY: Evidence = Effect(TCP, "tcp_proxy_relays_bytes_both_ways");
const API_VERSIONS: Evidence = Effect(TRANSLATE, "udp_socket_addresses_and_v2_apis_are_refused_by_name");

const METADATA: Evidence =
    Informational("opaque to the proxy: Envoy's consumers of metadata (filters, subset balancing) are not implemented");
pub(super) const NAMED_EXTENSION: Evidence = Informational(
    "a label next to typed_config, which selects the extension (by type URL); without typed_config only the router \
     and tls_inspector names are accepted, as Envoy's deprecated lookup by name",
);
const EMPTY_H1_OPTIONS: Evidence =
    Informational("Http1ProtocolOptions, with none of its fields allowed: setting it to {} changes nothing");

const EVIDENCE: &[(&str, Evidence)] = &[
    // Bootstrap and xDS sources.
    ("envoy.config.bootstrap.v3.Bootstrap.node", XDS_ALL),
    ("envoy.config.bootstrap.v3.Bootstrap.static_resources", JSON_BOOTSTRAP),
    ("envoy.config.bootstrap.v3.Bootstrap.dynamic_resources", XDS_ALL),
    ("envoy.config.bootstrap.v3.Bootstrap.admin", Effect("tests/tests/admin.rs", "config_dump_shows_the_loaded_listener_and_cluster")),
    ("envoy.config.bootstrap.v3.Bootstrap.DynamicResources.lds_config", XDS_ALL),
    ("envoy.config.bootstrap.v3.Bootstrap.DynamicResources.cds_config", XDS_ALL),
    ("envoy.config.bootstrap.v3.Bootstrap.DynamicResources.ads_config", XDS_ALL),
    ("envoy.config.core.v3.ConfigSource.ads", XDS_ALL),
    ("envoy.config.core.v3.ConfigSource.resource_api_version", API_VERSIONS),
    (
        "envoy.config.core.v3.ConfigSource.initial_fetch_timeout",
        Effect(XDS, "initial_fetch_timeout_ends_warming_and_the_proxy_serves_what_it_has"),
    ),
    (
        "envoy.config.core.v3.ApiConfigSource.api_type",
        Effect("tests/tests/xds_delta_and_modes.rs", "delta_xds_delivers_config_and_applies_changes_and_removals"),
    ),
    ("envoy.config.core.v3.ApiConfigSource.transport_api_version", API_VERSIONS),
    ("envoy.config.core.v3.ApiConfigSource.grpc_services", XDS_ALL),
    (
        "envoy.config.core.v3.ApiConfigSource.set_node_on_first_message_only",
        Effect(XDS, "set_node_on_first_message_only_sends_the_node_once_per_stream"),
    ),
    ("envoy.config.core.v3.GrpcService.envoy_grpc", XDS_ALL),
    ("envoy.config.core.v3.GrpcService.EnvoyGrpc.cluster_name", XDS_ALL),
    ("envoy.extensions.filters.network.http_connection_manager.v3.Rds.config_source", XDS_ALL),
    ("envoy.extensions.filters.network.http_connection_manager.v3.Rds.route_config_name", XDS_ALL),
    ("envoy.config.cluster.v3.Cluster.EdsClusterConfig.eds_config", XDS_ALL),
    (
        "envoy.config.cluster.v3.Cluster.EdsClusterConfig.service_name",
        Effect(TRANSLATE, "eds_service_name_is_what_the_cluster_subscribes_to"),
    ),
    ("envoy.config.bootstrap.v3.Bootstrap.StaticResources.listeners", JSON_BOOTSTRAP),
    ("envoy.config.bootstrap.v3.Bootstrap.StaticResources.clusters", JSON_BOOTSTRAP),
    ("envoy.config.bootstrap.v3.Admin.address", Effect("tests/tests/admin.rs", "admin_on_a_non_loopback_address_is_refused")),
    (
        "envoy.config.core.v3.Node.*",
        Informational("sent to the control plane as given (id, cluster, metadata); the proxy acts on none of it"),
    ),
    ("envoy.config.core.v3.Metadata.*", METADATA),
    ("envoy.config.core.v3.Locality.*", Effect("proxy/src/translate/resilience_tests.rs", "priorities_localities_and_overprovisioning_compile")),
    // Addresses and data.
    ("envoy.config.core.v3.Address.socket_address", JSON_BOOTSTRAP),
    ("envoy.config.core.v3.SocketAddress.address", JSON_BOOTSTRAP),
    ("envoy.config.core.v3.SocketAddress.port_value", JSON_BOOTSTRAP),
    ("envoy.config.core.v3.SocketAddress.protocol", API_VERSIONS),
    ("envoy.config.core.v3.SocketAddress.ipv4_compat", Effect(FIELDS, "ipv4_compat_lets_an_ipv6_any_listener_take_ipv4")),
    ("envoy.config.core.v3.DataSource.inline_string", Effect(ROUTING, "direct_response_answers_without_an_upstream")),
    ("envoy.config.core.v3.DataSource.inline_bytes", Effect(FIELDS, "direct_response_body_comes_from_inline_bytes_or_a_file")),
    ("envoy.config.core.v3.DataSource.filename", Effect(FIELDS, "direct_response_body_comes_from_inline_bytes_or_a_file")),
    (
        "envoy.config.core.v3.HttpProtocolOptions.idle_timeout",
        Effect(PROTOCOLS, "idle_timeout_closes_an_idle_connection_but_not_one_with_a_request_in_flight"),
    ),
    ("envoy.config.core.v3.HttpProtocolOptions.max_headers_count", Effect(FIELDS, "max_headers_count_limits_the_request_headers")),
    ("envoy.config.core.v3.Http2ProtocolOptions.max_concurrent_streams", H2_DOWNSTREAM),
    ("envoy.config.core.v3.Http2ProtocolOptions.initial_stream_window_size", H2_DOWNSTREAM),
    ("envoy.config.core.v3.Http2ProtocolOptions.initial_connection_window_size", H2_DOWNSTREAM),
    // Listeners.
    (
        "envoy.config.listener.v3.Listener.name",
        Informational("the listener's identity (LDS updates and removal, admin, logs); traffic does not depend on it"),
    ),
    ("envoy.config.listener.v3.Listener.address", JSON_BOOTSTRAP),
    ("envoy.config.listener.v3.Listener.filter_chains", Effect(LISTENER, "destination_port_selects_the_filter_chain")),
    ("envoy.config.listener.v3.Listener.default_filter_chain", Effect(LISTENER, "destination_port_selects_the_filter_chain")),
    (
        "envoy.config.listener.v3.Listener.listener_filters",
        Effect(LISTENER, "sni_selects_tcp_proxy_chain_exact_before_wildcard"),
    ),
    ("envoy.config.listener.v3.Listener.stat_prefix", Effect(LISTENER, "listener_stat_prefix_keys_the_listener_stats")),
    ("envoy.config.listener.v3.Listener.metadata", METADATA),
    (
        "envoy.config.listener.v3.Listener.traffic_direction",
        Informational("Envoy uses it for stats and tracing tags (and original destination on Windows); none apply here"),
    ),
    (
        "envoy.config.listener.v3.Listener.enable_reuse_port",
        Effect(LISTENER, "enable_reuse_port_lets_another_socket_share_the_listener_port"),
    ),
    (
        "envoy.config.listener.v3.Listener.use_original_dst",
        Effect("tests/tests/mesh.rs", "control_plane_configures_sidecars_and_routes_captured_traffic"),
    ),
    ("envoy.config.listener.v3.ListenerFilter.name", NAMED_EXTENSION),
    (
        "envoy.config.listener.v3.ListenerFilter.typed_config",
        Effect(LISTENER, "sni_selects_tcp_proxy_chain_exact_before_wildcard"),
    ),
    ("envoy.config.listener.v3.FilterChain.filter_chain_match", Effect(LISTENER, "destination_port_selects_the_filter_chain")),
    ("envoy.config.listener.v3.FilterChain.filters", Effect(LISTENER, "destination_port_selects_the_filter_chain")),
    (
        "envoy.config.listener.v3.FilterChain.name",
        Informational("labels the chain (logs, config_dump); chains are selected by filter_chain_match only"),
    ),
    ("envoy.config.listener.v3.FilterChain.metadata", METADATA),
    (
        "envoy.config.listener.v3.FilterChainMatch.destination_port",
        Effect(LISTENER, "destination_port_selects_the_filter_chain"),
    ),
    (
        "envoy.config.listener.v3.FilterChainMatch.server_names",
        Effect(LISTENER, "sni_selects_tcp_proxy_chain_exact_before_wildcard"),
    ),
    (
        "envoy.config.listener.v3.FilterChainMatch.transport_protocol",
        Effect(LISTENER, "transport_protocol_separates_tls_from_plaintext"),
    ),
    (
        "envoy.config.listener.v3.FilterChainMatch.application_protocols",
        Effect("proxy/src/listener/filter_chain.rs", "application_protocols_match_the_offered_alpn"),
    ),
    ("envoy.config.listener.v3.Filter.name", NAMED_EXTENSION),
    ("envoy.config.listener.v3.Filter.typed_config", JSON_BOOTSTRAP),
    // tcp_proxy.
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.stat_prefix", Effect(FIELDS, "tcp_proxy_stat_prefix_keys_its_stats")),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.cluster", TCP_RELAY),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.weighted_clusters", TCP_WEIGHTED),
    (
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.idle_timeout",
        Effect(FIELDS, "tcp_proxy_idle_timeout_closes_an_idle_connection"),
    ),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.access_log", TCP_RELAY),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.clusters", TCP_WEIGHTED),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight.name", TCP_WEIGHTED),
    ("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight.weight", TCP_WEIGHTED),
    // HTTP connection manager.
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.stat_prefix",
        Effect("tests/tests/admin.rs", "prometheus_counters_count_per_listener_and_per_cluster"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.codec_type",
        Effect(FIELDS, "codec_type_http1_does_not_speak_h2c"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.route_config",
        Effect(ROUTING, "virtual_host_domains_exact_then_suffix_then_prefix_then_any"),
    ),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.rds", XDS_ALL),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http_filters", ROUTE_MATCHES),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.server_name",
        Effect(FIELDS, "server_name_is_the_server_header"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.server_header_transformation",
        Effect(SEMANTICS, "server_header_is_the_proxys_not_the_upstreams"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.use_remote_address",
        Effect(SEMANTICS, "forwarded_headers_follow_use_remote_address"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.xff_num_trusted_hops",
        Effect(SEMANTICS, "xff_num_trusted_hops_picks_the_client_address_from_x_forwarded_for"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.skip_xff_append",
        Effect(HEADERS, "skip_xff_append_leaves_x_forwarded_for_as_it_came"),
    ),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.generate_request_id", REQUEST_ID),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.preserve_external_request_id",
        REQUEST_ID,
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.request_headers_timeout",
        Effect(FIELDS, "request_headers_timeout_drops_a_request_whose_headers_never_end"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.max_request_headers_kb",
        Effect("tests/tests/bad_requests.rs", "headers_over_the_configured_max_request_headers_kb_get_431"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.upgrade_configs",
        Effect(UPGRADES, "websocket_upgrade_is_tunnelled_when_configured"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.access_log",
        Effect(ROUTING, "no_route_returns_404_with_nr_flag"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.common_http_protocol_options",
        Effect(PROTOCOLS, "idle_timeout_closes_an_idle_connection_but_not_one_with_a_request_in_flight"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http_protocol_options",
        EMPTY_H1_OPTIONS,
    ),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http2_protocol_options", H2_DOWNSTREAM),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig.upgrade_type",
        Effect(UPGRADES, "websocket_upgrade_is_tunnelled_when_configured"),
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig.enabled",
        Effect(FIELDS, "upgrade_config_enabled_false_turns_the_upgrade_off"),
    ),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.name", NAMED_EXTENSION),
    ("envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter.typed_config", ROUTE_MATCHES),
    (
        "envoy.extensions.filters.http.router.v3.Router.suppress_envoy_headers",
        Informational(
            "only true can be set (a proto3 bool), and it asks for no x-envoy-* headers: outrigger adds none anyway",
        ),
    ),
    (
        "envoy.extensions.filters.http.router.v3.Router.respect_expected_rq_timeout",
        Effect("tests/tests/timeouts.rs", "timeout_headers_from_trusted_callers_set_the_timeout_and_never_reach_the_upstream"),
    ),
    ("envoy.config.accesslog.v3.AccessLog.name", Informational("a label; the logger is selected by typed_config")),
    ("envoy.config.accesslog.v3.AccessLog.typed_config", Effect(ROUTING, "no_route_returns_404_with_nr_flag")),
    ("envoy.extensions.access_loggers.file.v3.FileAccessLog.path", Effect(FIELDS, "file_access_log_writes_to_its_path")),
    // Routes.
    ("envoy.config.route.v3.RouteConfiguration.name", XDS_ALL),
    ("envoy.config.route.v3.RouteConfiguration.virtual_hosts", Effect(ROUTING, "virtual_host_domains_exact_then_suffix_then_prefix_then_any")),
    (
        "envoy.config.route.v3.RouteConfiguration.validate_clusters",
        Effect(TRANSLATE, "validate_clusters_decides_whether_static_routes_may_name_missing_clusters"),
    ),
    ("envoy.config.route.v3.VirtualHost.name", Informational("labels the virtual host (config_dump); hosts are chosen by domains")),
    ("envoy.config.route.v3.VirtualHost.domains", Effect(ROUTING, "virtual_host_domains_exact_then_suffix_then_prefix_then_any")),
    ("envoy.config.route.v3.VirtualHost.routes", ROUTE_MATCHES),
    ("envoy.config.route.v3.VirtualHost.metadata", METADATA),
    ("envoy.config.route.v3.Route.name", Informational("written to the access log as route_name; matching ignores it")),
    ("envoy.config.route.v3.Route.match", ROUTE_MATCHES),
    ("envoy.config.route.v3.Route.route", ROUTE_MATCHES),
    ("envoy.config.route.v3.Route.redirect", REDIRECTS),
    ("envoy.config.route.v3.Route.direct_response", Effect(ROUTING, "direct_response_answers_without_an_upstream")),
    ("envoy.config.route.v3.Route.metadata", METADATA),
    ("envoy.config.route.v3.RouteMatch.prefix", ROUTE_MATCHES),
    ("envoy.config.route.v3.RouteMatch.path", ROUTE_MATCHES),
    ("envoy.config.route.v3.RouteMatch.safe_regex", ROUTE_MATCHES),
    ("envoy.config.route.v3.RouteMatch.path_separated_prefix", MATCHERS),
    ("envoy.config.route.v3.RouteMatch.connect_matcher", Effect(UPGRADES, "connect_is_terminated_and_piped_to_the_cluster")),
    ("envoy.config.route.v3.RouteMatch.case_sensitive", ROUTE_MATCHES),
    ("envoy.config.route.v3.RouteMatch.headers", ROUTE_MATCHES),
    ("envoy.config.route.v3.RouteMatch.query_parameters", ROUTE_MATCHES),
    ("envoy.config.route.v3.RouteMatch.grpc", MATCHERS),
    ("envoy.config.route.v3.HeaderMatcher.name", ROUTE_MATCHES),
    ("envoy.config.route.v3.HeaderMatcher.exact_match", MATCHERS),
    ("envoy.config.route.v3.HeaderMatcher.prefix_match", MATCHERS),
    ("envoy.config.route.v3.HeaderMatcher.suffix_match", MATCHERS),
    ("envoy.config.route.v3.HeaderMatcher.contains_match", MATCHERS),
    ("envoy.config.route.v3.HeaderMatcher.safe_regex_match", MATCHERS),
    ("envoy.config.route.v3.HeaderMatcher.present_match", MATCHERS),
    ("envoy.config.route.v3.HeaderMatcher.string_match", ROUTE_MATCHES),
    ("envoy.config.route.v3.HeaderMatcher.invert_match", MATCHERS),
    ("envoy.config.route.v3.QueryParameterMatcher.name", ROUTE_MATCHES),
    ("envoy.config.route.v3.QueryParameterMatcher.string_match", ROUTE_MATCHES),
    ("envoy.config.route.v3.QueryParameterMatcher.present_match", MATCHERS),
    ("envoy.type.matcher.v3.StringMatcher.exact", ROUTE_MATCHES),
    ("envoy.type.matcher.v3.StringMatcher.prefix", Effect(MATCHING, "pseudo_headers_method_and_authority_can_be_matched")),
    ("envoy.type.matcher.v3.StringMatcher.suffix", MATCHERS),
    ("envoy.type.matcher.v3.StringMatcher.contains", MATCHERS),
    ("envoy.type.matcher.v3.StringMatcher.safe_regex", MATCHERS),
    ("envoy.type.matcher.v3.StringMatcher.ignore_case", MATCHERS),
    (
        "envoy.type.matcher.v3.RegexMatcher.google_re2",
        Informational("selects RE2, the only engine: the regex crate has RE2's syntax and linear-time matching"),
    ),
    ("envoy.type.matcher.v3.RegexMatcher.regex", ROUTE_MATCHES),
    ("envoy.type.matcher.v3.RegexMatchAndSubstitute.pattern", Effect(ROUTING, "regex_rewrite_substitutes_every_match_in_the_path")),
    (
        "envoy.type.matcher.v3.RegexMatchAndSubstitute.substitution",
        Effect(ROUTING, "regex_rewrite_substitutes_every_match_in_the_path"),
    ),
    ("envoy.config.route.v3.RouteAction.cluster", ROUTE_MATCHES),
    ("envoy.config.route.v3.RouteAction.weighted_clusters", WEIGHTED),
    ("envoy.config.route.v3.RouteAction.timeout", Effect(ROUTING, "route_timeout_returns_504_with_ut_flag")),
    (
        "envoy.config.route.v3.RouteAction.prefix_rewrite",
        Effect(ROUTING, "prefix_rewrite_replaces_the_whole_path_of_a_regex_or_exact_match"),
    ),
    ("envoy.config.route.v3.RouteAction.regex_rewrite", Effect(ROUTING, "regex_rewrite_substitutes_every_match_in_the_path")),
    (
        "envoy.config.route.v3.RouteAction.host_rewrite_literal",
        Effect(ROUTING, "prefix_rewrite_and_host_rewrite_literal_change_what_upstream_sees"),
    ),
    (
        "envoy.config.route.v3.RouteAction.cluster_not_found_response_code",
        Effect(FIELDS, "cluster_not_found_response_code_sets_the_status_for_a_missing_cluster"),
    ),
    ("envoy.config.route.v3.RouteAction.upgrade_configs", Effect(UPGRADES, "connect_is_terminated_and_piped_to_the_cluster")),
    (
        "envoy.config.route.v3.RouteAction.UpgradeConfig.upgrade_type",
        Effect(UPGRADES, "connect_is_terminated_and_piped_to_the_cluster"),
    ),
    (
        "envoy.config.route.v3.RouteAction.UpgradeConfig.connect_config",
        Effect(UPGRADES, "connect_is_terminated_and_piped_to_the_cluster"),
    ),
    ("envoy.config.route.v3.WeightedCluster.clusters", WEIGHTED),
    (
        "envoy.config.route.v3.WeightedCluster.total_weight",
        Effect(ROUTING, "weighted_clusters_total_weight_must_be_what_the_weights_add_up_to"),
    ),
    ("envoy.config.route.v3.WeightedCluster.ClusterWeight.name", WEIGHTED),
    ("envoy.config.route.v3.WeightedCluster.ClusterWeight.weight", WEIGHTED),
    ("envoy.config.route.v3.RedirectAction.https_redirect", REDIRECTS),
    ("envoy.config.route.v3.RedirectAction.scheme_redirect", REDIRECT_MORE),
    ("envoy.config.route.v3.RedirectAction.host_redirect", REDIRECTS),
    ("envoy.config.route.v3.RedirectAction.port_redirect", REDIRECT_MORE),
    ("envoy.config.route.v3.RedirectAction.path_redirect", REDIRECTS),
    ("envoy.config.route.v3.RedirectAction.prefix_rewrite", Effect(ROUTING, "redirect_prefix_rewrite_on_an_exact_path_replaces_the_path")),
    ("envoy.config.route.v3.RedirectAction.response_code", REDIRECTS),
    ("envoy.config.route.v3.RedirectAction.strip_query", REDIRECT_MORE),
    ("envoy.config.route.v3.DirectResponseAction.status", Effect(ROUTING, "direct_response_answers_without_an_upstream")),
    ("envoy.config.route.v3.DirectResponseAction.body", Effect(ROUTING, "direct_response_answers_without_an_upstream")),
    // Clusters and endpoints.
    (
        "envoy.config.cluster.v3.Cluster.name",
        Informational("the cluster's identity: routes, tcp_proxy and EDS refer to it by name; it is not itself behaviour"),
    ),
    ("envoy.config.cluster.v3.Cluster.type", Effect(CLUSTERS, "strict_dns_cluster_resolves_localhost")),
    ("envoy.config.cluster.v3.Cluster.connect_timeout", Effect(FIELDS, "connect_timeout_bounds_the_upstream_connect")),
    (
        "envoy.config.cluster.v3.Cluster.lb_policy",
        Effect(CLUSTERS, "least_request_sends_less_to_the_endpoint_with_requests_in_flight"),
    ),
    ("envoy.config.cluster.v3.Cluster.load_assignment", ROUND_ROBIN),
    ("envoy.config.cluster.v3.Cluster.eds_cluster_config", XDS_ALL),
    (
        "envoy.config.cluster.v3.Cluster.typed_extension_protocol_options",
        Effect(PROTOCOLS, "explicit_http1_cluster_gets_http1_even_from_h2_clients"),
    ),
    ("envoy.config.cluster.v3.Cluster.http2_protocol_options", Effect(TRANSLATE, "deprecated_cluster_http2_tuning_is_refused_by_name")),
    (
        "envoy.config.cluster.v3.Cluster.dns_refresh_rate",
        Effect("proxy/src/upstream/dns.rs", "dns_refresh_rate_sets_how_often_hosts_are_resolved_again"),
    ),
    ("envoy.config.cluster.v3.Cluster.dns_lookup_family", Effect(CLUSTERS, "strict_dns_cluster_resolves_localhost")),
    (
        "envoy.config.cluster.v3.Cluster.least_request_lb_config",
        Effect("proxy/src/upstream/lb.rs", "least_request_avoids_busy_endpoint"),
    ),
    ("envoy.config.cluster.v3.Cluster.metadata", METADATA),
    (
        "envoy.config.cluster.v3.Cluster.LeastRequestLbConfig.choice_count",
        Effect("proxy/src/upstream/lb.rs", "least_request_avoids_busy_endpoint"),
    ),
    ("envoy.config.endpoint.v3.ClusterLoadAssignment.cluster_name", XDS_ALL),
    ("envoy.config.endpoint.v3.ClusterLoadAssignment.endpoints", ROUND_ROBIN),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment.policy",
        Informational("holds only overprovisioning_factor (see there)"),
    ),
    (
        "envoy.config.endpoint.v3.ClusterLoadAssignment.Policy.overprovisioning_factor",
        Effect("proxy/src/translate/resilience_tests.rs", "priorities_localities_and_overprovisioning_compile"),
    ),
    ("envoy.config.endpoint.v3.LocalityLbEndpoints.lb_endpoints", ROUND_ROBIN),
    ("envoy.config.endpoint.v3.LocalityLbEndpoints.locality", Effect("proxy/src/upstream/priority.rs", "localities_get_traffic_by_weight_and_health")),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints.priority",
        Effect("tests/tests/balancing.rs", "priority_failover_sends_traffic_to_the_next_priority_when_the_first_is_down"),
    ),
    (
        "envoy.config.endpoint.v3.LocalityLbEndpoints.load_balancing_weight",
        Effect("proxy/src/upstream/priority.rs", "localities_get_traffic_by_weight_and_health"),
    ),
    ("envoy.config.endpoint.v3.LbEndpoint.endpoint", ROUND_ROBIN),
    (
        "envoy.config.endpoint.v3.LbEndpoint.load_balancing_weight",
        Effect("proxy/src/upstream/lb.rs", "weighted_round_robin_follows_weights_and_interleaves"),
    ),
    ("envoy.config.endpoint.v3.LbEndpoint.metadata", METADATA),
    (
        "envoy.config.endpoint.v3.LbEndpoint.health_status",
        Effect(TRANSLATE, "unhealthy_endpoints_are_left_out_and_other_priorities_refused"),
    ),
    ("envoy.config.endpoint.v3.Endpoint.address", ROUND_ROBIN),
    (
        "envoy.config.endpoint.v3.Endpoint.hostname",
        Informational("Envoy attaches it to the host for auto_host_rewrite and health checks, neither implemented; it routes nothing"),
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.explicit_http_config",
        Effect(PROTOCOLS, "explicit_http1_cluster_gets_http1_even_from_h2_clients"),
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.use_downstream_protocol_config",
        Effect(FIELDS, "use_downstream_protocol_config_follows_the_clients_protocol"),
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.common_http_protocol_options",
        Effect(FIELDS, "upstream_idle_timeout_closes_pooled_connections"),
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig.http_protocol_options",
        Effect(PROTOCOLS, "explicit_http1_cluster_gets_http1_even_from_h2_clients"),
    ),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig.http2_protocol_options",
        Effect(PROTOCOLS, "cluster_with_http2_protocol_options_gets_http2_upstream"),
    ),
    ("envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig.http_protocol_options", EMPTY_H1_OPTIONS),
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig.http2_protocol_options",
        Informational("only empty options are accepted (tuning is refused, see use_downstream_protocol_config_http2_tuning_is_refused_by_name): they change nothing"),
    ),
];

#[test]
fn every_allowed_field_has_its_effect_tested_or_is_informational_with_a_reason() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut allowed = std::collections::BTreeSet::new();
    for (message, fields) in SUPPORTED {
        for field in *fields {
            allowed.insert(format!("{message}.{field}"));
        }
    }
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (key, evidence) in EVIDENCE.iter().chain(resilience::EVIDENCE) {
        if !seen.insert(key.to_string()) {
            problems.push(format!("{key}: listed twice"));
        }
        if !allowed.contains(*key) {
            problems.push(format!("{key}: not an allowed field in SUPPORTED"));
        }
        match evidence {
            Effect(file, test) => match std::fs::read_to_string(root.join(file)) {
                Ok(text) if text.contains(&format!("fn {test}(")) => {}
                Ok(_) => problems.push(format!("{key}: {file} has no fn {test}(")),
                Err(e) => problems.push(format!("{key}: {file}: {e}")),
            },
            Informational(reason) if reason.trim().len() < 10 => problems.push(format!("{key}: no reason given")),
            Informational(_) => {}
        }
    }
    for key in allowed.difference(&seen) {
        problems.push(format!("{key}: allowed in SUPPORTED with neither a test of its effect nor a reason"));
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
