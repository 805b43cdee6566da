//! Metrics to an OTLP `ExportMetricsServiceRequest`.
//!
//! - Series come from the input's schema ([`crate::schema`]), as for the
//!   Prometheus exposition: identity fields and group indexes become
//!   attributes, indexed keys series of their own (`cpu_percpu_percent`
//!   with `cpu="0"`). Metric names are `<measurement>_<field>`.
//! - Schema counters are monotonic cumulative sums, everything else numeric
//!   a gauge; the schema's unit (UCUM) and help go with each metric.
//!   String fields and the schema's text fields are not sent: OTLP number
//!   points cannot hold them, and as attributes every new value would make a
//!   new series. Booleans are 0/1. Alarms are events, not series: skipped.
//! - The `info` tags are the resource (`host_name` → `host.name`, `node_ip`
//!   → `host.ip`, others by their own key) with `service.name: agent` and
//!   `service.version`; the other tags are data-point attributes.
//! - A sum's start time is kept per series: the time it was first seen,
//!   moved to the previous point's time when the value drops (a reset).
use super::proto::{collector, common, metrics, resource};
use crate::metric::{FieldValue, Metric, MetricKind, Str};
use crate::schema::{lookup, tag_text, FieldSpec, Kind, Unit};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// A series' sum state is forgotten after this long without a point.
const SERIES_TTL_NS: i64 = 24 * 3600 * 1_000_000_000;
/// How often forgotten series are swept.
const SWEEP_EVERY_NS: i64 = 600 * 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct SumState {
    start_ns: u64,
    last_ns: u64,
    last: f64,
}

/// Start times of the cumulative sums, per series.
#[derive(Debug, Default)]
pub struct StartTimes {
    series: HashMap<u64, SumState>,
    last_sweep_ns: i64,
}

impl StartTimes {
    /// Series whose start time is kept.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The start time of the series `key` for a point at `t` with `value`.
    /// A batch offered again after a failed write gives the same answer.
    fn start(&mut self, key: u64, t: u64, value: f64) -> u64 {
        let s = self.series.entry(key).or_insert(SumState {
            start_ns: t,
            last_ns: t,
            last: value,
        });
        if t > s.last_ns {
            if value < s.last {
                // Reset since the previous point: counting began after it.
                s.start_ns = s.last_ns;
            }
            s.last_ns = t;
            s.last = value;
        }
        s.start_ns.min(t)
    }

    fn sweep(&mut self, now_ns: i64) {
        if now_ns - self.last_sweep_ns < SWEEP_EVERY_NS {
            return;
        }
        self.last_sweep_ns = now_ns;
        let oldest = now_ns.saturating_sub(SERIES_TTL_NS).max(0) as u64;
        self.series.retain(|_, s| s.last_ns >= oldest);
    }
}

/// The OTLP unit (UCUM) of a schema unit.
fn ucum(unit: Unit) -> &'static str {
    match unit {
        Unit::None => "",
        Unit::Percent => "%",
        Unit::Bytes => "By",
        Unit::Seconds | Unit::Timestamp => "s",
        Unit::Milliseconds => "ms",
        Unit::Microseconds => "us",
        Unit::BitsPerSecond => "bit/s",
        Unit::KilobitsPerSecond => "kbit/s",
        Unit::MegabitsPerSecond => "Mbit/s",
        Unit::PacketsPerSecond => "{packet}/s",
        Unit::Packets => "{packet}",
        Unit::Characters => "{character}",
    }
}

fn kv(key: &str, value: common::any_value::Value) -> common::KeyValue {
    common::KeyValue {
        key: key.to_string(),
        value: Some(common::AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_kv(key: &str, value: &str) -> common::KeyValue {
    kv(
        key,
        common::any_value::Value::StringValue(value.to_string()),
    )
}

/// The point value of a field, or `None` when it is not a number.
fn point_value(v: &FieldValue) -> Option<metrics::number_data_point::Value> {
    use metrics::number_data_point::Value as V;
    Some(match v {
        FieldValue::Int(i) => V::AsInt(*i),
        FieldValue::Uint(u) => match i64::try_from(*u) {
            Ok(i) => V::AsInt(i),
            Err(_) => V::AsDouble(*u as f64),
        },
        FieldValue::Float(f) => V::AsDouble(*f),
        FieldValue::Bool(b) => V::AsInt(*b as i64),
        FieldValue::Str(_) => return None,
    })
}

fn as_f64(v: &metrics::number_data_point::Value) -> f64 {
    match v {
        metrics::number_data_point::Value::AsInt(i) => *i as f64,
        metrics::number_data_point::Value::AsDouble(f) => *f,
    }
}

/// One resource's metrics being built: metric name (and whether a sum) →
/// index into `metrics`.
struct ResourceBuild {
    key: Vec<(Str, Str)>,
    metrics: Vec<metrics::Metric>,
    index: HashMap<(String, bool), usize>,
}

/// Turns batches into requests. Keeps the sums' start times between
/// batches.
pub struct Encoder {
    /// Tag keys that belong to the resource (main.yaml `info`).
    info_keys: Vec<Str>,
    pub starts: StartTimes,
}

/// What [`Encoder::encode`] made of a batch.
pub struct Encoded {
    pub request: collector::ExportMetricsServiceRequest,
    pub points: usize,
}

impl Encoder {
    pub fn new(info_keys: Vec<Str>) -> Encoder {
        Encoder {
            info_keys,
            starts: StartTimes::default(),
        }
    }

    fn resource(&self, key: &[(Str, Str)]) -> resource::Resource {
        let mut attributes = vec![
            string_kv("service.name", "agent"),
            string_kv("service.version", env!("CARGO_PKG_VERSION")),
        ];
        for (k, v) in key {
            let (name, value) = match k.as_str() {
                "host_name" => (
                    "host.name",
                    common::any_value::Value::StringValue(v.to_string()),
                ),
                // host.ip is a string array in the semantic conventions.
                "node_ip" => (
                    "host.ip",
                    common::any_value::Value::ArrayValue(common::ArrayValue {
                        values: vec![common::AnyValue {
                            value: Some(common::any_value::Value::StringValue(v.to_string())),
                        }],
                    }),
                ),
                other => (other, common::any_value::Value::StringValue(v.to_string())),
            };
            // An info key may override the defaults (`service.name: web`).
            attributes.retain(|a| a.key != name);
            attributes.push(kv(name, value));
        }
        resource::Resource {
            attributes,
            ..Default::default()
        }
    }

    pub fn encode(&mut self, batch: &[Metric], now_ns: i64) -> Encoded {
        self.starts.sweep(now_ns);
        let mut builds: Vec<ResourceBuild> = Vec::new();
        let mut points = 0;
        for m in batch {
            if m.kind == MetricKind::Alarm || m.name.is_empty() {
                continue;
            }
            let mut res_key: Vec<(Str, Str)> = Vec::new();
            let mut attrs: Vec<(Str, Str)> = Vec::new();
            for (k, v) in &m.tags {
                let target = if self.info_keys.contains(k) {
                    &mut res_key
                } else {
                    &mut attrs
                };
                if !target.iter().any(|(p, _)| p == k) {
                    target.push((k.clone(), v.clone()));
                }
            }
            let bi = match builds.iter().position(|b| b.key == res_key) {
                Some(i) => i,
                None => {
                    builds.push(ResourceBuild {
                        key: res_key,
                        metrics: Vec::new(),
                        index: HashMap::new(),
                    });
                    builds.len() - 1
                }
            };
            let t = m.timestamp_ns.max(0) as u64;
            let res_hash = hash_of(&builds[bi].key);
            let mut add =
                |name: &str, spec: Option<&FieldSpec>, attrs: &[(Str, Str)], v: &FieldValue| {
                    if spec.is_some_and(|s| s.kind == Kind::Text) {
                        return;
                    }
                    let Some(value) = point_value(v) else { return };
                    let is_sum = spec.is_some_and(|s| s.kind == Kind::Counter);
                    let attributes = attrs.iter().map(|(k, v)| string_kv(k, v)).collect();
                    let start = if is_sum {
                        let key = series_key(res_hash, name, attrs);
                        self.starts.start(key, t, as_f64(&value))
                    } else {
                        0
                    };
                    let point = metrics::NumberDataPoint {
                        attributes,
                        start_time_unix_nano: start,
                        time_unix_nano: t,
                        value: Some(value),
                        ..Default::default()
                    };
                    let b = &mut builds[bi];
                    let i = *b
                        .index
                        .entry((name.to_string(), is_sum))
                        .or_insert_with(|| {
                            b.metrics.push(new_metric(name, spec, is_sum));
                            b.metrics.len() - 1
                        });
                    match &mut b.metrics[i].data {
                        Some(metrics::metric::Data::Sum(s)) => s.data_points.push(point),
                        Some(metrics::metric::Data::Gauge(g)) => g.data_points.push(point),
                        _ => {}
                    }
                    points += 1;
                };
            let schema = lookup(&m.name);
            let is_tag = |k: &str| schema.is_some_and(|s| s.is_tag(k));
            let grouped = |k: &str| schema.is_some_and(|s| s.group_of(k).is_some());
            if let Some(s) = schema {
                for (k, v) in &m.fields {
                    if s.is_tag(k) && !attrs.iter().any(|(p, _)| p == k) {
                        if let Some(text) = tag_text(v) {
                            attrs.push((k.clone(), Str::new(&*text)));
                        }
                    }
                }
            }
            let mut name = String::new();
            for (k, v) in &m.fields {
                if is_tag(k) || grouped(k) {
                    continue;
                }
                name.clear();
                name.push_str(&m.name);
                name.push('_');
                name.push_str(k);
                add(&name, schema.and_then(|s| s.spec(k)), &attrs, v);
            }
            let Some(schema) = schema else { continue };
            for g in schema.groups {
                let mut indexes: Vec<&str> = Vec::new();
                for (k, _) in &m.fields {
                    if let Some((i, _)) = g.split(k) {
                        if !indexes.contains(&i) {
                            indexes.push(i);
                        }
                    }
                }
                for index in indexes {
                    let members: Vec<(&str, &FieldValue)> = m
                        .fields
                        .iter()
                        .filter_map(|(k, v)| match g.split(k) {
                            Some((i, sub)) if i == index => Some((sub, v)),
                            _ => None,
                        })
                        .collect();
                    let mut gattrs = attrs.clone();
                    if g.index_is_tag {
                        gattrs.push((Str::new(g.index), Str::new(index)));
                    }
                    for (sub, v) in &members {
                        if g.tags.contains(sub) {
                            if let Some(text) = tag_text(v) {
                                gattrs.push((Str::new(sub), Str::new(&*text)));
                            }
                        }
                    }
                    if !g.index_is_tag {
                        if let Ok(rank) = index.parse::<i64>() {
                            name.clear();
                            name.push_str(g.measurement);
                            name.push('_');
                            name.push_str(g.index);
                            add(&name, g.spec(g.index), &gattrs, &FieldValue::Int(rank));
                        }
                    }
                    for (sub, v) in members {
                        if g.tags.contains(&sub) {
                            continue;
                        }
                        name.clear();
                        name.push_str(g.measurement);
                        name.push('_');
                        name.push_str(sub);
                        add(&name, g.spec(sub), &gattrs, v);
                    }
                }
            }
        }
        let scope = common::InstrumentationScope {
            name: "agent".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        };
        let resource_metrics = builds
            .into_iter()
            .filter(|b| !b.metrics.is_empty())
            .map(|b| metrics::ResourceMetrics {
                resource: Some(self.resource(&b.key)),
                scope_metrics: vec![metrics::ScopeMetrics {
                    scope: Some(scope.clone()),
                    metrics: b.metrics,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Encoded {
            request: collector::ExportMetricsServiceRequest { resource_metrics },
            points,
        }
    }
}

fn new_metric(name: &str, spec: Option<&FieldSpec>, is_sum: bool) -> metrics::Metric {
    let data = if is_sum {
        metrics::metric::Data::Sum(metrics::Sum {
            data_points: Vec::new(),
            aggregation_temporality: metrics::AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })
    } else {
        metrics::metric::Data::Gauge(metrics::Gauge {
            data_points: Vec::new(),
        })
    };
    metrics::Metric {
        name: name.to_string(),
        description: spec.map(|s| s.help.to_string()).unwrap_or_default(),
        unit: spec.map(|s| ucum(s.unit).to_string()).unwrap_or_default(),
        data: Some(data),
        ..Default::default()
    }
}

fn hash_of(pairs: &[(Str, Str)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    pairs.hash(&mut h);
    h.finish()
}

fn series_key(resource: u64, name: &str, attrs: &[(Str, Str)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    resource.hash(&mut h);
    name.hash(&mut h);
    attrs.hash(&mut h);
    h.finish()
}
