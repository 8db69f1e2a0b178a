//! Injection without editing each application's chart (issue 14, deliverable 6): the
//! MutatingAdmissionPolicy and its binding in `deploy/injection/`, rendered by
//! `scripts/render-deploy.sh` from the chart's `templates/injection-policy.yaml` with the
//! values `deploy/` comes from, so the sidecar they inject is the one `deploy/deployment.yaml`
//! carries.
//!
//! Not a real API server: none runs here. kubernetes-validate checks the objects against
//! Kubernetes' schemas (v1beta1 from 1.34, v1alpha1 for 1.32 and 1.33); the CEL is not
//! compiled. Its effect is checked by applying the JSON patch the expression produces, mirrored
//! here ([`mirror_patch`]) after checking the expression has exactly those branches, to sample
//! pods, and by reading the container and volumes from the policy's `variables`, which are
//! JSON literals (a JSON value is also a CEL literal).

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::manifests::listing;
use crate::podsecurity::level;
use crate::render::{kind, name, objects, pods, seq, sidecar, str_map};
use crate::support::tempdir;
use crate::tools::{chart, repo, run, tool};

/// The label a pod asks for the sidecar with (`injection.label`).
const LABEL: &str = "auditrail.io/inject";

/// (Kubernetes version, API version) the policy must be valid for: v1beta1 from 1.34 on (and
/// the newest kubernetes-validate knows), v1alpha1 for 1.32.
const VERSIONS: &[(&str, &str)] = &[
    ("1.34.0", "admissionregistration.k8s.io/v1beta1"),
    ("1.37.0", "admissionregistration.k8s.io/v1beta1"),
    ("1.32.0", "admissionregistration.k8s.io/v1alpha1"),
];

fn validate(file: &Path, version: &str) {
    let out = Command::new(tool("kubernetes-validate"))
        .args(["--strict", "-k", version])
        .arg(file)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("INFO") && !l.trim().is_empty())
        .collect();
    assert!(
        out.status.success() && findings.is_empty(),
        "kubernetes-validate {version} on {}:\n{text}",
        file.display()
    );
    for k in [
        "mutatingadmissionpolicy/",
        "mutatingadmissionpolicybinding/",
    ] {
        assert!(
            text.contains(&format!("passed for resource {k}")),
            "kubernetes-validate {version} validated no {k} in {}:\n{text}",
            file.display()
        );
    }
}

/// The committed policy's objects: (policy, binding).
fn committed() -> (Value, Value) {
    let path = repo().join("deploy/injection/policy.yaml");
    assert!(
        path.exists(),
        "deploy/injection/policy.yaml is missing: run `bash scripts/render-deploy.sh`"
    );
    let objs = objects(&fs::read_to_string(path).unwrap());
    let find = |k: &str| {
        objs.iter()
            .find(|o| kind(o) == k)
            .unwrap_or_else(|| panic!("deploy/injection/policy.yaml has a {k}"))
            .clone()
    };
    (
        find("MutatingAdmissionPolicy"),
        find("MutatingAdmissionPolicyBinding"),
    )
}

/// A CEL expression of the policy's `variables`, which the chart writes as a JSON literal.
fn variable(policy: &Value, var: &str) -> Value {
    let v = seq(&policy["spec"]["variables"])
        .into_iter()
        .find(|v| v["name"] == var)
        .unwrap_or_else(|| panic!("the policy has a variable {var}"));
    serde_json::from_str(v["expression"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("variables.{var} is a JSON literal: {e}"))
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The JSON patch the mutation's expression yields for `pod`, after checking that the
/// expression is the one mirrored here.
fn mirror_patch(policy: &Value, pod: &Value) -> Vec<(String, Value)> {
    let mutations = seq(&policy["spec"]["mutations"]);
    assert_eq!(mutations.len(), 1, "one mutation");
    assert_eq!(mutations[0]["patchType"], "JSONPatch");
    let expr = squash(mutations[0]["jsonPatch"]["expression"].as_str().unwrap());
    let side = variable(policy, "sidecar");
    let vols = variable(policy, "volumes");
    let grace = 45;
    let (deployed_meta, _) = deployed_pod();
    let pod_label = str_map(&deployed_meta["labels"])["auditrail/sidecar"].clone();
    let expected = squash(&format!(
        r#"(has(object.spec.initContainers) ?
             [JSONPatch{{op: "add", path: "/spec/initContainers/0", value: variables.sidecar}}] :
             [JSONPatch{{op: "add", path: "/spec/initContainers", value: [variables.sidecar]}}]) +
           (has(object.spec.volumes) ?
             variables.volumes.map(v, JSONPatch{{op: "add", path: "/spec/volumes/-", value: v}}) :
             [JSONPatch{{op: "add", path: "/spec/volumes", value: variables.volumes}}]) +
           [JSONPatch{{op: "add", path: "/metadata/labels/auditrail~1sidecar", value: "{pod_label}"}}] +
           (!has(object.spec.terminationGracePeriodSeconds) || object.spec.terminationGracePeriodSeconds < {grace} ?
             [JSONPatch{{op: "add", path: "/spec/terminationGracePeriodSeconds", value: {grace}}}] : [])"#
    ));
    assert_eq!(expr, expected, "the mutation is the one this test mirrors");

    let spec = &pod["spec"];
    let mut patch = Vec::new();
    if spec["initContainers"].is_null() {
        patch.push(("/spec/initContainers".into(), json!([side])));
    } else {
        patch.push(("/spec/initContainers/0".into(), side));
    }
    if spec["volumes"].is_null() {
        patch.push(("/spec/volumes".into(), vols));
    } else {
        for v in seq(&vols) {
            patch.push(("/spec/volumes/-".into(), v));
        }
    }
    patch.push((
        "/metadata/labels/auditrail~1sidecar".into(),
        json!(pod_label),
    ));
    if spec["terminationGracePeriodSeconds"]
        .as_i64()
        .is_none_or(|g| g < grace)
    {
        patch.push(("/spec/terminationGracePeriodSeconds".into(), json!(grace)));
    }
    patch
}

/// JSON Patch (RFC 6902) `add` of `value` at `path` in `doc`.
fn add(doc: &mut Value, path: &str, value: Value) {
    let mut parts: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let last = parts.pop().unwrap();
    let mut at = doc;
    for p in parts {
        at = match at {
            Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            Value::Object(o) => o.get_mut(&p).unwrap_or_else(|| panic!("{path}: no {p}")),
            _ => panic!("{path}: {p} is a scalar"),
        };
    }
    match at {
        Value::Array(a) if last == "-" => a.push(value),
        Value::Array(a) => a.insert(last.parse().unwrap(), value),
        Value::Object(o) => {
            o.insert(last, value);
        }
        _ => panic!("{path}: not a container"),
    }
}

/// The policy's matchConditions for `pod`, mirrored after checking their text names the label
/// and the container.
fn matches(policy: &Value, pod: &Value) -> bool {
    let conds = seq(&policy["spec"]["matchConditions"]);
    let text = |n: &str| {
        squash(
            conds
                .iter()
                .find(|c| c["name"] == n)
                .unwrap_or_else(|| panic!("matchCondition {n}"))["expression"]
                .as_str()
                .unwrap(),
        )
    };
    assert_eq!(
        text("asks-for-auditrail"),
        format!(
            r#"has(object.metadata.labels) && "{LABEL}" in object.metadata.labels && object.metadata.labels["{LABEL}"] == "true""#
        )
    );
    assert_eq!(
        text("has-no-auditrail-container"),
        r#"!(has(object.spec.initContainers) && object.spec.initContainers.exists(c, c.name == "auditrail")) && !object.spec.containers.exists(c, c.name == "auditrail")"#
    );
    let asks = pod["metadata"]["labels"][LABEL] == "true";
    let carries = seq(&pod["spec"]["initContainers"])
        .iter()
        .chain(seq(&pod["spec"]["containers"]).iter())
        .any(|c| c["name"] == "auditrail");
    asks && !carries
}

/// What admission would make of `pod`: the patched pod, or `pod` unchanged when it does not
/// match.
fn admit(policy: &Value, pod: &Value) -> Value {
    let mut out = pod.clone();
    if matches(policy, pod) {
        for (path, value) in mirror_patch(policy, pod) {
            add(&mut out, &path, value);
        }
    }
    out
}

/// A pod that asks for the sidecar and meets `restricted` by itself.
fn app_pod(labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "shop-", "namespace": "shop", "labels": labels},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "shop:1",
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}}}]
        }
    })
}

/// The demo pod of deploy/deployment.yaml: its sidecar, volumes and grace period are what
/// the chart gives a pod.
fn deployed_pod() -> (Value, Value) {
    let objs = objects(&fs::read_to_string(repo().join("deploy/deployment.yaml")).unwrap());
    let pod = pods(&objs).into_iter().next().expect("deploy/ has a pod");
    (pod.meta, pod.spec)
}

pub fn the_injection_policy_in_deploy_is_a_fresh_render_and_valid() {
    let dir = tempdir();
    run(Command::new("bash")
        .arg(repo().join("scripts/render-deploy.sh"))
        .arg(dir.path())
        .env("HELM", tool("helm")));
    let deploy = repo().join("deploy/injection");
    assert!(
        deploy.is_dir(),
        "deploy/injection/ is missing: run `bash scripts/render-deploy.sh`"
    );
    let fresh_dir = dir.path().join("injection");
    assert_eq!(
        listing(&deploy),
        listing(&fresh_dir),
        "deploy/injection/ files"
    );
    for f in listing(&fresh_dir) {
        assert!(
            fs::read_to_string(fresh_dir.join(&f)).unwrap()
                == fs::read_to_string(deploy.join(&f)).unwrap(),
            "deploy/injection/{f} differs from the chart's render: run `bash scripts/render-deploy.sh`"
        );
    }
    let kustomization = crate::render::yaml(
        "deploy/injection/kustomization.yaml",
        &fs::read_to_string(deploy.join("kustomization.yaml")).unwrap(),
    );
    assert_eq!(kustomization["resources"], json!(["policy.yaml"]));

    // Every API version on the Kubernetes versions that serve it.
    for (k8s, api) in VERSIONS {
        let path = dir.path().join(format!("policy-{k8s}.yaml"));
        let text = run(Command::new(tool("helm"))
            .args(["template", "auditrail"])
            .arg(chart())
            .arg("--values")
            .arg(chart().join("ci/deploy-values.yaml"))
            .args(["--set", "injection.enabled=true", "--set"])
            .arg(format!("injection.apiVersion={api}"))
            .args(["--show-only", "templates/injection-policy.yaml"]));
        fs::write(&path, text).unwrap();
        validate(&path, k8s);
    }
    validate(&deploy.join("policy.yaml"), "1.34.0");

    let (policy, binding) = committed();
    assert_eq!(binding["spec"]["policyName"].as_str(), Some(name(&policy)));
    assert!(policy["metadata"]["namespace"].is_null(), "cluster-scoped");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let rules = seq(&policy["spec"]["matchConstraints"]["resourceRules"]);
    assert_eq!(
        rules,
        vec![
            json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                    "resources": ["pods"]})
        ]
    );
    // Without nativeSidecar the chart refuses to render it (it injects an init container).
    let out = Command::new(tool("helm"))
        .args(["template", "a"])
        .arg(chart())
        .args([
            "--set",
            "injection.enabled=true",
            "--set",
            "nativeSidecar=false",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nativeSidecar: true"));
    // `enabled: false` switches the sidecar off everywhere, injection included.
    let off = run(Command::new(tool("helm"))
        .args(["template", "a"])
        .arg(chart())
        .args(["--set", "injection.enabled=true", "--set", "enabled=false"]));
    assert!(!off.contains("MutatingAdmissionPolicy"), "{off}");
}

pub fn a_pod_labelled_for_injection_gets_the_charts_native_sidecar_and_volumes() {
    let (policy, _) = committed();
    let (deployed_meta, deployed_spec) = deployed_pod();
    let deployed_sidecar = sidecar(&deployed_spec).unwrap();
    let deployed_volumes: Vec<Value> = seq(&deployed_spec["volumes"])
        .into_iter()
        .filter(|v| v["name"].as_str().unwrap().starts_with("auditrail-"))
        .collect();

    // A pod with no init containers, no volumes and the default grace period.
    let pod = admit(&policy, &app_pod(json!({"app": "shop", LABEL: "true"})));
    let spec = &pod["spec"];
    let inits = seq(&spec["initContainers"]);
    assert_eq!(inits.len(), 1);
    assert_eq!(
        inits[0], deployed_sidecar,
        "the injected sidecar is deploy/deployment.yaml's, field for field"
    );
    assert_eq!(inits[0]["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(seq(&spec["volumes"]), deployed_volumes);
    let volume_names: Vec<Value> = seq(&spec["volumes"])
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    for m in seq(&inits[0]["volumeMounts"]) {
        assert!(
            volume_names.contains(&m["name"]),
            "mount {} has its volume",
            m["name"]
        );
    }
    assert_eq!(
        spec["terminationGracePeriodSeconds"], deployed_spec["terminationGracePeriodSeconds"],
        "the grace period covers the drain"
    );
    let labels = str_map(&pod["metadata"]["labels"]);
    let deployed_labels = str_map(&deployed_meta["labels"]);
    assert_eq!(
        labels.get("auditrail/sidecar"),
        deployed_labels.get("auditrail/sidecar")
    );
    assert_eq!(
        pod["spec"]["containers"],
        app_pod(json!({}))["spec"]["containers"]
    );

    // The injected pod's Pod Security level: the file source's hostPath makes it privileged,
    // as the README's table says; the application itself met restricted.
    let before = app_pod(json!({LABEL: "true"}));
    assert_eq!(level(&before["metadata"], &before["spec"]).0, "restricted");
    let (l, why) = level(&pod["metadata"], spec);
    assert_eq!(l, "privileged");
    assert!(
        why.iter().all(|w| w.starts_with("HostPath Volumes:")),
        "{why:?}"
    );

    // A pod that has init containers, volumes and a longer grace period keeps them: the
    // sidecar goes first (it starts before the other init containers), the rest is appended.
    let mut busy = app_pod(json!({LABEL: "true"}));
    busy["spec"]["initContainers"] = json!([{"name": "migrate", "image": "shop:1"}]);
    busy["spec"]["volumes"] = json!([{"name": "tmp", "emptyDir": {}}]);
    busy["spec"]["terminationGracePeriodSeconds"] = json!(120);
    let pod = admit(&policy, &busy);
    let inits = seq(&pod["spec"]["initContainers"]);
    assert_eq!(inits[0]["name"], "auditrail");
    assert_eq!(inits[1]["name"], "migrate");
    let vols = seq(&pod["spec"]["volumes"]);
    assert_eq!(vols[0]["name"], "tmp");
    assert_eq!(vols[1..], deployed_volumes[..]);
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 120);
}

pub fn pods_not_asking_for_the_sidecar_or_already_carrying_it_are_left_alone() {
    let (policy, _) = committed();
    for labels in [json!({"app": "shop"}), json!({LABEL: "false"}), json!(null)] {
        let pod = app_pod(labels.clone());
        assert_eq!(admit(&policy, &pod), pod, "labels {labels}");
    }
    // A pod that already carries it (its chart includes the library) is not given a second.
    let (_, deployed_spec) = deployed_pod();
    let mut pod = app_pod(json!({LABEL: "true"}));
    pod["spec"]["initContainers"] = json!([sidecar(&deployed_spec).unwrap()]);
    assert_eq!(admit(&policy, &pod), pod);
    // The label the policy matches is the chart's `injection.label`.
    let values = crate::render::yaml(
        "values.yaml",
        &fs::read_to_string(chart().join("values.yaml")).unwrap(),
    );
    assert_eq!(values["injection"]["label"], LABEL);
    assert_eq!(
        values["injection"]["enabled"], false,
        "off unless asked for"
    );
}
