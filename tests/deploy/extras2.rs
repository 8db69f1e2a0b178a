//! More of what users of the fluent-bit and vector charts expect (issue 14, finding 10): a
//! ConfigMap they manage themselves, a Guaranteed-QoS resources preset, the shipped alerts as a
//! PrometheusRule, monitor `jobLabel`/relabelings, a NetworkPolicy, `lifecycle` hooks and full
//! probe objects.

use std::fs;

use serde_json::Value;

use crate::objects::check_objects;
use crate::render::{objects, of_kind, pods, render, seq, sidecar};
use crate::support::tempdir;

/// Renders with `values` written to a file, and returns the objects.
fn render_with(values: &str) -> Vec<Value> {
    let dir = tempdir();
    let file = dir.path().join("values.yaml");
    fs::write(&file, values).unwrap();
    objects(&render(Some(&file), &[]))
}

fn annotation(objs: &[Value], key: &str) -> Option<String> {
    pods(objs)[0].meta["annotations"][key]
        .as_str()
        .map(str::to_string)
}

// === 1. existingConfigMap ===

pub fn an_existing_config_map_replaces_the_rendered_one() {
    let defaults = objects(&render(None, &["--set", "demo.enabled=true"]));
    let objs = render_with("demo: {enabled: true}\nexistingConfigMap: shop-audit-config\n");
    assert!(
        of_kind(&objs, "ConfigMap")
            .iter()
            .all(|c| c["data"]["auditrail.yaml"].is_null()),
        "no ConfigMap of the chart's own"
    );
    let pod = &pods(&objs)[0];
    let volume = seq(&pod.spec["volumes"])
        .into_iter()
        .find(|v| v["name"] == "auditrail-config")
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "shop-audit-config");
    // Mounted as a directory (no subPath), so an edit of the ConfigMap reaches the file the
    // binary watches (hot reload).
    let side = sidecar(&pod.spec).unwrap();
    let mount = seq(&side["volumeMounts"])
        .into_iter()
        .find(|m| m["name"] == "auditrail-config")
        .unwrap();
    assert_eq!(mount["mountPath"], "/etc/auditrail");
    assert!(mount["subPath"].is_null());
    // The user's ConfigMap (here the chart's own, renamed) completes the references.
    let mut theirs = of_kind(&defaults, "ConfigMap")[0].clone();
    theirs["metadata"]["name"] = "shop-audit-config".into();
    let mut with_theirs = objs.clone();
    with_theirs.push(theirs);
    check_objects("existingConfigMap", &with_theirs);
    // The checksum annotation still rolls the pods when the ConfigMap changes: it covers the
    // name (and, at install or upgrade, the data helm reads from the cluster).
    let one = annotation(&objs, "checksum/config").expect("checksum/config");
    let other = render_with("demo: {enabled: true}\nexistingConfigMap: shop-audit-config-v2\n");
    assert_ne!(Some(one), annotation(&other, "checksum/config"));
    // With hot reload the binary applies the changes itself.
    let hot = render_with(
        "demo: {enabled: true}\nexistingConfigMap: shop-audit-config\nhotReload: true\n",
    );
    assert!(annotation(&hot, "checksum/config").is_none());
}
