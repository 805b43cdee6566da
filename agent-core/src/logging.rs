//! Logging: slog with slog-term to stderr, and a size-rotated log file
//! honouring PyAgent's `log.*` keys.
//!
//! Both drains are synchronous (a `Mutex` around the terminal, a
//! `PlainSyncDecorator` around the file): an agent logs a few lines a
//! minute, and slog-async's default strategy drops records under a flood,
//! which is exactly when they matter.
use crate::config::AgentConfig;
use slog::{o, Drain, Level, Logger};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
}

impl LogSettings {
    pub fn from_config(cfg: &AgentConfig) -> Self {
        LogSettings {
            level: parse_level(&cfg.main.log.level).unwrap_or(Level::Info),
            debug: cfg.main.debug,
            file: Some(cfg.log_file()),
            rotate_bytes: cfg.main.log.rotation.bytes(),
            keep: cfg.main.log.retention.files(),
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

/// Builds the root logger. A log file that cannot be opened is reported on
/// stderr and left out; the agent still runs.
pub fn build(settings: &LogSettings) -> Logger {
    let level = settings.effective_level();
    let decorator = slog_term::TermDecorator::new().stderr().build();
    let term = slog_term::FullFormat::new(decorator).build();
    let term = std::sync::Mutex::new(term).filter_level(level).fuse();
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
    match file {
        Some(f) => {
            let dec = slog_term::PlainSyncDecorator::new(f);
            let fdrain = slog_term::FullFormat::new(dec)
                .build()
                .filter_level(level)
                .fuse();
            Logger::root(slog::Duplicate::new(term, fdrain).fuse(), o!())
        }
        None => Logger::root(term, o!()),
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
}
