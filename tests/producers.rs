//! Real producers: what a real logging library writes must be shipped exactly, every audit
//! event once with its type and time, and nothing else.
//!
//! monolog (Laravel's logger) runs for real: `tests/producers/monolog.php` logs audit events
//! and ordinary logs (made to look like audit events in every way an application can: the keys
//! in the message, JSON objects holding them inside the message, multi-line messages, nested
//! context) through Debian's php-monolog in each setup an application ships with, and writes
//! beside each log the list of audit events it wrote. The built `auditrail check` reads each
//! log as the application's own file (raw) and as the kubelet leaves it (CRI framing, also cut
//! into `P` chunks), and the records it ships must be that list, in order.
//!
//! php and php-monolog are required (`scripts/test.sh` installs `php-cli` and `php-monolog`):
//! without them these tests fail and say so; they never skip.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::kubelet::{Kubelet, Stream};
use support::*;

/// monolog as Debian's php-monolog installs it (the script requires its autoloader).
const MONOLOG_AUTOLOAD: &str = "/usr/share/php/Monolog/autoload.php";

/// The PHP interpreter; fails the test with what to install when there is none.
fn php() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("php"))
        .find(|p| p.is_file());
    let missing = "tests/producers.rs runs the real monolog library: install php-cli and \
                   php-monolog (scripts/test.sh does: apt-get install php-cli php-monolog)";
    let php = found.unwrap_or_else(|| panic!("`php` is not on PATH. {missing}"));
    assert!(
        Path::new(MONOLOG_AUTOLOAD).is_file(),
        "{MONOLOG_AUTOLOAD} is missing. {missing}"
    );
    php
}

/// Runs the monolog script into `dir`: every setup's `<setup>.log` and `<setup>.expected`.
fn produce(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/producers/monolog.php");
    let out = Command::new(php())
        .arg(&script)
        .arg(dir)
        .output()
        .expect("run php");
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One audit event the script wrote: its type, and its time as the envelope writes it
/// (`null` when the line that carries it does not say when).
#[derive(Debug, PartialEq)]
struct Event {
    record_type: String,
    time: Value,
}

fn expected(dir: &Path, setup: &str) -> Vec<Event> {
    let text = fs::read_to_string(dir.join(format!("{setup}.expected"))).unwrap();
    text.lines()
        .map(|line| {
            let (record_type, time) = line.split_once('\t').expect("`type<TAB>time`");
            Event {
                record_type: record_type.to_owned(),
                time: match time {
                    "null" => Value::Null,
                    t => Value::from(t),
                },
            }
        })
        .collect()
}

/// How the log reaches auditrail.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// The application's own file, as written.
    Raw,
    /// containerd's CRI file, lines up to its default 16 KiB.
    Cri,
    /// containerd's CRI file with a 100-byte line limit: most lines arrive as `P` chunks.
    CriChunked,
}

/// The log as `framing` leaves it on disk.
fn framed(dir: &Path, log: &Path, framing: Framing) -> PathBuf {
    let bytes = fs::read(log).unwrap();
    let pod = dir.join(format!("pod-{framing:?}"));
    let mut app = match framing {
        Framing::Raw => return log.to_owned(),
        Framing::Cri => Kubelet::new(&pod),
        Framing::CriChunked => Kubelet::new(&pod).max_line(100),
    };
    app.write(Stream::Stdout, bytes);
    app.path()
}

/// Runs the script, then `check` on `setup`'s log in every framing: the shipped records are
/// the script's audit events, in order, with their types and times, and nothing else; every
/// record is text of the log, byte for byte (for a JSON setup, a whole line of it).
fn shipped_exactly(setup: &str, whole_lines: bool) {
    let dir = tempdir();
    produce(dir.path());
    let want = expected(dir.path(), setup);
    assert!(
        want.len() >= 10,
        "the script wrote its audit events: {want:?}"
    );
    let log = dir.path().join(format!("{setup}.log"));
    let text = fs::read_to_string(&log).unwrap();
    let config = write_config(dir.path(), "empty.yaml", "");
    for framing in [Framing::Raw, Framing::Cri, Framing::CriChunked] {
        let input = framed(dir.path(), &log, framing);
        let out = check(&config, &input);
        let summary = out.summary();
        let n = want.len() as u64;
        summary.assert_counts(&[
            ("audit", n),
            ("shipped", n),
            ("invalid", 0),
            ("malformed", 0),
        ]);
        let got: Vec<Event> = out
            .records()
            .iter()
            .map(|r| Event {
                record_type: r["value"]["type"].as_str().unwrap().to_owned(),
                time: r["value"]["time"].clone(),
            })
            .collect();
        assert_eq!(got, want, "{setup} ({framing:?}): shipped vs written");
        for line in out.lines() {
            let v = parse_line(line);
            assert_eq!(v["value"]["format"], "monolog", "{setup}: {line}");
            let record = record_text(line);
            if whole_lines {
                assert!(
                    text.lines().any(|l| l == record),
                    "{setup} ({framing:?}): the record is not a line of the log: {record}"
                );
            } else {
                assert!(
                    text.contains(record),
                    "{setup} ({framing:?}): the record is not text of the log: {record}"
                );
            }
        }
    }
}

/// Issue 15, finding 1: monolog's JsonFormatter (Laravel's usual JSON setup) nests the type in
/// `context` (or, put there by a processor, `extra`); `check` found none of its records.
#[test]
fn finding_1_monolog_json_formatter_output_is_shipped_exactly() {
    shipped_exactly("json", true);
}

/// JsonFormatter's BATCH_MODE_NEWLINES: a batch is one record per line.
#[test]
fn monolog_json_formatter_newline_batches_are_shipped_exactly() {
    shipped_exactly("json-newlines", true);
}

/// The LineFormatter Laravel's LogManager builds: no trailing `[]`, line breaks kept, so an
/// event with a multi-line message is carried by a continuation line (its time unknown).
#[test]
fn laravel_line_formatter_output_is_shipped_exactly() {
    shipped_exactly("laravel", false);
}

/// monolog's own default LineFormatter: `Y-m-d\TH:i:s.uP`, `[]` for an empty context or
/// extra, line breaks replaced.
#[test]
fn monolog_default_line_formatter_output_is_shipped_exactly() {
    shipped_exactly("default", false);
}

/// Laravel's formatter turns a `\n` in a context value into a real line break, so the context
/// object of that audit event is cut in two and no line holds it as JSON: it cannot be
/// shipped, and it is counted invalid, never lost silently.
#[test]
fn a_laravel_context_cut_by_a_line_break_is_counted_invalid() {
    let dir = tempdir();
    produce(dir.path());
    let events = expected(dir.path(), "laravel-broken");
    assert_eq!(events.len(), 1, "{events:?}");
    let config = write_config(dir.path(), "empty.yaml", "");
    let out = check(&config, dir.path().join("laravel-broken.log"));
    out.summary().assert_counts(&[
        ("lines", 2),
        ("audit", 0),
        ("invalid", events.len() as u64),
        ("ordinary", 1),
    ]);
}

/// The monolog rules of `examples/rules-as-formats.yaml` ship what the built-in `monolog`
/// ships from what the real monolog writes, in every setup and framing: the same counts and
/// the same records, byte for byte, but for the format's name. The Laravel setup's multi-line
/// messages (the record on a continuation line without the `[ts] channel.LEVEL:` header) and
/// the cut context (counted invalid) included.
#[test]
fn the_monolog_rules_ship_what_the_builtin_ships_in_every_setup() {
    let dir = tempdir();
    produce(dir.path());
    let builtin = write_config(dir.path(), "empty.yaml", "");
    for setup in [
        "json",
        "json-newlines",
        "laravel",
        "default",
        "laravel-broken",
    ] {
        let log = dir.path().join(format!("{setup}.log"));
        let pods = dir.path().join(format!("pods-{setup}"));
        fs::create_dir_all(&pods).unwrap();
        for framing in [Framing::Raw, Framing::Cri, Framing::CriChunked] {
            let input = framed(&pods, &log, framing);
            let (by_builtin, by_rules) = (check(&builtin, &input), check(&rules_config(), &input));
            let at = format!("{setup} ({framing:?})");
            assert_eq!(
                by_rules.summary().0,
                by_builtin.summary().0,
                "{at}: the counts"
            );
            let (want, got) = (by_builtin.records(), by_rules.records());
            assert_eq!(got.len(), want.len(), "{at}");
            for (g, w) in got.iter().zip(&want) {
                let format = g["value"]["format"].as_str().unwrap();
                assert!(
                    format.starts_with("monolog-") && format.ends_with("-rule"),
                    "{at}: {format}"
                );
                assert_eq!(without_format(g.clone()), without_format(w.clone()), "{at}");
            }
            let texts = |lines: Vec<&str>| -> Vec<String> {
                lines
                    .into_iter()
                    .map(|l| record_text(l).to_owned())
                    .collect()
            };
            assert_eq!(texts(by_rules.lines()), texts(by_builtin.lines()), "{at}");
        }
    }
}
