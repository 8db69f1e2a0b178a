//! Kubernetes: pod metadata from the Downward API (real files and environment passed to a real
//! process) and from the Kubernetes API, and the log source that needs no hostPath.
//!
//! There is no Kubernetes API server on the machines that run these tests: the API paths are
//! tested against `support::fake_api`, a local HTTP server that stands in for a cluster by
//! speaking the few endpoints used, in the API's exact shapes, to the real `kube` client.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use support::fake_api::{pod, FakeApi};
use support::{audit_line, ordinary_line, tempdir, Daemon};

const UID: &str = "0b1c2d3e-1111-2222-3333-444455556666";

/// A kubelet-style log directory: `<dir>/pods/shop_api-7d9f8c6b5-x2x4q_<uid>/app/0.log`.
fn kubelet_log(dir: &Path) -> PathBuf {
    let d = dir.join(format!("pods/shop_api-7d9f8c6b5-x2x4q_{UID}/app"));
    std::fs::create_dir_all(&d).unwrap();
    d.join("0.log")
}

fn downward_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("POD_NAME", "api-7d9f8c6b5-x2x4q"),
        ("POD_NAMESPACE", "shop"),
        ("POD_UID", UID),
        ("NODE_NAME", "node-7"),
        ("POD_IP", "10.1.2.3"),
    ]
}

fn podinfo(dir: &Path, labels: &str) -> PathBuf {
    let p = dir.join("podinfo");
    std::fs::create_dir_all(&p).unwrap();
    // The kubelet replaces these files atomically.
    std::fs::write(p.join("labels.tmp"), labels).unwrap();
    std::fs::rename(p.join("labels.tmp"), p.join("labels")).unwrap();
    std::fs::write(
        p.join("annotations"),
        "team=\"payments\"\nkubectl.kubernetes.io/last-applied-configuration=\"{...}\"\n",
    )
    .unwrap();
    p
}

fn records(stdout: &[String]) -> Vec<Value> {
    stdout
        .iter()
        .map(|l| support::parse_line(l)["value"].clone())
        .collect()
}

#[test]
fn check_with_the_downward_api_prints_the_kubernetes_object() {
    let dir = tempdir();
    let log = kubelet_log(dir.path());
    std::fs::write(
        &log,
        format!("{}\n{}\n", audit_line("login", 1), ordinary_line(2)),
    )
    .unwrap();
    let info = podinfo(
        dir.path(),
        "app=\"shop\"\npod-template-hash=\"7d9f8c6b5\"\n",
    );
    let config = support::write_config(
        dir.path(),
        "c.yaml",
        &format!("enrich:\n  kubernetes: downward\n  podinfo_dir: {}\n  cluster: prod-eu\n  annotations: [team]\n", info.display()),
    );
    let mut cmd = Command::new(support::bin());
    cmd.args(["check", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&log);
    for (k, v) in downward_env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1);
    let line = support::parse_line(&lines[0]);
    let k = &line["value"]["kubernetes"];
    assert_eq!(
        *k,
        json!({
            "cluster": "prod-eu", "namespace": "shop", "pod": "api-7d9f8c6b5-x2x4q", "pod_uid": UID,
            "node": "node-7", "container": "app", "pod_ip": "10.1.2.3",
            "labels": {"app": "shop", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"team": "payments"}, "owner": null
        })
    );
}

fn run_config(dir: &Path, extra: &str) -> PathBuf {
    support::write_config(
        dir,
        "run.yaml",
        &format!(
            "metrics: {{listen: 127.0.0.1:0}}\nsource:\n  paths: [\"{}/pods/*/app/*.log\"]\n  checkpoint_dir: {}\n  poll_interval: 50ms\n  scan_interval: 100ms\n  checkpoint_interval: 100ms\n{extra}",
            dir.display(),
            dir.join("checkpoints").display()
        ),
    )
}

#[test]
fn labels_changing_while_running_are_picked_up_without_a_restart() {
    let dir = tempdir();
    let log = kubelet_log(dir.path());
    let info = podinfo(dir.path(), "app=\"shop\"\nversion=\"1\"\n");
    let config = run_config(
        dir.path(),
        &format!(
            "enrich:\n  kubernetes: downward\n  podinfo_dir: {}\n  refresh_interval: 100ms\n",
            info.display()
        ),
    );
    support::append(&log, format!("{}\n", audit_line("before", 1)));
    let mut run = Daemon::start_with_env(&config, &downward_env());
    run.wait_for_records(1);
    podinfo(dir.path(), "app=\"shop\"\nversion=\"2\"\n");
    run.wait_for_log("pod metadata from the Downward API changed");
    support::append(&log, format!("{}\n", audit_line("after", 2)));
    run.wait_for_records(2);
    let stopped = run.stop_cleanly();
    let r = records(&stopped.stdout);
    assert_eq!(r[0]["kubernetes"]["labels"]["version"], "1");
    assert_eq!(r[1]["kubernetes"]["labels"]["version"], "2");
    assert_eq!(r[1]["kubernetes"]["pod_uid"], UID);
}

#[test]
fn outside_kubernetes_a_warning_and_records_without_pod_metadata() {
    let dir = tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = support::write_config(
        dir.path(),
        "run.yaml",
        &format!(
            "metrics: {{listen: 127.0.0.1:0}}\nsource:\n  paths: [\"{}/*.log\"]\n  checkpoint_dir: {}\n  poll_interval: 50ms\n  scan_interval: 100ms\nenrich:\n  podinfo_dir: {}/none\n",
            logs.display(),
            dir.path().join("checkpoints").display(),
            dir.path().display()
        ),
    );
    support::append(
        &logs.join("app.log"),
        format!("{}\n", audit_line("plain", 1)),
    );
    let mut run = Daemon::start_with_env(&config, &[("KUBECONFIG", "/nonexistent/kubeconfig")]);
    run.wait_for_records(1);
    run.wait_for_log("no pod metadata");
    let stopped = run.stop_cleanly();
    assert!(records(&stopped.stdout)[0].get("kubernetes").is_none());
}

#[test]
fn api_enrichment_reads_the_owner_and_follows_pod_changes() {
    let api = FakeApi::start(pod(
        json!({"app": "shop", "pod-template-hash": "7d9f8c6b5"}),
    ));
    let dir = tempdir();
    let log = kubelet_log(dir.path());
    let kubeconfig = api.kubeconfig(dir.path());
    let config = run_config(dir.path(), "enrich:\n  kubernetes: api\n");
    support::append(&log, format!("{}\n", audit_line("first", 1)));
    let env = api_env(&kubeconfig);
    let mut run = Daemon::start_with_env(&config, &env);
    run.wait_for_log("pod metadata read from the Kubernetes API");
    api.update_pod(|p| p["metadata"]["labels"]["release"] = json!("canary"));
    run.wait_for_log("pod metadata changed");
    support::append(&log, format!("{}\n", audit_line("second", 2)));
    run.wait_for_records(2);
    let stopped = run.stop_cleanly();
    let r = records(&stopped.stdout);
    let last = &r[r.len() - 1]["kubernetes"];
    assert_eq!(last["owner"], json!({"kind": "Deployment", "name": "api"}));
    assert_eq!(last["node"], "node-7");
    assert_eq!(last["pod_ip"], "10.1.2.3");
    assert_eq!(last["labels"]["release"], "canary");
    assert_eq!(last["container"], "app");
}

/// The environment of a pod that reaches the stand-in API through `kubeconfig`.
fn api_env(kubeconfig: &Path) -> [(&'static str, &str); 3] {
    [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("POD_NAME", "api-7d9f8c6b5-x2x4q"),
        ("POD_NAMESPACE", "shop"),
    ]
}

fn ts(second: u32, nanos: u32) -> String {
    format!("2026-11-23T12:00:{second:02}.{nanos:09}Z")
}

fn api_source_config(dir: &Path) -> PathBuf {
    support::write_config(
        dir,
        "run.yaml",
        &format!(
            "metrics: {{listen: 127.0.0.1:0}}\nsource:\n  kind: kubernetes\n  container: app\n  checkpoint_dir: {}\n  checkpoint_interval: 100ms\nenrich:\n  kubernetes: api\n",
            dir.join("checkpoints").display()
        ),
    )
}

#[test]
fn the_api_log_source_survives_a_disconnect_and_a_restart_without_loss_or_repeat() {
    let api = FakeApi::start(pod(json!({"app": "shop"})));
    let dir = tempdir();
    let config = api_source_config(dir.path());
    let kubeconfig = api.kubeconfig(dir.path());
    let env = api_env(&kubeconfig);
    // Several lines share a timestamp: the resume must count them, not just compare times.
    let mut n = 0;
    let mut write = |api: &FakeApi, second: u32, nanos: u32| {
        n += 1;
        api.log(&ts(second, nanos), &audit_line("event", n));
        api.log(&ts(second, nanos), &ordinary_line(n));
    };
    for i in 0..5 {
        write(&api, 1, i * 1000);
        write(&api, 1, i * 1000); // same timestamp twice
    }
    let mut run = Daemon::start_with_env(&config, &env);
    run.wait_for_records(10);
    // The API server restarts mid-stream.
    api.disconnect();
    for i in 0..5 {
        write(&api, 2, i);
    }
    run.wait_for_records(15);
    run.wait_for_log("log stream ended; reconnecting");
    let first = run.stop_cleanly();
    let got: Vec<u64> = records(&first.stdout)
        .iter()
        .map(|r| r["record"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        first.stdout.len(),
        15,
        "each line once across the reconnect: {got:?} {:?}\n{}",
        api.log_requests(),
        first.stderr.join("\n")
    );

    // Lines written while auditrail was down, some in the same second as its checkpoint.
    for i in 5..8 {
        write(&api, 2, i);
    }
    write(&api, 3, 0);
    let mut run = Daemon::start_with_env(&config, &env);
    run.wait_for_records(4);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let second = run.stop_cleanly();
    assert_eq!(second.stdout.len(), 4, "only the new lines after a restart");
    let seqs: Vec<u64> = records(&first.stdout)
        .iter()
        .chain(records(&second.stdout).iter())
        .map(|r| r["record"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=19).collect::<Vec<u64>>(),
        "nothing lost, nothing repeated, in order"
    );
    assert!(
        api.log_requests()
            .iter()
            .any(|q| q.contains("sinceTime") && q.contains("2026-11-23T12:00:02Z")),
        "the restart resumes with sinceTime at the checkpoint's second: {:?}",
        api.log_requests()
    );
    let k = &records(&second.stdout)[0]["kubernetes"];
    assert_eq!(k["container"], "app");
    assert_eq!(k["pod_uid"], UID);
}

#[test]
fn lines_rotated_away_while_down_are_counted_as_a_gap() {
    let api = FakeApi::start(pod(json!({})));
    let dir = tempdir();
    let config = api_source_config(dir.path());
    let kubeconfig = api.kubeconfig(dir.path());
    let env = api_env(&kubeconfig);
    api.log(&ts(1, 0), &audit_line("old", 1));
    let mut run = Daemon::start_with_env(&config, &env);
    run.wait_for_records(1);
    run.stop_cleanly();
    // While auditrail is down, the kubelet rotates: the checkpoint's line is gone.
    api.log(&ts(5, 0), &audit_line("lost", 2));
    api.log(&ts(9, 0), &audit_line("new", 3));
    api.rotate_before(&ts(9, 0));
    let mut run = Daemon::start_with_env(&config, &env);
    run.wait_for_records(1);
    run.wait_for_log("cannot be read again");
    let stopped = run.stop_cleanly();
    assert_eq!(records(&stopped.stdout)[0]["type"], "new");
}

/// Issue 13, finding 6: with `source.kind: kubernetes` a record's id depended on where the
/// line fell in the stream auditrail read (a count of lines since it connected), so a line
/// read again after a restart got another id and consumers could not deduplicate it. The id
/// now comes from the line itself: the pod, the container, its timestamp, how many lines
/// before it carried that timestamp, and its bytes.
#[test]
fn kubernetes_record_ids_are_the_same_when_a_line_is_read_again() {
    let api = FakeApi::start(pod(json!({"app": "shop"})));
    let dir = tempdir();
    let config = api_source_config(dir.path());
    let kubeconfig = api.kubeconfig(dir.path());
    let env = api_env(&kubeconfig);
    for i in 0..6u32 {
        // Seconds 1 and 2; two lines share each timestamp.
        api.log(&ts(1 + i / 3, i / 2), &audit_line("again", i as usize));
        api.log(&ts(1 + i / 3, i / 2), &ordinary_line(i as usize));
    }
    let by_text = |stdout: &[String]| -> std::collections::BTreeMap<String, String> {
        stdout
            .iter()
            .map(|l| (support::record_text(l).to_owned(), support::id_of(l)))
            .collect()
    };
    let mut run = Daemon::start_with_env(&config, &env);
    run.wait_for_records(6);
    let first = by_text(&run.stop_cleanly().stdout);
    // Read again (the checkpoint lost), from another start of the stream: the kubelet rotated
    // the first second's lines away.
    std::fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
    api.rotate_before(&ts(2, 0));
    let mut run = Daemon::start_with_env(&config, &env);
    run.wait_for_records(3);
    let second = by_text(&run.stop_cleanly().stdout);
    assert_eq!(second.len(), 3);
    for (text, id) in &second {
        assert_eq!(first.get(text), Some(id), "{text}");
    }
}
