use super::*;
use crate::metric::FieldValue;
use crate::plugins::common::exec::testutil::{proc_state, read_pid, wait_dead};
use std::sync::atomic::Ordering::Relaxed;

fn input(yaml: &str) -> ExecdInput {
    ExecdInput::new("job", serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
}

fn acc() -> Accumulator {
    Accumulator::new("job", vec![("host_name".into(), "h1".into())].into())
}

/// Gathers every 50 ms until `want` metrics arrived (at most 30 s).
async fn gather_until(i: &mut ExecdInput, want: usize) -> Vec<crate::Metric> {
    let mut all = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while all.len() < want && Instant::now() < end {
        let mut a = acc();
        i.gather(&mut a).await.unwrap();
        all.extend(a.take());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all
}

#[actix_rt::test]
async fn streaming_lines_are_collected_with_arrival_time() {
    let mut i = input(
        "command: \"i=0; while true; do echo \\\"tick,src=sh n=${i}i\\\"; i=$((i+1)); sleep 0.05; done\"\nshell: true",
    );
    let started = crate::metric::now_ns();
    let ms = gather_until(&mut i, 3).await;
    assert!(ms.len() >= 3, "{ms:?}");
    for (k, m) in ms.iter().enumerate() {
        assert_eq!(m.name, "tick");
        assert_eq!(m.tag("host_name"), Some("h1"));
        assert_eq!(m.tag("src"), Some("sh"));
        assert_eq!(
            m.field("n"),
            Some(&FieldValue::Int(k as i64)),
            "in order, none lost"
        );
        assert!(m.timestamp_ns >= started && m.timestamp_ns <= crate::metric::now_ns());
    }
    assert_eq!(i.stats().spawns.load(Relaxed), 1);
}

#[actix_rt::test]
async fn stdin_signal_gets_one_answer_per_gather() {
    let mut i = input(
        "command: [sh, -c, 'n=0; while read x; do n=$((n+1)); echo \"{\\\"n\\\": $n}\"; done']\n\
         signal: STDIN\nsignal_wait: 20\ndata_format: json",
    );
    for round in 1..=3 {
        let mut a = acc();
        i.gather(&mut a).await.unwrap();
        let ms = a.take();
        assert_eq!(ms.len(), 1, "round {round}: {ms:?}");
        assert_eq!(ms[0].name, "job");
        assert_eq!(ms[0].field("n"), Some(&FieldValue::Int(round)));
    }
}

#[actix_rt::test]
async fn sigusr1_signal_after_the_program_started() {
    let mut i = input(
        "command: \"trap 'echo usr v=1' USR1; while true; do sleep 0.05; done\"\nshell: true\nsignal: SIGUSR1\nsignal_wait: 5",
    );
    let ms = gather_until(&mut i, 2).await;
    assert!(ms.len() >= 2, "{ms:?}");
    assert!(ms.iter().all(|m| m.name == "usr"));
    assert_eq!(
        i.stats().spawns.load(Relaxed),
        1,
        "never killed by an early signal"
    );
}

#[actix_rt::test]
async fn malformed_and_oversized_lines_are_counted() {
    let mut i = input(
        "command: \"echo 'a v=1'; echo 'garbage'; head -c 100000 /dev/zero | tr '\\\\0' x; echo; echo 'b v=2'; sleep 300\"\n\
         shell: true\nmax_line_bytes: 1024\nstop_timeout: 1",
    );
    let ms = gather_until(&mut i, 2).await;
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    let s = i.stats();
    assert_eq!(s.parse_errors.load(Relaxed), 1);
    assert_eq!(s.long_lines.load(Relaxed), 1);
}

#[actix_rt::test]
async fn crashing_child_is_restarted_with_backoff() {
    let mut i = input("command: \"echo 'c v=1'; exit 1\"\nshell: true\nrestart_delay: 0.1");
    let started = Instant::now();
    let mut a = acc();
    i.gather(&mut a).await.unwrap();
    let stats = i.stats();
    let end = Instant::now() + Duration::from_secs(30);
    while stats.spawns.load(Relaxed) < 4 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    assert_eq!(stats.restarts(), 3);
    // Delays 0.1 + 0.2 + 0.4 s: doubling, not a fixed 0.1 s (which would
    // allow 3 restarts in 0.3 s).
    assert!(took >= Duration::from_millis(700), "{took:?}");
    // Over a bounded window, no more restarts than the doubling delays
    // allow (a fixed 0.1 s delay would allow about ten a second).
    tokio::time::sleep(Duration::from_millis(800)).await;
    let spawned = stats.spawns.load(Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let (mut allowed, mut at, mut delay) = (1, 0.0, 0.1);
    while at + delay <= elapsed {
        at += delay;
        delay *= 2.0;
        allowed += 1;
    }
    assert!(
        spawned <= allowed,
        "{spawned} spawns in {elapsed:.2}s, backoff allows {allowed}"
    );
    let ms = gather_until(&mut i, 1).await;
    assert!(ms.iter().all(|m| m.name == "c"), "{ms:?}");
}

#[actix_rt::test]
async fn drop_kills_a_child_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut i = input(&format!(
        "command: \"trap '' TERM; echo $$ > {d}/pid; while true; do sleep 0.1; done\"\nshell: true\nstop_timeout: 0.5"
    ));
    i.gather(&mut acc()).await.unwrap();
    let pid = read_pid(&dir.path().join("pid"), Duration::from_secs(20));
    assert!(proc_state(pid).is_some());
    let stats = i.stats();
    let t = Instant::now();
    drop(i);
    let took = t.elapsed();
    // Waited for the grace period, then SIGKILL.
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert_eq!(stats.kills.load(Relaxed), 1);
    assert!(
        wait_dead(pid, false, Duration::from_secs(10)),
        "{:?}",
        proc_state(pid)
    );

    // A well-behaved child goes on SIGTERM, no kill needed.
    let mut i = input(&format!(
        "command: \"echo $$ > {d}/pid2; exec sleep 300\"\nshell: true\nstop_timeout: 20"
    ));
    i.gather(&mut acc()).await.unwrap();
    let pid = read_pid(&dir.path().join("pid2"), Duration::from_secs(20));
    let stats = i.stats();
    drop(i);
    assert_eq!(stats.kills.load(Relaxed), 0);
    assert!(
        wait_dead(pid, false, Duration::from_secs(10)),
        "{:?}",
        proc_state(pid)
    );
}

#[actix_rt::test]
async fn missing_program_fails_the_gather() {
    let mut i = input("command: [/nonexistent/prog]");
    let mut err = None;
    let end = Instant::now() + Duration::from_secs(20);
    while err.is_none() && Instant::now() < end {
        err = i.gather(&mut acc()).await.err();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = err.unwrap().to_string();
    assert!(err.contains("cannot start `/nonexistent/prog`"), "{err}");
}

#[test]
fn config_errors() {
    let bad = [
        ("{}", "command"),
        ("command: x\ndata_format: nagios", "data_format"),
        ("command: x\nmax_line_bytes: 1", "max_line_bytes"),
        ("command: x\nrestart_delay: 0", "restart_delay"),
    ];
    for (yaml, key) in bad {
        let e = ExecdInput::new("job", serde_yaml_ng::from_str(yaml).unwrap()).err();
        assert_eq!(e.map(|e| e.0), Some(key.to_string()), "{yaml}");
    }
    assert!(serde_yaml_ng::from_str::<ExecdInputConfig>("command: x\nsignal: SIGHUP").is_err());
    // Values that are not a number of seconds do not even parse.
    for bad in ["-1", ".nan", ".inf", "1e300"] {
        let yaml = format!("command: x\nrestart_delay: {bad}");
        assert!(
            serde_yaml_ng::from_str::<ExecdInputConfig>(&yaml).is_err(),
            "{yaml}"
        );
    }
}
