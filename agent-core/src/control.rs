//! The local status endpoint: a Unix socket (mode 0600) that answers every
//! connection with one JSON document of pipeline and reload state, read by
//! `agent status`.
//!
//! The socket is also the agent's lock: [`bind`] refuses to start a second
//! agent on a socket that answers, and replaces a stale one (a file left by
//! a crashed run that nobody listens on).
use crate::pipeline::{PipelineSupervisor, Status, StatusReport};
use crate::reload::{ReloadState, SharedReloadState};
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use slog::{debug, warn, Logger};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// What the endpoint answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlAnswer {
    pub version: String,
    pub pid: u32,
    pub status: serde_json::Value,
    pub reload: serde_json::Value,
    /// Log write errors and dropped log records.
    #[serde(default)]
    pub logging: crate::logging::LogStats,
}

/// Why the control socket could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// An agent answers on the socket: this one must not start.
    #[error("another agent (pid {pid}) is running on {}", path.display())]
    AlreadyRunning { pid: u32, path: PathBuf },
    /// Something accepts connections on the socket but does not answer
    /// like an agent (an agent still starting, or another program).
    #[error("another process is listening on {} (its answer is not an agent's: {reason})", path.display())]
    Occupied { path: PathBuf, reason: String },
    /// The path exists and is not a socket: not ours to delete.
    #[error("{} exists and is not a socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("control socket {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ControlError {
    /// Another process owns the socket: starting anyway would run two
    /// agents on one `etc/` (one spool, one log file).
    pub fn is_taken(&self) -> bool {
        matches!(
            self,
            ControlError::AlreadyRunning { .. } | ControlError::Occupied { .. }
        )
    }
}

/// Takes the control socket at `path`: if an agent answers there, returns
/// [`ControlError::AlreadyRunning`] with its pid; a socket file nobody
/// listens on is replaced. The socket is created with mode 0600 (the umask
/// is 0177 around `bind`, so it never exists with a wider mode).
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => {
            return Err(match read_answer(stream) {
                Ok(answer) => ControlError::AlreadyRunning {
                    pid: answer.pid,
                    path: path.to_path_buf(),
                },
                Err(e) => ControlError::Occupied {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                },
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            // Left by a run that ended without removing it (kill -9, crash).
            use std::os::unix::fs::FileTypeExt;
            let meta = std::fs::symlink_metadata(path).map_err(io)?;
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    }
    bind_private(path).map_err(io)
}

/// `bind` with the umask at 0177: the socket is 0600 from its creation.
/// (The umask is process-wide: a file another thread creates meanwhile
/// gets a narrower mode, never a wider one.)
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    bound
}

/// [`bind`], then [`serve_on`].
pub fn serve(
    path: PathBuf,
    supervisor: Addr<PipelineSupervisor>,
    reload: Option<SharedReloadState>,
    log: Logger,
) -> Result<(), ControlError> {
    let listener = bind(&path)?;
    serve_on(listener, supervisor, reload, log).map_err(|source| ControlError::Io { path, source })
}

/// Serves status on a socket from [`bind`] until the system stops. Must
/// be called inside the actix system.
pub fn serve_on(
    listener: UnixListener,
    supervisor: Addr<PipelineSupervisor>,
    reload: Option<SharedReloadState>,
    log: Logger,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    actix::spawn(async move {
        loop {
            let (mut stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(log, "status socket accept failed"; "error" => %e);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status: Option<StatusReport> = supervisor.send(Status).await.ok();
            let reload_state: ReloadState = reload
                .as_ref()
                .and_then(|r| r.lock().ok().map(|s| s.clone()))
                .unwrap_or_default();
            let answer = ControlAnswer {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                status: serde_json::to_value(status).unwrap_or_default(),
                reload: serde_json::to_value(reload_state).unwrap_or_default(),
                logging: crate::logging::stats(),
            };
            let body = serde_json::to_vec_pretty(&answer).unwrap_or_default();
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), stream.write_all(&body))
                    .await;
            debug!(log, "status served");
        }
    });
    Ok(())
}

/// Reads the endpoint (blocking; for the CLI).
pub fn query(path: &Path) -> std::io::Result<ControlAnswer> {
    read_answer(std::os::unix::net::UnixStream::connect(path)?)
}

fn read_answer(mut s: std::os::unix::net::UnixStream) -> std::io::Result<ControlAnswer> {
    use std::io::Read;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
