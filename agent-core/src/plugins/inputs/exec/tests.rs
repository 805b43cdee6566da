use super::*;
use crate::config::PluginConfig;
use crate::metric::{FieldValue, MetricKind};
use crate::plugins::common::exec::testutil::{proc_state, read_pid, rss_kb, wait_dead};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

fn exec(yaml: &str) -> Exec {
    Exec::new("job", serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
}

fn acc() -> Accumulator {
    Accumulator::new("job", vec![("host_name".into(), "h1".into())].into())
}

async fn gather(e: &mut Exec) -> (Vec<crate::Metric>, PluginResult) {
    let mut a = acc();
    // Errors reported with `add_error` count as the gather's result here.
    let r = e.gather(&mut a).await.and_then(|()| a.errors_as_result());
    (a.take(), r)
}

#[actix_rt::test]
async fn influx_lines_from_two_commands() {
    let mut e = exec(
        r#"commands:
  - ["/bin/echo", "disk,dev=sda used=5i,pct=1.5"]
  - ["sh", "-c", "printf 'up seconds=3u 1700000000000000000\n'"]
"#,
    );
    let (ms, r) = gather(&mut e).await;
    r.unwrap();
    assert_eq!(ms.len(), 2, "{ms:?}");
    let disk = ms.iter().find(|m| m.name == "disk").unwrap();
    assert_eq!(disk.tag("host_name"), Some("h1"), "info tags kept");
    assert_eq!(disk.tag("dev"), Some("sda"));
    assert_eq!(disk.field("used"), Some(&FieldValue::Int(5)));
    let up = ms.iter().find(|m| m.name == "up").unwrap();
    assert_eq!(up.timestamp_ns, 1_700_000_000_000_000_000);
    assert_eq!(up.field("seconds"), Some(&FieldValue::Uint(3)));
    assert_eq!(e.stats().spawns.load(Relaxed), 2);
}

#[actix_rt::test]
async fn malformed_lines_are_counted_and_good_ones_kept() {
    let mut e =
        exec("commands: [\"printf 'a v=1\\nthis is bad\\nb v=2\\nc v=\\\"open\\n'\"]\nshell: true");
    let (ms, r) = gather(&mut e).await;
    let names: Vec<&str> = ms.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, vec!["a", "b"]);
    let err = r.unwrap_err().to_string();
    assert!(err.contains("2 malformed influx output skipped"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(e.stats().parse_errors.load(Relaxed), 2);
}

#[actix_rt::test]
async fn json_value_and_pyagent_formats() {
    let mut e = exec(
        r#"commands: [["/bin/echo", "{\"name\":\"svc\",\"up\":1,\"lat\":{\"p99\":2.5},\"ver\":\"1.2\"}"]]
data_format: json
name_key: name
json_string_fields: [ver]
"#,
    );
    let (ms, r) = gather(&mut e).await;
    r.unwrap();
    assert_eq!(ms[0].name, "svc");
    assert_eq!(ms[0].field("lat_p99"), Some(&FieldValue::Float(2.5)));
    assert_eq!(ms[0].field("ver"), Some(&FieldValue::from("1.2")));

    let mut e = exec("commands: [[\"/bin/echo\", \"17\"]]\ndata_format: value\ndata_type: integer");
    let (ms, r) = gather(&mut e).await;
    r.unwrap();
    assert_eq!(ms[0].name, "job", "no name in the format: the input's");
    assert_eq!(ms[0].field("value"), Some(&FieldValue::Int(17)));

    let mut e = exec("commands: [[\"/bin/echo\", \"seventeen\"]]\ndata_format: value");
    let (ms, r) = gather(&mut e).await;
    assert!(ms.is_empty());
    assert!(r.unwrap_err().to_string().contains("not a number"));

    let mut e = exec(
        r#"commands: [["/bin/echo", "{\"name\":\"py\",\"kind\":\"ALARM\",\"info\":\"disk full\",\"more\":{\"mount\":\"/\"}}"]]
data_format: pyagent
"#,
    );
    let (ms, r) = gather(&mut e).await;
    r.unwrap();
    assert_eq!(ms[0].name, "py");
    assert_eq!(ms[0].kind, MetricKind::Alarm);
    assert_eq!(ms[0].field("more_mount"), Some(&FieldValue::from("/")));
}

#[actix_rt::test]
async fn nagios_exit_status_is_data() {
    let mut e = exec(
        "commands: [\"echo 'LOAD WARNING - load 5 | load1=5;4;8;0'; exit 1\"]\nshell: true\ndata_format: nagios",
    );
    let (ms, r) = gather(&mut e).await;
    r.unwrap();
    assert_eq!(ms[0].name, "job");
    assert_eq!(ms[0].field("state"), Some(&FieldValue::Int(1)));
    assert_eq!(
        ms[0].field("service_output"),
        Some(&FieldValue::from("LOAD WARNING - load 5"))
    );
    assert_eq!(ms[0].field("load1_crit"), Some(&FieldValue::Float(8.0)));
}

#[actix_rt::test]
async fn nonzero_exit_is_an_error_with_first_stderr_line() {
    let mut e = exec("commands: [\"echo 'x v=1'; echo; echo 'boom: disk missing' >&2; echo more >&2; exit 3\"]\nshell: true");
    let (ms, r) = gather(&mut e).await;
    assert!(ms.is_empty());
    let err = r.unwrap_err().to_string();
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(err.contains("boom: disk missing"), "{err}");
    assert!(
        err.ends_with("exit status: 3: boom: disk missing"),
        "only the first line: {err}"
    );

    let mut e = exec("commands: [[\"/nonexistent/plugin\"]]");
    let err = gather(&mut e).await.1.unwrap_err().to_string();
    assert!(
        err.contains("cannot start") && err.contains("/nonexistent/plugin"),
        "{err}"
    );
}

#[actix_rt::test]
async fn environment_is_clean_unless_inherited() {
    let cmd = r#"commands: ["echo \"env n=$(env | wc -l)i,foo=\\\"$FOO\\\",path=\\\"$PATH\\\"\""]
shell: true
environment: {FOO: bar baz}
"#;
    let mut e = exec(cmd);
    let (ms, r) = gather(&mut e).await;
    r.unwrap();
    let Some(FieldValue::Int(n)) = ms[0].field("n") else {
        panic!("{ms:?}")
    };
    assert!(*n <= 5, "clean env has PATH, FOO and what sh adds: {n}");
    assert_eq!(ms[0].field("foo"), Some(&FieldValue::from("bar baz")));
    assert!(ms[0]
        .field("path")
        .and_then(|p| p.as_str())
        .is_some_and(|p| !p.is_empty()));

    let mut e = exec(&format!("{cmd}inherit_env: true\n"));
    let (ms, r) = gather(&mut e).await;
    r.unwrap();
    let Some(FieldValue::Int(n)) = ms[0].field("n") else {
        panic!("{ms:?}")
    };
    assert!(*n as usize >= std::env::vars_os().count(), "{n}");
}

#[actix_rt::test]
async fn hanging_command_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut e = exec(&format!(
        "commands: [\"echo $$ > {d}/leader; sleep 300 & echo $! > {d}/bg; wait\"]\nshell: true\ntimeout: 0.5\n"
    ));
    let started = Instant::now();
    let (ms, r) = gather(&mut e).await;
    let took = started.elapsed();
    assert!(ms.is_empty());
    let err = r.unwrap_err().to_string();
    assert!(err.contains("timed out after 0.5s"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let leader = read_pid(&dir.path().join("leader"), Duration::from_secs(10));
    let bg = read_pid(&dir.path().join("bg"), Duration::from_secs(10));
    assert_eq!(e.stats().pid.load(Relaxed), leader);
    // Our child is reaped (no zombie); the grandchild is killed (an
    // orphan may stay a zombie of PID 1 until it reaps).
    assert!(
        wait_dead(leader, false, Duration::from_secs(10)),
        "{:?}",
        proc_state(leader)
    );
    assert!(
        wait_dead(bg, true, Duration::from_secs(10)),
        "{:?}",
        proc_state(bg)
    );
    assert_eq!(e.stats().kills.load(Relaxed), 1);
}

#[actix_rt::test]
async fn flood_of_100_mb_is_cut_at_max_output_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut e = exec(&format!(
        "commands: [\"echo $$ > {d}/leader; head -c 100000000 /dev/zero | tr '\\\\0' x\"]\nshell: true\ntimeout: 60\n"
    ));
    let before = rss_kb();
    let started = Instant::now();
    let (ms, r) = gather(&mut e).await;
    let took = started.elapsed();
    let grown_kb = rss_kb().saturating_sub(before);
    assert!(ms.is_empty());
    let err = r.unwrap_err().to_string();
    assert!(err.contains("max_output_bytes (1048576 bytes)"), "{err}");
    // Well before the 60 s timeout: the limit, not the clock, stopped it.
    assert!(took < Duration::from_secs(30), "{took:?}");
    eprintln!("flood: cut after {took:?}, RSS grew by {grown_kb} KB");
    assert!(grown_kb < 64 * 1024, "RSS grew by {grown_kb} KB");
    let leader = read_pid(&dir.path().join("leader"), Duration::from_secs(10));
    assert!(
        wait_dead(leader, false, Duration::from_secs(10)),
        "{:?}",
        proc_state(leader)
    );
}

#[test]
fn config_errors_name_the_key() {
    let r = crate::Registry::with_builtins();
    let entry = r.inputs.get("exec").unwrap();
    let cases = [
        ("{}", "input.job.commands", "at least one command"),
        ("commands: [[]]", "input.job.commands.0", "empty command"),
        (
            "commands: [[a]]\nshell: true",
            "input.job.commands.0",
            "one string",
        ),
        ("commands: [a]\ntimeout: 0", "input.job.timeout", "between"),
        ("commands: [a]\ntimeout: .nan", "input.job.timeout", "NaN"),
        (
            "commands: [a]\ntimeout: -1",
            "input.job.timeout",
            "negative",
        ),
        (
            "commands: [a]\nmax_output_bytes: 0",
            "input.job.max_output_bytes",
            "between 1 and",
        ),
        (
            "commands: [a]\ndata_format: xml",
            "input.job",
            "unknown variant `xml`",
        ),
    ];
    for (yaml, key, reason) in cases {
        let cfg = PluginConfig::from_value("input.job", serde_yaml_ng::from_str(yaml).unwrap());
        let err = match (entry.factory)(&cfg) {
            Err(crate::PluginError::Config(c)) => c,
            Err(e) => panic!("{yaml}: not a config error: {e}"),
            Ok(_) => panic!("{yaml}: accepted"),
        };
        assert!(err.key.starts_with(key), "{yaml}: {err}");
        assert!(err.reason.contains(reason), "{yaml}: {err}");
    }
}

#[actix_rt::test]
async fn an_abandoned_gather_still_kills_the_group() {
    // The core drops a gather that outlives the input's interval.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut e = exec(&format!(
        "commands: [\"echo $$ > {d}/leader; sleep 300 & echo $! > {d}/bg; wait\"]\nshell: true\ntimeout: 600\n"
    ));
    let mut a = acc();
    let bg_file = dir.path().join("bg");
    let started = async {
        let end = Instant::now() + Duration::from_secs(30);
        while std::fs::read_to_string(&bg_file).map_or(true, |s| !s.ends_with('\n')) {
            assert!(Instant::now() < end, "the command never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // Drop the gather once the command and its grandchild are running.
    tokio::select! {
        r = e.gather(&mut a) => panic!("the command should still be running: {r:?}"),
        () = started => {}
    }
    let leader = read_pid(&dir.path().join("leader"), Duration::from_secs(10));
    let bg = read_pid(&dir.path().join("bg"), Duration::from_secs(10));
    // tokio reaps the leader in the background; the orphan may stay a zombie of PID 1.
    assert!(
        wait_dead(leader, true, Duration::from_secs(10)),
        "{:?}",
        proc_state(leader)
    );
    assert!(
        wait_dead(bg, true, Duration::from_secs(10)),
        "{:?}",
        proc_state(bg)
    );
}
