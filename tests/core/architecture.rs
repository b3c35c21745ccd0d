//! The module graph has no circle, and no application module imports a concrete model: a
//! new model family plugs into the applications through the registry and `Pipeline`
//! only. Read from the sources (`use crate::...` paths), file by file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file under src/ (`core/boomerang.rs` -> `core::boomerang`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The modules a file's code (before its `#[cfg(test)]` part) refers to through `crate::`,
/// `super::`, `self::` or a bare child-module path, as module paths that exist.
fn imports(module: &str, is_mod_rs: bool, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = BTreeSet::new();
    // `super::` of module `a::b` is `a`, whether it lives in `a/b.rs` or `a/b/mod.rs`.
    let here: Vec<&str> = module.split("::").filter(|s| !s.is_empty()).collect();
    let parent = here[..here.len().saturating_sub(1)].join("::");
    let own = module.to_string();
    let _ = is_mod_rs;
    let mut relative = |prefix: &str, base: &str| {
        for (i, _) in text.match_indices(prefix) {
            if i > 0
                && text[..i]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                continue;
            }
            let line_start = text[..i].rfind('\n').map_or(0, |p| p + 1);
            if text[line_start..].trim_start().starts_with("//") {
                continue;
            }
            let path: String = text[i + prefix.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            for k in (1..=segs.len()).rev() {
                let m = if base.is_empty() {
                    segs[..k].join("::")
                } else {
                    format!("{base}::{}", segs[..k].join("::"))
                };
                if modules.contains(&m) {
                    out.insert(m);
                    break;
                }
            }
        }
    };
    relative("super::", &parent);
    relative("self::", &own);
    for (i, _) in text.match_indices("crate::") {
        // Skip doc comments and strings: only code lines count.
        let line_start = text[..i].rfind('\n').map_or(0, |p| p + 1);
        let line = text[line_start..].lines().next().unwrap_or("").trim_start();
        if line.starts_with("//") {
            continue;
        }
        let path: String = text[i + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        // The longest prefix that names a module.
        let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
        for k in (1..=segs.len()).rev() {
            let m = segs[..k].join("::");
            if modules.contains(&m) {
                out.insert(m);
                break;
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    files
        .iter()
        .map(|f| {
            let m = module_of(&src, f);
            let is_mod_rs = f.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
            let mut deps = imports(&m, is_mod_rs, &std::fs::read_to_string(f).unwrap(), &modules);
            deps.remove(&m);
            (m, deps)
        })
        .collect()
}

#[test]
fn the_module_graph_has_no_circle() {
    let g = graph();
    assert!(g.len() > 40, "read only {} modules", g.len());
    // Depth-first search for a back edge; report the circle.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            // A parent module's mod.rs declaring its children is not an import.
            if d.starts_with(&format!("{m}::")) {
                continue;
            }
            match state.get(d.as_str()) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == d).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if !state.contains_key(m.as_str()) {
            if let Some(cycle) = visit(m, &g, &mut state, &mut Vec::new()) {
                panic!("import circle: {}", cycle.join(" -> "));
            }
        }
    }
}

#[test]
fn applications_import_no_concrete_model() {
    for (m, deps) in graph() {
        if m.starts_with("apps") || m.starts_with("core") {
            // The array <-> tensor crossing is plumbing every tch network shares (LPIPS in
            // apps::metrics too), not a model.
            let concrete: Vec<&String> = deps
                .iter()
                .filter(|d| d.starts_with("models") && d.as_str() != "models::crossing")
                .collect();
            assert!(concrete.is_empty(), "{m} imports {concrete:?}");
        }
    }
}
