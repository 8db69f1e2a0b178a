//! The sidecar container wired as the binary expects, checked in every pod that carries it:
//! it runs the mounted config as the image's user with the Downward API variables the binary
//! reads, is probed on a named port at the paths the binary serves, and has the mounts its
//! config reads and writes (the config as a directory, writable checkpoints, the pod info,
//! only its own pod's logs, the Kafka secrets).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::render::{container_env, port_names, seq, source_kind, str_map};

/// Checks the sidecar `side` of `owner`'s pod, whose volumes are `volumes`, against the
/// config `cfg` it runs.
pub fn check_sidecar(
    scenario: &str,
    owner: &str,
    side: &Value,
    volumes: &BTreeMap<String, Value>,
    cfg: &Value,
) {
    check_process(scenario, owner, side);
    let mounts = Mounts::of(scenario, owner, side, volumes);
    check_config_and_state_mounts(&mounts, cfg);
    check_log_mount(&mounts, cfg);
    check_secret_mounts(&mounts, cfg);
}

/// The sidecar runs the mounted config as the image's user, gets the Downward API variables
/// the binary reads, and is probed on a named port at the paths the binary serves.
fn check_process(scenario: &str, owner: &str, side: &Value) {
    assert_eq!(
        seq(&side["args"]),
        ["run", "--config", "/etc/auditrail/auditrail.yaml"]
            .map(Value::from)
            .to_vec(),
        "{scenario}: {owner}: the sidecar runs the mounted config"
    );
    let sc = &side["securityContext"];
    assert_eq!(sc["runAsUser"].as_i64(), Some(65532), "the image's user");
    let env: BTreeMap<String, String> = container_env(side).into_iter().collect();
    for var in [
        "POD_NAME",
        "POD_NAMESPACE",
        "POD_UID",
        "NODE_NAME",
        "POD_IP",
    ] {
        assert!(env.contains_key(var), "{scenario}: {owner}: env {var}");
    }
    let ports = port_names(&side["ports"]);
    for probe in ["livenessProbe", "readinessProbe"] {
        if let Some(port) = side[probe]["httpGet"]["port"].as_str() {
            assert!(ports.contains(port), "{scenario}: {probe} on a named port");
        }
    }
    assert_eq!(
        side["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    // The sidecar's own start (the default), or the shipping (the opt-in); or no probe.
    if let Some(path) = side["readinessProbe"]["httpGet"]["path"].as_str() {
        assert!(
            ["/startupz", "/readyz"].contains(&path),
            "{scenario}: {owner}: readiness on {path}, which the binary does not serve"
        );
    }
}

/// The sidecar's mounts by mount path, and the pod's volumes behind them.
struct Mounts<'a> {
    scenario: &'a str,
    owner: &'a str,
    at: BTreeMap<String, Value>,
    volumes: &'a BTreeMap<String, Value>,
}

impl<'a> Mounts<'a> {
    fn of(
        scenario: &'a str,
        owner: &'a str,
        side: &Value,
        volumes: &'a BTreeMap<String, Value>,
    ) -> Self {
        let at = seq(&side["volumeMounts"])
            .into_iter()
            .map(|m| (m["mountPath"].as_str().unwrap().to_string(), m))
            .collect();
        Mounts {
            scenario,
            owner,
            at,
            volumes,
        }
    }

    /// The volume mounted at `path`; fails the test when nothing is.
    fn volume_at(&self, path: &str) -> &Value {
        let (scenario, owner) = (self.scenario, self.owner);
        let m = self
            .at
            .get(path)
            .unwrap_or_else(|| panic!("{scenario}: {owner}: nothing mounted at {path}"));
        &self.volumes[m["name"].as_str().unwrap()]
    }
}

/// The config is mounted as a directory (hot reload sees the `..data` swap; subPath would
/// not), the checkpoint directory is writable, and the pod info holds labels and annotations.
fn check_config_and_state_mounts(mounts: &Mounts, cfg: &Value) {
    let scenario = mounts.scenario;
    assert!(!mounts.volume_at("/etc/auditrail")["configMap"].is_null());
    assert!(mounts.at["/etc/auditrail"]["subPath"].is_null());
    let checkpoints = cfg["source"]["checkpoint_dir"]
        .as_str()
        .unwrap_or("/var/lib/auditrail");
    assert!(
        mounts.at[checkpoints]["readOnly"].as_bool() != Some(true),
        "{scenario}: checkpoints writable"
    );
    let podinfo = mounts.volume_at("/etc/podinfo");
    let items: BTreeSet<String> = seq(&podinfo["downwardAPI"]["items"])
        .iter()
        .map(|i| i["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        items,
        BTreeSet::from(["annotations", "labels"].map(String::from))
    );
}

/// The API source mounts no hostPath; the file source mounts the node's pod logs read-only,
/// only this pod's own directory of them, and `source.paths` read there.
fn check_log_mount(mounts: &Mounts, cfg: &Value) {
    let scenario = mounts.scenario;
    let host_paths: Vec<&Value> = mounts
        .volumes
        .values()
        .filter(|v| !v["hostPath"].is_null())
        .collect();
    if source_kind(cfg) == "kubernetes" {
        assert!(host_paths.is_empty(), "{scenario}: API source: no hostPath");
        return;
    }
    let logs: Vec<&Value> = mounts
        .at
        .values()
        .filter(|m| {
            mounts.volumes[m["name"].as_str().unwrap()]["hostPath"]["path"].as_str()
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

/// Kafka secrets: every secret file lies in a Secret mounted read-only.
fn check_secret_mounts(mounts: &Mounts, cfg: &Value) {
    let scenario = mounts.scenario;
    for (prop, file) in str_map(&cfg["outputs"]["kafka"]["secret_files"]) {
        let dir = Path::new(&file)
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let v = mounts.volume_at(&dir);
        assert!(
            !v["secret"]["secretName"].is_null(),
            "{scenario}: secret_files.{prop} ({file}) is not in a mounted Secret"
        );
        assert_eq!(mounts.at[&dir]["readOnly"].as_bool(), Some(true));
    }
}
