//! The pod as a node runs it (issue 14): who the sidecar runs as and what it can open, what its
//! probes take out of service, when it stops and whether the grace period covers its drain,
//! and which container holds the API token. Each check reads the rendered pods (every
//! scenario, and `helm/example-app` as an application's chart renders them), never a
//! hard-coded copy of the chart.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::library::render_example_app;
use crate::render::{config, containers, objects, of_kind, pods, render, scenarios, seq, sidecar};
use crate::tools::{chart, tool};

/// Where a kubelet mounts a service account token, and where the binary's client reads it.
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The seconds the pod needs beyond the drains themselves (the checkpoint's save, the
/// kubelet's own delays); the chart adds the same margin (`auditrail.requiredGracePeriod`).
const GRACE_MARGIN_SECS: u64 = 5;

/// Every render that has pods: each scenario, and the example application with the file and
/// with the API source.
fn renders() -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = scenarios()
        .into_iter()
        .map(|(n, p)| (n, objects(&render(Some(&p), &[]))))
        .collect();
    out.push(("example-app".into(), objects(&render_example_app(&[]))));
    out.push((
        "example-app, API source".into(),
        objects(&render_example_app(&[
            "--set",
            "auditrail.config.source.kind=kubernetes",
            "--set",
            "auditrail.config.source.container=api",
            "--set",
            "auditrail.config.source.paths=null",
        ])),
    ));
    out
}

/// The user, primary group and supplementary groups a container's process runs with: the
/// container's securityContext, then the pod's, then the image's (65532:65532); the pod's
/// `supplementalGroups` and `fsGroup` are added to every container.
#[derive(Debug)]
struct Identity {
    uid: i64,
    gid: i64,
    groups: Vec<i64>,
}

fn identity(pod_spec: &Value, c: &Value) -> Identity {
    let sc = &c["securityContext"];
    let psc = &pod_spec["securityContext"];
    let pick = |k: &str| sc[k].as_i64().or_else(|| psc[k].as_i64()).unwrap_or(65532);
    let mut groups: Vec<i64> = seq(&psc["supplementalGroups"])
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    groups.extend(psc["fsGroup"].as_i64());
    Identity {
        uid: pick("runAsUser"),
        gid: pick("runAsGroup"),
        groups,
    }
}

/// Whether `id` gets the permission `bit` (4 read, 2 write, 1 search) on a file owned by
/// `owner:group` with `mode`, as the kernel decides it (no capabilities: they are dropped).
fn permits(id: &Identity, owner: i64, group: i64, mode: u32, bit: u32) -> bool {
    if id.uid == owner {
        mode >> 6 & bit == bit
    } else if id.gid == group || id.groups.contains(&group) {
        mode >> 3 & bit == bit
    } else {
        mode & bit == bit
    }
}

/// A humantime duration as the binary reads it (`30s`, `1m 30s`, `500ms`), in whole seconds
/// rounded up.
fn seconds(text: &str) -> u64 {
    let mut ms: u64 = 0;
    for part in text.split_whitespace() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        let n: u64 = digits
            .parse()
            .unwrap_or_else(|_| panic!("duration {text:?}"));
        ms += n * match &part[digits.len()..] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            unit => panic!("duration {text:?}: unit {unit:?}"),
        };
    }
    Duration::from_millis(ms).as_secs() + u64::from(ms % 1000 != 0)
}

/// The grace period the drain on SIGTERM needs with config `cfg`: the source's
/// `drain_timeout` (10 s), then the longest output's (Kafka 30 s, syslog and stdout 10 s), and
/// the margin.
fn drain_needs(cfg: &Value) -> u64 {
    let of = |v: &Value, default: u64| v["drain_timeout"].as_str().map_or(default, seconds);
    let source = of(&cfg["source"], 10);
    let outputs = cfg["outputs"].as_object().cloned().unwrap_or_default();
    let longest = outputs
        .iter()
        .filter(|(_, o)| !o.is_null())
        .map(|(k, o)| of(o, if k == "kafka" { 30 } else { 10 }))
        .max()
        .unwrap_or(0);
    source + longest + GRACE_MARGIN_SECS
}

/// Each pod carrying the sidecar in `renders`, with its render's name, the config and the
/// sidecar; fails when there is none.
fn sidecar_pods(renders: &[(String, Vec<Value>)]) -> Vec<(String, Value, Value, Value)> {
    let mut out = Vec::new();
    for (name, objs) in renders {
        let cfg = config(objs);
        for pod in pods(objs) {
            if let Some(side) = sidecar(&pod.spec) {
                let what = format!("{name}: {}", pod.owner);
                out.push((what, cfg.clone(), pod.spec.clone(), side));
            }
        }
    }
    assert!(!out.is_empty(), "some render has a pod with the sidecar");
    out
}

/// Whether the pod spec mounts the kubelet's pod logs (the file source).
fn mounts_pod_logs(spec: &Value) -> bool {
    seq(&spec["volumes"])
        .iter()
        .any(|v| v["hostPath"]["path"].as_str() == Some("/var/log/pods"))
}

/// `helm template` of the chart with `values` and `extra`: stdout, or the error when it fails.
fn try_render(values: &str, extra: &[&str]) -> Result<String, String> {
    let out = Command::new(tool("helm"))
        .args(["template", "audit", "--namespace", "shop"])
        .arg(chart())
        .arg("--values")
        .arg(chart().join("ci").join(values))
        .args(extra)
        .output()
        .expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// === finding 1: the logs are root:root 0640 ===

pub fn the_sidecar_can_read_root_owned_0640_logs() {
    let mut seen = 0;
    for (what, _, spec, side) in sidecar_pods(&renders()) {
        if !mounts_pod_logs(&spec) {
            continue;
        }
        seen += 1;
        let id = identity(&spec, &side);
        assert_ne!(id.uid, 0, "{what}: the sidecar is not root");
        assert_eq!(
            side["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{what}"
        );
        // containerd: root:root 0640 files in root:root 0755 directories.
        assert!(
            permits(&id, 0, 0, 0o755, 1),
            "{what}: {id:?} enters the log dirs"
        );
        assert!(
            permits(&id, 0, 0, 0o640, 4),
            "{what}: {id:?} cannot open a root:root 0640 log file"
        );
        // The root group is the sidecar's alone: the application's containers keep theirs.
        for c in containers(&spec) {
            if c["name"] == side["name"] {
                continue;
            }
            let app = identity(&spec, &c);
            assert!(
                app.gid != 0 && !app.groups.contains(&0),
                "{what}: container {} runs in group 0: {app:?}",
                c["name"]
            );
        }
    }
    assert!(seen > 0, "some pod reads the log files");
}

// === finding 2: readiness ===

pub fn a_kafka_outage_does_not_take_the_application_out_of_service() {
    for (what, _, _, side) in sidecar_pods(&renders()) {
        // /readyz fails while Kafka is unreachable; the sidecar's readiness is the pod's.
        if let Some(path) = side["readinessProbe"]["httpGet"]["path"].as_str() {
            assert_ne!(
                path, "/readyz",
                "{what}: readiness follows the shipping by default"
            );
            assert_eq!(
                path, "/startupz",
                "{what}: readiness is the sidecar's own start"
            );
        }
        assert_eq!(
            side["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{what}: liveness is the process's"
        );
    }
    // The explicit opt-in of a tenant that must not serve unaudited.
    let objs = objects(&render(
        Some(&chart().join("ci/deploy-values.yaml")),
        &["--set", "probes.readiness.mode=shipping"],
    ));
    let pod = &pods(&objs)[0];
    let side = sidecar(&pod.spec).unwrap();
    assert_eq!(
        side["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz"),
        "probes.readiness.mode=shipping gates the pod on the shipping"
    );
}

// === finding 3: native sidecar and the grace period ===

pub fn the_sidecar_outlives_the_application_and_has_time_to_drain() {
    for (what, cfg, spec, side) in sidecar_pods(&renders()) {
        let name = side["name"].clone();
        assert!(
            seq(&spec["initContainers"])
                .iter()
                .any(|c| c["name"] == name),
            "{what}: a native sidecar (initContainers) by default"
        );
        assert!(
            !seq(&spec["containers"]).iter().any(|c| c["name"] == name),
            "{what}: not also a regular container"
        );
        assert_eq!(side["restartPolicy"].as_str(), Some("Always"), "{what}");
        let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        let needs = drain_needs(&cfg);
        assert!(
            grace >= needs,
            "{what}: terminationGracePeriodSeconds {grace} < the drain's {needs}"
        );
    }
    // Too short a grace period is refused at render time, naming what it must cover.
    let err = try_render(
        "deploy-values.yaml",
        &["--set", "terminationGracePeriodSeconds=30"],
    )
    .expect_err("a 30 s grace period against a 45 s drain must not render");
    assert!(err.contains("drain_timeout"), "{err}");
    // Clusters without native sidecars: a regular container on request.
    let objs = objects(&render(
        Some(&chart().join("ci/deploy-values.yaml")),
        &["--set", "nativeSidecar=false"],
    ));
    let spec = &pods(&objs)[0].spec;
    let side = sidecar(spec).unwrap();
    assert!(side["restartPolicy"].is_null());
    assert!(seq(&spec["containers"])
        .iter()
        .any(|c| c["name"] == side["name"]));
}

// === finding 5: the token is the sidecar's alone ===

pub fn the_application_container_gets_no_api_token() {
    let mut seen = 0;
    for (name, objs) in renders() {
        if of_kind(&objs, "Role").is_empty() {
            continue;
        }
        for pod in pods(&objs) {
            let Some(side) = sidecar(&pod.spec) else {
                continue;
            };
            seen += 1;
            let what = format!("{name}: {}", pod.owner);
            assert_eq!(
                pod.spec["automountServiceAccountToken"].as_bool(),
                Some(false),
                "{what}: the kubelet mounts the token into every container"
            );
            let token_volumes: Vec<String> = seq(&pod.spec["volumes"])
                .iter()
                .filter(|v| {
                    seq(&v["projected"]["sources"])
                        .iter()
                        .any(|s| !s["serviceAccountToken"].is_null())
                })
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect();
            for c in containers(&pod.spec) {
                let mounted: Vec<Value> = seq(&c["volumeMounts"])
                    .into_iter()
                    .filter(|m| token_volumes.iter().any(|t| m["name"] == t.as_str()))
                    .collect();
                if c["name"] == side["name"] {
                    assert_eq!(mounted.len(), 1, "{what}: the sidecar mounts the token");
                    assert_eq!(mounted[0]["mountPath"].as_str(), Some(TOKEN_DIR));
                    assert_eq!(mounted[0]["readOnly"].as_bool(), Some(true));
                } else {
                    assert!(
                        mounted.is_empty(),
                        "{what}: container {} gets the sidecar's token",
                        c["name"]
                    );
                }
            }
        }
    }
    assert!(seen > 0, "some render grants the sidecar API access");
}

// === finding 7: the binary's default enrichment is `auto` ===

pub fn the_sidecar_never_asks_the_api_for_what_rbac_does_not_grant() {
    let mut runs: Vec<(String, Vec<Value>)> =
        vec![("defaults".into(), objects(&render(None, &[])))];
    runs.extend(renders());
    for (name, objs) in runs {
        let cfg = config(&objs);
        // What the binary does without `enrich.kubernetes` (src/enrich: Mode::Auto).
        let mode = cfg["enrich"]["kubernetes"].as_str().unwrap_or("auto");
        let asks_pods = matches!(mode, "api" | "auto");
        let grants_pods = of_kind(&objs, "Role").iter().any(|r| {
            seq(&r["rules"])
                .iter()
                .any(|rule| seq(&rule["resources"]).contains(&Value::from("pods")))
        });
        assert_eq!(
            asks_pods, grants_pods,
            "{name}: enrich.kubernetes {mode:?} reads pods from the API; the Role grants it: {grants_pods}"
        );
    }
}

// === finding 8: checkpoints outside the pod ===

pub fn checkpoints_on_the_node_or_a_claim_are_writable_by_the_sidecar() {
    // hostPath: the node directory is prepared root:0 with mode 2770 (README: the chart's
    // values say how); the kubelet creates each pod's subdirectory (subPathExpr) with the
    // same owner and mode.
    let objs = objects(&render(
        Some(&chart().join("ci/deploy-values.yaml")),
        &["--set", "checkpoints.type=hostPath"],
    ));
    let pod = &pods(&objs)[0];
    let side = sidecar(&pod.spec).unwrap();
    let volume = seq(&pod.spec["volumes"])
        .into_iter()
        .find(|v| v["name"] == "auditrail-checkpoints")
        .unwrap();
    assert_eq!(
        volume["hostPath"]["type"].as_str(),
        Some("DirectoryOrCreate")
    );
    let id = identity(&pod.spec, &side);
    assert!(
        permits(&id, 0, 0, 0o2770, 2) && permits(&id, 0, 0, 0o2770, 1),
        "{id:?} cannot write a root:0 2770 node directory"
    );
    // A claim: the kubelet gives its root the pod's fsGroup (group-writable, setgid), which
    // every container of the pod joins.
    let objs = objects(&render(
        Some(&chart().join("ci/deploy-values.yaml")),
        &[
            "--set",
            "checkpoints.type=persistentVolumeClaim",
            "--set",
            "checkpoints.claimName=auditrail-checkpoints",
        ],
    ));
    let pod = &pods(&objs)[0];
    let side = sidecar(&pod.spec).unwrap();
    let fs_group = pod.spec["securityContext"]["fsGroup"]
        .as_i64()
        .expect("the pod sets fsGroup, which the kubelet applies to the claim");
    let id = identity(&pod.spec, &side);
    assert!(
        permits(&id, 0, fs_group, 0o2770, 2),
        "{id:?} cannot write the claim"
    );
    // One claim for every replica: a ReadWriteOnce claim cannot attach on two nodes.
    let err = try_render(
        "deploy-values.yaml",
        &[
            "--set",
            "checkpoints.type=persistentVolumeClaim",
            "--set",
            "checkpoints.claimName=auditrail-checkpoints",
            "--set",
            "demo.replicas=2",
        ],
    )
    .expect_err("a claim shared by two replicas needs ReadWriteMany, which the chart must be told");
    assert!(err.contains("ReadWriteMany"), "{err}");
}
