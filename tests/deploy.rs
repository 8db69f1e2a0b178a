//! The Helm chart (`helm/auditrail`), the plain manifests rendered from it (`deploy/`), an
//! application chart that includes the sidecar (`helm/example-app`) and the `Dockerfile`,
//! checked with the real tools.
//!
//! There is no Kubernetes cluster and no container engine on our machines; these stand in:
//! - `helm lint --strict` and `helm template` for the defaults and every `ci/*-values.yaml`;
//! - `kubernetes-validate --strict` (Kubernetes' own OpenAPI schemas, offline) on every rendered
//!   object and on `deploy/`, against the oldest Kubernetes the chart supports and the newest
//!   the tool knows. It has no schema for the prometheus-operator CRDs (ServiceMonitor,
//!   PodMonitor): those are checked here field by field against the Service and pods they
//!   select, like every cross-reference a schema cannot see (volume names, ConfigMap and
//!   ServiceAccount names, probe ports, RBAC against what the config needs);
//! - `hadolint` on the Dockerfile;
//! - the real `auditrail` binary with the rendered ConfigMap and the environment the chart
//!   gives the container: `validate`, `check`, and `run` in a directory laid out like the
//!   container's mounts;
//! - `deploy/` compared with a fresh `scripts/render-deploy.sh`, so the two never drift.
//!
//! The tools come from `bash scripts/deploy-tools.sh` (into `$HOME/.local/auditrail-tools/bin`
//! or `$AUDITRAIL_TOOLS/bin`; PATH is searched last). A missing tool fails the test and says so.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value;

/// Kubernetes versions the manifests must be valid for: the chart's minimum (Chart.yaml
/// `kubeVersion`; native sidecars need 1.29) and the newest kubernetes-validate knows.
const KUBE_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];

/// Kinds kubernetes-validate has no schema for (prometheus-operator CRDs); checked here instead.
const CRD_KINDS: &[&str] = &["ServiceMonitor", "PodMonitor"];

/// Scenarios whose config the binary does not accept yet: `source.kind: kubernetes`, `enrich`
/// and `metrics` are being added (issues 4 and 7). Their rendering is still fully checked; move
/// them out of this list once `auditrail validate` accepts them.
const NOT_YET_ACCEPTED_BY_THE_BINARY: &[&str] = &[];

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

const DEADLINE: Duration = Duration::from_secs(60);

// === helpers ===

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    repo().join("helm/auditrail")
}

/// A tool installed by scripts/deploy-tools.sh.
fn tool(name: &str) -> PathBuf {
    let mut dirs = Vec::new();
    if let Some(t) = std::env::var_os("AUDITRAIL_TOOLS") {
        dirs.push(PathBuf::from(t).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/auditrail-tools/bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed (looked in $AUDITRAIL_TOOLS/bin, \
                 ~/.local/auditrail-tools/bin and PATH). Install the deploy tools with:\n\n    \
                 bash scripts/deploy-tools.sh\n"
            )
        })
}

/// Runs `cmd`, fails the test with its output unless it succeeds, returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// The `ci/*-values.yaml` files, by file name.
fn scenarios() -> Vec<(String, PathBuf)> {
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

/// `helm template` of the chart with `values` (none: the defaults), as the cluster would see
/// it with the prometheus-operator CRDs installed.
fn render(values: Option<&Path>, extra: &[&str]) -> String {
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

/// The objects of a multi-document YAML stream.
fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn of_kind<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind(o) == k).collect()
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                    };
                    (k.as_str().unwrap().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

fn is_subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    !small.is_empty() && small.iter().all(|(k, v)| big.get(k) == Some(v))
}

/// Pod templates (of Deployments) and Pods: (owner name, pod metadata, pod spec).
fn pods(objs: &[Value]) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    for o in objs {
        match kind(o) {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => out.push((
                name(o).to_string(),
                o["spec"]["template"]["metadata"].clone(),
                o["spec"]["template"]["spec"].clone(),
            )),
            "Pod" => out.push((
                name(o).to_string(),
                o["metadata"].clone(),
                o["spec"].clone(),
            )),
            _ => {}
        }
    }
    out
}

/// The auditrail container of a pod spec (a regular or a native sidecar).
fn sidecar(spec: &Value) -> Option<Value> {
    seq(&spec["containers"])
        .into_iter()
        .chain(seq(&spec["initContainers"]))
        .find(|c| c["image"].as_str().unwrap_or("").starts_with("auditrail"))
}

/// The config file the ConfigMap holds.
fn config_text(objs: &[Value]) -> String {
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

fn config(objs: &[Value]) -> Value {
    serde_yaml::from_str(&config_text(objs)).expect("the ConfigMap's auditrail.yaml is YAML")
}

/// The container's environment as a process gets it: fieldRefs resolved like a kubelet.
fn container_env(container: &Value) -> Vec<(String, String)> {
    seq(&container["env"])
        .iter()
        .map(|e| {
            let key = e["name"].as_str().unwrap().to_string();
            if let Some(v) = e["value"].as_str() {
                return (key, v.to_string());
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

/// Runs kubernetes-validate on `file` for every version in KUBE_VERSIONS; any error, and any
/// warning other than "no schema" for the CRD kinds, fails the test.
fn kubernetes_validate(file: &Path) {
    for version in KUBE_VERSIONS {
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
            .filter(|l| !l.starts_with("INFO"))
            .filter(|l| {
                !CRD_KINDS.iter().any(|k| {
                    l.starts_with("WARN")
                        && l.contains(&format!("Couldn't find schema for kind {k} "))
                })
            })
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            out.status.success() && findings.is_empty(),
            "kubernetes-validate {version} on {}:\n{}",
            file.display(),
            findings.join("\n")
        );
        assert!(
            text.contains("passed for resource"),
            "kubernetes-validate {version} validated nothing in {}:\n{text}",
            file.display()
        );
    }
}

/// The checks no schema makes: every reference resolves, the sidecar is hardened and wired as
/// the binary expects, RBAC is exactly what the config needs, monitors select what exists.
fn check_objects(scenario: &str, objs: &[Value]) {
    let cfg = config(objs);
    let names_of = |k: &str| -> BTreeSet<String> {
        of_kind(objs, k)
            .iter()
            .map(|o| name(o).to_string())
            .collect()
    };
    let configmaps = names_of("ConfigMap");
    let accounts = names_of("ServiceAccount");

    // Names and label values fit Kubernetes' 63 characters.
    for o in objs {
        assert!(
            name(o).len() <= 63,
            "{scenario}: {} name {:?} is longer than 63",
            kind(o),
            name(o)
        );
        for (k, v) in str_map(&o["metadata"]["labels"]) {
            assert!(
                v.len() <= 63,
                "{scenario}: label {k}={v:?} is longer than 63"
            );
        }
    }

    // What the config needs from the API decides RBAC and the token.
    let source_kind = cfg["source"]["kind"].as_str().unwrap_or("file");
    let enrich = cfg["enrich"]["kubernetes"].as_str().unwrap_or("downward");
    let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
    if matches!(enrich, "api" | "auto") {
        needed.insert(("pods".into(), "get".into()));
        needed.insert(("pods".into(), "watch".into()));
    }
    if source_kind == "kubernetes" {
        needed.insert(("pods/log".into(), "get".into()));
    }
    let mut granted: BTreeSet<(String, String)> = BTreeSet::new();
    for role in of_kind(objs, "Role") {
        for rule in seq(&role["rules"]) {
            assert_eq!(
                seq(&rule["apiGroups"]),
                vec![Value::from("")],
                "{scenario}: core group only"
            );
            for res in seq(&rule["resources"]) {
                for verb in seq(&rule["verbs"]) {
                    granted.insert((
                        res.as_str().unwrap().to_string(),
                        verb.as_str().unwrap().to_string(),
                    ));
                }
            }
        }
    }
    assert_eq!(
        granted, needed,
        "{scenario}: the Role grants exactly what the config needs"
    );
    assert!(
        of_kind(objs, "ClusterRole").is_empty() && of_kind(objs, "ClusterRoleBinding").is_empty(),
        "{scenario}: namespaced RBAC only"
    );
    let roles = names_of("Role");
    let bindings = of_kind(objs, "RoleBinding");
    assert_eq!(
        bindings.len(),
        roles.len(),
        "{scenario}: one RoleBinding per Role"
    );
    for b in &bindings {
        assert!(roles.contains(b["roleRef"]["name"].as_str().unwrap()));
        for s in seq(&b["subjects"]) {
            assert_eq!(s["kind"].as_str(), Some("ServiceAccount"));
            assert_eq!(
                s["namespace"].as_str(),
                Some("shop"),
                "{scenario}: subject namespace"
            );
        }
    }
    for sa in of_kind(objs, "ServiceAccount") {
        assert_eq!(
            sa["automountServiceAccountToken"].as_bool(),
            Some(!needed.is_empty()),
            "{scenario}: the token is mounted only when the API is used"
        );
    }

    // Pods: references resolve; the sidecar is wired as the binary expects.
    let pod_list = pods(objs);
    for (owner, _meta, spec) in &pod_list {
        let volumes: BTreeMap<String, Value> = seq(&spec["volumes"])
            .into_iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v))
            .collect();
        for c in seq(&spec["containers"])
            .into_iter()
            .chain(seq(&spec["initContainers"]))
        {
            for m in seq(&c["volumeMounts"]) {
                let v = m["name"].as_str().unwrap();
                assert!(
                    volumes.contains_key(v),
                    "{scenario}: {owner}: mount of undeclared volume {v}"
                );
            }
            let sc = &c["securityContext"];
            assert_eq!(
                sc["runAsNonRoot"].as_bool(),
                Some(true),
                "{scenario}: {owner}"
            );
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
            assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
            assert_eq!(seq(&sc["capabilities"]["drop"]), vec![Value::from("ALL")]);
            assert_eq!(
                sc["seccompProfile"]["type"].as_str(),
                Some("RuntimeDefault")
            );
            assert!(
                !c["resources"]["limits"]["memory"].is_null(),
                "{scenario}: {owner}: memory limit"
            );
        }
        for v in volumes.values() {
            if let Some(cm) = v["configMap"]["name"].as_str() {
                assert!(
                    configmaps.contains(cm),
                    "{scenario}: {owner}: ConfigMap {cm} is not rendered"
                );
            }
        }
        if let Some(sa) = spec["serviceAccountName"].as_str() {
            assert!(
                sa == "default" || accounts.contains(sa),
                "{scenario}: {owner}: ServiceAccount {sa} is not rendered"
            );
            assert!(
                bindings.iter().all(|b| seq(&b["subjects"])
                    .iter()
                    .any(|s| s["name"].as_str() == Some(sa))),
                "{scenario}: {owner}: the Role is bound to the pod's ServiceAccount {sa}"
            );
        }

        let Some(side) = sidecar(spec) else { continue };
        assert_eq!(
            seq(&side["args"]),
            ["run", "--config", "/etc/auditrail/auditrail.yaml"]
                .map(Value::from)
                .to_vec(),
            "{scenario}: {owner}: the sidecar runs the mounted config"
        );
        let sc = &side["securityContext"];
        assert_eq!(sc["runAsUser"].as_i64(), Some(65532), "the image's user");
        let env: BTreeMap<String, String> = container_env(&side).into_iter().collect();
        for var in [
            "POD_NAME",
            "POD_NAMESPACE",
            "POD_UID",
            "NODE_NAME",
            "POD_IP",
        ] {
            assert!(env.contains_key(var), "{scenario}: {owner}: env {var}");
        }
        let ports: BTreeSet<String> = seq(&side["ports"])
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        for probe in ["livenessProbe", "readinessProbe"] {
            if let Some(port) = side[probe]["httpGet"]["port"].as_str() {
                assert!(ports.contains(port), "{scenario}: {probe} on a named port");
            }
        }
        assert_eq!(
            side["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz")
        );
        assert_eq!(
            side["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz")
        );
        let mounts: BTreeMap<String, Value> = seq(&side["volumeMounts"])
            .into_iter()
            .map(|m| (m["mountPath"].as_str().unwrap().to_string(), m))
            .collect();
        let volume_at = |path: &str| -> &Value {
            let m = mounts
                .get(path)
                .unwrap_or_else(|| panic!("{scenario}: {owner}: nothing mounted at {path}"));
            &volumes[m["name"].as_str().unwrap()]
        };
        // The config as a directory (hot reload sees the ..data swap; subPath would not).
        assert!(!volume_at("/etc/auditrail")["configMap"].is_null());
        assert!(mounts["/etc/auditrail"]["subPath"].is_null());
        let checkpoints = cfg["source"]["checkpoint_dir"]
            .as_str()
            .unwrap_or("/var/lib/auditrail");
        assert!(
            mounts[checkpoints]["readOnly"].as_bool() != Some(true),
            "{scenario}: checkpoints writable"
        );
        let podinfo = volume_at("/etc/podinfo");
        let items: BTreeSet<String> = seq(&podinfo["downwardAPI"]["items"])
            .iter()
            .map(|i| i["path"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            items,
            BTreeSet::from(["annotations", "labels"].map(String::from))
        );
        let host_paths: Vec<&Value> = volumes
            .values()
            .filter(|v| !v["hostPath"].is_null())
            .collect();
        if source_kind == "kubernetes" {
            assert!(host_paths.is_empty(), "{scenario}: API source: no hostPath");
        } else {
            let logs: Vec<&Value> = mounts
                .values()
                .filter(|m| {
                    volumes[m["name"].as_str().unwrap()]["hostPath"]["path"].as_str()
                        == Some("/var/log/pods")
                })
                .collect();
            assert_eq!(logs.len(), 1, "{scenario}: the pod logs are mounted");
            assert_eq!(logs[0]["readOnly"].as_bool(), Some(true));
            // Only this pod's own directory, and the config reads there.
            assert_eq!(
                logs[0]["subPathExpr"].as_str(),
                Some("$(POD_NAMESPACE)_$(POD_NAME)_$(POD_UID)")
            );
            let at = logs[0]["mountPath"].as_str().unwrap();
            for p in seq(&cfg["source"]["paths"]) {
                assert!(
                    p.as_str().unwrap().starts_with(&format!("{at}/")),
                    "{scenario}: source.paths {p:?} must be under the log mount {at}"
                );
            }
        }
        // Kafka secrets: every secret file lies in a mounted Secret.
        for (prop, file) in str_map(&cfg["outputs"]["kafka"]["secret_files"]) {
            let dir = Path::new(&file)
                .parent()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let v = volume_at(&dir);
            assert!(
                !v["secret"]["secretName"].is_null(),
                "{scenario}: secret_files.{prop} ({file}) is not in a mounted Secret"
            );
            assert_eq!(mounts[&dir]["readOnly"].as_bool(), Some(true));
        }
    }

    // The metrics Service, ServiceMonitor and PodMonitor select what exists.
    let pod_labels: Vec<(BTreeMap<String, String>, BTreeSet<String>)> = pod_list
        .iter()
        .map(|(_, meta, spec)| {
            let ports = sidecar(spec)
                .map(|s| {
                    seq(&s["ports"])
                        .iter()
                        .map(|p| p["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (str_map(&meta["labels"]), ports)
        })
        .collect();
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
        let port_names: BTreeSet<String> = seq(&services[0]["spec"]["ports"])
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        for e in seq(&sm["spec"]["endpoints"]) {
            assert!(port_names.contains(e["port"].as_str().unwrap()));
            assert_eq!(e["path"].as_str(), Some("/metrics"));
        }
    }
    for pm in of_kind(objs, "PodMonitor") {
        let selector = str_map(&pm["spec"]["selector"]["matchLabels"]);
        assert!(
            !selector.is_empty(),
            "{scenario}: the PodMonitor selects something"
        );
        for (labels, ports) in &pod_labels {
            if is_subset(&selector, labels) {
                for e in seq(&pm["spec"]["podMetricsEndpoints"]) {
                    assert!(ports.contains(e["port"].as_str().unwrap()));
                }
            }
        }
    }
}

// === the chart ===

#[test]
fn chart_lints_strictly_with_the_defaults_and_every_scenario() {
    let mut runs: Vec<Option<PathBuf>> = vec![None];
    runs.extend(scenarios().into_iter().map(|(_, p)| Some(p)));
    for values in runs {
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

#[test]
fn every_scenario_renders_objects_that_kubernetes_accepts_and_that_fit_together() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs: Vec<(String, Option<PathBuf>)> = vec![("defaults".into(), None)];
    runs.extend(scenarios().into_iter().map(|(n, p)| (n, Some(p))));
    for (scenario, values) in runs {
        let yaml = render(values.as_deref(), &[]);
        let file = dir.path().join(format!("{scenario}.rendered.yaml"));
        fs::write(&file, &yaml).unwrap();
        kubernetes_validate(&file);
        let objs = objects(&yaml);
        check_objects(&scenario, &objs);
        if !pods(&objs)
            .iter()
            .any(|(_, _, spec)| sidecar(spec).is_some())
        {
            // Sidecar mode renders no pod: check the sidecar's wiring in the demo's pod.
            let yaml = render(values.as_deref(), &["--set", "demo.enabled=true"]);
            let file = dir.path().join(format!("{scenario}.with-demo.yaml"));
            fs::write(&file, &yaml).unwrap();
            kubernetes_validate(&file);
            check_objects(&format!("{scenario} with the demo"), &objects(&yaml));
        }
    }
}

#[test]
fn scenarios_render_what_they_promise() {
    let scenario = |n: &str| objects(&render(Some(&chart().join("ci").join(n)), &[]));
    let kinds =
        |objs: &[Value]| -> BTreeSet<String> { objs.iter().map(|o| kind(o).to_string()).collect() };

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

#[test]
fn config_changes_roll_the_pods_unless_hot_reload_applies_them() {
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

#[test]
fn names_and_labels_are_cut_to_63_characters() {
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

#[test]
fn notes_render_for_every_scenario() {
    // `helm template` does not render NOTES.txt and `helm install --dry-run` needs a cluster:
    // render it through `tpl` from a template in a copy of the chart.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("auditrail");
    copy_dir(&chart(), &copy);
    fs::copy(copy.join("templates/NOTES.txt"), copy.join("NOTES.copy")).unwrap();
    fs::write(
        copy.join("templates/zz-notes.yaml"),
        "{{- $notes := tpl (.Files.Get \"NOTES.copy\") . }}\n# {{ $notes | replace \"\\n\" \"\\n# \" }}\n",
    )
    .unwrap();
    let mut runs: Vec<Option<PathBuf>> = vec![None];
    runs.extend(scenarios().into_iter().map(|(_, p)| Some(p)));
    for values in runs {
        let mut cmd = Command::new(tool("helm"));
        cmd.args([
            "template",
            "audit",
            "--show-only",
            "templates/zz-notes.yaml",
        ])
        .arg(&copy);
        if let Some(v) = &values {
            cmd.arg("--values").arg(v);
        }
        let notes = run(&mut cmd);
        assert!(
            notes.contains("Config: ConfigMap ")
                && notes.contains("Source: ")
                && !notes.contains("<no value>"),
            "{values:?}:\n{notes}"
        );
    }
}

#[test]
fn values_are_documented_line_by_line() {
    // Every leaf key of values.yaml has a `# <path> -- <what it does>` comment above it, except
    // inside free-form blocks (auditrail's config, resources and securityContexts are
    // documented by their own references).
    const FREE_FORM: &[&str] = &[
        "config.",
        "resources.",
        "securityContext.",
        "podSecurityContext.",
        "demo.resources.",
    ];
    let text = fs::read_to_string(chart().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut undocumented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some((key, rest)) = trimmed.split_once(':') else {
            continue;
        };
        if key.contains(' ') || key.contains('[') {
            continue; // a continuation line of a flow sequence
        }
        while stack.last().is_some_and(|(d, _)| *d >= indent) {
            stack.pop();
        }
        let path = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain([key])
            .collect::<Vec<_>>()
            .join(".");
        stack.push((indent, key.to_string()));
        let is_leaf = !rest.trim().is_empty();
        if !is_leaf || FREE_FORM.iter().any(|f| path.starts_with(f)) {
            continue;
        }
        let comment: Vec<&str> = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        if !comment
            .iter()
            .any(|c| c.trim_start().starts_with(&format!("# {path} -- ")))
        {
            undocumented.push(path);
        }
    }
    assert!(
        undocumented.is_empty(),
        "values.yaml keys without a `# key -- what it does` line: {undocumented:?}"
    );
}

// === the sidecar library, as an application's chart uses it ===

#[test]
fn an_application_chart_adds_the_sidecar_with_three_lines() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&chart(), &dir.path().join("helm/auditrail"));
    let app = dir.path().join("helm/example-app");
    copy_dir(&repo().join("helm/example-app"), &app);
    run(Command::new(tool("helm"))
        .args(["dependency", "build"])
        .arg(&app));
    let lint = run(Command::new(tool("helm"))
        .args(["lint", "--strict"])
        .arg(&app));
    assert!(!lint.contains("[WARNING]"), "{lint}");
    let yaml = run(Command::new(tool("helm"))
        .args(["template", "shop", "--namespace", "shop"])
        .args(["--api-versions", "monitoring.coreos.com/v1"])
        .arg(&app));
    let file = dir.path().join("example-app.yaml");
    fs::write(&file, &yaml).unwrap();
    kubernetes_validate(&file);
    let objs = objects(&yaml);
    check_objects("example-app", &objs);

    let d = of_kind(&objs, "Deployment")[0];
    let spec = &d["spec"]["template"]["spec"];
    let side = sidecar(spec).expect("the application's pod carries the sidecar");
    let app_version =
        serde_yaml::from_str::<Value>(&fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap()["appVersion"]
            .as_str()
            .unwrap()
            .to_string();
    assert_eq!(
        side["image"].as_str(),
        Some(format!("auditrail:{app_version}").as_str()),
        "auditrail's appVersion, not the application's"
    );
    assert!(of_kind(&objs, "ConfigMap")
        .iter()
        .any(|c| name(c) == "shop-auditrail"));
    let meta = &d["spec"]["template"]["metadata"];
    assert_eq!(
        meta["labels"]["auditrail/sidecar"].as_str(),
        Some("shop-auditrail")
    );
    assert!(meta["annotations"]["checksum/config"].is_string());
    assert_eq!(of_kind(&objs, "PodMonitor").len(), 1);
}

// === deploy/ ===

#[test]
fn deploy_manifests_are_a_fresh_render_of_the_chart_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new("bash")
        .arg(repo().join("scripts/render-deploy.sh"))
        .arg(dir.path())
        .env("HELM", tool("helm")));
    let deploy = repo().join("deploy");
    let listing = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        listing(&deploy),
        listing(dir.path()),
        "deploy/ has other files than a fresh render: run `bash scripts/render-deploy.sh`"
    );
    for f in listing(dir.path()) {
        let fresh = fs::read_to_string(dir.path().join(&f)).unwrap();
        let committed = fs::read_to_string(deploy.join(&f)).unwrap();
        assert!(
            fresh == committed,
            "deploy/{f} differs from the chart's render: run `bash scripts/render-deploy.sh`"
        );
    }

    let kustomization: Value =
        serde_yaml::from_str(&fs::read_to_string(deploy.join("kustomization.yaml")).unwrap())
            .unwrap();
    let listed: BTreeSet<String> = seq(&kustomization["resources"])
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut manifests = listing(&deploy);
    manifests.remove("kustomization.yaml");
    assert_eq!(listed, manifests, "kustomization.yaml lists every manifest");
    for f in ["configmap.yaml", "rbac.yaml", "deployment.yaml"] {
        assert!(manifests.contains(f), "deploy/{f}");
    }

    let mut all = String::new();
    for f in &manifests {
        let path = deploy.join(f);
        kubernetes_validate(&path);
        let text = fs::read_to_string(&path).unwrap();
        all.push_str("---\n");
        all.push_str(&text);
    }
    let objs = objects(&all);
    assert!(
        objs.iter().all(|o| o["metadata"]["namespace"].is_null()),
        "no namespace in deploy/: kustomize sets it"
    );
    // check_objects expects the subject namespace the test renders with; deploy/ has `default`.
    let renamed = all.replace("namespace: default", "namespace: shop");
    check_objects("deploy/", &objects(&renamed));
}

// === the Dockerfile ===

#[test]
fn dockerfile_passes_hadolint_and_its_context_holds_every_declared_target() {
    run(Command::new(tool("hadolint"))
        .arg(repo().join("Dockerfile"))
        .current_dir(repo()));

    // Cargo refuses a manifest whose declared targets are missing, so the build context must
    // carry every directory a [[bench]], [[test]] or [[example]] lives in.
    let manifest = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let dockerfile = fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let ignore = fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let mut needed = vec!["src"];
    for (section, dir) in [
        ("[[bench]]", "benches"),
        ("[[test]]", "tests"),
        ("[[example]]", "examples"),
    ] {
        if manifest.lines().any(|l| l.trim() == section) {
            needed.push(dir);
        }
    }
    if repo().join("build.rs").exists() {
        needed.push("build.rs");
    }
    for dir in needed {
        assert!(
            ignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == format!("!{dir}")),
            ".dockerignore must let {dir} into the build context"
        );
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY ") && l.contains(&format!(" {dir}"))),
            "the Dockerfile must COPY {dir}"
        );
    }
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/auditrail\"]"));
    assert!(dockerfile.contains("USER 65532:65532"));
}

// === the rendered config in the real binary ===

/// Scenarios whose rendered ConfigMap the binary must accept.
fn accepted_scenarios() -> Vec<(String, PathBuf)> {
    scenarios()
        .into_iter()
        .filter(|(n, _)| {
            let skip = NOT_YET_ACCEPTED_BY_THE_BINARY.contains(&n.as_str());
            if skip {
                eprintln!("note: {n} is not run through the binary yet (see NOT_YET_ACCEPTED_BY_THE_BINARY)");
            }
            !skip
        })
        .collect()
}

#[test]
fn the_binary_validates_and_checks_with_every_rendered_config_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs: Vec<(String, Option<PathBuf>)> = vec![("defaults".into(), None)];
    runs.extend(accepted_scenarios().into_iter().map(|(n, p)| (n, Some(p))));
    for (scenario, values) in runs {
        let objs = objects(&render(values.as_deref(), &[]));
        let file = dir.path().join(format!("{scenario}.auditrail.yaml"));
        fs::write(&file, config_text(&objs)).unwrap();
        let env = pods(&objs)
            .iter()
            .find_map(|(_, _, spec)| sidecar(spec))
            .map(|c| container_env(&c))
            .unwrap_or_else(|| {
                // Sidecar mode renders no pod; the library's env is the same in every pod.
                let demo = objects(&render(values.as_deref(), &["--set", "demo.enabled=true"]));
                container_env(&pods(&demo).iter().find_map(|(_, _, s)| sidecar(s)).unwrap())
            });

        let out = Command::new(env!("CARGO_BIN_EXE_auditrail"))
            .arg("validate")
            .arg("--config")
            .arg(&file)
            .env_clear()
            .envs(env.clone())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{scenario}: auditrail validate refused the rendered config:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&file).unwrap()
        );

        let out = Command::new(env!("CARGO_BIN_EXE_auditrail"))
            .arg("check")
            .arg("--config")
            .arg(&file)
            .arg("--input")
            .arg(repo().join("tests/samples/cri-immuta.log"))
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{scenario}: auditrail check failed:\n{stderr}"
        );
        let summary: Json = stderr
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("{scenario}: no summary on stderr:\n{stderr}"));
        // tests/samples/EXPECTED.md: 23 lines, 9 audit records (all Immuta).
        assert_eq!(summary["lines"], 23, "{scenario}: {summary}");
        assert_eq!(summary["audit"], 9, "{scenario}: {summary}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count() as u64,
            summary["shipped"].as_u64().unwrap()
        );
    }
}

#[test]
fn the_demo_application_writes_records_in_every_seed_format() {
    let objs = objects(&render(Some(&chart().join("ci/demo-values.yaml")), &[]));
    let d = of_kind(&objs, "Deployment")[0];
    let app = seq(&d["spec"]["template"]["spec"]["containers"])
        .into_iter()
        .find(|c| c["name"].as_str() == Some("app"))
        .expect("the demo's app container");
    let command: Vec<String> = seq(&app["command"])
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(&command[..2], ["sh", "-c"]);

    // The script as the container runs it, two rounds, no sleeping.
    let lines = run(Command::new("sh")
        .args(&command[1..])
        .env("ROUNDS", "2")
        .env("INTERVAL", "0"));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("demo.log");
    fs::write(&input, &lines).unwrap();
    let config = dir.path().join("auditrail.yaml");
    fs::write(&config, config_text(&objs)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_auditrail"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let formats: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let r: Json = serde_json::from_str(l).unwrap();
            r["headers"]["format"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        formats,
        BTreeSet::from(["immuta", "monolog", "pryv", "sym"].map(String::from)),
        "demo output:\n{lines}"
    );
    let summary: Json = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap();
    // Per round: 5 audit records (Immuta, Sym, monolog JSON and line, Pryv) and 3 ordinary lines
    // (one of them an error whose nested {"level": "audit"} must not count).
    assert_eq!(summary["audit"], 10, "{summary}\n{lines}");
    assert_eq!(summary["ordinary"], 6, "{summary}\n{lines}");
    assert_eq!(summary["invalid"], 0, "{summary}\n{lines}");
}

#[test]
fn the_sidecar_runs_with_the_rendered_config_mounts_and_env() {
    // The demo scenario (stdout output, no Kafka needed), run as the kubelet would run the
    // container: every volume mount becomes a directory under `root`, the ConfigMap's files
    // land in the config mount, the application's log in the pod's log directory, and the
    // rendered args and env are used as they are.
    let objs = objects(&render(Some(&chart().join("ci/demo-values.yaml")), &[]));
    let d = of_kind(&objs, "Deployment")[0];
    let spec = &d["spec"]["template"]["spec"];
    let side = sidecar(spec).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut mount_paths: Vec<String> = seq(&side["volumeMounts"])
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    mount_paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let relocate = |text: &str| -> String {
        // Longest mount first, so that nested mounts keep their place.
        let mut out = text.to_string();
        for p in &mount_paths {
            let to = root.path().join(p.trim_start_matches('/'));
            out = out.replace(p.as_str(), to.to_str().unwrap());
        }
        out
    };
    for p in &mount_paths {
        fs::create_dir_all(root.path().join(p.trim_start_matches('/'))).unwrap();
    }
    // The pod's own network namespace has the port to itself; here, take a free one on loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(&objs);
    let listen = cfg["metrics"]["listen"].as_str().expect("metrics.listen");
    let text = relocate(&config_text(&objs)).replace(listen, &format!("127.0.0.1:{port}"));
    fs::write(root.path().join("etc/auditrail/auditrail.yaml"), text).unwrap();
    let pattern = relocate(cfg["source"]["paths"][0].as_str().unwrap());
    let log_dir = Path::new(&pattern).parent().unwrap().to_path_buf();
    fs::create_dir_all(&log_dir).unwrap();
    fs::copy(
        repo().join("tests/samples/cri-immuta.log"),
        log_dir.join("0.log"),
    )
    .unwrap();

    let args: Vec<String> = seq(&side["args"])
        .iter()
        .map(|a| relocate(a.as_str().unwrap()))
        .collect();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_auditrail"))
            .args(&args)
            .env_clear()
            .envs(container_env(&side))
            .stdout(Stdio::piped())
            .stderr(fs::File::create(root.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let stderr = || fs::read_to_string(root.path().join("stderr.log")).unwrap_or_default();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut records = Vec::new();
    let start = Instant::now();
    while records.len() < 9 && start.elapsed() < DEADLINE {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            records.push(line);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "auditrail exited early ({status}) with the rendered config:\n{}",
                stderr()
            );
        }
    }
    // What the kubelet's probes and Prometheus would ask, on the paths the chart renders.
    for (path, expect) in [
        (
            side["livenessProbe"]["httpGet"]["path"].as_str().unwrap(),
            "ok",
        ),
        ("/metrics", "auditrail_source_lines_total"),
    ] {
        let response = http_get(port, path);
        assert!(
            response.starts_with("HTTP/1.1 200") && response.contains(expect),
            "GET {path}:\n{response}\n{}",
            stderr()
        );
    }
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE * 2 {
            let _ = child.kill();
            panic!("auditrail did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = stderr();
    assert_eq!(
        records.len(),
        9,
        "records shipped from the pod's log:\n{err}"
    );
    assert!(status.success(), "auditrail stopped with {status}:\n{err}");
    for r in &records {
        let r: Json = serde_json::from_str(r).unwrap();
        let file = r["value"]["source"]["file"].as_str().unwrap();
        assert!(file.starts_with(log_dir.to_str().unwrap()), "{file}");
    }
    let checkpoints = relocate(cfg["source"]["checkpoint_dir"].as_str().unwrap());
    assert!(
        Path::new(&checkpoints).join("checkpoints.json").exists(),
        "checkpoints saved in the checkpoint volume"
    );
}

/// A child process that is killed if the test fails before it stopped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A plain HTTP GET on loopback; the whole response, headers included.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let start = Instant::now();
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                write!(
                    s,
                    "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut out = String::new();
                s.read_to_string(&mut out).unwrap();
                return out;
            }
            Err(e) if start.elapsed() > DEADLINE => panic!("connect to :{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}
