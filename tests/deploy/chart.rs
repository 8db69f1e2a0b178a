//! The chart itself, with the real `helm`: it lints strictly, every scenario renders objects
//! Kubernetes accepts and that fit together, each scenario renders what it promises, config
//! changes roll the pods (or are hot-reloaded), and long names are cut to 63 characters.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::process::Command;

use serde_json::Value;

use crate::objects::check_objects;
use crate::render::{
    defaults_and, kind, name, objects, of_kind, pods, render, scenarios, seq, sidecar, str_map,
};
use crate::support::tempdir;
use crate::tools::{chart, kubernetes_validate, run, tool};

pub fn chart_lints_strictly_with_the_defaults_and_every_scenario() {
    for (_, values) in defaults_and(scenarios()) {
        let mut cmd = Command::new(tool("helm"));
        cmd.args(["lint", "--strict"]).arg(chart());
        if let Some(v) = &values {
            cmd.arg("--values").arg(v);
        }
        let out = run(&mut cmd);
        assert!(
            !out.contains("[WARNING]") && !out.contains("[ERROR]"),
            "helm lint {values:?}:\n{out}"
        );
    }
}

pub fn every_scenario_renders_objects_that_kubernetes_accepts_and_that_fit_together() {
    let dir = tempdir();
    for (scenario, values) in defaults_and(scenarios()) {
        let yaml = render(values.as_deref(), &[]);
        let file = dir.path().join(format!("{scenario}.rendered.yaml"));
        fs::write(&file, &yaml).unwrap();
        kubernetes_validate(&file);
        let objs = objects(&yaml);
        check_objects(&scenario, &objs);
        if !pods(&objs).iter().any(|p| sidecar(&p.spec).is_some()) {
            // Sidecar mode renders no pod: check the sidecar's wiring in the demo's pod.
            let yaml = render(values.as_deref(), &["--set", "demo.enabled=true"]);
            let file = dir.path().join(format!("{scenario}.with-demo.yaml"));
            fs::write(&file, &yaml).unwrap();
            kubernetes_validate(&file);
            check_objects(&format!("{scenario} with the demo"), &objects(&yaml));
        }
    }
}

/// The objects of `ci/<n>`.
fn scenario(n: &str) -> Vec<Value> {
    objects(&render(Some(&chart().join("ci").join(n)), &[]))
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter().map(|o| kind(o).to_string()).collect()
}

pub fn scenarios_render_what_they_promise() {
    // Sidecar mode (the defaults): only what the application's pods need from this chart.
    let defaults = objects(&render(None, &[]));
    assert_eq!(kinds(&defaults), BTreeSet::from(["ConfigMap".to_string()]));

    let file = scenario("file-source-values.yaml");
    for k in [
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "ServiceMonitor",
        "PodMonitor",
        "Pod",
    ] {
        assert!(kinds(&file).contains(k), "file source: {k}");
    }
    assert!(
        of_kind(&file, "Role").is_empty(),
        "file source needs no RBAC"
    );
    // Without the CRDs there are no monitors.
    let no_crd = objects(&run(Command::new(tool("helm"))
        .args(["template", "audit"])
        .arg(chart())
        .arg("--values")
        .arg(chart().join("ci/file-source-values.yaml"))));
    assert!(
        of_kind(&no_crd, "ServiceMonitor").is_empty() && of_kind(&no_crd, "PodMonitor").is_empty()
    );

    let api = scenario("api-source-values.yaml");
    assert_eq!(of_kind(&api, "Role").len(), 1);
    assert_eq!(of_kind(&api, "RoleBinding").len(), 1);

    let tls = scenario("kafka-tls-sasl-values.yaml");
    assert!(of_kind(&tls, "Role").is_empty());

    demo_renders_what_it_promises();
}

/// The demo: a Deployment whose pod carries the sidecar natively, and a helm test Pod that
/// scrapes the metrics Service.
fn demo_renders_what_it_promises() {
    let demo = scenario("demo-values.yaml");
    let deployments = of_kind(&demo, "Deployment");
    assert_eq!(deployments.len(), 1, "the demo Deployment");
    let spec = &deployments[0]["spec"]["template"]["spec"];
    let side = sidecar(spec).expect("the demo carries the sidecar");
    assert_eq!(
        side["restartPolicy"].as_str(),
        Some("Always"),
        "a native sidecar"
    );
    let test_pod = of_kind(&demo, "Pod");
    assert_eq!(test_pod.len(), 1);
    assert_eq!(
        test_pod[0]["metadata"]["annotations"]["helm.sh/hook"].as_str(),
        Some("test")
    );
    let cmd = seq(&test_pod[0]["spec"]["containers"][0]["command"]);
    let script = cmd.last().unwrap().as_str().unwrap();
    let svc = of_kind(&demo, "Service");
    assert!(
        script.contains(&format!("http://{}:9464/metrics", name(svc[0]))),
        "the test pod scrapes the Service: {script}"
    );
}

pub fn config_changes_roll_the_pods_unless_hot_reload_applies_them() {
    let demo = chart().join("ci/demo-values.yaml");
    let annotations = |extra: &[&str]| -> BTreeMap<String, String> {
        let objs = objects(&render(Some(&demo), extra));
        let d = of_kind(&objs, "Deployment")[0].clone();
        str_map(&d["spec"]["template"]["metadata"]["annotations"])
    };
    let types_change = ["--set", "config.types.exclude[0]=healthCheck"];
    let source_change = ["--set", "config.source.read_from=end"];

    let base = annotations(&[]);
    let checksum = &base["checksum/config"];
    assert_ne!(&annotations(&types_change)["checksum/config"], checksum);
    assert_ne!(&annotations(&source_change)["checksum/config"], checksum);
    assert_eq!(
        &annotations(&["--set", "logLevel=debug"])["checksum/config"],
        checksum,
        "only the config counts"
    );

    // Hot reload: the per-record stages change in place; the rest still rolls the pods.
    let hot = annotations(&["--set", "hotReload=true"]);
    assert!(!hot.contains_key("checksum/config"));
    let restart = &hot["checksum/config-restart"];
    let with = |more: &[&str]| {
        let mut args = vec!["--set", "hotReload=true"];
        args.extend_from_slice(more);
        annotations(&args)["checksum/config-restart"].clone()
    };
    assert_eq!(
        &with(&types_change),
        restart,
        "a filter change is reloaded, not rolled"
    );
    assert_ne!(
        &with(&source_change),
        restart,
        "a source change rolls the pods"
    );
}

pub fn names_and_labels_are_cut_to_63_characters() {
    let long = "a".repeat(100);
    for set in [
        format!("fullnameOverride={long}"),
        format!("nameOverride={long}"),
    ] {
        let yaml = run(Command::new(tool("helm"))
            .arg("template")
            .arg("r".repeat(53))
            .args(["--namespace", "shop"])
            .arg(chart())
            .arg("--values")
            .arg(chart().join("ci/file-source-values.yaml"))
            .args(["--set", &set, "--set", "demo.enabled=true"]));
        let objs = objects(&yaml);
        for o in &objs {
            assert!(name(o).len() <= 63, "{} {}", kind(o), name(o));
            assert!(!name(o).ends_with('-'));
        }
        check_objects(&set, &objs);
    }
}
