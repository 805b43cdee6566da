//! Shipping: the hardened systemd unit (`packaging/agent.service`) passes
//! `systemd-analyze verify` with the built binary and scores at most 2.0 in
//! `systemd-analyze security`, and the agent puts its socket, log file and
//! disk buffers in systemd's runtime, logs and state folders when their
//! variables are set.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn unit_path() -> PathBuf {
    repo().join("packaging/agent.service")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a Debian tool; a missing one fails the test with what to install.
fn tool(program: &str, package: &str, args: &[&std::ffi::OsStr]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cannot run `{program}` ({e}): install the Debian package `{package}` \
             (it is listed in .ci/apt-packages.txt, which .ci/run installs)"
        ),
    }
}

/// The number in `Overall exposure level for agent.service: 1.8 OK`.
fn exposure(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for "))
        .and_then(|(_, rest)| rest.split_once(": "))
        .and_then(|(_, score)| score.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[test]
fn exposure_is_parsed_from_systemd_analyze_output() {
    assert_eq!(
        exposure("✓ UMask=  ...\n\n→ Overall exposure level for agent.service: 1.8 OK 🙂\n"),
        Some(1.8)
    );
    assert_eq!(
        exposure("→ Overall exposure level for x.service: 9.6 UNSAFE 😨"),
        Some(9.6)
    );
    assert_eq!(exposure("nothing here"), None);
}

#[test]
fn unit_exposure_score_is_at_most_2() {
    let unit = unit_path();
    let out = tool(
        "systemd-analyze",
        "systemd",
        &[
            "security".as_ref(),
            "--offline=true".as_ref(),
            unit.as_os_str(),
        ],
    );
    let stdout = text(&out.stdout);
    let score = exposure(&stdout).unwrap_or_else(|| {
        panic!(
            "no exposure level in the output (exit {:?}):\n{stdout}\n{}",
            out.status.code(),
            text(&out.stderr)
        )
    });
    eprintln!("systemd-analyze security --offline=true: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}

#[test]
fn unit_verifies_with_the_binary_at_its_exec_start_path() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/agent run -c /etc/agent"),
        "the packaged path"
    );
    // The installed binary is the built one: the unit is checked in a temp
    // folder with ExecStart pointing at it.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("agent.service");
    let bin = env!("CARGO_BIN_EXE_agent");
    std::fs::write(
        &copy,
        unit.replace("ExecStart=/usr/bin/agent ", &format!("ExecStart={bin} ")),
    )
    .unwrap();
    // The man page (Documentation=man:agent(1)) comes with the .deb, whose
    // test checks it (tests/deb.rs); here only the unit itself.
    let out = tool(
        "systemd-analyze",
        "systemd",
        &["verify".as_ref(), "--man=no".as_ref(), copy.as_os_str()],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "verify failed:\n{stderr}");
    assert!(
        !stderr.contains("agent.service"),
        "verify complained about the unit:\n{stderr}"
    );
    // Without the binary at ExecStart, verify does fail: the check is real.
    let missing = dir.path().join("missing/agent.service");
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    std::fs::write(
        &missing,
        unit.replace("ExecStart=/usr/bin/agent ", "ExecStart=/nonexistent/agent "),
    )
    .unwrap();
    let out = tool(
        "systemd-analyze",
        "systemd",
        &["verify".as_ref(), "--man=no".as_ref(), missing.as_os_str()],
    );
    assert!(!out.status.success(), "verify accepted a missing binary");
}

/// The hardening the issue asks for, directive by directive.
#[test]
fn unit_has_the_required_hardening() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("AmbientCapabilities", "CAP_NET_RAW"),
        ("CapabilityBoundingSet", "CAP_NET_RAW"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("StateDirectory", "agent"),
        ("LogsDirectory", "agent"),
        ("RuntimeDirectory", "agent"),
        ("ConfigurationDirectory", "agent"),
        (
            "RestrictAddressFamilies",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        ("UMask", "0077"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
    ] {
        assert_eq!(value(key), vec![want.to_string()], "{key}");
    }
    assert!(value("SystemCallFilter").contains(&"@system-service".to_string()));
}

/// Waits (bounded) until `agent status` answers, with `env` set.
fn wait_for_status(etc: &Path, env: &[(&str, &Path)]) -> Output {
    let start = Instant::now();
    loop {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
        cmd.args(["status", "--json", "-c"]).arg(etc);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        if out.status.success() || start.elapsed() > Duration::from_secs(15) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_agent_uses_systemd_state_logs_and_runtime_folders() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(
        etc.join("main.yaml"),
        "open: [demo]\ninterval: 0.1\ndelay_sec: 0\ncommon_output: [console]\n\
         output:\n  console: {flush_interval: 0.1, disk_buffer: {path: spool/console, max_bytes: 1 MB}}\n",
    )
    .unwrap();
    let (state, logs, runtime) = (
        dir.path().join("state"),
        dir.path().join("logs"),
        dir.path().join("runtime"),
    );
    for d in [&state, &logs, &runtime] {
        std::fs::create_dir_all(d).unwrap();
    }
    let env: [(&str, &Path); 3] = [
        ("STATE_DIRECTORY", &state),
        ("LOGS_DIRECTORY", &logs),
        ("RUNTIME_DIRECTORY", &runtime),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agent"));
    cmd.args(["run", "-c"])
        .arg(&etc)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let up = wait_for_status(&etc, &env);
    assert!(
        up.status.success(),
        "status over $RUNTIME_DIRECTORY: {}",
        text(&up.stderr)
    );
    let socket = runtime.join("agent.sock");
    assert!(socket.exists(), "socket in $RUNTIME_DIRECTORY");
    // Without the variable, `agent status` looks beside etc/, where nothing is.
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(["status", "-c"])
        .arg(&etc)
        .env_remove("RUNTIME_DIRECTORY")
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    // The disk buffer's folder appears with the output's first batch.
    let start = Instant::now();
    while !state.join("spool/console").is_dir() && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "{stderr}");
    let log = std::fs::read_to_string(logs.join("agent.log"))
        .unwrap_or_else(|e| panic!("log file in $LOGS_DIRECTORY: {e}\n{stderr}"));
    assert!(log.contains("agent starting"), "{log}");
    assert!(
        state.join("spool/console").is_dir(),
        "disk buffer in $STATE_DIRECTORY"
    );
    for beside_etc in ["run", "log", "spool"] {
        assert!(
            !dir.path().join(beside_etc).exists(),
            "{beside_etc}/ created beside etc/"
        );
    }
    assert!(!socket.exists(), "socket removed at exit");
}
