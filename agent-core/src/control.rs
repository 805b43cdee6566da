//! The local status endpoint: a Unix socket (mode 0600) that answers every
//! connection with one JSON document of pipeline and reload state, read by
//! `agent status`.
use crate::pipeline::{PipelineSupervisor, Status, StatusReport};
use crate::reload::{ReloadState, SharedReloadState};
use actix::prelude::*;
use serde::{Deserialize, Serialize};
use slog::{debug, warn, Logger};
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

/// Serves status on `path` until the returned handle is dropped or the
/// system stops.
pub fn serve(
    path: PathBuf,
    supervisor: Addr<PipelineSupervisor>,
    reload: Option<SharedReloadState>,
    log: Logger,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a crashed run would make bind fail.
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
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
    use std::io::Read;
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
