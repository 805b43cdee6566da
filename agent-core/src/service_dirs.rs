//! The folders systemd gives a service (`StateDirectory=`, `LogsDirectory=`,
//! `RuntimeDirectory=` set `$STATE_DIRECTORY`, `$LOGS_DIRECTORY` and
//! `$RUNTIME_DIRECTORY`): when set, the agent's relative paths go there
//! instead of beside `etc/`, which a hardened unit keeps read-only.
//!
//! | path | variable | configured | becomes |
//! |---|---|---|---|
//! | `control_socket` | `$RUNTIME_DIRECTORY` | `run/agent.sock` | `$RUNTIME_DIRECTORY/agent.sock` |
//! | `control_socket` (no runtime dir) | `$STATE_DIRECTORY` | `run/agent.sock` | `$STATE_DIRECTORY/run/agent.sock` |
//! | `log.file` | `$LOGS_DIRECTORY` | `log/agent.log` | `$LOGS_DIRECTORY/agent.log` |
//! | `disk_buffer.path` | `$STATE_DIRECTORY` | `spool/es` | `$STATE_DIRECTORY/spool/es` |
//!
//! A leading `run/` (socket) or `log/` (log file) is dropped because the
//! systemd folder already is that folder. Absolute paths are used as
//! configured. Without the variables, relative paths start at the folder
//! that holds `etc/`, as before. systemd sets a colon-separated list when a
//! unit names several folders: the first is used.
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// The service folders found in the environment (absolute paths only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceDirs {
    /// `$STATE_DIRECTORY`: disk buffers, and the socket without a runtime folder.
    pub state: Option<PathBuf>,
    /// `$LOGS_DIRECTORY`: the log file.
    pub logs: Option<PathBuf>,
    /// `$RUNTIME_DIRECTORY`: the control socket.
    pub runtime: Option<PathBuf>,
}

impl ServiceDirs {
    /// From the process's environment.
    pub fn from_env() -> ServiceDirs {
        Self::from_vars(|name| std::env::var_os(name))
    }

    /// From a lookup of variables by name (tests, embedding programs).
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> ServiceDirs {
        let dir = |name: &str| get(name).and_then(|v| first_absolute(&v));
        ServiceDirs {
            state: dir("STATE_DIRECTORY"),
            logs: dir("LOGS_DIRECTORY"),
            runtime: dir("RUNTIME_DIRECTORY"),
        }
    }

    /// The control socket for the configured `control_socket`.
    pub fn control_socket(&self, configured: &str, base: &Path) -> PathBuf {
        let p = Path::new(configured);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match (&self.runtime, &self.state) {
            (Some(run), _) => run.join(strip_first(p, "run")),
            (None, Some(state)) => state.join(p),
            (None, None) => base.join(p),
        }
    }

    /// The log file for the configured `log.file`.
    pub fn log_file(&self, configured: &str, base: &Path) -> PathBuf {
        let p = Path::new(configured);
        if p.is_absolute() {
            return p.to_path_buf();
        }
        match &self.logs {
            Some(logs) => logs.join(strip_first(p, "log")),
            None => base.join(p),
        }
    }

    /// A state path (`disk_buffer.path`).
    pub fn state_path(&self, configured: &Path, base: &Path) -> PathBuf {
        if configured.is_absolute() {
            return configured.to_path_buf();
        }
        match &self.state {
            Some(state) => state.join(configured),
            None => base.join(configured),
        }
    }
}

/// The first entry of a colon-separated list, if it is an absolute path
/// (an empty or relative value is ignored: systemd only sets absolute ones).
fn first_absolute(value: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    let first = bytes.split(|&b| b == b':').next().unwrap_or(bytes);
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(first));
    path.is_absolute().then_some(path)
}

/// `p` without a leading `name/` component (`run/agent.sock` → `agent.sock`);
/// `p` itself when it does not start so or has nothing after it.
fn strip_first<'a>(p: &'a Path, name: &str) -> &'a Path {
    let mut parts = p.components();
    match parts.next() {
        Some(Component::Normal(first)) if first == name => {
            let rest = parts.as_path();
            if rest.as_os_str().is_empty() {
                p
            } else {
                rest
            }
        }
        _ => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(vars: &[(&str, &str)]) -> ServiceDirs {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServiceDirs::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        })
    }

    const BASE: &str = "/opt/agent";

    #[test]
    fn without_variables_paths_start_beside_etc() {
        let d = dirs(&[]);
        assert_eq!(d, ServiceDirs::default());
        let base = Path::new(BASE);
        assert_eq!(
            d.control_socket("run/agent.sock", base),
            Path::new("/opt/agent/run/agent.sock")
        );
        assert_eq!(
            d.log_file("log/agent.log", base),
            Path::new("/opt/agent/log/agent.log")
        );
        assert_eq!(
            d.state_path(Path::new("spool/es"), base),
            Path::new("/opt/agent/spool/es")
        );
    }

    #[test]
    fn systemd_folders_take_relative_paths() {
        let d = dirs(&[
            ("STATE_DIRECTORY", "/var/lib/agent"),
            ("LOGS_DIRECTORY", "/var/log/agent"),
            ("RUNTIME_DIRECTORY", "/run/agent"),
        ]);
        let base = Path::new(BASE);
        assert_eq!(
            d.control_socket("run/agent.sock", base),
            Path::new("/run/agent/agent.sock")
        );
        assert_eq!(
            d.control_socket("sockets/a.sock", base),
            Path::new("/run/agent/sockets/a.sock")
        );
        assert_eq!(
            d.log_file("log/agent.log", base),
            Path::new("/var/log/agent/agent.log")
        );
        assert_eq!(
            d.log_file("agent.log", base),
            Path::new("/var/log/agent/agent.log")
        );
        assert_eq!(
            d.state_path(Path::new("spool/es"), base),
            Path::new("/var/lib/agent/spool/es")
        );
    }

    #[test]
    fn absolute_paths_are_kept() {
        let d = dirs(&[
            ("STATE_DIRECTORY", "/var/lib/agent"),
            ("LOGS_DIRECTORY", "/var/log/agent"),
            ("RUNTIME_DIRECTORY", "/run/agent"),
        ]);
        let base = Path::new(BASE);
        assert_eq!(
            d.control_socket("/tmp/x.sock", base),
            Path::new("/tmp/x.sock")
        );
        assert_eq!(d.log_file("/srv/a.log", base), Path::new("/srv/a.log"));
        assert_eq!(
            d.state_path(Path::new("/srv/spool"), base),
            Path::new("/srv/spool")
        );
    }

    #[test]
    fn the_socket_goes_to_the_state_folder_without_a_runtime_folder() {
        let d = dirs(&[("STATE_DIRECTORY", "/var/lib/agent")]);
        assert_eq!(
            d.control_socket("run/agent.sock", Path::new(BASE)),
            Path::new("/var/lib/agent/run/agent.sock")
        );
        assert_eq!(
            d.log_file("log/agent.log", Path::new(BASE)),
            Path::new("/opt/agent/log/agent.log")
        );
    }

    #[test]
    fn lists_empty_and_relative_values() {
        let d = dirs(&[
            ("STATE_DIRECTORY", "/var/lib/agent:/var/lib/other"),
            ("LOGS_DIRECTORY", ""),
            ("RUNTIME_DIRECTORY", "relative/run"),
        ]);
        assert_eq!(d.state, Some(PathBuf::from("/var/lib/agent")));
        assert_eq!(d.logs, None);
        assert_eq!(d.runtime, None);
    }

    #[test]
    fn a_bare_run_or_log_name_is_not_emptied() {
        let d = dirs(&[
            ("LOGS_DIRECTORY", "/var/log/agent"),
            ("RUNTIME_DIRECTORY", "/run/agent"),
        ]);
        assert_eq!(
            d.control_socket("run", Path::new(BASE)),
            Path::new("/run/agent/run")
        );
        assert_eq!(
            d.log_file("log", Path::new(BASE)),
            Path::new("/var/log/agent/log")
        );
    }
}
