//! The series store behind the `prometheus_client` endpoint: the latest
//! sample of every series, families resolved once from the schema, label
//! sets interned, and a cache of each metric shape's families so a repeated
//! shape (the same input, the same keys) skips naming and lookups.
use super::{for_each_sample, sanitize_at, Options, SampleValue, Scratch, Source};
use crate::metric::{FieldValue, Metric, MetricKind, Str};
use crate::schema::Kind;
use rustc_hash::FxHashMap as HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Sample {
    value: SampleValue,
    seen: Instant,
}

/// A family's exposed name, help and type, resolved from the schema when
/// the family first appears.
#[derive(Debug)]
struct Family {
    /// The name before units and `_total` (what samples are looked up by,
    /// and what families render sorted by).
    raw: Box<str>,
    name: String,
    help: String,
    type_: &'static str,
    /// Factor to the base unit (milliseconds → seconds).
    scale: f64,
    /// A number that is not a measurement (`ppid`): not exposed.
    hidden: bool,
    /// The family's series: label-set ids, sorted, and their latest
    /// samples at the same positions. Ids apart from samples keep the
    /// search within a few cache lines.
    ids: Vec<u32>,
    samples: Vec<Sample>,
    /// Where the last update landed: metrics arrive in the same order every
    /// flush (an input reports its targets in config order), so the next
    /// update of the family is almost always at the next position.
    cursor: usize,
}

impl Family {
    /// Sets the sample of label set `id`; true when the series is new.
    fn update(&mut self, id: u32, sample: Sample) -> bool {
        let next = self.cursor + 1;
        let at = if self.ids.get(next) == Some(&id) {
            Ok(next)
        } else if self.ids.get(self.cursor) == Some(&id) {
            Ok(self.cursor)
        } else {
            self.ids.binary_search(&id)
        };
        match at {
            Ok(at) => {
                self.samples[at] = sample;
                self.cursor = at;
                false
            }
            Err(at) => {
                self.ids.insert(at, id);
                self.samples.insert(at, sample);
                self.cursor = at;
                true
            }
        }
    }
}

/// Appends HELP text with `\` and newline escaped.
fn push_help(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl Family {
    fn new(raw: &str, source: Source<'_>) -> Family {
        let Some(spec) = source.spec() else {
            let (measurement, key) = match source {
                Source::Plain(measurement, key) => (measurement, key),
                Source::Schema(s, key) => (s.name, key),
                Source::Group(g, key) => (g.measurement, key),
            };
            return Family {
                raw: raw.into(),
                name: raw.to_string(),
                help: format!(
                    "Field {key} of {measurement} (no schema: exec, execd or processed metrics)."
                ),
                type_: "untyped",
                scale: 1.0,
                hidden: false,
                ids: Vec::new(),
                samples: Vec::new(),
                cursor: 0,
            };
        };
        let mut name = raw.to_string();
        if let Some(exposed) = spec.prometheus {
            // `raw` ends with the sanitized key: swap it for the exposed name.
            let key_len = match source {
                Source::Schema(_, k) | Source::Group(_, k) | Source::Plain(_, k) => {
                    let mut sanitized = String::new();
                    sanitize_at(k, &mut sanitized, true, false);
                    sanitized.len()
                }
            };
            name.truncate(name.len().saturating_sub(key_len));
            name.push_str(exposed);
        }
        if let Some(abbr) = spec.unit.abbreviation() {
            if name.ends_with(abbr) {
                name.truncate(name.len() - abbr.len());
            }
        }
        if let Some(suffix) = spec.unit.prometheus_suffix() {
            if !name.split('_').any(|part| part == suffix) {
                name.push('_');
                name.push_str(suffix);
            }
        }
        let type_ = match spec.kind {
            Kind::Counter => {
                if !name.ends_with("_total") {
                    name.push_str("_total");
                }
                "counter"
            }
            Kind::Gauge | Kind::Text => "gauge",
        };
        Family {
            raw: raw.into(),
            name,
            help: spec.help.to_string(),
            type_,
            scale: spec.unit.prometheus_scale(),
            hidden: spec.kind == Kind::Text,
            ids: Vec::new(),
            samples: Vec::new(),
            cursor: 0,
        }
    }
}

/// The latest value of every series, with expiration.
///
/// Label sets are interned: every distinct rendered `k="v",...` gets a
/// small id (reference counted, freed when its last series expires), so the
/// per-field work of an update is one hash lookup of the family and a
/// binary search of the label-set id, not a string compare.
#[derive(Debug)]
pub struct SeriesStore {
    /// Family id → family; ids are indexes, reassigned when expiry removes
    /// a family.
    families: Vec<Family>,
    /// Family raw name → family id.
    family_ids: HashMap<Box<str>, u32>,
    /// Family ids sorted by raw name: the render order.
    order: Vec<u32>,
    pub(super) label_ids: HashMap<String, u32>,
    pub(super) label_text: Vec<String>,
    label_refs: Vec<u32>,
    free_ids: Vec<u32>,
    expiration: Duration,
    scratch: Scratch,
    opts: Options,
    /// The families of recently seen metric shapes.
    shapes: Vec<Shape>,
    /// The next entry of `shapes` to replace when it is full.
    next_shape: usize,
}

/// How many metric shapes keep their families cached: more than the inputs
/// that usually feed one endpoint, few enough for a linear search.
const SHAPES: usize = 16;

/// A metric's shape: its name and, in order, each field's key and whether
/// it is a number. Samples come out of [`for_each_sample`] in an order
/// decided by the shape alone, so the families of the samples are too.
#[derive(Debug, Default)]
struct Shape {
    name: Str,
    keys: Vec<(Str, bool)>,
    /// Family id of each sample, in sample order.
    families: Vec<u32>,
}

impl Shape {
    fn matches(&self, m: &Metric) -> bool {
        self.name == m.name
            && self.keys.len() == m.fields.len()
            && self
                .keys
                .iter()
                .zip(&m.fields)
                .all(|((k, numeric), (key, v))| k == key && *numeric == is_number(v))
    }

    fn record(&mut self, m: &Metric) {
        self.name = m.name.clone();
        self.keys.clear();
        self.keys
            .extend(m.fields.iter().map(|(k, v)| (k.clone(), is_number(v))));
        self.families.clear();
    }
}

fn is_number(v: &FieldValue) -> bool {
    !matches!(v, FieldValue::Str(_))
}

impl SeriesStore {
    /// `expiration` zero keeps series forever.
    pub fn new(opts: Options, expiration: Duration) -> Self {
        SeriesStore {
            families: Vec::new(),
            family_ids: HashMap::default(),
            order: Vec::new(),
            label_ids: HashMap::default(),
            label_text: Vec::new(),
            label_refs: Vec::new(),
            free_ids: Vec::new(),
            expiration,
            scratch: Scratch::default(),
            opts,
            shapes: Vec::new(),
            next_shape: 0,
        }
    }

    fn intern(&mut self, labels: &str) -> u32 {
        if let Some(&id) = self.label_ids.get(labels) {
            return id;
        }
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.label_text[id as usize] = labels.to_string();
                id
            }
            None => {
                self.label_text.push(labels.to_string());
                self.label_refs.push(0);
                (self.label_text.len() - 1) as u32
            }
        };
        self.label_ids.insert(labels.to_string(), id);
        id
    }

    /// The id of the family `raw`, created from `source` when new.
    fn family(&mut self, raw: &str, source: Source<'_>) -> u32 {
        if let Some(&id) = self.family_ids.get(raw) {
            return id;
        }
        let id = self.families.len() as u32;
        self.families.push(Family::new(raw, source));
        self.family_ids.insert(raw.into(), id);
        let families = &self.families;
        let at = self
            .order
            .partition_point(|&f| *families[f as usize].raw < *raw);
        self.order.insert(at, id);
        id
    }

    /// The cached shape of `m`, and whether its families are known (false:
    /// a new entry, to be filled by this metric's samples).
    fn shape_of(&mut self, m: &Metric) -> (usize, bool) {
        if let Some(at) = self.shapes.iter().position(|s| s.matches(m)) {
            return (at, true);
        }
        let at = if self.shapes.len() < SHAPES {
            self.shapes.push(Shape::default());
            self.shapes.len() - 1
        } else {
            let at = self.next_shape;
            self.next_shape = (at + 1) % SHAPES;
            at
        };
        self.shapes[at].record(m);
        (at, false)
    }

    pub fn add(&mut self, m: &Metric, now: Instant) {
        if m.kind == MetricKind::Alarm {
            return;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let (shape, known) = self.shape_of(m);
        // Interned once per label set (the main series, then each group's).
        let mut last: Option<u32> = None;
        let mut slot = 0;
        let opts = self.opts;
        for_each_sample(
            m,
            &opts,
            &mut scratch,
            !known,
            |family, labels, value, source| {
                let fid = if known {
                    // Always there: the shape decides how many samples come.
                    match self.shapes[shape].families.get(slot) {
                        Some(&fid) => fid as usize,
                        None => return,
                    }
                } else {
                    let fid = self.family(family, source);
                    self.shapes[shape].families.push(fid);
                    fid as usize
                };
                slot += 1;
                let fam = &self.families[fid];
                if fam.hidden {
                    return;
                }
                let value = if fam.scale == 1.0 {
                    value
                } else {
                    SampleValue::Float(value.as_f64() * fam.scale)
                };
                // Consecutive samples mostly share their label set.
                let id = match last {
                    Some(id) if self.label_text[id as usize] == labels => id,
                    _ => {
                        let id = self.intern(labels);
                        last = Some(id);
                        id
                    }
                };
                if self.families[fid].update(id, Sample { value, seen: now }) {
                    self.label_refs[id as usize] += 1;
                }
            },
        );
        self.scratch = scratch;
    }

    /// Drops series not updated within the expiration.
    pub fn expire(&mut self, now: Instant) {
        if self.expiration.is_zero() {
            return;
        }
        let exp = self.expiration;
        let refs = &mut self.label_refs;
        let mut freed = Vec::new();
        for fam in &mut self.families {
            let mut kept = 0;
            for at in 0..fam.ids.len() {
                let id = fam.ids[at];
                if now.saturating_duration_since(fam.samples[at].seen) < exp {
                    fam.ids[kept] = id;
                    fam.samples.swap(kept, at);
                    kept += 1;
                } else {
                    let r = &mut refs[id as usize];
                    *r -= 1;
                    if *r == 0 {
                        freed.push(id);
                    }
                }
            }
            fam.ids.truncate(kept);
            fam.samples.truncate(kept);
            fam.cursor = 0;
        }
        for id in freed {
            let text = std::mem::take(&mut self.label_text[id as usize]);
            self.label_ids.remove(&text);
            self.free_ids.push(id);
        }
        // Families without series go (a stopped exec program's fields);
        // hidden ones stay so they are not re-resolved. Ids are renumbered.
        if self.families.iter().any(|f| f.ids.is_empty() && !f.hidden) {
            self.families.retain(|f| !f.ids.is_empty() || f.hidden);
            // Cached shapes hold the old family ids.
            self.shapes.clear();
            self.next_shape = 0;
            self.family_ids = self
                .families
                .iter()
                .enumerate()
                .map(|(i, f)| (f.raw.clone(), i as u32))
                .collect();
            self.order = (0..self.families.len() as u32).collect();
            let families = &self.families;
            self.order
                .sort_unstable_by(|a, b| families[*a as usize].raw.cmp(&families[*b as usize].raw));
        }
    }

    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.ids.len()).sum()
    }

    /// Renders every family, sorted by name, each with `# HELP` and
    /// `# TYPE` lines.
    pub fn render(&self, out: &mut String) {
        for &fid in &self.order {
            let fam = &self.families[fid as usize];
            if fam.ids.is_empty() {
                continue;
            }
            out.push_str("# HELP ");
            out.push_str(&fam.name);
            out.push(' ');
            push_help(out, &fam.help);
            out.push_str("\n# TYPE ");
            out.push_str(&fam.name);
            out.push(' ');
            out.push_str(fam.type_);
            out.push('\n');
            for (id, s) in fam.ids.iter().zip(&fam.samples) {
                out.push_str(&fam.name);
                let labels = &self.label_text[*id as usize];
                if !labels.is_empty() {
                    out.push('{');
                    out.push_str(labels);
                    out.push('}');
                }
                out.push(' ');
                s.value.write(out);
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metrics whose shapes repeat, change in one field's kind or order,
    /// grow a group, have no schema, and outnumber the cache.
    fn metrics() -> Vec<Metric> {
        let mut out = Vec::new();
        for round in 0..3u64 {
            for t in 0..2u64 {
                out.push(
                    Metric::new("telnet", 0)
                        .with_tag("host_name", "web1")
                        .with_field("tag", format!("target {t}"))
                        .with_field("address", format!("127.0.0.{t}:22"))
                        .with_field("yes", true)
                        .with_field("errcode", round as i64)
                        .with_field("response_ms", 0.5 + t as f64),
                );
            }
            // The same keys, errcode as a string this time: one sample fewer.
            out.push(
                Metric::new("telnet", 0)
                    .with_field("tag", "odd")
                    .with_field("address", "127.0.0.9:22")
                    .with_field("yes", false)
                    .with_field("errcode", "refused")
                    .with_field("response_ms", 3.0 + round as f64),
            );
            // The same fields in another order.
            out.push(
                Metric::new("telnet", 0)
                    .with_field("response_ms", 7.0)
                    .with_field("address", "127.0.0.8:22")
                    .with_field("tag", "swapped")
                    .with_field("yes", true),
            );
            let mut cpu = Metric::new("cpu", 0).with_field("times_user", 2.5 + round as f64);
            for i in 0..(2 + round) {
                cpu.push_field(format!("percent_percpu_{i}"), i as f64);
            }
            out.push(cpu.with_field("process_top_1_pid", 812u64 + round));
            // More shapes than the cache holds.
            for e in 0..(SHAPES as u64 + 3) {
                out.push(
                    Metric::new(format!("exec_{e}"), 0)
                        .with_tag("job", "x")
                        .with_field("value", e + round),
                );
            }
        }
        out
    }

    #[test]
    fn cached_shapes_give_the_same_series_as_naming_every_sample() {
        let now = Instant::now();
        let mut cached = SeriesStore::new(Options::default(), Duration::ZERO);
        let mut uncached = SeriesStore::new(Options::default(), Duration::ZERO);
        let ms = metrics();
        for m in &ms {
            cached.add(m, now);
            uncached.add(m, now);
            uncached.shapes.clear();
        }
        assert!(cached.shapes.len() == SHAPES, "{}", cached.shapes.len());
        let (mut a, mut b) = (String::new(), String::new());
        cached.render(&mut a);
        uncached.render(&mut b);
        assert_eq!(a, b);
        for line in [
            "telnet_errcode{host_name=\"web1\",tag=\"target 1\",address=\"127.0.0.1:22\"} 2\n",
            "telnet_response_seconds{tag=\"odd\",address=\"127.0.0.9:22\"} 0.005\n",
            "telnet_response_seconds{address=\"127.0.0.8:22\",tag=\"swapped\"} 0.007\n",
            "cpu_percpu_percent{cpu=\"3\"} 3.0\n",
            "exec_18_value{job=\"x\"} 20\n",
        ] {
            assert!(a.contains(line), "{line:?} missing from:\n{a}");
        }
        assert!(!a.contains("telnet_errcode{tag=\"odd\""), "{a}");
    }
}
