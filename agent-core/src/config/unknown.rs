//! Unknown keys: keys of a config node that nothing read.
//!
//! While a [`super::Plan`] is built, every parse of a node (`input.cpu`,
//! `output.es`, `aggs.mem.alarm`, ...) reports the keys serde skipped
//! (`serde_ignored`). Several structs often parse the same node (the core's
//! output settings and the plugin's own config both parse `output.es`), so
//! a key is unknown only when every parse of its node skipped it (or one of
//! its parents). Blocks read by hand declare their keys instead.
use super::load::join;
use serde::de::{self, Deserialize, Visitor};
use serde_yaml_ng::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A key no parse of its node read, probably a typo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub file: String,
    /// Dotted key path (`output.console.flush_intervall`).
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: key `{}`: {}", self.file, self.key, self.message)
    }
}

/// What the parses of one node left unread, and the keys they know.
#[derive(Default)]
struct NodeRecord {
    /// Per parse: the skipped key paths, relative to the node.
    skipped: Vec<BTreeSet<String>>,
    /// Top-level keys some parse knows (for "did you mean").
    known: BTreeSet<String>,
}

#[derive(Default)]
pub(crate) struct Collector {
    nodes: BTreeMap<String, NodeRecord>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Collector>> = const { RefCell::new(None) };
}

/// Collects skipped keys on this thread until dropped or finished.
pub(crate) struct Collecting {
    outer: Option<Collector>,
    done: bool,
}

impl Collecting {
    pub(crate) fn start() -> Collecting {
        let outer = ACTIVE.with(|a| a.borrow_mut().replace(Collector::default()));
        Collecting { outer, done: false }
    }

    /// Stops collecting and returns the unknown keys, as (key path, nearest
    /// known key) pairs.
    pub(crate) fn finish(mut self) -> Vec<(String, Option<String>)> {
        self.done = true;
        let outer = self.outer.take();
        let collector = ACTIVE.with(|a| std::mem::replace(&mut *a.borrow_mut(), outer));
        collector.map(Collector::unknown).unwrap_or_default()
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        if !self.done {
            let outer = self.outer.take();
            ACTIVE.with(|a| *a.borrow_mut() = outer);
        }
    }
}

pub(crate) fn is_collecting() -> bool {
    ACTIVE.with(|a| a.borrow().is_some())
}

/// Records one successful parse of the node at `base`.
pub(crate) fn record_parse(base: &str, skipped: BTreeSet<String>, known: &[&str]) {
    ACTIVE.with(|a| {
        if let Some(c) = a.borrow_mut().as_mut() {
            let node = c.nodes.entry(base.to_string()).or_default();
            node.skipped.push(skipped);
            node.known.extend(known.iter().map(|k| k.to_string()));
        }
    });
}

/// Records a block read by hand: its top-level keys matching `keys` (a
/// trailing `*` matches a prefix) are known, the others skipped.
pub(crate) fn record_declared(base: &str, value: &Value, keys: &[&str]) {
    if !is_collecting() {
        return;
    }
    // `name[]`: a list whose items another parse reads (the alarm's
    // `threshold:` rules); their keys are left for that parse to judge.
    let name = |p: &str| p.strip_suffix("[]").unwrap_or(p).to_string();
    let matches = |k: &str| {
        keys.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => k == name(p),
        })
    };
    let mut skipped: BTreeSet<String> = match value {
        Value::Mapping(m) => m
            .keys()
            .map(super::load::key_string)
            .filter(|k| !matches(k))
            .collect(),
        _ => BTreeSet::new(),
    };
    if let Value::Mapping(m) = value {
        for list in keys.iter().filter_map(|k| k.strip_suffix("[]")) {
            let Some(Value::Sequence(items)) = m.get(list) else {
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                if let Value::Mapping(item) = item {
                    for k in item.keys() {
                        skipped.insert(format!("{list}.{i}.{}", super::load::key_string(k)));
                    }
                }
            }
        }
    }
    let literal: Vec<String> = keys
        .iter()
        .filter(|k| !k.ends_with('*'))
        .map(|k| name(k))
        .collect();
    let literal: Vec<&str> = literal.iter().map(String::as_str).collect();
    record_parse(base, skipped, &literal);
}

impl Collector {
    fn unknown(self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for (base, node) in self.nodes {
            let Some((first, rest)) = node.skipped.split_first() else {
                continue;
            };
            // Skipped by every parse: the path itself or one of its parents.
            let skipped_by = |set: &BTreeSet<String>, path: &str| {
                let mut p = path;
                loop {
                    if set.contains(p) {
                        return true;
                    }
                    match p.rfind('.') {
                        Some(i) => p = &p[..i],
                        None => return false,
                    }
                }
            };
            let all: BTreeSet<&String> = node.skipped.iter().flatten().collect();
            let unknown: Vec<&String> = all
                .into_iter()
                .filter(|p| skipped_by(first, p) && rest.iter().all(|s| skipped_by(s, p)))
                .collect();
            // Report the outermost unknown path only.
            for path in &unknown {
                let parent_also = unknown.iter().any(|q| {
                    path.len() > q.len()
                        && path.starts_with(q.as_str())
                        && path.as_bytes()[q.len()] == b'.'
                });
                if parent_also {
                    continue;
                }
                let suggestion = if path.contains('.') {
                    None
                } else {
                    nearest(path, node.known.iter().map(String::as_str))
                };
                out.push((join(&base, path), suggestion));
            }
        }
        out
    }
}

/// The known key closest to `key` by edit distance, when close enough to be
/// a typo of it.
pub(crate) fn nearest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (key.chars().count() / 3).clamp(1, 3);
    known
        .filter(|k| *k != key)
        .map(|k| (strsim::damerau_levenshtein(key, k), k))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, k)| k.to_string())
}

/// The path serde_ignored reports, as dotted key segments (options and
/// newtypes add no segment).
pub(crate) fn path_string(path: &serde_ignored::Path) -> String {
    fn walk(p: &serde_ignored::Path, out: &mut Vec<String>) {
        use serde_ignored::Path as P;
        match p {
            P::Root => {}
            P::Seq { parent, index } => {
                walk(parent, out);
                out.push(index.to_string());
            }
            P::Map { parent, key } => {
                walk(parent, out);
                out.push(key.clone());
            }
            P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
                walk(parent, out)
            }
        }
    }
    let mut segs = Vec::new();
    walk(path, &mut segs);
    segs.join(".")
}

/// The field names of struct `T` (empty for other types and for structs
/// with `#[serde(flatten)]` fields).
pub fn struct_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe;
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("fields probed")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Found(&[])
        }
    }
    impl<'de> de::Deserializer<'de> for Probe {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    match T::deserialize(Probe) {
        Err(Found(fields)) => fields,
        Ok(_) => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_suggests_only_close_keys() {
        let known = ["flush_interval", "batch_size", "buffer_limit"];
        assert_eq!(
            nearest("flush_intervall", known.iter().copied()).as_deref(),
            Some("flush_interval")
        );
        assert_eq!(
            nearest("batchsize", known.iter().copied()).as_deref(),
            Some("batch_size")
        );
        assert_eq!(nearest("colour", known.iter().copied()), None);
    }

    #[test]
    fn a_key_is_unknown_only_if_every_parse_skipped_it() {
        let c = Collecting::start();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        record_parse(
            "output.es",
            set(&["url", "typo", "disk_buffer.bad"]),
            &["batch_size"],
        );
        record_parse(
            "output.es",
            set(&["batch_size", "typo", "disk_buffer"]),
            &["url"],
        );
        let found = c.finish();
        assert_eq!(
            found,
            vec![
                ("output.es.disk_buffer.bad".to_string(), None),
                ("output.es.typo".to_string(), None),
            ]
        );
        assert!(!is_collecting());
    }

    #[test]
    fn struct_fields_are_probed() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            alpha: u32,
            #[serde(rename = "beta_key")]
            beta: bool,
        }
        assert_eq!(struct_fields::<S>(), &["alpha", "beta_key"]);
        assert!(struct_fields::<u32>().is_empty());
    }
}
