//! The module layering `src/lib.rs` documents holds in the code (issue 12): every `crate::`
//! path in a module's code (doc comments and unit tests aside) names the module itself or one
//! listed below it, so no import runs up and no two modules import each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layer list of `src/lib.rs`, bottom first: each line of its second `text` block names a
/// module, or several side by side (`a · b`), before its description.
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(source().join("lib.rs")).expect("src/lib.rs");
    let block = lib
        .split("//! ```text")
        .nth(2)
        .and_then(|rest| rest.split("//! ```").next())
        .expect("the layer block of src/lib.rs");
    block
        .lines()
        .map(|line| line.trim_start_matches("//!").trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let names = line.split("  ").next().unwrap_or("");
            names.split(" · ").map(|n| n.trim().to_owned()).collect()
        })
        .collect()
}

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Each top-level module's `crate::` uses, from its files' code.
fn uses() -> BTreeMap<String, Vec<(String, String)>> {
    let mut found: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut pending = vec![source()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let relative = path.strip_prefix(source()).expect("under src");
            let module = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("")
                .trim_end_matches(".rs")
                .to_owned();
            let text = std::fs::read_to_string(&path).expect("read");
            let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for used in line.split("crate::").skip(1) {
                    let target: String = used
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if target != module && !target.is_empty() {
                        let place = format!("{}: {}", relative.display(), line.trim());
                        found
                            .entry(module.clone())
                            .or_default()
                            .push((target, place));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_module_imports_one_above_it() {
    let layers = layers();
    let level = |module: &str| {
        layers
            .iter()
            .position(|layer| layer.iter().any(|m| m == module))
    };
    let mut wrong = Vec::new();
    for (module, targets) in uses() {
        let Some(from) = level(&module) else {
            wrong.push(format!("{module} is not in the layer list of src/lib.rs"));
            continue;
        };
        for (target, place) in targets {
            match level(&target) {
                Some(to) if to < from => {}
                _ => wrong.push(format!("{module} uses {target}, not below it: {place}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The list names every module of the crate, once.
    let lib = std::fs::read_to_string(source().join("lib.rs")).expect("src/lib.rs");
    let mut declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .map(|name| name.trim_end_matches(';'))
        .collect();
    let mut listed: Vec<&str> = layers.iter().flatten().map(String::as_str).collect();
    declared.sort_unstable();
    listed.sort_unstable();
    assert_eq!(
        listed, declared,
        "the layer list of src/lib.rs and its modules"
    );
}
