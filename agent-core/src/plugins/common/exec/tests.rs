use super::*;
use crate::format::parse::{Parser, ParserConfig};
use crate::metric::{FieldValue, Metric, MetricKind};

fn lines(input: &[u8], max: usize, chunk: usize) -> Vec<LineRead> {
    // A reader that returns at most `chunk` bytes per read, to split lines
    // across reads the way a pipe does.
    struct Chunky<'a>(&'a [u8], usize);
    impl Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut out = Vec::new();
    read_lines_bounded(Chunky(input, chunk), max, |l| {
        out.push(l);
        true
    });
    out
}

#[test]
fn bounded_lines_drop_long_ones_across_reads() {
    let mut input = b"short\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100));
    input.extend(b"\nok\nexactly10c\n");
    input.extend(std::iter::repeat_n(b'y', 11));
    for chunk in [1, 3, 7, 1000] {
        let got = lines(&input, 10, chunk);
        assert_eq!(
            got,
            vec![
                LineRead::Line("short".into()),
                LineRead::TooLong(100),
                LineRead::Line("ok".into()),
                LineRead::Line("exactly10c".into()),
                LineRead::TooLong(11),
            ],
            "chunk {chunk}"
        );
    }
    assert_eq!(lines(b"last", 10, 2), vec![LineRead::Line("last".into())]);
    assert!(lines(b"", 10, 2).is_empty());
}

#[test]
fn command_specs() {
    let env = EnvConfig::default();
    let c = CommandSpec::new(
        &CommandLine::Argv(vec!["/bin/echo".into(), "a b".into()]),
        &env,
    )
    .unwrap();
    assert_eq!(
        (c.program.as_str(), c.args.clone()),
        ("/bin/echo", vec!["a b".to_string()])
    );
    let c = CommandSpec::new(&CommandLine::Line("echo  a b".into()), &env).unwrap();
    assert_eq!(c.args, vec!["a", "b"]);
    let shell = EnvConfig {
        shell: true,
        ..Default::default()
    };
    let c = CommandSpec::new(&CommandLine::Line("echo $HOME | wc".into()), &shell).unwrap();
    assert_eq!(c.program, "/bin/sh");
    assert_eq!(c.args, vec!["-c", "echo $HOME | wc"]);
    assert!(CommandSpec::new(&CommandLine::Argv(vec![]), &env).is_err());
    assert!(CommandSpec::new(&CommandLine::Line("  ".into()), &shell).is_err());
    assert!(CommandSpec::new(&CommandLine::Argv(vec!["a".into()]), &shell).is_err());
    let bad_env = EnvConfig {
        environment: [("A=B".to_string(), "x".to_string())].into(),
        ..Default::default()
    };
    assert!(CommandSpec::new(&CommandLine::Line("x".into()), &bad_env).is_err());
}

#[test]
fn line_protocol_round_trips_through_the_parser() {
    let m = Metric::new("my meas,x", 1_700_000_000_000_000_001)
        .with_tag("host name", "a=b,c")
        .with_tag("empty", "")
        .with_field("i", -3i64)
        .with_field("u", u64::MAX)
        .with_field("f", 0.1)
        .with_field("whole", 2.0)
        .with_field("b", false)
        .with_field("s", "quote \" and \\ back, comma=eq")
        .with_field("nan", f64::NAN);
    let mut line = String::new();
    assert!(encode::line_protocol(&m, &mut line));
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "{line}"
    );
    let p = Parser::new(ParserConfig::default());
    let mut out = Vec::new();
    p.parse_line(&line, &Metric::new("t", 0), &mut out).unwrap();
    let back = &out[0];
    assert_eq!(back.name, m.name);
    assert_eq!(back.timestamp_ns, m.timestamp_ns);
    assert_eq!(back.tags, vec![("host name".into(), "a=b,c".into())]);
    let mut want = m.fields.clone();
    want.retain(|(k, _)| k != "nan");
    assert_eq!(back.fields, want);
    // No fields: nothing to write.
    assert!(!encode::line_protocol(
        &Metric::new("x", 0),
        &mut String::new()
    ));
}

#[test]
fn json_encoders() {
    let mut m = Metric::new("n", 2_000_000_000)
        .with_tag("t", "v")
        .with_field("x", 1.5);
    m.kind = MetricKind::Alarm;
    let mut s = String::new();
    encode::json_line(&m, &mut s);
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["kind"], "ALARM");
    assert_eq!(v["timestamp"], 2);
    assert_eq!(v["tags"]["t"], "v");
    assert_eq!(v["fields"]["x"], 1.5);
    // PyAgent's flat shape parses back with the pyagent parser.
    let mut s = String::new();
    encode::pyagent_line(&m, &mut s);
    let p = Parser::new(serde_yaml_ng::from_str("data_format: pyagent").unwrap());
    let mut out = Vec::new();
    p.parse_line(&s, &Metric::new("other", 0).with_tag("t", "old"), &mut out)
        .unwrap();
    assert_eq!(out[0].name, "n");
    assert_eq!(out[0].kind, MetricKind::Alarm);
    assert_eq!(out[0].tag("t"), Some("v"));
    assert_eq!(out[0].field("x"), Some(&FieldValue::Float(1.5)));
}

#[test]
fn sample_configs_build() {
    use crate::config::PluginConfig;
    let r = crate::Registry::with_builtins();
    let value = |s: &str| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(s).unwrap();
    for (name, entry) in [("exec", &r.inputs["exec"]), ("execd", &r.inputs["execd"])] {
        let cfg = PluginConfig::from_value(name, value(entry.sample));
        assert!((entry.factory)(&cfg).is_ok(), "input {name}");
    }
    let p = &r.processors["execd"];
    let inner = value(p.sample)["use_plugin_execd"].clone();
    assert!((p.factory)(&PluginConfig::from_value("execd", inner)).is_ok());
    let o = &r.outputs["execd"];
    assert!((o.factory)(&PluginConfig::from_value("execd", value(o.sample))).is_ok());
}
