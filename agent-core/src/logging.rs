//! Logging: slog records formatted by slog-term, to stderr and to a
//! size-rotated log file honouring PyAgent's `log.*` keys.
//!
//! Logging must neither block nor kill the agent. A record is formatted on
//! the thread that logs it and handed to one logging thread through a
//! bounded queue ([`QUEUE_RECORDS`]); that thread writes stderr and the file
//! in order, so stderr stays readable and ordered. When the queue is full
//! (stderr not read, a stalled disk) the record is dropped and counted; a
//! write that fails (a full disk) is counted, never a panic. Both counts and
//! the last error are reported by [`stats`], in `agent status` and in the
//! `internal` input (`log_errors`, `log_dropped`). The logging thread also
//! says on stderr (at most once a minute) that log-file writes fail and
//! that records were dropped.
use crate::config::AgentConfig;
use serde::{Deserialize, Serialize};
use slog::{o, Drain, Level, Logger, OwnedKVList, Record};
use slog_term::{Decorator, FullFormat, RecordDecorator};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the logger is built from; [`LogSettings::from_config`] reads it
/// from `main.yaml`.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub level: Level,
    /// `debug: true`: DEBUG to stderr and file whatever `log.level` says.
    pub debug: bool,
    pub file: Option<PathBuf>,
    pub rotate_bytes: u64,
    /// Rotated files kept besides the live one.
    pub keep: usize,
    /// `log.colorize`: colours on stderr when it is a terminal.
    pub colorize: bool,
}

impl LogSettings {
    pub fn from_config(cfg: &AgentConfig) -> Self {
        LogSettings {
            level: parse_level(&cfg.main.log.level).unwrap_or(Level::Info),
            debug: cfg.main.debug,
            file: Some(cfg.log_file()),
            rotate_bytes: cfg.main.log.rotation.bytes(),
            keep: cfg.main.log.retention.files(),
            colorize: cfg.main.log.colorize,
        }
    }

    /// Stderr only, at INFO: before the config is read.
    pub fn stderr_only() -> Self {
        LogSettings {
            level: Level::Info,
            debug: false,
            file: None,
            rotate_bytes: 50 << 20,
            keep: 10,
            colorize: true,
        }
    }

    fn effective_level(&self) -> Level {
        if self.debug {
            Level::Debug
        } else {
            self.level
        }
    }
}

/// loguru's level names, plus slog's.
pub fn parse_level(s: &str) -> Option<Level> {
    Some(match s.trim().to_ascii_uppercase().as_str() {
        "TRACE" => Level::Trace,
        "DEBUG" => Level::Debug,
        "INFO" | "SUCCESS" => Level::Info,
        "WARN" | "WARNING" => Level::Warning,
        "ERROR" => Level::Error,
        "CRITICAL" | "CRIT" => Level::Critical,
        _ => return None,
    })
}

/// Records (one per destination) that may wait for the logging thread;
/// beyond, records are dropped and counted. An agent logs a few lines a
/// minute; this is minutes of a flood.
pub const QUEUE_RECORDS: usize = 1024;

/// Logging's own health, for `agent status` and the `internal` input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStats {
    /// Writes that failed (stderr or the log file).
    pub log_errors: u64,
    /// Records dropped because the logging thread was behind.
    pub log_dropped: u64,
    /// The last write error.
    pub last_error: Option<String>,
}

static ERRORS: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);
/// The queue of the logger built last, for [`flush`].
static CURRENT_QUEUE: Mutex<Option<SyncSender<LogMsg>>> = Mutex::new(None);

/// Logging's counters since the process started.
pub fn stats() -> LogStats {
    LogStats {
        log_errors: ERRORS.load(Relaxed),
        log_dropped: DROPPED.load(Relaxed),
        last_error: LAST_ERROR.lock().map(|e| e.clone()).unwrap_or_default(),
    }
}

fn note_error(e: String) {
    ERRORS.fetch_add(1, Relaxed);
    if let Ok(mut last) = LAST_ERROR.lock() {
        *last = Some(e);
    }
}

/// What the logging thread is asked to do.
enum LogMsg {
    Stderr(Vec<u8>),
    File(Vec<u8>),
    /// Answer once everything queued before is written.
    Flush(SyncSender<()>),
}

/// Builds the root logger and starts its logging thread. A log file that
/// cannot be opened is reported on stderr and left out; the agent still
/// runs.
pub fn build(settings: &LogSettings) -> Logger {
    let (log, queue) = build_with(settings, Box::new(io::stderr()), QUEUE_RECORDS);
    if let Ok(mut current) = CURRENT_QUEUE.lock() {
        *current = Some(queue);
    }
    log
}

/// [`build`] with another stderr destination and queue length; also gives
/// the queue, for [`flush_queue`].
fn build_with(
    settings: &LogSettings,
    stderr: Box<dyn Write + Send>,
    queue: usize,
) -> (Logger, SyncSender<LogMsg>) {
    use std::io::IsTerminal;
    let file = settings.file.as_ref().and_then(|path| {
        match RotatingFile::open(path, settings.rotate_bytes, settings.keep) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!(
                    "cannot open log file {}: {e}; logging to stderr only",
                    path.display()
                );
                None
            }
        }
    });
    let (tx, rx) = sync_channel(queue);
    let has_file = file.is_some();
    let thread = LogThread {
        stderr,
        file,
        dropped_seen: 0,
        last_drop_report: None,
        last_error_report: None,
        unreported_errors: 0,
    };
    if let Err(e) = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || thread.run(rx))
    {
        // Records then fail to queue and are counted as errors.
        eprintln!("cannot start the logging thread: {e}");
    }
    let color = settings.colorize && io::stderr().is_terminal();
    let format = |to_file: bool, color: bool| {
        FullFormat::new(QueueDecorator {
            queue: Mutex::new(tx.clone()),
            to_file,
            color,
        })
        .build()
    };
    let drain = LogDrain {
        level: settings.effective_level(),
        stderr: format(false, color),
        file: has_file.then(|| format(true, false)),
    };
    (Logger::root(drain, o!()), tx)
}

/// Waits (at most `timeout`) until the logging thread has written every
/// record logged so far; false when it did not in time (stderr stuck).
/// Call before the process exits.
pub fn flush(timeout: Duration) -> bool {
    match CURRENT_QUEUE.lock().ok().and_then(|q| q.clone()) {
        Some(queue) => flush_queue(&queue, timeout),
        None => true,
    }
}

fn flush_queue(queue: &SyncSender<LogMsg>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = sync_channel(1);
    let mut msg = LogMsg::Flush(tx);
    loop {
        match queue.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .is_ok()
}

/// The root drain: level filter, then one formatted copy per destination.
/// Never fails and never blocks (see the module docs).
struct LogDrain {
    level: Level,
    stderr: FullFormat<QueueDecorator>,
    file: Option<FullFormat<QueueDecorator>>,
}

impl Drain for LogDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        if !record.level().is_at_least(self.level) {
            return Ok(());
        }
        // Formatting errors (a value's Display failing) are counted too.
        if let Err(e) = self.stderr.log(record, values) {
            note_error(format!("formatting a log record: {e}"));
        }
        if let Some(file) = &self.file {
            if let Err(e) = file.log(record, values) {
                note_error(format!("formatting a log record: {e}"));
            }
        }
        Ok(())
    }

    fn is_enabled(&self, level: Level) -> bool {
        level.is_at_least(self.level)
    }
}

/// A slog-term decorator that renders a record into a buffer and queues it
/// for the logging thread.
struct QueueDecorator {
    /// Behind a lock only because slog wants a `RefUnwindSafe` drain; it is
    /// held for a `try_send`.
    queue: Mutex<SyncSender<LogMsg>>,
    to_file: bool,
    color: bool,
}

impl Decorator for QueueDecorator {
    fn with_record<F>(&self, record: &Record, _: &OwnedKVList, f: F) -> io::Result<()>
    where
        F: FnOnce(&mut dyn RecordDecorator) -> io::Result<()>,
    {
        let mut rd = BufferDecorator {
            buf: Vec::with_capacity(160),
            color: self.color,
            styled: false,
            level: record.level(),
        };
        f(&mut rd)?;
        rd.reset()?;
        let msg = if self.to_file {
            LogMsg::File(rd.buf)
        } else {
            LogMsg::Stderr(rd.buf)
        };
        let sent = match self.queue.lock() {
            Ok(q) => q.try_send(msg),
            Err(p) => p.into_inner().try_send(msg),
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => note_error("the logging thread is gone".into()),
        }
        Ok(())
    }
}

/// Renders one record, with ANSI colours (slog-term's scheme) when asked.
struct BufferDecorator {
    buf: Vec<u8>,
    color: bool,
    /// A colour or bold is on and must be reset.
    styled: bool,
    level: Level,
}

impl BufferDecorator {
    fn style(&mut self, sgr: &str) -> io::Result<()> {
        if self.color {
            self.buf.extend_from_slice(sgr.as_bytes());
            self.styled = true;
        }
        Ok(())
    }
}

impl Write for BufferDecorator {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl RecordDecorator for BufferDecorator {
    fn reset(&mut self) -> io::Result<()> {
        if self.styled {
            self.buf.extend_from_slice(b"\x1b[0m");
            self.styled = false;
        }
        Ok(())
    }

    fn start_level(&mut self) -> io::Result<()> {
        self.reset()?;
        let color = slog_term::TermDecorator::level_to_color(self.level);
        self.style(&format!("\x1b[{}m", 30 + color))
    }

    fn start_key(&mut self) -> io::Result<()> {
        self.reset()?;
        self.style("\x1b[1m")
    }
}

/// The logging thread's state: the destinations and what it reported.
struct LogThread {
    stderr: Box<dyn Write + Send>,
    file: Option<RotatingFile>,
    dropped_seen: u64,
    /// When drops and write failures were last reported: each kind has its
    /// own allowance, so a flood of one never hides the other.
    last_drop_report: Option<Instant>,
    last_error_report: Option<Instant>,
    /// Failed writes since the last report on stderr.
    unreported_errors: u64,
}

/// How often the logging thread may say on stderr that logging has problems.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Whether a report is due (at most one every [`REPORT_EVERY`] per `last`).
fn may_report(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    match *last {
        Some(t) if now.duration_since(t) < REPORT_EVERY => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

impl LogThread {
    fn run(mut self, rx: Receiver<LogMsg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                LogMsg::Stderr(bytes) => {
                    if let Err(e) = self.stderr.write_all(&bytes) {
                        // Nowhere left to say it: count only.
                        note_error(format!("stderr: {e}"));
                    }
                }
                LogMsg::File(bytes) => self.write_file(&bytes),
                LogMsg::Flush(done) => {
                    let _ = done.send(());
                }
            }
            self.report_drops();
        }
    }

    fn write_file(&mut self, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(bytes).and_then(|()| file.flush()) {
            let msg = format!("log file {}: {e}", file.path.display());
            note_error(msg.clone());
            self.unreported_errors += 1;
            if may_report(&mut self.last_error_report) {
                let n = std::mem::take(&mut self.unreported_errors);
                self.say(&format!(
                    "ERRO log write failed ({n} since the last report): {msg}; \
                     the agent goes on, failures are counted (log_errors in `agent status`)"
                ));
            }
        }
    }

    fn report_drops(&mut self) {
        let dropped = DROPPED.load(Relaxed);
        if dropped > self.dropped_seen && may_report(&mut self.last_drop_report) {
            let n = dropped - self.dropped_seen;
            self.dropped_seen = dropped;
            self.say(&format!(
                "WARN {n} log records dropped: logging could not keep up (log_dropped in `agent status`)"
            ));
        }
    }

    /// One line on stderr in slog-term's layout.
    fn say(&mut self, text: &str) {
        let line = format!(
            "{} {text}\n",
            chrono::Local::now().format("%b %d %H:%M:%S%.3f")
        );
        if let Err(e) = self.stderr.write_all(line.as_bytes()) {
            note_error(format!("stderr: {e}"));
        }
    }
}

/// A log file that rotates by size: `agent.log` → `agent.log.1` → … up to
/// `keep` files.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: usize,
}

impl RotatingFile {
    pub fn open(path: &Path, max: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max: max.max(1024),
            keep,
        })
    }

    fn numbered(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    std::fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.numbered(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("warning"), Some(Level::Warning));
        assert_eq!(parse_level("SUCCESS"), Some(Level::Info));
        assert_eq!(parse_level("loud"), None);
    }

    #[test]
    fn rotates_by_size_and_keeps_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/agent.log");
        let mut f = RotatingFile::open(&path, 1024, 2).unwrap();
        let line = [b'x'; 100];
        for _ in 0..50 {
            f.write_all(&line).unwrap();
        }
        f.flush().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 1024);
        assert!(dir.path().join("log/agent.log.1").exists());
        assert!(dir.path().join("log/agent.log.2").exists());
        assert!(!dir.path().join("log/agent.log.3").exists());
        assert_eq!(
            std::fs::metadata(dir.path().join("log/agent.log.1"))
                .unwrap()
                .len(),
            1000
        );
    }

    fn settings(file: Option<PathBuf>) -> LogSettings {
        LogSettings {
            file,
            ..LogSettings::stderr_only()
        }
    }

    #[test]
    fn a_full_disk_is_counted_reported_on_stderr_and_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr.txt");
        let stderr = File::create(&stderr_path).unwrap();
        let before = stats().log_errors;
        let (log, queue) = build_with(
            &settings(Some(PathBuf::from("/dev/full"))),
            Box::new(stderr),
            QUEUE_RECORDS,
        );
        for i in 0..5 {
            slog::info!(log, "record"; "n" => i);
        }
        assert!(flush_queue(&queue, Duration::from_secs(30)));
        let after = stats();
        // Other tests may log too; these five failed at least.
        assert!(after.log_errors >= before + 5, "{after:?}");
        let text = std::fs::read_to_string(&stderr_path).unwrap();
        // Every record still reached stderr, in order, without colours.
        let ns: Vec<&str> = text
            .lines()
            // Not the "records dropped" notice (drops are counted process
            // wide, and another test floods a logger at the same time).
            .filter(|l| l.contains("INFO record"))
            .map(|l| l.rsplit("n: ").next().unwrap())
            .collect();
        assert_eq!(ns, ["0", "1", "2", "3", "4"], "{text}");
        assert!(!text.contains('\x1b'));
        assert!(
            text.contains("log write failed") && text.contains("/dev/full"),
            "{text}"
        );
    }

    #[test]
    fn a_stuck_stderr_drops_and_counts_records_without_blocking() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        // The pipe is full before the logger gets it (Linux pipes hold
        // 64 KiB): the logging thread blocks on its first record, however
        // the threads are scheduled.
        use std::io::Write as _;
        writer.write_all(&[b'.'; 65536]).unwrap();
        let before = stats().log_dropped;
        let (log, queue) = build_with(&settings(None), Box::new(writer), 4);
        // Far more than the queue holds: logging goes on, records are dropped.
        for i in 0..5_000 {
            slog::info!(log, "flood"; "n" => i, "pad" => "x".repeat(100));
        }
        let dropped = stats().log_dropped - before;
        assert!(dropped >= 4_000, "{dropped}");
        assert!(!flush_queue(&queue, Duration::from_millis(200)));
        // The reader goes away: writes fail (EPIPE), are counted, and the
        // thread catches up.
        let errors = stats().log_errors;
        drop(reader);
        assert!(flush_queue(&queue, Duration::from_secs(30)));
        assert!(stats().log_errors > errors);
    }

    #[test]
    fn colours_only_when_asked() {
        let q = |color| {
            let (tx, rx) = sync_channel(4);
            let d = FullFormat::new(QueueDecorator {
                queue: Mutex::new(tx),
                to_file: false,
                color,
            })
            .build();
            let log = Logger::root(d.ignore_res(), o!());
            slog::warn!(log, "careful"; "key" => "v");
            match rx.try_recv() {
                Ok(LogMsg::Stderr(b)) => String::from_utf8(b).unwrap(),
                _ => panic!("no record queued"),
            }
        };
        let plain = q(false);
        assert!(
            plain.contains("WARN careful") && plain.contains("key: v"),
            "{plain:?}"
        );
        let coloured = q(true);
        assert!(coloured.contains("\x1b[33mWARN"), "{coloured:?}");
        assert!(coloured.contains("\x1b[1mkey"), "{coloured:?}");
        assert!(coloured.ends_with("\x1b[0m\n") || coloured.ends_with('\n'));
    }
}
