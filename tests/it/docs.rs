//! The documentation holds together (issue 21): every relative link and `#anchor` of `README.md`
//! and `docs/*.md` resolves, and the configuration reference (`docs/configuration.md`) names
//! exactly the keys the loader accepts. The loader's keys come from the raw serde mirror
//! (`fhirguard::config::raw`), the same derive the unknown-key check reads through
//! [`keys_of`]; see [`keys`].

mod keys;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fhirguard::config::raw::{keys_of, RawAuthenticationConfiguration, RawUpstreamObject};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `README.md` and every page of `docs/`.
fn documents() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 10, "docs/ has {} pages", pages.len());
    pages.insert(0, root().join("README.md"));
    pages
}

/// The lines of a Markdown text outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// A heading's anchor as GitHub makes it: lower case, inline-code backticks and every
/// character but letters, digits, spaces, `-` and `_` dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors a page offers: its headings' slugs (a repeated one gets `-1`, `-2`, … as on
/// GitHub) and the `id`s of its `<a id="…">` elements.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut found = BTreeSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') {
            let base = slug(&line[hashes..]);
            let count = seen.entry(base.clone()).or_insert(0);
            found.insert(match *count {
                0 => base.clone(),
                n => format!("{base}-{n}"),
            });
            *count += 1;
        }
        let mut rest = line;
        while let Some(start) = rest.find("<a id=\"") {
            rest = &rest[start + 7..];
            if let Some(end) = rest.find('"') {
                found.insert(rest[..end].to_owned());
            }
        }
    }
    found
}

/// The targets of a page's inline links `[text](target)`, outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(text) {
        // Code spans hold examples, not links.
        let outside: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = outside.as_str();
        while let Some(start) = rest.find("](") {
            rest = &rest[start + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            found.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    found
}

/// What is wrong with one link of `page`, if anything.
fn broken(page: &Path, target: &str) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return None;
    }
    let (file, anchor) = match target.split_once('#') {
        Some((file, anchor)) => (file, Some(anchor)),
        None => (target, None),
    };
    let resolved = if file.is_empty() {
        page.to_path_buf()
    } else {
        page.parent().expect("a directory").join(file)
    };
    if !resolved.exists() {
        return Some(format!("no file {}", resolved.display()));
    }
    let anchor = anchor?;
    if resolved.extension().is_none_or(|ext| ext != "md") {
        return Some(format!(
            "an anchor into {}, not a Markdown page",
            resolved.display()
        ));
    }
    let text = std::fs::read_to_string(&resolved).expect("a page");
    (!anchors(&text).contains(anchor)).then(|| format!("no anchor #{anchor}"))
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for page in documents() {
        let text = std::fs::read_to_string(&page).expect("a page");
        for target in links(&text) {
            checked += 1;
            if let Some(problem) = broken(&page, &target) {
                let name = page.strip_prefix(root()).unwrap_or(&page).display();
                failures.push(format!("{name}: ({target}): {problem}"));
            }
        }
    }
    assert!(checked > 50, "only {checked} links found");
    assert!(
        failures.is_empty(),
        "broken links:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_link_checker_reads_github_anchors() {
    assert_eq!(slug(" Browser apps (CORS)"), "browser-apps-cors");
    assert_eq!(slug(" The `client_id` label"), "the-client_id-label");
    assert_eq!(
        slug(" Sender-constrained tokens (DPoP and mTLS)"),
        "sender-constrained-tokens-dpop-and-mtls"
    );
    let page = "# A\n```sh\n# not a heading\n```\n## A\n<a id=\"x\"></a>see [b](#a-1), `[c](#d)`";
    assert_eq!(
        anchors(page),
        BTreeSet::from(["a".into(), "a-1".into(), "x".into()])
    );
    assert_eq!(links(page), ["#a-1"]);
}

/// The keys `docs/configuration.md` documents: the backticked names in the first column of
/// each table whose first header is `key` (`a` / `b` rows name two keys).
fn documented_keys() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/configuration.md")).expect("reference");
    let mut keys = BTreeSet::new();
    let mut in_key_table = false;
    for line in prose(text.as_str()) {
        if !line.starts_with('|') {
            in_key_table = false;
            continue;
        }
        let first = line.split('|').nth(1).unwrap_or("").trim();
        if first == "key" {
            in_key_table = true;
            continue;
        }
        if !in_key_table || first.starts_with("---") {
            continue;
        }
        for (i, part) in first.split('`').enumerate() {
            if i % 2 == 1 {
                keys.insert(part.to_owned());
            }
        }
    }
    keys
}

/// Every key path the loader accepts, from the raw mirror. Two keys take a string or an object
/// (serde `untagged`, which the walk cannot look into): their object forms are added here.
fn loader_keys() -> BTreeSet<String> {
    let mut all = keys::paths::<fhirguard::config::raw::RawConfig>();
    for (key, object) in [
        ("upstream", keys::paths::<RawUpstreamObject>()),
        (
            "authenticationConfiguration",
            keys::paths::<RawAuthenticationConfiguration>(),
        ),
    ] {
        assert!(all.contains(key), "{key}");
        all.extend(object.iter().map(|path| format!("{key}.{path}")));
    }
    all
}

#[test]
fn the_configuration_reference_names_exactly_the_loaders_keys() {
    let documented = documented_keys();
    let accepted = loader_keys();
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "keys the loader accepts but docs/configuration.md does not document: {undocumented:?}\n\
         keys docs/configuration.md documents but the loader refuses: {unknown:?}"
    );
}

/// The walk agrees with the lists the unknown-key check uses, at the top and in the objects.
#[test]
fn the_key_walk_reads_what_the_unknown_key_check_reads() {
    let accepted = loader_keys();
    let top: BTreeSet<String> = accepted
        .iter()
        .filter(|path| !path.contains('.'))
        .cloned()
        .collect();
    let listed = keys_of::<fhirguard::config::raw::RawConfig>();
    assert_eq!(top, listed.iter().map(|k| k.to_string()).collect());
    for (prefix, listed) in [
        ("upstream.", keys_of::<RawUpstreamObject>()),
        ("limits.", keys_of::<fhirguard::config::raw::RawLimits>()),
        (
            "authenticationConfiguration.smartIdentityProviders[].applications[].",
            keys_of::<fhirguard::config::raw::RawApplication>(),
        ),
    ] {
        for key in listed {
            assert!(
                accepted.contains(&format!("{prefix}{key}")),
                "{prefix}{key}"
            );
        }
    }
    // Nested objects and lists of objects are walked into.
    for path in [
        "senderConstraints.dpop.nonce.secretFile",
        "sharedState.redis.url",
        "rateLimits[].requestsPerSecond",
        "roles.mappings",
    ] {
        assert!(accepted.contains(path), "{path} in {accepted:?}");
    }
}
