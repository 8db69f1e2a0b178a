//! The shipped alerts and dashboard (`monitoring/`) see what the chart's monitors scrape: the
//! `job` they select is the one the PodMonitor and ServiceMonitor give their targets (the
//! prometheus-operator names a PodMonitor's job `<namespace>/<name>` and a ServiceMonitor's
//! after the Service unless told otherwise), and an `absent()` alert fires when nothing is
//! scraped at all.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::library::render_example_app;
use crate::render::{is_subset, objects, of_kind, pods, render, seq, str_map};
use crate::tools::{chart, repo};

/// The values of `job="…"` matchers in `text`.
fn jobs(text: &str) -> BTreeSet<String> {
    text.split("job=")
        .skip(1)
        .map(|rest| {
            let rest = rest.trim_start_matches('\\').trim_start_matches('"');
            rest.split(['"', '\\']).next().unwrap().to_string()
        })
        .collect()
}

/// The job a monitor's endpoint gives its targets when its relabelings set one.
fn job_of(endpoint: &Value) -> Option<String> {
    seq(&endpoint["relabelings"])
        .iter()
        .rev()
        .filter(|r| r["targetLabel"] == "job")
        .filter(|r| r["action"].is_null() || r["action"] == "replace")
        .find_map(|r| r["replacement"].as_str().map(str::to_string))
}

pub fn the_shipped_alerts_fire_for_the_pods_a_pod_monitor_scrapes() {
    let alerts = fs::read_to_string(repo().join("monitoring/alerts.yaml")).unwrap();
    let dashboard = fs::read_to_string(repo().join("monitoring/grafana-dashboard.json")).unwrap();
    let selected = jobs(&alerts);
    assert_eq!(selected.len(), 1, "the alerts select one job: {selected:?}");
    let job = selected.into_iter().next().unwrap();
    assert!(
        jobs(&dashboard).iter().all(|j| *j == job),
        "the dashboard selects the alerts' job {job}"
    );
    assert!(
        alerts.contains(&format!("absent(up{{job=\"{job}\"}}")),
        "an absent() alert fires when no target of job {job} is scraped"
    );

    let app = objects(&render_example_app(&[]));
    let standalone = objects(&render(
        Some(&chart().join("ci/file-source-values.yaml")),
        &[],
    ));
    let mut seen = 0;
    for (name, objs) in [("example-app", &app), ("file-source", &standalone)] {
        for m in of_kind(objs, "PodMonitor") {
            seen += 1;
            // It selects the application's pods, which carry the label from the include lines.
            let selector = str_map(&m["spec"]["selector"]["matchLabels"]);
            if name == "example-app" {
                assert!(
                    pods(objs)
                        .iter()
                        .any(|p| is_subset(&selector, &str_map(&p.meta["labels"]))),
                    "{name}: the PodMonitor selects the application's pods"
                );
            }
            for e in seq(&m["spec"]["podMetricsEndpoints"]) {
                assert_eq!(job_of(&e), Some(job.clone()), "{name}: PodMonitor job");
            }
        }
        for m in of_kind(objs, "ServiceMonitor") {
            seen += 1;
            for e in seq(&m["spec"]["endpoints"]) {
                assert_eq!(job_of(&e), Some(job.clone()), "{name}: ServiceMonitor job");
            }
        }
    }
    assert!(
        seen >= 3,
        "the PodMonitors and the ServiceMonitor were checked"
    );

    // The README's include lines carry the pod label the PodMonitor selects.
    let readme = fs::read_to_string(chart().join("README.md")).unwrap();
    let snippet = readme
        .split("```yaml")
        .find(|b| b.contains("auditrail.sidecar.podAnnotations"))
        .expect("the README shows the include lines");
    assert!(
        snippet.contains("auditrail.sidecar.podLabels"),
        "the README's include lines omit the pod label the PodMonitor selects"
    );
}
