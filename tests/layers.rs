//! The crate's modules form layers: a module uses only modules of lower
//! layers (and its own files), no two files import each other in a circle,
//! and the README's picture of the layers is the graph the sources have.
//!
//! `NETNS_TEST_PRINT_LAYERS=1 cargo test --test layers -- --nocapture`
//! prints the picture to paste into the README.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules from the bottom up; a module may use those before it.
const LAYERS: &[&[&str]] = &[
    &["error", "settings", "pool", "sync"],
    &["traffic"],
    &["impairment", "nat", "veth_pair", "firewall"],
    &["schedule"],
    &["contract"],
    &["os"],
    &["veth"],
    &["netns"],
    &["network"],
    &["debug"],
    &["run", "unsupported"],
    &["exec"],
    &["admin"],
    &["lib"],
];

/// Every source file of the library, by module path (`os::sys`, `run` for
/// `run/mod.rs`, `lib` for `lib.rs`).
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let join = |name: &str| {
                if prefix.is_empty() {
                    name.to_owned()
                } else {
                    format!("{prefix}::{name}")
                }
            };
            if path.is_dir() {
                if stem != "bin" {
                    walk(&path, &join(&stem), out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match (stem.as_str(), prefix) {
                    ("mod", _) => prefix.to_owned(),
                    ("lib", "") => "lib".to_owned(),
                    _ => join(&stem),
                };
                out.insert(module, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut out,
    );
    out
}

/// The code of a file without comments and without its unit tests (the
/// `#[cfg(test)] mod tests` at its end).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after each `crate::` and `super::` in `code`.
fn references<'c>(code: &'c str, keyword: &str) -> Vec<Vec<&'c str>> {
    code.match_indices(keyword)
        .filter(|(at, _)| {
            !code[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
        })
        .map(|(at, _)| {
            let rest = &code[at + keyword.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].split("::").filter(|s| !s.is_empty()).collect()
        })
        .collect()
}

/// The longest module path that `segments` starts with.
fn resolve(modules: &BTreeMap<String, PathBuf>, segments: &[&str]) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// Which file uses which: module path → module paths.
fn file_graph(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph = BTreeMap::new();
    for (module, path) in modules {
        let code = code(path);
        let mut uses = BTreeSet::new();
        for segments in references(&code, "crate::") {
            let target = resolve(modules, &segments).unwrap_or_else(|| {
                panic!(
                    "{}: `crate::{}` names no module: use the path of the module that defines it",
                    path.display(),
                    segments.join("::")
                )
            });
            uses.insert(target);
        }
        // `super` of `run::test_ns` is `run`; of `run` (run/mod.rs), the root.
        let segments: Vec<&str> = module.split("::").collect();
        let parent = &segments[..segments.len() - 1];
        for segments in references(&code, "super::") {
            let full: Vec<&str> = parent.iter().copied().chain(segments).collect();
            if let Some(target) = resolve(modules, &full) {
                uses.insert(target);
            }
        }
        // A parent's relative paths into its own child modules (`use test_ns::..`).
        for line in code.lines() {
            let line = line.trim();
            let Some(child) = line
                .strip_prefix("mod ")
                .or_else(|| line.strip_prefix("pub mod "))
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .and_then(|rest| rest.strip_suffix(';'))
            else {
                continue;
            };
            let child_module = if module == "lib" {
                child.to_owned()
            } else {
                format!("{module}::{child}")
            };
            if !references(&code, &format!("{child}::")).is_empty() {
                uses.insert(child_module);
            }
        }
        uses.remove(module);
        graph.insert(module.clone(), uses);
    }
    graph
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

fn layer(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top(module)))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

#[test]
fn no_file_imports_another_in_a_circle() {
    let graph = file_graph(&modules());
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("import circle: {} -> {node}", path[at..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for next in &graph[node] {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph.len() > 20, "found only {} files", graph.len());
}

#[test]
fn modules_use_only_lower_layers() {
    let graph = file_graph(&modules());
    let mut upward = Vec::new();
    for (from, uses) in &graph {
        for to in uses {
            if top(from) != top(to) && layer(to) >= layer(from) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a layer to one at or above it: {upward:#?}"
    );
}

/// The layers as a Mermaid flowchart (GitHub draws it), each top-level
/// module with the modules it uses directly.
fn picture() -> String {
    let graph = file_graph(&modules());
    let mut edges = BTreeSet::new();
    for (from, uses) in &graph {
        for to in uses {
            if top(from) != top(to) && top(from) != "lib" {
                edges.insert((layer(from), top(from), top(to)));
            }
        }
    }
    let mut text = String::from("```mermaid\nflowchart TD\n");
    for (_, from, to) in edges.iter().rev() {
        text.push_str(&format!("  {from} --> {to}\n"));
    }
    text.push_str("```\n");
    text
}

/// The fenced code blocks of a Markdown text as CommonMark renders them:
/// each block's info string and lines; `Err` names the line of a fence
/// that is never closed (it swallows the rest of the file).
fn code_blocks(markdown: &str) -> Result<Vec<(String, String)>, usize> {
    /// A fence line: up to 3 spaces, then 3 or more backticks or tildes.
    fn fence(line: &str) -> Option<(char, usize, &str)> {
        let trimmed = line.trim_start_matches(' ');
        if line.len() - trimmed.len() > 3 {
            return None;
        }
        let mark = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
        let length = trimmed.chars().take_while(|c| *c == mark).count();
        let info = trimmed[length..].trim();
        (length >= 3 && !(mark == '`' && info.contains('`'))).then_some((mark, length, info))
    }
    let mut blocks = Vec::new();
    let mut open: Option<(char, usize, String, usize, String)> = None;
    for (number, line) in markdown.lines().enumerate() {
        match (&mut open, fence(line)) {
            (None, Some((mark, length, info))) => {
                open = Some((mark, length, info.to_owned(), number + 1, String::new()))
            }
            (Some((mark, length, ..)), Some((m, l, ""))) if m == *mark && l >= *length => {
                let (_, _, info, _, text) = open.take().unwrap();
                blocks.push((info, text));
            }
            (Some((.., text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    match open {
        Some((.., line, _)) => Err(line),
        None => Ok(blocks),
    }
}

#[test]
fn code_blocks_are_read_as_markdown_renders_them() {
    let good = "text\n```mermaid\nflowchart TD\n```\n  ```rust\nfn f() {}\n  ```\n";
    assert_eq!(
        code_blocks(good),
        Ok(vec![
            ("mermaid".to_owned(), "flowchart TD\n".to_owned()),
            ("rust".to_owned(), "fn f() {}\n".to_owned())
        ])
    );
    // Not a fence: the text is a paragraph, and its closing fence opens a
    // block that swallows the rest.
    assert_eq!(
        code_blocks("..```mermaid\nflowchart TD\n```\nmore\n"),
        Err(3)
    );
    assert_eq!(code_blocks("    ```rust\n"), Ok(vec![]));
}

#[test]
fn the_readme_shows_the_layers_the_sources_have() {
    let picture = picture();
    if std::env::var_os("NETNS_TEST_PRINT_LAYERS").is_some() {
        println!("{picture}");
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = code_blocks(&readme).unwrap_or_else(|line| {
        panic!(
            "README.md line {line}: a code fence that is never closed swallows the rest of the file"
        )
    });
    let body = picture
        .strip_prefix("```mermaid\n")
        .and_then(|p| p.strip_suffix("```\n"))
        .unwrap();
    assert!(
        blocks.contains(&("mermaid".to_owned(), body.to_owned())),
        "README.md's Layout must contain this picture as a mermaid code block (NETNS_TEST_PRINT_LAYERS=1 prints it):\n{picture}"
    );
    for (module, path) in modules() {
        let file = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            readme.contains(&format!("`{file}`")),
            "README.md's Layout does not name `{file}` ({module})"
        );
    }
}
