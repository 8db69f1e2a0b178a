//! Pod Security (issue 14, finding 4): which Pod Security Standards level each way of running
//! the sidecar meets, so that a namespace's `pod-security.kubernetes.io/enforce` label tells
//! which source it can use (helm/auditrail/README.md "Pod Security: which source for which
//! namespace", whose table these tests hold to the result).
//!
//! No API server, and so no Pod Security admission controller, can run here: [`violations`]
//! re-implements the checks of the Pod Security Standards,
//! <https://kubernetes.io/docs/concepts/security/pod-security-standards/>
//! (kubernetes/website content/en/docs/concepts/security/pod-security-standards.md), as the
//! admission controller applies them at the `latest` version (k8s.io/pod-security-admission,
//! policy/check_*.go). Each check names its control as that page does. The checker is itself
//! tested on pods that break one control each
//! ([`the_pod_security_checks_reject_each_control_the_standards_name`]), since a check that
//! never fires would report every pod as `restricted`.

use std::collections::BTreeSet;
use std::fs;

use serde_json::{json, Value};

use crate::render::{containers, objects, pods, render, seq, sidecar};
use crate::tools::chart;

/// Capabilities baseline lets a container add (the container runtimes' default set).
const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The "safe" sysctls baseline allows.
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// SELinux types baseline allows (besides none).
const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Volume types restricted allows: the core ones and those defined through PersistentVolumes.
const RESTRICTED_VOLUME_TYPES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every container of the pod spec: containers, initContainers and ephemeralContainers.
fn all_containers(spec: &Value) -> Vec<Value> {
    containers(spec)
        .into_iter()
        .chain(seq(&spec["ephemeralContainers"]))
        .collect()
}

fn cname(c: &Value) -> &str {
    c["name"].as_str().unwrap_or("?")
}

/// What the pod (metadata `meta`, spec `spec`) does that `level` forbids, one line per
/// control broken; empty when the pod meets the level. `restricted` includes `baseline`.
pub fn violations(level: &str, meta: &Value, spec: &Value) -> Vec<String> {
    let mut v = Vec::new();
    if level == "privileged" {
        return v;
    }
    let psc = &spec["securityContext"];
    let cs = all_containers(spec);
    let annotations = meta["annotations"].as_object().cloned().unwrap_or_default();

    // --- baseline ---
    // HostProcess
    if psc["windowsOptions"]["hostProcess"] == true {
        v.push("HostProcess: pod windowsOptions.hostProcess".into());
    }
    for c in &cs {
        if c["securityContext"]["windowsOptions"]["hostProcess"] == true {
            v.push(format!("HostProcess: container {}", cname(c)));
        }
    }
    // Host Namespaces
    for k in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec[k] == true {
            v.push(format!("Host Namespaces: {k}"));
        }
    }
    // Privileged Containers
    for c in &cs {
        if c["securityContext"]["privileged"] == true {
            v.push(format!("Privileged Containers: {}", cname(c)));
        }
    }
    // Capabilities (baseline)
    for c in &cs {
        for cap in seq(&c["securityContext"]["capabilities"]["add"]) {
            let cap = cap.as_str().unwrap_or("");
            if !BASELINE_CAPABILITIES.contains(&cap) {
                v.push(format!("Capabilities: {} adds {cap}", cname(c)));
            }
        }
    }
    // HostPath Volumes
    for vol in seq(&spec["volumes"]) {
        if !vol["hostPath"].is_null() {
            v.push(format!("HostPath Volumes: {}", vol["name"]));
        }
    }
    // Host Ports
    for c in &cs {
        for p in seq(&c["ports"]) {
            if p["hostPort"].as_i64().unwrap_or(0) != 0 {
                v.push(format!(
                    "Host Ports: {} hostPort {}",
                    cname(c),
                    p["hostPort"]
                ));
            }
        }
    }
    // AppArmor: annotations and appArmorProfile (RuntimeDefault or Localhost only)
    for (k, a) in &annotations {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/") {
            let a = a.as_str().unwrap_or("");
            if a != "runtime/default" && !a.starts_with("localhost/") {
                v.push(format!("AppArmor: annotation {k}: {a}"));
            }
        }
    }
    let apparmor_ok = |p: &Value| {
        p.is_null() || matches!(p["type"].as_str(), Some("RuntimeDefault" | "Localhost"))
    };
    if !apparmor_ok(&psc["appArmorProfile"]) {
        v.push("AppArmor: pod appArmorProfile".into());
    }
    for c in &cs {
        if !apparmor_ok(&c["securityContext"]["appArmorProfile"]) {
            v.push(format!("AppArmor: {} appArmorProfile", cname(c)));
        }
    }
    // SELinux: type among the allowed ones, no user, no role
    let selinux_ok = |o: &Value| {
        o.is_null()
            || (o["user"].is_null()
                && o["role"].is_null()
                && o["type"]
                    .as_str()
                    .is_none_or(|t| t.is_empty() || SELINUX_TYPES.contains(&t)))
    };
    if !selinux_ok(&psc["seLinuxOptions"]) {
        v.push("SELinux: pod seLinuxOptions".into());
    }
    for c in &cs {
        if !selinux_ok(&c["securityContext"]["seLinuxOptions"]) {
            v.push(format!("SELinux: {} seLinuxOptions", cname(c)));
        }
    }
    // /proc Mount Type
    for c in &cs {
        let pm = &c["securityContext"]["procMount"];
        if !pm.is_null() && pm != "Default" {
            v.push(format!("/proc Mount Type: {} {pm}", cname(c)));
        }
    }
    // Seccomp (baseline): never Unconfined
    if psc["seccompProfile"]["type"] == "Unconfined" {
        v.push("Seccomp: pod Unconfined".into());
    }
    for c in &cs {
        if c["securityContext"]["seccompProfile"]["type"] == "Unconfined" {
            v.push(format!("Seccomp: {} Unconfined", cname(c)));
        }
    }
    // Sysctls
    for s in seq(&psc["sysctls"]) {
        let n = s["name"].as_str().unwrap_or("");
        if !SAFE_SYSCTLS.contains(&n) {
            v.push(format!("Sysctls: {n}"));
        }
    }
    if level == "baseline" {
        return v;
    }

    // --- restricted ---
    // Volume Types
    for vol in seq(&spec["volumes"]) {
        let types: BTreeSet<String> = vol
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .cloned()
            .collect();
        for t in types {
            if !RESTRICTED_VOLUME_TYPES.contains(&t.as_str()) {
                v.push(format!("Volume Types: {} is {t}", vol["name"]));
            }
        }
    }
    // Privilege Escalation: allowPrivilegeEscalation false in every container
    for c in &cs {
        if c["securityContext"]["allowPrivilegeEscalation"] != false {
            v.push(format!(
                "Privilege Escalation: {} does not set allowPrivilegeEscalation: false",
                cname(c)
            ));
        }
    }
    // Running as Non-root: the pod sets true and no container false, or every container true
    let pod_nonroot = psc["runAsNonRoot"] == true;
    for c in &cs {
        let c_nonroot = &c["securityContext"]["runAsNonRoot"];
        if *c_nonroot == false || (!pod_nonroot && *c_nonroot != true) {
            v.push(format!("Running as Non-root: {}", cname(c)));
        }
    }
    if psc["runAsNonRoot"] == false {
        v.push("Running as Non-root: pod runAsNonRoot false".into());
    }
    // Running as Non-root user: runAsUser never 0
    if psc["runAsUser"] == 0 {
        v.push("Running as Non-root user: pod runAsUser 0".into());
    }
    for c in &cs {
        if c["securityContext"]["runAsUser"] == 0 {
            v.push(format!("Running as Non-root user: {}", cname(c)));
        }
    }
    // Seccomp (restricted): RuntimeDefault or Localhost, on the pod or on every container
    let sec_ok = |p: &Value| matches!(p["type"].as_str(), Some("RuntimeDefault" | "Localhost"));
    let pod_sec = sec_ok(&psc["seccompProfile"]);
    for c in &cs {
        let p = &c["securityContext"]["seccompProfile"];
        if (p.is_null() && !pod_sec) || (!p.is_null() && !sec_ok(p)) {
            v.push(format!(
                "Seccomp: {} has no RuntimeDefault or Localhost profile",
                cname(c)
            ));
        }
    }
    // Capabilities (restricted): drop ALL, add at most NET_BIND_SERVICE
    for c in &cs {
        let caps = &c["securityContext"]["capabilities"];
        if !seq(&caps["drop"]).iter().any(|d| d == "ALL") {
            v.push(format!("Capabilities: {} does not drop ALL", cname(c)));
        }
        for cap in seq(&caps["add"]) {
            if cap != "NET_BIND_SERVICE" {
                v.push(format!("Capabilities: {} adds {cap}", cname(c)));
            }
        }
    }
    v
}

/// The strictest level the pod meets, and what keeps it from the next one (empty for
/// `restricted`).
pub fn level(meta: &Value, spec: &Value) -> (&'static str, Vec<String>) {
    let baseline = violations("baseline", meta, spec);
    if !baseline.is_empty() {
        return ("privileged", baseline);
    }
    let restricted = violations("restricted", meta, spec);
    if !restricted.is_empty() {
        return ("baseline", restricted);
    }
    ("restricted", Vec::new())
}

/// The ways of running the sidecar the README's table lists: its row name, and the `helm
/// template` arguments of the demo (an application pod that meets `restricted` by itself)
/// with the sidecar attached that way.
fn modes() -> Vec<(&'static str, Vec<String>)> {
    let api = chart().join("ci/api-source-values.yaml");
    let api = api.to_string_lossy().into_owned();
    let file = |native: bool| {
        vec![
            "--set".into(),
            "demo.enabled=true".into(),
            "--set".into(),
            format!("nativeSidecar={native}"),
        ]
    };
    let kubernetes = |native: bool| {
        vec![
            "--values".into(),
            api.clone(),
            "--set".into(),
            "demo.enabled=true".into(),
            "--set".into(),
            format!("nativeSidecar={native}"),
        ]
    };
    let mut kubernetes_hostpath_checkpoints = kubernetes(true);
    kubernetes_hostpath_checkpoints.extend(["--set".into(), "checkpoints.type=hostPath".into()]);
    vec![
        ("`source.kind: file`, native sidecar", file(true)),
        ("`source.kind: file`, regular sidecar", file(false)),
        (
            "`source.kind: kubernetes`, native sidecar",
            kubernetes(true),
        ),
        (
            "`source.kind: kubernetes`, regular sidecar",
            kubernetes(false),
        ),
        (
            "`source.kind: kubernetes`, `checkpoints.type: hostPath`",
            kubernetes_hostpath_checkpoints,
        ),
    ]
}

/// The level the README promises for each row of `modes`; a change of level fails here first.
const EXPECTED: &[(&str, &str)] = &[
    ("`source.kind: file`, native sidecar", "privileged"),
    ("`source.kind: file`, regular sidecar", "privileged"),
    ("`source.kind: kubernetes`, native sidecar", "restricted"),
    ("`source.kind: kubernetes`, regular sidecar", "restricted"),
    (
        "`source.kind: kubernetes`, `checkpoints.type: hostPath`",
        "privileged",
    ),
];

/// The demo pod of the render with `args`: (metadata, spec, the sidecar alone in a pod).
fn demo_pod(args: &[String]) -> (Value, Value, Value) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let objs = objects(&render(None, &args));
    let pod = pods(&objs)
        .into_iter()
        .find(|p| p.owner.ends_with("-demo"))
        .expect("the demo Deployment");
    let side = sidecar(&pod.spec).expect("the demo carries the sidecar");
    // What the sidecar brings to an application's pod: its container and volumes, under a pod
    // that sets no securityContext of its own.
    let alone = json!({"containers": [side], "volumes": pod.spec["volumes"]});
    (pod.meta, pod.spec, alone)
}

/// The levels each mode meets: (row, level of the demo pod, level of the sidecar alone,
/// what keeps the pod from the next level).
fn levels() -> Vec<(&'static str, &'static str, &'static str, Vec<String>)> {
    modes()
        .into_iter()
        .map(|(row, args)| {
            let (meta, spec, alone) = demo_pod(&args);
            let (pod_level, why) = level(&meta, &spec);
            let (alone_level, _) = level(&json!({}), &alone);
            (row, pod_level, alone_level, why)
        })
        .collect()
}

pub fn each_source_mode_meets_the_pod_security_level_the_readme_states() {
    let readme = fs::read_to_string(chart().join("README.md")).unwrap();
    let mut table = String::from("\n");
    for (row, pod_level, alone_level, why) in levels() {
        table.push_str(&format!("| {row} | {pod_level} |  ({})\n", why.join("; ")));
        let expected = EXPECTED.iter().find(|(r, _)| *r == row).unwrap().1;
        assert_eq!(
            pod_level, expected,
            "{row}: the pod meets {pod_level}, the README says {expected}: {why:?}"
        );
        assert_eq!(
            alone_level, pod_level,
            "{row}: the sidecar alone meets {alone_level}, the demo pod {pod_level}: the \
             sidecar, not the demo application, must decide the level"
        );
        if pod_level == "privileged" {
            assert!(
                why.iter().all(|w| w.starts_with("HostPath Volumes:")),
                "{row}: only its hostPath volumes keep it from baseline: {why:?}"
            );
        }
        let line = format!("| {row} | {pod_level} |");
        assert!(
            readme.lines().any(|l| l.starts_with(&line)),
            "helm/auditrail/README.md's Pod Security table has no line starting `{line}`"
        );
    }
    eprintln!("Pod Security levels (re-implemented checks, no admission controller):{table}");
}

pub fn the_file_source_needs_a_privileged_namespace_only_for_its_host_path() {
    let (_, args) = modes().into_iter().next().unwrap();
    let (meta, mut spec, _) = demo_pod(&args);
    assert_eq!(level(&meta, &spec).0, "privileged");
    // The same pod with the hostPath swapped for an emptyDir meets restricted: the hostPath
    // is the only reason.
    for vol in spec["volumes"].as_array_mut().unwrap() {
        if !vol["hostPath"].is_null() {
            let name = vol["name"].clone();
            *vol = json!({"name": name, "emptyDir": {}});
        }
    }
    let (l, why) = level(&meta, &spec);
    assert_eq!(l, "restricted", "{why:?}");
    // And the sidecar's `runAsGroup: 0`, which reads the root:root 0640 logs, breaks no
    // control: the Standards check the user, never the group.
    let side = sidecar(&spec).unwrap();
    assert_eq!(side["securityContext"]["runAsGroup"], 0);
}

pub fn the_pod_security_checks_reject_each_control_the_standards_name() {
    let good = || {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "c", "configMap": {"name": "x"}}]
        })
    };
    let meta = json!({});
    assert_eq!(level(&meta, &good()).0, "restricted");
    type Edit = fn(&mut Value);
    let baseline_breaks: &[(&str, Edit)] = &[
        ("HostProcess", |s| {
            s["securityContext"]["windowsOptions"] = json!({"hostProcess": true})
        }),
        ("Host Namespaces", |s| s["hostPID"] = json!(true)),
        ("Privileged Containers", |s| {
            s["containers"][0]["securityContext"]["privileged"] = json!(true)
        }),
        ("Capabilities", |s| {
            s["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"])
        }),
        (
            "HostPath Volumes",
            |s| s["volumes"] = json!([{"name": "h", "hostPath": {"path": "/var/log/pods"}}]),
        ),
        ("Host Ports", |s| {
            s["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 80}])
        }),
        ("AppArmor", |s| {
            s["containers"][0]["securityContext"]["appArmorProfile"] = json!({"type": "Unconfined"})
        }),
        ("SELinux", |s| {
            s["securityContext"]["seLinuxOptions"] = json!({"type": "spc_t"})
        }),
        ("/proc Mount Type", |s| {
            s["containers"][0]["securityContext"]["procMount"] = json!("Unmasked")
        }),
        ("Seccomp", |s| {
            s["containers"][0]["securityContext"]["seccompProfile"] = json!({"type": "Unconfined"})
        }),
        ("Sysctls", |s| {
            s["securityContext"]["sysctls"] = json!([{"name": "kernel.msgmax", "value": "1"}])
        }),
    ];
    let restricted_breaks: &[(&str, Edit)] = &[
        (
            "Volume Types",
            |s| s["volumes"] = json!([{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
        ),
        ("Privilege Escalation", |s| {
            s["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true)
        }),
        ("Running as Non-root", |s| {
            s["securityContext"]["runAsNonRoot"] = Value::Null
        }),
        ("Running as Non-root user", |s| {
            s["containers"][0]["securityContext"]["runAsUser"] = json!(0)
        }),
        ("Seccomp", |s| {
            s["securityContext"]["seccompProfile"] = Value::Null
        }),
        ("Capabilities", |s| {
            s["containers"][0]["securityContext"]["capabilities"] = json!({"drop": ["NET_RAW"]})
        }),
        ("Capabilities", |s| {
            s["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["CHOWN"])
        }),
    ];
    for (expected, breaks) in [
        ("privileged", baseline_breaks),
        ("baseline", restricted_breaks),
    ] {
        for (control, edit) in breaks {
            let mut spec = good();
            edit(&mut spec);
            let (l, why) = level(&meta, &spec);
            assert_eq!(l, expected, "breaking {control}: {why:?}");
            assert!(
                why.iter().any(|w| w.starts_with(&format!("{control}:"))),
                "breaking {control} is reported as such: {why:?}"
            );
        }
    }
    // The allowances: NET_BIND_SERVICE in restricted, the safe sysctls, the allowed SELinux
    // types, a Localhost seccomp profile, the restricted volume types.
    let mut spec = good();
    spec["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["NET_BIND_SERVICE"]);
    spec["securityContext"]["sysctls"] = json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}]);
    spec["securityContext"]["seLinuxOptions"] = json!({"type": "container_t", "level": "s0:c1"});
    spec["containers"][0]["securityContext"]["seccompProfile"] =
        json!({"type": "Localhost", "localhostProfile": "p.json"});
    spec["volumes"] = json!([
        {"name": "a", "emptyDir": {}}, {"name": "b", "projected": {"sources": []}},
        {"name": "c", "downwardAPI": {"items": []}}, {"name": "d", "secret": {"secretName": "s"}},
        {"name": "e", "persistentVolumeClaim": {"claimName": "c"}}
    ]);
    let (l, why) = level(&meta, &spec);
    assert_eq!(l, "restricted", "{why:?}");
}
