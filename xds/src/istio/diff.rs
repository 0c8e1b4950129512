//! What a reload changed, so a push can be as small as the change: when only endpoints moved
//! (addresses, ports, weights of ServiceEntry endpoints or WorkloadEntries), only the
//! ClusterLoadAssignments of the affected services are regenerated and pushed (Istio's
//! incremental EDS push); anything else regenerates everything.
use super::model::{Metadata, Resolution, ServiceEntry, WorkloadEntry};
use super::Registry;

#[derive(Debug, PartialEq)]
pub enum Change {
    Unchanged,
    /// Indices into the new registry's `service_entries` whose endpoints changed.
    Endpoints(Vec<usize>),
    Full,
}

pub fn classify(old: &Registry, new: &Registry) -> Change {
    if old == new {
        return Change::Unchanged;
    }
    let same_shape = old.virtual_services == new.virtual_services
        && old.destination_rules == new.destination_rules
        && old.sidecars == new.sidecars
        && old.mesh == new.mesh
        && old.service_entries.len() == new.service_entries.len()
        && old.workload_entries.len() == new.workload_entries.len();
    if !same_shape {
        return Change::Full;
    }
    // WorkloadEntries may move, but not change identity or labels (labels pick subsets and say
    // which proxy owns an entry, which shapes its inbound listeners).
    let mut moved_workloads: Vec<&(Metadata, WorkloadEntry)> = Vec::new();
    for (o, n) in old.workload_entries.iter().zip(&new.workload_entries) {
        if o == n {
            continue;
        }
        if !same_meta(&o.0, &n.0) || o.1.labels != n.1.labels {
            return Change::Full;
        }
        moved_workloads.push(n);
    }
    let mut changed = Vec::new();
    for (i, (o, n)) in old.service_entries.iter().zip(&new.service_entries).enumerate() {
        let selects_moved = n.1.workload_selector.as_ref().is_some_and(|sel| {
            moved_workloads.iter().any(|(m, we)| {
                m.namespace == n.0.namespace && sel.labels.iter().all(|(k, v)| we.labels.get(k) == Some(v))
            })
        });
        if o == n {
            if selects_moved {
                if is_dns(&n.1) {
                    return Change::Full;
                }
                changed.push(i);
            }
            continue;
        }
        if !same_meta(&o.0, &n.0) || !same_but_endpoints(&o.1, &n.1) || is_dns(&n.1) {
            return Change::Full;
        }
        changed.push(i);
    }
    Change::Endpoints(changed)
}

/// DNS services carry their endpoints in the cluster itself, not in EDS.
fn is_dns(se: &ServiceEntry) -> bool {
    matches!(se.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
}

/// Same resource (where it was read from may differ: a document can move within its file).
fn same_meta(a: &Metadata, b: &Metadata) -> bool {
    a.name == b.name && a.namespace == b.namespace
}

fn same_but_endpoints(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    let labels = |se: &ServiceEntry| se.endpoints.iter().map(|e| e.labels.clone()).collect::<Vec<_>>();
    ServiceEntry { endpoints: Vec::new(), ..a.clone() } == ServiceEntry { endpoints: Vec::new(), ..b.clone() }
        && labels(a) == labels(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::load::load_text;

    fn reg(yaml: &str) -> Registry {
        let mut reg = Registry::default();
        let mut errors = Vec::new();
        load_text("t.yaml", yaml, &mut reg, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        reg
    }

    fn se(name: &str, addr: &str, extra: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  hosts: [{name}.ns.svc.cluster.local]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: {addr}{extra}}}]\n"
        )
    }

    #[test]
    fn an_address_change_is_an_endpoint_change_of_that_service_only() {
        let old = reg(&[se("a", "10.0.0.1", ""), se("b", "10.0.0.2", "")].join("---\n"));
        let new = reg(&[se("a", "10.0.0.1", ""), se("b", "10.0.0.9", "")].join("---\n"));
        assert_eq!(classify(&old, &new), Change::Endpoints(vec![1]));
        assert_eq!(classify(&old, &old.clone()), Change::Unchanged);
    }

    #[test]
    fn label_host_or_service_set_changes_regenerate_everything() {
        let old = reg(&se("a", "10.0.0.1", ""));
        // New labels can make an endpoint a proxy's own (its inbound listener).
        assert_eq!(classify(&old, &reg(&se("a", "10.0.0.1", ", labels: {app: a}"))), Change::Full);
        assert_eq!(classify(&old, &reg(&se("b", "10.0.0.1", ""))), Change::Full);
        assert_eq!(
            classify(&old, &reg(&[se("a", "10.0.0.1", ""), se("b", "10.0.0.2", "")].join("---\n"))),
            Change::Full
        );
        let dns = se("a", "10.0.0.1", "").replace("STATIC", "DNS");
        assert_eq!(classify(&reg(&dns), &reg(&dns.replace("10.0.0.1", "10.0.0.2"))), Change::Full);
    }

    #[test]
    fn a_moved_workload_entry_changes_the_services_selecting_it() {
        let sel = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [r.ns.svc.cluster.local]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  workloadSelector: {labels: {app: r}}\n";
        let we = |addr: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: r1, namespace: ns}}\nspec: {{address: {addr}, labels: {{app: r}}}}\n")
        };
        let old = reg(&[se("a", "10.0.0.1", ""), sel.to_string(), we("10.0.1.1")].join("---\n"));
        let new = reg(&[se("a", "10.0.0.1", ""), sel.to_string(), we("10.0.1.2")].join("---\n"));
        assert_eq!(classify(&old, &new), Change::Endpoints(vec![1]));
    }
}
