//! The metrics Service, ServiceMonitor and PodMonitor select pods and ports that exist.
//! kubernetes-validate has no schema for the prometheus-operator CRDs, and no schema sees
//! across objects: a selector that matches nothing, or a port name no pod has, renders and
//! validates fine and scrapes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::render::{is_subset, of_kind, pods, port_names, seq, sidecar, str_map};

/// Each pod's labels, and its sidecar's port names (none without a sidecar).
type PodLabels = Vec<(BTreeMap<String, String>, BTreeSet<String>)>;

/// The metrics Service, ServiceMonitor and PodMonitor select what exists.
pub fn check_monitors(scenario: &str, objs: &[Value]) {
    let pod_labels: PodLabels = pods(objs)
        .iter()
        .map(|p| {
            let ports = sidecar(&p.spec)
                .map(|s| port_names(&s["ports"]))
                .unwrap_or_default();
            (str_map(&p.meta["labels"]), ports)
        })
        .collect();
    check_services(scenario, objs, &pod_labels);
    check_service_monitors(scenario, objs);
    check_pod_monitors(scenario, objs, &pod_labels);
}

/// When a pod has the sidecar's ports, every Service selects pods, on ports they all have.
fn check_services(scenario: &str, objs: &[Value], pod_labels: &PodLabels) {
    for svc in of_kind(objs, "Service") {
        let selector = str_map(&svc["spec"]["selector"]);
        if pod_labels.iter().any(|(_, ports)| !ports.is_empty()) {
            let targets: Vec<_> = pod_labels
                .iter()
                .filter(|(labels, _)| is_subset(&selector, labels))
                .collect();
            assert!(
                !targets.is_empty(),
                "{scenario}: the Service selects no pod"
            );
            for p in seq(&svc["spec"]["ports"]) {
                let target = p["targetPort"].as_str().unwrap();
                assert!(targets.iter().all(|(_, ports)| ports.contains(target)));
            }
        }
    }
}

/// Every ServiceMonitor selects one Service and scrapes `/metrics` on its ports.
fn check_service_monitors(scenario: &str, objs: &[Value]) {
    for sm in of_kind(objs, "ServiceMonitor") {
        let selector = str_map(&sm["spec"]["selector"]["matchLabels"]);
        let services: Vec<&Value> = of_kind(objs, "Service")
            .into_iter()
            .filter(|s| is_subset(&selector, &str_map(&s["metadata"]["labels"])))
            .collect();
        assert_eq!(
            services.len(),
            1,
            "{scenario}: the ServiceMonitor selects the Service"
        );
        let ports = port_names(&services[0]["spec"]["ports"]);
        for e in seq(&sm["spec"]["endpoints"]) {
            assert!(ports.contains(e["port"].as_str().unwrap()));
            assert_eq!(e["path"].as_str(), Some("/metrics"));
        }
    }
}

/// Every PodMonitor selects something, and the pods it selects have the ports it scrapes.
fn check_pod_monitors(scenario: &str, objs: &[Value], pod_labels: &PodLabels) {
    for pm in of_kind(objs, "PodMonitor") {
        let selector = str_map(&pm["spec"]["selector"]["matchLabels"]);
        assert!(
            !selector.is_empty(),
            "{scenario}: the PodMonitor selects something"
        );
        for (labels, ports) in pod_labels {
            if is_subset(&selector, labels) {
                for e in seq(&pm["spec"]["podMetricsEndpoints"]) {
                    assert!(ports.contains(e["port"].as_str().unwrap()));
                }
            }
        }
    }
}
