//! Hostile values for every key of every registered plugin's sample config
//! and of the main.yaml sample, as an operator's typos would produce them.
//!
//! 1. Every key (and list element) of each sample, including the keys its
//!    comments document (`# flush_interval: 10`), gets each value of
//!    [`hostile_values`]; every mapping gets an unknown key. proptest adds
//!    seeded random combinations of 1-3 keys with arbitrary numbers, strings
//!    and nested values.
//! 2. Each case is written as a real `etc/` folder and validated as
//!    `agent validate` does (`AgentConfig::load` + `Plan::new`): Ok or a
//!    `ConfigError` of bounded length, never refused for an unknown key;
//!    a panic fails the test naming plugin, key and value.
//! 3. The cases that validated run: a plugin's cases as instances of one
//!    config (at most [`INSTANCES_PER_CONFIG`] per config), each main.yaml
//!    variant with a distinct plan as its own supervisor; each config in
//!    its own actix System, side by side, for 1.5 s, with network targets
//!    moved to loopback. Every actor must stay alive and count no panic,
//!    and every run must end (a watchdog names the one that does not).
//!
//! It prints how many cases ran, validated and were rejected.
use agent_core::pipeline::StatusReport;
use agent_core::{AgentConfig, PipelineSupervisor, Plan, PluginKind, Registry, Shutdown, Status};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as PropConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner,
};
use serde_yaml_ng::Value;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAIN_SAMPLE: &str = include_str!("../../etc/main.yaml");

/// The fixed proptest seed: the same random cases on every run.
const SEED: [u8; 32] = *b"agent hostile config test seed!!";
/// Random multi-key cases per sample.
const RANDOM_CASES_PER_SAMPLE: u32 = 24;
/// How long the validated configs run before their actors are checked.
const RUN_FOR: Duration = Duration::from_millis(1500);
/// The whole run phase must end within this, or something blocks the loop.
const RUN_WATCHDOG: Duration = Duration::from_secs(120);
/// Instances of one plugin per run config. Configs run side by side, each
/// in its own System: a plugin that blocks its event loop (execd's
/// batch_timeout) then holds up a few instances, not all of them.
const INSTANCES_PER_CONFIG: usize = 6;
/// main.yaml variants sharing one System (each runs the whole sample).
const MAIN_VARIANTS_PER_SYSTEM: usize = 6;
/// Longest error message `validate` may print for one hostile value.
const MAX_ERROR_BYTES: usize = 2000;
/// A key no plugin knows.
const UNKNOWN_KEY: &str = "hostile_unknown_key";

// ---------------------------------------------------------------------------
// Hostile values

/// One hostile value: a label for reports, the value, and for deep nesting
/// the YAML text that replaces the placeholder (built as text: serializing
/// a 100,000-deep tree would itself recurse that deep).
#[derive(Clone, Debug)]
struct Hostile {
    label: String,
    value: Value,
    text: Option<(String, Arc<str>)>,
}

fn num_f(v: f64) -> Value {
    Value::Number(v.into())
}

fn hostile(label: &str, value: Value) -> Hostile {
    Hostile {
        label: label.to_string(),
        value,
        text: None,
    }
}

/// A value written as YAML text in place of a placeholder string.
fn as_text(label: &str, text: String) -> Hostile {
    let placeholder = format!("hostile_placeholder_{}", label.replace(' ', "_"));
    Hostile {
        label: label.to_string(),
        value: Value::String(placeholder.clone()),
        text: Some((placeholder, Arc::from(text))),
    }
}

/// Nested flow sequences (`[[[...1...]]]`) or mappings, `depth` deep.
fn deep(depth: usize, maps: bool) -> Hostile {
    let text = if maps {
        format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    };
    as_text(
        &format!("deep {} x{depth}", if maps { "maps" } else { "lists" }),
        text,
    )
}

fn hostile_values() -> Vec<Hostile> {
    let list: Value = serde_yaml_ng::from_str("[1, a]").expect("literal");
    let map: Value = serde_yaml_ng::from_str("{a: 1}").expect("literal");
    vec![
        hostile("-1", Value::Number((-1).into())),
        hostile("0", Value::Number(0.into())),
        hostile(".nan", num_f(f64::NAN)),
        hostile(".inf", num_f(f64::INFINITY)),
        hostile("-.inf", num_f(f64::NEG_INFINITY)),
        hostile("1e300", num_f(1e300)),
        // 2^64 does not fit any integer type: YAML reads it as a float.
        hostile("2^64", num_f(18_446_744_073_709_551_616.0)),
        hostile("string", Value::String("hostile".into())),
        hostile("list", list),
        hostile("map", map),
        hostile("true", Value::Bool(true)),
        hostile("null", Value::Null),
        hostile("empty string", Value::String(String::new())),
        // As text: emitting 1 MB through the YAML serializer for each case
        // would cost more than the case itself.
        as_text("1 MB string", "x".repeat(1 << 20)),
        deep(100, true),
        // Past the parser's depth limit (128)...
        deep(500, false),
        // ...and past the pre-parse guard (the scanner is quadratic in it).
        deep(100_000, false),
    ]
}

/// Random hostile values for proptest: edge numbers, arbitrary floats and
/// integers, short strings without `/` (so a random path stays inside the
/// test's folder) and nested lists/maps of them.
fn random_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            0.0,
            -0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            4294967296.0,
            18_446_744_073_709_551_616.0,
        ])
        .prop_map(num_f),
        any::<f64>().prop_map(num_f),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<u64>().prop_map(|n| Value::Number(n.into())),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        "[a-zA-Z0-9_.:@ -]{0,24}".prop_map(Value::String),
        "\\PC{0,12}"
            .prop_filter("no path separators", |s: &String| !s.contains('/'))
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4).prop_map(|kv| {
                Value::Mapping(kv.into_iter().map(|(k, v)| (Value::String(k), v)).collect())
            }),
        ]
    })
}

// ---------------------------------------------------------------------------
// Walking a YAML tree

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Index(usize),
}

type KeyPath = Vec<Seg>;

fn path_label(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    if s.is_empty() {
        s.push_str("(top level)");
    }
    s
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Every node under `v` (not `v` itself), depth first.
fn node_paths(v: &Value, prefix: &mut KeyPath, out: &mut Vec<KeyPath>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                prefix.push(Seg::Key(key_text(k)));
                out.push(prefix.clone());
                node_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Seg::Index(i));
                out.push(prefix.clone());
                node_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Paths of every mapping in `v`, `v` included.
fn mapping_paths(v: &Value, prefix: &mut KeyPath, out: &mut Vec<KeyPath>) {
    match v {
        Value::Mapping(m) => {
            out.push(prefix.clone());
            for (k, child) in m {
                prefix.push(Seg::Key(key_text(k)));
                mapping_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(Seg::Index(i));
                mapping_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Mapping(m)) => m
                .iter_mut()
                .find(|(key, _)| key_text(key) == *k)
                .map(|(_, v)| v)?,
            (Seg::Index(i), Value::Sequence(s)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Sets the node at `path`; false when the path no longer exists.
fn set_at(tree: &mut Value, path: &[Seg], value: Value) -> bool {
    match node_mut(tree, path) {
        Some(slot) => {
            *slot = value;
            true
        }
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Samples

/// Where a plugin's sample goes in `etc/`, and what feeds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Main,
    Input,
    /// A `use_plugin_*` block in `etc/processor/<input>.yaml`.
    ProcessorBlock,
    /// A block in `etc/aggs/<input>.yaml`.
    AggsBlock,
    Output,
}

/// One sample: the main.yaml or one registered plugin's.
struct Sample {
    /// `main.yaml` or `output console`.
    label: String,
    plugin: String,
    role: Role,
    /// The sample as written.
    base: Value,
    /// The sample with one documented-but-commented key uncommented, and
    /// the paths that line added.
    commented: Vec<(Value, Vec<KeyPath>)>,
}

impl Sample {
    fn new(label: String, plugin: &str, role: Role, text: &str) -> Sample {
        let base: Value = serde_yaml_ng::from_str(text)
            .unwrap_or_else(|e| panic!("sample of {label} does not parse: {e}"));
        assert!(base.is_mapping(), "sample of {label} is not a mapping");
        let mut known = Vec::new();
        node_paths(&base, &mut Vec::new(), &mut known);
        let known: BTreeSet<KeyPath> = known.into_iter().collect();
        let mut commented = Vec::new();
        for variant in uncommented_variants(text) {
            let mut paths = Vec::new();
            node_paths(&variant, &mut Vec::new(), &mut paths);
            let added: Vec<KeyPath> = paths.into_iter().filter(|p| !known.contains(p)).collect();
            if !added.is_empty() {
                commented.push((variant, added));
            }
        }
        Sample {
            label,
            plugin: plugin.to_string(),
            role,
            base,
            commented,
        }
    }

    /// Every (tree, path) the grid walks: the sample's own nodes, then the
    /// nodes of its commented keys (each in the tree that uncomments it).
    fn walk(&self) -> Vec<(&Value, KeyPath)> {
        let mut out = Vec::new();
        let mut paths = Vec::new();
        node_paths(&self.base, &mut Vec::new(), &mut paths);
        out.extend(paths.into_iter().map(|p| (&self.base, p)));
        for (tree, added) in &self.commented {
            out.extend(added.iter().map(|p| (tree, p.clone())));
        }
        out
    }
}

/// The sample text with one commented-out `key: value` line uncommented,
/// for each such line that still parses as a mapping. Prose comments either
/// fail to parse or add a harmless unknown key.
fn uncommented_variants(text: &str) -> Vec<Value> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let Some(rest) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if key_len == 0 || !rest[key_len..].starts_with(':') {
            continue;
        }
        let mut edited = lines.clone();
        let new_line = format!("{}{}", " ".repeat(indent), rest);
        edited[i] = &new_line;
        if let Ok(v @ Value::Mapping(_)) = serde_yaml_ng::from_str::<Value>(&edited.join("\n")) {
            out.push(v);
        }
    }
    out
}

fn samples(registry: &Registry) -> Vec<Sample> {
    let mut out = vec![Sample::new(
        "main.yaml".into(),
        "main",
        Role::Main,
        MAIN_SAMPLE,
    )];
    for p in registry.list() {
        let role = match p.kind {
            PluginKind::Input => Role::Input,
            PluginKind::Output => Role::Output,
            // The sample says which file it belongs in.
            PluginKind::Processor | PluginKind::Aggregator if p.sample.contains("etc/aggs/") => {
                Role::AggsBlock
            }
            PluginKind::Processor | PluginKind::Aggregator => Role::ProcessorBlock,
        };
        out.push(Sample::new(
            format!("{} {}", p.kind, p.name),
            p.name,
            role,
            p.sample,
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// Cases and their etc/ folders

/// One hostile variant of one sample.
#[derive(Clone, Debug)]
struct Case {
    sample: usize,
    /// `target.HEALTH.url`, or several for random cases.
    key: String,
    value: String,
    tree: Value,
    /// Texts replacing placeholders (deep nesting, 1 MB strings).
    texts: Vec<(String, Arc<str>)>,
}

impl Case {
    fn yaml(&self) -> String {
        let mut text = serde_yaml_ng::to_string(&self.tree).expect("a YAML tree serializes");
        for (placeholder, replacement) in &self.texts {
            text = text.replace(placeholder.as_str(), replacement);
        }
        text
    }

    fn describe(&self, samples: &[Sample]) -> String {
        format!(
            "{}: key `{}` = {}",
            samples[self.sample].label, self.key, self.value
        )
    }
}

fn instance_name(sample: &Sample, case: usize) -> String {
    format!("{}_h{case}", sample.plugin)
}

/// The input that feeds a processor, aggregator or output under test.
fn feed_input(sample: &Sample) -> &'static str {
    // Alarm rules are picked by the input's plugin; the sample's are cpu's.
    if sample.plugin == "alarm" {
        "{plugin: cpu, interval: 0.25, process_top_num: 0}"
    } else {
        "{plugin: demo, interval: 0.25}"
    }
}

/// Writes the `etc/` folder running `cases` (all of one sample; one case
/// for validation, every validated case for the run).
fn write_etc(etc: &Path, sample: &Sample, cases: &[(usize, &Case)], sink: &Path) {
    // Reused between cases: clear the plugin files, keep the folders.
    for dir in ["input", "processor", "aggs", "output"] {
        let dir = etc.join(dir);
        std::fs::create_dir_all(&dir).expect("create etc");
        for entry in std::fs::read_dir(&dir).expect("list etc").flatten() {
            std::fs::remove_file(entry.path()).expect("clear etc");
        }
    }
    let write = |rel: String, text: String| {
        std::fs::write(etc.join(rel), text).expect("write config file");
    };
    if sample.role == Role::Main {
        let [(_, case)] = cases else {
            panic!("one main.yaml per etc/");
        };
        write("main.yaml".into(), case.yaml());
        return;
    }
    let names: Vec<String> = cases
        .iter()
        .map(|(i, _)| instance_name(sample, *i))
        .collect();
    let list = names.join(", ");
    // Every pipeline ends in a real file output, so the whole chain runs.
    let sink_out = format!(
        "sink: {{plugin: file, path: '{}', flush_interval: 0.25}}",
        sink.display()
    );
    let main = match sample.role {
        Role::Input => {
            format!("open: [{list}]\ndelay_sec: 0\ncommon_output: [sink]\noutput:\n  {sink_out}\n")
        }
        Role::Output => format!(
            "open: [feed]\ndelay_sec: 0\ncommon_output: [{list}]\ninput:\n  feed: {}\n",
            feed_input(sample)
        ),
        Role::ProcessorBlock | Role::AggsBlock => {
            let mut s = format!(
                "open: [{list}]\ndelay_sec: 0\ncommon_output: [sink]\noutput:\n  {sink_out}\ninput:\n"
            );
            for n in &names {
                s.push_str(&format!("  {n}: {}\n", feed_input(sample)));
            }
            s
        }
        Role::Main => unreachable!(),
    };
    write("main.yaml".into(), main);
    for ((_, case), name) in cases.iter().zip(&names) {
        let mut case = (*case).clone();
        // Inputs and outputs run as named instances of their plugin.
        if matches!(sample.role, Role::Input | Role::Output) {
            if let Value::Mapping(m) = &mut case.tree {
                let key = Value::String("plugin".into());
                if !m.contains_key(&key) {
                    m.insert(key, Value::String(sample.plugin.clone()));
                }
            }
        }
        let dir = match sample.role {
            Role::Input => "input",
            Role::Output => "output",
            Role::ProcessorBlock => "processor",
            Role::AggsBlock => "aggs",
            Role::Main => unreachable!(),
        };
        write(format!("{dir}/{name}.yaml"), case.yaml());
    }
}

// ---------------------------------------------------------------------------
// Validation

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

enum Verdict {
    /// With the keys of the warnings it gave.
    Valid(Vec<String>),
    Rejected(String),
    Panicked(String),
}

/// What `agent validate` does: load, then plan against the registry.
fn validate(etc: &Path, registry: &Registry) -> Verdict {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let cfg = AgentConfig::load(etc)?;
        let plan = Plan::new(&cfg, registry)?;
        Ok::<_, agent_core::ConfigError>(
            cfg.warnings
                .iter()
                .chain(&plan.warnings)
                .map(|w| w.key.clone())
                .collect(),
        )
    }));
    match result {
        Ok(Ok(warnings)) => Verdict::Valid(warnings),
        Ok(Err(e)) => Verdict::Rejected(e.to_string()),
        Err(p) => Verdict::Panicked(panic_text(&*p)),
    }
}

/// Panic messages seen by the hook (run-phase panics happen inside actors,
/// where no `catch_unwind` of ours sees them).
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = panic_text(info.payload());
        if let Ok(mut v) = PANICS.lock() {
            v.push(format!("{at}: {msg}"));
        }
    }));
}

// ---------------------------------------------------------------------------
// Making validated cases safe to run

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("local addr").port()
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The host of `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    if address.matches(':').count() > 1 {
        return address; // bare IPv6
    }
    address.split(':').next().unwrap_or("")
}

fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    host_of(authority)
}

/// Points every network target in a run config at loopback: probe inputs
/// and outputs talk only to 127.0.0.1 (a closed port when the case's own
/// target was elsewhere), listeners bind an ephemeral loopback port.
fn loopback_only(v: &mut Value, plugin: &str, port: u16) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                let key = key_text(k);
                let s = child.as_str().map(str::to_string);
                match key.as_str() {
                    "url" => {
                        if !matches!(&s, Some(u) if u.is_empty() || is_loopback_host(url_host(u))) {
                            *child = Value::String(format!("http://127.0.0.1:{port}/"));
                        }
                    }
                    // update_api must be https (plain http needs
                    // update_api_insecure): still loopback, closed port.
                    "update_api" => {
                        if !matches!(&s, Some(u) if u.is_empty() || is_loopback_host(url_host(u))) {
                            *child = Value::String(format!("https://127.0.0.1:{port}/"));
                        }
                    }
                    "address" => {
                        if !matches!(&s, Some(a) if is_loopback_host(host_of(a))) {
                            *child = Value::String(if plugin == "ping" {
                                "127.0.0.1".to_string()
                            } else {
                                format!("127.0.0.1:{port}")
                            });
                        }
                    }
                    "listen" => *child = Value::String("127.0.0.1:0".into()),
                    _ => loopback_only(child, plugin, port),
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                loopback_only(item, plugin, port);
            }
        }
        _ => {}
    }
}

/// The programs the samples themselves run.
const SAMPLE_PROGRAMS: [&str; 4] = [
    "python3",
    "/usr/local/bin/my_check",
    "/usr/local/bin/my_sink",
    "ping",
];

fn program_exists(prog: &str) -> bool {
    if prog.is_empty() {
        return false;
    }
    if prog.contains('/') {
        return Path::new(prog).exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// The program an argv list or a command string starts.
fn program_of(cmd: &Value) -> Option<String> {
    match cmd {
        Value::Null => None,
        Value::Sequence(argv) => argv.first().map(key_text),
        other => Some(key_text(other)),
    }
}

/// Why a validated exec-like case must not run: it would start a real
/// program other than the sample's own, or hand a shell a command line.
fn foreign_program(v: &Value) -> Option<String> {
    let shell = v.get("shell").and_then(Value::as_bool).unwrap_or(false);
    let mut programs: Vec<String> = Vec::new();
    for key in ["command", "binary"] {
        programs.extend(v.get(key).and_then(program_of));
    }
    match v.get("commands") {
        Some(Value::Sequence(list)) => programs.extend(list.iter().filter_map(program_of)),
        Some(other) => programs.extend(program_of(other)),
        None => {}
    }
    for p in programs {
        if SAMPLE_PROGRAMS.contains(&p.as_str()) {
            continue;
        }
        let first = p.split_whitespace().next().unwrap_or("");
        let shell_syntax = shell && p.contains([';', '|', '&', '$', '`', '(', ')', '<', '>', '\n']);
        if shell_syntax || program_exists(first) || program_exists(&p) {
            return Some(p.chars().take(80).collect());
        }
    }
    // Blocks nested under `use_plugin_*` keys.
    if let Value::Mapping(m) = v {
        for child in m.values().filter(|c| c.is_mapping()) {
            if let Some(p) = foreign_program(child) {
                return Some(p);
            }
        }
    }
    None
}

/// What a running [`PipelineSupervisor`] gets from a config: the plan's
/// pipelines and outputs with their plugin configs, the start delay, the
/// `info` tags and the alarm code. main.yaml variants that differ only in
/// keys read elsewhere (log, reload, update_api) run the same actors, so
/// one of each signature runs.
fn run_signature(etc: &Path, registry: &Registry) -> Option<String> {
    let cfg = AgentConfig::load(etc).ok()?;
    let plan = Plan::new(&cfg, registry).ok()?;
    let pipelines: Vec<String> = plan
        .pipelines
        .iter()
        .map(|p| {
            let stages: Vec<String> = p
                .stages
                .iter()
                .map(|s| format!("{}={:?}", s.plugin, s.config.value()))
                .collect();
            format!(
                "{} {} {:?} {:?} {stages:?} {:?}",
                p.name,
                p.plugin,
                p.interval,
                p.config.value(),
                p.outputs
            )
        })
        .collect();
    let outputs: Vec<String> = plan
        .outputs
        .iter()
        .map(|o| {
            format!(
                "{} {} {:?} {:?}",
                o.name,
                o.plugin,
                o.settings,
                o.config.value()
            )
        })
        .collect();
    Some(format!(
        "{pipelines:?} {outputs:?} {:?} {:?} {:?}",
        plan.start_delay, cfg.info, cfg.main.alarm
    ))
}

// ---------------------------------------------------------------------------
// Running

/// Fd 1 goes to /dev/null while it lives: console outputs write there for
/// real, without flooding the test log.
struct SilencedStdout {
    saved: libc::c_int,
}

impl SilencedStdout {
    fn new() -> Option<Self> {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: plain fd calls on fds this function owns or on fd 1.
        unsafe {
            let saved = libc::dup(1);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if saved < 0 || null < 0 {
                return None;
            }
            libc::dup2(null, 1);
            libc::close(null);
            Some(SilencedStdout { saved })
        }
    }
}

impl Drop for SilencedStdout {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: restores fd 1 from the copy taken in `new`.
        unsafe {
            libc::dup2(self.saved, 1);
            libc::close(self.saved);
        }
    }
}

/// One config to run: a plugin's validated cases together, or one main.yaml.
struct RunGroup {
    sample: usize,
    /// The actix System (and thread) it runs in.
    system: usize,
    /// Case indices (into the case list) in this config.
    cases: Vec<usize>,
    etc: PathBuf,
}

/// Problems seen in one supervisor's status: dead actors, counted panics.
fn status_problems(report: &StatusReport) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut check = |owner: &str, a: &agent_core::pipeline::ActorStatus| {
        if !a.alive {
            out.push((
                owner.to_string(),
                format!("{} `{}` ({}) is dead", a.kind, a.name, a.plugin),
            ));
        }
        if a.stats.panics > 0 {
            out.push((
                owner.to_string(),
                format!(
                    "{} `{}` ({}) counted {} panic(s); last error: {:?}",
                    a.kind, a.name, a.plugin, a.stats.panics, a.stats.last_error
                ),
            ));
        }
    };
    for p in &report.pipelines {
        for a in &p.actors {
            check(&p.input, a);
        }
    }
    for o in &report.outputs {
        check(&o.name, o);
    }
    out
}

/// A group's index with its loaded config and plan.
type PlannedGroup = (usize, (AgentConfig, Plan));

/// Runs planned supervisors in one actix System: lets them run, checks
/// their status a few times, shuts them down. Returns (group, owner
/// instance or "", problem).
fn run_in_system(
    plans: Vec<PlannedGroup>,
    registry: Arc<Registry>,
) -> Vec<(usize, String, String)> {
    let sys = actix::System::new();
    sys.block_on(async move {
        use actix::Actor;
        let mut running = Vec::new();
        for (g, (cfg, plan)) in plans {
            let expect = (plan.pipelines.len(), plan.outputs.len());
            let log = slog::Logger::root(slog::Discard, slog::o!());
            let addr = PipelineSupervisor::new(cfg, plan, registry.clone(), log).start();
            running.push((g, addr, expect));
        }
        let started = Instant::now();
        let mut seen: BTreeSet<(usize, String, String)> = BTreeSet::new();
        while started.elapsed() < RUN_FOR {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for (g, addr, expect) in &running {
                match addr.send(Status).await {
                    Ok(report) => {
                        let got = (report.pipelines.len(), report.outputs.len());
                        if got != *expect {
                            seen.insert((
                                *g,
                                String::new(),
                                format!("started {got:?} (pipelines, outputs), planned {expect:?}"),
                            ));
                        }
                        for (owner, msg) in status_problems(&report) {
                            seen.insert((*g, owner, msg));
                        }
                    }
                    Err(e) => {
                        seen.insert((*g, String::new(), format!("supervisor unreachable: {e}")));
                    }
                }
            }
        }
        let mut found: Vec<_> = seen.into_iter().collect();
        let shutdowns = running.iter().map(|(g, addr, _)| {
            let addr = addr.clone();
            let g = *g;
            async move {
                let deadline = Duration::from_secs(5);
                (g, addr.send(Shutdown { deadline }).await)
            }
        });
        for (g, r) in futures::future::join_all(shutdowns).await {
            if let Err(e) = r {
                found.push((g, String::new(), format!("shutdown failed: {e}")));
            }
        }
        found
    })
}

/// Problems as (group, owner instance or "", message).
type Problems = Vec<(usize, String, String)>;

/// Plans every group, then runs the groups of each `system` in their own
/// thread and actix System (so one that blocks its event loop is named,
/// and blocking in one does not hold up the others). Returns the problems
/// and each System's wall time with its first group.
fn run_groups(groups: &[RunGroup], registry: &Registry) -> (Problems, Vec<(Duration, usize)>) {
    let mut by_system: std::collections::BTreeMap<usize, Vec<PlannedGroup>> = Default::default();
    let mut problems = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let planned = catch_unwind(AssertUnwindSafe(|| {
            let cfg = AgentConfig::load(&group.etc)?;
            let plan = Plan::new(&cfg, registry)?;
            Ok::<_, agent_core::ConfigError>((cfg, plan))
        }));
        match planned {
            Ok(Ok(p)) => by_system.entry(group.system).or_default().push((g, p)),
            Ok(Err(e)) => {
                problems.push((g, String::new(), format!("combined config rejected: {e}")))
            }
            Err(p) => problems.push((
                g,
                String::new(),
                format!("combined config panicked: {}", panic_text(&*p)),
            )),
        }
    }
    let registry = Arc::new(registry.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let mut waiting: std::collections::BTreeMap<usize, usize> = Default::default();
    let mut durations: Vec<(Duration, usize)> = Vec::new();
    for (system, plans) in by_system {
        let first_group = plans[0].0;
        waiting.insert(system, first_group);
        let tx = tx.clone();
        let registry = registry.clone();
        std::thread::Builder::new()
            .name(format!("hostile-run-{system}"))
            .spawn(move || {
                let started = Instant::now();
                let found = run_in_system(plans, registry);
                let _ = tx.send((system, first_group, started.elapsed(), found));
            })
            .expect("spawn a run thread");
    }
    drop(tx);
    let deadline = Instant::now() + RUN_WATCHDOG;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((system, first_group, took, found)) => {
                waiting.remove(&system);
                durations.push((took, first_group));
                problems.extend(found);
            }
            Err(_) => break,
        }
    }
    for (_, first_group) in waiting {
        problems.push((
            first_group,
            String::new(),
            format!(
                "its run did not end within {RUN_WATCHDOG:?} (1.5 s run, 5 s shutdown): \
                 something blocks its event loop"
            ),
        ));
    }
    durations.sort();
    (problems, durations)
}

// ---------------------------------------------------------------------------
// The test

#[test]
fn hostile_values_never_panic_and_what_validates_runs() {
    let t0 = Instant::now();
    let registry = Registry::with_builtins();
    let samples = samples(&registry);
    // tmpfs when there is one: thousands of small config files.
    let scratch = match Path::new("/dev/shm").is_dir() {
        true => tempfile::Builder::new().tempdir_in("/dev/shm"),
        false => tempfile::tempdir(),
    }
    .expect("tempdir");
    // Relative paths in hostile configs (file outputs, exec cwd) land here.
    std::env::set_current_dir(scratch.path()).expect("chdir to scratch");
    record_panics();
    let values = hostile_values();

    // The grid: every walked key × every hostile value, plus an unknown key
    // in every mapping.
    let mut cases: Vec<Case> = Vec::new();
    for (si, sample) in samples.iter().enumerate() {
        for (tree, path) in sample.walk() {
            for h in &values {
                let mut t = tree.clone();
                assert!(set_at(&mut t, &path, h.value.clone()), "walked path exists");
                cases.push(Case {
                    sample: si,
                    key: path_label(&path),
                    value: h.label.clone(),
                    tree: t,
                    texts: h.text.clone().into_iter().collect(),
                });
            }
        }
        let mut maps = Vec::new();
        mapping_paths(&sample.base, &mut Vec::new(), &mut maps);
        for path in maps {
            let mut t = sample.base.clone();
            if let Some(Value::Mapping(m)) = node_mut(&mut t, &path) {
                m.insert(Value::String(UNKNOWN_KEY.into()), Value::Number(1.into()));
            }
            let mut p = path.clone();
            p.push(Seg::Key(UNKNOWN_KEY.into()));
            cases.push(Case {
                sample: si,
                key: path_label(&p),
                value: "1 (unknown key)".into(),
                tree: t,
                texts: Vec::new(),
            });
        }
    }
    let grid_cases = cases.len();

    // Validate the grid one case at a time.
    let etc = scratch.path().join("validate").join("etc");
    let sink = scratch.path().join("sink.jsonl");
    let mut failures: Vec<String> = Vec::new();
    let mut valid: Vec<usize> = Vec::new();
    let mut rejected = 0usize;
    let mut unknown_key_rejections = Vec::new();
    let mut unwarned = Vec::new();
    // An error message that quotes a 1 MB value is hard to read.
    let mut longest_rejection = (0usize, String::new());
    for (ci, case) in cases.iter().enumerate() {
        let sample = &samples[case.sample];
        write_etc(&etc, sample, &[(ci, case)], &sink);
        let unknown_key = case.key.ends_with(UNKNOWN_KEY);
        match validate(&etc, &registry) {
            Verdict::Valid(warnings) => {
                valid.push(ci);
                // Reported, not failed: free-form maps (`info`, a request
                // body) take any key, and warnings are `agent validate`'s
                // report, not a safety property.
                if unknown_key && !warnings.iter().any(|k| k.ends_with(UNKNOWN_KEY)) {
                    unwarned.push(case.describe(&samples));
                }
            }
            Verdict::Rejected(e) => {
                rejected += 1;
                if e.len() > longest_rejection.0 {
                    longest_rejection = (e.len(), case.describe(&samples));
                }
                // Where keys are names (targets, tags, environment), the
                // entry's value 1 is wrong; a key must never be refused
                // for being unknown (that is `--strict`'s job).
                if unknown_key && e.to_ascii_lowercase().contains("unknown field") {
                    failures.push(format!(
                        "unknown key made validation fail: {}: {e}",
                        case.describe(&samples)
                    ));
                }
                if unknown_key {
                    unknown_key_rejections.push(format!("{}: {e}", case.describe(&samples)));
                }
            }
            Verdict::Panicked(msg) => failures.push(format!(
                "validate panicked: {}: {msg}",
                case.describe(&samples)
            )),
        }
    }

    // proptest: seeded random combinations of 1-3 keys per sample, shrunk
    // to a minimal case when one panics.
    let mut random_cases = 0usize;
    for (si, sample) in samples.iter().enumerate() {
        let mut paths = Vec::new();
        node_paths(&sample.base, &mut Vec::new(), &mut paths);
        let strategy = prop::collection::vec((0..paths.len(), random_value()), 1..=3);
        let mut runner = TestRunner::new_with_rng(
            PropConfig {
                cases: RANDOM_CASES_PER_SAMPLE,
                failure_persistence: None,
                ..PropConfig::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &SEED),
        );
        let found = RefCell::new(Vec::new());
        let result = runner.run(&strategy, |edits| {
            let mut tree = sample.base.clone();
            let mut keys = Vec::new();
            let mut vals = Vec::new();
            for (pi, v) in &edits {
                if set_at(&mut tree, &paths[*pi], v.clone()) {
                    keys.push(path_label(&paths[*pi]));
                    vals.push(
                        serde_yaml_ng::to_string(v)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    );
                }
            }
            let case = Case {
                sample: si,
                key: keys.join(" + "),
                value: vals.join(" + "),
                tree,
                texts: Vec::new(),
            };
            write_etc(&etc, sample, &[(usize::MAX, &case)], &sink);
            match validate(&etc, &registry) {
                Verdict::Panicked(msg) => Err(TestCaseError::fail(format!(
                    "validate panicked: {}: {msg}",
                    case.describe(&samples)
                ))),
                v => {
                    found
                        .borrow_mut()
                        .push((case, matches!(v, Verdict::Valid(_))));
                    Ok(())
                }
            }
        });
        if let Err(e) = result {
            failures.push(format!("{}: proptest: {e}", sample.label));
        }
        for (case, ok) in found.into_inner() {
            random_cases += 1;
            cases.push(case);
            if ok {
                valid.push(cases.len() - 1);
            } else {
                rejected += 1;
            }
        }
    }
    let validated_at = t0.elapsed();

    // Run what validated: one config per plugin sample, one per main.yaml.
    let port = closed_port();
    let mut groups: Vec<RunGroup> = Vec::new();
    let mut not_run = Vec::new();
    let mut same_run = 0usize;
    let mut main_variants = 0usize;
    // System numbers for main.yaml variants, apart from the groups'.
    let main_systems_from = 1_000_000;
    for (si, sample) in samples.iter().enumerate() {
        let mut mine: Vec<usize> = Vec::new();
        let of_sample: Vec<usize> = valid
            .iter()
            .copied()
            .filter(|&ci| cases[ci].sample == si)
            .collect();
        for ci in of_sample {
            let mut tree = cases[ci].tree.clone();
            loopback_only(&mut tree, &sample.plugin, port);
            if let Some(p) = foreign_program(&tree) {
                not_run.push(format!("{}: would run `{p}`", cases[ci].describe(&samples)));
                continue;
            }
            cases[ci].tree = tree;
            mine.push(ci);
        }
        let chunks: Vec<Vec<usize>> = if sample.role == Role::Main {
            let mut signatures = BTreeSet::new();
            let etc = scratch.path().join("signature").join("etc");
            let mut distinct = Vec::new();
            for c in mine {
                write_etc(&etc, sample, &[(c, &cases[c])], &sink);
                if signatures.insert(run_signature(&etc, &registry)) {
                    distinct.push(vec![c]);
                } else {
                    same_run += 1;
                }
            }
            distinct
        } else {
            mine.chunks(INSTANCES_PER_CONFIG)
                .map(<[usize]>::to_vec)
                .collect()
        };
        for chunk in chunks {
            let dir = scratch.path().join(format!("run{}", groups.len()));
            let etc = dir.join("etc");
            let list: Vec<(usize, &Case)> = chunk.iter().map(|&c| (c, &cases[c])).collect();
            write_etc(&etc, sample, &list, &dir.join("sink.jsonl"));
            // A System per plugin config; main.yaml variants a few per System.
            let system = match sample.role {
                Role::Main => main_systems_from + main_variants / MAIN_VARIANTS_PER_SYSTEM,
                _ => groups.len(),
            };
            if sample.role == Role::Main {
                main_variants += 1;
            }
            groups.push(RunGroup {
                system,
                sample: si,
                cases: chunk,
                etc,
            });
        }
    }
    let run_started = Instant::now();
    let (run_problems, durations) = {
        let _quiet = SilencedStdout::new();
        run_groups(&groups, &registry)
    };
    let run_time = run_started.elapsed();
    for (g, owner, msg) in run_problems {
        let Some(group) = groups.get(g) else {
            failures.push(format!("run: {msg}"));
            continue;
        };
        let sample = &samples[group.sample];
        let blame = group
            .cases
            .iter()
            .find(|&&c| owner == instance_name(sample, c))
            .or(if sample.role == Role::Main {
                group.cases.first()
            } else {
                None
            })
            .map(|&c| cases[c].describe(&samples))
            .unwrap_or_else(|| format!("{} (instance `{owner}`)", sample.label));
        failures.push(format!("run: {blame}: {msg}"));
    }

    let total = cases.len();
    println!(
        "hostile config cases: {total} ran ({grid_cases} grid, {random_cases} random), \
         {} validated, {rejected} rejected, {} validated but not run (would start a real program), \
         {same_run} main.yaml variants ran as an identical one; \
         validation {:.1} s, run {:.1} s ({} configs), total {:.1} s",
        valid.len(),
        not_run.len(),
        validated_at.as_secs_f64(),
        run_time.as_secs_f64(),
        groups.len(),
        t0.elapsed().as_secs_f64()
    );
    for n in &not_run {
        println!("not run: {n}");
    }
    println!(
        "longest rejection message: {} bytes ({})",
        longest_rejection.0, longest_rejection.1
    );
    // Errors name file, key and reason; they need not quote 1 MB values.
    if longest_rejection.0 > MAX_ERROR_BYTES {
        failures.push(format!(
            "a {} byte error message (over {MAX_ERROR_BYTES}): {}",
            longest_rejection.0, longest_rejection.1
        ));
    }
    for (took, g) in durations.iter().rev().take(3) {
        let group = &groups[*g];
        println!(
            "slow run: {} ({} config(s) in its System) took {:.1} s",
            samples[group.sample].label,
            groups.iter().filter(|o| o.system == group.system).count(),
            took.as_secs_f64()
        );
    }
    for u in &unwarned {
        println!("unknown key accepted without a warning: {u}");
    }
    for u in &unknown_key_rejections {
        let short: String = u.chars().take(240).collect();
        println!("unknown key rejected (a map of names): {short}");
    }
    let mut panics: Vec<String> = PANICS.lock().map(|v| v.clone()).unwrap_or_default();
    panics.sort();
    panics.dedup();
    // The default hook again, so the verdict below is printed.
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}\npanics seen by the hook:\n{}",
        failures.len(),
        failures.join("\n"),
        panics.join("\n")
    );
    let _ = std::env::set_current_dir(std::env::temp_dir());
}
