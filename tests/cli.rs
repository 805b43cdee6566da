//! The `agent` binary end to end: validate, once, test, plugins,
//! sample-config on the shipped etc/, config errors exit 2, and SIGTERM
//! delivers everything gathered.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_agent"))
}

fn shipped_etc() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc")
}

fn run(args: &[&str], etc: &Path) -> Output {
    agent()
        .args(args)
        .arg("-c")
        .arg(etc)
        .output()
        .expect("agent runs")
}

/// A temp folder with `etc/main.yaml` (and an empty `etc/input/`).
fn temp_etc(main_yaml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(etc.join("main.yaml"), main_yaml).unwrap();
    (dir, etc)
}

/// `agent run -c etc` in the background, stdout and stderr to `stdio()`.
fn spawn_run(etc: &Path, stdio: fn() -> Stdio) -> Child {
    agent()
        .arg("run")
        .arg("-c")
        .arg(etc)
        .stdout(stdio())
        .stderr(stdio())
        .spawn()
        .unwrap()
}

/// [`spawn_run`] with both pipes drained by threads while it runs (a full
/// pipe would block the agent); the threads return what was read.
fn spawn_drained(
    etc: &Path,
) -> (
    Child,
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<String>,
) {
    let mut child = spawn_run(etc, Stdio::piped);
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            pipe.read_to_string(&mut s).unwrap();
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    (child, out, err)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `open:` list of a main.yaml written as a block list.
fn open_inputs(etc: &Path) -> Vec<String> {
    let main = std::fs::read_to_string(etc.join("main.yaml")).unwrap();
    main.lines()
        .skip_while(|l| !l.starts_with("open:"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- ").trim().to_string())
        .collect()
}

#[test]
fn validate_shipped_etc() {
    let out = run(&["validate"], &shipped_etc());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("valid"));
}

#[test]
fn once_prints_every_open_input() {
    let etc = shipped_etc();
    let out = run(&["once"], &etc);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let inputs = open_inputs(&etc);
    assert!(!inputs.is_empty());
    for input in inputs {
        let prefix = format!(">>> METRIC, name={input} time=");
        assert!(
            stdout.lines().any(|l| l.starts_with(&prefix)),
            "no line for {input}:\n{stdout}"
        );
    }
    for line in stdout.lines() {
        assert!(
            line.starts_with(">>> METRIC, ") || line.starts_with(">>> ALARM, "),
            "{line}"
        );
        assert!(
            line.contains(" node_ip=") && line.contains(" host_name="),
            "{line}"
        );
    }
}

#[test]
fn test_prints_one_input_only() {
    let out = run(&["test", "--input", "demo"], &shipped_etc());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().count() >= 1);
    assert!(
        stdout.lines().all(|l| l.contains(" name=demo ")),
        "{stdout}"
    );

    let out = run(&["test", "--input", "nosuch"], &shipped_etc());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nosuch"));
}

#[test]
fn config_errors_exit_2_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(
        etc.join("main.yaml"),
        "open: [demo]\ncommon_output: [console]\n",
    )
    .unwrap();
    std::fs::write(etc.join("input/demo.yaml"), "interval: [1\n").unwrap();
    for cmd in ["validate", "once", "run", "test"] {
        let out = run(&[cmd], &etc);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = text(&out.stderr);
        assert!(
            err.contains("input/demo.yaml") && err.contains("line"),
            "{cmd}: {err}"
        );
    }
    std::fs::write(etc.join("input/demo.yaml"), "interval: fast\n").unwrap();
    let out = run(&["validate"], &etc);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("key `input.demo.interval`"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["validate"], &dir.path().join("nowhere"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("main.yaml"));
}

/// The hostile values: each exits 2 naming file, key and reason
/// (they used to panic `validate`, or pass it and break at run time).
#[test]
fn hostile_values_exit_2_with_file_key_and_reason() {
    let cases = [
        (
            "output/console.yaml",
            "flush_interval: -1\n",
            "output.console.flush_interval",
            "negative",
        ),
        (
            "output/console.yaml",
            "flush_interval: .nan\n",
            "output.console.flush_interval",
            "NaN",
        ),
        (
            "output/console.yaml",
            "flush_jitter: 1e300\n",
            "output.console.flush_jitter",
            "at most",
        ),
        (
            "output/console.yaml",
            "retry_max_sec: .nan\n",
            "output.console.retry_max_sec",
            "NaN",
        ),
        (
            "output/console.yaml",
            "retry_max_sec: -1\n",
            "output.console.retry_max_sec",
            "negative",
        ),
        (
            "input/telnet.yaml",
            "worker_limit: 0\n",
            "input.telnet.worker_limit",
            "between 1 and",
        ),
        (
            "input/curl.yaml",
            "worker_limit: 0\n",
            "input.curl.worker_limit",
            "between 1 and",
        ),
        (
            "aggs/mem.yaml",
            "alarm: {percent: .nan}\n",
            "aggs.mem.alarm.percent",
            "finite",
        ),
    ];
    for (file, body, key, reason) in cases {
        let (dir, etc) = temp_etc("open: [mem, telnet, curl]\ncommon_output: [console]\n");
        std::fs::create_dir_all(etc.join(file).parent().unwrap()).unwrap();
        std::fs::write(etc.join(file), body).unwrap();
        let out = run(&["validate"], &etc);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {body}: {err}");
        let expected = format!("{}: key `{key}`: ", etc.join(file).display());
        assert!(err.contains(&expected), "{file}: {body}: {err}");
        assert!(err.contains(reason), "{file}: {body}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        drop(dir);
    }
}

/// A misspelled key is a warning naming file, key and the nearest known
/// key; `validate --strict` refuses it; `run` logs it. The shipped etc/ and
/// the sample main.yaml have none.
#[test]
fn unknown_keys_warn_and_strict_refuses_them() {
    let out = run(&["validate", "--strict"], &shipped_etc());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning"),
        "{}",
        text(&out.stderr)
    );

    let (dir, etc) = temp_etc("open: [demo]\ncommon_output: [console]\n");
    std::fs::create_dir_all(etc.join("output")).unwrap();
    std::fs::write(etc.join("output/console.yaml"), "flush_intervall: 1\n").unwrap();
    let expected = format!(
        "warning: {}: key `output.console.flush_intervall`: unknown key; did you mean `flush_interval`?",
        etc.join("output/console.yaml").display()
    );
    let out = run(&["validate"], &etc);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&expected),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["validate", "--strict"], &etc);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&expected),
        "{}",
        text(&out.stderr)
    );

    // `run` logs it at WARNING at start, and a new one on reload (the log
    // file is under the folder that holds etc/).
    let mut child = spawn_run(&etc, Stdio::null);
    let log = dir.path().join("log/agent.log");
    let logged_line = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut logged = String::new();
        while Instant::now() < deadline {
            logged = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = logged.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("`{needle}` not logged: {logged}");
    };
    let line = logged_line("flush_intervall");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("did you mean `flush_interval`"), "{line}");
    std::fs::write(etc.join("input/demo.yaml"), "intervall: 2\n").unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let line = logged_line("input.demo.intervall");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("did you mean `interval`"), "{line}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());

    let sample = agent().arg("sample-config").output().unwrap();
    let (_d2, etc2) = temp_etc(&text(&sample.stdout));
    let out = run(&["validate", "--strict"], &etc2);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Environment overrides reach the CLI: a bad one exits 2 naming the
/// variable and the key, a good one is taken over the files.
#[test]
fn environment_overrides_with_provenance() {
    let (_dir, etc) = temp_etc("open: [demo]\ncommon_output: [console]\n");
    let validate = |name: &str, value: &str| {
        agent()
            .args(["validate", "-c"])
            .arg(&etc)
            .env(name, value)
            .output()
            .unwrap()
    };
    let out = validate("AGENT__INPUT__DEMO__INTERVAL", ".nan");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("env AGENT__INPUT__DEMO__INTERVAL: key `input.demo.interval`: "),
        "{}",
        text(&out.stderr)
    );
    let out = validate("AGENT__OPEN", "demo,mem");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("(2 inputs, 1 outputs)"),
        "{}",
        text(&out.stdout)
    );
    // Single underscore: not an override.
    let out = validate("AGENT_INTERVAL", "-1");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn plugins_and_sample_config() {
    let out = agent().arg("plugins").output().unwrap();
    let s = text(&out.stdout);
    assert!(
        s.contains("inputs:")
            && s.contains("  demo ")
            && s.contains("outputs:")
            && s.contains("  console "),
        "{s}"
    );
    let out = agent().args(["sample-config", "demo"]).output().unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("interval"));
    let out = agent().args(["sample-config"]).output().unwrap();
    assert!(text(&out.stdout).contains("common_output"));
    let out = agent().args(["sample-config", "nosuch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = agent().arg("--version").output().unwrap();
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn sigterm_delivers_everything_gathered() {
    // Console flushes only at shutdown: every line printed proves the drain.
    let (_dir, etc) = temp_etc(
        "open: [demo]\ninterval: 0.05\ndelay_sec: 0\ncommon_output: [console]\noutput:\n  console: {flush_interval: 3600}\n",
    );
    let mut child = spawn_run(&etc, Stdio::piped);
    std::thread::sleep(Duration::from_millis(800));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "agent did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let totals: Vec<u64> = stdout
        .lines()
        .map(|l| {
            let t = l
                .split(" total=")
                .nth(1)
                .expect("total field")
                .split(' ')
                .next()
                .unwrap();
            t.parse().unwrap()
        })
        .collect();
    assert!(totals.len() >= 10, "only {} lines", totals.len());
    // demo's `total` counts gathers: 1..=n, all present, in order.
    assert_eq!(totals, (1..=totals.len() as u64).collect::<Vec<_>>());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

/// `agent status` against a running agent; a SIGHUP after an edit reloads.
#[test]
fn status_shows_pipelines_and_sighup_reloads() {
    let (dir, etc) =
        temp_etc("open: [demo, mem]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [console]\n");
    let mut child = spawn_run(&etc, Stdio::null);
    let status = |json: bool| {
        let mut cmd = agent();
        cmd.arg("status").arg("-c").arg(&etc);
        if json {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    // Wait (bounded) for the socket to answer.
    let start = Instant::now();
    let first = loop {
        let out = status(false);
        if out.status.success() || start.elapsed() > Duration::from_secs(10) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text1 = text(&first.stdout);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text1.contains("config generation 1"), "{text1}");
    for needle in ["input      demo", "input      mem", "output     console"] {
        assert!(text1.contains(needle), "{needle} in {text1}");
    }
    // Edit and SIGHUP (the file watcher may get there first; either way one reload).
    std::fs::write(etc.join("input/demo.yaml"), "interval: 0.3\n").unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    let start = Instant::now();
    let reloaded = loop {
        let out = status(true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["reload"]["generation"] == 2 || start.elapsed() > Duration::from_secs(10) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(reloaded["reload"]["generation"], 2, "{reloaded}");
    assert_eq!(reloaded["reload"]["last_result"], "ok");
    let reconfigured = reloaded["reload"]["last_applied"]["reconfigured"].to_string();
    assert!(reconfigured.contains("input:demo"), "{reconfigured}");
    assert!(!reconfigured.contains("input:mem"), "{reconfigured}");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(
        !dir.path().join("run/agent.sock").exists(),
        "socket removed at exit"
    );
}

/// Three seconds after start the agent releases its start-up pages
/// (agent-bin/src/trim.rs), and again after a reload; it must go on
/// gathering and delivering exactly as before.
#[test]
fn keeps_running_after_startup_pages_are_released() {
    let (_dir, etc) = temp_etc(
        "debug: true\nopen: [demo, mem, cpu]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [console]\noutput:\n  console: {flush_interval: 0.1}\n",
    );
    let (mut child, out_reader, err_reader) = spawn_drained(&etc);
    std::thread::sleep(Duration::from_millis(4500));
    // A reload runs the config code again: released again within the next
    // check (5 s) plus the settling time (3 s).
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(8500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let released: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("settled pages released"))
        .collect();
    assert_eq!(released.len(), 2, "at start and after the reload: {stderr}");
    for line in released {
        assert!(!line.contains("mapped_bytes: 0"), "{line}");
    }
    let totals: Vec<u64> = stdout
        .lines()
        .filter(|l| l.contains(" name=demo "))
        .map(|l| {
            l.split(" total=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    // About 60 gathers in 13 s; every one delivered, before and after.
    assert!(totals.len() >= 18, "{} demo lines", totals.len());
    assert_eq!(totals, (1..=totals.len() as u64).collect::<Vec<_>>());
    assert!(stdout.lines().filter(|l| l.contains(" name=cpu ")).count() >= 18);
}

/// With intervals longer than the start-up settling (3 s), the pages are
/// released again once every plugin has run twice (2 x 2 s + 2 s = 6 s):
/// code that ran once after the first release (the second gather, the
/// first flush) must not stay resident. Delivery goes on across both.
#[test]
fn pages_are_released_again_once_every_plugin_ran_twice() {
    let (_dir, etc) = temp_etc(
        "open: [demo]\ninterval: 2\ndelay_sec: 0\ncommon_output: [console]\noutput:\n  console: {flush_interval: 2}\n",
    );
    let (mut child, out_reader, err_reader) = spawn_drained(&etc);
    std::thread::sleep(Duration::from_millis(9000));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let released: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("settled pages released"))
        .collect();
    assert_eq!(released.len(), 2, "at start and at steady state: {stderr}");
    assert!(released[0].contains("after: start"), "{}", released[0]);
    assert!(
        released[1].contains("after: every plugin ran twice"),
        "{}",
        released[1]
    );
    // Gathers at 0, 2, 4, 6, 8 s: all delivered (the last at shutdown).
    let demo = stdout.lines().filter(|l| l.contains(" name=demo ")).count();
    assert!(demo >= 4, "{demo} demo lines:\n{stdout}");
}

/// Waits (bounded) until `agent status` answers for `etc`.
fn wait_for_status(etc: &Path) -> Output {
    let start = Instant::now();
    loop {
        let out = run(&["status", "--json"], etc);
        if out.status.success() || start.elapsed() > Duration::from_secs(15) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for `child` to exit.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The control socket is the agent's lock: a second `agent run` on the same
/// etc/ exits 1 naming the first one's pid, and the first keeps serving.
#[test]
fn second_agent_on_the_same_etc_exits_1_and_the_first_keeps_running() {
    let (dir, etc) =
        temp_etc("open: [demo]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [console]\n");
    let mut first = spawn_run(&etc, Stdio::null);
    let up = wait_for_status(&etc);
    assert!(up.status.success(), "first agent: {}", text(&up.stderr));

    let mut second = spawn_run(&etc, Stdio::piped);
    let status = wait_exit(&mut second, Duration::from_secs(15));
    let Some(status) = status else {
        let _ = second.kill();
        let _ = first.kill();
        panic!("the second agent kept running");
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let socket = dir.path().join("run/agent.sock");
    let expected = format!(
        "another agent (pid {}) is running on {}",
        first.id(),
        socket.display()
    );
    assert!(
        stderr.contains(&expected),
        "want `{expected}` in:\n{stderr}"
    );
    // It stopped before its logger started: no log file lines of its own.
    assert!(!stderr.contains("agent starting"), "{stderr}");

    // The first agent still runs and still answers on its socket.
    assert!(first.try_wait().unwrap().is_none(), "first agent exited");
    let out = run(&["status", "--json"], &etc);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pid"], first.id());
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert!(first.wait().unwrap().success());
    assert!(!socket.exists(), "the first agent removed its socket");
}

/// A socket file left by a killed agent (nobody listens) is replaced, and
/// the new one is 0600.
#[test]
fn stale_socket_is_replaced_and_the_socket_is_0600() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let (dir, etc) =
        temp_etc("open: [demo]\ninterval: 0.2\ndelay_sec: 0\ncommon_output: [console]\n");
    let socket = dir.path().join("run/agent.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_err());

    // (bind would fail on the old file: an answer means it was replaced.)
    // Started with a permissive umask: the socket must still be 0600.
    let mut cmd = agent();
    cmd.arg("run")
        .arg("-c")
        .arg(&etc)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: umask is async-signal-safe; it runs in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o000);
                Ok(())
            })
        };
    }
    let mut child = cmd.spawn().unwrap();
    let up = wait_for_status(&etc);
    assert!(
        up.status.success(),
        "agent on a stale socket: {}",
        text(&up.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(v["pid"], child.id());
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

/// `update_api` must be https unless `update_api_insecure: true`; a private
/// CA file must exist. Errors name the file and key and exit 2.
#[test]
fn update_api_needs_https_unless_insecure() {
    let base = "open: [demo]\ncommon_output: [console]\n";
    let (_dir, etc) = temp_etc(&format!("{base}update_api: http://127.0.0.1:9/v1/config\n"));
    let out = run(&["validate"], &etc);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let want = format!(
        "config error: {}: key `update_api`: must be an https:// URL",
        etc.join("main.yaml").display()
    );
    assert!(stderr.contains(&want), "want `{want}` in {stderr}");
    assert!(stderr.contains("update_api_insecure: true"), "{stderr}");

    let (_dir, etc) = temp_etc(&format!(
        "{base}update_api: http://127.0.0.1:9/v1/config\nupdate_api_insecure: true\n"
    ));
    let out = run(&["validate"], &etc);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let (dir, etc) = temp_etc(&format!(
        "{base}update_api: https://localhost:9/v1/config\nupdate_api_ca_file: ca.pem\n"
    ));
    let out = run(&["validate"], &etc);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("key `update_api_ca_file`")
            && stderr.contains("ca.pem is not a readable file"),
        "{stderr}"
    );
    // Relative to the folder holding etc/.
    std::fs::write(dir.path().join("ca.pem"), "not checked here\n").unwrap();
    let out = run(&["validate"], &etc);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// With `update_api_insecure: true` every fetch over plain http logs a
/// warning (fetches run every `reload_sec`, at least 10 s: two take 20 s).
#[test]
fn insecure_update_api_warns_at_every_fetch() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let body = "{\"data\": {\"main\": {}}, \"msg\": \"ok\"}";
            let _ = std::io::Write::write_all(
                &mut s,
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let (_dir, etc) = temp_etc(&format!(
        "open: [demo]\ninterval: 1\ndelay_sec: 0\ncommon_output: [console]\nreload_sec: 10\n\
         update_api: http://127.0.0.1:{port}/v1/config\nupdate_api_insecure: true\n"
    ));
    let child = agent()
        .arg("run")
        .arg("-c")
        .arg(&etc)
        .env("AGENT_API_KEY", "k")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a loaded machine may start the agent late.
    let start = Instant::now();
    while hits.load(std::sync::atomic::Ordering::SeqCst) < 2
        && start.elapsed() < Duration::from_secs(45)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("update_api is plain http"))
        .count();
    let fetched = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(fetched >= 2, "{fetched} fetches: {stderr}");
    assert_eq!(warnings, fetched, "one warning per fetch:\n{stderr}");
}

/// The hidden packaging commands: a man page and shell completions.
#[test]
fn man_page_and_completions() {
    let out = agent().arg("man").output().unwrap();
    assert!(out.status.success());
    let man = text(&out.stdout);
    assert!(man.contains(".TH agent 1"), "{man}");
    assert!(man.contains("validate"), "subcommands listed: {man}");
    for (shell, needle) in [
        ("bash", "complete -F _agent"),
        ("zsh", "#compdef agent"),
        ("fish", "complete -c agent"),
    ] {
        let out = agent().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(script.contains("sample-config"), "{shell}");
    }
    // Hidden from --help: they are for packaging.
    let help = text(&agent().arg("--help").output().unwrap().stdout);
    assert!(
        !help.contains("completions") && !help.contains("\n  man "),
        "{help}"
    );
}
