//! The example CronJob that runs `auditrail verify` (`deploy/verify/cronjob.yaml`): valid for
//! Kubernetes, wired to what `deploy/` installs (the sidecar's ConfigMap and image), and its
//! command line one the binary takes with that config.

use std::fs;
use std::process::Command;

use serde_json::Value;

use crate::render::{config_text, name, objects, of_kind, seq};
use crate::support::{bin, tempdir};
use crate::tools::{kubernetes_validate, repo};

pub fn the_verify_cronjob_is_valid_and_runs_verify_with_the_sidecars_config() {
    let path = repo().join("deploy/verify/cronjob.yaml");
    kubernetes_validate(&path);
    let job = objects(&fs::read_to_string(&path).unwrap());
    let deploy = objects(
        &["configmap.yaml", "deployment.yaml"]
            .map(|f| fs::read_to_string(repo().join("deploy").join(f)).unwrap())
            .join("\n---\n"),
    );
    let cronjobs = of_kind(&job, "CronJob");
    assert_eq!(cronjobs.len(), 1);
    let pod = &cronjobs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let containers = seq(&pod["containers"]);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The sidecar's image and its ConfigMap, mounted where --config looks.
    let sidecar_image = of_kind(&deploy, "Deployment")[0]["spec"]["template"]["spec"]
        ["initContainers"][0]["image"]
        .clone();
    assert_eq!(c["image"], sidecar_image, "the sidecar's image");
    let args: Vec<String> = seq(&c["args"])
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args[0], "verify");
    let arg = |flag: &str| {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag}"));
        args[at + 1].clone()
    };
    let config_map = of_kind(&deploy, "ConfigMap")[0];
    let mounted = |file: &str| -> Value {
        let mount = seq(&c["volumeMounts"])
            .into_iter()
            .find(|m| file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
            .unwrap_or_else(|| panic!("{file} is in a mounted volume"));
        let volume = seq(&pod["volumes"])
            .into_iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        volume["configMap"].clone()
    };
    let config = arg("--config");
    assert_eq!(
        mounted(&config)["name"],
        name(config_map),
        "the sidecar's ConfigMap"
    );
    assert!(config.ends_with("/auditrail.yaml"));
    assert!(
        !mounted(&arg("--public-key")).is_null(),
        "the public key from a ConfigMap"
    );

    // The binary takes that command line with the sidecar's config: it gets as far as the
    // broker (none here: a connection error, exit 2), not a usage or config error.
    let dir = tempdir();
    let file = dir.path().join("auditrail.yaml");
    fs::write(&file, config_text(&deploy)).unwrap();
    let key = openssl::pkey::PKey::generate_ed25519().unwrap();
    let public = dir.path().join("ed25519.pub.pem");
    fs::write(&public, key.public_key_to_pem().unwrap()).unwrap();
    let mut local: Vec<String> = args[1..].to_vec();
    let at = local.iter().position(|a| a == "--config").unwrap();
    local[at + 1] = file.display().to_string();
    let at = local.iter().position(|a| a == "--public-key").unwrap();
    local[at + 1] = public.display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin())
        .arg("verify")
        .args(&local)
        .args(["--brokers", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot read the partitions of topic"),
        "a connection error, not a config one: {stderr}"
    );
}
