//! More of what users of the fluent-bit and vector charts expect (issue 14, finding 10): a
//! ConfigMap they manage themselves, a Guaranteed-QoS resources preset, the shipped alerts as a
//! PrometheusRule, monitor `jobLabel`/relabelings, a NetworkPolicy, `lifecycle` hooks and full
//! probe objects.

use std::fs;
use std::process::Command;

use serde_json::Value;

use crate::library::render_example_app;
use crate::objects::check_objects;
use crate::render::{config_text, kind, objects, of_kind, pods, render, seq, sidecar, yaml};
use crate::support::tempdir;
use crate::tools::{chart, kubernetes_validate, repo, run, tool};

/// Renders with `values` written to a file, and returns the objects.
fn render_with(values: &str) -> Vec<Value> {
    let dir = tempdir();
    let file = dir.path().join("values.yaml");
    fs::write(&file, values).unwrap();
    objects(&render(Some(&file), &[]))
}

/// `helm template` with `values` that must fail; returns helm's error output.
fn render_fails(values: &str) -> String {
    let dir = tempdir();
    let file = dir.path().join("values.yaml");
    fs::write(&file, values).unwrap();
    let out = Command::new(tool("helm"))
        .args(["template", "audit", "--namespace", "shop"])
        .arg(chart())
        .args(["--api-versions", "monitoring.coreos.com/v1", "--values"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{values} renders");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn annotation(objs: &[Value], key: &str) -> Option<String> {
    pods(objs)[0].meta["annotations"][key]
        .as_str()
        .map(str::to_string)
}

// === 1. existingConfigMap ===

pub fn an_existing_config_map_replaces_the_rendered_one() {
    let defaults = objects(&render(None, &["--set", "demo.enabled=true"]));
    let objs = render_with("demo: {enabled: true}\nexistingConfigMap: shop-audit-config\n");
    assert!(
        of_kind(&objs, "ConfigMap")
            .iter()
            .all(|c| c["data"]["auditrail.yaml"].is_null()),
        "no ConfigMap of the chart's own"
    );
    let pod = &pods(&objs)[0];
    let volume = seq(&pod.spec["volumes"])
        .into_iter()
        .find(|v| v["name"] == "auditrail-config")
        .unwrap();
    assert_eq!(volume["configMap"]["name"], "shop-audit-config");
    // Mounted as a directory (no subPath), so an edit of the ConfigMap reaches the file the
    // binary watches (hot reload).
    let side = sidecar(&pod.spec).unwrap();
    let mount = seq(&side["volumeMounts"])
        .into_iter()
        .find(|m| m["name"] == "auditrail-config")
        .unwrap();
    assert_eq!(mount["mountPath"], "/etc/auditrail");
    assert!(mount["subPath"].is_null());
    // The user's ConfigMap (here the chart's own, renamed) completes the references.
    let mut theirs = of_kind(&defaults, "ConfigMap")[0].clone();
    theirs["metadata"]["name"] = "shop-audit-config".into();
    let mut with_theirs = objs.clone();
    with_theirs.push(theirs);
    check_objects("existingConfigMap", &with_theirs);
    // The checksum annotation still rolls the pods when the ConfigMap changes: it covers the
    // name (and, at install or upgrade, the data helm reads from the cluster).
    let one = annotation(&objs, "checksum/config").expect("checksum/config");
    let other = render_with("demo: {enabled: true}\nexistingConfigMap: shop-audit-config-v2\n");
    assert_ne!(Some(one), annotation(&other, "checksum/config"));
    // With hot reload the binary applies the changes itself.
    let hot = render_with(
        "demo: {enabled: true}\nexistingConfigMap: shop-audit-config\nhotReload: true\n",
    );
    assert!(annotation(&hot, "checksum/config").is_none());
}

pub fn the_config_is_templated() {
    let values = "config:\n\
                  \x20 outputs: {kafka: {brokers: \"kafka.{{ .Release.Namespace }}.svc:9092\"}}\n\
                  \x20 retention:\n\
                  \x20   classes: {standard: {days: 60, topic: \"{{ .Release.Name }}-audit\"}}\n";
    let objs = render_with(values);
    check_objects("templated", &objs);
    let cfg = yaml("auditrail.yaml", &config_text(&objs));
    assert_eq!(cfg["outputs"]["kafka"]["brokers"], "kafka.shop.svc:9092");
    assert_eq!(
        cfg["retention"]["classes"]["standard"]["topic"],
        "audit-audit"
    );
    // In an application's chart too, with the application's release.
    let dir = tempdir();
    let file = dir.path().join("values.yaml");
    fs::write(
        &file,
        values
            .lines()
            .map(|l| format!("  {l}\n"))
            .fold("auditrail:\n".to_string(), |a, l| a + &l),
    )
    .unwrap();
    let objs = objects(&render_example_app(&["--values", file.to_str().unwrap()]));
    let cfg = yaml("auditrail.yaml", &config_text(&objs));
    assert_eq!(cfg["outputs"]["kafka"]["brokers"], "kafka.shop.svc:9092");
    assert_eq!(
        cfg["retention"]["classes"]["standard"]["topic"],
        "shop-audit"
    );
}

// === 2. resourcesPreset ===

pub fn the_guaranteed_preset_sets_requests_equal_to_limits() {
    let side = |objs: &[Value]| sidecar(&pods(objs)[0].spec).unwrap();
    let burstable = side(&objects(&render(None, &["--set", "demo.enabled=true"])));
    assert_ne!(
        burstable["resources"]["requests"],
        burstable["resources"]["limits"]
    );
    let objs = render_with("demo: {enabled: true}\nresourcesPreset: guaranteed\n");
    check_objects("guaranteed", &objs);
    let s = side(&objs);
    assert_eq!(s["resources"]["requests"], s["resources"]["limits"], "{s}");
    assert_eq!(s["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(s["resources"]["limits"]["cpu"], "500m");
    let sized = side(&render_with(
        "demo: {enabled: true}\nresourcesPreset: guaranteed\n\
         resources: {limits: {cpu: 100m, memory: 96Mi}}\n",
    ));
    assert_eq!(sized["resources"]["requests"]["cpu"], "100m");
    assert_eq!(sized["resources"]["requests"]["memory"], "96Mi");
    assert!(render_fails(
        "demo: {enabled: true}\nresourcesPreset: guaranteed\nresources: {limits: {cpu: null}}\n"
    )
    .contains("resourcesPreset guaranteed"));
}

// === 3. PrometheusRule, monitor jobLabel and relabelings ===

pub fn the_prometheus_rule_carries_the_shipped_alerts() {
    let shipped = fs::read_to_string(repo().join("monitoring/alerts.yaml")).unwrap();
    let copy = fs::read_to_string(chart().join("files/alerts.yaml")).unwrap();
    assert_eq!(
        copy, shipped,
        "helm/auditrail/files/alerts.yaml is a copy of monitoring/alerts.yaml"
    );
    assert!(of_kind(&objects(&render(None, &[])), "PrometheusRule").is_empty());
    let objs = render_with("prometheusRule: {enabled: true, labels: {release: prom}}\n");
    let rules = of_kind(&objs, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rules[0]["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        rules[0]["spec"]["groups"],
        yaml("alerts.yaml", &shipped)["groups"]
    );
    // Every scenario that enables it renders it (and the cross-reference checks run on it).
    let scenario = objects(&render(Some(&chart().join("ci/extras-values.yaml")), &[]));
    assert_eq!(of_kind(&scenario, "PrometheusRule").len(), 1);
    assert_eq!(of_kind(&scenario, "NetworkPolicy").len(), 1);
    // The rules select the job the PodMonitor gives its targets, and promtool accepts them.
    let objs = render_with(
        "prometheusRule: {enabled: true}\npodMonitor: {enabled: true, job: shop-audit}\n",
    );
    let text = serde_json::to_string(&of_kind(&objs, "PrometheusRule")[0]["spec"]).unwrap();
    assert!(text.contains("job=\\\"shop-audit\\\"") && !text.contains("job=\\\"auditrail\\\""));
    let dir = tempdir();
    let file = dir.path().join("rules.json");
    fs::write(&file, &text).unwrap();
    run(Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&file));
}

pub fn the_dashboard_configmap_carries_the_shipped_dashboard() {
    let shipped = fs::read_to_string(repo().join("monitoring/grafana-dashboard.json")).unwrap();
    let copy = fs::read_to_string(chart().join("files/grafana-dashboard.json")).unwrap();
    assert_eq!(
        copy, shipped,
        "helm/auditrail/files/grafana-dashboard.json is a copy of monitoring/grafana-dashboard.json"
    );
    let dashboards = |objs: &[Value]| -> Vec<Value> {
        of_kind(objs, "ConfigMap")
            .into_iter()
            .filter(|c| !c["data"]["auditrail.json"].is_null())
            .cloned()
            .collect()
    };
    assert!(dashboards(&objects(&render(None, &[]))).is_empty());
    let objs = render_with("grafanaDashboard: {enabled: true}\n");
    check_objects("dashboard", &objs);
    let cms = dashboards(&objs);
    assert_eq!(cms.len(), 1);
    // The label Grafana's dashboard sidecar looks for by default.
    assert_eq!(cms[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    let parsed: Value = serde_json::from_str(cms[0]["data"]["auditrail.json"].as_str().unwrap())
        .expect("the dashboard is JSON");
    assert_eq!(parsed, serde_json::from_str::<Value>(&shipped).unwrap());
    // It selects the job the monitors give their targets.
    let objs = render_with(
        "grafanaDashboard: {enabled: true, annotations: {grafana_folder: Audit}}\n\
         podMonitor: {enabled: true, job: shop-audit}\n",
    );
    let cm = &dashboards(&objs)[0];
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "Audit");
    let text = cm["data"]["auditrail.json"].as_str().unwrap();
    assert!(text.contains("job=\\\"shop-audit\\\"") && !text.contains("job=\\\"auditrail\\\""));
}

pub fn the_monitors_pass_job_label_and_relabelings_through() {
    let extra =
        "relabelings: [{sourceLabels: [__meta_kubernetes_pod_node_name], targetLabel: node}]";
    let objs = render_with(&format!(
        "mode: standalone\ndemo: {{enabled: true}}\n\
         podMonitor: {{enabled: true, jobLabel: app.kubernetes.io/name, {extra}}}\n\
         serviceMonitor: {{enabled: true, jobLabel: app.kubernetes.io/name, {extra}}}\n"
    ));
    check_objects("monitors", &objs);
    for (k, endpoints) in [
        ("PodMonitor", "podMetricsEndpoints"),
        ("ServiceMonitor", "endpoints"),
    ] {
        let m = of_kind(&objs, k)[0];
        assert_eq!(m["spec"]["jobLabel"], "app.kubernetes.io/name", "{k}");
        let relabelings = seq(&m["spec"][endpoints][0]["relabelings"]);
        assert_eq!(relabelings[0]["targetLabel"], "job", "{k}: the job first");
        assert_eq!(
            relabelings[1]["targetLabel"], "node",
            "{k}: then the user's"
        );
    }
    // `job: ""` leaves the job to jobLabel (or the operator's default).
    let objs = render_with("podMonitor: {enabled: true, job: \"\", jobLabel: app}\n");
    let pm = of_kind(&objs, "PodMonitor")[0];
    assert!(seq(&pm["spec"]["podMetricsEndpoints"][0]["relabelings"])
        .iter()
        .all(|r| r["targetLabel"] != "job"));
}

// === 4. NetworkPolicy ===

pub fn a_network_policy_opens_kafka_dns_and_metrics_only_when_asked() {
    assert!(of_kind(
        &objects(&render(None, &["--set", "mode=standalone"])),
        "NetworkPolicy"
    )
    .is_empty());
    // Never in sidecar mode: it would select, and restrict, the application's pods.
    assert!(of_kind(
        &objects(&render(None, &["--set", "networkPolicy.enabled=true"])),
        "NetworkPolicy"
    )
    .is_empty());
    let dir = tempdir();
    let values = dir.path().join("np.yaml");
    fs::write(
        &values,
        "mode: standalone\nnetworkPolicy: {enabled: true}\n\
         config: {outputs: {kafka: {brokers: \"b-1.kafka:9094,b-2.kafka:9094,b-3.kafka:9096\"}}}\n",
    )
    .unwrap();
    let text = render(Some(&values), &[]);
    let rendered = dir.path().join("rendered.yaml");
    fs::write(&rendered, &text).unwrap();
    kubernetes_validate(&rendered);
    let objs = objects(&text);
    let nps = of_kind(&objs, "NetworkPolicy");
    assert_eq!(nps.len(), 1);
    let spec = &nps[0]["spec"];
    assert_eq!(
        spec["podSelector"]["matchLabels"]["auditrail/sidecar"],
        "audit-auditrail"
    );
    assert_eq!(
        seq(&spec["policyTypes"]),
        vec![Value::from("Ingress"), Value::from("Egress")]
    );
    let ports = |rules: &Value| -> Vec<(String, i64)> {
        seq(rules)
            .iter()
            .flat_map(|r| seq(&r["ports"]))
            .map(|p| {
                (
                    p["protocol"].as_str().unwrap().to_string(),
                    p["port"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let egress = ports(&spec["egress"]);
    for p in [("TCP", 9094), ("TCP", 9096), ("UDP", 53), ("TCP", 53)] {
        assert!(
            egress.contains(&(p.0.to_string(), p.1)),
            "{p:?}: {egress:?}"
        );
    }
    assert_eq!(egress.len(), 4, "{egress:?}");
    assert_eq!(ports(&spec["ingress"]), vec![("TCP".to_string(), 9464)]);
}

// === 5. lifecycle and full probe objects ===

pub fn the_sidecar_takes_lifecycle_hooks_and_probe_overrides() {
    let objs = render_with(
        "demo: {enabled: true}\n\
         lifecycle: {preStop: {sleep: {seconds: 5}}}\n\
         probes:\n\
         \x20 liveness: {periodSeconds: 20, failureThreshold: 6, initialDelaySeconds: 3, terminationGracePeriodSeconds: 10}\n\
         \x20 readiness: {successThreshold: 2}\n\
         \x20 startup: {enabled: true, tcpSocket: {port: metrics}}\n",
    );
    check_objects("lifecycle", &objs);
    let side = sidecar(&pods(&objs)[0].spec).unwrap();
    assert_eq!(side["lifecycle"]["preStop"]["sleep"]["seconds"], 5);
    let live = &side["livenessProbe"];
    assert_eq!(live["periodSeconds"], 20);
    assert_eq!(live["failureThreshold"], 6);
    assert_eq!(live["initialDelaySeconds"], 3);
    assert_eq!(live["terminationGracePeriodSeconds"], 10);
    assert_eq!(live["httpGet"]["path"], "/healthz");
    assert_eq!(side["readinessProbe"]["successThreshold"], 2);
    assert_eq!(side["readinessProbe"]["httpGet"]["path"], "/startupz");
    // A handler of the user's replaces the chart's.
    let startup = &side["startupProbe"];
    assert_eq!(startup["tcpSocket"]["port"], "metrics");
    assert!(startup["httpGet"].is_null(), "{startup}");
    let dir = tempdir();
    let file = dir.path().join("rendered.yaml");
    fs::write(
        &file,
        objs.iter()
            .filter(|o| kind(o) == "Deployment")
            .map(|o| serde_json::to_string(o).unwrap())
            .collect::<Vec<_>>()
            .join("\n---\n"),
    )
    .unwrap();
    kubernetes_validate(&file);
    // Defaults: no lifecycle.
    let side =
        sidecar(&pods(&objects(&render(None, &["--set", "demo.enabled=true"])))[0].spec).unwrap();
    assert!(side["lifecycle"].is_null());
}

// === 6. OpenShift ===

pub fn the_readme_says_what_openshift_needs() {
    let readme = fs::read_to_string(chart().join("README.md")).unwrap();
    for needle in [
        "OpenShift",
        "SCC",
        "restricted-v2",
        "seLinuxOptions",
        "allowHostDirVolumePlugin",
    ] {
        assert!(readme.contains(needle), "README.md mentions {needle}");
    }
}
