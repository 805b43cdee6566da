use super::*;
use crate::metric::MetricKind;

fn template() -> Metric {
    Metric::new("job", 1_000).with_tag("host_name", "h1")
}

fn parser(yaml: &str) -> Parser {
    Parser::new(serde_yaml_ng::from_str(yaml).unwrap())
}

fn f(m: &Metric, k: &str) -> FieldValue {
    m.field(k)
        .unwrap_or_else(|| panic!("{k} missing in {m:?}"))
        .clone()
}

#[test]
fn influx_good_lines() {
    let p = parser("data_format: influx");
    let mut out = Vec::new();
    let text = "# comment\n\
        cpu,host=a\\ b,dc=x\\,y usage=1.5,count=3i,big=18446744073709551615u,ok=t,msg=\"say \\\"hi\\\", a=b\" 1700000000000000000\n\
        \n\
        my\\ meas value=2\n";
    let errs = p.parse_text(text, &template(), &mut out);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(out.len(), 2);
    let m = &out[0];
    assert_eq!(m.name, "cpu");
    assert_eq!(m.timestamp_ns, 1_700_000_000_000_000_000);
    assert_eq!(m.tag("host_name"), Some("h1"));
    assert_eq!(m.tag("host"), Some("a b"));
    assert_eq!(m.tag("dc"), Some("x,y"));
    assert_eq!(f(m, "usage"), FieldValue::Float(1.5));
    assert_eq!(f(m, "count"), FieldValue::Int(3));
    assert_eq!(f(m, "big"), FieldValue::Uint(u64::MAX));
    assert_eq!(f(m, "ok"), FieldValue::Bool(true));
    assert_eq!(f(m, "msg"), FieldValue::from("say \"hi\", a=b"));
    assert_eq!(out[1].name, "my meas");
    assert_eq!(out[1].timestamp_ns, 1_000, "no timestamp: the template's");
}

#[test]
fn influx_malformed_lines_are_skipped_and_numbered() {
    let p = parser("{}");
    let mut out = Vec::new();
    let text = "good v=1\nnofields\nbad v=abc\nbad2,tag v=1\nbad3 v=1i2\nbad4 v=\"open\ngood v=2 123\nbad5 v=1 notatime\n";
    let errs = p.parse_text(text, &template(), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].timestamp_ns, 123);
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6, 8], "{errs:?}");
    assert!(
        errs[0].to_string().contains("missing fields"),
        "{}",
        errs[0]
    );
}

#[test]
fn json_object_array_nested_tags_time_and_strings() {
    let p = parser(
        "data_format: json\nname_key: metric\ntag_keys: [dev]\njson_time_key: ts\n\
         json_time_format: unix_ms\njson_string_fields: [state]",
    );
    let mut out = Vec::new();
    let text = r#"[{"metric":"disk","dev":"sda","ts":1700000000123,"io":{"r":5,"w":2.5},"state":"up","other":"dropped","ok":true,"n":null,"arr":[1,2]},
                  {"dev":"sdb","io":{"r":1}}]"#;
    let errs = p.parse_text(text, &template(), &mut out);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(out.len(), 2);
    let m = &out[0];
    assert_eq!(m.name, "disk");
    assert_eq!(m.tag("dev"), Some("sda"));
    assert_eq!(m.timestamp_ns, 1_700_000_000_123_000_000);
    assert_eq!(f(m, "io_r"), FieldValue::Int(5));
    assert_eq!(f(m, "io_w"), FieldValue::Float(2.5));
    assert_eq!(f(m, "state"), FieldValue::from("up"));
    assert_eq!(f(m, "ok"), FieldValue::Bool(true));
    assert_eq!(f(m, "arr_1"), FieldValue::Int(2));
    assert!(m.field("other").is_none() && m.field("n").is_none());
    assert_eq!(out[1].name, "job");
    assert_eq!(out[1].timestamp_ns, 1_000);
}

#[test]
fn json_rfc3339_all_strings_and_lines() {
    let p = parser(
        "data_format: json\njson_time_key: t\njson_time_format: rfc3339\njson_string_fields: ['*']",
    );
    let mut out = Vec::new();
    let text = "{\"t\":\"2026-01-02T03:04:05Z\",\"s\":\"x\"}\nnot json\n[1]\n{\"t\":\"yesterday\"}\n{\"s\":\"y\"}\n";
    let errs = p.parse_text(text, &template(), &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].timestamp_ns, 1_767_323_045_000_000_000);
    assert_eq!(f(&out[0], "s"), FieldValue::from("x"));
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 4], "{errs:?}");
    assert!(
        errs[1].reason.contains("expected a JSON object"),
        "{errs:?}"
    );
}

#[test]
fn value_types() {
    let cases = [
        ("integer", " 42\n", Some(FieldValue::Int(42))),
        ("integer", "42.0", Some(FieldValue::Int(42))),
        ("integer", "4.2", None),
        ("float", "0.25", Some(FieldValue::Float(0.25))),
        ("float", "nan", None),
        ("float", "", None),
        (
            "string",
            "hello world\n",
            Some(FieldValue::from("hello world")),
        ),
        ("boolean", "True", Some(FieldValue::Bool(true))),
        ("boolean", "maybe", None),
    ];
    for (ty, text, want) in cases {
        let p = parser(&format!("data_format: value\ndata_type: {ty}"));
        let mut out = Vec::new();
        let errs = p.parse_text(text, &template(), &mut out);
        match want {
            Some(v) => {
                assert!(errs.is_empty(), "{ty} {text:?}: {errs:?}");
                assert_eq!(out[0].name, "job");
                assert_eq!(f(&out[0], "value"), v);
            }
            None => {
                assert!(out.is_empty(), "{ty} {text:?}");
                assert_eq!(errs.len(), 1);
            }
        }
    }
}

#[test]
fn nagios_state_output_and_perfdata() {
    let mut out = Vec::new();
    let text = "DISK WARNING - free space: / 3326 MB (56%) | /=2643MB;5948;5958;0;5968 'in use'=56%;10:80;~:90 time=0.01s\n\
        second line\n\
        third | load=1.5;;;0\n";
    parse_nagios(text, Some(1), &template(), &mut out).unwrap();
    let m = &out[0];
    assert_eq!(f(m, "state"), FieldValue::Int(1));
    assert_eq!(
        f(m, "service_output"),
        FieldValue::from("DISK WARNING - free space: / 3326 MB (56%)")
    );
    assert_eq!(
        f(m, "long_service_output"),
        FieldValue::from("second line\nthird")
    );
    assert_eq!(f(m, "/_value"), FieldValue::Float(2643.0));
    assert_eq!(f(m, "/_unit"), FieldValue::from("MB"));
    assert_eq!(f(m, "/_warn"), FieldValue::Float(5948.0));
    assert_eq!(f(m, "/_crit"), FieldValue::Float(5958.0));
    assert_eq!(f(m, "/_min"), FieldValue::Float(0.0));
    assert_eq!(f(m, "/_max"), FieldValue::Float(5968.0));
    assert_eq!(f(m, "in_use_value"), FieldValue::Float(56.0));
    assert_eq!(f(m, "in_use_warn_lt"), FieldValue::Float(10.0));
    assert_eq!(f(m, "in_use_warn_gt"), FieldValue::Float(80.0));
    assert_eq!(f(m, "in_use_crit_gt"), FieldValue::Float(90.0));
    assert!(m.field("in_use_crit_lt").is_none());
    assert_eq!(f(m, "time_value"), FieldValue::Float(0.01));
    assert_eq!(f(m, "load_value"), FieldValue::Float(1.5));
    assert_eq!(f(m, "load_min"), FieldValue::Float(0.0));
}

#[test]
fn nagios_malformed_perfdata_keeps_the_rest() {
    let mut out = Vec::new();
    let e = parse_nagios(
        "CRIT | a=1 b=x c=2;y junk d=U",
        Some(2),
        &template(),
        &mut out,
    )
    .unwrap_err();
    assert!(e.reason.contains("b: invalid value"), "{e}");
    assert!(e.reason.contains("c: invalid warn"), "{e}");
    assert!(e.reason.contains("junk"), "{e}");
    let m = &out[0];
    assert_eq!(f(m, "state"), FieldValue::Int(2));
    assert_eq!(f(m, "a_value"), FieldValue::Float(1.0));
    assert!(m.field("d_value").is_none());
    // Killed by a signal or an out-of-range code: UNKNOWN.
    let mut out = Vec::new();
    parse_nagios("", None, &template(), &mut out).unwrap();
    parse_nagios("x", Some(7), &template(), &mut out).unwrap();
    assert_eq!(f(&out[0], "state"), FieldValue::Int(3));
    assert_eq!(f(&out[1], "state"), FieldValue::Int(3));
}

#[test]
fn pyagent_shape() {
    let p = parser("data_format: pyagent");
    let mut out = Vec::new();
    let text = r#"{"name":"myplug","time":"2021-11-08T16:58:55+08:00","timestamp":1636361935,"host_name":"override","x":1,"cpu":{"user":1.5},"label":"a","up":true}
{"name":"myplug","kind":"ALARM","time":"2021-11-08T16:58:55+08:00","code":"c","info":"too high"}
{"x":2}
{"name":"n","kind":"WHAT","x":1}
["not", "an object"]
{"name":"only header"}
"#;
    let errs = p.parse_text(text, &template(), &mut out);
    assert_eq!(out.len(), 3, "{out:?}");
    let m = &out[0];
    assert_eq!(m.name, "myplug");
    assert_eq!(m.kind, MetricKind::Metric);
    assert_eq!(m.timestamp_ns, 1_636_361_935_000_000_000);
    assert_eq!(m.tag("host_name"), Some("override"));
    assert_eq!(f(m, "x"), FieldValue::Int(1));
    assert_eq!(f(m, "cpu_user"), FieldValue::Float(1.5));
    assert_eq!(f(m, "label"), FieldValue::from("a"));
    assert_eq!(f(m, "up"), FieldValue::Bool(true));
    assert!(m.field("time").is_none() && m.field("timestamp").is_none());
    assert_eq!(out[1].kind, MetricKind::Alarm);
    assert_eq!(
        out[1].timestamp_ns, 1_636_361_935_000_000_000,
        "ISO time with offset"
    );
    assert_eq!(f(&out[1], "info"), FieldValue::from("too high"));
    assert_eq!(out[2].name, "job", "no name: the input's");
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 5, 6], "{errs:?}");
}

#[test]
fn parse_line_for_streams() {
    let p = parser("data_format: json");
    let mut out = Vec::new();
    p.parse_line("{\"a\":1}\r\n", &template(), &mut out)
        .unwrap();
    p.parse_line("   ", &template(), &mut out).unwrap();
    assert!(p.parse_line("{\"a\":", &template(), &mut out).is_err());
    assert_eq!(out.len(), 1);
}
