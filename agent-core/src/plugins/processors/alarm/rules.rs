//! The built-in rules of each input, with PyAgent's exact message texts.
//! Thresholds are inclusive (`>=`); a threshold of 0 counts (PyAgent took
//! 0 as unset); a negative or absent threshold disables its check.
use super::{get, Ctx, Py, StateOpts, Text, COMMON_KEYS};
use crate::config::{load::key_string, ConfigError, Finite, PluginConfig};
use crate::metric::{FieldValue, Metric, Str};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

/// The metric's `tag`: a tag first, else a string field.
pub(crate) fn metric_tag(m: &Metric) -> Option<&str> {
    crate::plugins::common::tag::metric_tag(m)
}

fn thr(t: Option<Finite>) -> Option<f64> {
    t.map(Finite::get).filter(|t| *t >= 0.0)
}

fn s(v: &'static str) -> Str {
    Str::new_static(v)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CpuConf {
    percent: Option<Finite>,
    max_percent: Option<Finite>,
    loadavg_precent_1: Option<Finite>,
    use_process_top: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PercentConf {
    percent: Option<Finite>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DiskConf {
    percent: Option<Finite>,
    disk_symbol: BTreeMap<String, Option<PercentConf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NicConf {
    comment: Option<String>,
    kbps_in: Option<Finite>,
    kbps_out: Option<Finite>,
    vip: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(default)]
struct PingThr {
    loss: Option<Finite>,
    average: Option<Finite>,
    maximum: Option<Finite>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PingConf {
    loss: Option<Finite>,
    average: Option<Finite>,
    maximum: Option<Finite>,
    target: BTreeMap<String, Option<PingThr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TelnetConf {
    all: bool,
    target: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProcConf {
    comment: Option<String>,
    min_process_num: Option<i64>,
    max_process_num: Option<i64>,
    cpu_percent: Option<Finite>,
    memory_percent: Option<Finite>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProcessConf {
    target: BTreeMap<String, Option<ProcConf>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DemoConf {
    limit: Option<Finite>,
}

/// One curl check, in config order.
#[derive(Debug, Clone)]
enum Check {
    Status(Vec<f64>),
    Contains(String),
    Json(Vec<(String, String)>),
    Headers(Vec<(String, String)>),
    Metric(Vec<(String, String)>),
}

/// PyAgent compared `str()` of values: None is '' in the config.
fn py_str(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) if n.is_f64() => FieldValue::Float(n.as_f64().unwrap_or(0.0)).to_string(),
        other => key_string(other),
    }
}

fn pairs(cfg: &PluginConfig, key: &str, v: &Value) -> Result<Vec<(String, String)>, ConfigError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Mapping(m) => Ok(m.iter().map(|(k, v)| (key_string(k), py_str(v))).collect()),
        _ => Err(cfg.error(key, "expected a mapping of key: value")),
    }
}

fn checks(cfg: &PluginConfig, key: &str, v: &Value) -> Result<Vec<Check>, ConfigError> {
    let Value::Mapping(map) = v else {
        return match v {
            Value::Null => Ok(Vec::new()),
            _ => Err(cfg.error(key, "expected a mapping of checks")),
        };
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let name = key_string(k);
        let at = format!("{key}.{name}");
        out.push(match name.as_str() {
            "status" => match v {
                Value::Sequence(items) => Check::Status(
                    items
                        .iter()
                        .map(|i| {
                            i.as_f64()
                                .ok_or_else(|| cfg.error(&at, "expected a list of status codes"))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Value::Number(n) => Check::Status(vec![n.as_f64().unwrap_or(0.0)]),
                _ => return Err(cfg.error(&at, "expected a list of status codes")),
            },
            "contains" => Check::Contains(py_str(v)),
            "json" => Check::Json(pairs(cfg, &at, v)?),
            "headers" => Check::Headers(pairs(cfg, &at, v)?),
            "metric" => Check::Metric(pairs(cfg, &at, v)?),
            _ => {
                return Err(cfg.error(
                    &at,
                    "unknown check; use status, contains, json, headers or metric",
                ))
            }
        });
    }
    Ok(out)
}

#[derive(Debug)]
pub(crate) struct Cpu {
    percent: Option<f64>,
    max_percent: Option<f64>,
    load: Option<f64>,
    process_top: bool,
    opts: StateOpts,
}

#[derive(Debug)]
pub(crate) struct Disk {
    percent: Option<f64>,
    symbols: HashMap<String, Option<f64>>,
    opts: StateOpts,
}

#[derive(Debug)]
pub(crate) struct Nic {
    comment: Str,
    kbps_in: Option<f64>,
    kbps_out: Option<f64>,
    vip: Vec<(Str, Vec<Str>)>,
}

#[derive(Debug)]
pub(crate) struct Ping {
    default: PingThr,
    target: HashMap<Str, PingThr>,
    opts: StateOpts,
}

#[derive(Debug)]
pub(crate) struct Curl {
    all: Vec<Check>,
    target: Vec<(Str, Vec<Check>)>,
    msg_all: Vec<Str>,
    msg_except: Vec<Str>,
    msg_tag: HashMap<Str, Vec<Str>>,
    opts: StateOpts,
}

#[derive(Debug)]
pub(crate) struct Proc {
    name: Str,
    comment: Str,
    min: Option<i64>,
    max: Option<i64>,
    cpu: Option<f64>,
    mem: Option<f64>,
}

/// The rules of one input plugin.
#[derive(Debug)]
pub(crate) enum Rules {
    None,
    Cpu(Cpu),
    Mem(Option<f64>, StateOpts),
    Disk(Disk),
    Network(HashMap<Str, Nic>, StateOpts),
    Ping(Ping),
    Telnet {
        all: bool,
        target: Vec<Str>,
        opts: StateOpts,
    },
    Curl(Curl),
    Process(Vec<Proc>, StateOpts),
    Demo(Option<f64>, StateOpts),
}

/// `C:\` → `c`, as PyAgent normalised Windows drives.
fn mount_key(m: &str) -> String {
    m.replace(":\\", "").to_lowercase()
}

impl Rules {
    pub(crate) fn new(
        cfg: &PluginConfig,
        plugin: &str,
        alarm: &Value,
        opts: StateOpts,
    ) -> Result<Rules, ConfigError> {
        if !matches!(alarm, Value::Mapping(_)) {
            return Ok(Rules::None);
        }
        let c = cfg.child("alarm", alarm.clone(), "alarm");
        Ok(match plugin {
            "cpu" => {
                let k: CpuConf = c.parse()?;
                Rules::Cpu(Cpu {
                    percent: thr(k.percent),
                    max_percent: thr(k.max_percent),
                    load: thr(k.loadavg_precent_1),
                    process_top: k.use_process_top.unwrap_or(true),
                    opts,
                })
            }
            "mem" => Rules::Mem(thr(c.parse::<PercentConf>()?.percent), opts),
            "disk" => {
                let k: DiskConf = c.parse()?;
                Rules::Disk(Disk {
                    percent: thr(k.percent),
                    symbols: k
                        .disk_symbol
                        .into_iter()
                        .map(|(m, p)| (mount_key(&m), p.and_then(|p| thr(p.percent))))
                        .collect(),
                    opts,
                })
            }
            "network" => {
                let Value::Mapping(map) = alarm else {
                    unreachable!("checked above")
                };
                // Its keys are NIC names (each parsed as a NicConf below).
                c.declare_keys(&["*"]);
                let mut nics = HashMap::new();
                for (k, v) in map {
                    let nic = key_string(k);
                    if COMMON_KEYS.contains(&nic.as_str()) || v.is_null() {
                        continue;
                    }
                    let n: NicConf = c.child(&nic, v.clone(), &nic).parse()?;
                    let mut vip = Vec::new();
                    for (family, ips) in n.vip {
                        let list = match &ips {
                            Value::Sequence(s) => {
                                s.iter().map(|i| Str::from(key_string(i))).collect()
                            }
                            Value::Null => Vec::new(),
                            other => vec![Str::from(key_string(other))],
                        };
                        vip.push((Str::from(family), list));
                    }
                    nics.insert(
                        Str::from(nic),
                        Nic {
                            comment: Str::from(n.comment.unwrap_or_default()),
                            kbps_in: thr(n.kbps_in),
                            kbps_out: thr(n.kbps_out),
                            vip,
                        },
                    );
                }
                Rules::Network(nics, opts)
            }
            "ping" => {
                let k: PingConf = c.parse()?;
                let default = PingThr {
                    loss: k.loss,
                    average: k.average,
                    maximum: k.maximum,
                };
                let target = k
                    .target
                    .into_iter()
                    .map(|(t, p)| {
                        let p = p.unwrap_or_default();
                        (
                            Str::from(t),
                            PingThr {
                                loss: p.loss.or(default.loss),
                                average: p.average.or(default.average),
                                maximum: p.maximum.or(default.maximum),
                            },
                        )
                    })
                    .collect();
                Rules::Ping(Ping {
                    default,
                    target,
                    opts,
                })
            }
            "telnet" => {
                let k: TelnetConf = c.parse()?;
                Rules::Telnet {
                    all: k.all,
                    target: k.target.iter().map(|t| Str::from(key_string(t))).collect(),
                    opts,
                }
            }
            "curl" => {
                let Value::Mapping(map) = alarm else {
                    unreachable!("checked above")
                };
                c.declare_keys(&["all", "target", "use_msg_fields"]);
                let all = match map.get("all") {
                    Some(v) => checks(&c, "all", v)?,
                    None => Vec::new(),
                };
                let mut target = Vec::new();
                if let Some(t) = map.get("target") {
                    let Value::Mapping(tm) = t else {
                        return Err(c.error("target", "expected a mapping of TAG: checks"));
                    };
                    for (tag, v) in tm {
                        let tag = key_string(tag);
                        let ch = checks(&c, &format!("target.{tag}"), v)?;
                        target.push((Str::from(tag), ch));
                    }
                }
                let mut msg_all = Vec::new();
                let mut msg_except = Vec::new();
                let mut msg_tag = HashMap::new();
                if let Some(Value::Mapping(mm)) = map.get("use_msg_fields") {
                    for (k, v) in mm {
                        let list: Vec<Str> = match v {
                            Value::Sequence(s) => {
                                s.iter().map(|i| Str::from(key_string(i))).collect()
                            }
                            _ => Vec::new(),
                        };
                        match key_string(k).as_str() {
                            "all" => msg_all = list,
                            "all_except" => msg_except = list,
                            other => {
                                msg_tag.insert(Str::new(other), list);
                            }
                        }
                    }
                }
                Rules::Curl(Curl {
                    all,
                    target,
                    msg_all,
                    msg_except,
                    msg_tag,
                    opts,
                })
            }
            "process" => {
                let k: ProcessConf = c.parse()?;
                Rules::Process(
                    k.target
                        .into_iter()
                        .map(|(name, p)| {
                            let p = p.unwrap_or_default();
                            Proc {
                                name: Str::from(name),
                                comment: Str::from(p.comment.unwrap_or_default()),
                                min: p.min_process_num.filter(|n| *n >= 0),
                                max: p.max_process_num.filter(|n| *n >= 0),
                                cpu: thr(p.cpu_percent),
                                mem: thr(p.memory_percent),
                            }
                        })
                        .collect(),
                    opts,
                )
            }
            "demo" => Rules::Demo(c.parse::<DemoConf>()?.limit.map(Finite::get), opts),
            _ => Rules::None,
        })
    }

    /// Rules that look at the whole batch (process counts).
    pub(crate) fn check_batch(&self, batch: &[Metric], ctx: &mut Ctx) {
        let Rules::Process(procs, opts) = self else {
            return;
        };
        for p in procs {
            let (mut count, mut cpu, mut mem, mut first) = (0i64, 0.0f64, 0.0f64, None);
            for (i, m) in batch.iter().enumerate() {
                if m.kind != crate::MetricKind::Metric
                    || get(m, "name").and_then(|v| v.as_str().map(|n| n == p.name)) != Some(true)
                {
                    continue;
                }
                count += 1;
                first.get_or_insert(i);
                cpu += ctx.num(m, "cpu_percent").map_or(0.0, |(n, _)| n);
                mem += ctx.num(m, "memory_percent").map_or(0.0, |(n, _)| n);
            }
            let n = &p.name;
            let mut fired: Option<(&'static str, String)> = None;
            if let Some(min) = p.min.filter(|min| count < *min) {
                fired = Some(("process.min", format!("{n} 进程数小于配置: {count}<{min}")));
            } else if let Some(max) = p.max.filter(|max| count > *max) {
                fired = Some(("process.max", format!("{n} 进程数大于配置: {count}>{max}")));
            } else if let Some(t) = p.cpu.filter(|t| cpu >= *t) {
                fired = Some((
                    "process.cpu",
                    format!("{n} CPU占用过高(%): {}>={}", Py(cpu), Py(t)),
                ));
            } else if let Some(t) = p.mem.filter(|t| mem >= *t) {
                let shown = crate::format::human::py_round(mem, 2);
                fired = Some((
                    "process.mem",
                    format!("{n} 内存占用过高(%): {}>={}", Py(shown), Py(t)),
                ));
            }
            // Tags of the process's first metric; for an absent process,
            // the batch's first metric without its per-process tags.
            let at = first.unwrap_or(0);
            let src: Option<Metric> = match first {
                Some(i) => Some(batch[i].clone()),
                None => batch.first().map(|m| {
                    let mut m = m.clone();
                    m.tags.retain(|(k, _)| {
                        !matches!(k.as_str(), "name" | "pid" | "ppid" | "username" | "exe")
                    });
                    m
                }),
            };
            for rule in ["process.min", "process.max", "process.cpu", "process.mem"] {
                let text = match &fired {
                    Some((r, info)) if *r == rule => {
                        Some(Text::new(info.clone()).more(p.comment.clone()))
                    }
                    _ => None,
                };
                ctx.check(src.as_ref(), at, *opts, n, &s(rule), text);
            }
        }
    }

    /// Per-metric rules.
    pub(crate) fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        match self {
            Rules::None | Rules::Process(..) => {}
            Rules::Cpu(c) => c.check(m, at, ctx),
            Rules::Mem(t, opts) => {
                let Some(t) = *t else { return };
                let Some((v, shown)) = ctx.num(m, "percent") else {
                    return;
                };
                let text =
                    (v >= t).then(|| Text::new(format!("内存占用率过高(%): {shown}>={}", Py(t))));
                ctx.check(Some(m), at, *opts, &Str::default(), &s("mem.percent"), text);
            }
            Rules::Disk(d) => d.check(m, at, ctx),
            Rules::Network(nics, opts) => network(nics, *opts, m, at, ctx),
            Rules::Ping(p) => p.check(m, at, ctx),
            Rules::Telnet { all, target, opts } => {
                let Some(tag) = metric_tag(m).filter(|t| !t.is_empty()) else {
                    return;
                };
                if !(*all || target.is_empty() || target.iter().any(|t| t == tag)) {
                    return;
                }
                let up = get(m, "yes").is_some_and(|v| v.truthy());
                let tag = Str::new(tag);
                let text = (!up).then(|| {
                    let more = get(m, "address").map(|a| a.to_string()).unwrap_or_default();
                    Text::new(format!("{tag} - Telnet 端口不通"))
                        .tag(tag.clone())
                        .more(more)
                });
                ctx.check(Some(m), at, *opts, &tag, &s("telnet.down"), text);
            }
            Rules::Curl(c) => c.check(m, at, ctx),
            Rules::Demo(limit, opts) => {
                let Some(limit) = *limit else { return };
                let Some((x, _)) = ctx.num(m, "x") else {
                    return;
                };
                let text = (x < limit).then(|| {
                    Text::new("示例报警数据".into())
                        .tag("demo")
                        .flag("test")
                        .more("报警附加消息")
                });
                ctx.check(Some(m), at, *opts, &Str::default(), &s("demo.limit"), text);
            }
        }
    }
}

impl Cpu {
    /// `pid.name(cpu%)` of the top processes: a ready string field
    /// `process_top`, or flattened `process_top_<i>_{pid,name,cpu_percent}`.
    fn process_top(m: &Metric) -> String {
        if let Some(v) = get(m, "process_top").and_then(|v| v.as_str().map(str::to_string)) {
            return v;
        }
        let mut out = String::new();
        for i in 0..64 {
            let mut key = String::with_capacity(32);
            let mut part = |suffix: &str| {
                key.clear();
                let _ = write!(key, "process_top_{i}_{suffix}");
                get(m, &key).map(|v| v.to_string())
            };
            let (Some(pid), Some(name), Some(cpu)) =
                (part("pid"), part("name"), part("cpu_percent"))
            else {
                if i == 0 {
                    continue;
                }
                break;
            };
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "{pid}.{name}({cpu}%)");
        }
        out
    }

    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let rules: [(&str, &'static str, &str, Option<f64>, bool); 3] = [
            (
                "percent",
                "cpu.percent",
                "CPU 总使用率过高(%)",
                self.percent,
                true,
            ),
            (
                "max_percent",
                "cpu.max_percent",
                "CPU 单核使用率过高(%)",
                self.max_percent,
                true,
            ),
            (
                "loadavg_precent_1",
                "cpu.loadavg_precent_1",
                "系统平均负载过高(%)",
                self.load,
                false,
            ),
        ];
        let mut fired = false;
        for (key, rule, label, t, top) in rules {
            let Some(t) = t else { continue };
            let mut text = None;
            if !fired {
                if let Some((v, shown)) = ctx.num(m, key) {
                    if v >= t {
                        fired = true;
                        let more = if top && self.process_top {
                            Self::process_top(m)
                        } else {
                            String::new()
                        };
                        text = Some(Text::new(format!("{label}: {shown}>={}", Py(t))).more(more));
                    }
                }
            }
            ctx.check(Some(m), at, self.opts, &Str::default(), &s(rule), text);
        }
    }
}

impl Disk {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let Some(mount) = get(m, "mountpoint").or_else(|| get(m, "device")) else {
            return;
        };
        let key = mount_key(&mount.to_string());
        let t = if self.symbols.is_empty() {
            self.percent
        } else {
            match self.symbols.get(&key) {
                Some(t) => t.or(self.percent),
                None => return,
            }
        };
        let Some(t) = t else { return };
        let Some((v, shown)) = ctx.num(m, "percent") else {
            return;
        };
        let text =
            (v >= t).then(|| Text::new(format!("磁盘 {key} 占用率高(%): {shown}>={}", Py(t))));
        ctx.check(
            Some(m),
            at,
            self.opts,
            &Str::from(key),
            &s("disk.percent"),
            text,
        );
    }
}

fn network(nics: &HashMap<Str, Nic>, opts: StateOpts, m: &Metric, at: usize, ctx: &mut Ctx) {
    let Some(nic_name) = get(m, "nic").and_then(|v| v.as_str()) else {
        return;
    };
    let Some(nic) = nics.get(nic_name) else {
        return;
    };
    let nic_name = Str::new(nic_name);
    for (key, rule, label, t) in [
        ("kbps_in", "network.kbps_in", "流入带宽(kbps)", nic.kbps_in),
        (
            "kbps_out",
            "network.kbps_out",
            "流出带宽(kbps)",
            nic.kbps_out,
        ),
    ] {
        let Some(t) = t else { continue };
        let v = ctx.num(m, key);
        let text = v.filter(|(v, _)| *v >= t).map(|(_, shown)| {
            Text::new(format!("{nic_name} {label}: {shown}>={}", Py(t)))
                .tag(nic_name.clone())
                .more(nic.comment.clone())
        });
        ctx.check(Some(m), at, opts, &nic_name, &s(rule), text);
    }
    for (family, ips) in &nic.vip {
        let now: Vec<Str> = get(m, family)
            .map(|v| v.to_string())
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Str::new)
            .collect();
        let key = super::state::StateKey {
            input: ctx.input().clone(),
            series: nic_name.clone(),
            rule: family.clone(),
        };
        let last = ctx.store().vips.insert(key, now.clone());
        let Some(last) = last else { continue };
        let ts = m.timestamp_secs();
        for ip in ips {
            let (was, is) = (last.contains(ip), now.contains(ip));
            let text = if was && !is {
                Text::new(format!("{nic_name} 减少 IP: {ip}")).flag(format!("vip_dec_{ts}"))
            } else if is && !was {
                Text::new(format!("{nic_name} 增加 IP: {ip}")).flag(format!("vip_inc_{ts}"))
            } else {
                continue;
            };
            ctx.emit(
                Some(m),
                at,
                text.tag(nic_name.clone()).more(nic.comment.clone()),
            );
        }
    }
}

impl Ping {
    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let tag = Str::new(metric_tag(m).unwrap_or(""));
        let t = self.target.get(&tag).copied().unwrap_or(self.default);
        let mut fired = false;
        for (key, rule, label, t) in [
            ("loss", "ping.loss", "丢包比例过高(%)", thr(t.loss)),
            (
                "average",
                "ping.average",
                "平均延迟过高(ms)",
                thr(t.average),
            ),
            (
                "maximum",
                "ping.maximum",
                "最大延迟过高(ms)",
                thr(t.maximum),
            ),
        ] {
            let Some(t) = t else { continue };
            let mut text = None;
            if !fired {
                if let Some((v, shown)) = ctx.num(m, key) {
                    if v >= t {
                        fired = true;
                        let more = get(m, "address").map(|a| a.to_string()).unwrap_or_default();
                        text = Some(
                            Text::new(format!("{tag} {label}: {shown}>={}", Py(t)))
                                .tag(tag.clone())
                                .more(more),
                        );
                    }
                }
            }
            ctx.check(Some(m), at, self.opts, &tag, &s(rule), text);
        }
    }
}

/// Response headers: a JSON object string `headers`, or flattened
/// `headers_<name>` fields. Names compare case-insensitively (HTTP).
fn header<'a>(
    m: &'a Metric,
    json: &'a Option<serde_json::Map<String, serde_json::Value>>,
    k: &str,
) -> Option<String> {
    if let Some(map) = json {
        return map
            .iter()
            .find(|(hk, _)| hk.eq_ignore_ascii_case(k))
            .map(|(_, v)| json_py_str(v));
    }
    m.fields
        .iter()
        .find(|(fk, _)| {
            fk.strip_prefix("headers_")
                .is_some_and(|h| h.eq_ignore_ascii_case(k))
        })
        .map(|(_, v)| v.to_string())
}

fn json_py_str(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "None".into(),
        serde_json::Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_f64() => {
            FieldValue::Float(n.as_f64().unwrap_or(0.0)).to_string()
        }
        other => other.to_string(),
    }
}

impl Curl {
    fn run(checks: &[Check], m: &Metric) -> Option<String> {
        for c in checks {
            match c {
                Check::Status(codes) => {
                    let status = get(m, "status");
                    let n = status.and_then(|v| v.num()).unwrap_or(0.0);
                    if !codes.contains(&n) {
                        let shown = status.map(|v| v.to_string()).unwrap_or_else(|| "0".into());
                        return Some(format!("HTTP 状态码错误: {shown}"));
                    }
                }
                Check::Contains(want) => {
                    let body = get(m, "response")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    if !body.contains(want.as_str()) {
                        return Some(format!("返回值不包含: {want}"));
                    }
                }
                Check::Json(kv) => {
                    let body = get(m, "response")
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    let js = match serde_json::from_str::<serde_json::Value>(&body) {
                        Ok(serde_json::Value::Object(o)) if !o.is_empty() => o,
                        _ => return Some("返回值不是有效JSON键值对".into()),
                    };
                    for (k, v) in kv {
                        let got = js.get(k).map_or_else(|| "None".into(), json_py_str);
                        if got != *v {
                            return Some(format!("返回值: {k} != {v}"));
                        }
                    }
                }
                Check::Headers(kv) => {
                    let json = match get(m, "headers").and_then(|v| v.as_str().map(str::to_string))
                    {
                        Some(s) => match serde_json::from_str::<serde_json::Value>(&s) {
                            Ok(serde_json::Value::Object(o)) if !o.is_empty() => Some(o),
                            _ => None,
                        },
                        None => None,
                    };
                    let has_flat = m.fields.iter().any(|(k, _)| k.starts_with("headers_"));
                    if json.is_none() && !has_flat {
                        return Some("响应头为空或不正确".into());
                    }
                    for (k, v) in kv {
                        if header(m, &json, k).unwrap_or_else(|| "None".into()) != *v {
                            return Some(format!("响应头: {k} != {v}"));
                        }
                    }
                }
                Check::Metric(kv) => {
                    for (k, v) in kv {
                        let got = get(m, k).map_or_else(|| "None".into(), |x| x.to_string());
                        if got != *v {
                            return Some(format!("数据项: {k} != {v}"));
                        }
                    }
                }
            }
        }
        None
    }

    fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let tag = Str::new(metric_tag(m).unwrap_or(""));
        // Target rules first; `all` only when no target rule failed.
        let failed = self
            .target
            .iter()
            .filter(|(t, _)| *t == tag)
            .find_map(|(_, c)| Self::run(c, m))
            .or_else(|| Self::run(&self.all, m));
        let text = failed.map(|info| {
            let fields = match self.msg_tag.get(&tag).filter(|l| !l.is_empty()) {
                Some(l) => l.as_slice(),
                None if self.msg_except.contains(&tag) => &[],
                None => self.msg_all.as_slice(),
            };
            let msg: Vec<String> = fields
                .iter()
                .filter_map(|f| get(m, f).map(|v| v.to_string()))
                .collect();
            let url = get(m, "url").map(|v| v.to_string()).unwrap_or_default();
            Text::new(format!("{tag} - {info} {}", msg.join(", ")))
                .tag(tag.clone())
                .more(url)
        });
        ctx.check(Some(m), at, self.opts, &tag, &s("curl.check"), text);
    }
}
