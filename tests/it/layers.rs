//! The module layering `src/lib.rs` documents holds in the code (issues 12 and 21): a module
//! uses only modules below it, and no two import each other — at every level.
//!
//! Every path in a file's code (doc comments and unit tests aside) is read: `use` declarations
//! with their `{…}` groups, and `crate::…`, `super::…` and `self::…` paths in the code. Each is
//! resolved to the module it names, and through that module's own `use` declarations to where
//! the item is defined (a child's `super::KeyStore` that its parent re-exports from `jwks` is a
//! use of `jwks`). Two checks follow:
//! - between the top-level modules, every use runs down the layer list of `src/lib.rs`;
//! - inside every module, no two of its submodules (with their files below them) use each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path below the crate root: `["auth", "jwks"]` for `src/auth/jwks.rs`.
type Module = Vec<String>;

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

/// One library file: its module, its path under `src/` and its code, without comments, unit
/// tests (`#[cfg(test)] mod tests { … }`, `tests.rs`, `*_tests.rs`) and string literals.
#[derive(Debug)]
struct File {
    module: Module,
    path: String,
    code: String,
}

/// Every Rust file under `src/` that is not a test-only file (`tests.rs`, `*_tests.rs`): its
/// path relative to `src/` and its text, in path order.
fn sources() -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![source()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let relative = path.strip_prefix(source()).expect("under src");
            let name = relative.display().to_string();
            let test_only = name.ends_with("/tests.rs") || name.ends_with("_tests.rs");
            if name.ends_with(".rs") && !test_only {
                let text = std::fs::read_to_string(&path).expect("read");
                found.push((name, text));
            }
        }
    }
    found.sort();
    found
}

fn files() -> Vec<File> {
    sources()
        .into_iter()
        .filter(|(name, _)| !["lib.rs", "main.rs"].contains(&name.as_str()))
        .map(|(name, text)| {
            let module = name
                .trim_end_matches(".rs")
                .trim_end_matches("/mod")
                .split('/')
                .map(str::to_owned)
                .collect();
            let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or("");
            File {
                module,
                path: name,
                code: without_comments_and_strings(code),
            }
        })
        .collect()
}

/// The code with `//` comments and the contents of string literals blanked (a path inside a
/// message or a doc comment is no import). Character literals keep their quote (`'"'`).
fn without_comments_and_strings(code: &str) -> String {
    let mut kept = String::with_capacity(code.len());
    // A string may run over several lines.
    let mut in_string = false;
    for line in code.lines() {
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_string => {
                    chars.next();
                }
                '"' => {
                    in_string = !in_string;
                    kept.push('"');
                }
                '\'' if !in_string => {
                    kept.push(c);
                    // `'"'` and `'\"'`: the quote of a character literal opens no string.
                    match chars.peek() {
                        Some('"') => {
                            chars.next();
                        }
                        Some('\\') => {
                            chars.next();
                            chars.next();
                        }
                        _ => {}
                    }
                }
                '/' if !in_string && chars.peek() == Some(&'/') => break,
                _ if in_string => {}
                _ => kept.push(c),
            }
        }
        kept.push('\n');
    }
    kept
}

/// One path a file names, as written: its segments (`["super", "jwks", "KeyStore"]`), and the
/// name it binds when it comes from a `use` (`KeyStore`, or the alias after `as`).
#[derive(Debug)]
struct Named {
    segments: Vec<String>,
    binds: Option<String>,
    line: String,
}

/// Every path a file's code names: its `use` declarations, flattened, and each `crate::`,
/// `super::`, `self::` path elsewhere in its code.
fn named(code: &str) -> Vec<Named> {
    let mut found = Vec::new();
    let mut rest = String::with_capacity(code.len());
    let mut remaining = code;
    while let Some(at) = find_use(remaining) {
        rest.push_str(&remaining[..at]);
        let tail = &remaining[at + "use ".len()..];
        let end = tail.find(';').unwrap_or(tail.len());
        let declaration = &tail[..end];
        let line = format!("use {};", squeeze(declaration));
        for (segments, binds) in flatten(&[], declaration) {
            found.push(Named {
                segments,
                binds: Some(binds),
                line: line.clone(),
            });
        }
        remaining = &tail[end..];
    }
    rest.push_str(remaining);
    for line in rest.lines() {
        for start in ["crate::", "super::", "self::"] {
            for (at, _) in line.match_indices(start) {
                let before = line[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                let path: String = line[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                found.push(Named {
                    segments: path
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                    binds: None,
                    line: line.trim().to_owned(),
                });
            }
        }
    }
    found
}

/// Where the next `use` declaration starts (`use`, `pub use`, `pub(crate) use`).
fn find_use(code: &str) -> Option<usize> {
    code.match_indices("use ").map(|(at, _)| at).find(|&at| {
        let before = code[..at].chars().next_back();
        before.is_none_or(|c| c.is_whitespace() || c == ')' || c == '{' || c == ';')
    })
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A `use` tree as paths and the names they bind: `super::{jwks::{self, KeyStore as K}, x::*}`
/// gives `super::jwks` (`jwks`), `super::jwks::KeyStore` (`K`) and `super::x::*` (`*`).
fn flatten(prefix: &[String], tree: &str) -> Vec<(Vec<String>, String)> {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let mut base = prefix.to_vec();
        base.extend(segments(&tree[..open]));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        return split_top_level(inner)
            .into_iter()
            .flat_map(|item| flatten(&base, item))
            .collect();
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((path, alias)) => (path, Some(alias.trim().to_owned())),
        None => (tree, None),
    };
    let mut full = prefix.to_vec();
    let own = segments(path);
    if own.is_empty() {
        return Vec::new();
    }
    if own != ["self"] {
        full.extend(own);
    }
    let binds = alias.unwrap_or_else(|| full.last().cloned().unwrap_or_default());
    vec![(full, binds)]
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The items of a `{…}` group, split at its own commas (not those of nested groups).
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items.into_iter().filter(|i| !i.trim().is_empty()).collect()
}

/// The crate's module graph: which module each file's code uses, and where.
struct Graph {
    files: Vec<File>,
    modules: BTreeSet<Module>,
    /// Per module, the names its `use` declarations bind (private ones included: a child may
    /// name them through `super::`), as paths relative to that module's file.
    bindings: BTreeMap<Module, BTreeMap<String, Vec<String>>>,
}

impl Graph {
    fn new() -> Graph {
        Graph::of(files())
    }

    fn of(files: Vec<File>) -> Graph {
        let modules = files.iter().map(|f| f.module.clone()).collect();
        let bindings = files
            .iter()
            .map(|file| {
                let bound = named(&file.code)
                    .into_iter()
                    .filter_map(|n| Some((n.binds?, n.segments)))
                    .collect();
                (file.module.clone(), bound)
            })
            .collect();
        Graph {
            files,
            modules,
            bindings,
        }
    }

    /// Every use of one module by another: (user, used, the file and line that say so).
    fn uses(&self) -> Vec<(Module, Module, String)> {
        let mut uses = Vec::new();
        for file in &self.files {
            for named in named(&file.code) {
                let place = format!("{}: {}", file.path, named.line);
                for used in self.resolve(&file.module, &named.segments, 0) {
                    if used != file.module {
                        uses.push((file.module.clone(), used, place.clone()));
                    }
                }
            }
        }
        uses
    }

    /// The modules a path written in `from` names: the module it reaches, and, when the item
    /// after it is one that module imports, the module that item comes from (recursively).
    fn resolve(&self, from: &Module, path: &[String], depth: usize) -> Vec<Module> {
        let Some(absolute) = self.absolute(from, path) else {
            return Vec::new();
        };
        let reached = (0..=absolute.len())
            .rev()
            .map(|n| absolute[..n].to_vec())
            .find(|m| m.is_empty() || self.modules.contains(m))
            .unwrap_or_default();
        let mut found = Vec::new();
        if !reached.is_empty() {
            found.push(reached.clone());
        }
        let item = absolute.get(reached.len());
        let imported = item.and_then(|item| self.bindings.get(&reached)?.get(item));
        if let Some(imported) = imported.filter(|_| depth < 8) {
            found.extend(self.resolve(&reached, imported, depth + 1));
        }
        found
    }

    /// A path as written in `from`, from the crate root; `None` for another crate's.
    fn absolute(&self, from: &Module, path: &[String]) -> Option<Vec<String>> {
        let mut base = from.clone();
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate" | "$crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("self") => rest = &rest[1..],
            Some("super") => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
            }
            // A plain first segment is a child module of `from`, or another crate.
            Some(first) => {
                let mut child = from.clone();
                child.push(first.to_owned());
                if !self.modules.contains(&child) {
                    return None;
                }
            }
            None => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let layers = layers();
    let level = |module: &str| {
        layers
            .iter()
            .position(|layer| layer.iter().any(|m| m == module))
    };
    let mut wrong = BTreeSet::new();
    for (user, used, place) in Graph::new().uses() {
        let (module, target) = (&user[0], &used[0]);
        if module == target {
            continue;
        }
        let Some(from) = level(module) else {
            wrong.insert(format!("{module} is not in the layer list of src/lib.rs"));
            continue;
        };
        match level(target) {
            Some(to) if to < from => {}
            _ => {
                wrong.insert(format!("{module} uses {target}, not below it: {place}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", Vec::from_iter(wrong).join("\n"));
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

/// The import loops between submodules of one module, at every level of the crate: two that
/// import each other (`a/b ↔ a/c`) or a longer ring (`a/b → a/c → a/d → a/b`), each followed by
/// the lines that make it. Each ring is named once, from its first member.
fn loops(uses: Vec<(Module, Module, String)>) -> Vec<String> {
    // A use from anywhere below submodule `a/b` of a common module to anywhere below its
    // sibling `a/c` is a use of `a/c` by `a/b`; a module's uses of its own parent or children
    // are not between siblings.
    let mut between: BTreeMap<(Module, Module), BTreeSet<String>> = BTreeMap::new();
    for (user, used, place) in uses {
        let common = user.iter().zip(&used).take_while(|(a, b)| a == b).count();
        if common == user.len() || common == used.len() {
            continue;
        }
        let sides = (user[..=common].to_vec(), used[..=common].to_vec());
        between.entry(sides).or_default().insert(place);
    }
    let mut next: BTreeMap<&Module, Vec<&Module>> = BTreeMap::new();
    for (one, other) in between.keys() {
        next.entry(one).or_default().push(other);
    }
    let mut named: BTreeSet<BTreeSet<&Module>> = BTreeSet::new();
    let mut loops = Vec::new();
    for start in next.keys() {
        let Some(ring) = shortest_ring(&next, start) else {
            continue;
        };
        if !named.insert(ring.iter().copied().collect()) {
            continue;
        }
        let first = (0..ring.len()).min_by_key(|&i| ring[i]).unwrap_or(0);
        let ring: Vec<&Module> = ring[first..]
            .iter()
            .chain(&ring[..first])
            .copied()
            .collect();
        let name = |m: &Module| m.join("/");
        let mut message = if ring.len() == 2 {
            format!("{} ↔ {}", name(ring[0]), name(ring[1]))
        } else {
            let mut names: Vec<String> = ring.iter().map(|m| name(m)).collect();
            names.push(name(ring[0]));
            names.join(" → ")
        };
        for (i, one) in ring.iter().enumerate() {
            let other = ring[(i + 1) % ring.len()];
            for place in &between[&((*one).clone(), other.clone())] {
                message.push_str(&format!("\n    {place}"));
            }
        }
        loops.push(message);
    }
    loops
}

/// The shortest ring of uses that leaves `start` and comes back to it, `start` first.
fn shortest_ring<'a>(
    next: &BTreeMap<&'a Module, Vec<&'a Module>>,
    start: &'a Module,
) -> Option<Vec<&'a Module>> {
    let mut came_from: BTreeMap<&Module, &Module> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &to in next.get(at).into_iter().flatten() {
            if to == start {
                let mut ring = vec![at];
                while let Some(&before) = came_from.get(ring[ring.len() - 1]) {
                    ring.push(before);
                }
                ring.reverse();
                return Some(ring);
            }
            if to != start && !came_from.contains_key(to) {
                came_from.insert(to, at);
                queue.push_back(to);
            }
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other_at_any_level() {
    let loops = loops(Graph::new().uses());
    assert!(
        loops.is_empty(),
        "import loops (a module uses only modules below it, and no two import each other):\n{}",
        loops.join("\n")
    );
}

/// The check sees loops however they are written: `super::` paths, `crate::a::b` paths, groups,
/// and items a parent re-exports from its child.
#[test]
fn the_loop_check_sees_each_way_of_writing_an_import() {
    let module = |path: &str| -> Module { path.split('/').map(str::to_owned).collect() };
    let file = |path: &str, code: &str| File {
        module: module(path),
        path: format!("{path}.rs"),
        code: code.to_owned(),
    };
    let cases = [
        ("use super::b::B;", "use super::a::A;"),
        (
            "use super::{b::B, c};",
            "pub(crate) fn f() { super::a::f() }",
        ),
        (
            "use crate::m::b::B;",
            "use crate::m::{a::{self, A as Other}};",
        ),
        // `super::B` is `m`'s re-export of `b::B`.
        ("use super::B;", "fn f() -> crate::m::a::A { todo!() }"),
    ];
    for (a, b) in cases {
        let files = vec![
            file("m", "pub mod a;\npub mod b;\npub use b::B;"),
            file("m/a", a),
            file("m/b", b),
            file("m/c", ""),
        ];
        let found = loops(Graph::of(files).uses());
        assert_eq!(found.len(), 1, "{a} / {b}: {found:?}");
        assert!(found[0].starts_with("m/a ↔ m/b\n"), "{found:?}");
    }
    // A ring of three, none of which imports one that imports it back.
    let files = vec![
        file("m", "pub mod a;\npub mod b;\npub mod c;"),
        file("m/a", "use super::b::B;"),
        file("m/b", "use crate::m::c::C;"),
        file("m/c", "fn f() { super::a::f() }"),
    ];
    let found = loops(Graph::of(files).uses());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("m/a → m/b → m/c → m/a\n"), "{found:?}");
    // One way only, a use of the parent, and a path in a string or a comment: no loop.
    let files = vec![
        file("m", "pub mod a;\npub mod b;\npub struct P;"),
        file("m/a", "use super::b::B;\nuse super::P;"),
        file(
            "m/b",
            &without_comments_and_strings(
                "use super::P; // super::a::A\nconst S: &str = \"super::a::A\";",
            ),
        ),
    ];
    assert_eq!(loops(Graph::of(files).uses()), Vec::<String>::new());
}

/// No file in `src/` has over 500 lines before its unit tests (issue 21): a file that grows past
/// that is split along a seam, as `proxy/decision.rs`, `error.rs` and `cli/explain.rs` were.
/// Lines are counted as written, doc comments included; test-only files are not counted.
#[test]
fn no_file_has_over_500_lines_before_its_tests() {
    const LIMIT: usize = 500;
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|(name, text)| {
            let lines = text
                .lines()
                .take_while(|line| line.trim() != "#[cfg(test)]")
                .count();
            (lines > LIMIT).then(|| format!("src/{name}: {lines} lines"))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {LIMIT} lines before their tests:\n{}",
        long.join("\n")
    );
}
