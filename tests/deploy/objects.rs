//! The checks no schema makes, run on every render (the defaults, each scenario, the
//! application chart, `deploy/`, long names): kubernetes-validate sees one object at a time,
//! so what holds between objects, and between the objects and the config they carry, is
//! checked here:
//! - names and label values fit in 63 characters;
//! - RBAC is exactly what the config needs from the API, and the token is never automounted;
//! - every pod's references resolve (volumes, ConfigMaps, the ServiceAccount and its binding)
//!   and every container is hardened;
//! - the sidecar is wired as the binary expects ([`crate::wiring`]);
//! - the metrics Service and monitors select what exists ([`crate::monitors`]).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::monitors::check_monitors;
use crate::render::{
    config, containers, kind, name, names_of, of_kind, pods, seq, sidecar, source_kind, str_map,
    Pod,
};
use crate::wiring::check_sidecar;

/// The checks no schema makes: every reference resolves, the sidecar is hardened and wired as
/// the binary expects, RBAC is exactly what the config needs, monitors select what exists.
pub fn check_objects(scenario: &str, objs: &[Value]) {
    let cfg = config(objs);
    check_names_fit(scenario, objs);
    check_rbac(scenario, objs, &api_access_needed(&cfg));
    for pod in pods(objs) {
        let volumes: BTreeMap<String, Value> = seq(&pod.spec["volumes"])
            .into_iter()
            .map(|v| (v["name"].as_str().unwrap().to_string(), v))
            .collect();
        check_references(scenario, objs, &pod, &volumes);
        check_hardening(scenario, &pod);
        if let Some(side) = sidecar(&pod.spec) {
            check_sidecar(scenario, &pod.owner, &side, &volumes, &cfg);
        }
    }
    check_monitors(scenario, objs);
}

/// Names and label values fit Kubernetes' 63 characters.
fn check_names_fit(scenario: &str, objs: &[Value]) {
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
}

/// What the config needs from the API, as (resource, verb): it decides RBAC and the token.
fn api_access_needed(cfg: &Value) -> BTreeSet<(String, String)> {
    // Without `enrich.kubernetes` the binary enriches `auto`, from the API too.
    let enrich = cfg["enrich"]["kubernetes"].as_str().unwrap_or("auto");
    let mut needed: BTreeSet<(String, String)> = BTreeSet::new();
    if matches!(enrich, "api" | "auto") {
        needed.insert(("pods".into(), "get".into()));
        needed.insert(("pods".into(), "watch".into()));
    }
    if source_kind(cfg) == "kubernetes" {
        needed.insert(("pods/log".into(), "get".into()));
    }
    needed
}

// === RBAC ===

/// The Roles grant exactly what the config needs, in the core group and namespaced only; each
/// is bound to ServiceAccounts of the namespace; the token is mounted only when the API is used.
fn check_rbac(scenario: &str, objs: &[Value], needed: &BTreeSet<(String, String)>) {
    assert_eq!(
        &granted(scenario, objs),
        needed,
        "{scenario}: the Role grants exactly what the config needs"
    );
    assert!(
        of_kind(objs, "ClusterRole").is_empty() && of_kind(objs, "ClusterRoleBinding").is_empty(),
        "{scenario}: namespaced RBAC only"
    );
    let roles = names_of(objs, "Role");
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
    // The sidecar mounts its own token (when the API is used); no container gets it otherwise.
    for sa in of_kind(objs, "ServiceAccount") {
        assert_eq!(
            sa["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{scenario}: never automounted"
        );
    }
}

/// What the Roles grant, as (resource, verb); every rule is for the core API group.
fn granted(scenario: &str, objs: &[Value]) -> BTreeSet<(String, String)> {
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
    granted
}

// === every pod ===

/// The pod's references resolve: every mount is of a declared volume, every ConfigMap volume
/// is rendered, and so is the ServiceAccount, which the Role is bound to.
fn check_references(scenario: &str, objs: &[Value], pod: &Pod, volumes: &BTreeMap<String, Value>) {
    let owner = &pod.owner;
    for c in containers(&pod.spec) {
        for m in seq(&c["volumeMounts"]) {
            let v = m["name"].as_str().unwrap();
            assert!(
                volumes.contains_key(v),
                "{scenario}: {owner}: mount of undeclared volume {v}"
            );
        }
    }
    let configmaps = names_of(objs, "ConfigMap");
    for v in volumes.values() {
        if let Some(cm) = v["configMap"]["name"].as_str() {
            assert!(
                configmaps.contains(cm),
                "{scenario}: {owner}: ConfigMap {cm} is not rendered"
            );
        }
    }
    if let Some(sa) = pod.spec["serviceAccountName"].as_str() {
        assert!(
            sa == "default" || names_of(objs, "ServiceAccount").contains(sa),
            "{scenario}: {owner}: ServiceAccount {sa} is not rendered"
        );
        assert!(
            of_kind(objs, "RoleBinding")
                .iter()
                .all(|b| seq(&b["subjects"])
                    .iter()
                    .any(|s| s["name"].as_str() == Some(sa))),
            "{scenario}: {owner}: the Role is bound to the pod's ServiceAccount {sa}"
        );
    }
}

/// Every container (the application's too): not root, read-only root filesystem, no privilege
/// escalation, no capabilities, the runtime's seccomp profile, and a memory limit.
fn check_hardening(scenario: &str, pod: &Pod) {
    let owner = &pod.owner;
    for c in containers(&pod.spec) {
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
}
