//! The shape of the workspace: the import graph between the files of its crates (the binary's
//! `src/` and each `crates/*/src/`) has no cycle, and the layers point one way (see `LAYERS`;
//! the simulators serve the commands only). The crates' manifests say the same: the simulators
//! depend on no crate of erpsync but the clock, and the library not on the simulators.
//!
//! The graph is read from the source text, with no help from the compiler: a small tokenizer
//! skips comments, strings and characters, then every path that names a module of the crate
//! becomes an edge from the file it is written in to the file that defines what it names.
//! Such paths are those of `use crate::…`, `use super::…`, `use self::…` and `use child::…`,
//! paths through another crate of the workspace (`erpsync::engine::Engine`,
//! `erpsync_clock::SharedClock`), paths in code (`crate::engine::Engine`, `super::Row`), and
//! names a `use` brought in. Code in `#[cfg(test)]` modules counts like any other.
//!
//! Re-exports are followed: `use crate::connector::CompileProblem` is an edge to the file that
//! defines `CompileProblem` (`connector/problem.rs`), not to `connector/mod.rs` that re-exports
//! it. A `pub use` is no edge by itself; a private `use`, or a re-exported name used in its own
//! file, is.
//!
//! Parents and children: a file's edges to its own descendants (`mod.rs` or `shop.rs` using
//! `shop/resource.rs`) are not counted, since a module owns its submodules (it declares,
//! re-exports and calls them, and they see its private items); every other edge is, a child's
//! `use super::Item` included. So a child may use its parent, and the parent its children,
//! but a cycle through any other file (a child reaching its parent, which reaches a sibling
//! that uses the child) is found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a file may import from its own layer and those below it, never
/// from one above. The clock crate, `redact.rs`, `json.rs` (with `json/`) and the library's `lib.rs` are below
/// them all; the binary (`src/`: `main.rs` and the commands) is above them all.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "crates/erpsync-clock/src/",
            "crates/erpsync/src/redact.rs",
            "crates/erpsync/src/json.rs",
            "crates/erpsync/src/json/",
            "crates/erpsync/src/lib.rs",
        ],
    ),
    ("expr", &["crates/erpsync/src/expr/"]),
    ("config", &["crates/erpsync/src/config/"]),
    ("state", &["crates/erpsync/src/state/"]),
    ("connector", &["crates/erpsync/src/connector/"]),
    ("compile", &["crates/erpsync/src/compile/"]),
    ("engine", &["crates/erpsync/src/engine/"]),
    ("daemon", &["crates/erpsync/src/daemon/"]),
    ("authoring", &["crates/erpsync/src/authoring/"]),
    ("cli", &["src/"]),
];

/// The simulators stand beside the layers: they use the clock crate only, and only `cli` (the
/// `demo` and `sim` commands) uses them.
const SIM: &str = "crates/erpsync-sim/src/";

/// The clock crate: all of erpsync the simulators may use.
const CLOCK: &str = "crates/erpsync-clock/src/";

/// The binary's crate, above every layer.
const CLI: &str = "src/";

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Identifiers and punctuation of `text`, each with its line; comments, string, byte and
/// character literals, lifetimes and numbers are dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let ident_start = |ch: char| ch == '_' || ch.is_alphabetic();
    let ident_cont = |ch: char| ch == '_' || ch.is_alphanumeric();
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
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
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if c.get(i) == Some(&'\n') {
                    line += 1;
                }
                i += 1;
            }
            i += 1;
        } else if ch == '\'' {
            if next == Some('\\') {
                // An escape: the escaped character (`'\''` too) is part of the literal.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                // A lifetime or a label.
                i += 1;
                while i < c.len() && ident_cont(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (ident_cont(c[i])
                    || c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
            {
                i += 1;
            }
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_cont(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if raw_prefix && matches!(c.get(i), Some('"' | '#')) {
                let mut hashes = 0;
                while c.get(i + hashes) == Some(&'#') {
                    hashes += 1;
                }
                if c.get(i + hashes) == Some(&'"') {
                    // A raw string: up to `"` followed by as many `#`.
                    i += hashes + 1;
                    loop {
                        if i >= c.len() {
                            break;
                        }
                        if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                            i += 1 + hashes;
                            break;
                        }
                        if c[i] == '\n' {
                            line += 1;
                        }
                        i += 1;
                    }
                    continue;
                }
                if word == "r" && hashes == 1 {
                    // A raw identifier.
                    i += 1;
                    let start = i;
                    while i < c.len() && ident_cont(c[i]) {
                        i += 1;
                    }
                    out.push((Tok::Ident(c[start..i].iter().collect()), line));
                    continue;
                }
            }
            if word == "b" && matches!(c.get(i), Some('"' | '\'')) {
                // A byte string or byte: the literal is skipped on the next turn.
                continue;
            }
            out.push((Tok::Ident(word), line));
        } else if ch == ':' && next == Some(':') {
            out.push((Tok::Path, line));
            i += 2;
        } else {
            out.push((Tok::Punct(ch), line));
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Modules and files

/// One file of the workspace and the module it defines.
struct SourceFile {
    /// Relative to the workspace root, with `/` separators:
    /// `crates/erpsync/src/engine/report.rs`.
    name: String,
    /// The module path, starting with the crate's name: `["erpsync", "engine", "report"]`.
    module: Vec<String>,
    text: String,
}

/// The package name in the manifest of `dir`, as code spells it (`erpsync_sim`), or `fallback`.
fn crate_name(dir: &Path, fallback: &str) -> String {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    let name = manifest
        .split("[package]")
        .nth(1)
        .and_then(|package| {
            package.lines().find_map(|l| {
                let (key, value) = l.split_once('=')?;
                (key.trim() == "name").then(|| value.trim().trim_matches('"').to_owned())
            })
        })
        .unwrap_or_else(|| fallback.to_owned());
    name.replace('-', "_")
}

/// The crates of the workspace at `root`: the root package's folder, then each of `crates/`,
/// with the name code uses for it.
fn crate_dirs(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out = vec![(root.to_path_buf(), crate_name(root, "erpsync_cli"))];
    if let Ok(entries) = std::fs::read_dir(root.join("crates")) {
        let mut dirs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        dirs.sort();
        for dir in dirs {
            let fallback = dir.file_name().unwrap().to_string_lossy().into_owned();
            let name = crate_name(&dir, &fallback);
            out.push((dir, name));
        }
    }
    out.retain(|(dir, _)| dir.join("src").is_dir());
    out
}

fn source_files(root: &Path) -> Vec<SourceFile> {
    crate_dirs(root)
        .into_iter()
        .flat_map(|(dir, name)| crate_files(root, &dir, &name))
        .collect()
}

/// The files under `dir/src`, their modules under the crate `krate`.
fn crate_files(root: &Path, dir: &Path, krate: &str) -> Vec<SourceFile> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&dir.join("src"), &mut paths);
    paths.sort();
    let slashed = |p: &Path| {
        p.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    paths
        .into_iter()
        .map(|path| {
            let name = slashed(path.strip_prefix(root).unwrap());
            let in_crate = slashed(path.strip_prefix(dir.join("src")).unwrap());
            let mut module: Vec<String> = std::iter::once(krate.to_owned())
                .chain(
                    in_crate
                        .trim_end_matches(".rs")
                        .split('/')
                        .map(str::to_owned),
                )
                .collect();
            // `mod.rs` is its folder's module; `lib.rs` and `main.rs` are the crate's root.
            let last = module.last().map(String::as_str);
            if last == Some("mod") || (module.len() == 2 && matches!(last, Some("lib" | "main"))) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            SourceFile { name, module, text }
        })
        .collect()
}

/// One import: the file it is written in, the line, the path as written and the file it reaches.
#[derive(Debug, Clone)]
struct Edge {
    from: usize,
    to: usize,
    line: usize,
    path: String,
}

/// What one file says: its file-level `use` bindings, the items it defines and every path to
/// a module of the crate, made absolute.
#[derive(Default)]
struct Parsed {
    /// Name bound by a `use` at file level → (absolute path, is it a re-export).
    bindings: BTreeMap<String, (Vec<String>, bool)>,
    /// Modules glob-imported at file level, and whether the glob is a re-export.
    globs: Vec<(Vec<String>, bool)>,
    /// Items defined at file level.
    defined: BTreeSet<String>,
    /// Absolute paths used: in code, in private `use`s and in `use`s of inline modules.
    uses: Vec<(Vec<String>, usize, String)>,
}

/// Absolute form of `written` seen from module `current` of a file defining `module`, whose
/// child modules are `children`, in a workspace whose crates are `crates`; `None` for a path
/// outside the workspace.
fn absolute(
    written: &[String],
    current: &[String],
    module: &[String],
    children: &BTreeSet<String>,
    crates: &BTreeSet<String>,
    in_use: bool,
) -> Option<Vec<String>> {
    let first = written.first()?;
    let krate = module.first()?;
    let mut out: Vec<String> = match first.as_str() {
        "crate" => vec![krate.clone()],
        "self" | "super" => current.to_vec(),
        _ if current == module && children.contains(first) => current.to_vec(),
        _ if crates.contains(first) => Vec::new(),
        _ if in_use && current.len() == 1 => vec![krate.clone()],
        _ => return None,
    };
    let mut rest = if first == "crate" || first == "self" {
        &written[1..]
    } else {
        written
    };
    while rest.first().is_some_and(|s| s == "super") {
        out.pop();
        rest = &rest[1..];
    }
    out.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(out)
}

fn parse(file: &SourceFile, files: &[SourceFile]) -> Parsed {
    let toks = tokens(&file.text);
    let crates: BTreeSet<String> = files.iter().map(|f| f.module[0].clone()).collect();
    let children: BTreeSet<String> = files
        .iter()
        .filter(|f| f.module.len() == file.module.len() + 1 && f.module.starts_with(&file.module))
        .map(|f| f.module.last().unwrap().clone())
        .collect();
    let mut parsed = Parsed::default();
    // Modules declared inside the file, with the brace depth they close at.
    let mut scopes: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        let current: Vec<String> = file
            .module
            .iter()
            .cloned()
            .chain(scopes.iter().map(|(n, _)| n.clone()))
            .collect();
        let at_file_level = depth == 0;
        match &toks[i].0 {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if scopes.last().is_some_and(|(_, d)| *d == depth) {
                    scopes.pop();
                }
            }
            Tok::Ident(w) if w == "mod" => {
                if let (Some((Tok::Ident(name), _)), Some((Tok::Punct('{'), _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    scopes.push((name.clone(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Tok::Ident(w)
                if at_file_level
                    && matches!(
                        w.as_str(),
                        "fn" | "struct"
                            | "enum"
                            | "trait"
                            | "type"
                            | "const"
                            | "static"
                            | "union"
                            | "macro_rules"
                    ) =>
            {
                let at = if w == "macro_rules" { i + 2 } else { i + 1 };
                if let Some((Tok::Ident(name), _)) = toks.get(at) {
                    parsed.defined.insert(name.clone());
                }
            }
            Tok::Ident(w) if w == "use" => {
                let end = (i..toks.len())
                    .find(|&j| toks[j].0 == Tok::Punct(';'))
                    .unwrap_or(toks.len());
                // `pub use`, `pub(crate) use`, `pub(super) use`: a re-export.
                let public = i >= 1
                    && (toks[i - 1].0 == Tok::Ident("pub".into())
                        || toks[i - 1].0 == Tok::Punct(')'));
                for (path, line, alias, glob) in use_paths(&toks[i + 1..end]) {
                    let Some(abs) =
                        absolute(&path, &current, &file.module, &children, &crates, true)
                    else {
                        continue;
                    };
                    if at_file_level {
                        if glob {
                            parsed.globs.push((abs.clone(), public));
                        } else if let Some(name) = alias.filter(|n| n != "_") {
                            parsed.bindings.insert(name, (abs.clone(), public));
                        }
                    }
                    if !(at_file_level && public) {
                        parsed.uses.push((abs, line, path.join("::")));
                    }
                }
                i = end + 1;
                continue;
            }
            Tok::Ident(w)
                if toks.get(i + 1).is_some_and(|t| t.0 == Tok::Path)
                    && (i == 0 || !matches!(toks[i - 1].0, Tok::Path | Tok::Punct('.')))
                    && !(i >= 1 && toks[i - 1].0 == Tok::Ident("in".into())) =>
            {
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j).is_some_and(|t| t.0 == Tok::Path) {
                    match toks.get(j + 1) {
                        Some((Tok::Ident(seg), _)) => path.push(seg.clone()),
                        _ => break,
                    }
                    j += 2;
                }
                if let Some(abs) =
                    absolute(&path, &current, &file.module, &children, &crates, false)
                {
                    parsed.uses.push((abs, toks[i].1, path.join("::")));
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    // A name a file-level `use` bound, used in the code (not as a field or method).
    let mut in_use = false;
    for (k, (tok, line)) in toks.iter().enumerate() {
        match tok {
            Tok::Ident(w) if w == "use" => in_use = true,
            Tok::Punct(';') => in_use = false,
            Tok::Ident(w) if !in_use && !after_path_or_dot(&toks, k) => {
                let Some((abs, _)) = parsed.bindings.get(w) else {
                    continue;
                };
                let mut path = abs.clone();
                let mut written = vec![w.clone()];
                let mut j = k + 1;
                while let (Some((Tok::Path, _)), Some((Tok::Ident(seg), _))) =
                    (toks.get(j), toks.get(j + 1))
                {
                    path.push(seg.clone());
                    written.push(seg.clone());
                    j += 2;
                }
                // A module's name not followed by `::` is a local variable of the same name.
                if written.len() == 1 && files.iter().any(|f| f.module == *abs) {
                    continue;
                }
                parsed.uses.push((path, *line, written.join("::")));
            }
            _ => {}
        }
    }
    parsed
}

/// Whether token `k` follows `::` or `.`: the middle of a path, a field or a method.
fn after_path_or_dot(toks: &[(Tok, usize)], k: usize) -> bool {
    k >= 1 && matches!(toks[k - 1].0, Tok::Path | Tok::Punct('.'))
}

/// The file that defines what the absolute path names, following `use` bindings and globs
/// (re-exports or not) of the module files it goes through. With `strict`, `None` when the
/// module it reaches does not have the name.
fn resolve(
    path: &[String],
    files: &[SourceFile],
    parsed: &[Parsed],
    strict: bool,
    hops: usize,
) -> Option<usize> {
    let (n, file) = (0..=path.len()).rev().find_map(|n| {
        files
            .iter()
            .position(|f| f.module == path[..n])
            .map(|f| (n, f))
    })?;
    let Some(name) = path.get(n) else {
        return Some(file);
    };
    let here = &parsed[file];
    if here.defined.contains(name) || hops > 8 {
        return Some(file);
    }
    if let Some((target, _)) = here.bindings.get(name) {
        let mut next = target.clone();
        next.extend(path[n + 1..].iter().cloned());
        // A binding to something outside the crate (`pub use chrono::Utc`) is no edge.
        return resolve(&next, files, parsed, false, hops + 1).filter(|_| !target.is_empty());
    }
    for (glob, _) in &here.globs {
        let mut next = glob.clone();
        next.extend(path[n..].iter().cloned());
        if let Some(found) = resolve(&next, files, parsed, true, hops + 1) {
            return Some(found);
        }
    }
    (!strict).then_some(file)
}

/// The edges between the files of the workspace.
fn import_graph(files: &[SourceFile]) -> Vec<Edge> {
    let parsed: Vec<Parsed> = files.iter().map(|f| parse(f, files)).collect();
    let mut edges = Vec::new();
    for (from, p) in parsed.iter().enumerate() {
        for (abs, line, written) in &p.uses {
            if let Some(to) = resolve(abs, files, &parsed, false, 0)
                && to != from
                && !files[to].module.starts_with(&files[from].module)
            {
                edges.push(Edge {
                    from,
                    to,
                    line: *line,
                    path: written.clone(),
                });
            }
        }
    }
    edges
}

/// The paths of a use tree (the tokens between `use` and `;`), each with its line, the name it
/// binds (`None` for a glob) and whether it is a glob.
fn use_paths(toks: &[(Tok, usize)]) -> Vec<(Vec<String>, usize, Option<String>, bool)> {
    type Out = Vec<(Vec<String>, usize, Option<String>, bool)>;
    fn tree(toks: &[(Tok, usize)], i: &mut usize, prefix: &mut Vec<String>, out: &mut Out) {
        let start = prefix.len();
        let mut line = toks.get(*i).map_or(0, |t| t.1);
        let mut alias = None;
        let mut glob = false;
        loop {
            match toks.get(*i) {
                Some((Tok::Ident(w), _)) if w == "as" => {
                    if let Some((Tok::Ident(a), _)) = toks.get(*i + 1) {
                        alias = Some(a.clone());
                    }
                    *i += 2;
                }
                Some((Tok::Ident(w), l)) => {
                    prefix.push(w.clone());
                    line = *l;
                    *i += 1;
                }
                Some((Tok::Path, _)) => *i += 1,
                Some((Tok::Punct('{'), _)) => {
                    *i += 1;
                    while !matches!(toks.get(*i), None | Some((Tok::Punct('}'), _))) {
                        tree(toks, i, prefix, out);
                        if let Some((Tok::Punct(','), _)) = toks.get(*i) {
                            *i += 1;
                        }
                    }
                    *i += 1;
                    prefix.truncate(start);
                    return;
                }
                Some((Tok::Punct('*'), _)) => {
                    glob = true;
                    *i += 1;
                }
                _ => break,
            }
        }
        if !prefix.is_empty() {
            let name = if glob {
                None
            } else {
                alias.or_else(|| {
                    let last = prefix.last().unwrap();
                    if last == "self" {
                        prefix.iter().rev().nth(1).cloned()
                    } else {
                        Some(last.clone())
                    }
                })
            };
            out.push((prefix.clone(), line, name, glob));
        }
        prefix.truncate(start);
    }
    let mut out = Vec::new();
    // A leading `::` names an external crate.
    if toks.first().is_some_and(|t| t.0 == Tok::Path) {
        return out;
    }
    tree(toks, &mut 0, &mut Vec::new(), &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Cycles

/// The strongly connected components of more than one file (Tarjan), each sorted.
fn cycles(n: usize, edges: &[Edge]) -> Vec<Vec<usize>> {
    let mut adj = vec![BTreeSet::new(); n];
    for e in edges {
        adj[e.from].insert(e.to);
    }
    struct State<'a> {
        adj: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.adj[v].clone().iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        adj: &adj,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// One shortest cycle through the first file of `component`, as the imports that make it.
fn a_cycle<'e>(component: &[usize], edges: &'e [Edge]) -> Vec<&'e Edge> {
    let start = component[0];
    let inside: BTreeSet<usize> = component.iter().copied().collect();
    let mut came_by: BTreeMap<usize, &Edge> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for e in edges
            .iter()
            .filter(|e| e.from == v && inside.contains(&e.to))
        {
            if e.to == start {
                let mut chain = vec![e];
                let mut at = v;
                while at != start {
                    let back = came_by[&at];
                    chain.push(back);
                    at = back.from;
                }
                chain.reverse();
                return chain;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = came_by.entry(e.to) {
                slot.insert(e);
                queue.push_back(e.to);
            }
        }
    }
    Vec::new()
}

fn describe(files: &[SourceFile], component: &[usize], edges: &[Edge]) -> String {
    let names: Vec<&str> = component.iter().map(|&i| files[i].name.as_str()).collect();
    let mut out = format!("files in a cycle: {}\n", names.join(", "));
    for e in a_cycle(component, edges) {
        out += &format!(
            "    {}:{} `{}` -> {}\n",
            files[e.from].name, e.line, e.path, files[e.to].name
        );
    }
    out
}

fn layer_of(file: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, prefixes)| prefixes.iter().any(|p| file.starts_with(p)))
}

/// Imports that reach a layer above their own, and uses of the simulators outside `cli`.
fn layer_violations(files: &[SourceFile], edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    for e in edges {
        let (from, to) = (files[e.from].name.as_str(), files[e.to].name.as_str());
        let at = format!("{from}:{} `{}` -> {to}", e.line, e.path);
        if from.starts_with(SIM) {
            if !(to.starts_with(SIM) || to.starts_with(CLOCK)) {
                out.push(format!(
                    "{at}: the simulators use nothing of erpsync but the clock"
                ));
            }
        } else if to.starts_with(SIM) {
            if !from.starts_with(CLI) {
                out.push(format!("{at}: only `cli` uses the simulators"));
            }
        } else if let (Some(a), Some(b)) = (layer_of(from), layer_of(to))
            && b > a
        {
            out.push(format!(
                "{at}: `{}` is above `{}`",
                LAYERS[b].0, LAYERS[a].0
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The problems of the workspace at `root`: cycles first, then imports against the layers.
fn check(root: &Path) -> (Vec<String>, Vec<String>) {
    let files = source_files(root);
    let edges = import_graph(&files);
    let found = cycles(files.len(), &edges)
        .iter()
        .map(|c| describe(&files, c, &edges))
        .collect();
    (found, layer_violations(&files, &edges))
}

#[test]
fn the_files_of_the_workspace_import_each_other_without_a_cycle() {
    let (found, _) = check(&repo());
    assert!(
        found.is_empty(),
        "{} import cycle(s) between files:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn layers_point_one_way() {
    let files = source_files(&repo());
    for krate in [CLI, CLOCK, SIM, "crates/erpsync/src/"] {
        assert!(
            files.iter().any(|f| f.name.starts_with(krate)),
            "no file read under {krate}"
        );
    }
    assert!(
        files
            .iter()
            .all(|f| f.name.starts_with(SIM) || layer_of(&f.name).is_some()),
        "a file in no layer: add its folder to `LAYERS`"
    );
    let (_, found) = check(&repo());
    assert!(
        found.is_empty(),
        "{} import(s) against the layers:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The crates of the workspace that depend on `package` in their manifest (dependencies of any
/// kind), by manifest path.
fn dependents(root: &Path, package: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (dir, _) in crate_dirs(root) {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let mut in_deps = false;
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                // `[workspace.dependencies]` only lists versions for the members to pick from.
                in_deps = line.contains("dependencies") && !line.starts_with("[workspace");
                if line
                    .trim_matches(['[', ']'])
                    .ends_with(&format!("dependencies.{package}"))
                {
                    out.push(dir.join("Cargo.toml"));
                }
            } else if in_deps
                && line
                    .split(['=', '.'])
                    .next()
                    .is_some_and(|k| k.trim() == package)
            {
                out.push(dir.join("Cargo.toml"));
            }
        }
    }
    out.into_iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect()
}

#[test]
fn the_crates_depend_on_each_other_as_the_layers_do() {
    let root = repo();
    // The simulators and the library build without each other: editing the engine does not
    // compile the simulators again, and the simulators never reach into the engine.
    assert_eq!(dependents(&root, "erpsync-sim"), ["Cargo.toml"]);
    assert_eq!(dependents(&root, "erpsync"), ["Cargo.toml"]);
    assert_eq!(
        dependents(&root, "erpsync-clock"),
        ["crates/erpsync/Cargo.toml", "crates/erpsync-sim/Cargo.toml"]
    );
}

/// A workspace written for the check: each (path, text) goes at that path, relative to a
/// temporary folder.
fn fake_crate(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn the_check_finds_a_cycle_through_a_re_export_and_names_its_imports() {
    let dir = fake_crate(&[
        (
            "crates/erpsync/src/lib.rs",
            "pub mod config;\npub mod engine;\n",
        ),
        (
            "crates/erpsync/src/config/mod.rs",
            "mod model;\npub use model::Model;\n",
        ),
        // A string and a comment that look like imports are not.
        (
            "crates/erpsync/src/config/model.rs",
            "pub struct Model;\nfn f() { let _ = \"crate::engine::Run\"; } // use crate::engine;\nfn g(_: crate::engine::Run) {}\n",
        ),
        (
            "crates/erpsync/src/engine/mod.rs",
            "use crate::config::Model;\npub struct Run(Model);\n",
        ),
    ]);
    let (cycles, layers) = check(dir.path());
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("files in a cycle: crates/erpsync/src/config/model.rs, crates/erpsync/src/engine/mod.rs\n"),
        "{}",
        cycles[0]
    );
    assert!(
        cycles[0].contains("crates/erpsync/src/config/model.rs:3 `crate::engine::Run` -> crates/erpsync/src/engine/mod.rs"),
        "{}",
        cycles[0]
    );
    assert!(
        cycles[0].contains("crates/erpsync/src/engine/mod.rs:1 `crate::config::Model` -> crates/erpsync/src/config/model.rs"),
        "{}",
        cycles[0]
    );
    assert_eq!(
        layers,
        [
            "crates/erpsync/src/config/model.rs:3 `crate::engine::Run` -> crates/erpsync/src/engine/mod.rs: `engine` is above `config`"
        ]
    );
}

#[test]
fn a_parent_may_use_its_children_but_a_child_reaching_back_through_a_sibling_is_a_cycle() {
    let parent_only = fake_crate(&[
        ("crates/erpsync/src/lib.rs", "pub mod state;\n"),
        (
            "crates/erpsync/src/state/mod.rs",
            "mod sqlite;\nmod types;\npub use types::Binding;\npub fn open() -> sqlite::Store { sqlite::Store }\n",
        ),
        ("crates/erpsync/src/state/types.rs", "pub struct Binding;\n"),
        (
            "crates/erpsync/src/state/sqlite.rs",
            "use super::Binding;\npub struct Store;\nimpl Store { fn b(&self) -> Binding { Binding } }\n",
        ),
    ]);
    assert_eq!(check(parent_only.path()), (vec![], vec![]));
    let through_sibling = fake_crate(&[
        ("crates/erpsync/src/lib.rs", "pub mod state;\n"),
        (
            "crates/erpsync/src/state/mod.rs",
            "mod sqlite;\nmod types;\npub use types::Binding;\n",
        ),
        (
            "crates/erpsync/src/state/types.rs",
            "pub struct Binding;\nfn s() -> super::sqlite::Store { todo!() }\n",
        ),
        (
            "crates/erpsync/src/state/sqlite.rs",
            "use super::{Binding, types};\npub struct Store;\n",
        ),
    ]);
    let (cycles, _) = check(through_sibling.path());
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("files in a cycle: crates/erpsync/src/state/sqlite.rs, crates/erpsync/src/state/types.rs\n"),
        "{}",
        cycles[0]
    );
}

#[test]
fn paths_through_other_crates_are_edges_and_the_simulators_stand_apart() {
    let dir = fake_crate(&[
        (
            "crates/erpsync-clock/src/lib.rs",
            "pub type SharedClock = ();\n",
        ),
        (
            "crates/erpsync/src/lib.rs",
            "pub mod engine;\npub use erpsync_clock as clock;\n",
        ),
        (
            "crates/erpsync/src/engine/mod.rs",
            "use crate::clock::SharedClock;\npub struct Engine(SharedClock);\nfn f(_: erpsync_sim::Sim) {}\n",
        ),
        (
            "crates/erpsync-sim/src/lib.rs",
            "use erpsync_clock::SharedClock;\npub struct Sim(SharedClock);\nfn f(_: erpsync::engine::Engine) {}\n",
        ),
        ("src/main.rs", "mod cli;\nfn main() { cli::main() }\n"),
        (
            "src/cli/mod.rs",
            "use erpsync::engine::Engine;\nuse erpsync_sim::Sim;\npub fn main() {}\n",
        ),
    ]);
    let files = source_files(dir.path());
    let edges: Vec<(String, String)> = import_graph(&files)
        .iter()
        .map(|e| (files[e.from].name.clone(), files[e.to].name.clone()))
        .collect();
    // `crate::clock` is the clock crate, through the library's re-export.
    assert!(
        edges.contains(&(
            "crates/erpsync/src/engine/mod.rs".into(),
            "crates/erpsync-clock/src/lib.rs".into()
        )),
        "{edges:?}"
    );
    assert!(
        edges.contains(&(
            "src/cli/mod.rs".into(),
            "crates/erpsync/src/engine/mod.rs".into()
        )),
        "{edges:?}"
    );
    let (cycles, layers) = check(dir.path());
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert_eq!(
        layers,
        [
            "crates/erpsync-sim/src/lib.rs:3 `erpsync::engine::Engine` -> crates/erpsync/src/engine/mod.rs: the simulators use nothing of erpsync but the clock",
            "crates/erpsync/src/engine/mod.rs:3 `erpsync_sim::Sim` -> crates/erpsync-sim/src/lib.rs: only `cli` uses the simulators",
        ]
    );
}
