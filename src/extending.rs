//! What extending auditrail takes, shown by tests rather than told.
//!
//! A new audit format is its own file under `extract/`, its `mod` line and one entry in the
//! list of built-in formats in `extract/mod.rs`: the toy format (`extract/toy.rs`, test-only)
//! is registered that way, and the config takes it, the default enables it, the pre-check
//! selects its lines, and no custom rule may take its name.
//!
//! A new output is its own file or folder under `output/`, its `mod` line and one line in the
//! registry of `output/mod.rs`: the toy output (`output/toy.rs`, test-only) is registered that
//! way, and these tests show that everything else (its config section and its validation,
//! its type filter and the records' routing, reload, start, health, fan-out, acknowledgement,
//! drain, metrics) comes with it.

use tokio::sync::watch;

use crate::ack::Progress;
use crate::config::Config;
use crate::envelope::Record;
use crate::extract::{builtin_names, AuditConfig, Extraction, Extractor, InvalidReason};
use crate::line::{Framed, Line, Stats, StreamInfo};
use crate::metrics::Metrics;
use crate::output::{self, toy};
use crate::pipeline::Processor;
use crate::problem::Purpose;
use crate::reload;

fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, Purpose::Check).unwrap()
}

/// A Pryv audit line of type `action` at `offset`, processed into a record.
fn record(
    processor: &Processor,
    progress: &std::sync::Arc<Progress>,
    action: &str,
    offset: u64,
) -> Record {
    let text = format!(r#"Aug 09 16:02:45 host pryv-audit[57]: ck6 x {{"action": "{action}"}}"#);
    let line = Line {
        text: text.as_bytes(),
        stream: None,
        time: None,
        offset,
        unterminated: false,
        id_position: None,
    };
    let info = StreamInfo::new("/logs/0.log", 1);
    processor
        .process(Framed::Line(line), &info, &mut Stats::default(), |o, n| {
            progress.register(o, n)
        })
        .unwrap()
}

#[test]
fn a_new_output_is_configured_validated_routed_and_reloaded_like_the_others() {
    let err = Config::from_yaml("outputs: {toy: {name: ''}}", Purpose::Check).unwrap_err();
    assert_eq!(err.problems(), vec!["outputs.toy.name: must not be empty"]);
    assert!(Config::from_yaml("outputs: {toy: {name: t, colour: red}}", Purpose::Check).is_err());

    let before = config("outputs: {stdout: {}, toy: {name: t, types: {include: [events.get]}}}");
    assert_eq!(before.outputs.names(), ["stdout", "toy"]);
    let processor = Processor::new(before.stages()).unwrap();
    let progress = Progress::new(0);
    let get = record(&processor, &progress, "events.get", 0);
    let delete = record(&processor, &progress, "accesses.delete", 100);
    assert_eq!(
        get.outputs, 0b11,
        "events.get goes to stdout and to the toy"
    );
    assert_eq!(
        delete.outputs, 0b01,
        "the toy's own filter keeps accesses.delete out"
    );

    let after = config("outputs: {stdout: {}, toy: {name: t}}");
    assert!(
        reload::needs_restart(&before, &after).is_empty(),
        "a filter reloads"
    );
    assert!(reload::stages_changed(&before, &after));
    let applied = reload::apply(&before, &after);
    assert_eq!(applied.outputs, after.outputs);
    let renamed = config("outputs: {stdout: {}, toy: {name: other}}");
    assert_eq!(reload::needs_restart(&before, &renamed), vec!["outputs"]);
}

#[tokio::test]
async fn a_new_output_starts_reports_health_confirms_and_drains_like_the_others() {
    let config = config("outputs: {toy: {name: a-new-output, unready: true}}");
    let processor = Processor::new(config.stages()).unwrap();
    let progress = Progress::new(0);
    let records = vec![
        record(&processor, &progress, "events.get", 0),
        record(&processor, &progress, "events.get", 100),
    ];
    let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let topic = records[0].retention.topic.to_string();
    progress.set_read(200, None);

    let metrics = Metrics::new();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (_classes_tx, classes_rx) = watch::channel(Vec::new());
    let outputs = output::start(&config.outputs, classes_rx, shutdown_rx, &metrics).unwrap();
    let health: Vec<_> = outputs
        .health
        .iter()
        .map(|(name, h)| (*name, h.not_ready()))
        .collect();
    assert_eq!(
        health,
        vec![("toy", vec!["toy: unready as configured".to_string()])]
    );

    outputs.sender.send(records).await.unwrap();
    shutdown_tx.send(true).unwrap();
    drop(outputs.sender);
    outputs.done.await.unwrap().unwrap();

    assert_eq!(
        progress.committed(),
        200,
        "both records confirmed to their source"
    );
    let delivered = toy::delivered("a-new-output");
    assert!(delivered.contains(&"drained".to_string()), "{delivered:?}");
    let shipped: Vec<&String> = delivered.iter().filter(|d| *d != "drained").collect();
    assert_eq!(shipped, ids.iter().collect::<Vec<_>>());
    let text = metrics.encode();
    let acked =
        format!(r#"auditrail_output_records_acked_total{{output="toy",topic="{topic}"}} 2"#);
    assert!(text.contains(&acked), "{text}");
}

#[test]
fn a_new_format_is_one_file_and_one_list_entry() {
    // The list names it: the config takes it, and the default enables it like every
    // built-in (so the shared table in extractor.rs runs with it too).
    assert!(builtin_names().any(|n| n == "toy"));
    let config = config("audit:\n  formats: [toy]\n");
    let toy = "toy".parse().unwrap();
    assert_eq!(config.audit.formats, vec![toy]);
    assert!(AuditConfig::default().formats.contains(&toy));

    // Its records are extracted, with their type and time.
    let x = Extractor::new(&config.audit).unwrap();
    let line = br#"INFO {"toy" : "audit", "kind": "login", "at": 1628524947} done"#;
    let Extraction::Audit(a) = x.extract(line) else {
        panic!("not audit")
    };
    assert_eq!((&**a.format, &*a.record_type), ("toy", "login"));
    assert_eq!(a.time.map(|t| t.timestamp()), Some(1628524947));
    assert_eq!(
        a.record,
        r#"{"toy" : "audit", "kind": "login", "at": 1628524947}"#
    );

    // The pre-check selects its lines: a truncated one is invalid, not ordinary.
    assert!(matches!(
        x.extract(br#"{"toy": "audit", "kind": "log"#),
        Extraction::Invalid(InvalidReason::Json)
    ));

    // Ordinary lines stay ordinary, and so do the other formats' records: only the toy is
    // enabled.
    for line in [
        "just a log line",
        r#"{"toy": "other", "kind": "login"}"#,
        r#"{"level": "info", "note": {"toy": "audit"}}"#,
        r#"{"level": "info", "message": "{\"toy\": \"audit\"}"}"#,
        r#"{"level": "audit", "recordType": "sqlQuery"}"#,
    ] {
        assert!(
            matches!(x.extract(line.as_bytes()), Extraction::Ordinary),
            "{line}"
        );
    }

    // No custom rule may take its name, even where it is not enabled.
    let yaml = "audit:\n  formats: [immuta]\n  rules:\n    - {name: toy, match: {/kind: x}, type: /kind}\n";
    let problems = Config::from_yaml(yaml, Purpose::Check)
        .unwrap_err()
        .problems();
    assert_eq!(
        problems,
        vec!["audit.rules[0].name: `toy` is already the name of another detector"]
    );
}
