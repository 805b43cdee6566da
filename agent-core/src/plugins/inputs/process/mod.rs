//! `process`: one metric per running process (or per process whose name is
//! in `target`), like PyAgent's psutil-based process input.
//!
//! One `System` per input, created at the first gather, refreshing only the
//! process list with CPU time, memory, user id and executable path (no
//! threads as processes, no environment/cwd/cmdline). The first gather
//! primes: two refreshes `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` apart, so
//! the first `cpu_percent` is real. With a `target` list only the pids whose
//! `comm` can match are refreshed. `num_threads` is read from
//! `/proc/<pid>/stat` for the reported processes only (sysinfo lacks it).
pub mod schema;
use crate::format::human::py_round as round_to;
use crate::metric::{Metric, Str};
use crate::plugin::{Accumulator, Input, PluginError, PluginResult};
use crate::plugins::common::serde_helpers::string_or_list;
use crate::registry::Registry;
use serde::Deserialize;
use std::collections::HashMap;
use sysinfo::{
    MemoryRefreshKind, Pid, Process, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind,
};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProcessConfig {
    /// Process names to report; empty reports every process.
    #[serde(default, deserialize_with = "string_or_list")]
    pub target: Vec<String>,
}

/// The process name psutil would give: Linux truncates `comm` to 15 bytes,
/// so a 15-byte name that starts the executable's file name is replaced by
/// that file name.
pub fn full_name(comm: &str, exe: Option<&std::path::Path>) -> String {
    if comm.len() == 15 {
        if let Some(base) = exe.and_then(|e| e.file_name()).and_then(|b| b.to_str()) {
            if base.starts_with(comm) {
                return base.to_string();
            }
        }
    }
    comm.to_string()
}

/// Parses `/etc/passwd` text into uid -> user name.
pub fn parse_passwd(text: &str) -> HashMap<u32, Str> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, Str::new(name)))
        })
        .collect()
}

/// True when a process whose `comm` is `comm` may be named `target`: Linux
/// cuts `comm` to 15 bytes, and [`full_name`] restores the rest from the
/// executable, so a 15-byte `comm` matches every target it starts.
pub fn comm_may_be(comm: &str, target: &str) -> bool {
    comm == target || (comm.len() == 15 && target.starts_with(comm))
}

/// Pids (sorted) of the processes whose `/proc/<pid>/comm` may be one of
/// `targets`.
#[cfg(target_os = "linux")]
fn candidate_pids(targets: &[String]) -> Vec<Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut path = String::with_capacity(24);
    let mut buf = Vec::with_capacity(32);
    let mut pids: Vec<Pid> = dir
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            let pid: u32 = name.to_str()?.parse().ok()?;
            path.clear();
            use std::fmt::Write as _;
            let _ = write!(path, "/proc/{pid}/comm");
            buf.clear();
            use std::io::Read as _;
            std::fs::File::open(&path)
                .ok()?
                .read_to_end(&mut buf)
                .ok()?;
            let comm = std::str::from_utf8(&buf).ok()?.trim_end_matches('\n');
            targets
                .iter()
                .any(|t| comm_may_be(comm, t))
                .then_some(Pid::from_u32(pid))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Field 20 (`num_threads`) of `/proc/<pid>/stat`, after the `(comm)`.
pub fn threads_from_stat(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields after comm start at field 3 (state); num_threads is field 20.
    after.split_ascii_whitespace().nth(20 - 3)?.parse().ok()
}

pub struct ProcessInput {
    config: ProcessConfig,
    sys: Option<System>,
    users: HashMap<u32, Str>,
    total_memory: u64,
    /// Pids read in full by the last refresh when `target` is set (sorted).
    candidates: Vec<Pid>,
}

impl ProcessInput {
    pub fn new(config: ProcessConfig) -> Self {
        ProcessInput {
            config,
            sys: None,
            users: HashMap::new(),
            total_memory: 0,
            candidates: Vec::new(),
        }
    }

    fn kind() -> ProcessRefreshKind {
        ProcessRefreshKind::nothing()
            .with_cpu()
            .with_memory()
            .with_user(UpdateKind::OnlyIfNotSet)
            .with_exe(UpdateKind::OnlyIfNotSet)
            .without_tasks()
    }

    fn refresh(&mut self) {
        let Some(sys) = self.sys.as_mut() else {
            return;
        };
        #[cfg(target_os = "linux")]
        if !self.config.target.is_empty() {
            // With a target list only the processes whose `comm` can be a
            // target are read in full: one small read per process instead
            // of sysinfo's stat, statm, status and exe for every one.
            let pids = candidate_pids(&self.config.target);
            sys.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, Self::kind());
            // Forget processes that are no longer candidates (gone or
            // renamed): refreshing them with remove_dead drops the dead ones
            // at the cost of one failed open each.
            let stale: Vec<Pid> = sys
                .processes()
                .keys()
                .filter(|p| pids.binary_search(p).is_err())
                .copied()
                .collect();
            if !stale.is_empty() {
                sys.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&stale),
                    true,
                    ProcessRefreshKind::nothing(),
                );
            }
            self.candidates = pids;
            return;
        }
        sys.refresh_processes_specifics(ProcessesToUpdate::All, true, Self::kind());
    }

    async fn prime(&mut self) -> PluginResult {
        let mut sys = System::new().map_err(|e| PluginError::msg(format!("sysinfo: {e:?}")))?;
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        self.total_memory = sys.total_memory();
        self.sys = Some(sys);
        self.refresh();
        tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
        Ok(())
    }

    /// The user name of `uid`, re-reading `/etc/passwd` once per gather when
    /// an unknown uid shows up; the uid itself when it has no name.
    fn username(&mut self, uid: u32, reloaded: &mut bool) -> Str {
        if let Some(n) = self.users.get(&uid) {
            return n.clone();
        }
        if !*reloaded {
            *reloaded = true;
            #[cfg(unix)]
            if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
                self.users = parse_passwd(&text);
            }
            if let Some(n) = self.users.get(&uid) {
                return n.clone();
            }
        }
        Str::from(uid.to_string())
    }

    fn metric_for(&self, acc: &Accumulator, p: &Process, name: &str, username: Str) -> Metric {
        let mut m = acc.metric();
        let pid = p.pid().as_u32();
        m.tags
            .push((Str::new_static("pid"), Str::from(pid.to_string())));
        m.tags.push((Str::new_static("name"), Str::from(name)));
        m.fields.reserve(8);
        m.push_field("ppid", p.parent().map_or(0, |pp| pp.as_u32()));
        m.push_field("username", username);
        m.push_field(
            "exe",
            p.exe()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        #[cfg(target_os = "linux")]
        {
            let threads = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| threads_from_stat(&s))
                .unwrap_or(0);
            m.push_field("num_threads", threads);
        }
        m.push_field("cpu_percent", round_to(p.cpu_usage() as f64, 1));
        let mem_pct = if self.total_memory > 0 {
            round_to(p.memory() as f64 / self.total_memory as f64 * 100.0, 2)
        } else {
            0.0
        };
        m.push_field("memory_percent", mem_pct);
        m.push_field("create_time", p.start_time() as f64);
        m
    }
}

impl Input for ProcessInput {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        if self.sys.is_none() {
            self.prime().await?;
        }
        self.refresh();
        let Some(sys) = self.sys.take() else {
            return Err(PluginError::msg("process: not primed"));
        };
        let mut reloaded = false;
        let mut out: Vec<Metric> = Vec::new();
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut procs: Vec<&Process> =
            if self.config.target.is_empty() || !cfg!(target_os = "linux") {
                sys.processes().values().collect()
            } else {
                self.candidates
                    .iter()
                    .filter_map(|p| sys.process(*p))
                    .collect()
            };
        procs.sort_unstable_by_key(|p| p.pid());
        for p in procs {
            let comm = p.name().to_string_lossy();
            let name = full_name(&comm, p.exe());
            if !self.config.target.is_empty() && !self.config.target.contains(&name) {
                continue;
            }
            let username = match p.user_id() {
                Some(uid) => self.username(**uid, &mut reloaded),
                None => Str::default(),
            };
            out.push(self.metric_for(acc, p, &name, username));
            *counts.entry(name).or_default() += 1;
        }
        // `count`: processes with this name, so a process alarm can check
        // min/max without counting metrics; a listed target that is not
        // running gets one metric with `count=0` (PyAgent crashed here).
        for m in &mut out {
            let n = m
                .tag("name")
                .and_then(|n| counts.get(n))
                .copied()
                .unwrap_or(0);
            m.push_field("count", n);
        }
        for t in &self.config.target {
            if !counts.contains_key(t) {
                let mut m = acc.metric();
                m.tags
                    .push((Str::new_static("name"), Str::from(t.as_str())));
                m.push_field("count", 0u64);
                out.push(m);
                counts.insert(t.clone(), 0);
            }
        }
        self.sys = Some(sys);
        for m in out {
            acc.add(m);
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "process",
        "Per-process pid, parent, user, executable, threads, CPU and memory share",
        include_str!("sample.yaml"),
        |cfg| Ok(ProcessInput::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use crate::metric::FieldValue;
    use std::path::Path;

    #[test]
    fn names_passwd_and_stat() {
        assert_eq!(
            full_name("nginx", Some(Path::new("/usr/sbin/nginx"))),
            "nginx"
        );
        assert_eq!(
            full_name(
                "agent_core-0123",
                Some(Path::new("/t/agent_core-0123456789abcdef"))
            ),
            "agent_core-0123456789abcdef"
        );
        assert_eq!(
            full_name("agent_core-0123", Some(Path::new("/t/other"))),
            "agent_core-0123"
        );
        assert_eq!(full_name("agent_core-0123", None), "agent_core-0123");
        let users =
            parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad line\nwww:x:33:33::/:/bin/false\n");
        assert_eq!(users.get(&0).map(|s| s.as_str()), Some("root"));
        assert_eq!(users.get(&33).map(|s| s.as_str()), Some("www"));
        assert_eq!(users.len(), 2);
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 7 0 12345 1000 50";
        assert_eq!(threads_from_stat(stat), Some(7));
        assert_eq!(threads_from_stat("42 (x) S 1"), None);
    }

    #[test]
    fn target_accepts_string_or_list() {
        let parse = |y: &str| {
            PluginConfig::from_value("process", serde_yaml_ng::from_str(y).unwrap())
                .parse::<ProcessConfig>()
                .unwrap()
                .target
        };
        assert_eq!(parse("target: nginx"), ["nginx"]);
        assert_eq!(parse("target: [a, b]"), ["a", "b"]);
        assert!(parse("interval: 5").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn finds_own_process_with_right_parent() {
        let comm = std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim()
            .to_string();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let name = full_name(&comm, Some(&exe));
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 1..];
        let ppid: u64 = after.split_whitespace().nth(1).unwrap().parse().unwrap();
        let me = std::process::id().to_string();

        let mut input = ProcessInput::new(ProcessConfig {
            target: vec![name.clone(), "no-such-process-xyz".into()],
        });
        let mut acc = Accumulator::new("process", vec![].into());
        input.gather(&mut acc).await.unwrap();
        let metrics = acc.take();
        let mine = metrics
            .iter()
            .find(|m| m.tag("pid") == Some(me.as_str()))
            .unwrap_or_else(|| panic!("own pid {me} ({name}) missing: {metrics:?}"));
        assert_eq!(mine.tag("name"), Some(name.as_str()));
        assert_eq!(mine.field("ppid"), Some(&FieldValue::Uint(ppid)));
        assert_eq!(
            mine.field("exe").unwrap().as_str(),
            Some(exe.to_str().unwrap())
        );
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let users = parse_passwd(&std::fs::read_to_string("/etc/passwd").unwrap());
        let expect_user = users
            .get(&uid)
            .map(|s| s.to_string())
            .unwrap_or(uid.to_string());
        assert_eq!(
            mine.field("username").unwrap().as_str(),
            Some(expect_user.as_str())
        );
        let threads = std::fs::read_dir("/proc/self/task").unwrap().count() as f64;
        let got = mine.field("num_threads").and_then(|v| v.as_f64()).unwrap();
        assert!(
            got >= 1.0 && (got - threads).abs() <= 4.0,
            "{got} vs {threads}"
        );
        let cpu = mine.field("cpu_percent").and_then(|v| v.as_f64()).unwrap();
        assert!(cpu >= 0.0);
        let mem = mine
            .field("memory_percent")
            .and_then(|v| v.as_f64())
            .unwrap();
        assert!(mem > 0.0 && mem < 100.0, "{mem}");
        let created = mine.field("create_time").and_then(|v| v.as_f64()).unwrap();
        let now = crate::metric::now_ns() as f64 / 1e9;
        assert!(created > 0.0 && created <= now + 1.0);
        // Everything reported is one of the targets; the absent one has count 0.
        assert!(metrics.iter().all(|m| m.tag("name") == Some(name.as_str())
            || m.tag("name") == Some("no-such-process-xyz")));
        let absent: Vec<&Metric> = metrics
            .iter()
            .filter(|m| m.tag("name") == Some("no-such-process-xyz"))
            .collect();
        assert_eq!(absent.len(), 1);
        assert_eq!(absent[0].field("count"), Some(&FieldValue::Uint(0)));
        let mine_count = metrics
            .iter()
            .filter(|m| m.tag("name") == Some(name.as_str()))
            .count();
        assert_eq!(
            mine.field("count"),
            Some(&FieldValue::Uint(mine_count as u64))
        );
    }

    #[test]
    fn comm_prefilter_matches_truncated_names() {
        assert!(comm_may_be("nginx", "nginx"));
        assert!(!comm_may_be("nginx", "nginx2"));
        assert!(!comm_may_be("ngin", "nginx"));
        assert!(comm_may_be(
            "agent_core-0123",
            "agent_core-0123456789abcdef"
        ));
        assert!(!comm_may_be(
            "agent_core-0124",
            "agent_core-0123456789abcdef"
        ));
    }

    /// With a target list, a process that exits is neither reported nor
    /// kept in the input's process table.
    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn target_process_that_exits_is_dropped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let mut input = ProcessInput::new(ProcessConfig {
            target: vec!["sleep".into()],
        });
        let mut acc = Accumulator::new("process", vec![].into());
        input.gather(&mut acc).await.unwrap();
        let first = acc.take();
        assert!(
            first.iter().any(|m| m.tag("pid") == Some(pid.as_str())),
            "{first:?}"
        );
        assert!(first.iter().all(|m| m.tag("name") == Some("sleep")));
        child.kill().unwrap();
        child.wait().unwrap();
        input.gather(&mut acc).await.unwrap();
        let second = acc.take();
        assert!(second.iter().all(|m| m.tag("pid") != Some(pid.as_str())));
        let sys = input.sys.as_ref().unwrap();
        assert!(sys.process(Pid::from_u32(child.id())).is_none());
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn empty_target_reports_every_process() {
        let mut input = ProcessInput::new(ProcessConfig::default());
        let mut acc = Accumulator::new("process", vec![].into());
        input.gather(&mut acc).await.unwrap();
        let metrics = acc.take();
        // pid 1 and ourselves are always there; threads are not listed.
        assert!(metrics.iter().any(|m| m.tag("pid") == Some("1")));
        let me = std::process::id().to_string();
        assert!(metrics.iter().any(|m| m.tag("pid") == Some(me.as_str())));
        let proc_pids = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .count();
        // Processes come and go between the two listings; allow some slack.
        let n = metrics.len();
        assert!(
            n.abs_diff(proc_pids) <= 10.max(proc_pids / 10),
            "{n} vs {proc_pids}"
        );
    }
}
