use super::*;
use crate::config::PluginConfig;
use crate::metric::{FieldValue, Str};

fn build(yaml: &str) -> PluginResult<OtlpOutput> {
    OtlpOutput::new(&PluginConfig::from_value(
        "otlp",
        serde_yaml_ng::from_str(yaml).unwrap(),
    ))
}

fn error_of(yaml: &str) -> String {
    build(yaml).err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn defaults_follow_the_otlp_exporter_defaults() {
    let out = build("{}").unwrap();
    assert_eq!(out.config.endpoint, "http://127.0.0.1:4318/v1/metrics");
    assert_eq!(out.config.compression, Compression::Gzip);
    assert!(!out.settings.insecure_skip_verify);
    assert_eq!(out.settings.timeout.as_secs_f64(), 10.0);
}

#[test]
fn config_errors_name_the_key() {
    for (yaml, key) in [
        ("endpoint: ftp://x/v1/metrics", "endpoint"),
        ("endpoint: 'not a url'", "endpoint"),
        ("compression: zstd", "compression"),
        ("timeout: 0", "timeout"),
        ("timeout: -1", "timeout"),
        ("connect_timeout: 7200", "connect_timeout"),
        ("headers: {'bad header': x}", "headers.bad header"),
        ("headers: {X-A: \"a\\nb\"}", "headers.X-A"),
        (
            "headers: {Content-Type: text/plain}",
            "headers.Content-Type",
        ),
        ("ca_file: ''", "ca_file"),
        ("insecure_skip_verify: maybe", "insecure_skip_verify"),
    ] {
        let e = error_of(yaml);
        assert!(e.contains(&format!("`otlp.{key}`")), "{yaml}: {e}");
    }
}

#[test]
fn retryable_statuses_are_those_of_the_spec() {
    let r: Vec<u16> = (100..600).filter(|s| retryable(*s)).collect();
    assert_eq!(r, [429, 502, 503, 504]);
}

#[test]
fn retry_after_reads_seconds_and_http_dates_and_is_capped() {
    let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
    assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
    assert_eq!(
        retry_after("Thu, 03 Dec 2026 10:00:30 GMT", now),
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        retry_after("Thu, 03 Dec 2026 09:00:00 GMT", now),
        Some(Duration::ZERO),
        "a date in the past: now"
    );
    assert_eq!(retry_after("99999999", now), Some(MAX_RETRY_AFTER));
    assert_eq!(retry_after("soon", now), None);
    assert_eq!(retry_after("-5", now), None);
}

/// The request decodes (with prost, the same schema) to what the README
/// says; the upstream decoder's view is checked in tests/outputs_otlp.rs.
#[test]
fn encoder_groups_by_resource_and_keeps_integers_exact() {
    let mut enc = encode::Encoder::new(vec![Str::new("host_name"), Str::new("node_ip")]);
    let m = |host: &str, v: i64| {
        Metric::new("app", 5)
            .with_tag("host_name", host)
            .with_tag("zone", "a")
            .with_field("v", v)
            .with_field("txt", "x")
    };
    let e = enc.encode(&[m("a", 1), m("b", 2), m("a", i64::MIN)], 10);
    assert_eq!(e.points, 3);
    let bytes = e.request.encode_to_vec();
    let back = proto::collector::ExportMetricsServiceRequest::decode(&bytes[..]).unwrap();
    assert_eq!(back.resource_metrics.len(), 2, "one resource per host");
    let values: Vec<Vec<i64>> = back
        .resource_metrics
        .iter()
        .map(|rm| {
            let ms = &rm.scope_metrics[0].metrics;
            assert_eq!(ms.len(), 1);
            assert_eq!(ms[0].name, "app_v");
            match &ms[0].data {
                Some(proto::metrics::metric::Data::Gauge(g)) => g
                    .data_points
                    .iter()
                    .map(|p| match p.value {
                        Some(proto::metrics::number_data_point::Value::AsInt(i)) => i,
                        ref other => panic!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(values, vec![vec![1, i64::MIN], vec![2]]);
    // Nothing numeric: nothing to send.
    let only_text = Metric::new("app", 5).with_field("s", FieldValue::from("x"));
    assert_eq!(enc.encode(&[only_text], 10).points, 0);
}

#[test]
fn start_times_are_forgotten_after_a_day_without_points() {
    let mut enc = encode::Encoder::new(Vec::new());
    let day = 24 * 3600 * 1_000_000_000i64;
    let n = |t: i64| Metric::new("network", t).with_field("bytes_recv", 5u64);
    enc.encode(&[n(1_000)], 1_000);
    assert_eq!(enc.starts.len(), 1);
    enc.encode(&[], 1_000 + day / 2);
    assert_eq!(enc.starts.len(), 1);
    enc.encode(&[], 2_000 + day);
    assert_eq!(enc.starts.len(), 0);
}
