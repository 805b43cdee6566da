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
    /// The file-descriptor budget of the probes and its use.
    #[serde(default)]
    pub fd_budget: Option<crate::fd_budget::FdBudgetStatus>,
    /// The probes' shared DNS cache.
    #[serde(default)]
    pub dns: Option<crate::plugins::common::resolver::ResolverStats>,
    /// How ping reaches each address family (`{"ipv4": "raw", "ipv6":
    /// "datagram", "detail": ...}`), once a ping input has gathered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<serde_json::Value>,
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
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    // Two agents starting together must not both find the path free (or
    // both find it stale, each deleting the other's new socket): the check,
    // the removal and the bind run under a lock on the socket's folder,
    // held only for these few calls.
    let _lock = DirLock::take(dir).map_err(io)?;
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => return Err(taken(path, read_answer(stream))),
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
    match bind_private(path) {
        Ok(listener) => Ok(listener),
        // Someone bound it between the check and here without the lock
        // (an older agent): it is theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ControlError::Occupied {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(e) => Err(io(e)),
    }
}

/// The error for a socket that accepted a connection: an agent's answer
/// names its pid.
fn taken(path: &Path, answer: std::io::Result<ControlAnswer>) -> ControlError {
    match answer {
        Ok(answer) => ControlError::AlreadyRunning {
            pid: answer.pid,
            path: path.to_path_buf(),
        },
        Err(e) => ControlError::Occupied {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    }
}

/// An exclusive `flock` on a folder, released when dropped.
struct DirLock(std::fs::File);

impl DirLock {
    fn take(dir: &Path) -> std::io::Result<DirLock> {
        use std::os::unix::io::AsRawFd;
        let file = std::fs::File::open(dir)?;
        loop {
            // SAFETY: flock on a descriptor this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(DirLock(file));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: unlocking the descriptor this value owns (closing it
        // would release the lock too).
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// `bind` with the umask at 0177: the socket is 0600 from its creation.
/// (The umask is process-wide: a file another thread creates meanwhile
/// gets a narrower mode, never a wider one.)
/// Two binds at once in one process (embedding programs, tests) would
/// otherwise restore each other's 0177 as "the previous mask".
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = UMASK.lock().unwrap_or_else(|p| p.into_inner());
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
                fd_budget: Some(crate::fd_budget::snapshot()),
                dns: Some(crate::plugins::common::resolver::stats()),
                ping: crate::plugins::inputs::ping::method::status(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    /// A listener on `path` that answers every connection with `body`, like
    /// a running agent (or, with another body, another program).
    fn answering(path: &Path, body: Vec<u8>) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).expect("test listener");
        std::thread::spawn(move || {
            // One answer is all a test needs; then the listener closes.
            if let Some(mut stream) = listener.incoming().flatten().next() {
                let _ = stream.write_all(&body);
            }
        })
    }

    fn agent_answer(pid: u32) -> Vec<u8> {
        serde_json::to_vec(&ControlAnswer {
            version: "test".into(),
            pid,
            status: serde_json::Value::Null,
            reload: serde_json::Value::Null,
            logging: Default::default(),
            fd_budget: None,
            dns: None,
            ping: None,
        })
        .expect("json")
    }

    #[test]
    fn a_live_agent_is_refused_with_its_pid_and_keeps_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let server = answering(&path, agent_answer(4242));
        let err = bind(&path).expect_err("the socket is taken");
        assert!(err.is_taken(), "{err:?}");
        assert!(
            matches!(err, ControlError::AlreadyRunning { pid: 4242, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("another agent (pid 4242) is running on {}", path.display())
        );
        server.join().unwrap();
        let meta = std::fs::symlink_metadata(&path).expect("socket left in place");
        assert!(meta.file_type().is_socket());
    }

    #[test]
    fn a_listener_that_is_not_an_agent_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let server = answering(&path, b"hello".to_vec());
        let err = bind(&path).expect_err("the socket is taken");
        assert!(matches!(err, ControlError::Occupied { .. }), "{err:?}");
        assert!(err.is_taken());
        server.join().unwrap();
        assert!(path.exists());
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A run that ended without removing its socket: the file stays.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert_eq!(
            std::os::unix::net::UnixStream::connect(&path)
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::ConnectionRefused
        );
        let listener = bind(&path).expect("stale socket replaced");
        // The new socket is live: a connection reaches this listener.
        let _client = std::os::unix::net::UnixStream::connect(&path).expect("connects");
        listener.set_nonblocking(true).unwrap();
        assert!(
            listener.accept().is_ok(),
            "connection queued on the new socket"
        );
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        std::fs::write(&path, "not a socket").unwrap();
        let err = bind(&path).expect_err("a regular file is not replaced");
        assert!(matches!(err, ControlError::NotASocket { .. }), "{err:?}");
        assert!(!err.is_taken());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }

    #[test]
    fn the_socket_is_0600_and_the_umask_is_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/dir/agent.sock");
        let _serial = UMASK_TEST.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: swapping the process's file mode mask, restored below.
        let before = unsafe { libc::umask(0o002) };
        let bound = bind(&path);
        // SAFETY: reading the mask back means setting it; restored at once.
        let after = unsafe { libc::umask(before) };
        let _listener = bound.expect("binds, creating the folders");
        assert_eq!(after, 0o002, "umask restored after bind");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "socket mode {mode:o}");
    }

    /// Only the umask test changes the mask to something readable.
    static UMASK_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn agents_starting_together_get_one_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        drop(UnixListener::bind(&path).unwrap()); // stale, to be replaced once
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let tries: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // The winner serves like an agent, answering the others.
                    bind(&path).map(|listener| {
                        std::thread::spawn(move || {
                            for mut s in listener.incoming().take(3).flatten() {
                                let _ = s.write_all(&agent_answer(7));
                            }
                        })
                    })
                })
            })
            .collect();
        let results: Vec<_> = tries.into_iter().map(|t| t.join().unwrap()).collect();
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(r, ControlError::AlreadyRunning { pid: 7, .. }),
                "{r:?}"
            );
        }
    }
}
