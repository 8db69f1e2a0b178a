//! The rendered config in the real binary: every config the chart renders is one
//! `auditrail validate` accepts and `auditrail check` runs with, in the environment the chart
//! gives the container; and the demo application's script writes records in every format the
//! demo's config detects.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::render::{
    config_text, container_env, defaults_and, objects, of_kind, pods, render, scenarios, seq,
    sidecar,
};
use crate::support::{bin, parse_line, sample, tempdir};
use crate::tools::{chart, run};

/// Scenarios whose config the binary does not accept yet: `source.kind: kubernetes`, `enrich`
/// and `metrics` are being added (issues 4 and 7). Their rendering is still fully checked; move
/// them out of this list once `auditrail validate` accepts them.
const NOT_YET_ACCEPTED_BY_THE_BINARY: &[&str] = &[];

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

/// The summary `auditrail check` prints: the last JSON line of its stderr.
fn summary(what: &str, stderr: &str) -> Value {
    stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{what}: no summary on stderr:\n{stderr}"))
}

pub fn the_binary_validates_and_checks_with_every_rendered_config_and_env() {
    let dir = tempdir();
    for (scenario, values) in defaults_and(accepted_scenarios()) {
        let objs = objects(&render(values.as_deref(), &[]));
        let file = dir.path().join(format!("{scenario}.auditrail.yaml"));
        fs::write(&file, config_text(&objs)).unwrap();
        let env = sidecar_env(values.as_deref(), &objs);
        validates(&scenario, &file, &env);
        checks_the_sample(&scenario, &file, &env);
    }
}

/// The sidecar's environment in `objs`, the render of `values`.
fn sidecar_env(values: Option<&Path>, objs: &[Value]) -> Vec<(String, String)> {
    pods(objs)
        .iter()
        .find_map(|p| sidecar(&p.spec))
        .map(|c| container_env(&c))
        .unwrap_or_else(|| {
            // Sidecar mode renders no pod; the library's env is the same in every pod.
            let demo = objects(&render(values, &["--set", "demo.enabled=true"]));
            container_env(&pods(&demo).iter().find_map(|p| sidecar(&p.spec)).unwrap())
        })
}

/// `auditrail validate` accepts the config `file` in the environment `env` (and no other).
fn validates(scenario: &str, file: &Path, env: &[(String, String)]) {
    let out = Command::new(bin())
        .arg("validate")
        .arg("--config")
        .arg(file)
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{scenario}: auditrail validate refused the rendered config:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(file).unwrap()
    );
}

/// `auditrail check` with the config `file` in the environment `env` finds the sample's audit
/// records, and prints one line per record it ships.
fn checks_the_sample(scenario: &str, file: &Path, env: &[(String, String)]) {
    let out = Command::new(bin())
        .arg("check")
        .arg("--config")
        .arg(file)
        .arg("--input")
        .arg(sample("cri-immuta.log"))
        .env_clear()
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{scenario}: auditrail check failed:\n{stderr}"
    );
    let summary = summary(scenario, &stderr);
    // tests/samples/EXPECTED.md: 23 lines, 9 audit records (all Immuta).
    assert_eq!(summary["lines"], 23, "{scenario}: {summary}");
    assert_eq!(summary["audit"], 9, "{scenario}: {summary}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count() as u64,
        summary["shipped"].as_u64().unwrap()
    );
}

pub fn the_demo_application_writes_records_in_every_seed_format() {
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
    let dir = tempdir();
    let input = dir.path().join("demo.log");
    fs::write(&input, &lines).unwrap();
    let config = dir.path().join("auditrail.yaml");
    fs::write(&config, config_text(&objs)).unwrap();
    let out = Command::new(bin())
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
            parse_line(l)["headers"]["format"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        formats,
        BTreeSet::from(["immuta", "monolog", "pryv", "sym"].map(String::from)),
        "demo output:\n{lines}"
    );
    let summary = summary("the demo", &stderr);
    // Per round: 5 audit records (Immuta, Sym, monolog JSON and line, Pryv) and 3 ordinary lines
    // (one of them an error whose nested {"level": "audit"} must not count).
    assert_eq!(summary["audit"], 10, "{summary}\n{lines}");
    assert_eq!(summary["ordinary"], 6, "{summary}\n{lines}");
    assert_eq!(summary["invalid"], 0, "{summary}\n{lines}");
}
