//! A toy format that exists only in tests. It is here to prove the shape of this module: a new
//! built-in format is one file like this one plus one entry in `BUILTIN`; everything else (the
//! config, the default, the pre-check, the reserved names) follows from the list.
//!
//! ```text
//! {"toy": "audit", "kind": "login", "at": 1628524947}
//! ```
//!
//! Type `/kind`; time `/at`. The object may follow a text prefix.

use super::format::{string_or_unknown, Detected, Format, Signature, Tail};
use super::json::Located;
use super::time::parse_time_value;

pub(crate) struct Toy;

impl Format for Toy {
    fn name(&self) -> &str {
        "toy"
    }

    fn signatures(&self) -> Vec<Signature> {
        vec![Signature::new(
            r#""toy""#,
            Tail::ColonThen(r#""audit""#.into()),
        )]
    }

    fn detect<'a>(&self, _text: &'a str, located: &Located<'a>) -> Option<Detected<'a>> {
        let o = &located.object;
        if o.get_str("toy")? != "audit" {
            return None;
        }
        let time = o.get("at").and_then(parse_time_value);
        Some((string_or_unknown(o.get("kind")), time))
    }
}

mod tests {
    use crate::config::{Config, Purpose};
    use crate::extract::{builtin_names, AuditConfig, Extraction, Extractor, InvalidReason};

    #[test]
    fn a_new_format_is_one_file_and_one_list_entry() {
        // The list names it: the config takes it, and the default enables it like every
        // built-in (so the shared table in extractor.rs runs with it too).
        assert!(builtin_names().any(|n| n == "toy"));
        let config = Config::from_yaml("audit:\n  formats: [toy]\n", Purpose::Check).unwrap();
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
}
