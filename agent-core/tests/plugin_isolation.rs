//! Layering rules of the source tree, checked on the files themselves:
//!
//! - a plugin folder (`src/plugins/<kind>/<name>/`) imports no other plugin
//!   folder: what two plugins share lives in `src/plugins/common/` or
//!   `src/format/`;
//! - plugins do not reach up into the reloader (`crate::reload`): what they
//!   report about the agent comes from the bottom-layer stats store
//!   (`crate::selfstat`).
use regex::Regex;
use std::path::{Path, PathBuf};

const KINDS: [&str; 4] = ["inputs", "outputs", "processors", "aggregators"];

fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plugins")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every plugin folder: (kind, name, path).
fn plugin_folders() -> Vec<(String, String, PathBuf)> {
    let mut found = Vec::new();
    for kind in KINDS {
        for entry in std::fs::read_dir(plugins_dir().join(kind)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                found.push((kind.to_string(), name, path));
            }
        }
    }
    found
}

#[test]
fn no_plugin_folder_imports_another() {
    let folders = plugin_folders();
    assert!(
        folders.len() > 20,
        "found only {} plugin folders",
        folders.len()
    );
    let absolute = Regex::new(r"plugins::(inputs|outputs|processors|aggregators)::(\w+)").unwrap();
    let mut violations = Vec::new();
    for (kind, name, dir) in &folders {
        // `super::<sibling>` names a plugin of the same kind when the chain
        // of `super`s climbs out of the folder: one from `mod.rs`, two from
        // another file (inline modules only add to what is needed).
        let siblings: Vec<&str> = folders
            .iter()
            .filter(|(k, n, _)| k == kind && n != name)
            .map(|(_, n, _)| n.as_str())
            .collect();
        let relative = Regex::new(&format!(r"\b((?:super::)+)({})::", siblings.join("|"))).unwrap();
        let mut files = Vec::new();
        rust_files(dir, &mut files);
        for file in files {
            let depth = if file.file_name().is_some_and(|n| n == "mod.rs") {
                1
            } else {
                2
            };
            let text = std::fs::read_to_string(&file).unwrap();
            for (no, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for c in absolute.captures_iter(code) {
                    if (&c[1], &c[2]) != (kind.as_str(), name.as_str()) {
                        violations.push(format!("{}:{}: {}", file.display(), no + 1, line.trim()));
                    }
                }
                let climbs_out = relative
                    .captures_iter(code)
                    .any(|c| c[1].matches("super::").count() >= depth);
                if climbs_out {
                    violations.push(format!("{}:{}: {}", file.display(), no + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "plugins importing other plugins (move the shared code to src/plugins/common/):\n{}",
        violations.join("\n")
    );
}

#[test]
fn plugins_do_not_import_the_reloader() {
    let mut files = Vec::new();
    rust_files(&plugins_dir(), &mut files);
    let reload = Regex::new(r"\bcrate::reload\b").unwrap();
    let hits: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .enumerate()
                .filter(|(_, l)| reload.is_match(l.split("//").next().unwrap_or("")))
                .map(|(no, l)| format!("{}:{}: {}", f.display(), no + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        hits.is_empty(),
        "plugins reading the reloader (use crate::selfstat):\n{}",
        hits.join("\n")
    );
}
