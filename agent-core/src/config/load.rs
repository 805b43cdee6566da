//! Reading PyAgent's `etc/` folder: find the files, parse them with line
//! and column on errors, and merge them deeply in PyAgent's order while
//! remembering which file set each key (so later errors can name the file).
//!
//! The `config` crate does not read the files: it cannot place a file under
//! a key prefix (`etc/input/cpu.yaml` → `input.cpu`), cannot list a
//! directory, and its YAML errors lose the line and column. It reads and
//! types the environment overrides (`AGENT__INPUT__PING__TIMEOUT=2`), the
//! last layer.
use super::ConfigError;
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The plugin sections, in the order their folders are read.
pub const SECTIONS: [&str; 4] = ["input", "processor", "aggs", "output"];

/// Largest config file accepted; a bigger one is refused, not read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Which file last set each key path (`input.cpu.alarm.percent`).
///
/// Only the root of what one file set is recorded: a key without an entry
/// came from the same file as its nearest recorded ancestor. A thousand
/// probe targets are then one entry, not thousands of paths.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    paths: BTreeMap<String, Arc<Path>>,
}

impl Provenance {
    /// `path` (and everything under it) was set by `file`.
    fn record(&mut self, path: &str, file: &Arc<Path>) {
        // A replaced subtree forgets where its old children came from.
        let prefix = format!("{path}.");
        let stale: Vec<String> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.paths.remove(&k);
        }
        self.paths.insert(path.to_string(), file.clone());
    }

    /// How many key paths are recorded.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The file that set `path` or its nearest ancestor.
    pub fn file_of(&self, path: &str) -> Option<&Path> {
        let mut p = path;
        loop {
            if let Some(f) = self.paths.get(p) {
                return Some(f);
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.paths.get("").map(|f| &**f),
            }
        }
    }
}

pub fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else if key.is_empty() {
        base.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// YAML keys may be numbers or booleans; PyAgent treated them as strings.
pub fn key_string(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// The merged configuration tree and where each key came from.
#[derive(Debug, Clone)]
pub struct MergedTree {
    pub root: Value,
    pub provenance: Provenance,
    pub files: Vec<PathBuf>,
    /// Plugin sections kept as JSON text once the plan is built (see
    /// [`MergedTree::compacted`]), by key path (`input.ping`). `root` then
    /// holds only their scalar keys.
    pub(crate) sections: BTreeMap<String, Arc<str>>,
}

/// A section whose text is shorter than this stays a parsed tree: it
/// costs little either way, and reads of it need no parse.
pub(crate) const COMPACT_MIN_BYTES: usize = 512;

impl MergedTree {
    pub fn new(root: Value, provenance: Provenance, files: Vec<PathBuf>) -> MergedTree {
        MergedTree {
            root,
            provenance,
            files,
            sections: BTreeMap::new(),
        }
    }

    /// The same tree with each big plugin section (`input.<name>`,
    /// `output.<name>`, ...) kept as JSON text instead of a parsed
    /// tree, for as long as the agent runs on it. A parsed target costs
    /// about 400 bytes (a mapping, its hash index, its strings); as text it
    /// is the 30 bytes of its line: 30,000 probe targets kept 12 MB
    /// resident. A plugin's config is parsed again from the text only when
    /// the plugin is rebuilt. A section JSON would not write back exactly
    /// (see [`as_text`]) stays parsed.
    pub fn compacted(&self) -> MergedTree {
        self.compacted_above(COMPACT_MIN_BYTES)
    }

    /// [`MergedTree::compacted`] for sections whose text has at least
    /// `min_bytes`.
    pub(crate) fn compacted_above(&self, min_bytes: usize) -> MergedTree {
        let mut sections = self.sections.clone();
        let root = match &self.root {
            Value::Mapping(top) => Value::Mapping(
                top.iter()
                    .map(|(k, v)| {
                        let section = key_string(k);
                        let v = match v {
                            Value::Mapping(entries) if SECTIONS.contains(&section.as_str()) => {
                                Value::Mapping(compact_section(
                                    &section,
                                    entries,
                                    min_bytes,
                                    &mut sections,
                                ))
                            }
                            other => other.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        };
        MergedTree {
            root,
            provenance: self.provenance.clone(),
            files: self.files.clone(),
            sections,
        }
    }

    /// The compacted text of the section at `path` (`input.ping`), if any.
    pub(crate) fn section_text(&self, path: &str) -> Option<&Arc<str>> {
        self.sections.get(path)
    }
}

/// The entries of one section (`input:`): each big one becomes text in
/// `sections` and keeps only its scalar keys (`plugin`, `interval`), which
/// stay readable in the tree itself.
fn compact_section(
    section: &str,
    entries: &Mapping,
    min_bytes: usize,
    sections: &mut BTreeMap<String, Arc<str>>,
) -> Mapping {
    entries
        .iter()
        .map(|(name, value)| {
            let path = join(section, &key_string(name));
            // Already text (a tree compacted twice): what is left is its scalars.
            let text = match value {
                Value::Mapping(_) if !sections.contains_key(&path) => as_text(value, min_bytes),
                _ => None,
            };
            let kept = match (text, value) {
                (Some(text), Value::Mapping(m)) => {
                    sections.insert(path, Arc::from(text));
                    Value::Mapping(
                        m.iter()
                            .filter(|(_, v)| {
                                !matches!(
                                    v,
                                    Value::Mapping(_) | Value::Sequence(_) | Value::Tagged(_)
                                )
                            })
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    )
                }
                _ => value.clone(),
            };
            (name.clone(), kept)
        })
        .collect()
}

/// `value` as JSON text that parses back to an equal tree, when it is big
/// enough to be worth it.
///
/// JSON, not YAML: serde_yaml_ng loads a whole document's events before it
/// builds the tree, so each parse of 10,000 targets would cost 6 MB of
/// events on top of the 7 MB tree; serde_json reads the text straight into
/// the tree. The text is not parsed back to check either (that would cost
/// the tree again while the whole merged tree is resident): only trees JSON
/// writes back exactly are made text: string keys, finite numbers (ryu
/// prints them exactly), no `!tag`, and nested less deep than serde_json
/// reads (128 levels), so reading the text back cannot fail. Anything else
/// keeps the section parsed.
/// The round trip is tested on tricky scalars and on every section of the
/// shipped etc/.
fn as_text(value: &Value, min_bytes: usize) -> Option<String> {
    if !round_trips(value, 0) {
        return None;
    }
    let text = serde_json::to_string(value).ok()?;
    (text.len() >= min_bytes).then_some(text)
}

/// Reads a section's text made by [`as_text`].
pub(crate) fn from_text(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok()
}

/// Deepest nesting made text; serde_json refuses more than 128 levels.
const MAX_TEXT_DEPTH: usize = 100;

fn round_trips(v: &Value, depth: usize) -> bool {
    if depth > MAX_TEXT_DEPTH {
        return false;
    }
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Sequence(s) => s.iter().all(|x| round_trips(x, depth + 1)),
        Value::Mapping(m) => m
            .iter()
            .all(|(k, v)| matches!(k, Value::String(_)) && round_trips(v, depth + 1)),
        Value::Tagged(_) => false,
    }
}

/// Reads one YAML file. An empty file is an empty mapping.
pub fn read_yaml(path: &Path) -> Result<Value, ConfigError> {
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::file(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(ConfigError::file(path, "not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ConfigError::file(
            path,
            format!(
                "file is {} bytes, larger than the {} byte limit",
                meta.len(),
                MAX_FILE_BYTES
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::file(path, e.to_string()))?;
    parse_yaml(path, &text)
}

/// Deepest `[`/`{` nesting accepted before parsing. The YAML scanner's
/// work grows with the square of the flow depth (a 4 MB file of `[` would
/// take hours), and the parser refuses documents nested deeper than 128
/// anyway; brackets inside strings count too, hence the margin.
pub const MAX_FLOW_DEPTH: usize = 1000;

/// The line on which `[`/`{` nesting first passes `limit`, if it does.
fn flow_depth_exceeded(text: &str, limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => line += 1,
            _ => {}
        }
    }
    None
}

pub fn parse_yaml(path: &Path, text: &str) -> Result<Value, ConfigError> {
    if let Some(line) = flow_depth_exceeded(text, MAX_FLOW_DEPTH) {
        return Err(ConfigError::file(
            path,
            format!("line {line}: `[`/`{{` nested more than {MAX_FLOW_DEPTH} deep"),
        ));
    }
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(Value::Null) => Ok(Value::Mapping(Mapping::new())),
        Ok(mut v @ Value::Mapping(_)) => {
            shrink(&mut v);
            Ok(v)
        }
        Ok(_) => Err(ConfigError::file(
            path,
            "the top level must be a mapping of keys to values",
        )),
        Err(e) => {
            let reason = match e.location() {
                Some(loc) => format!(
                    "YAML syntax error at line {} column {}: {}",
                    loc.line(),
                    loc.column(),
                    strip_location(&e.to_string())
                ),
                None => format!("YAML syntax error: {e}"),
            };
            Err(ConfigError::file(path, reason))
        }
    }
}

/// Gives every mapping and list of a parsed file back its spare capacity.
/// The parser grows a one-key mapping (`{address: ...}`) to room for
/// three entries, about 450 bytes: 30,000 probe targets kept 13 MB more
/// than they hold, for as long as the configuration is loaded. Shrunk file
/// by file, so the peak is one file's spare room, not every file's.
fn shrink(v: &mut Value) {
    match v {
        Value::Mapping(m) => {
            m.shrink_to_fit();
            for (_, x) in m.iter_mut() {
                shrink(x);
            }
        }
        Value::Sequence(s) => {
            s.shrink_to_fit();
            s.iter_mut().for_each(shrink);
        }
        Value::Tagged(t) => shrink(&mut t.value),
        _ => {}
    }
}

// serde_yaml_ng appends " at line L column C" to its messages; we say it first.
fn strip_location(msg: &str) -> &str {
    match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    }
}

/// Deep merge: mappings merge key by key, anything else replaces.
/// A mapping merged into keeps the provenance it had (the file that first
/// set it); keys it gains are recorded as set by `file`.
pub fn merge_into(
    dst: &mut Value,
    src: Value,
    path: &str,
    file: &Arc<Path>,
    provenance: &mut Provenance,
) {
    match (dst, src) {
        (Value::Mapping(d), Value::Mapping(s)) => {
            for (k, v) in s {
                let child = join(path, &key_string(&k));
                match d.get_mut(&k) {
                    Some(existing) => merge_into(existing, v, &child, file, provenance),
                    None => {
                        provenance.record(&child, file);
                        d.insert(k, v);
                    }
                }
            }
        }
        (d, s) => {
            provenance.record(path, file);
            *d = s;
        }
    }
}

/// Lists `dir/*.yaml` (and `*.yml`) sorted by name; a missing folder is empty.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ConfigError::file(dir, e.to_string())),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("yml")
            )
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads and merges `etc/` in PyAgent's order, later wins:
/// main.yaml, main/main.yaml, the plugin files (`input/`, `processor/`,
/// `aggs/`, `output/`, each under `<section>.<file stem>`), host.yaml,
/// main/host.yaml. Plugin defaults written inside main.yaml under
/// `input:` etc. are part of the main layers, so a plugin file overrides them
/// and the host files override both.
pub fn load_tree(dir: &Path) -> Result<MergedTree, ConfigError> {
    load_tree_with_env(dir, std::env::vars_os())
}

/// Prefix of environment overrides: `AGENT__<SECTION>__<NAME>__<KEY>`.
pub const ENV_PREFIX: &str = "AGENT__";

/// Keys whose environment override is a comma-separated list.
const ENV_LIST_KEYS: [&str; 4] = ["open", "common_output", "common_processor", "common_aggs"];

/// [`load_tree`] with the environment given as a list (tests and embedding
/// programs): variables named `AGENT__<SECTION>__<NAME>__<KEY>` (or
/// `AGENT__<KEY>` for main.yaml keys) are applied after every file, each
/// recorded as its own source (`env AGENT__INPUT__PING__TIMEOUT`).
pub fn load_tree_with_env<K, V>(
    dir: &Path,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<MergedTree, ConfigError>
where
    K: Into<std::ffi::OsString>,
    V: Into<std::ffi::OsString>,
{
    let mut tree = load_files(dir)?;
    apply_env(&mut tree, env)?;
    Ok(tree)
}

/// Merges the `AGENT__...` variables of `env` into `tree`, in name order.
pub fn apply_env<K, V>(
    tree: &mut MergedTree,
    env: impl IntoIterator<Item = (K, V)>,
) -> Result<(), ConfigError>
where
    K: Into<std::ffi::OsString>,
    V: Into<std::ffi::OsString>,
{
    let mut vars: Vec<(String, std::ffi::OsString)> = env
        .into_iter()
        .filter_map(|(k, v)| Some((k.into().into_string().ok()?, v.into())))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in vars {
        let source = format!("env {name}");
        let rest = &name[ENV_PREFIX.len()..];
        let key = rest.to_lowercase().replace("__", ".");
        if rest.is_empty() || rest.split("__").any(str::is_empty) {
            return Err(ConfigError::file(
                &source,
                "expected AGENT__<SECTION>__<NAME>__<KEY> (or AGENT__<KEY> for main.yaml keys)",
            ));
        }
        let Some(text) = value.to_str() else {
            return Err(ConfigError::new(&source, key, "the value is not UTF-8"));
        };
        let one = config::Map::from([(name.clone(), text.to_string())]);
        let mut env_source = config::Environment::with_prefix(ENV_PREFIX.trim_end_matches('_'))
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .source(Some(one));
        for k in ENV_LIST_KEYS {
            env_source = env_source.with_list_parse_key(k);
        }
        let value: Value = config::Config::builder()
            .add_source(env_source)
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::new(&source, key.clone(), e.to_string()))?;
        let file: Arc<Path> = Arc::from(Path::new(&source));
        merge_into(&mut tree.root, value, "", &file, &mut tree.provenance);
    }
    Ok(())
}

fn load_files(dir: &Path) -> Result<MergedTree, ConfigError> {
    let main = dir.join("main.yaml");
    if !main.exists() {
        return Err(ConfigError::file(
            &main,
            "required file is missing (is this the right config folder?)",
        ));
    }
    let mut provenance = Provenance::default();
    let mut root = Value::Mapping(Mapping::new());
    let mut files = Vec::new();

    let mut layer = |root: &mut Value, path: PathBuf, at: &str, required: bool| {
        if !required && !path.exists() {
            return Ok::<(), ConfigError>(());
        }
        let v = read_yaml(&path)?;
        let file: Arc<Path> = Arc::from(path.as_path());
        if at.is_empty() {
            provenance
                .paths
                .entry(String::new())
                .or_insert(file.clone());
        }
        let mut target = Value::Mapping(Mapping::new());
        // Place plugin files under their section and name.
        let value = if at.is_empty() {
            v
        } else {
            let mut cur = &mut target;
            for seg in at.split('.') {
                let Value::Mapping(m) = cur else {
                    unreachable!()
                };
                cur = m
                    .entry(Value::String(seg.to_string()))
                    .or_insert(Value::Mapping(Mapping::new()));
            }
            *cur = v;
            target
        };
        merge_into(root, value, "", &file, &mut provenance);
        files.push(path);
        Ok(())
    };

    layer(&mut root, main, "", true)?;
    layer(&mut root, dir.join("main").join("main.yaml"), "", false)?;
    for section in SECTIONS {
        for file in yaml_files(&dir.join(section))? {
            let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let at = format!("{section}.{stem}");
            layer(&mut root, file.clone(), &at, true)?;
        }
    }
    layer(&mut root, dir.join("host.yaml"), "", false)?;
    layer(&mut root, dir.join("main").join("host.yaml"), "", false)?;
    Ok(MergedTree::new(root, provenance, files))
}

/// Every file [`load_tree`] would read, in its order (missing optional
/// files left out).
pub fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![dir.join("main.yaml"), dir.join("main").join("main.yaml")];
    for section in SECTIONS {
        files.extend(yaml_files(&dir.join(section)).unwrap_or_default());
    }
    files.push(dir.join("host.yaml"));
    files.push(dir.join("main").join("host.yaml"));
    files
}

/// A hash of the config files' names and contents: equal fingerprints mean
/// nothing to reload. Files over the size limit are hashed by length and
/// modification time instead of read.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in config_files(dir) {
        f.hash(&mut h);
        match std::fs::metadata(&f) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                m.len().hash(&mut h);
                m.modified().ok().hash(&mut h);
            }
            Ok(_) => match std::fs::read(&f) {
                Ok(bytes) => bytes.hash(&mut h),
                Err(e) => e.kind().hash(&mut h),
            },
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    fn file(name: &str) -> Arc<Path> {
        Arc::from(Path::new(name))
    }

    /// The section `input.x` of `tree` compacted whatever its size, read back.
    fn through_text(section: Value) -> Option<Value> {
        let mut root = Mapping::new();
        let mut input = Mapping::new();
        input.insert(Value::from("x"), section);
        root.insert(Value::from("input"), Value::Mapping(input));
        let tree = MergedTree::new(Value::Mapping(root), Provenance::default(), Vec::new());
        let text = tree.compacted_above(0).section_text("input.x")?.clone();
        Some(from_text(&text).unwrap())
    }

    #[test]
    fn tricky_scalars_survive_the_text_round_trip() {
        let mut m = Mapping::new();
        let strings = [
            "yes",
            "no",
            "on",
            "off",
            "true",
            "True",
            "null",
            "~",
            "",
            " ",
            " lead",
            "trail ",
            "1",
            "1.0",
            "-0",
            "0x1f",
            "0o17",
            "1e3",
            ".inf",
            "-.inf",
            ".nan",
            "1_000",
            "12:30",
            "- item",
            "a: b",
            "a #b",
            "#",
            "!tag",
            "&anchor",
            "*alias",
            "[x]",
            "{y}",
            "'q'",
            "\"dq\"",
            "multi\nline",
            "tab\there",
            "back\\slash",
            "é ü 漢字 🙂",
            "%x",
            "@x",
            "`x",
            "2026-12-03",
            "=",
            "<<",
            "?",
            ">",
            "|",
            ",",
        ];
        for (i, s) in strings.iter().enumerate() {
            m.insert(Value::from(format!("s{i}")), Value::from(*s));
            // The same strings as keys.
            m.insert(Value::from(*s), Value::from(i as u64));
        }
        for (i, f) in [0.1, -0.0, 1e300, 5e-324, 123456789.125].iter().enumerate() {
            m.insert(Value::from(format!("f{i}")), Value::from(*f));
        }
        m.insert(Value::from("imax"), Value::from(i64::MAX));
        m.insert(Value::from("imin"), Value::from(i64::MIN));
        m.insert(Value::from("umax"), Value::from(u64::MAX));
        m.insert(Value::from("null"), Value::Null);
        m.insert(Value::from("list"), y("[1, [2, {a: b}], [], {}]"));
        let section = Value::Mapping(m);
        assert_eq!(through_text(section.clone()), Some(section));
    }

    #[test]
    fn what_would_not_round_trip_stays_parsed() {
        assert_eq!(through_text(y("{a: !custom 1}")), None, "a tag");
        assert_eq!(
            through_text(y("{a: .nan}")),
            None,
            "NaN never equals itself"
        );
        assert_eq!(through_text(y("{? [k]\n: v}")), None, "a list as a key");
        let deep = format!("{}1{}", "[".repeat(120), "]".repeat(120));
        assert_eq!(
            through_text(y(&format!("{{a: {deep}}}"))),
            None,
            "deeper than serde_json reads"
        );
        let shallow = format!("{}1{}", "[".repeat(90), "]".repeat(90));
        let v = y(&format!("{{a: {shallow}}}"));
        assert_eq!(through_text(v.clone()), Some(v));
        assert!(through_text(y("{a: 1}")).is_some());
    }

    #[test]
    fn keys_a_later_file_adds_name_it_and_old_keys_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.yaml"),
            "open: [ping]\ninput: {ping: {count: 3, alarm: {a: 1}}}\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("input")).unwrap();
        let mut targets = String::from("timeout: 1\nalarm: {b: 2}\ntarget:\n");
        for i in 0..1000 {
            targets.push_str(&format!("  T{i}: {{address: 127.0.0.{}}}\n", i % 250 + 1));
        }
        std::fs::write(dir.path().join("input/ping.yaml"), targets).unwrap();
        let tree = load_tree(dir.path()).unwrap();
        let main = dir.path().join("main.yaml");
        let ping = dir.path().join("input/ping.yaml");
        let p = &tree.provenance;
        assert_eq!(p.file_of("open"), Some(main.as_path()));
        assert_eq!(p.file_of("input.ping.count"), Some(main.as_path()));
        assert_eq!(p.file_of("input.ping.alarm.a"), Some(main.as_path()));
        assert_eq!(p.file_of("input.ping.alarm.b"), Some(ping.as_path()));
        assert_eq!(p.file_of("input.ping.timeout"), Some(ping.as_path()));
        assert_eq!(
            p.file_of("input.ping.target.T999.address"),
            Some(ping.as_path())
        );
        // A key nobody set is blamed on the file of its nearest parent.
        assert_eq!(
            p.file_of("input.ping.target.T5.missing"),
            Some(ping.as_path())
        );
        // One entry per subtree a file added, not one per key.
        assert!(p.len() < 20, "{} provenance entries", p.len());
    }

    #[test]
    fn deep_merge_keeps_untouched_siblings() {
        let mut prov = Provenance::default();
        let mut dst = y("alarm: {percent: 80, comment: a}\ninterval: 5");
        merge_into(
            &mut dst,
            y("alarm: {percent: 90}"),
            "",
            &file("b"),
            &mut prov,
        );
        assert_eq!(dst, y("alarm: {percent: 90, comment: a}\ninterval: 5"));
        assert_eq!(prov.file_of("alarm.percent"), Some(Path::new("b")));
    }

    #[test]
    fn replaced_subtree_forgets_old_provenance() {
        let mut prov = Provenance::default();
        let mut dst = Value::Mapping(Mapping::new());
        merge_into(&mut dst, y("a: {b: {c: 1}}"), "", &file("one"), &mut prov);
        merge_into(&mut dst, y("a: {b: 7}"), "", &file("two"), &mut prov);
        assert_eq!(prov.file_of("a.b.c"), Some(Path::new("two")));
        assert_eq!(prov.file_of("a.b"), Some(Path::new("two")));
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        // 200,000 levels: quadratic in the YAML scanner (minutes even
        // optimised); refused by a linear scan instead.
        let text = format!("x: {}{}\n", "[".repeat(200_000), "]".repeat(200_000));
        let err = parse_yaml(Path::new("etc/main.yaml"), &text).unwrap_err();
        assert!(err.reason.contains("nested more than"), "{}", err.reason);
        assert!(err.reason.starts_with("line 1:"), "{}", err.reason);
        // Ordinary nesting still parses.
        let ok = format!("x: {}1{}\n", "[".repeat(50), "]".repeat(50));
        assert!(parse_yaml(Path::new("etc/main.yaml"), &ok).is_ok());
    }

    #[test]
    fn yaml_error_has_line_and_column() {
        let err = parse_yaml(Path::new("etc/main.yaml"), "a: 1\nb: [1, 2\n").unwrap_err();
        assert_eq!(err.file, "etc/main.yaml");
        assert!(err.reason.contains("line "), "{}", err.reason);
        assert!(err.reason.contains("column "), "{}", err.reason);
    }
}
