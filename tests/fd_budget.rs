//! The file-descriptor budget end to end: the `agent` binary under a low
//! `RLIMIT_NOFILE` with far more probe targets than descriptors, against
//! real listeners on 127.0.0.1, and what `agent status` shows of it.
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `agent ARGS -c etc` with `RLIMIT_NOFILE` set to (soft, hard) in the child.
fn agent_limited(args: &[&str], etc: &Path, soft: u64, hard: u64) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_agent"));
    c.args(args).arg("-c").arg(etc);
    // SAFETY: setrlimit is async-signal-safe and reads only the struct.
    unsafe {
        c.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: soft as libc::rlim_t,
                rlim_max: hard as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// A listener that accepts and closes every connection, on its own thread.
fn accepting() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    port
}

/// A keep-nothing HTTP/1.1 server answering 200 to every request, one
/// thread per connection.
fn http_ok() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let mut have = Vec::new();
                while !have.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => have.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    port
}

fn temp_etc(main: &str, inputs: &[(&str, String)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("input")).unwrap();
    std::fs::write(etc.join("main.yaml"), main).unwrap();
    for (name, yaml) in inputs {
        std::fs::write(etc.join(format!("input/{name}.yaml")), yaml).unwrap();
    }
    (dir, etc)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 300 telnet and 100 curl targets, all checked at once (worker limits
/// above the target counts), under a limit of 64 descriptors (soft and
/// hard): without the budget most connects fail with EMFILE.
#[test]
fn more_targets_than_descriptors_all_succeed_and_none_is_emfile() {
    let tport = accepting();
    let hport = http_ok();
    let mut telnet = String::from("timeout: 10\nworker_limit: 1000\ntarget:\n");
    for i in 0..300 {
        telnet.push_str(&format!("  T{i}: {{address: '127.0.0.1:{tport}'}}\n"));
    }
    let mut curl = String::from("timeout: 10\nworker_limit: 200\ntarget:\n");
    for i in 0..100 {
        curl.push_str(&format!(
            "  C{i}: {{url: 'http://127.0.0.1:{hport}/health?i={i}'}}\n"
        ));
    }
    let (_dir, etc) = temp_etc(
        "open: [telnet, curl]\ndelay_sec: 0\ncommon_output: [console]\n",
        &[("telnet", telnet), ("curl", curl)],
    );
    let out: Output = agent_limited(&["once"], &etc, 64, 64)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), stdout);
    let telnet: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" name=telnet "))
        .collect();
    let curl: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" name=curl "))
        .collect();
    assert_eq!(telnet.len(), 300, "{stdout}");
    assert_eq!(curl.len(), 100, "{stdout}");
    for l in &telnet {
        assert!(l.contains(" yes=True ") && l.contains(" errcode=0 "), "{l}");
        assert!(!l.contains("errcode=24"), "{l}");
    }
    for l in &curl {
        assert!(l.contains(" status=200 "), "{l}");
        assert!(!l.contains("Too many open files"), "{l}");
    }
}

/// `agent status` (table and JSON) shows the budget: the soft limit raised
/// to the hard one, the reserve, the probes' capacity and their use, and
/// the DNS cache.
#[test]
fn status_shows_the_budget_and_the_dns_cache() {
    let tport = accepting();
    let mut telnet = String::from("interval: 0.2\ntarget:\n");
    for i in 0..20 {
        telnet.push_str(&format!("  T{i}: {{address: 'localhost:{tport}'}}\n"));
    }
    let (dir, etc) = temp_etc(
        "open: [telnet]\ndelay_sec: 0\ncommon_output: [console]\ndns_cache_sec: 120\n",
        &[("telnet", telnet)],
    );
    let mut child = agent_limited(&["run"], &etc, 64, 4096)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_agent"));
        c.arg("status").arg("-c").arg(&etc);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    // Until the socket answers and telnet has gathered (bounded).
    let start = Instant::now();
    let v = loop {
        let out = status(true);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["fd_budget"]["acquired"].as_u64().unwrap_or(0) >= 20
            && v["dns"]["lookups"].as_u64().unwrap_or(0) >= 1
            || start.elapsed() > Duration::from_secs(20)
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let b = &v["fd_budget"];
    assert_eq!(b["soft_limit"], 4096, "{v}");
    assert_eq!(b["hard_limit"], 4096);
    assert_eq!(b["initial_soft_limit"], 64);
    let (reserved, capacity) = (
        b["reserved"].as_u64().unwrap(),
        b["probe_capacity"].as_u64().unwrap(),
    );
    assert!(reserved >= 32 + 16 + 4, "{b}");
    assert_eq!(reserved + capacity, 4096);
    assert!(b["peak"].as_u64().unwrap() >= 1);
    let d = &v["dns"];
    assert_eq!(d["names"], 1, "{d}");
    assert_eq!(d["ttl_sec"], 120.0);
    // 20 targets on one name, every 0.2 s: one look-up per lifetime.
    assert_eq!(d["lookups"], 1, "{d}");
    let table = text(&status(false).stdout);
    assert!(
        table.contains(&format!(
            "fd budget: limit 4096 (hard 4096, started with 64), reserved {reserved}, probes {capacity}"
        )),
        "{table}"
    );
    assert!(table.contains("dns cache: 1 names, 1 look-ups"), "{table}");
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    drop(dir);
}
