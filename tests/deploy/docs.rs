//! What the chart tells the people who install it: NOTES.txt renders for every scenario
//! without a missing value, and every leaf of values.yaml has a `# key -- what it does` line
//! (the format helm-docs reads).

use std::fs;
use std::process::Command;

use crate::render::{defaults_and, scenarios};
use crate::support::tempdir;
use crate::tools::{chart, copy_dir, run, tool};

pub fn notes_render_for_every_scenario() {
    // `helm template` does not render NOTES.txt and `helm install --dry-run` needs a cluster:
    // render it through `tpl` from a template in a copy of the chart.
    let dir = tempdir();
    let copy = dir.path().join("auditrail");
    copy_dir(&chart(), &copy);
    fs::copy(copy.join("templates/NOTES.txt"), copy.join("NOTES.copy")).unwrap();
    fs::write(
        copy.join("templates/zz-notes.yaml"),
        "{{- $notes := tpl (.Files.Get \"NOTES.copy\") . }}\n# {{ $notes | replace \"\\n\" \"\\n# \" }}\n",
    )
    .unwrap();
    for (_, values) in defaults_and(scenarios()) {
        let mut cmd = Command::new(tool("helm"));
        cmd.args([
            "template",
            "audit",
            "--show-only",
            "templates/zz-notes.yaml",
        ])
        .arg(&copy);
        if let Some(v) = &values {
            cmd.arg("--values").arg(v);
        }
        let notes = run(&mut cmd);
        assert!(
            notes.contains("Config: ConfigMap ")
                && notes.contains("Source: ")
                && !notes.contains("<no value>"),
            "{values:?}:\n{notes}"
        );
    }
}

/// Keys inside free-form blocks: auditrail's config, resources and securityContexts are
/// documented by their own references.
const FREE_FORM: &[&str] = &[
    "config.",
    "resources.",
    "securityContext.",
    "podSecurityContext.",
    "demo.resources.",
    "demo.securityContext.",
];

pub fn values_are_documented_line_by_line() {
    // Every leaf key of values.yaml has a `# <path> -- <what it does>` comment above it, except
    // inside the FREE_FORM blocks.
    let text = fs::read_to_string(chart().join("values.yaml")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut undocumented = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((path, is_leaf)) = key_path(line, &mut stack) else {
            continue;
        };
        if !is_leaf || FREE_FORM.iter().any(|f| path.starts_with(f)) {
            continue;
        }
        let comment: Vec<&str> = lines[..i]
            .iter()
            .rev()
            .take_while(|l| l.trim_start().starts_with('#'))
            .copied()
            .collect();
        if !comment
            .iter()
            .any(|c| c.trim_start().starts_with(&format!("# {path} -- ")))
        {
            undocumented.push(path);
        }
    }
    assert!(
        undocumented.is_empty(),
        "values.yaml keys without a `# key -- what it does` line: {undocumented:?}"
    );
}

/// The dotted path of the key `line` of values.yaml sets, and whether it is a leaf (has a
/// value on its line); `None` for blank lines, comments, sequence items and continuations.
/// `stack` holds the (indent, key) of the enclosing keys, and is updated.
fn key_path(line: &str, stack: &mut Vec<(usize, String)>) -> Option<(String, bool)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
        return None;
    }
    let indent = line.len() - trimmed.len();
    let (key, rest) = trimmed.split_once(':')?;
    if key.contains(' ') || key.contains('[') {
        return None; // a continuation line of a flow sequence
    }
    while stack.last().is_some_and(|(d, _)| *d >= indent) {
        stack.pop();
    }
    let path = stack
        .iter()
        .map(|(_, k)| k.as_str())
        .chain([key])
        .collect::<Vec<_>>()
        .join(".");
    stack.push((indent, key.to_string()));
    Some((path, !rest.trim().is_empty()))
}

/// The chart's schema offers exactly the binary's built-in audit formats (in `audit.formats`
/// and as the keys of `audit.ids`), so a format added to `extract/` and forgotten in the
/// schema (or the reverse) fails here.
pub fn the_chart_schema_lists_every_built_in_audit_format() {
    let text = fs::read_to_string(chart().join("values.schema.json")).unwrap();
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    let formats = find_key(&schema, "formats").expect("the schema describes audit.formats");
    let offered: Vec<&str> = formats["items"]["enum"]
        .as_array()
        .expect("audit.formats lists its values")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let built_in: Vec<&str> = auditrail::extract::builtin_names().collect();
    assert_eq!(offered, built_in);
    // `audit.ids` is keyed by the same names.
    let ids = find_key(&schema, "ids").expect("the schema describes audit.ids");
    let keyed: Vec<&str> = ids["propertyNames"]["enum"]
        .as_array()
        .expect("audit.ids lists its keys")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(keyed, built_in);
}

/// The chart's schema takes every key a custom rule has: the rules of
/// `examples/rules-as-formats.yaml` (the README's "Writing a format as a rule") render, and a
/// misspelt key, which the binary refuses, is refused by `helm` already.
pub fn the_chart_schema_takes_the_rules_of_the_example_file() {
    let dir = tempdir();
    let example =
        fs::read_to_string(crate::tools::repo().join("examples/rules-as-formats.yaml")).unwrap();
    let audit = &example[example.find("audit:").unwrap()..];
    // Under `config:`, indented one level.
    let indented: String = audit.lines().map(|l| format!("  {l}\n")).collect();
    let good = dir.path().join("rules.yaml");
    fs::write(&good, format!("config:\n{indented}")).unwrap();
    let rendered = crate::render::render(Some(&good), &[]);
    // The rules reach the sidecar's config as written, regex backslashes included.
    let config = crate::render::config(&crate::render::objects(&rendered));
    let want = crate::render::yaml("the example", audit);
    assert_eq!(config["audit"], want["audit"]);

    let bad = dir.path().join("bad.yaml");
    let misspelt = format!(
        "config:\n{}",
        indented.replacen("require_type:", "requires_type:", 1)
    );
    fs::write(&bad, misspelt).unwrap();
    let out = Command::new(tool("helm"))
        .args(["template", "audit", "--namespace", "shop"])
        .arg(chart())
        .arg("--values")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a misspelt rule key renders");
    assert!(stderr.contains("requires_type"), "{stderr}");
}

/// The first value under `key`, anywhere in `value`.
fn find_key<'a>(value: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}
