//! Shared helpers for agent-core's integration tests: a real `etc/` folder
//! in a temp dir and an output that records what it receives.
#![allow(dead_code)]
use agent_core::{Metric, Output, PluginResult, Registry};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Writes `files` (relative path, contents) under a new temp `etc/`.
pub fn etc(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    for (rel, text) in files {
        let p = etc.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    (dir, etc)
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Everything the `collect` output received, shared with the test.
#[derive(Clone, Default)]
pub struct Collected(pub Arc<Mutex<Vec<Metric>>>);

impl Collected {
    pub fn metrics(&self) -> Vec<Metric> {
        self.0.lock().unwrap().clone()
    }
    pub fn count_named(&self, name: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.name == name)
            .count()
    }
}

pub struct CollectOutput(Collected);

impl Output for CollectOutput {
    async fn write(&mut self, batch: &[Metric]) -> PluginResult {
        self.0 .0.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

/// Registers an output named `collect` that records into the returned handle.
pub fn add_collect(r: &mut Registry) -> Collected {
    let c = Collected::default();
    let c2 = c.clone();
    r.add_output("collect", "test sink", "", move |_| {
        Ok(CollectOutput(c2.clone()))
    });
    c
}

/// Loads `etc`, plans it against `r` and starts a supervisor (inside an
/// actix system), logging nowhere.
pub fn start(r: Registry, etc: &Path) -> actix::Addr<agent_core::PipelineSupervisor> {
    use actix::Actor;
    one_line_panics();
    let cfg = agent_core::AgentConfig::load(etc).unwrap();
    let plan = agent_core::Plan::new(&cfg, &r).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    agent_core::PipelineSupervisor::new(cfg, plan, Arc::new(r), log).start()
}

/// Tests inject panics that the core catches. The default hook prints each
/// with a backtrace when RUST_BACKTRACE is set, and symbolising one in a
/// debug build takes tens of milliseconds on the thread that panicked: the
/// pipelines' event loop, which then misses ticks the tests count. One line
/// per panic instead, as the agent's own hook does.
pub fn one_line_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!(
                "panic at {at}: {}",
                info.payload()
                    .downcast_ref::<&str>()
                    .copied()
                    .map(str::to_string)
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default()
            );
        }));
    });
}

/// An input that emits one metric per gather carrying a sequence number
/// (`seq`), shared across rebuilds: gaps and repeats show in the numbers.
pub struct Counter {
    pub seq: Arc<std::sync::atomic::AtomicU64>,
}

impl agent_core::Input for Counter {
    async fn gather(&mut self, acc: &mut agent_core::Accumulator) -> PluginResult {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut m = acc.metric();
        m.push_field("seq", n);
        acc.add(m);
        Ok(())
    }
}
