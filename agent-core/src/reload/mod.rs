//! Live reconfiguration: watch `etc/`, and on a real change load, validate
//! and apply the new configuration to the running actors.
//!
//! On Linux notify also reports plain reads (open, close-nowrite), and
//! reading the config ourselves would then trigger the next reload: a loop
//! seen to produce hundreds of thousands of events a minute. So only
//! create, data modify, close-after-write, rename and remove of `*.yaml`
//! files count; events are debounced; and a fingerprint of the files'
//! contents must differ from the applied one before anything is parsed.
pub mod remote;

use crate::config::{load, AgentConfig, ConfigError, Plan};
use crate::pipeline::{ApplyConfig, PipelineSupervisor};
use crate::registry::Registry;
use actix::prelude::*;
use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use serde::Serialize;
use slog::{debug, error, info, warn, Logger};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Quiet time after the last file event before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// A stream of events that never goes quiet still reloads this often.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// What `agent status` shows about reloading.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ReloadState {
    /// Applied configurations since start (1 = the initial one).
    pub generation: u64,
    /// Reloads attempted (changed files, SIGHUP, timer).
    pub attempts: u64,
    /// Attempts that found the files unchanged and did nothing.
    pub unchanged: u64,
    /// File events that passed the filter.
    pub file_events: u64,
    /// Epoch seconds of the last attempt that found a change.
    pub last_change_at: i64,
    /// `ok`, or the error that rejected the last changed configuration.
    pub last_result: String,
    /// What the last applied reload changed.
    pub last_applied: Option<crate::pipeline::ApplyReport>,
    /// Times the reloader actor died and was restarted.
    #[serde(default)]
    pub reloader_restarts: u64,
}

pub type SharedReloadState = Arc<Mutex<ReloadState>>;

/// Writes the counters the `internal` input reports to the stats store.
fn publish(s: &ReloadState) {
    crate::selfstat::publish_reload(crate::selfstat::ReloadCounters {
        generation: s.generation,
        attempts: s.attempts,
        unchanged: s.unchanged,
        file_events: s.file_events,
        reloader_restarts: s.reloader_restarts,
        last_ok: s.last_result == "ok",
    });
}

/// Loads and plans `dir` under `catch_unwind`: a panic anywhere in
/// evaluating a configuration is a rejected configuration, never a dead
/// reloader.
pub fn load_and_plan(dir: &Path, registry: &Registry) -> Result<(AgentConfig, Plan), ConfigError> {
    let evaluated = catch_unwind(AssertUnwindSafe(|| {
        #[cfg(test)]
        {
            let mut armed = PANIC_IN_NEXT_LOAD.lock().unwrap_or_else(|e| e.into_inner());
            if armed.as_deref() == Some(dir) {
                *armed = None;
                drop(armed);
                panic!("injected panic while loading the configuration");
            }
        }
        let mut config = AgentConfig::load(dir)?;
        let mut plan = Plan::new(&config, registry)?;
        config.compact(&mut plan);
        Ok((config, plan))
    }));
    evaluated.unwrap_or_else(|p| {
        Err(ConfigError::file(
            dir,
            format!(
                "evaluating the configuration panicked: {}",
                crate::pipeline::panic_message(&*p)
            ),
        ))
    })
}

/// Watches the config folder and applies changes to a supervisor.
pub struct ConfigReloader {
    dir: PathBuf,
    registry: Arc<Registry>,
    supervisor: Addr<PipelineSupervisor>,
    log: Logger,
    state: SharedReloadState,
    /// Shared with later incarnations, so a restarted reloader does not
    /// apply the same files again.
    applied_fingerprint: Arc<AtomicU64>,
    watcher: Option<notify::RecommendedWatcher>,
    pending: Option<SpawnHandle>,
    first_event: Option<Instant>,
    reload_every: Duration,
    timer: Option<SpawnHandle>,
    remote: Option<remote::RemoteSettings>,
    /// Tells the [`ReloaderHandle`] that this incarnation died.
    guard: Option<ReloaderGuard>,
}

/// Dropped with the reloader: reports its death unless disarmed.
struct ReloaderGuard(Option<tokio::sync::mpsc::UnboundedSender<()>>);

impl Drop for ReloaderGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// What it takes to start another incarnation of the reloader.
#[derive(Clone)]
struct ReloaderSeed {
    dir: PathBuf,
    registry: Arc<Registry>,
    supervisor: Addr<PipelineSupervisor>,
    log: Logger,
    state: SharedReloadState,
    applied_fingerprint: Arc<AtomicU64>,
    reload_every: Duration,
    remote: Option<remote::RemoteSettings>,
}

impl ReloaderSeed {
    fn grow(&self) -> ConfigReloader {
        ConfigReloader {
            dir: self.dir.clone(),
            registry: self.registry.clone(),
            supervisor: self.supervisor.clone(),
            log: self.log.clone(),
            state: self.state.clone(),
            applied_fingerprint: self.applied_fingerprint.clone(),
            watcher: None,
            pending: None,
            first_event: None,
            reload_every: self.reload_every,
            timer: None,
            remote: self.remote.clone(),
            guard: None,
        }
    }
}

/// The running reloader, supervised: if its actor dies, a new one starts
/// (with backoff) and this handle sends to it from then on.
#[derive(Clone)]
pub struct ReloaderHandle {
    addr: Arc<Mutex<Addr<ConfigReloader>>>,
    state: SharedReloadState,
}

impl ReloaderHandle {
    /// The current incarnation.
    pub fn addr(&self) -> Addr<ConfigReloader> {
        self.addr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reload now (SIGHUP).
    pub fn reload(&self, reason: &'static str) {
        self.addr().do_send(Reload { reason });
    }

    pub fn state(&self) -> SharedReloadState {
        self.state.clone()
    }
}

impl ConfigReloader {
    /// `config` is the configuration the supervisor runs now.
    pub fn new(
        config: &AgentConfig,
        registry: Arc<Registry>,
        supervisor: Addr<PipelineSupervisor>,
        log: Logger,
    ) -> Self {
        let state = ReloadState {
            generation: 1,
            last_result: "ok".into(),
            ..Default::default()
        };
        ConfigReloader {
            dir: config.dir.clone(),
            registry,
            supervisor,
            log,
            state: Arc::new(Mutex::new(state)),
            applied_fingerprint: Arc::new(AtomicU64::new(load::fingerprint(&config.dir))),
            watcher: None,
            pending: None,
            first_event: None,
            reload_every: config.main.reload_sec.as_duration(),
            timer: None,
            remote: remote::RemoteSettings::from_config(config),
            guard: None,
        }
    }

    /// Starts the reloader under supervision: when its actor dies (a panic
    /// in its own code), a new one is started after a backoff delay.
    pub fn start_supervised(self) -> ReloaderHandle {
        let seed = ReloaderSeed {
            dir: self.dir.clone(),
            registry: self.registry.clone(),
            supervisor: self.supervisor.clone(),
            log: self.log.clone(),
            state: self.state.clone(),
            applied_fingerprint: self.applied_fingerprint.clone(),
            reload_every: self.reload_every,
            remote: self.remote.clone(),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut first = self;
        first.guard = Some(ReloaderGuard(Some(tx.clone())));
        let handle = ReloaderHandle {
            addr: Arc::new(Mutex::new(first.start())),
            state: seed.state.clone(),
        };
        let slot = handle.addr.clone();
        actix::spawn(async move {
            let mut backoff = crate::pipeline::Backoff::default();
            let mut last_start = Instant::now();
            while rx.recv().await.is_some() {
                if last_start.elapsed() >= Duration::from_secs(60) {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                error!(seed.log, "reloader died; restarting it"; "backoff_ms" => delay.as_millis() as u64);
                tokio::time::sleep(delay).await;
                let mut next = seed.grow();
                next.guard = Some(ReloaderGuard(Some(tx.clone())));
                if let Ok(mut s) = seed.state.lock() {
                    s.reloader_restarts += 1;
                    publish(&s);
                }
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = next.start();
                last_start = Instant::now();
            }
        });
        handle
    }

    pub fn state(&self) -> SharedReloadState {
        self.state.clone()
    }

    fn with_state(&self, f: impl FnOnce(&mut ReloadState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
            publish(&s);
        }
    }

    fn watch(&mut self, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let handler = move |res: notify::Result<Event>| {
            if let Ok(ev) = res {
                if is_config_change(&ev) {
                    addr.do_send(FilesChanged);
                }
            }
        };
        let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(&self.dir, RecursiveMode::Recursive)?;
            Ok(w)
        });
        match watcher {
            Ok(w) => {
                debug!(self.log, "watching config folder"; "dir" => %self.dir.display());
                self.watcher = Some(w);
            }
            Err(e) => {
                warn!(self.log, "cannot watch the config folder; reloads come from SIGHUP and reload_sec only";
                    "dir" => %self.dir.display(), "error" => %e);
                self.watcher = None;
            }
        }
    }

    fn start_timer(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.timer.take() {
            ctx.cancel_future(h);
        }
        self.timer = Some(ctx.run_interval(self.reload_every, |act, ctx| {
            if let Some(remote) = act.remote.clone() {
                act.pull_remote(remote, ctx);
            }
            ctx.notify(Reload {
                reason: "reload_sec",
            });
        }));
    }

    fn pull_remote(&mut self, settings: remote::RemoteSettings, ctx: &mut Context<Self>) {
        let dir = self.dir.clone();
        let registry = self.registry.clone();
        let log = self.log.clone();
        if let Some(w) = settings.fetch_warning() {
            warn!(log, "{}", w);
        }
        let fut = async move { remote::pull_and_write(&settings, &dir, &registry).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(true) => {
                info!(log, "remote configuration written");
                ctx.notify(Reload { reason: "update_api" });
            }
            Ok(false) => debug!(log, "remote configuration unchanged"),
            Err(e) => {
                error!(log, "remote configuration rejected; keeping the current one"; "error" => %e);
                act.with_state(|s| s.last_result = format!("update_api: {e}"));
            }
        }));
    }

    /// Load, validate and apply; the running configuration stays when any
    /// step fails.
    fn reload(&mut self, reason: &'static str, ctx: &mut Context<Self>) {
        self.with_state(|s| s.attempts += 1);
        if self.watcher.is_none() && self.dir.is_dir() {
            self.watch(ctx);
        }
        let fingerprint = load::fingerprint(&self.dir);
        if fingerprint == self.applied_fingerprint.load(Ordering::Relaxed) {
            self.with_state(|s| s.unchanged += 1);
            debug!(self.log, "config unchanged"; "reason" => reason);
            return;
        }
        self.with_state(|s| s.last_change_at = crate::metric::now_ns() / 1_000_000_000);
        let loaded = load_and_plan(&self.dir, &self.registry);
        let (config, plan) = match loaded {
            Ok(v) => v,
            Err(e) => {
                error!(self.log, "new configuration rejected; keeping the running one";
                    "error" => %e, "reason" => reason);
                self.with_state(|s| s.last_result = e.to_string());
                // Do not report the same broken files again on every event.
                self.applied_fingerprint
                    .store(fingerprint, Ordering::Relaxed);
                return;
            }
        };
        for w in &plan.warnings {
            slog::warn!(self.log, "config warning: {}", w);
        }
        self.applied_fingerprint
            .store(fingerprint, Ordering::Relaxed);
        let new_every = config.main.reload_sec.as_duration();
        self.remote = remote::RemoteSettings::from_config(&config);
        if new_every != self.reload_every {
            self.reload_every = new_every;
            self.start_timer(ctx);
        }
        let log = self.log.clone();
        let fut = self.supervisor.send(ApplyConfig { config, plan });
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| match res {
            Ok(report) => {
                info!(log, "configuration reloaded"; "reason" => reason, "started" => report.started.len(),
                    "stopped" => report.stopped.len(), "reconfigured" => report.reconfigured.len());
                act.with_state(|s| {
                    s.generation += 1;
                    s.last_result = "ok".into();
                    s.last_applied = Some(report);
                });
            }
            Err(e) => {
                error!(log, "supervisor did not take the new configuration"; "error" => %e);
                act.with_state(|s| s.last_result = format!("supervisor: {e}"));
            }
        }));
    }
}

/// Only writes, creations, renames and removals of YAML files (or of the
/// folders that hold them) count; reads never do.
pub fn is_config_change(ev: &Event) -> bool {
    let kind = matches!(
        ev.kind,
        EventKind::Create(_)
            | EventKind::Remove(_)
            | EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    );
    kind && ev.paths.iter().any(|p| is_config_path(p))
}

fn is_config_path(p: &Path) -> bool {
    match p.extension().and_then(|e| e.to_str()) {
        Some("yaml") | Some("yml") => true,
        // A folder (etc/, etc/input/ ...) created, renamed or removed.
        None => true,
        _ => false,
    }
}

impl Actor for ConfigReloader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.with_state(|_| {});
        self.watch(ctx);
        self.start_timer(ctx);
    }
}

/// A filtered file event from the watcher thread.
#[derive(Message)]
#[rtype(result = "()")]
struct FilesChanged;

impl Handler<FilesChanged> for ConfigReloader {
    type Result = ();

    fn handle(&mut self, _: FilesChanged, ctx: &mut Context<Self>) {
        self.with_state(|s| s.file_events += 1);
        let now = Instant::now();
        let first = *self.first_event.get_or_insert(now);
        if let Some(h) = self.pending.take() {
            ctx.cancel_future(h);
        }
        // Trailing debounce, but never later than MAX_DEBOUNCE after the first event.
        let wait = DEBOUNCE.min(MAX_DEBOUNCE.saturating_sub(now.duration_since(first)));
        self.pending = Some(ctx.run_later(wait, |act, ctx| {
            act.pending = None;
            act.first_event = None;
            act.reload("file change", ctx);
        }));
    }
}

/// Reload now (SIGHUP, the timer, or a caller).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reload {
    pub reason: &'static str,
}

impl Handler<Reload> for ConfigReloader {
    type Result = ();

    fn handle(&mut self, msg: Reload, ctx: &mut Context<Self>) {
        self.reload(msg.reason, ctx);
    }
}

/// A copy of the reload state.
#[derive(Message)]
#[rtype(result = "ReloadState")]
pub struct GetReloadState;

impl Handler<GetReloadState> for ConfigReloader {
    type Result = MessageResult<GetReloadState>;

    fn handle(&mut self, _: GetReloadState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.lock().map(|s| s.clone()).unwrap_or_default())
    }
}

/// Test hook: panic inside the reloader's own handler.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PanicNow;

#[cfg(test)]
impl Handler<PanicNow> for ConfigReloader {
    type Result = ();

    fn handle(&mut self, _: PanicNow, _: &mut Context<Self>) {
        panic!("injected panic in the reloader");
    }
}

/// Test hook: the next evaluation of this folder panics.
#[cfg(test)]
pub(crate) static PANIC_IN_NEXT_LOAD: Mutex<Option<PathBuf>> = Mutex::new(None);
