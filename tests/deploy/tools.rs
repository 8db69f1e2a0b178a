//! The external tools the deploy tests run, and the files they run on.
//!
//! There is no Kubernetes cluster and no container engine on our machines: `helm`,
//! `kubernetes-validate` and `hadolint` stand in for them. They come from
//! `bash scripts/deploy-tools.sh` (into `$HOME/.local/auditrail-tools/bin` or
//! `$AUDITRAIL_TOOLS/bin`; PATH is searched last). A missing tool fails the test and says so.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kubernetes versions the manifests must be valid for: the chart's minimum (Chart.yaml
/// `kubeVersion`; native sidecars need 1.29) and the newest kubernetes-validate knows.
const KUBE_VERSIONS: &[&str] = &["1.29.0", "1.37.0"];

/// Kinds kubernetes-validate has no schema for (prometheus-operator CRDs); the object checks
/// look at the monitors field by field instead, and promtool checks the PrometheusRule's rules
/// (`extras2`).
const CRD_KINDS: &[&str] = &["ServiceMonitor", "PodMonitor", "PrometheusRule"];

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    repo().join("helm/auditrail")
}

pub use crate::support::tool;

/// Runs `cmd`, fails the test with its output unless it succeeds, returns its stdout.
pub fn run(cmd: &mut Command) -> String {
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

/// Runs kubernetes-validate (Kubernetes' own OpenAPI schemas, offline) on `file` for every
/// version in KUBE_VERSIONS; any error, and any warning other than "no schema" for the CRD
/// kinds, fails the test.
pub fn kubernetes_validate(file: &Path) {
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

/// Copies the directory tree `from` to `to` (a chart, to change or build it out of the
/// repository).
pub fn copy_dir(from: &Path, to: &Path) {
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
