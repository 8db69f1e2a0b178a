//! `helm template` of the chart, and the rendered objects read back: the YAML parsed as data,
//! and accessors for what the checks look at (kinds, names, pods, the sidecar container, the
//! config in the ConfigMap, the container's environment as a kubelet resolves it).
//!
//! YAML is read with serde-saphyr into `serde_json::Value`, with the YAML 1.2 core schema
//! the binary's own reader (serde_yaml) applies, so that a value means here what it means to
//! auditrail: see [`yaml_options`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::tools::{chart, run, tool};

/// The scenarios the issue asks for; more may be added.
const REQUIRED_SCENARIOS: &[&str] = &[
    "file-source-values.yaml",
    "api-source-values.yaml",
    "kafka-tls-sasl-values.yaml",
    "demo-values.yaml",
    "deploy-values.yaml",
];

/// The Downward API values a kubelet would give the container, for running the binary here.
const FIELD_VALUES: &[(&str, &str)] = &[
    ("metadata.name", "shop-api-7d9f8c6b5-x2x7k"),
    ("metadata.namespace", "shop"),
    ("metadata.uid", "0b1c9a52-3f4e-4d2a-9e57-1c2d3e4f5a6b"),
    ("spec.nodeName", "node-1"),
    ("status.podIP", "10.1.2.3"),
];

// === scenarios and renders ===

/// The `ci/*-values.yaml` files, by file name.
pub fn scenarios() -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = fs::read_dir(chart().join("ci"))
        .expect("helm/auditrail/ci exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    found.sort();
    let names: BTreeSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    for required in REQUIRED_SCENARIOS {
        assert!(names.contains(required), "ci/{required} is missing");
    }
    found
}

/// The chart's defaults (named "defaults", no values file), then `scenarios`.
pub fn defaults_and(scenarios: Vec<(String, PathBuf)>) -> Vec<(String, Option<PathBuf>)> {
    let mut runs: Vec<(String, Option<PathBuf>)> = vec![("defaults".into(), None)];
    runs.extend(scenarios.into_iter().map(|(n, p)| (n, Some(p))));
    runs
}

/// `helm template` of the chart with `values` (none: the defaults), as the cluster would see
/// it with the prometheus-operator CRDs installed.
pub fn render(values: Option<&Path>, extra: &[&str]) -> String {
    let mut cmd = Command::new(tool("helm"));
    cmd.args(["template", "audit", "--namespace", "shop"])
        .arg(chart())
        .args(["--api-versions", "monitoring.coreos.com/v1"]);
    if let Some(v) = values {
        cmd.arg("--values").arg(v);
    }
    cmd.args(extra);
    run(&mut cmd)
}

// === YAML ===

/// How the tests read YAML: like serde_yaml 0.9, which auditrail reads its config with and
/// these tests used before. serde-saphyr's defaults differ from it on plain scalars the
/// YAML 1.2 core schema leaves as strings: `yes`/`on`/`y` (booleans in YAML 1.1), numbers with
/// a leading zero (the chart renders `defaultMode: 0444`) or with underscores; and on `<<`,
/// which serde_yaml keeps as an ordinary key instead of merging.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        merge_keys: serde_saphyr::MergeKeyPolicy::AsOrdinary,
    }
}

/// The objects of a multi-document YAML stream; empty and null documents (helm's comment-only
/// ones) are left out.
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple_with_options(yaml, yaml_options())
        .unwrap_or_else(|e| panic!("rendered YAML parses: {e}"))
}

/// One YAML document (`what` names it when it does not parse).
pub fn yaml(what: &str, text: &str) -> Value {
    serde_saphyr::from_str_with_options(text, yaml_options())
        .unwrap_or_else(|e| panic!("{what} is YAML: {e}"))
}

// === accessors ===

pub fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

pub fn of_kind<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind(o) == k).collect()
}

/// The names of the objects of kind `k`.
pub fn names_of(objs: &[Value], k: &str) -> BTreeSet<String> {
    of_kind(objs, k)
        .iter()
        .map(|o| name(o).to_string())
        .collect()
}

/// A mapping of strings (labels, annotations, selectors), a scalar that is not a string
/// written as YAML writes it (`true`, `60`, `null`); empty when `v` is not a mapping. (A key
/// that is not a string in the YAML, `1:` or `true:`, arrives here as its text: the objects
/// are JSON values, whose keys are strings.)
pub fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A sequence's items; empty when `v` is not a sequence.
pub fn seq(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

/// Whether the non-empty selector `small` matches the labels `big`.
pub fn is_subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    !small.is_empty() && small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// The names of a container's or a Service's ports.
pub fn port_names(ports: &Value) -> BTreeSet<String> {
    seq(ports)
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// A pod template (of a Deployment, StatefulSet, DaemonSet or Job) or a Pod.
pub struct Pod {
    /// The name of the object the pod belongs to.
    pub owner: String,
    pub meta: Value,
    pub spec: Value,
}

/// Every pod template and Pod of the render.
pub fn pods(objs: &[Value]) -> Vec<Pod> {
    let mut out = Vec::new();
    for o in objs {
        let (meta, spec) = match kind(o) {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => (
                &o["spec"]["template"]["metadata"],
                &o["spec"]["template"]["spec"],
            ),
            "Pod" => (&o["metadata"], &o["spec"]),
            _ => continue,
        };
        out.push(Pod {
            owner: name(o).to_string(),
            meta: meta.clone(),
            spec: spec.clone(),
        });
    }
    out
}

/// The containers of a pod spec: the regular ones, then the init containers.
pub fn containers(spec: &Value) -> Vec<Value> {
    seq(&spec["containers"])
        .into_iter()
        .chain(seq(&spec["initContainers"]))
        .collect()
}

/// The auditrail container of a pod spec (a regular or a native sidecar).
pub fn sidecar(spec: &Value) -> Option<Value> {
    containers(spec)
        .into_iter()
        .find(|c| c["image"].as_str().unwrap_or("").starts_with("auditrail"))
}

/// The config file the ConfigMap holds.
pub fn config_text(objs: &[Value]) -> String {
    let cms: Vec<&Value> = of_kind(objs, "ConfigMap")
        .into_iter()
        .filter(|c| !c["data"]["auditrail.yaml"].is_null())
        .collect();
    assert_eq!(cms.len(), 1, "one ConfigMap holds auditrail.yaml");
    cms[0]["data"]["auditrail.yaml"]
        .as_str()
        .expect("auditrail.yaml is a string")
        .to_string()
}

/// The config file the ConfigMap holds, parsed.
pub fn config(objs: &[Value]) -> Value {
    yaml("the ConfigMap's auditrail.yaml", &config_text(objs))
}

/// `source.kind`, `file` when the config leaves it out.
pub fn source_kind(cfg: &Value) -> &str {
    cfg["source"]["kind"].as_str().unwrap_or("file")
}

/// A resourceFieldRef as the kubelet resolves it (divisor 1): the container's limit in bytes
/// (or millicores rounded up for CPU); without a limit, the node's allocatable (here 8 GiB).
fn resource_value(container: &Value, resource: &str) -> String {
    let (kind, name) = resource
        .split_once('.')
        .unwrap_or_else(|| panic!("resourceFieldRef {resource}"));
    let quantity = &container["resources"][kind][name];
    let Some(q) = quantity
        .as_str()
        .map(str::to_owned)
        .or_else(|| quantity.as_u64().map(|n| n.to_string()))
    else {
        return (8u64 << 30).to_string();
    };
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
            return (n * factor).to_string();
        }
    }
    q.parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {q}"))
        .to_string()
}

/// The container's environment as a process gets it: fieldRefs resolved like a kubelet.
pub fn container_env(container: &Value) -> Vec<(String, String)> {
    seq(&container["env"])
        .iter()
        .map(|e| {
            let key = e["name"].as_str().unwrap().to_string();
            if let Some(v) = e["value"].as_str() {
                return (key, v.to_string());
            }
            if let Some(resource) = e["valueFrom"]["resourceFieldRef"]["resource"].as_str() {
                return (key, resource_value(container, resource));
            }
            let field = e["valueFrom"]["fieldRef"]["fieldPath"]
                .as_str()
                .unwrap_or_else(|| panic!("env {key} is neither a value nor a fieldRef"));
            let value = FIELD_VALUES
                .iter()
                .find(|(f, _)| *f == field)
                .unwrap_or_else(|| panic!("env {key}: unexpected fieldPath {field}"))
                .1;
            (key, value.to_string())
        })
        .collect()
}
