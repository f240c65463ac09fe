//! Keeps the folders of `host/src` a layered architecture: a module imports
//! only from its own layer or layers below it (DESIGN §2), no two modules
//! import each other (directly or round a cycle), and no library file grows
//! past ~800 lines. Modelled on rust-analyzer's tidy tests: it
//! reads the sources as text, so it runs with the unit tests and names the
//! file and the import at fault.
//!
//! The imports and sizes that break the rules today are listed below, as a
//! ratchet: a new one fails the test, and so does a listed one that is gone
//! (take it off the list). The list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layers from the bottom up; a file's layer is its folder (`host/` and
/// `budget.rs` are the core, between the store and orchestration).
const LAYERS: &[&str] = &[
    "model",
    "resilience",
    "runtime",
    "policy",
    "store",
    "core",
    "orchestration",
    "surfaces",
    "bench",
];

/// Upward imports allowed, as `(file, layer imported)`: none. Keep it so.
const KNOWN_UPWARD: &[(&str, &str)] = &[];

/// Library files over the size limit today.
const KNOWN_LONG: &[&str] = &[];

/// Lines a library file may have, tests excluded.
const MAX_LINES: usize = 800;

fn layer_of(file: &str) -> &'static str {
    let first = file.split('/').next().unwrap_or(file);
    let name = first.trim_end_matches(".rs");
    LAYERS
        .iter()
        .find(|l| **l == name)
        .copied()
        .unwrap_or(match name {
            "bench" => "bench",
            _ => "core",
        })
}

fn rank(layer: &str) -> usize {
    LAYERS.iter().position(|l| *l == layer).unwrap_or(0)
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.strip_prefix(base).expect("below src").to_owned());
        }
    }
}

/// The library's files (the binary's `main.rs` and `cli/`, and this test,
/// are not layered).
fn library_files() -> Vec<(String, String)> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&base, &base, &mut files);
    let mut out: Vec<(String, String)> = files
        .into_iter()
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .filter(|p| {
            !p.starts_with("cli/") && !matches!(p.as_str(), "main.rs" | "lib.rs" | "layering.rs")
        })
        .map(|p| {
            let text = std::fs::read_to_string(base.join(&p)).expect("readable source");
            (p, text)
        })
        .collect();
    out.sort();
    out
}

/// The text before `#[cfg(test)]`: what the library is made of.
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// The path each name `lib.rs` re-exports comes from (`CallError` →
/// `model::error`), so that `use crate::{CallError, …}` counts as an import
/// of that module.
fn reexports() -> Vec<(String, String)> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .expect("lib.rs");
    let mut out = Vec::new();
    for item in lib.split("pub use ").skip(1) {
        let item = &item[..item.find(';').unwrap_or(item.len())];
        let (path, names) = match item.find("::{") {
            Some(at) => (&item[..at], &item[at + 3..]),
            None => match item.rfind("::") {
                Some(at) => (&item[..at], &item[at + 2..]),
                None => continue,
            },
        };
        if path.starts_with("jiff") || path.starts_with("tokio_util") {
            continue;
        }
        for name in names.split(|c: char| c == ',' || c == '}' || c.is_whitespace()) {
            if !name.is_empty() {
                out.push((name.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

/// Every path a file's code names through `crate::` (groups expanded, root
/// re-exports replaced by where they come from), tests and comments left out.
fn crate_paths(text: &str, reexported: &[(String, String)]) -> Vec<String> {
    // Code only: a doc link to a type above is not an import.
    let code: String = without_tests(text)
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{A, b::C}`: the root's re-exports, or module paths.
            let group = &group[..group.find('}').unwrap_or(group.len())];
            paths.extend(group.split(',').map(|p| p.trim().to_owned()));
        } else {
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            paths.push(path);
        }
    }
    paths
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|path| {
            let head = path.split("::").next().unwrap_or(&path);
            match reexported.iter().find(|(name, _)| name == head) {
                Some((_, from)) => format!("{from}::{path}"),
                None => path,
            }
        })
        .collect()
}

/// Every layer a file's code names through `crate::`.
fn imported_layers(text: &str, reexported: &[(String, String)]) -> BTreeSet<&'static str> {
    crate_paths(text, reexported)
        .iter()
        .map(|path| layer_of(&format!("{}.rs", path.split("::").next().unwrap_or(path))))
        .collect()
}

#[test]
fn modules_import_only_their_own_layer_or_below() {
    let reexported = reexports();
    let mut found = BTreeSet::new();
    for (file, text) in library_files() {
        let own = layer_of(&file);
        for layer in imported_layers(&text, &reexported) {
            if rank(layer) > rank(own) {
                found.insert((file.clone(), layer));
            }
        }
    }
    let known: BTreeSet<(String, &str)> = KNOWN_UPWARD
        .iter()
        .map(|(f, l)| ((*f).to_owned(), *l))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "imports from a layer above (file, layer it imports): {new:?}"
    );
    assert!(
        gone.is_empty(),
        "fixed, take them off KNOWN_UPWARD: {gone:?}"
    );
}

#[test]
fn library_files_stay_short() {
    let mut long = BTreeSet::new();
    for (file, text) in library_files() {
        let lines = without_tests(&text).lines().count();
        if lines > MAX_LINES {
            long.insert(file);
        }
    }
    let known: BTreeSet<String> = KNOWN_LONG.iter().map(|f| (*f).to_owned()).collect();
    let new: Vec<_> = long.difference(&known).collect();
    let gone: Vec<_> = known.difference(&long).collect();
    assert!(new.is_empty(), "files over {MAX_LINES} lines: {new:?}");
    assert!(
        gone.is_empty(),
        "now short, take them off KNOWN_LONG: {gone:?}"
    );
}

/// A file's module path: `runtime/fs_guard/mod.rs` is `runtime::fs_guard`.
fn module_of(file: &str) -> String {
    let path = file.trim_end_matches(".rs");
    let path = path.strip_suffix("/mod").unwrap_or(path);
    path.replace('/', "::")
}

/// The modules a file's code names through `crate::`: the longest prefix
/// of each path that is a module.
fn imported_modules(
    text: &str,
    modules: &BTreeSet<String>,
    reexported: &[(String, String)],
) -> BTreeSet<String> {
    crate_paths(text, reexported)
        .iter()
        .filter_map(|path| {
            let parts: Vec<&str> = path.split("::").collect();
            (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|m| modules.contains(m))
        })
        .collect()
}

#[test]
fn modules_form_no_cycle() {
    let reexported = reexports();
    let files = library_files();
    let modules: BTreeSet<String> = files.iter().map(|(f, _)| module_of(f)).collect();
    let mut edges: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for (file, text) in &files {
        let me = module_of(file);
        let targets = imported_modules(text, &modules, &reexported)
            .into_iter()
            // A module and its own submodules are one unit.
            .filter(|m| *m != me && !m.starts_with(&format!("{me}::")))
            .filter(|m| !me.starts_with(&format!("{m}::")))
            .collect();
        edges.insert(me, targets);
    }
    // Depth-first search; a back edge is a cycle, reported as its path.
    fn visit(
        module: &str,
        edges: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in edges.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        let cycle = visit(module, &edges, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "modules import each other: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}
