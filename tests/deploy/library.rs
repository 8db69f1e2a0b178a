//! The chart as a library: an application's chart (`helm/example-app`) includes auditrail as a
//! dependency and adds the sidecar to its own pods with three lines. Built, linted, rendered
//! and validated like the chart itself, and checked for what it must take from auditrail's
//! chart rather than from the application's (the image version, the ConfigMap, the labels).

use std::fs;
use std::process::Command;

use serde_json::Value;

use crate::objects::check_objects;
use crate::render::{name, objects, of_kind, sidecar, yaml};
use crate::support::tempdir;
use crate::tools::{chart, copy_dir, kubernetes_validate, repo, run, tool};

/// `helm template` of `helm/example-app` (built against this checkout's chart) with the extra
/// arguments `extra`; also lints it strictly.
pub fn render_example_app(extra: &[&str]) -> String {
    let dir = tempdir();
    copy_dir(&chart(), &dir.path().join("helm/auditrail"));
    let app = dir.path().join("helm/example-app");
    copy_dir(&repo().join("helm/example-app"), &app);
    run(Command::new(tool("helm"))
        .args(["dependency", "build"])
        .arg(&app));
    let lint = run(Command::new(tool("helm"))
        .args(["lint", "--strict"])
        .args(extra)
        .arg(&app));
    assert!(!lint.contains("[WARNING]"), "{lint}");
    run(Command::new(tool("helm"))
        .args(["template", "shop", "--namespace", "shop"])
        .args(["--api-versions", "monitoring.coreos.com/v1"])
        .args(extra)
        .arg(&app))
}

pub fn an_application_chart_adds_the_sidecar_with_three_lines() {
    let dir = tempdir();
    let yaml = render_example_app(&[]);
    let file = dir.path().join("example-app.yaml");
    fs::write(&file, &yaml).unwrap();
    kubernetes_validate(&file);
    let objs = objects(&yaml);
    check_objects("example-app", &objs);
    check_what_comes_from_auditrail(&objs);
}

/// The sidecar's image is auditrail's appVersion, its ConfigMap and labels are named after the
/// release's auditrail, and the pod is rolled on config changes and scraped by a PodMonitor.
fn check_what_comes_from_auditrail(objs: &[Value]) {
    let d = of_kind(objs, "Deployment")[0];
    let spec = &d["spec"]["template"]["spec"];
    let side = sidecar(spec).expect("the application's pod carries the sidecar");
    let chart_yaml: Value = yaml(
        "Chart.yaml",
        &fs::read_to_string(chart().join("Chart.yaml")).unwrap(),
    );
    let app_version = chart_yaml["appVersion"].as_str().unwrap().to_string();
    assert_eq!(
        side["image"].as_str(),
        Some(format!("auditrail:{app_version}").as_str()),
        "auditrail's appVersion, not the application's"
    );
    assert!(of_kind(objs, "ConfigMap")
        .iter()
        .any(|c| name(c) == "shop-auditrail"));
    let meta = &d["spec"]["template"]["metadata"];
    assert_eq!(
        meta["labels"]["auditrail/sidecar"].as_str(),
        Some("shop-auditrail")
    );
    assert!(meta["annotations"]["checksum/config"].is_string());
    assert_eq!(of_kind(objs, "PodMonitor").len(), 1);
}
