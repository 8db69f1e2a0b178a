//! A new user following only the READMEs (issue 14, finding 9): the image they must build and
//! push, the `helm dependency build` an application chart needs, the include lines pasted into
//! a `helm create` chart, the demo with no Kafka around, switching the sidecar off, and
//! standalone mode installed beside `deploy/`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::library::render_example_app;
use crate::objects::check_objects;
use crate::render::{config, kind, name, objects, of_kind, pods, seq, sidecar, yaml};
use crate::support::tempdir;
use crate::tools::{chart, copy_dir, kubernetes_validate, repo, run, tool};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn app_version() -> String {
    let chart_yaml = yaml("Chart.yaml", &read(&chart().join("Chart.yaml")));
    chart_yaml["appVersion"].as_str().unwrap().to_string()
}

/// The chart's README says how to build the image the chart runs (with the tag the chart
/// defaults to), push it and point the chart at it; both READMEs say to run
/// `helm dependency build` before rendering an application chart.
pub fn the_readme_builds_and_pushes_the_image_and_builds_the_dependency() {
    let readme = read(&chart().join("README.md"));
    let version = app_version();
    let build = readme
        .lines()
        .find(|l| l.trim_start().starts_with("docker build "))
        .expect("helm/auditrail/README.md has a `docker build` step");
    assert!(
        build.contains(&format!("/auditrail:{version} ")),
        "the README builds the tag the chart runs by default (appVersion {version}): {build}"
    );
    assert!(
        readme
            .lines()
            .any(|l| l.trim_start().starts_with("docker push ")
                && l.contains(&format!("/auditrail:{version}"))),
        "helm/auditrail/README.md has a `docker push` step"
    );
    assert!(
        readme.contains("image.repository"),
        "the README points the chart at the pushed image"
    );
    assert!(
        readme.contains("helm dependency build"),
        "helm/auditrail/README.md says to run `helm dependency build`"
    );
    let example = read(&repo().join("helm/example-app/README.md"));
    assert!(
        example.contains("helm dependency build helm/example-app"),
        "helm/example-app/README.md says how to build its dependency"
    );
}

/// A chart made by `helm create` with auditrail as a dependency (built), its deployment.yaml
/// changed by `edit`, `values` appended to its values.yaml.
fn helm_create_chart(dir: &Path, edit: impl Fn(&str) -> String, values: &str) -> PathBuf {
    run(Command::new(tool("helm"))
        .args(["create", "shop"])
        .current_dir(dir));
    copy_dir(&chart(), &dir.join("auditrail"));
    let app = dir.join("shop");
    let chart_yaml = app.join("Chart.yaml");
    let mut text = read(&chart_yaml);
    text.push_str(
        "dependencies:\n  - name: auditrail\n    version: 0.1.0\n    repository: file://../auditrail\n",
    );
    fs::write(&chart_yaml, text).unwrap();
    let deployment = app.join("templates/deployment.yaml");
    fs::write(&deployment, edit(&read(&deployment))).unwrap();
    let values_yaml = app.join("values.yaml");
    let mut text = read(&values_yaml);
    text.push_str(values);
    fs::write(&values_yaml, text).unwrap();
    run(Command::new(tool("helm"))
        .args(["dependency", "build"])
        .arg(&app));
    app
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "helm create's template has {from:?}"
    );
    text.replacen(from, to, 1)
}

/// The lines every placement shares: the grace period and the native sidecar.
fn add_sidecar(text: &str) -> String {
    let text = replace_once(
        text,
        "      serviceAccountName:",
        "      {{- include \"auditrail.sidecar.terminationGracePeriodSeconds\" . | nindent 6 }}\n      serviceAccountName:",
    );
    replace_once(
        &text,
        "      containers:\n",
        "      initContainers:\n        {{- include \"auditrail.sidecar.initContainer\" . | nindent 8 }}\n      containers:\n",
    )
}

const WITH_ANNOTATIONS: &str =
    "      {{- with .Values.podAnnotations }}\n      annotations:\n        {{- toYaml . | nindent 8 }}\n";
const WITH_VOLUMES: &str =
    "      {{- with .Values.volumes }}\n      volumes:\n        {{- toYaml . | nindent 8 }}\n      {{- end }}\n";

fn helm_template(app: &Path) -> Output {
    Command::new(tool("helm"))
        .args(["template", "shop", "--namespace", "shop"])
        .arg(app)
        .output()
        .expect("run helm")
}

/// The include lines pasted into `helm create`'s `with` blocks: `.` there is the block's value,
/// not the chart's context, and rendering fails saying so (before, it failed with Go's
/// "can't evaluate field Subcharts"; with an empty list the block is skipped, and the pod got
/// the sidecar's mounts without its volumes). The placement the README gives for such a chart
/// renders a volume for every mount, with and without the chart's own volumes.
pub fn an_include_pasted_into_a_with_block_fails_rendering() {
    let dir = tempdir();
    let mistaken = helm_create_chart(
        dir.path(),
        |t| {
            let t = add_sidecar(t);
            let t = replace_once(
                &t,
                WITH_ANNOTATIONS,
                &format!("{WITH_ANNOTATIONS}        {{{{- include \"auditrail.sidecar.podAnnotations\" . | nindent 8 }}}}\n"),
            );
            replace_once(
                &t,
                WITH_VOLUMES,
                "      {{- with .Values.volumes }}\n      volumes:\n        {{- toYaml . | nindent 8 }}\n        {{- include \"auditrail.sidecar.volumes\" . | nindent 8 }}\n      {{- end }}\n",
            )
        },
        "podAnnotations: {team: shop}\nvolumes: [{name: tmp, emptyDir: {}}]\n",
    );
    let out = helm_template(&mistaken);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the mistaken chart must not render");
    assert!(
        stderr.contains("auditrail.sidecar.")
            && stderr.contains("not the chart's context")
            && stderr.contains("`$`"),
        "the failure names the include and the fix:\n{stderr}"
    );

    // The README's placement for a `helm create` chart.
    let readme = read(&chart().join("README.md"));
    let marker = "In a chart made by `helm create`";
    let after = &readme[readme.find(marker).expect("the README covers helm create")..];
    let block = after
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block follows");
    for values in ["", "volumes: [{name: tmp, emptyDir: {}}]\n"] {
        let sub = tempdir();
        let placed = helm_create_chart(
            sub.path(),
            |t| replace_once(&add_sidecar(t), WITH_VOLUMES, block),
            values,
        );
        let out = helm_template(&placed);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let objs = objects(&String::from_utf8_lossy(&out.stdout));
        let pod = &pods(&objs)[0];
        let side = sidecar(&pod.spec).expect("the sidecar is there");
        let volumes: BTreeSet<String> = seq(&pod.spec["volumes"])
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        for m in seq(&side["volumeMounts"]) {
            let m = m["name"].as_str().unwrap();
            assert!(volumes.contains(m), "{values:?}: mount {m} has no volume");
        }
        if !values.is_empty() {
            assert!(volumes.contains("tmp"), "the chart's own volume stays");
        }
    }
}

/// `--set demo.enabled=true` alone, as the README offers it: the demo ships to stdout, so it
/// needs no Kafka to run (and the sidecar, with no broker to wait for, is ready).
pub fn the_demo_alone_needs_no_kafka() {
    let objs = objects(&crate::render::render(
        None,
        &["--set", "demo.enabled=true"],
    ));
    let cfg = config(&objs);
    let outputs: BTreeSet<&str> = cfg["outputs"]
        .as_object()
        .expect("outputs")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(outputs, BTreeSet::from(["stdout"]), "{cfg}");
    check_objects("demo.enabled=true", &objs);
    // The demo with the config's own outputs, when asked for.
    let objs = objects(&crate::render::render(
        None,
        &["--set", "demo.enabled=true", "--set", "demo.output=config"],
    ));
    assert!(config(&objs)["outputs"]["kafka"].is_object());
}

/// `auditrail.enabled: false` in an application's values (a `condition:` on the dependency
/// would remove the templates the includes need): the includes render nothing and the chart
/// renders no object; the pod is the application's alone and still valid.
pub fn the_sidecar_can_be_switched_off() {
    let yaml_text = render_example_app(&["--set", "auditrail.enabled=false"]);
    let objs = objects(&yaml_text);
    let kinds: BTreeSet<&str> = objs.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Deployment", "ServiceAccount"]),
        "only the application's objects"
    );
    let pod = &pods(&objs)[0];
    assert!(sidecar(&pod.spec).is_none());
    assert!(pod.meta["annotations"]["checksum/config"].is_null());
    assert!(pod.meta["labels"]["auditrail/sidecar"].is_null());
    let dir = tempdir();
    let file = dir.path().join("off.yaml");
    fs::write(&file, &yaml_text).unwrap();
    kubernetes_validate(&file);
    // The chart on its own, too: standalone with the demo renders nothing.
    let alone = crate::render::render(
        None,
        &[
            "--set",
            "enabled=false",
            "--set",
            "mode=standalone",
            "--set",
            "demo.enabled=true",
        ],
    );
    assert!(objects(&alone).is_empty(), "{alone}");
}

/// `deploy/` applied, then the chart installed in standalone mode in the same namespace (under
/// the release names a user would pick): no object of one has the name of one of the other,
/// so neither `kubectl apply` nor `helm install` trips over the other's objects.
pub fn standalone_mode_and_deploy_share_no_names() {
    let mut deployed = String::new();
    for f in fs::read_dir(repo().join("deploy")).unwrap() {
        let f = f.unwrap().path();
        // deploy/injection/ holds the cluster-scoped injection policy, named apart.
        if f.is_file() && f.file_name().unwrap() != "kustomization.yaml" {
            deployed.push_str("---\n");
            deployed.push_str(&read(&f));
        }
    }
    let named = |objs: &[Value]| -> BTreeSet<(String, String)> {
        objs.iter()
            .map(|o| (kind(o).to_string(), name(o).to_string()))
            .collect()
    };
    let deploy_names = named(&objects(&deployed));
    assert!(!of_kind(&objects(&deployed), "ConfigMap").is_empty());
    for release in ["auditrail", "audit", "shop"] {
        for demo in ["false", "true"] {
            let text = run(Command::new(tool("helm"))
                .args(["template", release, "--namespace", "default"])
                .arg(chart())
                .args(["--set", "mode=standalone", "--set"])
                .arg(format!("demo.enabled={demo}")));
            let clash: Vec<_> = named(&objects(&text))
                .intersection(&deploy_names)
                .cloned()
                .collect();
            assert!(
                clash.is_empty(),
                "release {release} (demo {demo}) renders objects deploy/ has: {clash:?}"
            );
        }
    }
}
