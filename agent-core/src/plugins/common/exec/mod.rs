//! Child-process plumbing shared by the `exec` and `execd` plugins:
//! building the command (argv or `/bin/sh -c`, a clean environment), its
//! own process group so a kill reaches grandchildren, bounded reading,
//! and the long-running child supervisor of the `execd` plugins
//! ([`ExecdChild`]).
//!
//! Unix only: process groups, signals and `PR_SET_PDEATHSIG` have no
//! Windows equivalent here.
mod child;
pub(crate) mod encode;

pub(crate) use child::{ExecdChild, ExecdSettings, Line};

use crate::config::Seconds;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A command as written in the config: an argv list, or one string (run
/// with `/bin/sh -c` when `shell: true`, else split on whitespace).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CommandLine {
    Argv(Vec<String>),
    Line(String),
}

/// The environment settings every exec/execd plugin accepts.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EnvConfig {
    /// Run commands given as strings with `/bin/sh -c`.
    pub shell: bool,
    /// Extra environment variables for the child.
    pub environment: BTreeMap<String, String>,
    /// Pass the agent's whole environment to the child (default: only
    /// `PATH` plus `environment`, so the agent's secrets do not leak).
    pub inherit_env: bool,
    /// Working directory of the child (default: the agent's).
    pub cwd: Option<String>,
}

/// A command ready to spawn: program, arguments and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub inherit_env: bool,
    pub cwd: Option<String>,
}

impl CommandSpec {
    /// Checks and resolves one configured command; the error is a reason
    /// for a config error.
    pub fn new(line: &CommandLine, env: &EnvConfig) -> Result<Self, String> {
        let argv: Vec<String> = match (line, env.shell) {
            (CommandLine::Line(s), true) => {
                if s.trim().is_empty() {
                    return Err("empty command".into());
                }
                vec!["/bin/sh".into(), "-c".into(), s.clone()]
            }
            (CommandLine::Argv(_), true) => {
                return Err("with `shell: true` give each command as one string".into())
            }
            (CommandLine::Line(s), false) => s.split_whitespace().map(String::from).collect(),
            (CommandLine::Argv(v), false) => v.clone(),
        };
        let Some((program, args)) = argv.split_first() else {
            return Err("empty command".into());
        };
        if program.is_empty() {
            return Err("empty program name".into());
        }
        if argv.iter().any(|a| a.contains('\0')) {
            return Err("arguments may not contain NUL bytes".into());
        }
        for k in env.environment.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("invalid environment variable name {k:?}"));
            }
        }
        Ok(CommandSpec {
            program: program.clone(),
            args: args.to_vec(),
            env: env
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            inherit_env: env.inherit_env,
            cwd: env.cwd.clone(),
        })
    }

    /// The command for display in errors: `prog arg1 arg2`.
    pub fn display(&self) -> String {
        let mut s = self.program.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        clip_owned(s, 120)
    }

    /// A `std` command in its own process group, killed with the thread
    /// that spawned it (`PR_SET_PDEATHSIG`), stdio piped.
    pub fn std_command(&self) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(&self.program);
        c.args(&self.args);
        if !self.inherit_env {
            c.env_clear();
            c.env("PATH", default_path());
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(d) = &self.cwd {
            c.current_dir(d);
        }
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            c.pre_exec(die_with_parent);
        }
        c
    }

    /// The same as a tokio command (for the one-shot `exec` input); stdin
    /// is `/dev/null`.
    pub fn tokio_command(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::from(self.std_command());
        c.stdin(std::process::Stdio::null());
        c.kill_on_drop(true);
        c
    }
}

fn default_path() -> OsString {
    std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

/// Runs in the child between fork and exec: if the agent dies without
/// stopping it (SIGKILL, crash), the kernel kills the child too.
fn die_with_parent() -> io::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // The program gets the descriptor limit the agent was started with,
    // not the raised one (select()-based programs break above 1024).
    crate::fd_budget::restore_initial_limit();
    Ok(())
}

/// Sends `sig` to the whole process group led by `pid` (the child and
/// whatever it started). A group already gone is not an error.
pub(crate) fn signal_group(pid: u32, sig: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// Shortens `s` to at most `max` characters (for messages).
pub(crate) fn clip_owned(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
        s.push('…');
    }
    s
}

/// Counters an exec/execd plugin keeps; shared with its threads and tests.
#[derive(Debug, Default)]
pub struct ExecStats {
    /// Children started (for execd: 1 + restarts).
    pub spawns: AtomicU64,
    /// Lines or documents that did not parse.
    pub parse_errors: AtomicU64,
    /// Lines longer than `max_line_bytes`, dropped.
    pub long_lines: AtomicU64,
    /// Lines the child wrote to stderr.
    pub stderr_lines: AtomicU64,
    /// Children killed (timeout, oversized output, stop grace expired).
    pub kills: AtomicU64,
    /// Process id of the current (or last) child; 0 before the first.
    pub pid: AtomicI32,
}

impl ExecStats {
    pub fn restarts(&self) -> u64 {
        self.spawns.load(Relaxed).saturating_sub(1)
    }
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

pub(crate) use crate::plugin::RateLimitedLog;

/// What a bounded line read produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineRead {
    Line(String),
    /// A line longer than the limit was skipped; its length in bytes.
    TooLong(usize),
}

/// Reads `r` line by line, never holding more than `max` bytes of one line:
/// longer lines are skipped to their newline and reported as
/// [`LineRead::TooLong`]. Stops at EOF, on a read error, or when `each`
/// returns false. A last line without a newline is still delivered.
pub(crate) fn read_lines_bounded<R: Read>(
    mut r: R,
    max: usize,
    mut each: impl FnMut(LineRead) -> bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut skipping: Option<usize> = None;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let nl = chunk.iter().position(|&b| b == b'\n');
            let (part, rest) = match nl {
                Some(i) => (&chunk[..i], Some(&chunk[i + 1..])),
                None => (chunk, None),
            };
            if let Some(skipped) = skipping.as_mut() {
                *skipped += part.len();
            } else if line.len() + part.len() > max {
                skipping = Some(line.len() + part.len());
                line.clear();
            } else {
                line.extend_from_slice(part);
            }
            match rest {
                Some(rest) => {
                    let item = match skipping.take() {
                        Some(len) => LineRead::TooLong(len),
                        None => {
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                            LineRead::Line(String::from_utf8_lossy(&line).into_owned())
                        }
                    };
                    line.clear();
                    if !each(item) {
                        return;
                    }
                    chunk = rest;
                }
                None => break,
            }
        }
    }
    if let Some(len) = skipping {
        each(LineRead::TooLong(len));
    } else if !line.is_empty() {
        each(LineRead::Line(String::from_utf8_lossy(&line).into_owned()));
    }
}

/// Checks a number of seconds read from a config key against its range.
pub(crate) fn secs(
    v: Seconds,
    key: &str,
    min: f64,
    max: f64,
) -> Result<Duration, (String, String)> {
    v.within(min, max).map_err(|r| (key.to_string(), r))
}

#[cfg(test)]
mod tests;

/// What a one-shot command produced.
#[derive(Debug)]
pub(crate) struct RunOutput {
    pub stdout: Vec<u8>,
    /// The first [`STDERR_KEEP`] bytes of stderr.
    pub stderr: Vec<u8>,
    pub status: std::process::ExitStatus,
}

/// Why a one-shot command gave no output.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error("cannot start: {0}")]
    Spawn(io::Error),
    #[error("timed out after {0:.1}s; killed with its process group")]
    Timeout(f64),
    #[error("printed more than max_output_bytes ({0} bytes); killed with its process group")]
    TooLarge(usize),
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// How much of a one-shot command's stderr is kept for messages.
pub(crate) const STDERR_KEEP: usize = 64 * 1024;

/// Runs a command to completion with a timeout and an output limit. On
/// timeout or oversized output the whole process group is killed and the
/// child reaped, so neither a hang nor a flood outlives the call.
pub(crate) async fn run_once(
    spec: &CommandSpec,
    timeout: Duration,
    max_output: usize,
    stats: &ExecStats,
) -> Result<RunOutput, RunError> {
    use tokio::io::AsyncReadExt;
    // Commands of one gather run at once: each holds its stdout and stderr
    // pipes, plus the spawn's own pipe for a moment, from the budget.
    let _fds = crate::fd_budget::global().acquire(3).await;
    let mut child = spec.tokio_command().spawn().map_err(RunError::Spawn)?;
    ExecStats::add(&stats.spawns, 1);
    let pid = child.id().unwrap_or(0);
    stats.pid.store(pid as i32, Relaxed);
    // If this future is dropped mid-way (the core's gather timeout, a
    // shutdown), the guard still kills the group; tokio reaps the child.
    let mut guard = GroupKillGuard(Some(pid));
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let result = tokio::time::timeout(timeout, async {
        let read_out = async {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 16 * 1024];
            if let Some(out) = stdout.as_mut() {
                loop {
                    let n = out.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    if buf.len() + n > max_output {
                        return Err(RunError::TooLarge(max_output));
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            Ok::<_, RunError>(buf)
        };
        let read_err = async {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 8 * 1024];
            if let Some(err) = stderr.as_mut() {
                loop {
                    let n = err.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    // Keep the start (where the reason usually is), drain the rest.
                    let room = STDERR_KEEP.saturating_sub(buf.len()).min(n);
                    buf.extend_from_slice(&chunk[..room]);
                }
            }
            Ok::<_, RunError>(buf)
        };
        let (out, err) = tokio::try_join!(read_out, read_err)?;
        let status = child.wait().await?;
        Ok::<_, RunError>(RunOutput {
            stdout: out,
            stderr: err,
            status,
        })
    })
    .await;
    let failure = match result {
        Ok(Ok(out)) => {
            // Exited normally: what it left running in its group is its business.
            guard.0 = None;
            return Ok(out);
        }
        Ok(Err(e)) => e,
        Err(_) => RunError::Timeout(timeout.as_secs_f64()),
    };
    ExecStats::add(&stats.kills, 1);
    signal_group(pid, libc::SIGKILL);
    drop((stdout, stderr));
    let _ = child.start_kill();
    // Reap it: SIGKILL cannot be ignored, so this returns promptly.
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    Err(failure)
}

/// Kills a process group when dropped while armed.
struct GroupKillGuard(Option<u32>);

impl Drop for GroupKillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            signal_group(pid, libc::SIGKILL);
        }
    }
}

/// The first non-empty line of a command's stderr, for error messages.
pub(crate) fn first_line(stderr: &[u8]) -> Option<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| clip_owned(l.to_string(), 200))
}

/// Test helpers: process state from `/proc`.
#[cfg(test)]
pub(crate) mod testutil {
    use std::time::{Duration, Instant};

    /// The state letter of `pid` (`R`, `S`, `Z`, ...), `None` when gone.
    pub fn proc_state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name may contain spaces: the state follows its `)`.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Waits (bounded) until `pid` no longer exists. With `allow_zombie`,
    /// a zombie counts as dead: orphans belong to PID 1, which in a
    /// container may never reap them.
    pub fn wait_dead(pid: i32, allow_zombie: bool, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            match proc_state(pid) {
                None => return true,
                Some('Z') if allow_zombie => return true,
                _ => {}
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) for a file to hold a pid.
    pub fn read_pid(path: &std::path::Path, limit: Duration) -> i32 {
        let end = Instant::now() + limit;
        loop {
            if let Some(p) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return p;
            }
            assert!(Instant::now() < end, "no pid in {}", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }
}

/// The top-level keys of [`ExecdConfig`] (its flattened [`EnvConfig`]
/// included), for [`crate::PluginConfig::parse_with_keys`].
pub(crate) fn execd_keys() -> Vec<&'static str> {
    let mut keys = vec!["command", "restart_delay", "stop_timeout", "max_line_bytes"];
    keys.extend_from_slice(crate::config::struct_fields::<EnvConfig>());
    keys
}

/// The keys every execd plugin accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ExecdConfig {
    /// The program to keep running: an argv list, or one string.
    pub command: Option<CommandLine>,
    /// Seconds before restarting a child that exited; doubles while it
    /// keeps exiting (up to 5 minutes), back to this after 60 s of uptime.
    pub restart_delay: Seconds,
    /// Seconds between SIGTERM and SIGKILL when stopping the child.
    pub stop_timeout: Seconds,
    /// Longest stdout line accepted; longer ones are dropped and counted.
    pub max_line_bytes: usize,
    #[serde(flatten)]
    pub env: EnvConfig,
}

impl Default for ExecdConfig {
    fn default() -> Self {
        ExecdConfig {
            command: None,
            restart_delay: Seconds::from_secs(10),
            stop_timeout: Seconds::from_secs(5),
            max_line_bytes: 64 * 1024,
            env: EnvConfig::default(),
        }
    }
}

impl ExecdConfig {
    /// Checks the keys; errors name the key.
    pub(crate) fn settings(
        &self,
        name: &str,
        forward_stdout: bool,
    ) -> Result<ExecdSettings, (String, String)> {
        let command = self.command.as_ref().ok_or_else(|| {
            (
                "command".to_string(),
                "the program to run is required".to_string(),
            )
        })?;
        let command =
            CommandSpec::new(command, &self.env).map_err(|r| ("command".to_string(), r))?;
        if !(16..=64 << 20).contains(&self.max_line_bytes) {
            return Err((
                "max_line_bytes".into(),
                format!(
                    "must be between 16 and 67108864, got {}",
                    self.max_line_bytes
                ),
            ));
        }
        Ok(ExecdSettings {
            log: slog::Logger::root(slog::Discard, slog::o!()),
            name: name.to_string(),
            command,
            restart_delay: secs(self.restart_delay, "restart_delay", 0.01, 86_400.0)?,
            stop_timeout: secs(self.stop_timeout, "stop_timeout", 0.0, 600.0)?,
            max_line_bytes: self.max_line_bytes,
            // Bounds memory to line_capacity × max_line_bytes at worst.
            line_capacity: 1024,
            forward_stdout,
        })
    }
}
