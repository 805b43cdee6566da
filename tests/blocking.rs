//! The `agent` binary with blocking work that must stay off its event loop:
//! a console output on a stdout pipe nobody reads and an execd processor
//! whose program never answers, while a `mem` -> `file` pipeline keeps its
//! 1 s cadence and SIGTERM still ends the agent in time; and a log file on
//! a full device (`/dev/full`), counted while metrics keep flowing.
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent"))
}

/// A temp folder with `etc/` holding `files` (relative path, contents).
fn temp_etc(files: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    for (rel, text) in files {
        let p = etc.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    (dir, etc)
}

/// `agent status --json`, when the agent answers.
fn status(etc: &Path) -> Option<serde_json::Value> {
    let out = agent()
        .args(["status", "--json", "-c"])
        .arg(etc)
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The status of actor `kind`/`name` (pipelines' actors and outputs).
fn actor<'a>(
    status: &'a serde_json::Value,
    kind: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    let s = &status["status"];
    let pipelines = s["pipelines"].as_array()?;
    pipelines
        .iter()
        .flat_map(|p| p["actors"].as_array().into_iter().flatten())
        .chain(s["outputs"].as_array().into_iter().flatten())
        .find(|a| a["kind"] == kind && a["name"] == name)
}

/// Polls `check` every 200 ms until it returns true, at most `limit`.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The file output's JSON lines.
fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// SIGTERM, then the exit status and how long it took.
fn terminate(child: &mut Child, limit: Duration) -> (ExitStatus, Duration) {
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (s, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("agent did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stuck_stdout_and_silent_execd_leave_other_pipelines_on_cadence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mem.jsonl");
    let (_etc_dir, etc) = temp_etc(&[
        (
            "main.yaml",
            "open: [mem, process, demo]\ninterval: 1\ndelay_sec: 0\n".into(),
        ),
        ("input/mem.yaml", "output: [file]\n".into()),
        // Many lines a second: fills the stdout pipe at once.
        ("input/process.yaml", "output: [console]\n".into()),
        ("input/demo.yaml", "output: [console]\n".into()),
        // Reads its stdin and never answers.
        (
            "processor/demo.yaml",
            "use_plugin_execd:\n  command: [sh, -c, 'cat > /dev/null']\n  batch_timeout: 3\n"
                .into(),
        ),
        (
            "output/file.yaml",
            format!("path: {}\nflush_interval: 1\n", out.display()),
        ),
        ("output/console.yaml", "flush_interval: 1\n".into()),
    ]);
    // stdout: a one-page pipe that is never read.
    let (reader, writer) = std::io::pipe().unwrap();
    // SAFETY: fcntl on a pipe we own.
    unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = agent()
        .arg("run")
        .arg("-c")
        .arg(&etc)
        .stdout(writer)
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // Both blocking cases are in effect: the console's writes time out on
    // the full pipe, the execd program's batches time out.
    wait_for(
        Duration::from_secs(90),
        "stdout stuck and execd timing out",
        || {
            let Some(s) = status(&etc) else {
                return false;
            };
            let console_stuck = actor(&s, "output", "console").is_some_and(|c| {
                c["stats"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("stdout"))
            });
            let execd_silent = actor(&s, "processor", "execd").is_some_and(|p| {
                p["stats"]["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("batch_timeout"))
            });
            console_stuck && execd_silent
        },
    );

    // Meanwhile mem -> file keeps its 1 s cadence.
    let window_start = now_secs();
    std::thread::sleep(Duration::from_secs(12));
    let window_end = now_secs();
    let stamps: Vec<u64> = lines(&out)
        .iter()
        .filter(|m| m["name"] == "mem")
        .filter_map(|m| m["timestamp"].as_u64())
        .filter(|t| (window_start..=window_end).contains(t))
        .collect();
    assert!(
        stamps.len() >= 10,
        "{} mem metrics in 12 s: {stamps:?}\n{}",
        stamps.len(),
        stderr()
    );
    let gaps: Vec<u64> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g <= 2),
        "mem gathers with gaps: {stamps:?}"
    );
    assert!(stamps[0] <= window_start + 2 && *stamps.last().unwrap() + 3 >= window_end);

    // The status socket answers, and SIGTERM ends the agent within its
    // shutdown deadline (10 s) plus a margin, although stdout stays stuck.
    assert!(status(&etc).is_some());
    let (exit, took) = terminate(&mut child, Duration::from_secs(16));
    eprintln!("SIGTERM to exit with stdout stuck: {took:.1?}");
    assert!(exit.success(), "{exit:?} after {took:?}\n{}", stderr());
    assert!(stderr().contains("SIGTERM"), "{}", stderr());
    drop(reader);
}

#[test]
fn a_log_file_on_a_full_device_is_counted_and_metrics_keep_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let (_etc_dir, etc) = temp_etc(&[
        (
            "main.yaml",
            "open: [mem, internal]\ninterval: 1\ndelay_sec: 0\ncommon_output: [file]\n\
             log: {file: /dev/full}\n"
                .into(),
        ),
        (
            "output/file.yaml",
            format!("path: {}\nflush_interval: 1\n", out.display()),
        ),
    ]);
    let stderr_path = dir.path().join("stderr.txt");
    let mut child = agent()
        .arg("run")
        .arg("-c")
        .arg(&etc)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // The internal input reports the failed log writes...
    wait_for(Duration::from_secs(60), "internal log_errors > 0", || {
        lines(&out)
            .iter()
            .any(|m| m["name"] == "internal" && m["log_errors"].as_u64().is_some_and(|n| n > 0))
    });
    // ...and so does `agent status`.
    let s = status(&etc).expect("status answers");
    assert!(
        s["logging"]["log_errors"].as_u64().is_some_and(|n| n > 0),
        "{s}"
    );
    assert!(
        s["logging"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/dev/full")),
        "{s}"
    );
    let table = agent().args(["status", "-c"]).arg(&etc).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("failed writes"), "{table}");
    // Metrics keep flowing: more mem lines a few seconds later.
    let count = || lines(&out).iter().filter(|m| m["name"] == "mem").count();
    let before = count();
    wait_for(Duration::from_secs(30), "more mem metrics", || {
        count() >= before + 3
    });
    // The failure was said once on stderr; the agent ends normally.
    let (exit, _) = terminate(&mut child, Duration::from_secs(16));
    assert!(exit.success(), "{exit:?}\n{}", stderr());
    let err = stderr();
    assert!(
        err.contains("log write failed") && err.contains("/dev/full"),
        "{err}"
    );
}
