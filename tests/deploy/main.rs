//! The Helm chart (`helm/auditrail`), the plain manifests rendered from it (`deploy/`), an
//! application chart that includes the sidecar (`helm/example-app`) and the `Dockerfile`,
//! checked with the real tools.
//!
//! There is no Kubernetes cluster and no container engine on our machines; these stand in
//! ([`tools`]):
//! - `helm lint --strict` and `helm template` for the defaults and every `ci/*-values.yaml`
//!   ([`chart`], [`docs`], [`library`]; the renders are read back by [`render`]);
//! - `kubernetes-validate --strict` (Kubernetes' own OpenAPI schemas, offline) on every rendered
//!   object and on `deploy/`, against the oldest Kubernetes the chart supports and the newest
//!   the tool knows. It has no schema for the prometheus-operator CRDs (ServiceMonitor,
//!   PodMonitor): those are checked field by field against the Service and pods they select
//!   ([`monitors`]), like every cross-reference a schema cannot see: volume names, ConfigMap
//!   and ServiceAccount names, probe ports, RBAC against what the config needs ([`objects`],
//!   [`wiring`]);
//! - `hadolint` on the Dockerfile ([`manifests`]);
//! - the real `auditrail` binary with the rendered ConfigMap and the environment the chart
//!   gives the container: `validate` and `check` ([`binary`]), and `run` in a directory laid
//!   out like the container's mounts ([`container`]);
//! - `deploy/` compared with a fresh `scripts/render-deploy.sh`, so the two never drift
//!   ([`manifests`]);
//! - the pod as a node runs it, read from the rendered pods: the sidecar's user and groups
//!   against `root:root 0640` log files, its probes, native sidecar and grace period, which
//!   container holds the API token ([`lifecycle`]); the shipped alerts against the job the
//!   monitors give their targets ([`alerting`]);
//! - the newcomer's path through the READMEs ([`newcomer`]), the chart's extension points
//!   ([`extras`], [`extras2`]), the Pod Security level of each mode, by a re-implementation of
//!   the Pod Security Standards checks ([`podsecurity`]), and the injection policy, its patch
//!   applied by hand since no API server runs here ([`injection`]).
//!
//! The tools come from `bash scripts/deploy-tools.sh` (into `$HOME/.local/auditrail-tools/bin`
//! or `$AUDITRAIL_TOOLS/bin`; PATH is searched last). A missing tool fails the test and says so.
//!
//! Every test is declared here, at the root of the test binary, so that its name stays
//! `<name>` rather than `<module>::<name>` (`cargo test --test deploy <name> -- --exact`); its
//! body is the function of the same name in the module of its concern.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../support/mod.rs"]
mod support;

mod alerting;
mod binary;
mod chart;
mod container;
mod docs;
mod extras;
mod extras2;
mod injection;
mod library;
mod lifecycle;
mod manifests;
mod monitors;
mod newcomer;
mod objects;
mod podsecurity;
mod render;
mod tools;
mod verify_job;
mod wiring;

// === the chart ===

#[test]
fn chart_lints_strictly_with_the_defaults_and_every_scenario() {
    chart::chart_lints_strictly_with_the_defaults_and_every_scenario();
}

#[test]
fn every_scenario_renders_objects_that_kubernetes_accepts_and_that_fit_together() {
    chart::every_scenario_renders_objects_that_kubernetes_accepts_and_that_fit_together();
}

#[test]
fn scenarios_render_what_they_promise() {
    chart::scenarios_render_what_they_promise();
}

#[test]
fn config_changes_roll_the_pods_unless_hot_reload_applies_them() {
    chart::config_changes_roll_the_pods_unless_hot_reload_applies_them();
}

#[test]
fn names_and_labels_are_cut_to_63_characters() {
    chart::names_and_labels_are_cut_to_63_characters();
}

#[test]
fn notes_render_for_every_scenario() {
    docs::notes_render_for_every_scenario();
}

#[test]
fn the_chart_schema_lists_every_built_in_audit_format() {
    docs::the_chart_schema_lists_every_built_in_audit_format();
}

#[test]
fn the_chart_schema_takes_the_rules_of_the_example_file() {
    docs::the_chart_schema_takes_the_rules_of_the_example_file();
}

#[test]
fn values_are_documented_line_by_line() {
    docs::values_are_documented_line_by_line();
}

// === the sidecar library, as an application's chart uses it ===

#[test]
fn an_application_chart_adds_the_sidecar_with_three_lines() {
    library::an_application_chart_adds_the_sidecar_with_three_lines();
}

// === a new user following the READMEs (issue 14, finding 9) ===

#[test]
fn the_readme_builds_and_pushes_the_image_and_builds_the_dependency() {
    newcomer::the_readme_builds_and_pushes_the_image_and_builds_the_dependency();
}

#[test]
fn an_include_pasted_into_a_with_block_fails_rendering() {
    newcomer::an_include_pasted_into_a_with_block_fails_rendering();
}

#[test]
fn the_demo_alone_needs_no_kafka() {
    newcomer::the_demo_alone_needs_no_kafka();
}

#[test]
fn the_sidecar_can_be_switched_off() {
    newcomer::the_sidecar_can_be_switched_off();
}

#[test]
fn standalone_mode_and_deploy_share_no_names() {
    newcomer::standalone_mode_and_deploy_share_no_names();
}

// === what users of other log shippers' charts expect (issue 14, finding 10) ===

#[test]
fn the_sidecar_takes_env_from_volumes_and_a_startup_probe() {
    extras::the_sidecar_takes_env_from_volumes_and_a_startup_probe();
}

#[test]
fn an_existing_config_map_replaces_the_rendered_one() {
    extras2::an_existing_config_map_replaces_the_rendered_one();
}

#[test]
fn the_config_is_templated() {
    extras2::the_config_is_templated();
}

#[test]
fn the_guaranteed_preset_sets_requests_equal_to_limits() {
    extras2::the_guaranteed_preset_sets_requests_equal_to_limits();
}

#[test]
fn the_prometheus_rule_carries_the_shipped_alerts() {
    extras2::the_prometheus_rule_carries_the_shipped_alerts();
}

#[test]
fn the_dashboard_configmap_carries_the_shipped_dashboard() {
    extras2::the_dashboard_configmap_carries_the_shipped_dashboard();
}

#[test]
fn the_monitors_pass_job_label_and_relabelings_through() {
    extras2::the_monitors_pass_job_label_and_relabelings_through();
}

#[test]
fn a_network_policy_opens_kafka_dns_and_metrics_only_when_asked() {
    extras2::a_network_policy_opens_kafka_dns_and_metrics_only_when_asked();
}

#[test]
fn the_sidecar_takes_lifecycle_hooks_and_probe_overrides() {
    extras2::the_sidecar_takes_lifecycle_hooks_and_probe_overrides();
}

#[test]
fn the_readme_says_what_openshift_needs() {
    extras2::the_readme_says_what_openshift_needs();
}

// === the pod as a node runs it (issue 14) ===

#[test]
fn the_sidecar_can_read_root_owned_0640_logs() {
    lifecycle::the_sidecar_can_read_root_owned_0640_logs();
}

#[test]
fn a_kafka_outage_does_not_take_the_application_out_of_service() {
    lifecycle::a_kafka_outage_does_not_take_the_application_out_of_service();
}

#[test]
fn the_sidecar_outlives_the_application_and_has_time_to_drain() {
    lifecycle::the_sidecar_outlives_the_application_and_has_time_to_drain();
}

#[test]
fn the_application_container_gets_no_api_token() {
    lifecycle::the_application_container_gets_no_api_token();
}

#[test]
fn the_sidecar_never_asks_the_api_for_what_rbac_does_not_grant() {
    lifecycle::the_sidecar_never_asks_the_api_for_what_rbac_does_not_grant();
}

#[test]
fn checkpoints_on_the_node_or_a_claim_are_writable_by_the_sidecar() {
    lifecycle::checkpoints_on_the_node_or_a_claim_are_writable_by_the_sidecar();
}

#[test]
fn the_shipped_alerts_fire_for_the_pods_a_pod_monitor_scrapes() {
    alerting::the_shipped_alerts_fire_for_the_pods_a_pod_monitor_scrapes();
}

// === Pod Security and injection (issue 14: finding 4, deliverables 5 and 6) ===

#[test]
fn each_source_mode_meets_the_pod_security_level_the_readme_states() {
    podsecurity::each_source_mode_meets_the_pod_security_level_the_readme_states();
}

#[test]
fn the_file_source_needs_a_privileged_namespace_only_for_its_host_path() {
    podsecurity::the_file_source_needs_a_privileged_namespace_only_for_its_host_path();
}

#[test]
fn the_pod_security_checks_reject_each_control_the_standards_name() {
    podsecurity::the_pod_security_checks_reject_each_control_the_standards_name();
}

#[test]
fn the_injection_policy_in_deploy_is_a_fresh_render_and_valid() {
    injection::the_injection_policy_in_deploy_is_a_fresh_render_and_valid();
}

#[test]
fn a_pod_labelled_for_injection_gets_the_charts_native_sidecar_and_volumes() {
    injection::a_pod_labelled_for_injection_gets_the_charts_native_sidecar_and_volumes();
}

#[test]
fn pods_not_asking_for_the_sidecar_or_already_carrying_it_are_left_alone() {
    injection::pods_not_asking_for_the_sidecar_or_already_carrying_it_are_left_alone();
}

// === deploy/ and the Dockerfile ===

#[test]
fn deploy_manifests_are_a_fresh_render_of_the_chart_and_valid() {
    manifests::deploy_manifests_are_a_fresh_render_of_the_chart_and_valid();
}

#[test]
fn the_verify_cronjob_is_valid_and_runs_verify_with_the_sidecars_config() {
    verify_job::the_verify_cronjob_is_valid_and_runs_verify_with_the_sidecars_config();
}

#[test]
fn dockerfile_passes_hadolint_and_its_context_holds_every_declared_target() {
    manifests::dockerfile_passes_hadolint_and_its_context_holds_every_declared_target();
}

// === the rendered config in the real binary ===

#[test]
fn the_binary_validates_and_checks_with_every_rendered_config_and_env() {
    binary::the_binary_validates_and_checks_with_every_rendered_config_and_env();
}

#[test]
fn the_demo_application_writes_records_in_every_seed_format() {
    binary::the_demo_application_writes_records_in_every_seed_format();
}

#[test]
fn the_sidecar_runs_with_the_rendered_config_mounts_and_env() {
    container::the_sidecar_runs_with_the_rendered_config_mounts_and_env();
}
