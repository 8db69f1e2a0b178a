//! The sidecar run as the kubelet would run its container, with the demo scenario (stdout
//! output, no Kafka needed): every volume mount becomes a directory under a temporary root,
//! the ConfigMap's file lands in the config mount and the application's log in the pod's log
//! directory, and the rendered args and env are used as they are. The binary must ship the
//! log's records, answer the probes and Prometheus on the rendered paths, save checkpoints in
//! the checkpoint volume and stop cleanly on SIGTERM.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::render::{config, config_text, container_env, objects, of_kind, render, seq, sidecar};
use crate::support::{
    bin, http_get, parse_line, sample, tempdir, try_http_get, wait_until, Daemon,
};
use crate::tools::chart;

/// A directory laid out like the container's filesystem: each of the container's mount paths
/// is a directory under `root`.
struct ContainerRoot {
    root: PathBuf,
    /// The mount paths, longest first, so that nested mounts keep their place.
    mount_paths: Vec<String>,
}

impl ContainerRoot {
    fn new(root: &Path, container: &Value) -> Self {
        let mut mount_paths: Vec<String> = seq(&container["volumeMounts"])
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_string())
            .collect();
        mount_paths.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in &mount_paths {
            fs::create_dir_all(root.join(p.trim_start_matches('/'))).unwrap();
        }
        ContainerRoot {
            root: root.to_path_buf(),
            mount_paths,
        }
    }

    /// `text` with every mount path moved under the root.
    fn relocate(&self, text: &str) -> String {
        let mut out = text.to_string();
        for p in &self.mount_paths {
            let to = self.root.join(p.trim_start_matches('/'));
            out = out.replace(p.as_str(), to.to_str().unwrap());
        }
        out
    }
}

/// A free port on loopback. The pod's own network namespace has the port to itself; here,
/// take one nobody uses.
fn free_loopback_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

pub fn the_sidecar_runs_with_the_rendered_config_mounts_and_env() {
    let objs = objects(&render(Some(&chart().join("ci/demo-values.yaml")), &[]));
    let d = of_kind(&objs, "Deployment")[0];
    let side = sidecar(&d["spec"]["template"]["spec"]).unwrap();
    let root = tempdir();
    let container = ContainerRoot::new(root.path(), &side);
    let cfg = config(&objs);
    let addr = free_loopback_address();

    // The config, listening on loopback; the application's log where the config reads.
    let listen = cfg["metrics"]["listen"].as_str().expect("metrics.listen");
    let text = container
        .relocate(&config_text(&objs))
        .replace(listen, &addr);
    fs::write(root.path().join("etc/auditrail/auditrail.yaml"), text).unwrap();
    let pattern = container.relocate(cfg["source"]["paths"][0].as_str().unwrap());
    let log_dir = Path::new(&pattern).parent().unwrap().to_path_buf();
    fs::create_dir_all(&log_dir).unwrap();
    fs::copy(sample("cri-immuta.log"), log_dir.join("0.log")).unwrap();

    let args: Vec<String> = seq(&side["args"])
        .iter()
        .map(|a| container.relocate(a.as_str().unwrap()))
        .collect();
    let mut command = Command::new(bin());
    command.args(&args).env_clear().envs(container_env(&side));
    let mut daemon = Daemon::spawn(command);
    daemon.wait_for_records(9);
    answers_probes_and_prometheus(&daemon, &side, &addr);

    let stopped = daemon.terminate();
    let err = stopped.stderr.join("\n");
    assert_eq!(
        stopped.stdout.len(),
        9,
        "records shipped from the pod's log:\n{err}"
    );
    assert!(
        stopped.status.success(),
        "auditrail stopped with {}:\n{err}",
        stopped.status
    );
    for r in &stopped.stdout {
        let r = parse_line(r);
        let file = r["value"]["source"]["file"].as_str().unwrap();
        assert!(file.starts_with(log_dir.to_str().unwrap()), "{file}");
    }
    let checkpoints = container.relocate(cfg["source"]["checkpoint_dir"].as_str().unwrap());
    assert!(
        Path::new(&checkpoints).join("checkpoints.json").exists(),
        "checkpoints saved in the checkpoint volume"
    );
}

/// What the kubelet's liveness probe and Prometheus would ask `addr`, on the paths the chart
/// renders, is answered.
fn answers_probes_and_prometheus(daemon: &Daemon, side: &Value, addr: &str) {
    wait_until("the metrics server", || {
        try_http_get(addr, "/metrics").is_ok()
    });
    for (path, expect) in [
        (
            side["livenessProbe"]["httpGet"]["path"].as_str().unwrap(),
            "ok",
        ),
        ("/metrics", "auditrail_source_lines_total"),
    ] {
        let (code, body) = http_get(addr, path);
        assert!(
            code == 200 && body.contains(expect),
            "GET {path}: {code}\n{body}\n{}",
            daemon.stderr_lines().join("\n")
        );
    }
}
