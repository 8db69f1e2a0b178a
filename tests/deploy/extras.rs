//! What users of the fluent-bit and vector charts expect (issue 14, finding 10): extra
//! environment from Secrets and ConfigMaps, extra volumes and mounts, a startup probe.

use std::fs;

use crate::objects::check_objects;
use crate::render::{objects, pods, render, seq, sidecar};
use crate::support::tempdir;

pub fn the_sidecar_takes_env_from_volumes_and_a_startup_probe() {
    let dir = tempdir();
    let values = dir.path().join("extras.yaml");
    fs::write(
        &values,
        "demo: {enabled: true}\n\
         envFrom: [{secretRef: {name: auditrail-env}}]\n\
         extraVolumes: [{name: ca, emptyDir: {sizeLimit: 1Mi}}]\n\
         extraVolumeMounts: [{name: ca, mountPath: /etc/ssl/corporate, readOnly: true}]\n\
         probes: {startup: {enabled: true}}\n",
    )
    .unwrap();
    let objs = objects(&render(Some(&values), &[]));
    check_objects("extras", &objs);
    let pod = &pods(&objs)[0];
    let side = sidecar(&pod.spec).unwrap();
    assert_eq!(side["envFrom"][0]["secretRef"]["name"], "auditrail-env");
    assert!(seq(&side["volumeMounts"])
        .iter()
        .any(|m| m["name"] == "ca" && m["mountPath"] == "/etc/ssl/corporate"));
    assert!(seq(&pod.spec["volumes"])
        .iter()
        .any(|v| v["name"] == "ca" && v["emptyDir"]["sizeLimit"] == "1Mi"));
    let startup = &side["startupProbe"];
    assert_eq!(startup["httpGet"]["path"], "/startupz", "{side}");
    assert_eq!(startup["httpGet"]["port"], "metrics");
    // Off by default: nothing extra.
    let objs = objects(&render(None, &["--set", "demo.enabled=true"]));
    let side = sidecar(&pods(&objs)[0].spec).unwrap();
    assert!(side["envFrom"].is_null() && side["startupProbe"].is_null());
}
