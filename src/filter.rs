//! Filter: which record types are shipped, with Pryv's include/exclude semantics.
//!
//! A type `resource.verb` matches the patterns `resource.verb`, `resource.all` and `all`
//! (a type without a dot matches itself and `all`). Exclude wins over include; an empty
//! include list means "everything not excluded". At least one list must be non-empty, as in
//! Pryv's `AUDIT_STORAGE_FILTER`, so that an empty filter is never a silent "ship nothing".

use serde::Deserialize;

use crate::problem::Problem;

/// The `types` section (and, later, each output's own `types`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TypesConfig {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Default for TypesConfig {
    fn default() -> Self {
        TypesConfig {
            include: vec!["all".into()],
            exclude: Vec::new(),
        }
    }
}

impl TypesConfig {
    pub fn validate(&self, path: &str, problems: &mut Vec<Problem>) {
        if self.include.is_empty() && self.exclude.is_empty() {
            problems.push(Problem::new(
                path,
                "at least one of `include` and `exclude` must be non-empty (use include: [all] to ship everything)",
            ));
        }
        for (list, name) in [(&self.include, "include"), (&self.exclude, "exclude")] {
            for (i, p) in list.iter().enumerate() {
                if p.trim().is_empty() || p.trim() != p {
                    problems.push(Problem::new(
                        format!("{path}.{name}[{i}]"),
                        format!("{p:?} is not a record type or `resource.all` pattern"),
                    ));
                }
            }
        }
    }
}

/// Whether `pattern` matches `record_type`: exactly, `all`, or `resource.all` for any type
/// that starts with `resource.`.
pub(crate) fn pattern_matches(pattern: &str, record_type: &str) -> bool {
    if pattern == "all" || pattern == record_type {
        return true;
    }
    match pattern.strip_suffix(".all") {
        Some(resource) => record_type
            .strip_prefix(resource)
            .is_some_and(|rest| rest.starts_with('.')),
        None => false,
    }
}

/// A compiled type filter.
#[derive(Debug, Clone)]
pub(crate) struct TypeFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl TypeFilter {
    pub(crate) fn new(config: &TypesConfig) -> TypeFilter {
        TypeFilter {
            include: config.include.clone(),
            exclude: config.exclude.clone(),
        }
    }

    /// Whether a record of this type is shipped.
    pub(crate) fn accepts(&self, record_type: &str) -> bool {
        self.decide(record_type).accepts()
    }

    /// Why a record of this type is shipped or not: the one place the filter decides, which
    /// [`TypeFilter::accepts`] and `check --explain` both use.
    pub(crate) fn decide(&self, record_type: &str) -> Decision<'_> {
        if let Some(p) = self
            .exclude
            .iter()
            .find(|p| pattern_matches(p, record_type))
        {
            return Decision::Excluded(p);
        }
        if self.include.is_empty() {
            return Decision::NotExcluded;
        }
        match self
            .include
            .iter()
            .find(|p| pattern_matches(p, record_type))
        {
            Some(p) => Decision::Included(p),
            None => Decision::NotIncluded,
        }
    }
}

/// A type filter's decision about one record type, with the pattern that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision<'a> {
    /// An `exclude` pattern matches (exclude wins).
    Excluded(&'a str),
    /// An `include` pattern matches and no `exclude` pattern does.
    Included(&'a str),
    /// The `include` list is empty (everything not excluded) and no `exclude` pattern matches.
    NotExcluded,
    /// No `include` pattern matches.
    NotIncluded,
}

impl Decision<'_> {
    pub(crate) fn accepts(self) -> bool {
        matches!(self, Decision::Included(_) | Decision::NotExcluded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> TypeFilter {
        TypeFilter::new(&TypesConfig {
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// The examples of the Pryv seed, one per row.
    #[test]
    fn pryv_examples() {
        let everything = filter(&["all"], &[]);
        let nothing = filter(&[], &["all"]);
        let few = filter(&["access.create", "accesses.delete"], &[]);
        let all_but = filter(&[], &["events.get"]);
        let events_but_get = filter(&["events.all"], &["events.get"]);
        let rows: &[(&TypeFilter, &str, bool)] = &[
            (&everything, "events.get", true),
            (&everything, "sqlQuery", true),
            (&nothing, "events.get", false),
            (&few, "accesses.delete", true),
            (&few, "accesses.create", false),
            (&all_but, "events.get", false),
            (&all_but, "events.create", true),
            (&events_but_get, "events.create", true),
            (&events_but_get, "events.get", false),
            (&events_but_get, "streams.get", false),
            (&events_but_get, "eventsx.get", false),
        ];
        for (f, t, want) in rows {
            assert_eq!(f.accepts(t), *want, "{t} with {f:?}");
        }
    }

    #[test]
    fn a_decision_names_the_pattern_that_made_it() {
        let events_but_get = filter(&["events.all"], &["events.get", "all"]);
        assert_eq!(
            events_but_get.decide("events.get"),
            Decision::Excluded("events.get")
        );
        assert_eq!(events_but_get.decide("x"), Decision::Excluded("all"));
        let f = filter(&["a.b", "events.all"], &[]);
        assert_eq!(f.decide("events.get"), Decision::Included("events.all"));
        assert_eq!(f.decide("streams.get"), Decision::NotIncluded);
        assert_eq!(filter(&[], &["x"]).decide("y"), Decision::NotExcluded);
    }

    #[test]
    fn empty_lists_are_a_config_error() {
        let mut problems = Vec::new();
        TypesConfig {
            include: vec![],
            exclude: vec![],
        }
        .validate("types", &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "types");
    }
}
