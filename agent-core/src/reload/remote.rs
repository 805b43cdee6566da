//! Remote configuration (`update_api`): PyAgent's pull protocol, fixed.
//!
//! POST `{update_api}?time={ts}&token={md5(ts + api_key)}&node_ip={ip}`,
//! answer `{"data": {"main": {...}, "host": {...}}, "msg": ...}`. A non-empty
//! `data.main` replaces `etc/main.yaml` (and `data.host` `etc/host.yaml`).
//!
//! Unlike PyAgent: only `https://` (plain `http://` needs
//! `update_api_insecure: true`), TLS verified (a private CA with
//! `update_api_ca_file`) and every request has a timeout; the answer is
//! validated as a complete configuration (in a scratch copy of `etc/`)
//! before anything is written; `main.yaml` and `host.yaml` are staged
//! (mode 0600, fsynced) and then both renamed into place, the previous
//! versions kept as `*.bak` (0600), and the folder fsynced; the API key
//! comes from an environment variable or a key file, never from the config
//! itself, and the token is never logged.
use crate::config::{load, AgentConfig, ConfigError};
use crate::registry::Registry;
use futures::AsyncReadExt;
use isahc::config::{Configurable, RedirectPolicy};
use isahc::tls::{TlsConfig, TrustStore};
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
    #[error("refusing plain http:// for update_api without `update_api_insecure: true`")]
    Insecure,
    #[error("update_api_ca_file {0} is not a readable file")]
    CaFile(PathBuf),
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
    /// `update_api_insecure`: plain `http://` accepted (with a warning).
    pub insecure: bool,
    /// `update_api_ca_file`: the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
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
            insecure: config.main.update_api_insecure,
            ca_file: config.update_api_ca_file(),
        })
    }

    /// The warning to log before every fetch: `Some` for a plain `http://`
    /// URL accepted with `update_api_insecure`.
    pub fn fetch_warning(&self) -> Option<String> {
        (self.insecure && !crate::config::is_https(&self.url)).then(|| {
            format!(
                "update_api is plain http ({}), allowed by update_api_insecure: \
                 anyone on the path can change this agent's configuration",
                self.url_without_query()
            )
        })
    }

    fn url_without_query(&self) -> &str {
        self.url.split(['?', '#']).next().unwrap_or("")
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
    if !crate::config::is_https(&settings.url) && !settings.insecure {
        return Err(RemoteError::Insecure);
    }
    let key = settings.api_key()?;
    let ts = crate::metric::now_ns() / 1_000_000_000;
    let sep = if settings.url.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}{sep}time={ts}&token={}&node_ip={}",
        settings.url,
        token(ts, &key),
        settings.node_ip
    );
    let mut request = isahc::Request::post(url)
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        // A redirect could lead to plain http: not followed.
        .redirect_policy(RedirectPolicy::None);
    if let Some(ca) = &settings.ca_file {
        if !ca.is_file() {
            return Err(RemoteError::CaFile(ca.clone()));
        }
        request = request.tls_config(
            TlsConfig::builder()
                .trust_store(TrustStore::from_file(ca))
                .build(),
        );
    }
    let request = request.body(()).map_err(isahc::Error::from)?;
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
    // Evaluating the answer may run any config code: a panic there is a
    // rejected answer, never a dead reloader.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        apply_answer(&body, dir, registry)
    }))
    .unwrap_or_else(|p| {
        Err(RemoteError::Invalid(ConfigError::file(
            "update_api answer",
            format!(
                "evaluating it panicked: {}",
                crate::pipeline::panic_message(&*p)
            ),
        )))
    })
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
    replace_together(dir, &writes)?;
    Ok(true)
}

/// Stages every file (0600, fsynced) before any is renamed into place, so
/// `main.yaml` and `host.yaml` change together or not at all when staging
/// fails; the previous versions are kept as `*.bak` (0600); then the folder
/// is fsynced so the renames survive a crash.
pub fn replace_together(dir: &Path, writes: &[(PathBuf, String)]) -> Result<(), RemoteError> {
    let mut staged: Vec<(PathBuf, &PathBuf)> = Vec::new();
    let cleanup = |staged: &[(PathBuf, &PathBuf)]| {
        for (tmp, _) in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (path, text) in writes {
        // OpAMP offers may add `input/x.yaml` before `input/` exists.
        if let Some(parent) = path.parent() {
            if let Err(e) = std::fs::create_dir_all(parent) {
                cleanup(&staged);
                return Err(RemoteError::Write(parent.to_path_buf(), e));
            }
        }
        let tmp = sibling(path, ".", ".tmp");
        if let Err(e) = write_private(&tmp, text.as_bytes()) {
            cleanup(&staged);
            let _ = std::fs::remove_file(&tmp);
            return Err(RemoteError::Write(tmp, e));
        }
        staged.push((tmp, path));
    }
    for (_, path) in &staged {
        match std::fs::read(path) {
            Ok(old) => {
                let bak = sibling(path, "", ".bak");
                if let Err(e) = write_private(&bak, &old) {
                    cleanup(&staged);
                    return Err(RemoteError::Write(bak, e));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                cleanup(&staged);
                return Err(RemoteError::Write((*path).clone(), e));
            }
        }
    }
    for (i, (tmp, path)) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            cleanup(&staged[i..]);
            return Err(RemoteError::Write((*path).clone(), e));
        }
    }
    // Every folder that gained a name, so all the renames survive a crash.
    let mut dirs: Vec<&Path> = writes.iter().filter_map(|(p, _)| p.parent()).collect();
    dirs.push(dir);
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        sync_dir(d).map_err(|e| RemoteError::Write(d.to_path_buf(), e))?;
    }
    Ok(())
}

/// `dir/{prefix}{name}{suffix}` for `dir/name`.
fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("config");
    path.with_file_name(format!("{prefix}{name}{suffix}"))
}

/// Writes `bytes` to `path` with mode 0600 (also when it existed with a
/// wider one) and fsyncs it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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
        // The answer may hold passwords: the scratch copy is private.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&scratch)
                .map_err(|e| RemoteError::Write(scratch.clone(), e))?;
        }
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
            write_private(&to, text.as_bytes()).map_err(|e| RemoteError::Write(to.clone(), e))?;
        }
        copy_relative_ca(dir, &scratch, &scratch_etc)
            .map_err(|e| RemoteError::Write(scratch.clone(), e))?;
        // Under catch_unwind: a panic while evaluating is a rejected answer.
        super::load_and_plan(&scratch_etc, registry)?;
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

/// A relative `update_api_ca_file` names a file beside `etc/`, which a
/// scratch copy of `etc/` lacks: copies it (when it exists and the path
/// stays below the folder) so validation finds it as the real reload will.
pub(crate) fn copy_relative_ca(
    dir: &Path,
    scratch: &Path,
    scratch_etc: &Path,
) -> std::io::Result<()> {
    let Ok(tree) = load::load_tree(scratch_etc) else {
        return Ok(()); // the load that follows reports the error
    };
    let Some(ca) = tree.root.get("update_api_ca_file").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let rel = Path::new(ca.trim());
    let plain = rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if rel.as_os_str().is_empty() || !plain {
        return Ok(());
    }
    let base = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let from = base.join(rel);
    if !from.is_file() {
        return Ok(());
    }
    let to = scratch.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, to).map(|_| ())
}

/// One file through [`replace_together`]: staged 0600, the old one kept
/// as `.bak`, renamed, the folder fsynced.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    replace_together(dir, &[(path.to_path_buf(), text.to_string())]).map_err(|e| match e {
        RemoteError::Write(_, e) => e,
        other => std::io::Error::other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_with_a_relative_ca_file_validates_against_the_real_folder() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "a CA").unwrap();
        std::fs::write(etc.join("main.yaml"), "open: [demo]\n").unwrap();
        let answer = br#"{"data": {"main": {"open": ["demo"], "update_api": "https://u.example/v1",
            "update_api_ca_file": "ca.pem"}}}"#;
        let registry = Registry::with_builtins();
        // The scratch copy of etc/ gets ca.pem beside it, as the real one has.
        assert!(apply_answer(answer, &etc, &registry).expect("valid answer"));
        let written = std::fs::read_to_string(etc.join("main.yaml")).unwrap();
        assert!(written.contains("update_api_ca_file"), "{written}");
    }

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
