use super::*;
use crate::metric::FieldValue;
use std::sync::atomic::Ordering::Relaxed;

/// A Python processor: tags every metric `via=py`, drops `drop`, doubles
/// `dup`, sleeps on `slow`, garbles `bad`, echoes `#` lines.
const SCRIPT: &str = r#"
import sys, time
for line in sys.stdin:
    if line.startswith('#'):
        sys.stdout.write(line)
        sys.stdout.flush()
        continue
    series, rest = line.rstrip('\n').split(' ', 1)
    name = series.split(',', 1)[0]
    if name == 'drop':
        continue
    if name == 'slow':
        time.sleep(1.0)
    if name == 'bad':
        print('this is not line protocol')
        continue
    out = series + ',via=py ' + rest
    print(out)
    if name == 'dup':
        print(out)
    sys.stdout.flush()
"#;

fn processor(extra: &str) -> ExecdProcessor {
    let yaml = format!("command: [python3, -c, {:?}]\n{extra}", SCRIPT);
    ExecdProcessor::new("p", serde_yaml_ng::from_str(&yaml).unwrap()).unwrap()
}

fn m(name: &str, v: i64) -> Metric {
    Metric::new(name, 1_000 + v)
        .with_tag("host_name", "h1")
        .with_field("v", v)
}

#[test]
fn transforms_drops_duplicates_and_keeps_alarms_in_place() {
    let mut p = processor("batch_timeout: 30");
    let mut alarm = m("cpu", 99);
    alarm.kind = MetricKind::Alarm;
    let mut batch = vec![m("cpu", 1), m("drop", 2), alarm.clone(), m("dup", 3)];
    p.apply(&mut batch).unwrap();
    let names: Vec<(&str, MetricKind)> = batch.iter().map(|m| (m.name.as_str(), m.kind)).collect();
    assert_eq!(
        names,
        vec![
            ("cpu", MetricKind::Metric),
            ("cpu", MetricKind::Alarm),
            ("dup", MetricKind::Metric),
            ("dup", MetricKind::Metric)
        ]
    );
    assert_eq!(batch[1], alarm, "alarms are not sent to the program");
    assert_eq!(batch[0].tag("via"), Some("py"));
    assert_eq!(batch[0].tag("host_name"), Some("h1"));
    assert_eq!(batch[0].field("v"), Some(&FieldValue::Int(1)));
    assert_eq!(batch[0].timestamp_ns, 1_001);
    // More batches on the same program stay in step.
    for round in 0..5 {
        let mut batch = vec![m("a", round), m("b", round)];
        p.apply(&mut batch).unwrap();
        assert_eq!(batch.len(), 2);
        assert!(batch
            .iter()
            .all(|x| x.field("v") == Some(&FieldValue::Int(round))));
    }
    assert_eq!(p.stats().spawns.load(Relaxed), 1);
}

#[test]
fn late_answers_after_a_timeout_do_not_leak_into_later_batches() {
    let mut p = processor("batch_timeout: 0.3");
    let mut batch = vec![m("slow", 1)];
    let err = p.apply(&mut batch).unwrap_err().to_string();
    assert!(err.contains("batch_timeout"), "{err}");
    assert_eq!(batch, vec![m("slow", 1)], "passed on unchanged");
    // Keep applying fresh batches until one is answered in time: its
    // content must be its own, never the late `slow` answer.
    let mut ok = false;
    for round in 10..60 {
        let mut batch = vec![m("fresh", round)];
        if p.apply(&mut batch).is_ok() {
            assert_eq!(batch.len(), 1, "{batch:?}");
            assert_eq!(batch[0].name, "fresh");
            assert_eq!(batch[0].field("v"), Some(&FieldValue::Int(round)));
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ok, "the program never caught up");
}

#[test]
fn malformed_answers_are_counted_and_the_rest_kept() {
    let mut p = processor("batch_timeout: 30");
    let mut batch = vec![m("ok", 1), m("bad", 2), m("ok", 3)];
    let err = p.apply(&mut batch).unwrap_err().to_string();
    assert!(err.contains("1 malformed lines"), "{err}");
    assert_eq!(batch.len(), 2);
    assert_eq!(p.stats().parse_errors.load(Relaxed), 1);
}

#[test]
fn a_dead_program_passes_batches_on_unchanged() {
    let mut p = ExecdProcessor::new(
        "p",
        serde_yaml_ng::from_str("command: [sh, -c, 'exit 0']\nbatch_timeout: 1\nrestart_delay: 60")
            .unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        let mut batch = vec![m("x", 1)];
        assert!(p.apply(&mut batch).is_err());
        assert_eq!(batch, vec![m("x", 1)]);
    }
}
