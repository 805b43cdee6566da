//! OpAMP client (open-telemetry/opamp-spec), plain-HTTP transport: the
//! agent POSTs an `AgentToServer` every `poll_sec` (±10 %) and applies what
//! the `ServerToAgent` answer carries.
//!
//! - identity: a UUIDv7 made once and kept in `run/opamp-uid`
//!   (`$STATE_DIRECTORY/run/opamp-uid` under systemd), see [`identity`];
//! - description, capabilities and health (from the same data as
//!   `agent status`), see [`health`];
//! - remote config: an `AgentConfigMap` of files relative to `etc/`,
//!   validated in a scratch copy, written atomically, reloaded through the
//!   normal reload path, see [`apply`];
//! - effective config: the files the agent runs on, secrets masked, after
//!   every apply or local reload, see [`effective`].
//!
//! WebSocket transport, packages, connection-settings offers and commands
//! are not implemented (the capabilities do not claim them).
pub mod apply;
pub mod client;
pub mod effective;
pub mod health;
pub mod identity;
pub mod proto;

pub use client::{start, OpampClient, OpampHandle};

use crate::config::{AgentConfig, ConfigError};
use std::path::PathBuf;
use std::time::Duration;

/// What this agent tells the server it can do.
pub const CAPABILITIES: u64 = proto::AgentCapabilities::ReportsStatus as u64
    | proto::AgentCapabilities::AcceptsRemoteConfig as u64
    | proto::AgentCapabilities::ReportsEffectiveConfig as u64
    | proto::AgentCapabilities::ReportsHealth as u64
    | proto::AgentCapabilities::ReportsRemoteConfig as u64
    | proto::AgentCapabilities::ReportsHeartbeat as u64;

/// Largest `ServerToAgent` accepted (after gunzip).
pub const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

/// Where the instance UID is kept, relative to the folder holding `etc/`
/// (or to `$STATE_DIRECTORY`).
pub const UID_FILE: &str = "run/opamp-uid";
/// The last remote config offered and what became of it.
pub const REMOTE_STATE_FILE: &str = "run/opamp-remote.json";

#[derive(Debug, thiserror::Error)]
pub enum OpampError {
    #[error("request failed: {0}")]
    Http(#[from] isahc::Error),
    #[error("server answered HTTP {status}")]
    Status {
        status: u16,
        /// Retry-After of a 429 or 503, in seconds.
        retry_after: Option<Duration>,
    },
    #[error("server error response: {message}")]
    Server {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("cannot read the answer: {0}")]
    Read(#[source] std::io::Error),
    #[error("answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("answer is not a ServerToAgent message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
}

impl OpampError {
    /// How long the server asked us to wait before the next request.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OpampError::Status { retry_after, .. } | OpampError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// The `opamp:` settings, resolved (paths from the folder holding etc/,
/// `headers_file` read).
#[derive(Clone)]
pub struct OpampSettings {
    pub endpoint: String,
    pub ca_file: Option<PathBuf>,
    /// Never logged: `Debug` prints only the names.
    pub headers: Vec<(String, String)>,
    pub poll: Duration,
    pub insecure: bool,
    pub retry_max: Duration,
    pub timeout: Duration,
    /// The instance UID file.
    pub uid_file: PathBuf,
    /// The remote-config state file.
    pub state_file: PathBuf,
    /// `host.name` of the description.
    pub host_name: String,
}

impl std::fmt::Debug for OpampSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OpampSettings")
            .field("endpoint", &self.endpoint)
            .field("ca_file", &self.ca_file)
            .field("headers", &names)
            .field("poll", &self.poll)
            .field("insecure", &self.insecure)
            .field("retry_max", &self.retry_max)
            .field("timeout", &self.timeout)
            .field("uid_file", &self.uid_file)
            .finish()
    }
}

impl OpampSettings {
    /// `Ok(None)` when `opamp:` is absent or its endpoint empty. Errors
    /// name the file and key (`ca_file` missing, `headers_file` unreadable
    /// or not a mapping of strings).
    pub fn from_config(config: &AgentConfig) -> Result<Option<Self>, ConfigError> {
        let Some(o) = &config.main.opamp else {
            return Ok(None);
        };
        if o.endpoint.trim().is_empty() {
            return Ok(None);
        }
        let file_of = |key: &str| {
            config
                .tree
                .provenance
                .file_of(key)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| config.dir.join("main.yaml").display().to_string())
        };
        let base = config.base_dir();
        let resolve = |f: &str| {
            let p = PathBuf::from(f);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        let ca_file = match &o.ca_file {
            Some(f) => {
                let p = resolve(f);
                if !p.is_file() {
                    return Err(ConfigError::new(
                        file_of("opamp.ca_file"),
                        "opamp.ca_file",
                        format!("{} is not a readable file", p.display()),
                    ));
                }
                Some(p)
            }
            None => None,
        };
        let mut headers: Vec<(String, String)> = o
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(f) = &o.headers_file {
            let p = resolve(f);
            let bad = |reason: String| {
                ConfigError::new(file_of("opamp.headers_file"), "opamp.headers_file", reason)
            };
            let text = std::fs::read_to_string(&p)
                .map_err(|e| bad(format!("cannot read {}: {e}", p.display())))?;
            let map: std::collections::BTreeMap<String, String> = serde_yaml_ng::from_str(&text)
                .map_err(|_| {
                    // The file holds secrets: the parser's message may quote them.
                    bad(format!(
                        "{} must be a YAML mapping of header names to string values",
                        p.display()
                    ))
                })?;
            for (k, v) in map {
                crate::config::check_header(&k, &v)
                    .map_err(|r| bad(format!("{}: header {k:?}: {r}", p.display())))?;
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
        let host_name = config
            .info
            .iter()
            .find(|(k, _)| &**k == "host_name")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        Ok(Some(OpampSettings {
            endpoint: o.endpoint.trim().to_string(),
            ca_file,
            headers,
            poll: o.poll_sec.as_duration(),
            insecure: o.insecure,
            retry_max: o.retry_max_sec.as_duration(),
            timeout: o.timeout_sec.as_duration(),
            uid_file: config.state_path(std::path::Path::new(UID_FILE)),
            state_file: config.state_path(std::path::Path::new(REMOTE_STATE_FILE)),
            host_name,
        }))
    }
}

/// A string attribute.
pub(crate) fn kv(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_string(),
        value: Some(proto::AnyValue {
            value: Some(proto::any_value::Value::StringValue(value.to_string())),
        }),
    }
}

/// OpenTelemetry's `host.arch` values for Rust's architecture names.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "x86" => "x86",
        "arm" => "arm32",
        "s390x" => "s390x",
        other => other,
    }
}

/// `service.name`, `service.version`, `service.instance.id` identify the
/// agent; `host.name`, `os.type`, `host.arch` describe where it runs.
pub fn description(host_name: &str, uid: &[u8; 16]) -> proto::AgentDescription {
    proto::AgentDescription {
        identifying_attributes: vec![
            kv("service.name", "agent"),
            kv("service.version", env!("CARGO_PKG_VERSION")),
            kv(
                "service.instance.id",
                &uuid::Uuid::from_bytes(*uid).hyphenated().to_string(),
            ),
        ],
        non_identifying_attributes: vec![
            kv("host.name", host_name),
            kv("os.type", std::env::consts::OS),
            kv("host.arch", host_arch()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_headers_file_and_never_show_values() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("main.yaml"),
            "open: [demo]\nopamp:\n  endpoint: https://o.example/v1/opamp\n  \
             headers: {Authorization: 'Bearer from-config'}\n  headers_file: h.yaml\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("h.yaml"),
            "authorization: Bearer from-file\nX-A: b\n",
        )
        .unwrap();
        let config = AgentConfig::load(&etc).unwrap();
        let s = OpampSettings::from_config(&config).unwrap().unwrap();
        // The file's header replaces the config's of the same name.
        assert_eq!(
            s.headers,
            vec![
                ("X-A".to_string(), "b".to_string()),
                ("authorization".to_string(), "Bearer from-file".to_string()),
            ]
        );
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("from-file") && !shown.contains("Bearer"),
            "{shown}"
        );
        assert_eq!(s.uid_file, dir.path().join("run/opamp-uid"));

        std::fs::write(dir.path().join("h.yaml"), "X-A: [secret-list]\n").unwrap();
        let config = AgentConfig::load(&etc).unwrap();
        let err = OpampSettings::from_config(&config).unwrap_err().to_string();
        assert!(
            err.contains("key `opamp.headers_file`") && !err.contains("secret-list"),
            "{err}"
        );
    }

    #[test]
    fn bad_header_values_are_refused_without_quoting_them() {
        let err = AgentConfig::from_yaml(
            "main.yaml",
            "open: [demo]\nopamp: {endpoint: 'https://o/v1', headers: {X-A: \"a\\nInjected: 1\"}}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("key `opamp.headers.X-A`") && !err.contains("Injected"),
            "{err}"
        );
        for (yaml, key) in [
            (
                "opamp: {endpoint: 'https://o/v1', poll_sec: 0}",
                "opamp.poll_sec",
            ),
            (
                "opamp: {endpoint: 'https://o/v1', retry_max_sec: -1}",
                "opamp.retry_max_sec",
            ),
            ("opamp: {endpoint: 'ftp://o/v1'}", "opamp.endpoint"),
            (
                "opamp: {endpoint: 'https://o/v1', ca_file: ''}",
                "opamp.ca_file",
            ),
        ] {
            let err = AgentConfig::from_yaml("main.yaml", &format!("open: [demo]\n{yaml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("key `{key}`")), "{yaml}: {err}");
        }
        let off =
            AgentConfig::from_yaml("main.yaml", "open: [demo]\nopamp: {endpoint: ''}\n").unwrap();
        assert!(OpampSettings::from_config(&off).unwrap().is_none());
    }
}
