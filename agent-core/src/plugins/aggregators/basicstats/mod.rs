//! `basicstats`: count, min, max, mean, sum and stdev of every numeric
//! field over each period, per series (name + tags). Emits one metric per
//! series named like the input, with fields `<field>_<stat>`.
use crate::metric::{FieldValue, Metric, MetricKind, Str};
use crate::plugin::{Accumulator, Aggregator};
use crate::registry::Registry;
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stat {
    Count,
    Min,
    Max,
    Mean,
    Sum,
    Stdev,
}

const ALL: [Stat; 6] = [
    Stat::Count,
    Stat::Min,
    Stat::Max,
    Stat::Mean,
    Stat::Sum,
    Stat::Stdev,
];

impl Stat {
    fn suffix(self) -> &'static str {
        match self {
            Stat::Count => "_count",
            Stat::Min => "_min",
            Stat::Max => "_max",
            Stat::Mean => "_mean",
            Stat::Sum => "_sum",
            Stat::Stdev => "_stdev",
        }
    }
}

fn d_stats() -> Vec<Stat> {
    ALL.to_vec()
}

/// `period` and `drop_original` are read by the core.
#[derive(Debug, Clone, Deserialize)]
pub struct BasicStatsConfig {
    #[serde(default = "d_stats")]
    pub stats: Vec<Stat>,
}

#[derive(Debug, Clone)]
struct FieldStats {
    key: Str,
    /// `<key>_<stat>` names, built once per field.
    names: Vec<Str>,
    count: u64,
    min: f64,
    max: f64,
    sum: f64,
    // Welford's running mean and sum of squared deviations.
    mean: f64,
    m2: f64,
}

impl FieldStats {
    fn new(key: &Str, stats: &[Stat]) -> Self {
        FieldStats {
            key: key.clone(),
            names: stats
                .iter()
                .map(|s| Str::from(format!("{key}{}", s.suffix())))
                .collect(),
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        let d = v - self.mean;
        self.mean += d / self.count as f64;
        self.m2 += d * (v - self.mean);
    }
}

#[derive(Debug, Clone)]
struct Series {
    name: Str,
    tags: Vec<(Str, Str)>,
    fields: Vec<FieldStats>,
}

#[derive(Debug)]
pub struct BasicStats {
    stats: Vec<Stat>,
    /// Series by a hash of name + tags; collisions kept apart in the Vec.
    series: HashMap<u64, Vec<Series>>,
}

/// A fast non-cryptographic hasher (FxHash's mix): series keys are
/// trusted local data, and SipHash dominated `add` in the benchmark.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn series_hash(m: &Metric) -> u64 {
    let mut h = FxHasher::default();
    m.name.hash(&mut h);
    m.tags.hash(&mut h);
    h.finish()
}

impl BasicStats {
    pub fn new(c: BasicStatsConfig) -> Self {
        let mut stats = c.stats;
        stats.dedup();
        if stats.is_empty() {
            stats = d_stats();
        }
        BasicStats {
            stats,
            series: HashMap::new(),
        }
    }
}

impl Aggregator for BasicStats {
    fn add(&mut self, m: &Metric) {
        if m.kind != MetricKind::Metric {
            return;
        }
        let list = self.series.entry(series_hash(m)).or_default();
        let pos = match list
            .iter()
            .position(|s| s.name == m.name && s.tags == m.tags)
        {
            Some(p) => p,
            None => {
                list.push(Series {
                    name: m.name.clone(),
                    tags: m.tags.clone(),
                    fields: Vec::new(),
                });
                list.len() - 1
            }
        };
        let series = &mut list[pos];
        for (i, (k, v)) in m.fields.iter().enumerate() {
            let x = match v {
                FieldValue::Int(i) => *i as f64,
                FieldValue::Uint(u) => *u as f64,
                FieldValue::Float(f) if f.is_finite() => *f,
                _ => continue,
            };
            // Fields usually come in the same order: try the same slot first.
            let slot = match series.fields.get(i) {
                Some(f) if f.key == *k => i,
                _ => match series.fields.iter().position(|f| f.key == *k) {
                    Some(p) => p,
                    None => {
                        series.fields.push(FieldStats::new(k, &self.stats));
                        series.fields.len() - 1
                    }
                },
            };
            series.fields[slot].add(x);
        }
    }

    fn push(&mut self, acc: &mut Accumulator) {
        for s in self.series.values().flatten() {
            let mut out = Metric::new(s.name.clone(), acc.timestamp_ns());
            out.tags = s.tags.clone();
            for f in &s.fields {
                for (stat, name) in self.stats.iter().zip(&f.names) {
                    let v: FieldValue = match stat {
                        Stat::Count => FieldValue::Uint(f.count),
                        Stat::Min => FieldValue::Float(f.min),
                        Stat::Max => FieldValue::Float(f.max),
                        Stat::Mean => FieldValue::Float(f.mean),
                        Stat::Sum => FieldValue::Float(f.sum),
                        // Sample standard deviation; undefined for one value.
                        Stat::Stdev if f.count > 1 => {
                            FieldValue::Float((f.m2 / (f.count - 1) as f64).sqrt())
                        }
                        Stat::Stdev => continue,
                    };
                    out.push_field(name.clone(), v);
                }
            }
            if !out.fields.is_empty() {
                acc.add(out);
            }
        }
    }

    fn reset(&mut self) {
        self.series.clear();
    }
}

pub fn register(r: &mut Registry) {
    r.add_aggregator(
        "basicstats",
        "count, min, max, mean, sum, stdev of numeric fields per period",
        include_str!("sample.yaml"),
        |cfg| Ok(BasicStats::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;

    fn build(yaml: &str) -> BasicStats {
        let cfg = PluginConfig::from_value("basicstats", serde_yaml_ng::from_str(yaml).unwrap());
        BasicStats::new(cfg.parse().unwrap())
    }

    fn cpu(host: &str, v: f64) -> Metric {
        Metric::new("cpu", 0)
            .with_tag("host", host)
            .with_field("percent", v)
            .with_field("name", "text is skipped")
    }

    #[test]
    fn all_stats_per_series() {
        let mut b = build("{period: 10, drop_original: true}");
        for v in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            b.add(&cpu("a", v));
        }
        b.add(&cpu("b", 1.0));
        let mut acc = Accumulator::new("cpu", vec![].into());
        b.push(&mut acc);
        let mut out = acc.take();
        out.sort_by(|x, y| x.tags.cmp(&y.tags));
        assert_eq!(out.len(), 2);
        let a = &out[0];
        assert_eq!(a.name, "cpu");
        assert_eq!(a.tag("host"), Some("a"));
        assert_eq!(a.field("percent_count"), Some(&FieldValue::Uint(8)));
        assert_eq!(a.field("percent_min"), Some(&FieldValue::Float(2.0)));
        assert_eq!(a.field("percent_max"), Some(&FieldValue::Float(9.0)));
        assert_eq!(a.field("percent_sum"), Some(&FieldValue::Float(40.0)));
        assert_eq!(a.field("percent_mean"), Some(&FieldValue::Float(5.0)));
        let sd = a.field("percent_stdev").and_then(|v| v.as_f64()).unwrap();
        assert!((sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12, "{sd}");
        assert!(a.field("name_count").is_none());
        // One value: no stdev.
        assert!(out[1].field("percent_stdev").is_none());
        assert_eq!(out[1].field("percent_count"), Some(&FieldValue::Uint(1)));
        b.reset();
        let mut acc = Accumulator::new("cpu", vec![].into());
        b.push(&mut acc);
        assert!(acc.is_empty());
    }

    #[test]
    fn chosen_stats_only() {
        let mut b = build("{stats: [max, count]}");
        b.add(&cpu("a", 3.0));
        let mut acc = Accumulator::new("cpu", vec![].into());
        b.push(&mut acc);
        let m = acc.take().pop().unwrap();
        let keys: Vec<&str> = m.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["percent_max", "percent_count"]);
    }
}
