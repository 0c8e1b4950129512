//! Cluster warming, with Envoy's semantics: an EDS cluster is not used until its
//! ClusterLoadAssignment has arrived. Added after initialisation, requests routed to it meanwhile
//! get Envoy's "no cluster" reply (503, flag NC), the clusters already in use keep serving and the
//! proxy stays ready; once the endpoints arrive the same route reaches them. At start-up,
//! initialisation (so `/ready`) waits for the first assignment, at most the initial fetch timeout.
use outrigger_tests::ads::{AdsServer, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use outrigger_tests::client::get_h1;
use outrigger_tests::config::STDOUT_LOG_TYPE;
use outrigger_tests::xds::*;
use outrigger_tests::{eventually, Backend, Proxy, WAIT};
use serde_json::{json, Value};

fn routes(clusters: &[&str]) -> Value {
    let routes: Vec<Value> =
        clusters.iter().map(|c| json!({"match": {"prefix": format!("/{c}")}, "route": {"cluster": c}})).collect();
    json!({"name": "r", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]})
}

fn logged_listener() -> Value {
    let mut l = rds_listener("dyn", "r");
    l["filter_chains"][0]["filters"][0]["typed_config"]["access_log"] =
        json!([{"name": "stdout", "typed_config": {"@type": STDOUT_LOG_TYPE}}]);
    l
}

#[tokio::test]
async fn eds_cluster_whose_endpoints_never_arrived_is_not_used_and_gets_503_nc() {
    let (warm, cold) = (Backend::start("warm"), Backend::start("cold"));
    let ads = AdsServer::start();
    ads.set(CLUSTER, vec![eds_cluster("warm")]);
    ads.set(ENDPOINT, vec![assignment("warm", &[warm.addr])]);
    ads.set(ROUTE, vec![routes(&["warm"])]);
    ads.set(LISTENER, vec![logged_listener()]);
    let p = Proxy::start(&dynamic_bootstrap(ads.addr));
    let addr = p.addr("dyn");
    assert_eq!(get_h1(addr, "x", "/warm", &[]).await.status, 200);

    // A second EDS cluster and a route to it; its ClusterLoadAssignment is never sent.
    let (cds, rds) = ("envoy_xds_update_success_total{type=\"cds\"}", "envoy_xds_update_success_total{type=\"rds\"}");
    let (cds0, rds0) = (p.metric(cds), p.metric(rds));
    ads.set(CLUSTER, vec![eds_cluster("warm"), eds_cluster("cold")]);
    ads.set(ROUTE, vec![routes(&["warm", "cold"])]);
    eventually("the new cluster and routes accepted", WAIT, || {
        (p.metric(cds) > cds0 && p.metric(rds) > rds0).then_some(())
    })
    .await;
    // The route to it exists now (no 404 NR); the cluster is warming, so it is not there to use.
    eventually_status(addr, "/cold", 503).await;
    let log = p.access_log("NC log", |l| l["path"] == "/cold" && l["response_code"] == 503).await;
    assert_eq!(log["response_flags"], "NC", "{log}");
    assert_eq!(cold.requests(), 0);
    let (_, clusters) = p.admin_get("/clusters");
    assert!(!clusters.contains("cold::"), "a warming cluster is listed as in use:\n{clusters}");
    // What was in use keeps serving, and the proxy stays ready.
    assert_eq!(get_h1(addr, "x", "/warm", &[]).await.status, 200);
    assert_eq!(p.admin_get("/ready").0, 200);

    // The endpoints arrive: the same route now reaches them.
    ads.set(ENDPOINT, vec![assignment("warm", &[warm.addr]), assignment("cold", &[cold.addr])]);
    eventually_status(addr, "/cold", 200).await;
    assert_eq!(get_h1(addr, "x", "/cold", &[]).await.header("x-backend"), Some("cold"));
}

/// Polls (bounded) until `path` answers `want`.
async fn eventually_status(addr: std::net::SocketAddr, path: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = get_h1(addr, "x", path, &[]).await.status.as_u16();
        if s == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} still answers {s}, not {want}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The initial fetch timeout's log line (Envoy's default, 15 s).
const TIMED_OUT: &str = "initial fetch timed out";

#[tokio::test]
async fn initialisation_waits_for_the_first_assignment_of_a_warming_eds_cluster() {
    let b = Backend::start("cold");
    let ads = AdsServer::start();
    ads.set(CLUSTER, vec![eds_cluster("cold")]);
    ads.set(ROUTE, vec![routes(&["cold"])]);
    ads.set(LISTENER, vec![logged_listener()]);
    let p = Proxy::start_before_ready(&dynamic_bootstrap(ads.addr));
    // Listeners, clusters and routes are in (the listener is bound), the cluster is warming: as
    // Envoy, the proxy is not initialised, so not ready.
    let (status, body) = p.admin_get("/ready");
    assert_eq!((status, body.as_str()), (503, "PRE_INITIALIZING\n"), "stderr:\n{}", p.stderr());
    assert_eq!(b.requests(), 0);
    ads.set(ENDPOINT, vec![assignment("cold", &[b.addr])]);
    eventually("ready once the assignment arrived", WAIT, || (p.admin_get("/ready").0 == 200).then_some(())).await;
    assert!(!p.stderr().contains(TIMED_OUT), "it was the timeout, not the assignment:\n{}", p.stderr());
    assert_eq!(get_h1(p.addr("dyn"), "x", "/cold", &[]).await.header("x-backend"), Some("cold"));
}

#[tokio::test]
async fn initialisation_goes_on_without_endpoints_that_never_arrive_after_the_initial_fetch_timeout() {
    let ads = AdsServer::start();
    ads.set(CLUSTER, vec![eds_cluster("cold")]);
    ads.set(ROUTE, vec![routes(&["cold"])]);
    ads.set(LISTENER, vec![logged_listener()]);
    let p = Proxy::start_before_ready(&dynamic_bootstrap(ads.addr));
    assert_eq!(p.admin_get("/ready").0, 503);
    // Readiness does not hang on a missing assignment: ready after the (15 s) timeout.
    let bound = std::time::Duration::from_secs(60);
    eventually("ready after the initial fetch timeout", bound, || (p.admin_get("/ready").0 == 200).then_some(())).await;
    assert!(p.stderr().contains(TIMED_OUT), "{}", p.stderr());
    // The cluster still has no endpoints to use.
    assert_eq!(get_h1(p.addr("dyn"), "x", "/cold", &[]).await.status, 503);
}
