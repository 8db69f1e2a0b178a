//! The shape of `src/`: the library's top-level modules (one per pipeline stage, plus the
//! shared ground-floor types) import each other without a cycle.
//!
//! Every `crate::<module>` a file names outside comments is an import of that module, test code
//! included. The
//! test fails on the first cycle it finds and prints it; it also prints the floors (each module
//! above everything it imports), the picture the README's layout section describes.
// Test code: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Files that are not part of the library's module graph: the binaries and the crate root.
const NOT_MODULES: &[&str] = &["main.rs", "lib.rs", "bin"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module -> the top-level modules its files name through `crate::`.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let top_level: Vec<(String, PathBuf)> = fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            !NOT_MODULES.contains(&name)
        })
        .map(|p| {
            let module = p.file_stem().unwrap().to_str().unwrap().to_owned();
            (module, p)
        })
        .collect();
    let modules: BTreeSet<String> = top_level.iter().map(|(m, _)| m.clone()).collect();
    for (module, path) in &top_level {
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(path, &mut files);
        } else {
            files.push(path.clone());
        }
        let edges = graph.entry(module.clone()).or_default();
        for file in files {
            // Comments (module docs link to the stages above) are not imports.
            let text: String = fs::read_to_string(&file)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for (i, _) in text.match_indices("crate::") {
                // `auditrail::crate::x` cannot occur; `$crate::` (macros) names no module.
                if text[..i].ends_with('$') {
                    continue;
                }
                let rest = &text[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if &name != module && modules.contains(&name) {
                    edges.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Visiting);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut marks, &mut Vec::new()))
}

/// Each module's floor: 1 for a module that imports none of the others, else one above the
/// highest module it imports. Only meaningful without a cycle.
fn floors(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, usize> {
    fn floor(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        memo: &mut BTreeMap<String, usize>,
    ) -> usize {
        if let Some(f) = memo.get(node) {
            return *f;
        }
        let f = 1 + graph
            .get(node)
            .into_iter()
            .flatten()
            .map(|n| floor(n, graph, memo))
            .max()
            .unwrap_or(0);
        memo.insert(node.to_owned(), f);
        f
    }
    let mut memo = BTreeMap::new();
    for node in graph.keys() {
        floor(node, graph, &mut memo);
    }
    memo
}

#[test]
fn the_module_graph_of_src_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = imports(&src);
    assert!(
        graph.len() > 10,
        "the modules of src/ were found: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
    let floors = floors(&graph);
    let top = floors.values().copied().max().unwrap_or(0);
    for level in (1..=top).rev() {
        let here: Vec<&str> = floors
            .iter()
            .filter(|(_, f)| **f == level)
            .map(|(m, _)| m.as_str())
            .collect();
        println!("floor {level}: {}", here.join(", "));
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("config", &["source"][..]),
        ("source", &["pipeline"]),
        ("pipeline", &["config", "line"]),
        ("line", &[]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph).unwrap(),
        vec!["config", "source", "pipeline", "config"]
    );
    let acyclic: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), BTreeSet::from([v.to_owned()])))
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
    assert_eq!(floors(&acyclic)["a"], 3);
}
