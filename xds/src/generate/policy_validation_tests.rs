//! Traffic policy that Istio's validation refuses (or that outrigger does not generate) is a
//! load error naming the file, the document, the resource and the field, as `validate` and
//! `serve` report it.
use super::tests::{load_text_dir, WEB};

/// Every error message for `text` (loaded after WEB, so documents count from 1).
fn errors(text: &str) -> String {
    let errs = load_text_dir(&format!("{WEB}---\n{text}")).expect_err("the directory is refused");
    errs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

fn assert_has(all: &str, want: &str) {
    assert!(all.contains(want), "missing {want:?} in:\n{all}");
}

const VS_HEAD: &str =
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: web, namespace: shop }\nspec:\n  hosts: [web]\n  http:\n";
const DR_HEAD: &str =
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: web, namespace: shop }\nspec:\n  host: web\n";

#[test]
fn virtual_service_policy_errors_name_file_document_resource_and_field() {
    let all = errors(&format!(
        "{VS_HEAD}  - route: [{{ destination: {{ host: web }} }}]
    retries: {{ attempts: -1, perTryTimeout: 0.0005s, retryOn: \"5xx,bogus, 503\", retryRemoteLocalities: true }}
    mirror: {{ host: nowhere }}
    mirrorPercentage: {{ value: 150 }}
    fault:
      abort: {{ httpStatus: 700, percentage: {{ value: -1 }} }}
      delay: {{ percentage: {{ value: 10 }} }}
  - route: [{{ destination: {{ host: web }} }}]
    fault: {{}}
    mirrors: [{{ destination: {{ host: elsewhere.example.com }}, percentage: {{ value: 101 }} }}]
    retries: {{ attempts: 0, retryOn: 5xx }}
  - redirect: {{ uri: /x }}
    fault: {{ abort: {{ grpcStatus: NOPE }} }}
    headers: {{ request: {{ set: {{ \":path\": /y, host: a }}, add: {{ \":authority\": b }} }}, response: {{ remove: [host] }} }}
"
    ));
    let at = "config.yaml: document 1 (VirtualService shop/web): spec.http";
    for want in [
        "[0].retries.attempts: -1 must not be negative",
        "[0].retries.perTryTimeout: 500µs must be at least 1ms",
        "[0].retries.retryOn: \"bogus\" is not a retry policy",
        "[0].retries.retryOn: \" 503\" is not a retry policy",
        "[0].retries.retryRemoteLocalities: not supported",
        "[0].mirror.host: \"nowhere\" is not a known service host",
        "[0].mirrorPercentage.value: 150 is not a percentage from 0 to 100",
        "[0].fault.abort.httpStatus: 700 is not in the range 200-599",
        "[0].fault.abort.percentage.value: -1 is not a percentage from 0 to 100",
        "[0].fault.delay.fixedDelay: is required",
        "[1].fault: must have an abort and/or a delay",
        "[1].mirrors[0].destination.host: \"elsewhere.example.com\" is not a known service host",
        "[1].mirrors[0].percentage.value: 101 is not a percentage",
        "[1].retries: perTryTimeout, retryOn or retryRemoteLocalities is set while attempts is 0",
        "[2].fault.abort.grpcStatus: \"NOPE\" is not a gRPC status name",
        "[2].fault: cannot be combined with redirect",
        "[2].headers.request.set.:path: a header name cannot start with ':'",
        "[2].headers.request.add.:authority: the authority is already set by spec.http[2].headers.request.set.host",
        "[2].headers.response.remove: \"host\" cannot be changed here",
    ] {
        assert_has(&all, &format!("{at}{want}"));
    }
}

#[test]
fn destination_rule_policy_errors_name_file_document_resource_and_field() {
    let all = errors(&format!(
        "{DR_HEAD}  trafficPolicy:
    connectionPool:
      tcp: {{ maxConnections: -5, connectTimeout: 0s, tcpKeepalive: {{ probes: 4294967296 }} }}
      http: {{ http2MaxRequests: 3000000000, h2UpgradePolicy: UPGRADE, useClientProtocol: true }}
    outlierDetection: {{ maxEjectionPercent: 101, minHealthPercent: -1, consecutiveLocalOriginFailures: 3 }}
    loadBalancer: {{ consistentHash: {{ httpHeaderName: x, useSourceIp: true, maglev: {{ tableSize: 1000 }}, ringHash: {{}} }} }}
    portLevelSettings:
    - {{ port: {{ number: 8080 }} }}
    - connectionPool: {{}}
  subsets:
  - name: v1
    trafficPolicy:
      loadBalancer: {{ simple: RANDOM, consistentHash: {{ httpCookie: {{ ttl: 1s }} }}, localityLbSetting: {{ failover: [{{ from: a, to: b }}] }} }}
"
    ));
    let at = "config.yaml: document 1 (DestinationRule shop/web): spec.";
    for want in [
        "trafficPolicy.connectionPool.tcp.maxConnections: -5 must not be negative",
        "trafficPolicy.connectionPool.tcp.connectTimeout: 0ns must be at least 1ms",
        "trafficPolicy.connectionPool.tcp.tcpKeepalive.probes: 4294967296 is larger than 4294967295",
        "trafficPolicy.connectionPool.http.http2MaxRequests: 3000000000 is larger than 2147483647",
        "trafficPolicy.connectionPool.http.useClientProtocol: cannot be true when h2UpgradePolicy is UPGRADE",
        "trafficPolicy.outlierDetection.maxEjectionPercent: 101 is not a percentage from 0 to 100",
        "trafficPolicy.outlierDetection.minHealthPercent: -1 is not a percentage from 0 to 100",
        "trafficPolicy.outlierDetection.consecutiveLocalOriginFailures: needs splitExternalLocalOriginErrors: true",
        "trafficPolicy.loadBalancer.consistentHash: only one hash key can be set, found httpHeaderName, useSourceIp",
        "trafficPolicy.loadBalancer.consistentHash: only one of ringHash, maglev and minimumRingSize can be set",
        "trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: 1000 must be a prime number",
        "trafficPolicy.portLevelSettings[0]: needs at least one of loadBalancer, connectionPool, outlierDetection",
        "trafficPolicy.portLevelSettings[1].port: is required",
        "trafficPolicy.portLevelSettings[1].connectionPool: needs at least one of tcp and http",
        "subsets[0].trafficPolicy.loadBalancer: only one of simple and consistentHash can be set",
        "subsets[0].trafficPolicy.loadBalancer.consistentHash.httpCookie.name: is required",
        "subsets[0].trafficPolicy.loadBalancer.localityLbSetting.failover: not supported",
    ] {
        assert_has(&all, &format!("{at}{want}"));
    }
}

#[test]
fn non_integer_counts_and_unparsable_durations_are_refused_at_their_field() {
    let all =
        errors(&format!("{DR_HEAD}  trafficPolicy: {{ connectionPool: {{ tcp: {{ maxConnections: 1.5 }} }} }}\n"));
    assert_has(&all, "(DestinationRule shop/web): spec.trafficPolicy.connectionPool.tcp.maxConnections: invalid type: floating point `1.5`");
    let all = errors(&format!("{DR_HEAD}  trafficPolicy: {{ outlierDetection: {{ interval: soon }} }}\n"));
    assert_has(&all, "(DestinationRule shop/web): spec.trafficPolicy.outlierDetection.interval: \"soon\" is not a duration like 1.5s");
    let all = errors(&format!(
        "{VS_HEAD}  - route: [{{ destination: {{ host: web }} }}]\n    fault: {{ delay: {{ fixedDelay: 1e400s }} }}\n"
    ));
    assert_has(
        &all,
        "(VirtualService shop/web): spec.http[0].fault.delay.fixedDelay: \"1e400s\" is not a duration like 1.5s",
    );
}

#[test]
fn istio_fields_not_generated_are_refused_by_name() {
    // Skipped for now: warm-up (slow start), retry backoff and destination-level headers.
    let all = errors(&format!(
        "{DR_HEAD}  trafficPolicy: {{ loadBalancer: {{ simple: ROUND_ROBIN, warmupDurationSecs: 30s }} }}\n"
    ));
    assert_has(&all, "spec.trafficPolicy.loadBalancer.warmupDurationSecs: unknown field `warmupDurationSecs`");
    let all = errors(&format!(
        "{VS_HEAD}  - route: [{{ destination: {{ host: web }} }}]\n    retries: {{ attempts: 2, backoff: 1s }}\n"
    ));
    assert_has(&all, "spec.http[0].retries.backoff: unknown field `backoff`");
    let all = errors(&format!(
        "{VS_HEAD}  - route: [{{ destination: {{ host: web }}, headers: {{ request: {{ set: {{ a: b }} }} }} }}]\n"
    ));
    assert_has(&all, "spec.http[0].route[0].headers: unknown field `headers`");
    let all =
        errors(&format!("{DR_HEAD}  trafficPolicy: {{ connectionPool: {{ http: {{ maxConcurrentStreams: 8 }} }} }}\n"));
    assert_has(&all, "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams: not supported by the proxy");
}
