//! The real binary, killed with SIGKILL while nats-server is down, with a
//! JetStream output and a disk buffer: after both restart, the stream holds
//! every sequence number exactly once (what reached the disk buffer is
//! replayed; what the server had already stored is de-duplicated by its
//! `Nats-Msg-Id`).
#[path = "../agent-core/tests/support/backends.rs"]
mod backends;
#[path = "../agent-core/tests/support/brokers.rs"]
mod brokers;

use backends::*;
use brokers::*;
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

/// n -> times stored, from the stream's per-subject counts (`kill9.seq.<n>`).
fn stored(port: u16) -> BTreeMap<u64, u64> {
    stream_subjects(port, "KILL9")
        .into_iter()
        .filter_map(|(s, c)| Some((s.rsplit('.').next()?.parse().ok()?, c)))
        .collect()
}

async fn wait_counter(path: &Path, at_least: u64, what: &str) {
    let start = Instant::now();
    while counter(path) < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: gathered too little"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn sigkill_while_nats_down_then_restart_stores_each_metric_once() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let count_file = dir.path().join("count");
    let (port, mon) = (free_port(), free_port());
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo \"kill9_seq n=${{n}}i\"",
        c = count_file.display()
    );
    std::fs::write(
        etc.join("main.yaml"),
        format!(
            "open: [seq]\ninterval: 0.1\ndelay_sec: 0\ncommon_output: [nats]\n\
             input:\n  seq:\n    plugin: exec\n    shell: true\n    data_format: influx\n    commands: ['{script}']\n\
             output:\n  nats:\n    servers: ['nats://127.0.0.1:{port}']\n    subject: 'kill9.seq.{{tag:n}}'\n\
             \x20   jetstream: {{stream: KILL9, duplicate_window: 600}}\n\
             \x20   flush_interval: 0.1\n    batch_size: 20\n    retry_max_sec: 0.5\n    timeout: 2\n    connect_timeout: 1\n\
             \x20   disk_buffer: {{path: {buf}, max_bytes: 64 MB}}\n",
            buf = dir.path().join("spool").display()
        ),
    )
    .unwrap();

    // Server up: some metrics reach the stream.
    let data = dir.path().join("nats");
    let mut nats = nats_server(&data, port, mon, true, &[]).await;
    let mut first = agent(&etc);
    wait_counter(&count_file, 20, "first run").await;
    let start = Instant::now();
    while jsz_messages(&nats, "KILL9").await.unwrap_or(0) < 10 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "nothing reached the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Server down: the agent gathers into its disk buffer, then SIGKILL.
    nats.stop().await;
    let down_at = counter(&count_file);
    wait_counter(&count_file, down_at + 30, "while the server is down").await;
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let killed_at = counter(&count_file);

    // Both back: the spool is replayed, gathering goes on.
    let nats = nats_server(&data, port, mon, true, &[]).await;
    let mut second = agent(&etc);
    wait_counter(&count_file, killed_at + 20, "second run").await;
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert!(second.wait().unwrap().success());
    let total = counter(&count_file);

    // One gather in flight at the kill may be lost; give the rest time.
    let mut seen = BTreeMap::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        seen = stored(port);
        if seen.len() as u64 + 1 >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let count = jsz_messages(&nats, "KILL9").await.unwrap_or(0);
    let dup: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    let missing: Vec<u64> = (1..=total).filter(|n| !seen.contains_key(n)).collect();
    println!(
        "server down at n={down_at}, kill -9 at n={killed_at}, total gathered {total}, \
         stream holds {count} messages ({} distinct), missing {missing:?}, duplicates {dup:?}",
        seen.len()
    );
    assert!(dup.is_empty(), "duplicates: {dup:?}");
    assert_eq!(
        count,
        seen.len() as u64,
        "/jsz count equals the distinct subjects"
    );
    // A gather in flight at the SIGKILL (counted, not yet spooled) may be lost;
    // everything before it must be there.
    assert!(
        missing
            .iter()
            .all(|n| *n + 1 >= killed_at && *n <= killed_at + 1),
        "lost more than the gather in flight at the kill: {missing:?}"
    );
    assert!(missing.len() <= 1, "{missing:?}");
}
