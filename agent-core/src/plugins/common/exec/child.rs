//! The long-running child of an `execd` plugin, kept alive by a supervisor
//! thread.
//!
//! Threads, not tasks: the processor trait is synchronous and the child
//! must outlive any one gather, so each child gets plain threads that do
//! not depend on which runtime (if any) the caller runs on:
//!
//! - the supervisor spawns the child, waits for it, restarts it after
//!   `restart_delay` (doubling while it keeps crashing), and on stop sends
//!   SIGTERM to its process group, then SIGKILL after `stop_timeout`;
//! - a stdout reader splits lines (at most `max_line_bytes` each) into a
//!   bounded channel, so a child that floods stdout is paused by the pipe,
//!   not buffered without limit;
//! - a stderr reader keeps the last lines for error messages and logs them
//!   rate-limited;
//! - a stdin writer takes whole buffers from a bounded channel, so a child
//!   that stops reading blocks only that thread.
use super::{read_lines_bounded, signal_group, CommandSpec, ExecStats, LineRead, RateLimitedLog};
use crate::metric::now_ns;
use std::collections::VecDeque;
use std::io::Write;
use std::process::{Child, ChildStdin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How an execd child is run.
#[derive(Debug, Clone)]
pub(crate) struct ExecdSettings {
    /// Where the child's stderr and restarts are logged.
    pub log: slog::Logger,
    /// `exec[<instance>]`-style name for messages.
    pub name: String,
    pub command: CommandSpec,
    pub restart_delay: Duration,
    pub stop_timeout: Duration,
    pub max_line_bytes: usize,
    /// Lines buffered between the child and the plugin.
    pub line_capacity: usize,
    /// Pass stdout lines to the plugin; when false (outputs) they are only
    /// logged, rate-limited, so a chatty child never blocks.
    pub forward_stdout: bool,
}

/// A child is considered healthy after running this long; its
/// restart delay goes back to `restart_delay`.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// How often the supervisor checks the child and the stop signal.
const POLL: Duration = Duration::from_millis(50);
const STDERR_TAIL: usize = 10;

/// One line from the child's stdout and when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub received_ns: i64,
    pub text: String,
}

struct WriteReq {
    data: Vec<u8>,
    reply: Option<tokio::sync::oneshot::Sender<std::io::Result<()>>>,
}

#[derive(Default)]
struct State {
    stdin: Option<SyncSender<WriteReq>>,
    running: bool,
    started: Option<Instant>,
    /// Why the child is not running: spawn failure or last exit.
    down_reason: Option<String>,
    spawn_failed: bool,
    stderr_tail: VecDeque<String>,
}

struct Shared {
    settings: ExecdSettings,
    stats: Arc<ExecStats>,
    state: Mutex<State>,
    log: RateLimitedLog,
    stderr_log: RateLimitedLog,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked mid-update; the
        // state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A supervised child process. Dropping it stops the child (SIGTERM, then
/// SIGKILL after `stop_timeout`) and waits for that to finish.
pub(crate) struct ExecdChild {
    shared: Arc<Shared>,
    lines: Receiver<Line>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ExecdChild {
    /// Starts the supervisor thread, which spawns the child at once.
    pub(crate) fn start(settings: ExecdSettings, stats: Arc<ExecStats>) -> std::io::Result<Self> {
        let (lines_tx, lines) = mpsc::sync_channel(settings.line_capacity.max(1));
        let (stop, stop_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            log: RateLimitedLog::new(settings.log.clone(), settings.name.clone()),
            stderr_log: RateLimitedLog::new(
                settings.log.clone(),
                format!("{} stderr", settings.name),
            ),
            settings,
            stats,
            state: Mutex::new(State::default()),
        });
        let s = shared.clone();
        let (first_tx, first_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("execd-{}", short(&shared.settings.name)))
            .spawn(move || supervise(s, lines_tx, stop_rx, first_tx))?;
        // Return once the first spawn was attempted (a fork and exec: quick),
        // so the caller can talk to the child at once.
        let _ = first_rx.recv_timeout(Duration::from_secs(5));
        Ok(ExecdChild {
            shared,
            lines,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn lines(&self) -> &Receiver<Line> {
        &self.lines
    }

    /// How long the current child has been running (`None`: not running).
    pub(crate) fn running_for(&self) -> Option<Duration> {
        let st = self.shared.state();
        st.started.filter(|_| st.running).map(|t| t.elapsed())
    }

    /// Whether a child is running now.
    pub(crate) fn is_running(&self) -> bool {
        self.shared.state().running
    }

    /// The spawn error, when the last attempt to start the child failed
    /// (a wrong path: a config problem worth failing the plugin for).
    pub(crate) fn spawn_error(&self) -> Option<String> {
        let st = self.shared.state();
        if st.spawn_failed {
            st.down_reason.clone()
        } else {
            None
        }
    }

    /// Why the child is not running, with its last stderr lines.
    pub(crate) fn down_reason(&self) -> String {
        let st = self.shared.state();
        let mut s = st
            .down_reason
            .clone()
            .unwrap_or_else(|| "the child is not running".into());
        if let Some(last) = st.stderr_tail.back() {
            s.push_str(&format!("; last stderr line: {last}"));
        }
        s
    }

    /// Sends a signal to the child process itself.
    pub(crate) fn signal(&self, sig: libc::c_int) -> Result<(), String> {
        let st = self.shared.state();
        let pid = self.shared.stats.pid.load(Relaxed);
        if !st.running || pid <= 1 {
            return Err(st
                .down_reason
                .clone()
                .unwrap_or_else(|| "the child is not running".into()));
        }
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
        if unsafe { libc::kill(pid, sig) } == -1 {
            return Err(format!(
                "signal failed: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Queues `data` for the child's stdin without waiting.
    pub(crate) fn send(&self, data: Vec<u8>) -> Result<(), String> {
        self.queue(WriteReq { data, reply: None })
    }

    /// Queues `data` for the child's stdin; the receiver resolves once it
    /// is written (`Err(_)`: the writer is gone, the child exited). Split
    /// from the waiting so that no borrow of `self` (not `Sync`) is held
    /// across an await.
    pub(crate) fn write_queued(
        &self,
        data: Vec<u8>,
    ) -> Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(WriteReq {
            data,
            reply: Some(tx),
        })?;
        Ok(rx)
    }

    fn queue(&self, req: WriteReq) -> Result<(), String> {
        let tx = self.shared.state().stdin.clone();
        let Some(tx) = tx else {
            return Err(self.down_reason());
        };
        match tx.try_send(req) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Err("the child is not reading its stdin (write queue full)".into())
            }
            Err(TrySendError::Disconnected(_)) => Err(self.down_reason()),
        }
    }

    /// Stops the child and waits for the supervisor (at most
    /// `stop_timeout` plus a second, so a stuck kill cannot hang the caller).
    pub(crate) fn stop_blocking(&mut self) {
        self.stop.take();
        let Some(t) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + self.shared.settings.stop_timeout + Duration::from_secs(1);
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }

    /// Like [`ExecdChild::stop_blocking`] without blocking the runtime.
    pub(crate) async fn stop_async(&mut self) {
        self.stop.take();
        let Some(t) = self.thread.take() else {
            return;
        };
        let deadline = Instant::now() + self.shared.settings.stop_timeout + Duration::from_secs(1);
        while !t.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

impl Drop for ExecdChild {
    fn drop(&mut self) {
        self.stop_blocking();
    }
}

fn short(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect()
}

/// Waits `d` or until stop is requested; true when stopping.
fn wait_or_stop(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

fn supervise(
    shared: Arc<Shared>,
    lines_tx: SyncSender<Line>,
    stop: Receiver<()>,
    first: mpsc::Sender<()>,
) {
    let settings = shared.settings.clone();
    let cap = settings.restart_delay.max(Duration::from_secs(300));
    let mut delay = settings.restart_delay;
    let mut first = Some(first);
    loop {
        match settings.command.std_command().spawn() {
            Err(e) => {
                let msg = format!("cannot start `{}`: {e}", settings.command.display());
                shared.log.warn(|| msg.clone());
                let mut st = shared.state();
                st.running = false;
                st.spawn_failed = true;
                st.down_reason = Some(msg);
                drop(st);
                first.take();
            }
            Ok(child) => {
                ExecStats::add(&shared.stats.spawns, 1);
                let started = Instant::now();
                let stopping = run_child(&shared, child, &lines_tx, &stop, &mut first);
                if stopping {
                    return;
                }
                if started.elapsed() >= HEALTHY_AFTER {
                    delay = settings.restart_delay;
                }
            }
        }
        if wait_or_stop(&stop, delay) {
            return;
        }
        delay = (delay * 2).min(cap);
    }
}

/// Runs one child until it exits (false) or stop is requested (true).
fn run_child(
    shared: &Arc<Shared>,
    mut child: Child,
    lines_tx: &SyncSender<Line>,
    stop: &Receiver<()>,
    first: &mut Option<mpsc::Sender<()>>,
) -> bool {
    let pid = child.id();
    shared.stats.pid.store(pid as i32, Relaxed);
    let stdin_tx = child.stdin.take().map(start_writer);
    if let Some(out) = child.stdout.take() {
        let tx = lines_tx.clone();
        let sh = shared.clone();
        let max = shared.settings.max_line_bytes;
        let _ = std::thread::Builder::new()
            .name("execd-stdout".into())
            .spawn(move || {
                let forward = sh.settings.forward_stdout;
                read_lines_bounded(out, max, |item| match item {
                    LineRead::Line(text) if !forward => {
                        sh.log
                            .warn(|| format!("stdout: {}", super::clip_owned(text, 200)));
                        true
                    }
                    LineRead::Line(text) => tx
                        .send(Line {
                            received_ns: now_ns(),
                            text,
                        })
                        .is_ok(),
                    LineRead::TooLong(len) => {
                        ExecStats::add(&sh.stats.long_lines, 1);
                        sh.log.warn(|| {
                            format!("dropped a {len}-byte stdout line (max_line_bytes is {max})")
                        });
                        true
                    }
                })
            });
    }
    if let Some(err) = child.stderr.take() {
        let sh = shared.clone();
        let _ = std::thread::Builder::new()
            .name("execd-stderr".into())
            .spawn(move || {
                read_lines_bounded(err, 4096, |item| {
                    let text = match item {
                        LineRead::Line(t) => t,
                        LineRead::TooLong(n) => format!("<{n}-byte line>"),
                    };
                    ExecStats::add(&sh.stats.stderr_lines, 1);
                    sh.stderr_log.warn(|| text.clone());
                    let mut st = sh.state();
                    if st.stderr_tail.len() == STDERR_TAIL {
                        st.stderr_tail.pop_front();
                    }
                    st.stderr_tail.push_back(text);
                    true
                })
            });
    }
    {
        let mut st = shared.state();
        st.stdin = stdin_tx;
        st.running = true;
        st.started = Some(Instant::now());
        st.spawn_failed = false;
        st.down_reason = None;
    }
    first.take();
    let (status, stopping) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (Some(status), false),
            Ok(None) => {}
            Err(_) => break (None, false),
        }
        if wait_or_stop(stop, super::child::POLL) {
            break (terminate(shared, &mut child), true);
        }
    };
    // Whatever the child left behind in its group goes with it.
    signal_group(pid, libc::SIGKILL);
    let reason = match status {
        Some(s) => format!("`{}` exited: {s}", shared.settings.command.display()),
        None => format!(
            "`{}` could not be waited for",
            shared.settings.command.display()
        ),
    };
    if !stopping {
        shared.log.warn(|| format!("{reason}; restarting"));
    }
    let mut st = shared.state();
    st.stdin = None;
    st.running = false;
    st.down_reason = Some(reason);
    stopping
}

/// SIGTERM to the group, SIGKILL after the grace period; always reaps.
fn terminate(shared: &Shared, child: &mut Child) -> Option<std::process::ExitStatus> {
    let pid = child.id();
    signal_group(pid, libc::SIGTERM);
    let deadline = Instant::now() + shared.settings.stop_timeout;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ExecStats::add(&shared.stats.kills, 1);
    signal_group(pid, libc::SIGKILL);
    let _ = child.kill();
    child.wait().ok()
}

fn start_writer(mut stdin: ChildStdin) -> SyncSender<WriteReq> {
    let (tx, rx) = mpsc::sync_channel::<WriteReq>(64);
    let _ = std::thread::Builder::new()
        .name("execd-stdin".into())
        .spawn(move || {
            for req in rx {
                let r = stdin.write_all(&req.data).and_then(|_| stdin.flush());
                let failed = r.is_err();
                if let Some(reply) = req.reply {
                    let _ = reply.send(r);
                }
                if failed {
                    // Broken pipe: the child is gone; the supervisor restarts it.
                    break;
                }
            }
        });
    tx
}
