//! Remote configuration (`update_api`): PyAgent's pull protocol, fixed.
//!
//! POST `{update_api}?time={ts}&token={md5(ts + api_key)}&node_ip={ip}`,
//! answer `{"data": {"main": {...}, "host": {...}}, "msg": ...}`. A non-empty
//! `data.main` replaces `etc/main.yaml` (and `data.host` `etc/host.yaml`).
//!
//! Unlike PyAgent: TLS is verified and every request has a timeout; the
//! answer is validated as a complete configuration (in a scratch copy of
//! `etc/`) before anything is written; files are written atomically (temp
//! file + rename) with the previous version kept as `*.bak`; the API key
//! comes from an environment variable or a key file, never from the config
//! itself, and the token is never logged.
use crate::config::{load, AgentConfig, ConfigError, Plan};
use crate::registry::Registry;
use futures::AsyncReadExt;
use isahc::config::Configurable;
use isahc::AsyncReadResponseExt;
use md5::{Digest, Md5};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest answer accepted.
pub const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("no API key: set the environment variable {0} or `update_api_key_file`")]
    NoKey(String),
    #[error("cannot read the API key file {0}: {1}")]
    KeyFile(PathBuf, std::io::Error),
    #[error("request failed: {0}")]
    Http(#[from] isahc::Error),
    #[error("server answered HTTP {0}")]
    Status(u16),
    #[error("cannot read the answer: {0}")]
    Read(#[from] std::io::Error),
    #[error("answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("answer is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("answer's `data.{0}` must be an object")]
    Shape(&'static str),
    #[error("remote configuration is invalid, nothing written: {0}")]
    Invalid(#[from] ConfigError),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Where and how to pull.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub url: String,
    /// Environment variable holding the API key.
    pub key_env: String,
    pub key_file: Option<PathBuf>,
    pub node_ip: String,
    pub timeout: Duration,
}

impl RemoteSettings {
    /// `None` when `update_api` is empty (remote management off).
    pub fn from_config(config: &AgentConfig) -> Option<Self> {
        let url = config
            .main
            .update_api
            .clone()
            .filter(|u| !u.trim().is_empty())?;
        let node_ip = std::env::var("AGENT_NODE_IP").ok().unwrap_or_else(|| {
            config
                .info
                .iter()
                .find(|(k, _)| k == "node_ip")
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        });
        Some(RemoteSettings {
            url,
            key_env: config.main.update_api_key_env.clone(),
            key_file: config.main.update_api_key_file.as_ref().map(|f| {
                let p = PathBuf::from(f);
                if p.is_absolute() {
                    p
                } else {
                    config.base_dir().join(p)
                }
            }),
            node_ip,
            timeout: config.main.update_api_timeout.as_duration(),
        })
    }

    fn api_key(&self) -> Result<String, RemoteError> {
        if let Some(f) = &self.key_file {
            return std::fs::read_to_string(f)
                .map(|k| k.trim().to_string())
                .map_err(|e| RemoteError::KeyFile(f.clone(), e));
        }
        std::env::var(&self.key_env).map_err(|_| RemoteError::NoKey(self.key_env.clone()))
    }
}

/// PyAgent's token: hex md5 of the timestamp followed by the key.
pub fn token(ts: i64, api_key: &str) -> String {
    let mut h = Md5::new();
    h.update(ts.to_string().as_bytes());
    h.update(api_key.as_bytes());
    format!("{:x}", h.finalize())
}

/// Pulls, validates and writes. `Ok(true)` when files were replaced.
pub async fn pull_and_write(
    settings: &RemoteSettings,
    dir: &Path,
    registry: &Registry,
) -> Result<bool, RemoteError> {
    let key = settings.api_key()?;
    let ts = crate::metric::now_ns() / 1_000_000_000;
    let sep = if settings.url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{sep}time={ts}&token={}&node_ip={}",
        settings.url,
        token(ts, &key),
        settings.node_ip
    );
    let request = isahc::Request::post(url)
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .body(())
        .map_err(isahc::Error::from)?;
    let mut response = isahc::send_async(request).await?;
    if !response.status().is_success() {
        return Err(RemoteError::Status(response.status().as_u16()));
    }
    let mut body = Vec::new();
    response
        .body_mut()
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut body)
        .await?;
    let _ = response.consume().await;
    if body.len() as u64 > MAX_RESPONSE_BYTES {
        return Err(RemoteError::TooLarge);
    }
    apply_answer(&body, dir, registry)
}

/// Validates an answer and writes it. `Ok(false)`: nothing to change.
pub fn apply_answer(body: &[u8], dir: &Path, registry: &Registry) -> Result<bool, RemoteError> {
    let answer: serde_json::Value = serde_json::from_slice(body)?;
    let data = answer
        .get("data")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let main = match data.get("main") {
        None | Some(serde_json::Value::Null) => return Ok(false),
        Some(serde_json::Value::Object(m)) if m.is_empty() => return Ok(false),
        Some(serde_json::Value::Object(m)) => m.clone(),
        Some(_) => return Err(RemoteError::Shape("main")),
    };
    let host = match data.get("host") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Object(m)) if m.is_empty() => None,
        Some(serde_json::Value::Object(m)) => Some(m.clone()),
        Some(_) => return Err(RemoteError::Shape("host")),
    };
    let header = "# Written by the agent from update_api; the previous version is in *.bak.\n";
    let to_yaml = |m: serde_json::Map<String, serde_json::Value>| -> Result<String, RemoteError> {
        let v = serde_json::Value::Object(m);
        let text = serde_yaml_ng::to_string(&v).map_err(|e| {
            RemoteError::Invalid(ConfigError::file("update_api answer", e.to_string()))
        })?;
        Ok(format!("{header}{text}"))
    };
    let mut writes = vec![(dir.join("main.yaml"), to_yaml(main)?)];
    if let Some(h) = host {
        writes.push((dir.join("host.yaml"), to_yaml(h)?));
    }
    let unchanged = writes
        .iter()
        .all(|(p, text)| std::fs::read_to_string(p).is_ok_and(|old| &old == text));
    if unchanged {
        return Ok(false);
    }
    validate_in_scratch(dir, &writes, registry)?;
    for (path, text) in &writes {
        write_atomically(path, text).map_err(|e| RemoteError::Write(path.clone(), e))?;
    }
    Ok(true)
}

/// Copies the config files into a temp folder, overlays the new ones and
/// loads and plans the result, exactly as a reload would.
fn validate_in_scratch(
    dir: &Path,
    writes: &[(PathBuf, String)],
    registry: &Registry,
) -> Result<(), RemoteError> {
    let scratch = std::env::temp_dir().join(format!(
        "agent-remote-check-{}-{}",
        std::process::id(),
        crate::metric::now_ns()
    ));
    let scratch_etc = scratch.join("etc");
    let result = (|| {
        for f in load::config_files(dir) {
            let Ok(rel) = f.strip_prefix(dir) else {
                continue;
            };
            if !f.is_file() {
                continue;
            }
            let to = scratch_etc.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| RemoteError::Write(to.clone(), e))?;
            }
            std::fs::copy(&f, &to).map_err(|e| RemoteError::Write(to.clone(), e))?;
        }
        for (path, text) in writes {
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let to = scratch_etc.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| RemoteError::Write(to.clone(), e))?;
            }
            std::fs::write(&to, text).map_err(|e| RemoteError::Write(to.clone(), e))?;
        }
        let config = AgentConfig::load(&scratch_etc)?;
        Plan::new(&config, registry)?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    // Errors name the scratch copy; point them back at the real folder.
    result.map_err(|e| match e {
        RemoteError::Invalid(mut c) => {
            c.file = c.file.replace(
                &scratch_etc.display().to_string(),
                &dir.display().to_string(),
            );
            RemoteError::Invalid(c)
        }
        other => other,
    })
}

/// Temp file in the same folder, fsync, keep the old file as `.bak`, rename.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    if path.exists() {
        std::fs::copy(path, dir.join(format!("{name}.bak")))?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_md5_of_time_and_key() {
        // `printf '1636361935secret' | md5sum`
        assert_eq!(
            token(1636361935, "secret"),
            "20dbe06d159fed7e61aa2328e47a3b05"
        );
        assert_ne!(token(1, "k"), token(2, "k"));
    }
}
