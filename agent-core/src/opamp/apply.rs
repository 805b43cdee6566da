//! Remote configuration offers: check every file name, validate the whole
//! result in a scratch copy of `etc/`, then write atomically.
//!
//! The keys of the `AgentConfigMap` are paths relative to `etc/`:
//! `main.yaml`, `host.yaml` or `<section>/<name>.yaml` (`input/`,
//! `processor/`, `aggs/`, `output/`). Anything else (absolute, `..`, not
//! `.yaml`, under `main/`, another folder) fails the whole offer. `etc/main/`
//! is the local layer remote config never writes, and an offer whose result
//! would change the merged `opamp:` settings fails too: a remote config
//! cannot cut the agent off its server.
//!
//! Files a previous offer wrote and the new one leaves out are removed (the
//! offer is the whole remote part of the configuration), except
//! `main.yaml`, which is required; files never written by an offer are
//! left alone.
use super::proto;
use crate::config::{load, ConfigError};
use crate::registry::Registry;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The last offer and its outcome, kept in `run/opamp-remote.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteState {
    /// Hex of the offer's `config_hash`.
    pub hash: String,
    /// `applied` or `failed`.
    pub status: String,
    #[serde(default)]
    pub error: String,
    /// Files (relative to etc/) the applied offer wrote.
    #[serde(default)]
    pub files: Vec<String>,
}

impl RemoteState {
    pub fn load(path: &Path) -> RemoteState {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        crate::reload::remote::write_private(&tmp, &body)?;
        std::fs::rename(&tmp, path)?;
        match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => crate::reload::remote::sync_dir(d),
            _ => Ok(()),
        }
    }

    /// The status to report for it.
    pub fn to_proto(&self) -> Option<proto::RemoteConfigStatus> {
        if self.hash.is_empty() {
            return None;
        }
        let status = match self.status.as_str() {
            "applied" => proto::RemoteConfigStatuses::Applied,
            "failed" => proto::RemoteConfigStatuses::Failed,
            _ => proto::RemoteConfigStatuses::Unset,
        };
        Some(proto::RemoteConfigStatus {
            last_remote_config_hash: from_hex(&self.hash),
            status: status as i32,
            error_message: self.error.clone(),
        })
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Why an offer was refused: the text reported as `error_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("remote config file {key:?} refused: {reason}; nothing written")]
    Key { key: String, reason: String },
    #[error("remote config is invalid, nothing written: {0}")]
    Invalid(ConfigError),
    #[error("remote config changes the `opamp:` settings ({0}); they come from etc/main/main.yaml (or another local file), which remote config must not change; nothing written")]
    TouchesOpamp(String),
    #[error("remote config is empty; nothing written")]
    Empty,
    #[error("cannot write the remote config: {0}")]
    Write(String),
}

/// Checks one `AgentConfigMap` key and returns it as a relative path.
pub fn check_key(key: &str) -> Result<PathBuf, String> {
    if key.is_empty() {
        return Err("empty file name".into());
    }
    if key.chars().any(|c| c.is_control()) || key.contains('\\') {
        return Err("control characters and backslashes are not allowed".into());
    }
    let path = Path::new(key);
    if path.is_absolute() {
        return Err("absolute paths are not allowed: keys are relative to etc/".into());
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => return Err("`..` is not allowed".into()),
            _ => return Err("must be a plain relative path such as input/ping.yaml".into()),
        }
    }
    if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
        return Err("only .yaml files are accepted".into());
    }
    let ok = match parts.as_slice() {
        [f] => f == "main.yaml" || f == "host.yaml",
        [section, f] => load::SECTIONS.contains(&section.as_str()) && f.len() > ".yaml".len(),
        _ => false,
    };
    if !ok {
        if parts.first().is_some_and(|p| p == "main") {
            return Err(
                "etc/main/ is the local layer (it holds the opamp: settings); remote config does not write it"
                    .into(),
            );
        }
        return Err(
            "must be main.yaml, host.yaml or <input|processor|aggs|output>/<name>.yaml".into(),
        );
    }
    Ok(path.to_path_buf())
}

/// What applying an offer changes.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub writes: Vec<(PathBuf, String)>,
    pub removals: Vec<PathBuf>,
    /// The offer's files, relative to etc/, sorted.
    pub files: Vec<String>,
}

/// Checks the keys and validates the offer as a complete configuration in
/// a scratch copy of `dir`; nothing in `dir` is touched.
pub fn validate(
    dir: &Path,
    registry: &Registry,
    offer: &proto::AgentConfigMap,
    previous_files: &[String],
) -> Result<Change, OfferError> {
    if offer.config_map.is_empty() {
        return Err(OfferError::Empty);
    }
    let mut change = Change::default();
    let mut keys: Vec<&String> = offer.config_map.keys().collect();
    keys.sort();
    for key in keys {
        let rel = check_key(key).map_err(|reason| OfferError::Key {
            key: key.clone(),
            reason,
        })?;
        let body = &offer.config_map[key].body;
        if body.len() as u64 > load::MAX_FILE_BYTES {
            return Err(OfferError::Key {
                key: key.clone(),
                reason: format!("larger than {} bytes", load::MAX_FILE_BYTES),
            });
        }
        let text = String::from_utf8(body.clone()).map_err(|_| OfferError::Key {
            key: key.clone(),
            reason: "the body is not UTF-8 text".into(),
        })?;
        change.writes.push((dir.join(&rel), text));
        change.files.push(key.clone());
    }
    for old in previous_files {
        // main.yaml is required: an offer without it keeps the last one.
        if !change.files.contains(old) && old != "main.yaml" && check_key(old).is_ok() {
            change.removals.push(dir.join(old));
        }
    }
    // A local configuration that does not load cannot be compared: the
    // agent runs on the last one that did, and the offer may be its fix.
    let current_opamp = crate::config::AgentConfig::load(dir)
        .ok()
        .map(|c| c.main.opamp);
    let scratch = std::env::temp_dir().join(format!(
        "agent-opamp-check-{}-{}",
        std::process::id(),
        crate::metric::now_ns()
    ));
    let scratch_etc = scratch.join("etc");
    let result = in_scratch(
        dir,
        &scratch,
        &scratch_etc,
        &change,
        registry,
        current_opamp,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    // Errors name the scratch copy; point them back at the real folder.
    let base = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let real = |s: &str| {
        s.replace(
            &scratch_etc.display().to_string(),
            &dir.display().to_string(),
        )
        .replace(&scratch.display().to_string(), &base.display().to_string())
    };
    result.map_err(|e| match e {
        OfferError::Invalid(mut c) => {
            c.file = real(&c.file);
            c.reason = real(&c.reason);
            OfferError::Invalid(c)
        }
        OfferError::TouchesOpamp(f) => OfferError::TouchesOpamp(real(&f)),
        other => other,
    })?;
    Ok(change)
}

fn in_scratch(
    dir: &Path,
    scratch: &Path,
    scratch_etc: &Path,
    change: &Change,
    registry: &Registry,
    current_opamp: Option<Option<crate::config::OpampConfig>>,
) -> Result<(), OfferError> {
    let w = |p: &Path, e: std::io::Error| OfferError::Write(format!("{}: {e}", p.display()));
    {
        // The offer may hold passwords: the scratch copy is private.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(scratch)
            .map_err(|e| w(scratch, e))?;
    }
    let place = |rel: &Path, bytes: &[u8]| -> Result<(), OfferError> {
        let to = scratch_etc.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| w(parent, e))?;
        }
        crate::reload::remote::write_private(&to, bytes).map_err(|e| w(&to, e))
    };
    for f in load::config_files(dir) {
        let Ok(rel) = f.strip_prefix(dir) else {
            continue;
        };
        if !f.is_file() || change.removals.contains(&f) {
            continue;
        }
        let bytes = std::fs::read(&f).map_err(|e| w(&f, e))?;
        place(rel, &bytes)?;
    }
    for (path, text) in &change.writes {
        let Ok(rel) = path.strip_prefix(dir) else {
            continue;
        };
        place(rel, text.as_bytes())?;
    }
    crate::reload::remote::copy_relative_ca(dir, scratch, scratch_etc)
        .map_err(|e| w(scratch, e))?;
    let (config, _plan) =
        crate::reload::load_and_plan(scratch_etc, registry).map_err(OfferError::Invalid)?;
    let changed = current_opamp.is_some_and(|current| {
        !crate::config::OpampConfig::same_settings(current.as_ref(), config.main.opamp.as_ref())
    });
    if changed {
        let file = config
            .tree
            .provenance
            .file_of("opamp")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "it removes them".into());
        return Err(OfferError::TouchesOpamp(file));
    }
    Ok(())
}

/// Writes a validated change: every file staged (0600, fsynced), renamed
/// into place, folders fsynced; then the files the previous offer wrote and
/// this one does not are removed.
pub fn write(dir: &Path, change: &Change) -> Result<(), OfferError> {
    crate::reload::remote::replace_together(dir, &change.writes)
        .map_err(|e| OfferError::Write(e.to_string()))?;
    for p in &change.removals {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OfferError::Write(format!("{}: {e}", p.display()))),
        }
        if let Some(parent) = p.parent() {
            crate::reload::remote::sync_dir(parent)
                .map_err(|e| OfferError::Write(format!("{}: {e}", parent.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for ok in [
            "main.yaml",
            "host.yaml",
            "input/ping.yaml",
            "output/es.yaml",
            "aggs/cpu.yaml",
        ] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("../x.yaml", "`..`"),
            ("input/../../x.yaml", "`..`"),
            ("/etc/passwd.yaml", "absolute"),
            ("input/ping.yml", ".yaml"),
            ("input/ping", ".yaml"),
            ("main/main.yaml", "local layer"),
            ("other/x.yaml", "must be"),
            ("input/a/b.yaml", "must be"),
            ("./main.yaml", "plain relative"),
            ("", "empty"),
        ] {
            let err = check_key(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_relative_update_api_ca_file_is_found_in_the_scratch_copy() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "not checked here").unwrap();
        let main = "open: [demo]\nupdate_api: https://u.example/v1\nupdate_api_ca_file: ca.pem\n";
        std::fs::write(etc.join("main.yaml"), main).unwrap();
        let offer = proto::AgentConfigMap {
            config_map: [(
                "main.yaml".to_string(),
                proto::AgentConfigFile {
                    body: format!("{main}interval: 5\n").into_bytes(),
                    content_type: String::new(),
                },
            )]
            .into_iter()
            .collect(),
        };
        let registry = Registry::with_builtins();
        let change = validate(&etc, &registry, &offer, &[]).expect("valid offer");
        assert_eq!(change.files, vec!["main.yaml".to_string()]);
        // Without the CA file the same offer names it.
        std::fs::remove_file(dir.path().join("ca.pem")).unwrap();
        let err = validate(&etc, &registry, &offer, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("update_api_ca_file"), "{err}");
        assert!(
            !err.contains("agent-opamp-check"),
            "names the real folder: {err}"
        );
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex(&hex(&[0, 1, 0xab, 0xff])), vec![0, 1, 0xab, 0xff]);
    }
}
