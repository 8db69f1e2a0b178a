//! Operability: `/metrics`, `/healthz` and `/readyz` over real HTTP during a run, a real
//! Prometheus server scraping auditrail and evaluating an alert rule, `promtool check metrics`
//! on a real scrape, and hot reload through the atomic symlink swap a ConfigMap update does.
//!
//! Prometheus and promtool come from Debian's `prometheus` package (`scripts/test.sh` installs
//! it); without them the tests that need them fail with a message saying so.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::broker::{free_port, Broker};
use support::{
    append, audit_line, http_get as get, metric_samples as samples, metric_sum as sum,
    ordinary_line, tempdir, try_http_get as try_get, wait_until, Daemon, DEADLINE,
};

fn config(dir: &Path, extra: &str) -> PathBuf {
    let base = support::service_yaml(dir);
    let yaml = format!(
        r#"{base}  max_line_bytes: 4096
retention:
  default: standard
  classes:
    standard: {{days: 60, topic: audit-60d}}
    forever: {{days: null, topic: audit-forever}}
  types:
    forever: [blobFetch, globalPolicyDisabled]
{extra}
"#,
    );
    let path = dir.join("auditrail.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Writes the test log: 40 sample Immuta lines (21 audit records), one truncated audit line
/// (invalid), one line longer than `max_line_bytes` (oversize). Returns its length.
fn write_log(dir: &Path) -> u64 {
    let log = dir.join("logs/0.log");
    let mut text = std::fs::read_to_string(support::sample("immuta.jsonl")).unwrap();
    text.push_str("{\"level\": \"audit\", \"recordType\": \"sqlQuery\", \"query\": \"SELECT\n");
    text.push_str(&format!(
        "{{\"level\": \"info\", \"message\": \"{}\"}}\n",
        "x".repeat(10_000)
    ));
    std::fs::write(&log, &text).unwrap();
    text.len() as u64
}

// === tests ===

#[test]
fn metrics_over_http_account_for_every_line_and_pass_promtool() {
    let dir = tempdir();
    let cfg = config(dir.path(), "");
    let size = write_log(dir.path());
    let mut run = Daemon::start(&cfg);
    let addr = run.metrics_address();
    support::wait_for_checkpoint(dir.path(), &dir.path().join("logs/0.log"), size);
    // Counters are published once a second.
    let scrape = || samples(&get(&addr, "/metrics").1);
    wait_until("the last counts and lag to be published", || {
        let m = scrape();
        sum(&m, "auditrail_source_lines_total", &[]) == 42.0
            && sum(&m, "auditrail_source_lag_bytes", &[]) == 0.0
    });
    let (code, text) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let m = samples(&text);

    // Every line is accounted for, and every record.
    let lines = sum(&m, "auditrail_source_lines_total", &[]);
    let ordinary = sum(&m, "auditrail_extract_ordinary_lines_total", &[]);
    let records = sum(&m, "auditrail_extract_records_total", &[]);
    let invalid = sum(&m, "auditrail_extract_invalid_lines_total", &[]);
    let oversize = sum(&m, "auditrail_extract_oversize_lines_total", &[]);
    let partial = sum(&m, "auditrail_source_partial_chunks_total", &[]);
    let incomplete = sum(&m, "auditrail_source_incomplete_lines_total", &[]);
    assert_eq!((lines, records, invalid, oversize), (42.0, 21.0, 1.0, 1.0));
    assert_eq!(
        lines + incomplete,
        ordinary + records + invalid + oversize + partial
    );
    // The oversize line's byte range ships as a gap record, to every output.
    let gaps = sum(&m, "auditrail_source_gap_records_total", &[]);
    assert_eq!(gaps, 1.0);
    let filtered = sum(&m, "auditrail_filter_filtered_out_total", &[]);
    let acked = sum(
        &m,
        "auditrail_output_records_acked_total",
        &["output=\"stdout\""],
    );
    let in_flight = sum(&m, "auditrail_output_in_flight_records", &[]);
    assert_eq!(records + gaps, filtered + acked + in_flight);
    assert_eq!(acked, 22.0);
    // Specific values from the sample.
    assert_eq!(
        sum(
            &m,
            "auditrail_extract_records_total",
            &["type=\"globalPolicyDisabled\""]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &m,
            "auditrail_retention_records_total",
            &["class=\"forever\""]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &m,
            "auditrail_retention_records_total",
            &["class=\"standard\""]
        ),
        18.0
    );
    assert_eq!(sum(&m, "auditrail_source_lag_bytes", &[]), 0.0);
    assert_eq!(sum(&m, "auditrail_source_files_watched", &[]), 1.0);
    assert_eq!(sum(&m, "auditrail_ready", &[]), 1.0);
    assert!(sum(&m, "process_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(sum(&m, "auditrail_build_info", &["version="]), 1.0);

    // promtool finds nothing to complain about in a real scrape.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool (Debian package prometheus) must be installed: scripts/test.sh installs it",
        );
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics:\n{findings}"
    );

    assert_eq!(get(&addr, "/healthz").0, 200);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".to_owned()));
    run.stop_cleanly();
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts.test.yaml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package prometheus) must be installed: scripts/test.sh installs it");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A real Prometheus server on loopback.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, target: &str) -> Prometheus {
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring/alerts.yaml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - job_name: auditrail\n    static_configs: [{{targets: ['{target}']}}]\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus) must be installed: scripts/test.sh installs it");
        Prometheus { child, addr }
    }

    /// The value of an instant query with one result, if it has one.
    fn query(&self, expr: &str) -> Option<f64> {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (code, body) = try_get(&self.addr, &format!("/api/v1/query?query={encoded}")).ok()?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn a_real_prometheus_scrapes_auditrail_and_evaluates_an_alert() {
    let dir = tempdir();
    let cfg = config(dir.path(), "");
    let log = dir.path().join("logs/0.log");
    std::fs::copy(support::sample("immuta.jsonl"), &log).unwrap();
    let mut run = Daemon::start(&cfg);
    let addr = run.metrics_address();
    let prometheus = Prometheus::start(dir.path(), &addr);
    wait_until("Prometheus to scrape the records", || {
        prometheus.query("sum(auditrail_extract_records_total)") == Some(21.0)
    });
    assert_eq!(prometheus.query("up{job=\"auditrail\"}"), Some(1.0));
    assert_eq!(
        prometheus.query("sum(auditrail_retention_records_total{class=\"forever\"})"),
        Some(3.0)
    );
    assert_eq!(
        prometheus.query("ALERTS{alertname=\"AuditrailOversizeLines\"}"),
        None
    );
    // An oversize line makes the AuditrailOversizeLines rule fire (it has no `for`).
    append(
        &log,
        format!(
            "{{\"level\": \"info\", \"message\": \"{}\"}}\n",
            "x".repeat(10_000)
        ),
    );
    wait_until("the alert to fire", || {
        prometheus.query("ALERTS{alertname=\"AuditrailOversizeLines\",alertstate=\"firing\"}")
            == Some(1.0)
    });
    // And nothing is wrong with delivery.
    assert_eq!(
        prometheus.query("ALERTS{alertname=\"AuditrailNotReady\"}"),
        None
    );
    run.stop_cleanly();
}

/// A config directory laid out the way the kubelet mounts a ConfigMap: the file is a symlink
/// through `..data`, which is swapped atomically on update.
struct ConfigMapDir {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapDir {
    fn new(dir: &Path, yaml: &str) -> ConfigMapDir {
        std::fs::create_dir_all(dir).unwrap();
        let mut c = ConfigMapDir {
            dir: dir.to_owned(),
            version: 0,
        };
        c.update(yaml);
        std::os::unix::fs::symlink("..data/auditrail.yaml", dir.join("auditrail.yaml")).unwrap();
        c
    }

    fn path(&self) -> PathBuf {
        self.dir.join("auditrail.yaml")
    }

    fn update(&mut self, yaml: &str) {
        self.version += 1;
        let data = format!("..2026_11_23_12_00_{:02}.{}", self.version, self.version);
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        std::fs::write(self.dir.join(&data).join("auditrail.yaml"), yaml).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&data, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

#[test]
fn a_configmap_update_changes_the_filter_and_a_broken_one_is_refused() {
    let dir = tempdir();
    let base = std::fs::read_to_string(config(dir.path(), "")).unwrap();
    let mut cm = ConfigMapDir::new(
        &dir.path().join("config"),
        &format!("{base}types: {{include: [all]}}\n"),
    );
    let log = dir.path().join("logs/0.log");
    append(
        &log,
        format!("{}\n{}\n", audit_line("before", 1), ordinary_line(1)),
    );
    let mut run = Daemon::start(&cm.path());
    let addr = run.metrics_address();
    run.wait_for_records(1);

    // The same detectors and classes; only the filter changes: `before` and `after` are
    // record types (see support::audit_line).
    cm.update(&format!("{base}types: {{exclude: [after]}}\n"));
    wait_until("the reload to succeed", || {
        sum(
            &samples(&get(&addr, "/metrics").1),
            "auditrail_config_reloads_total",
            &["result=\"success\""],
        ) == 1.0
    });
    append(
        &log,
        format!("{}\n{}\n", audit_line("after", 2), audit_line("kept", 3)),
    );
    run.wait_for_records(2);

    // A broken config is refused and the running one stays.
    cm.update(&format!("{base}types: {{include: [], exclude: []}}\n"));
    wait_until("the reload to fail", || {
        sum(
            &samples(&get(&addr, "/metrics").1),
            "auditrail_config_reloads_total",
            &["result=\"failure\""],
        ) == 1.0
    });
    append(
        &log,
        format!("{}\n{}\n", audit_line("after", 4), audit_line("kept", 5)),
    );
    run.wait_for_records(3);
    run.wait_for_log("new config refused");
    let stopped = run.stop_cleanly();
    let types: Vec<String> = stopped
        .stdout
        .iter()
        .map(|l| {
            support::parse_line(l)["value"]["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        vec!["before", "kept", "kept"],
        "each record exactly once, filtered by the config in force"
    );
}

#[test]
fn readiness_follows_the_broker() {
    let broker = Broker::start();
    let dir = tempdir();
    let kafka = format!(
        "outputs:\n  kafka:\n    brokers: \"{}\"\n    create_topics: true\n    topic_settings: {{partitions: 1, replication_factor: 1}}\n    linger: 5ms\n",
        broker.address()
    );
    let cfg = config(dir.path(), &kafka);
    let log = dir.path().join("logs/0.log");
    append(&log, format!("{}\n", audit_line("first", 1)));
    let mut run = Daemon::start(&cfg);
    let addr = run.metrics_address();
    wait_until("ready", || get(&addr, "/readyz").0 == 200);

    broker.signal("-STOP");
    for i in 0..50 {
        append(&log, format!("{}\n", audit_line("during", 10 + i)));
    }
    wait_until("not ready while the broker is paused", || {
        let (code, body) = get(&addr, "/readyz");
        code == 503 && body.contains("kafka")
    });
    assert_eq!(
        get(&addr, "/healthz").0,
        200,
        "paused Kafka is not a reason to restart auditrail"
    );
    broker.signal("-CONT");
    wait_until("ready again", || get(&addr, "/readyz").0 == 200);
    let delivered = broker.consume("audit-60d", 51, DEADLINE);
    assert_eq!(delivered.len(), 51);
    run.stop_cleanly();
}

/// Issue 16: an idle `run` (a quiet log, everything shipped) does not wake its tokio worker
/// threads to report readiness: `/readyz` and `/metrics` compute it when they are asked. Before,
/// a 1 s readiness tick woke the workers (14 switches in 5 s with this config; 25 with
/// `checkpoint_interval: 1s`, whose saver still ticks: see `run::save_checkpoints`).
///
/// The other timers are set slow so that what is counted is readiness: the source's fallbacks
/// and the checkpoint saver at 60 s (as in tests/kafka.rs's idle test), the Downward API
/// re-read (`enrich.refresh_interval`, 5 s by default) at 1 h. The window starts 5 s after the
/// start, past the one-shot timers of startup (enrichment's "no pod metadata" check at 3 s),
/// and lasts 10 s; nobody scrapes during it. What is left is tokio's timer wheel moving the
/// far timers down a level now and then (a few switches); 6 switches leave room for that
/// (CI under load once saw 5 in a 5 s window that began 2 s after ready, within 3 s of the
/// start), and a tick of 1 s (10 ticks, each waking a worker) fails.
#[test]
fn an_idle_run_does_not_wake_its_workers_for_readiness() {
    let dir = tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("0.log");
    let text: String = (0..5)
        .map(|i| format!("{}\n", audit_line("idle", i)))
        .collect();
    append(&log, &text);
    let yaml = format!(
        "metrics:\n  listen: 127.0.0.1:0\nsource:\n  paths: [{paths}]\n  checkpoint_dir: {checkpoints}\n  poll_interval: 60s\n  scan_interval: 60s\n  checkpoint_interval: 60s\nenrich:\n  refresh_interval: 1h\n",
        paths = support::yaml_str(logs.join("*.log").to_str().unwrap()),
        checkpoints = support::yaml_str(dir.path().join("checkpoints").to_str().unwrap()),
    );
    let config = support::write_config(dir.path(), "auditrail.yaml", &yaml);
    let started = std::time::Instant::now();
    let mut run = Daemon::start(&config);
    let addr = run.metrics_address();
    run.wait_for_records(5);
    wait_until("ready", || get(&addr, "/readyz").0 == 200);
    let scraped = get(&addr, "/metrics").1;
    assert_eq!(
        sum(&samples(&scraped), "auditrail_ready", &[]),
        1.0,
        "{scraped}"
    );
    // Settle: the HTTP connections are done, startup's one-shot timers have fired.
    let settled = started + Duration::from_secs(5);
    std::thread::sleep(settled.saturating_duration_since(std::time::Instant::now()));
    std::thread::sleep(Duration::from_secs(1));

    let before = support::threads(run.pid());
    std::thread::sleep(Duration::from_secs(10));
    let after = support::threads(run.pid());
    assert!(
        after.values().any(|(name, _, _)| name == "tokio-rt-worker"),
        "no tokio worker thread found"
    );
    let per_thread = support::activity_between(&before, &after);
    let switches = per_thread.get("tokio-rt-worker").map_or(0, |t| t.0);
    eprintln!("{switches} tokio worker switches in 10 s idle; all threads (switches, CPU ns): {per_thread:?}");

    // Still ready when asked, and the gauge says so at scrape time.
    assert_eq!(get(&addr, "/readyz").0, 200);
    let scraped = get(&addr, "/metrics").1;
    assert_eq!(
        sum(&samples(&scraped), "auditrail_ready", &[]),
        1.0,
        "{scraped}"
    );
    run.kill();
    assert!(
        switches <= 6,
        "{switches} context switches of the tokio workers in 10 s idle; all threads (switches, CPU ns): {per_thread:?}"
    );
}
