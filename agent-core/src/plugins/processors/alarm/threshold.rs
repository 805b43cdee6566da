//! Generic `threshold:` rules: `{field, op, value, for, message, tag,
//! repeat_sec, recovery, comment}` on any input's field.
use super::{get, Ctx, StateOpts, Text};
use crate::config::PluginConfig;
use crate::metric::{FieldValue, Metric, Str};
use serde::Deserialize;
use serde_yaml_ng::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct ThresholdConf {
    pub field: String,
    #[serde(default = "d_op")]
    pub op: String,
    pub value: Value,
    #[serde(default, rename = "for")]
    pub for_n: Option<u32>,
    #[serde(default)]
    pub repeat_sec: Option<crate::config::Seconds>,
    #[serde(default)]
    pub recovery: Option<bool>,
    /// `{field} {value} {op} {threshold} {tag} {name}` are replaced.
    #[serde(default)]
    pub message: Option<String>,
    /// Only metrics whose `tag` is this.
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

fn d_op() -> String {
    ">=".into()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }

    fn holds<T: PartialOrd + ?Sized>(self, a: &T, b: &T) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

#[derive(Debug, Clone)]
enum Target {
    Num(f64, FieldValue),
    Text(Str),
}

#[derive(Debug, Clone)]
pub struct Threshold {
    field: Str,
    op: Op,
    target: Target,
    message: String,
    tag: Option<Str>,
    comment: Str,
    rule: Str,
    opts: StateOpts,
}

impl Threshold {
    pub fn new(
        cfg: &PluginConfig,
        i: usize,
        c: ThresholdConf,
        base: StateOpts,
    ) -> Result<Threshold, crate::ConfigError> {
        let key = format!("threshold[{i}]");
        let op = match c.op.trim() {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" | "=" => Op::Eq,
            "!=" => Op::Ne,
            other => {
                return Err(cfg.error(
                    &format!("{key}.op"),
                    format!("unknown operator `{other}`; use one of > >= < <= == !="),
                ))
            }
        };
        let target = match &c.value {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                if !f.is_finite() {
                    return Err(cfg.error(
                        &format!("{key}.value"),
                        format!("expected a finite number, got {f}"),
                    ));
                }
                let shown = match n.as_i64() {
                    Some(i) => FieldValue::Int(i),
                    None => FieldValue::Float(f),
                };
                Target::Num(f, shown)
            }
            Value::String(s) if matches!(op, Op::Eq | Op::Ne) => Target::Text(Str::new(s)),
            Value::Bool(b) if matches!(op, Op::Eq | Op::Ne) => {
                Target::Text(Str::new(if *b { "True" } else { "False" }))
            }
            _ => {
                return Err(cfg.error(
                    &format!("{key}.value"),
                    "expected a number (or, with == and !=, a string)",
                ))
            }
        };
        if c.field.is_empty() {
            return Err(cfg.error(&format!("{key}.field"), "must name a field"));
        }
        let opts = StateOpts::new(cfg, &key, c.for_n, c.repeat_sec, c.recovery, base)?;
        let shown = match &target {
            Target::Num(_, v) => v.to_string(),
            Target::Text(s) => s.to_string(),
        };
        Ok(Threshold {
            rule: Str::from(format!("threshold:{}{}{}", c.field, op.as_str(), shown)),
            field: Str::from(c.field),
            op,
            target,
            message: c
                .message
                .unwrap_or_else(|| "{field}: {value}{op}{threshold}".into()),
            tag: c.tag.map(Str::from),
            comment: Str::from(c.comment.unwrap_or_default()),
            opts,
        })
    }

    pub(crate) fn check(&self, m: &Metric, at: usize, ctx: &mut Ctx) {
        let tag = crate::plugins::common::tag::metric_tag(m);
        if let Some(want) = &self.tag {
            if tag != Some(want.as_str()) {
                return;
            }
        }
        let Some(v) = get(m, &self.field) else {
            return;
        };
        let breached = match &self.target {
            Target::Num(t, _) => match v.num() {
                Some(n) => self.op.holds(&n, t),
                None => {
                    ctx.problem(|| {
                        format!(
                            "threshold on `{}` of a `{}` metric: not a number: {v}",
                            self.field, m.name
                        )
                    });
                    return;
                }
            },
            Target::Text(t) => {
                let s = v.to_string();
                self.op.holds(s.as_str(), t.as_str())
            }
        };
        let series = Str::from(tag.unwrap_or(""));
        let text = breached.then(|| {
            let shown = match &self.target {
                Target::Num(_, v) => v.to_string(),
                Target::Text(s) => s.to_string(),
            };
            let info = self
                .message
                .replace("{field}", &self.field)
                .replace("{value}", &v.to_string())
                .replace("{op}", self.op.as_str())
                .replace("{threshold}", &shown)
                .replace("{tag}", series.as_str())
                .replace("{name}", &m.name);
            Text::new(info)
                .tag(series.clone())
                .more(self.comment.clone())
        });
        ctx.check(Some(m), at, self.opts, &series, &self.rule, text);
    }
}
