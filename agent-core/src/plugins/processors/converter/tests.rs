use super::funcs::{get_domain, get_domain_host, plain_text, Func};
use super::*;
use crate::format::human::py_round;

fn f(func: &str, v: impl Into<FieldValue>) -> Option<FieldValue> {
    Func::by_name(func)
        .unwrap()
        .apply(&v.into(), &mut String::new())
}

fn s(func: &str, v: impl Into<FieldValue>) -> String {
    match f(func, v) {
        Some(FieldValue::Str(s)) => s.to_string(),
        other => panic!("{func}: expected a string, got {other:?}"),
    }
}

#[test]
fn human_bytes_units_and_edges() {
    assert_eq!(s("human_bytes", 0i64), "0 B");
    assert_eq!(s("human_bytes", 1000i64), "1000 B");
    assert_eq!(s("human_bytes", -5i64), "-5 B");
    assert_eq!(s("human_bytes", 512.5), "512.5 B");
    assert_eq!(s("human_bytes", 1024i64), "1.0 KB");
    assert_eq!(s("human_bytes", 8_348_397_568u64), "7.8 GB");
    // Past the last unit: stays in YB.
    assert_eq!(s("human_bytes", 2f64.powi(90)), "1024.0 YB");
    assert_eq!(s("human_base", 1536i64), "1.5 KB");
    assert_eq!(s("human_kib", 1536i64), "1.5 KiB");
    assert_eq!(s("human_1k_bytes", 1000i64), "1.0 KB");
    // 999.999 KB rounds to 1000.0 KB and moves up a unit.
    assert_eq!(s("human_1k_bytes", 999_999i64), "1.0 MB");
    assert_eq!(s("human_bit", 1000i64), "1.0 Kb");
    assert_eq!(s("human_bps", 1_500_000i64), "1.5 Mbps");
    assert_eq!(s("human_bps", 999i64), "999 bps");
    // Not numbers: PyAgent raised, so the default applies.
    assert_eq!(f("human_bytes", "1024"), None);
    assert_eq!(f("human_bytes", true), None);
    assert_eq!(f("human_bytes", f64::NAN), None);
}

#[test]
fn rounding_is_pythons() {
    assert_eq!(py_round(2.675, 2), 2.67);
    assert_eq!(py_round(0.125, 2), 0.12);
    assert_eq!(py_round(0.375, 2), 0.38);
    assert_eq!(py_round(1.005, 2), 1.0);
    assert_eq!(py_round(0.25, 1), 0.2);
    assert_eq!(py_round(1.05, 1), 1.1);
    assert_eq!(py_round(-7.777, 2), -7.78);
    assert_eq!(f("get_round", 2.675), Some(FieldValue::Float(2.67)));
    assert_eq!(f("get_round", " 123   "), Some(FieldValue::Float(123.0)));
    assert_eq!(f("get_round", 7i64), Some(FieldValue::Float(7.0)));
    assert_eq!(f("get_round", "1a"), None);
}

#[test]
fn comma_int_str_bool() {
    assert_eq!(s("get_comma", 1_234_567i64), "1,234,567");
    assert_eq!(s("get_comma", 100i64), "100");
    assert_eq!(s("get_comma", -1234.5), "-1,234.5");
    assert_eq!(s("get_comma", 1_234_567.0), "1,234,567.0");
    assert_eq!(s("get_comma", 123_456u64), "123,456");
    assert_eq!(f("get_comma", "1234"), None);
    assert_eq!(f("get_int", " 123 "), Some(FieldValue::Int(123)));
    assert_eq!(f("get_int", "1.5"), None);
    assert_eq!(f("get_int", 3.9), Some(FieldValue::Int(3)));
    assert_eq!(f("get_int", -3.9), Some(FieldValue::Int(-3)));
    assert_eq!(f("get_int", true), Some(FieldValue::Int(1)));
    assert_eq!(f("get_int", f64::INFINITY), None);
    assert_eq!(s("get_str", true), "True");
    assert_eq!(s("get_str", 5000.0), "5000.0");
    assert_eq!(f("get_bool", "true"), Some(FieldValue::Bool(true)));
    assert_eq!(f("get_bool", 1i64), Some(FieldValue::Bool(true)));
    assert_eq!(f("get_bool", "T"), Some(FieldValue::Bool(true)));
    // str(1.0) is "1.0", which is not in PyAgent's true list.
    assert_eq!(f("get_bool", 1.0), Some(FieldValue::Bool(false)));
    assert_eq!(f("get_bool", "yes"), Some(FieldValue::Bool(false)));
}

#[test]
fn hash_plain_text_domains() {
    assert_eq!(s("get_hash", "abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(s("get_hash", 1i64), "c4ca4238a0b923820dcc509a6f75849b");
    assert_eq!(s("get_hash", ""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(
        plain_text("  <p>Hello</p>\n\t <b>World</b>  "),
        "Hello World"
    );
    assert_eq!(s("get_plain_text", "a<br/>b  c"), "ab c");
    assert_eq!(f("get_plain_text", 5i64), None);
    assert_eq!(get_domain(" www.fufuok.com "), Some("www.fufuok.com"));
    assert_eq!(get_domain("xn--fiq06l2rdsvs.xn--fiqs8s"), None);
    for bad in [
        "a--b.com",
        "localhost",
        "x.c",
        "-a.com",
        "a-.com",
        "a.b",
        "中国.com",
        "a_b.com",
    ] {
        assert_eq!(get_domain(bad), None, "{bad}");
    }
    assert_eq!(s("get_domain", "Example.ORG"), "Example.ORG");
    assert_eq!(get_domain_host(" www "), Some("www"));
    assert_eq!(get_domain_host("_dmarc"), Some("_dmarc"));
    assert_eq!(get_domain_host("*.x"), Some("*.x"));
    assert_eq!(get_domain_host("a b"), None);
    assert_eq!(get_domain_host(""), None);
    assert_eq!(f("get_domain", "not a domain"), None);
}

fn conv(yaml: &str) -> Converter {
    let cfg = PluginConfig::from_value(
        "processor.mem.use_plugin_converter",
        serde_yaml_ng::from_str(yaml).unwrap(),
    );
    Converter::from_config(&cfg).unwrap()
}

fn mem() -> Metric {
    Metric::new("mem", 0)
        .with_tag("node_ip", "1.2.3.4")
        .with_field("total", 8_348_397_568u64)
        .with_field("used", 1024u64)
        .with_field("percent", 33.333)
        .with_field("bytes_sent", 2048u64)
        .with_field("bytes_recv", 0u64)
        .with_field("Timestamp", 1u64)
}

fn keys(m: &Metric) -> Vec<&str> {
    m.fields.iter().map(|(k, _)| k.as_str()).collect()
}

#[test]
fn prefix_suffix_add_new_fields_and_keep_old() {
    let mut c = conv("{human_bytes: {fields_items: [total, used], name_prefix: human_}}");
    let mut b = vec![mem()];
    c.apply(&mut b).unwrap();
    assert_eq!(b[0].field("human_total"), Some(&FieldValue::from("7.8 GB")));
    assert_eq!(b[0].field("human_used"), Some(&FieldValue::from("1.0 KB")));
    assert_eq!(b[0].field("total"), Some(&FieldValue::Uint(8_348_397_568)));
}

#[test]
fn without_prefix_or_suffix_the_field_is_replaced_in_place() {
    let mut c = conv("{get_round: {fields_suffix: [cent]}}");
    let mut b = vec![mem()];
    c.apply(&mut b).unwrap();
    assert_eq!(keys(&b[0])[2], "percent");
    assert_eq!(b[0].field("percent"), Some(&FieldValue::Float(33.33)));
    assert_eq!(b[0].fields.len(), 6);
}

#[test]
fn pyagent_demo_example_regex_default_fields_conf() {
    // etc/processor/demo.yaml of PyAgent, trimmed: regexes are
    // case-insensitive searches, invalid ones (`[`, a number) are skipped.
    let mut c = conv(
        r#"
human_bytes:
  fields_items: [total]
  fields_prefix: [bytes_]
  fields_regex: ['^TIME', '[', 1]
  default_value: 0
  name_prefix: human_
  name_suffix: _x
  fields_conf:
    bytes_recv:
      default_value: 1
      name_override: demo_new_name_recv
      delete_old: true
get_comma:
  fields_prefix: [bytes_]
"#,
    );
    let mut b = vec![mem()];
    c.apply(&mut b).unwrap();
    let m = &b[0];
    assert_eq!(m.field("human_total_x"), Some(&FieldValue::from("7.8 GB")));
    assert_eq!(
        m.field("human_bytes_sent_x"),
        Some(&FieldValue::from("2.0 KB"))
    );
    assert_eq!(m.field("human_Timestamp_x"), Some(&FieldValue::from("1 B")));
    // "0 B" is truthy; the field's own default is not needed, but the
    // rename and delete_old are applied.
    assert_eq!(
        m.field("demo_new_name_recv"),
        Some(&FieldValue::from("0 B"))
    );
    assert!(m.field("bytes_recv").is_none());
    assert!(m.field("human_used_x").is_none());
    // get_comma runs after human_bytes: bytes_sent is still there.
    assert_eq!(m.field("bytes_sent"), Some(&FieldValue::from("2,048")));
}

#[test]
fn default_value_replaces_failures_and_falsy_results() {
    let mut c = conv(
        "{get_int: {fields_items: [a, b, c], default_value: -1, fields_conf: {c: {default_value: 9}}}}",
    );
    let mut b = vec![Metric::new("x", 0)
        .with_field("a", "12")
        .with_field("b", "zero")
        .with_field("c", "0")];
    c.apply(&mut b).unwrap();
    assert_eq!(b[0].field("a"), Some(&FieldValue::Int(12)));
    assert_eq!(b[0].field("b"), Some(&FieldValue::Int(-1)));
    // 0 is falsy: the field's own default wins over the function's.
    assert_eq!(b[0].field("c"), Some(&FieldValue::Int(9)));
}

#[test]
fn failure_without_default_is_reported_after_the_whole_batch() {
    let mut c = conv("{human_bytes: {fields_items: [total], name_prefix: h_}}");
    let mut b = vec![
        Metric::new("x", 0).with_field("total", "lots"),
        Metric::new("x", 0).with_field("total", 2048i64),
    ];
    let err = c.apply(&mut b).unwrap_err().to_string();
    assert!(
        err.contains("1 field(s)") && err.contains("human_bytes"),
        "{err}"
    );
    assert_eq!(b[0].fields.len(), 1);
    assert_eq!(b[1].field("h_total"), Some(&FieldValue::from("2.0 KB")));
}

#[test]
fn config_errors_name_the_key() {
    let cfg = PluginConfig::from_value(
        "conv",
        serde_yaml_ng::from_str("{human_bites: {fields_items: [a]}}").unwrap(),
    );
    let e = Converter::from_config(&cfg).unwrap_err();
    assert_eq!(e.key, "conv.human_bites");
    assert!(e.reason.contains("human_bytes"), "{e}");
    let cfg = PluginConfig::from_value(
        "conv",
        serde_yaml_ng::from_str("{get_int: {fields_prefix: 3}}").unwrap(),
    );
    let e = Converter::from_config(&cfg).unwrap_err();
    assert!(e.key.starts_with("conv.get_int.fields_prefix"), "{e}");
}
