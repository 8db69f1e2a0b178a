//! The sidecar run as the kubelet would run its container, with the demo scenario (stdout
//! output, no Kafka needed): every volume mount becomes a directory under a temporary root,
//! the ConfigMap's file lands in the config mount and the application's log in the pod's log
//! directory, and the rendered args and env are used as they are. The binary must ship the
//! log's records, answer the probes and Prometheus on the rendered paths, save checkpoints in
//! the checkpoint volume and stop cleanly on SIGTERM.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::render::{config, config_text, container_env, objects, of_kind, render, seq, sidecar};
use crate::tools::{chart, repo, run};

const DEADLINE: Duration = Duration::from_secs(60);

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
fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn the_sidecar_runs_with_the_rendered_config_mounts_and_env() {
    let objs = objects(&render(Some(&chart().join("ci/demo-values.yaml")), &[]));
    let d = of_kind(&objs, "Deployment")[0];
    let side = sidecar(&d["spec"]["template"]["spec"]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let container = ContainerRoot::new(root.path(), &side);
    let cfg = config(&objs);
    let port = free_loopback_port();

    // The config, listening on loopback; the application's log where the config reads.
    let listen = cfg["metrics"]["listen"].as_str().expect("metrics.listen");
    let text = container
        .relocate(&config_text(&objs))
        .replace(listen, &format!("127.0.0.1:{port}"));
    fs::write(root.path().join("etc/auditrail/auditrail.yaml"), text).unwrap();
    let pattern = container.relocate(cfg["source"]["paths"][0].as_str().unwrap());
    let log_dir = Path::new(&pattern).parent().unwrap().to_path_buf();
    fs::create_dir_all(&log_dir).unwrap();
    fs::copy(
        repo().join("tests/samples/cri-immuta.log"),
        log_dir.join("0.log"),
    )
    .unwrap();

    let args: Vec<String> = seq(&side["args"])
        .iter()
        .map(|a| container.relocate(a.as_str().unwrap()))
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
    let start = Instant::now();
    let records = first_records(child, 9, start, &stderr);
    answers_probes_and_prometheus(&side, port, &stderr);
    let status = terminate(child, start);

    let err = stderr();
    assert_eq!(
        records.len(),
        9,
        "records shipped from the pod's log:\n{err}"
    );
    assert!(status.success(), "auditrail stopped with {status}:\n{err}");
    for r in &records {
        let r: Value = serde_json::from_str(r).unwrap();
        let file = r["value"]["source"]["file"].as_str().unwrap();
        assert!(file.starts_with(log_dir.to_str().unwrap()), "{file}");
    }
    let checkpoints = container.relocate(cfg["source"]["checkpoint_dir"].as_str().unwrap());
    assert!(
        Path::new(&checkpoints).join("checkpoints.json").exists(),
        "checkpoints saved in the checkpoint volume"
    );
}

/// Up to `n` stdout lines of `child`, read until DEADLINE after `start`; fails the test if the
/// child exits first.
fn first_records(
    child: &mut Child,
    n: usize,
    start: Instant,
    stderr: &dyn Fn() -> String,
) -> Vec<String> {
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
    while records.len() < n && start.elapsed() < DEADLINE {
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
    records
}

/// What the kubelet's liveness probe and Prometheus would ask, on the paths the chart renders,
/// is answered.
fn answers_probes_and_prometheus(side: &Value, port: u16, stderr: &dyn Fn() -> String) {
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
}

/// Sends SIGTERM to `child` and waits for it to stop (until twice DEADLINE after `start`).
fn terminate(child: &mut Child, start: Instant) -> ExitStatus {
    run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE * 2 {
            let _ = child.kill();
            panic!("auditrail did not stop after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process that is killed if the test fails before it stopped.
struct Reaped(Child);

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
