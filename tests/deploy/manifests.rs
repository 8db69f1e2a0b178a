//! What ships besides the chart: the plain manifests in `deploy/` and the `Dockerfile`.
//!
//! `deploy/` is rendered from the chart by `scripts/render-deploy.sh`; it must be exactly a
//! fresh render (so the two never drift), listed whole by its kustomization, valid for
//! Kubernetes and fit together like any render. The Dockerfile must pass hadolint and its
//! build context must carry every target Cargo.toml declares, or `cargo build` in the image
//! fails.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::objects::check_objects;
use crate::render::{objects, seq, yaml};
use crate::support::tempdir;
use crate::tools::{kubernetes_validate, repo, run, tool};

/// The names of the files in `dir` (subdirectories, such as deploy/injection/, have their own
/// checks).
pub fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

pub fn deploy_manifests_are_a_fresh_render_of_the_chart_and_valid() {
    let dir = tempdir();
    run(Command::new("bash")
        .arg(repo().join("scripts/render-deploy.sh"))
        .arg(dir.path())
        .env("HELM", tool("helm")));
    let deploy = repo().join("deploy");
    assert_eq!(
        listing(&deploy),
        listing(dir.path()),
        "deploy/ has other files than a fresh render: run `bash scripts/render-deploy.sh`"
    );
    for f in listing(dir.path()) {
        let fresh = fs::read_to_string(dir.path().join(&f)).unwrap();
        let committed = fs::read_to_string(deploy.join(&f)).unwrap();
        assert!(
            fresh == committed,
            "deploy/{f} differs from the chart's render: run `bash scripts/render-deploy.sh`"
        );
    }
    let manifests = kustomized_manifests(&deploy);

    let mut all = String::new();
    for f in &manifests {
        let path = deploy.join(f);
        kubernetes_validate(&path);
        let text = fs::read_to_string(&path).unwrap();
        all.push_str("---\n");
        all.push_str(&text);
    }
    let objs = objects(&all);
    assert!(
        objs.iter().all(|o| o["metadata"]["namespace"].is_null()),
        "no namespace in deploy/: kustomize sets it"
    );
    // check_objects expects the subject namespace the test renders with; deploy/ has `default`.
    let renamed = all.replace("namespace: default", "namespace: shop");
    check_objects("deploy/", &objects(&renamed));
}

/// The manifests of `deploy/`, each of which kustomization.yaml lists, and nothing else.
fn kustomized_manifests(deploy: &Path) -> BTreeSet<String> {
    let kustomization = yaml(
        "deploy/kustomization.yaml",
        &fs::read_to_string(deploy.join("kustomization.yaml")).unwrap(),
    );
    let listed: BTreeSet<String> = seq(&kustomization["resources"])
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut manifests = listing(deploy);
    manifests.remove("kustomization.yaml");
    assert_eq!(listed, manifests, "kustomization.yaml lists every manifest");
    for f in ["configmap.yaml", "rbac.yaml", "deployment.yaml"] {
        assert!(manifests.contains(f), "deploy/{f}");
    }
    manifests
}

pub fn dockerfile_passes_hadolint_and_its_context_holds_every_declared_target() {
    run(Command::new(tool("hadolint"))
        .arg(repo().join("Dockerfile"))
        .current_dir(repo()));

    // Cargo refuses a manifest whose declared targets are missing, so the build context must
    // carry every directory a [[bench]], [[test]] or [[example]] lives in.
    let manifest = fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let dockerfile = fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let ignore = fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let mut needed = vec!["src"];
    for (section, dir) in [
        ("[[bench]]", "benches"),
        ("[[test]]", "tests"),
        ("[[example]]", "examples"),
    ] {
        if manifest.lines().any(|l| l.trim() == section) {
            needed.push(dir);
        }
    }
    if repo().join("build.rs").exists() {
        needed.push("build.rs");
    }
    // Crates patched in from the repository ([patch.crates-io] with a path under vendor/).
    if manifest.contains("path = \"vendor/") {
        needed.push("vendor");
    }
    for dir in needed {
        assert!(
            ignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == format!("!{dir}")),
            ".dockerignore must let {dir} into the build context"
        );
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY ") && l.contains(&format!(" {dir}"))),
            "the Dockerfile must COPY {dir}"
        );
    }
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/auditrail\"]"));
    assert!(dockerfile.contains("USER 65532:65532"));
}
