//! ping in the real binary: run as `nobody` it still gets `loss=0` for
//! 127.0.0.1 and ::1 (through an ICMP datagram socket when
//! net.ipv4.ping_group_range allows the group, else through the system
//! ping), and `agent status` names the method chosen.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Sets ping_group_range for the test and puts the old value back.
struct GroupRange(String);

impl GroupRange {
    /// `None` when this machine does not let the test change it.
    fn set(range: &str) -> Option<GroupRange> {
        let old = std::fs::read_to_string(RANGE).ok()?;
        std::fs::write(RANGE, range).ok()?;
        Some(GroupRange(
            old.split_whitespace().collect::<Vec<_>>().join(" "),
        ))
    }
}

impl Drop for GroupRange {
    fn drop(&mut self) {
        let _ = std::fs::write(RANGE, &self.0);
    }
}

fn ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// A world-readable folder holding a copy of the binary and an etc/ with
/// one ping input, so `nobody` can run it wherever the build lives.
fn world_readable_agent(ping_yaml: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("agent");
    std::fs::copy(env!("CARGO_BIN_EXE_agent"), &exe).unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(etc.join("main.yaml"), "open: [ping]\ndelay_sec: 0\n").unwrap();
    std::fs::write(etc.join("input/ping.yaml"), ping_yaml).unwrap();
    for p in [dir.path(), &etc, &etc.join("input")] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in [etc.join("main.yaml"), etc.join("input/ping.yaml")] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    (dir, exe, etc)
}

fn as_nobody(exe: &Path, args: &[&str], etc: &Path) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(exe)
        .args(args)
        .arg("-c")
        .arg(etc)
        .output()
        .expect("setpriv (util-linux) must be installed")
}

fn targets() -> &'static str {
    if ipv6_loopback() {
        "target:\n  LO: {address: 127.0.0.1}\n  LO6: {address: '::1'}\n"
    } else {
        "target:\n  LO: {address: 127.0.0.1}\n"
    }
}

/// Every metric line has `loss=0.0` and no error; returns how many.
fn all_answered(out: &Output) -> usize {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.contains("name=ping")).collect();
    for l in &lines {
        assert!(l.contains(" loss=0.0 "), "{l}\n{stderr}");
        assert!(!l.contains(" error="), "{l}");
    }
    lines.len()
}

#[test]
fn unprivileged_agent_pings_loopback() {
    let yaml = format!("count: 2\ninterval_ping: 0.2\ntimeout: 0.5\n{}", targets());
    let (_dir, exe, etc) = world_readable_agent(&yaml);
    let expect = if ipv6_loopback() { 2 } else { 1 };
    let current = std::fs::read_to_string(RANGE).unwrap_or_default();
    let in_range = |r: &str| {
        let v: Vec<u64> = r
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        v.len() == 2 && v[0] <= 65534 && 65534 <= v[1]
    };
    // Closed (Linux's default): no raw socket, no datagram socket, so the
    // system ping (iputils has its own capability).
    let closed = GroupRange::set("1 0");
    if closed.is_some() || !in_range(&current) {
        let out = as_nobody(&exe, &["test", "--input", "ping"], &etc);
        assert_eq!(all_answered(&out), expect);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("via the system ping"), "{stderr}");
        assert!(stderr.contains("ping_group_range"), "{stderr}");
    }
    drop(closed);
    // Open: the in-process datagram socket.
    let open = GroupRange::set("0 2147483647");
    if open.is_some() || in_range(&current) {
        let out = as_nobody(&exe, &["test", "--input", "ping"], &etc);
        assert_eq!(all_answered(&out), expect);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("via ICMP datagram socket"), "{stderr}");
    } else {
        eprintln!("ping_group_range cannot be changed here: the datagram case was not run");
    }
}

/// `agent status` reports how each family is pinged.
#[test]
fn status_names_the_ping_method() {
    let yaml = format!("interval: 1\ncount: 1\ntimeout: 0.3\n{}", targets());
    let (dir, exe, etc) = world_readable_agent(&yaml);
    let mut child = Command::new(&exe)
        .args(["run", "-c"])
        .arg(&etc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |json: bool| {
        let mut c = Command::new(&exe);
        c.arg("status").arg("-c").arg(&etc);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let start = Instant::now();
    let answer = loop {
        let out = status(true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["ping"].is_object() || start.elapsed() > Duration::from_secs(15) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = String::from_utf8_lossy(&status(false).stdout).to_string();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    drop(dir);
    // SAFETY: geteuid has no preconditions.
    let expect = if unsafe { libc::geteuid() } == 0 {
        "raw"
    } else {
        ""
    };
    let ping = &answer["ping"];
    assert!(ping.is_object(), "{answer}");
    if !expect.is_empty() {
        assert_eq!(ping["ipv4"], expect, "{ping}");
        assert!(text.contains("ping: IPv4 raw"), "{text}");
    }
    assert!(
        ping["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ping: IPv4"),
        "{ping}"
    );
}
