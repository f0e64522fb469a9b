//! The kernel memory manager's one-way dependencies, checked on the source (a host test):
//! every module in kernel/src/mm/ uses only the modules below it in `LAYERS`, and outside `mm`
//! only kernel modules that never reach back into `mm` (directly or through others).
//!
//! The check reads tokens, not lines: comments, strings and `ktest!(...)` blocks are dropped
//! (in-kernel tests run with every layer up, like integration tests), then every path that
//! starts with `crate::` or `super::` is followed through `use` groups (`use super::{a,
//! b::{c}}` over any number of lines), so neither formatting nor grouping hides an edge. A
//! glob or a bare `crate::mm` / `super::{self}` (which would let later paths name any
//! module) is refused outright.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// kernel/src/mm's modules, bottom first (kernel/src/mm/mod.rs documents the same list).
pub const LAYERS: &[&str] = &[
    "physmem", "hooks", "frames", "paging", "heap", "stacks", "pressure", "memory",
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Punct(char),
    /// `::`
    Path,
}

/// Tokens of Rust source without comments, string/char literals and lifetimes.
fn tokens(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(b.get(i + 1), Some('"' | '#'))
            && raw_string_end(&b, i).is_some()
        {
            i = raw_string_end(&b, i).unwrap_or(b.len());
        } else if c == 'b' && b.get(i + 1) == Some(&'"') {
            i = string_end(&b, i + 1);
        } else if c == '"' {
            i = string_end(&b, i);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F}') or a lifetime ('a): skip either.
            if b.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let mut word: String = b[start..i].iter().collect();
            // Raw identifiers: r#crate is the identifier `crate`.
            if word == "r" && b.get(i) == Some(&'#') {
                let s = i + 1;
                i = s;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                word = b[s..i].iter().collect();
            }
            out.push(Tok::Ident(word));
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push(Tok::Path);
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

fn string_end(b: &[char], open: usize) -> usize {
    let mut i = open + 1;
    while i < b.len() {
        match b[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// End of a raw string `r#"..."#` starting at `at` (the `r`), if it is one.
fn raw_string_end(b: &[char], at: usize) -> Option<usize> {
    let mut i = at + 1;
    let mut hashes = 0;
    while b.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    if b.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < b.len() {
        if b[i] == '"' && (1..=hashes).all(|k| b.get(i + k) == Some(&'#')) {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(b.len())
}

/// Drops every `ktest!( ... )` invocation (balanced brackets of any kind).
fn without_ktests(toks: Vec<Tok>) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let is_ktest = toks[i] == Tok::Ident("ktest".into())
            && toks.get(i + 1) == Some(&Tok::Punct('!'))
            && matches!(toks.get(i + 2), Some(Tok::Punct('(' | '[' | '{')));
        if !is_ktest {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        let mut depth = 0;
        i += 2;
        while i < toks.len() {
            match toks[i] {
                Tok::Punct('(' | '[' | '{') => depth += 1,
                Tok::Punct(')' | ']' | '}') => depth -= 1,
                _ => {}
            }
            i += 1;
            if depth == 0 {
                break;
            }
        }
    }
    out
}

/// Every path starting at `crate` or `super`, expanded through use groups: `crate::{a,
/// b::{c, d}}` gives [crate, a], [crate, b, c], [crate, b, d]. A path ends at its first
/// segment that is not followed by `::`.
fn paths(toks: &[Tok]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if let Tok::Ident(w) = &toks[i] {
            let after_path = i > 0 && toks[i - 1] == Tok::Path;
            // `pub(crate)`, `pub(super)`, `pub(in crate::x)` are visibility, not use.
            let visibility = i > 1
                && (toks[i - 1] == Tok::Ident("in".into())
                    || (toks[i - 1] == Tok::Punct('(') && toks[i - 2] == Tok::Ident("pub".into())));
            if (w == "crate" || w == "super") && !after_path && !visibility {
                let mut prefix = vec![w.clone()];
                i = tree(toks, i + 1, &mut prefix, &mut out);
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Parses the rest of a use tree after `prefix` from `i`; returns the index after it.
fn tree(toks: &[Tok], mut i: usize, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let depth = prefix.len();
    loop {
        if toks.get(i) != Some(&Tok::Path) {
            out.push(prefix.clone());
            break;
        }
        match toks.get(i + 1) {
            Some(Tok::Ident(w)) => {
                prefix.push(w.clone());
                i += 2;
            }
            Some(Tok::Punct('*')) => {
                prefix.push("*".into());
                out.push(prefix.clone());
                i += 2;
                break;
            }
            Some(Tok::Punct('{')) => {
                i = group(toks, i + 1, prefix, out);
                break;
            }
            _ => {
                out.push(prefix.clone());
                break;
            }
        }
    }
    prefix.truncate(depth);
    i
}

/// Parses a use group `{ ... }` starting at its `{` after `prefix`; returns the index after
/// its `}`.
fn group(toks: &[Tok], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    i += 1;
    loop {
        match toks.get(i) {
            Some(Tok::Punct('}')) => return i + 1,
            Some(Tok::Ident(w)) if w == "as" => i += 2,
            Some(Tok::Ident(w)) => {
                let mut sub = prefix.to_vec();
                sub.push(w.clone());
                i = tree(toks, i + 1, &mut sub, out);
            }
            Some(Tok::Punct('*')) => {
                let mut sub = prefix.to_vec();
                sub.push("*".into());
                out.push(sub);
                i += 1;
            }
            // `{{a, b}}`: a group directly in a group.
            Some(Tok::Punct('{')) => i = group(toks, i, prefix, out),
            Some(_) => i += 1,
            None => return i,
        }
    }
}

/// Which kernel module a path names, seen from `module` (a top-level name like "smp", or
/// "mm/frames" for a file in kernel/src/mm/, "mm" for mm/mod.rs). `Ok(None)` for paths
/// inside the same file (`self::`-like); `Err` for a path that hides what it names.
fn target(module: &str, path: &[String]) -> Result<Option<String>, String> {
    let mut abs: Vec<String> = Vec::new();
    let mut rest = path.iter();
    match rest.next().map(String::as_str) {
        Some("crate") => {}
        Some("super") => {
            // The parent of mm/X is mm; of mm (mod.rs) or a top-level module, the root.
            let mut base: Vec<String> = match module.split_once('/') {
                Some((dir, _)) => vec![dir.to_string()],
                None => vec![],
            };
            let mut it = rest.clone().peekable();
            while it.peek().map(|s| s.as_str()) == Some("super") {
                base.pop();
                it.next();
                rest.next();
            }
            abs = base;
        }
        _ => return Ok(None),
    }
    abs.extend(rest.cloned());
    let joined = path.join("::");
    if abs.iter().any(|s| s == "*") {
        return Err(format!("glob import `{joined}` hides what it uses"));
    }
    match abs.as_slice() {
        [] => Err(format!("`{joined}` names the crate root")),
        [m] if m == "mm" => Err(format!("`{joined}` names mm itself: name the module")),
        [m, s, ..] if m == "mm" && s == "self" => {
            Err(format!("`{joined}` names mm itself: name the module"))
        }
        [m, x, ..] if m == "mm" => Ok(Some(format!("mm/{x}"))),
        [x, ..] if x == "self" => Ok(None),
        [x, ..] => Ok(Some(x.clone())),
    }
}

/// The kernel modules each module's code (tests aside) names.
fn edges_of(module: &str, src: &str) -> Result<BTreeSet<String>, String> {
    let toks = without_ktests(tokens(src));
    let mut set = BTreeSet::new();
    for p in paths(&toks) {
        if let Some(t) = target(module, &p)? {
            if t != module {
                set.insert(t);
            }
        }
    }
    Ok(set)
}

/// Checks the layering of a kernel source tree; returns every violation found.
pub fn check(kernel_src: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    // module name -> its source (a directory module's files concatenated).
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    let mut macros: BTreeMap<String, String> = BTreeMap::new();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(kernel_src) else {
        return vec![format!("cannot read {}", kernel_src.display())];
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        if p.is_dir() && name == "mm" {
            for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                let fp = f.path();
                if fp.extension().is_some_and(|x| x == "rs") {
                    let stem = fp.file_stem().and_then(|s| s.to_str()).unwrap_or("");
                    let m = if stem == "mod" {
                        "mm".into()
                    } else {
                        format!("mm/{stem}")
                    };
                    modules.insert(m, read(&fp));
                }
            }
        } else if p.is_dir() {
            let mut all = String::new();
            for f in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                all.push_str(&read(&f.path()));
                all.push('\n');
            }
            modules.insert(name, all);
        } else if p.extension().is_some_and(|x| x == "rs") && name != "main" {
            modules.insert(name, read(&p));
        }
    }
    // `#[macro_export]` macros live at the crate root but belong to their file.
    for (m, src) in &modules {
        let toks = tokens(src);
        for w in toks.windows(3) {
            if let [Tok::Ident(a), Tok::Punct('!'), Tok::Ident(name)] = w {
                if a == "macro_rules" {
                    macros.insert(name.clone(), m.clone());
                }
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, src) in &modules {
        match edges_of(m, src) {
            Ok(edges) => {
                let edges = edges
                    .into_iter()
                    .map(|t| match macros.get(&t) {
                        Some(owner) if !modules.contains_key(&t) => owner.clone(),
                        _ => t,
                    })
                    .collect();
                graph.insert(m.clone(), edges);
            }
            Err(e) if m.starts_with("mm") => {
                problems.push(format!("kernel/src/{m}.rs: {e}"));
                graph.insert(m.clone(), BTreeSet::new());
            }
            // Outside mm, a path the check cannot follow (an inner module's `use super::*`)
            // counts as reaching everything, mm included: mm may then not use that module.
            Err(_) => {
                graph.insert(m.clone(), BTreeSet::from(["<unknown>".to_string()]));
            }
        }
    }
    // Whether a module outside mm reaches into mm. Names that are not modules are root items
    // (main.rs), and the root declares mm: they count as reaching it.
    let reaches_mm = |start: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_string()];
        while let Some(m) = todo.pop() {
            if m.starts_with("mm") || !graph.contains_key(&m) {
                return true;
            }
            if seen.insert(m.clone()) {
                todo.extend(graph[&m].iter().cloned());
            }
        }
        false
    };
    let rank = |m: &str| LAYERS.iter().position(|l| format!("mm/{l}") == m);
    for m in modules.keys().filter(|m| m.starts_with("mm/")) {
        let Some(mine) = rank(m) else {
            problems.push(format!(
                "kernel/src/{m}.rs is not in the layer list (xtask/src/layering.rs LAYERS, \
                 kernel/src/mm/mod.rs): place it"
            ));
            continue;
        };
        for t in &graph[m] {
            if t.starts_with("mm") {
                match rank(t) {
                    Some(theirs) if theirs < mine => {}
                    Some(_) => problems.push(format!(
                        "back edge: {m} uses {t}, which sits above it (layers, bottom first: {})",
                        LAYERS.join(" < ")
                    )),
                    None => problems.push(format!("{m} uses {t}, which is not a mm layer")),
                }
            } else if reaches_mm(t) {
                problems.push(format!(
                    "{m} uses `{t}`, which itself depends on mm (a cycle through {t})"
                ));
            }
        }
    }
    if let Some(edges) = graph.get("mm") {
        for t in edges {
            problems.push(format!(
                "kernel/src/mm/mod.rs uses {t}: keep mod.rs to declarations"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(module: &str, src: &str) -> Vec<String> {
        edges_of(module, src).unwrap().into_iter().collect()
    }

    #[test]
    fn the_kernel_memory_manager_has_no_back_edges() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/src");
        let problems = check(&src);
        assert!(
            problems.is_empty(),
            "layering violations:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn every_layer_exists() {
        let mm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/src/mm");
        for l in LAYERS {
            assert!(
                mm.join(format!("{l}.rs")).exists(),
                "LAYERS names {l}, which is gone"
            );
        }
    }

    #[test]
    fn grouped_and_multi_line_uses_are_followed() {
        let src = "use super::{\n    physmem,\n    pressure::{self, Level},\n};\nuse crate::{percpu::MAX_CPUS, smp};";
        assert_eq!(
            edges("mm/frames", src),
            ["mm/physmem", "mm/pressure", "percpu", "smp"]
        );
        let src = "fn f() { crate :: mm\n :: pressure :: level(); super ::heap::stats(); }";
        assert_eq!(edges("mm/frames", src), ["mm/heap", "mm/pressure"]);
        let src = "use crate::{mm::{frames, heap as h}, console};";
        assert_eq!(edges("smp", src), ["console", "mm/frames", "mm/heap"]);
        assert_eq!(
            edges("mm/frames", "fn f() { r#crate::smp::current(); }"),
            ["smp"]
        );
    }

    #[test]
    fn comments_strings_and_ktests_are_not_edges() {
        let src = r##"
            // use super::pressure;
            /* crate::smp /* nested */ super::memory */
            const S: &str = "super::pressure::update";
            const R: &str = r#"crate::smp"#;
            const C: char = '"';
            fn f<'a>(x: &'a u8) -> &'a u8 { x }
            levitate_hal::ktest!(fn t() -> KtestResult { crate::smp::run_on_all(f, 0); Ok(()) });
            use super::physmem;
        "##;
        assert_eq!(edges("mm/frames", src), ["mm/physmem"]);
    }

    #[test]
    fn hiding_paths_are_refused() {
        for src in [
            "use super::*;",
            "use crate::mm;",
            "use super::{self};",
            "use crate::mm::*;",
            "use crate::mm::{*};",
        ] {
            assert!(edges_of("mm/frames", src).is_err(), "{src} accepted");
        }
        // Visibility is not a dependency.
        let vis = "pub(super) fn f() {} pub(crate) struct S; pub(in crate::mm) fn g() {}";
        assert!(edges("mm/frames", vis).is_empty());
        // mod.rs's `super` is the root: a plain root item.
        assert_eq!(edges("mm", "use super::smp;"), ["smp"]);
    }

    /// A tree with a back edge (frames -> pressure, written to dodge a line grep) and an
    /// outside cycle (frames -> smp -> mm::paging) is caught.
    #[test]
    fn a_back_edge_and_a_cycle_through_an_outside_module_fail() {
        let dir = std::env::temp_dir().join(format!("levitate-layering-{}", std::process::id()));
        let mm = dir.join("mm");
        std::fs::create_dir_all(&mm).unwrap();
        for l in LAYERS {
            std::fs::write(mm.join(format!("{l}.rs")), "").unwrap();
        }
        std::fs::write(mm.join("mod.rs"), "pub mod frames;").unwrap();
        std::fs::write(
            mm.join("frames.rs"),
            "use super::{physmem,\n   /* x */ pressure};\nfn f() { crate::smp::go(); }",
        )
        .unwrap();
        std::fs::write(dir.join("smp.rs"), "use crate::mm::{paging};").unwrap();
        std::fs::write(dir.join("percpu.rs"), "").unwrap();
        let problems = check(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("back edge: mm/frames uses mm/pressure"));
        assert!(problems[1].contains("mm/frames uses `smp`"));
    }
}
