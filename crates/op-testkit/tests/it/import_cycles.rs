//! No import circles (ARCHITECTURE.md, "Import circles"): within each crate, no two files of
//! different modules need each other, directly or through others.
//!
//! For every crate under `crates/*/src`, the files are linked by the paths their code names:
//! `use crate::…` and `use super::…` (grouped uses such as `use crate::{a::B, c}` too) and paths
//! written inline in code (`crate::x::y(…)`, `super::x::Y`). A path links to the deepest file
//! that exists for it (`x.rs` or `x/mod.rs`; items inside a file, inline modules included, belong
//! to that file). A file naming one of its own ancestor modules (`use super::*`, the crate root)
//! or one of its descendants is how Rust modules are built and does not count. The test fails
//! listing every strongly connected component of more than one file, with the edges that tie it.
//!
//! The scan reads tokens, not a syntax tree: comments, strings and character literals are skipped,
//! and `mod NAME { … }` blocks are followed so that `super::` inside them resolves right. Paths
//! that start with any other name (`use x::Y`) are not followed: such a path leads to another
//! crate or to one of the module's own children, which does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside a crate: `["api", "jobs"]` for `api/jobs.rs`; empty for the root.
type ModPath = Vec<String>;

/// The files of one crate and the links between them.
#[derive(Debug, Default)]
struct Graph {
    /// Each file's module path, by its path relative to `src`.
    files: BTreeMap<String, ModPath>,
    /// `(from, to)` → the paths (as written, resolved) that make the link.
    edges: BTreeMap<(String, String), BTreeSet<String>>,
}

/// A circle: its files, and the links among them.
#[derive(Debug, PartialEq, Eq)]
struct Circle {
    files: Vec<String>,
    /// `from -> to (via crate::path)` lines.
    edges: Vec<String>,
}

/// Scans the crate whose sources are in `src`.
fn crate_graph(src: &Path) -> Graph {
    let mut g = Graph::default();
    // The library is the crate others see; a `main.rs` beside it is a crate of its own that
    // reaches the library by name, not by `crate::`. Without a library, `main.rs` is the root.
    let has_lib = src.join("lib.rs").is_file();
    let mut sources = Vec::new();
    collect_rs(src, &mut sources);
    for path in sources {
        let rel = path
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if has_lib && (rel == "main.rs" || rel.starts_with("bin/")) {
            continue;
        }
        g.files.insert(rel.clone(), module_of(&rel));
    }
    let by_module: BTreeMap<ModPath, String> = g
        .files
        .iter()
        .map(|(f, m)| (m.clone(), f.clone()))
        .collect();
    for (file, module) in &g.files {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        for target in named_paths(&tokens(&text), module) {
            let Some((to, to_module)) = deepest_file(&by_module, &target) else {
                continue;
            };
            let related = to_module.starts_with(module) || module.starts_with(&to_module);
            if !related {
                g.edges
                    .entry((file.clone(), to))
                    .or_default()
                    .insert(format!("crate::{}", target.join("::")));
            }
        }
    }
    g
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `api/jobs.rs` and `api/jobs/mod.rs` → `["api", "jobs"]`; `lib.rs` and `main.rs` → `[]`.
fn module_of(rel: &str) -> ModPath {
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    let last = parts.pop().unwrap();
    let stem = last.strip_suffix(".rs").unwrap();
    let top = parts.is_empty() && (stem == "lib" || stem == "main");
    if stem != "mod" && !top {
        parts.push(stem.to_string());
    }
    parts
}

/// The file holding the longest prefix of `path` that is a module with a file of its own.
fn deepest_file(
    by_module: &BTreeMap<ModPath, String>,
    path: &[String],
) -> Option<(String, ModPath)> {
    (0..=path.len()).rev().find_map(|n| {
        by_module
            .get(&path[..n])
            .map(|f| (f.clone(), path[..n].to_vec()))
    })
}

/// The code's tokens: identifiers and keywords, and punctuation (`::` as one token); comments,
/// string and character literals and lifetimes are left out.
fn tokens(text: &str) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&c, i) {
            i = end;
        } else if ch == '"' || (ch == 'b' && next == Some('"')) {
            i += if ch == 'b' { 2 } else { 1 };
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if ch == '\'' {
            // A character literal ('x', '\n', '\''), else a lifetime or a label ('a).
            if next == Some('\\') {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if ch == ':' && next == Some(':') {
            out.push("::".into());
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(ch.to_string());
            }
            i += 1;
        }
    }
    out
}

/// Where a raw string (`r"…"`, `r#"…"#`, `br"…"`) starting at `i` ends, if one does.
fn raw_string_end(c: &[char], i: usize) -> Option<usize> {
    // Not the end of an identifier such as `for`.
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if c.get(j) == Some(&'b') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&h| h == '#').count();
    j += hashes;
    if c.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < c.len() {
        if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&h| h == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// Every module path the tokens of a file in `module` name from `crate::`, `super::` or
/// `self::`, resolved to a path from the crate root.
fn named_paths(toks: &[String], module: &ModPath) -> Vec<ModPath> {
    let mut out = Vec::new();
    // The inline modules (`mod tests { … }`) we are in, with the brace depth each opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let here = |inline: &[(String, usize)]| -> ModPath {
        let mut m = module.clone();
        m.extend(inline.iter().map(|(n, _)| n.clone()));
        m
    };
    while i < toks.len() {
        match toks[i].as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if toks.get(i + 2).is_some_and(|t| t == "{") => {
                inline.push((toks[i + 1].clone(), depth));
                depth += 1;
                i += 3;
                continue;
            }
            "use" => {
                let end = toks[i..]
                    .iter()
                    .position(|t| t == ";")
                    .map_or(toks.len(), |p| i + p);
                let mut paths = Vec::new();
                use_tree(&toks[i + 1..end], &[], &mut paths);
                let at = here(&inline);
                out.extend(paths.iter().filter_map(|p| resolve(p, &at)));
                i = end + 1;
                continue;
            }
            "crate" | "super" | "self" if toks.get(i + 1).is_some_and(|t| t == "::") => {
                // A path in code: its segments up to the first non-name.
                let mut path = vec![toks[i].clone()];
                let mut j = i + 1;
                while toks.get(j).is_some_and(|t| t == "::")
                    && toks.get(j + 1).is_some_and(|t| is_name(t))
                {
                    path.push(toks[j + 1].clone());
                    j += 2;
                }
                if let Some(p) = resolve(&path, &here(&inline)) {
                    out.push(p);
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

fn is_name(t: &str) -> bool {
    t.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Expands a use tree (`crate::{a::B, c::{self, D as E}}`) into its paths, without renames and
/// globs.
fn use_tree(toks: &[String], prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut i = 0;
    let mut path = prefix.to_vec();
    while i < toks.len() {
        match toks[i].as_str() {
            "::" | "pub" => {}
            "{" => {
                // The branches, split at top-level commas.
                let mut level = 0;
                let mut start = i + 1;
                for j in i + 1..toks.len() {
                    match toks[j].as_str() {
                        "{" => level += 1,
                        "}" if level == 0 => {
                            use_tree(&toks[start..j], &path, out);
                            return;
                        }
                        "}" => level -= 1,
                        "," if level == 0 => {
                            use_tree(&toks[start..j], &path, out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            "as" | "*" => break,
            "self" if !path.is_empty() => {}
            t if is_name(t) => path.push(t.to_string()),
            _ => {}
        }
        i += 1;
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// `crate::a::b`, `super::a` and `self::a` seen from `at`, as a path from the crate root; other
/// paths (other crates, `std`) are not ours.
fn resolve(path: &[String], at: &ModPath) -> Option<ModPath> {
    let mut base = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "super" | "self" => at.clone(),
        _ => return None,
    };
    let mut rest = if path[0] == "crate" { &path[1..] } else { path };
    while let Some(first) = rest.first() {
        match first.as_str() {
            "super" => {
                base.pop()?;
            }
            "self" => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The strongly connected components of more than one file (Tarjan), each with its edges.
fn circles(g: &Graph) -> Vec<Circle> {
    let names: Vec<&String> = g.files.keys().collect();
    let index_of: BTreeMap<&String, usize> =
        names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
    for (from, to) in g.edges.keys() {
        next[index_of[from]].push(index_of[to]);
    }
    struct Tarjan<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.out.push(component);
            }
        }
    }
    let mut t = Tarjan {
        next: &next,
        index: vec![None; names.len()],
        low: vec![0; names.len()],
        on_stack: vec![false; names.len()],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..names.len() {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut found: Vec<Circle> = t
        .out
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let files: BTreeSet<&String> = c.iter().map(|&v| names[v]).collect();
            let edges = g
                .edges
                .iter()
                .filter(|((from, to), _)| files.contains(from) && files.contains(to))
                .map(|((from, to), via)| {
                    let via: Vec<&str> = via.iter().map(String::as_str).collect();
                    format!("{from} -> {to} (via {})", via.join(", "))
                })
                .collect();
            Circle {
                files: files.into_iter().cloned().collect(),
                edges,
            }
        })
        .collect();
    found.sort_by(|a, b| a.files.cmp(&b.files));
    found
}

/// The circles of every crate in the workspace, by crate directory name.
fn workspace_circles() -> BTreeMap<String, Vec<Circle>> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut out = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(crates)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("src").is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let found = circles(&crate_graph(&dir.join("src")));
        if !found.is_empty() {
            out.insert(
                dir.file_name().unwrap().to_string_lossy().into_owned(),
                found,
            );
        }
    }
    out
}

fn report(all: &BTreeMap<String, Vec<Circle>>) -> String {
    let mut text = String::new();
    for (krate, found) in all {
        for c in found {
            text.push_str(&format!(
                "crates/{krate}/src: {} files import each other in a circle: {}\n",
                c.files.len(),
                c.files.join(", ")
            ));
            for e in &c.edges {
                text.push_str(&format!("    {e}\n"));
            }
        }
    }
    text
}

#[test]
fn no_crate_has_an_import_circle() {
    let all = workspace_circles();
    assert!(
        all.is_empty(),
        "import circles (a file of one module and a file of another need each other; move what \
         both need to where it belongs):\n{}",
        report(&all)
    );
}

/// Writes `files` (path, text) under a temp dir's `src` and returns the dir.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join("src").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn a_circle_is_found_with_the_edges_that_tie_it() {
    let dir = tree(&[
        ("lib.rs", "pub mod app;\npub mod api;\npub mod util;\n"),
        // app.rs reaches the api through a grouped use; api/jobs.rs comes back inline.
        (
            "app.rs",
            "use crate::{api::{jobs, ApiError as E}, util::Clock};\npub struct App;\n",
        ),
        (
            "api/mod.rs",
            "pub mod jobs;\npub struct ApiError;\nfn router() { self::jobs::list(); crate::api::jobs::list(); }\n",
        ),
        (
            "api/jobs.rs",
            "// use crate::util::nothing; (a comment)\n\
             const S: &str = \"crate::util::Clock\";\n\
             pub fn list() -> crate::app::App { let _: super::ApiError; crate::app::App }\n",
        ),
        ("util.rs", "pub struct Clock;\n"),
    ]);
    let g = crate_graph(&dir.path().join("src"));
    let found = circles(&g);
    assert_eq!(
        found,
        [Circle {
            files: vec!["api/jobs.rs".into(), "app.rs".into()],
            edges: vec![
                "api/jobs.rs -> app.rs (via crate::app::App)".into(),
                "app.rs -> api/jobs.rs (via crate::api::jobs)".into(),
            ],
        }],
        "{g:#?}"
    );
    // app.rs also needs api/mod.rs (for ApiError), and api/mod.rs calls into its child jobs.rs,
    // but a parent using its child is not an edge, so api/mod.rs is not in the circle. The paths
    // in the comment and the string are not edges either.
    let edge = |f: &str, t: &str| g.edges.contains_key(&(f.to_string(), t.to_string()));
    assert!(edge("app.rs", "api/mod.rs"));
    assert!(edge("app.rs", "util.rs"));
    assert!(!edge("api/mod.rs", "api/jobs.rs"));
    assert!(!edge("api/jobs.rs", "api/mod.rs"));
    assert!(!edge("api/jobs.rs", "util.rs"));
}

#[test]
fn parents_and_children_are_not_circles() {
    let dir = tree(&[
        ("lib.rs", "mod a;\nmod b;\nuse crate::a::deep::Thing;\n"),
        // A parent uses its child and the child its parent and the crate root.
        (
            "a/mod.rs",
            "pub mod deep;\nuse self::deep::Thing;\npub struct Shared;\n",
        ),
        (
            "a/deep.rs",
            "use super::Shared;\nuse super::super::b::Other;\npub struct Thing;\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::Shared;\n}\n",
        ),
        // b uses a's child, and nothing uses b's file back from a's side but deep.rs: one way.
        (
            "b.rs",
            "pub struct Other;\nfn f() { let _ = crate::a::deep::Thing; }\n",
        ),
        ("main.rs", "use crate::nothing;\n"),
    ]);
    let g = crate_graph(&dir.path().join("src"));
    let found = circles(&g);
    // deep.rs -> b.rs and b.rs -> deep.rs would be a circle: prove the two are seen, then that
    // without one of them nothing remains.
    assert_eq!(found.len(), 1, "{g:#?}");
    assert_eq!(found[0].files, ["a/deep.rs", "b.rs"]);
    let dir = tree(&[
        ("lib.rs", "mod a;\nmod b;\nuse crate::a::deep::Thing;\n"),
        (
            "a/mod.rs",
            "pub mod deep;\nuse self::deep::Thing;\npub struct Shared;\n",
        ),
        (
            "a/deep.rs",
            "use super::Shared;\npub struct Thing;\n\
             #[cfg(test)]\nmod tests {\n    use super::*;\n    use super::super::Shared;\n}\n",
        ),
        (
            "b.rs",
            "pub struct Other;\nfn f() { let _ = crate::a::deep::Thing; }\n",
        ),
    ]);
    let g = crate_graph(&dir.path().join("src"));
    assert_eq!(circles(&g), [], "{g:#?}");
    // The only edge left is b.rs -> a/deep.rs; the tests module's `super::*` is deep.rs itself.
    assert_eq!(
        g.edges.keys().cloned().collect::<Vec<_>>(),
        [("b.rs".to_string(), "a/deep.rs".to_string())]
    );
}

#[test]
fn tokens_skip_comments_strings_and_chars() {
    let t = tokens(
        "/* a /* nested */ crate::x */ let c = '{'; let s = r#\"crate::y \"quoted\"\"#; \
         let l: &'a str = \"\\\"crate::z\"; crate::w::V",
    );
    let joined = t.join(" ");
    assert!(
        !joined.contains('x') && !joined.contains('y') && !joined.contains('z'),
        "{joined}"
    );
    assert!(joined.ends_with("crate :: w :: V"), "{joined}");
    assert!(!t.contains(&"{".to_string()), "{joined}");
}
