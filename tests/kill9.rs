//! The real binary, killed with SIGKILL while VictoriaMetrics is down, loses
//! nothing that reached its disk buffer: after both restart, every sequence
//! number arrives exactly once.
#[path = "../agent-core/tests/support/backends.rs"]
mod backends;

use backends::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn agent(etc: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_agent"))
        .arg("run")
        .arg("-c")
        .arg(etc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent starts")
}

fn counter(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Every `n` stored for the series `kill9_seq_n`, with how often it occurs.
async fn stored(vm: &Backend) -> BTreeMap<u64, usize> {
    let (status, body) = get(&vm.url("/api/v1/export?match[]=kill9_seq_n"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut seen = BTreeMap::new();
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for x in v["values"].as_array().unwrap() {
            *seen.entry(x.as_f64().unwrap() as u64).or_insert(0) += 1;
        }
    }
    seen
}

#[actix_rt::test]
async fn sigkill_while_backend_down_then_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let count_file = dir.path().join("count");
    let port = free_port();
    // Each gather: bump a counter file, print one line-protocol point.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo \"kill9_seq n=${{n}}i\"",
        c = count_file.display()
    );
    std::fs::write(
        etc.join("main.yaml"),
        format!(
            "open: [seq]\ninterval: 0.1\ndelay_sec: 0\ncommon_output: [influxdb]\n\
             input:\n  seq:\n    plugin: exec\n    shell: true\n    data_format: influx\n    commands: ['{script}']\n\
             output:\n  influxdb:\n    url: http://127.0.0.1:{port}\n    database: agent\n    create_database: false\n\
             \x20   flush_interval: 0.1\n    batch_size: 20\n    retry_max_sec: 0.5\n\
             \x20   disk_buffer: {{path: {buf}, max_bytes: 64 MB}}\n",
            buf = dir.path().join("spool").display()
        ),
    )
    .unwrap();

    // Backend down: gather for a while, then SIGKILL.
    let mut first = agent(&etc);
    let start = Instant::now();
    while counter(&count_file) < 30 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "agent gathered too little"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let killed_at = counter(&count_file);

    // Both back: the spool is replayed, gathering goes on.
    let vm = victoria_metrics(&dir.path().join("vm"), port).await;
    let mut second = agent(&etc);
    let start = Instant::now();
    while counter(&count_file) < killed_at + 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "second run gathered too little"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert!(second.wait().unwrap().success());
    let total = counter(&count_file);

    // Wait for every point; one may be lost at the kill, so once all but
    // one are searchable give the last a few seconds more, not the whole
    // wait (it can still be on its way when the others are visible).
    let mut seen = BTreeMap::new();
    let start = Instant::now();
    let mut all_but_one_at = None;
    while start.elapsed() < Duration::from_secs(30) {
        seen = stored(&vm).await;
        if seen.len() as u64 >= total {
            break;
        }
        if seen.len() as u64 + 1 >= total {
            let since = *all_but_one_at.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    // A gather in flight at the SIGKILL (counted, not yet spooled) may be lost;
    // everything before it must be there.
    let missing: Vec<u64> = (1..=total).filter(|n| !seen.contains_key(n)).collect();
    println!(
        "kill -9 at n={killed_at}, total gathered {total}, stored {} distinct, missing {missing:?}, duplicates {dup:?}",
        seen.len()
    );
    assert!(dup.is_empty(), "duplicates: {dup:?}");
    assert!(
        missing
            .iter()
            .all(|n| *n + 1 >= killed_at && *n <= killed_at + 1),
        "lost more than the gather in flight at the kill: {missing:?}"
    );
    assert!(missing.len() <= 1, "{missing:?}");
}
