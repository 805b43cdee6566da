//! The converter functions, each a PyAgent `libs.converter` function
//! reimplemented: same inputs accepted, same text produced.
use crate::format::human::{self, py_round};
use crate::metric::{FieldValue, Str};
use md5::{Digest, Md5};
use regex::Regex;
use std::fmt::Write;
use std::sync::OnceLock;

/// Every function the converter knows, by its PyAgent name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    HumanBytes,
    Human1kBytes,
    HumanKib,
    HumanBit,
    HumanBps,
    HumanBase,
    GetRound,
    GetComma,
    GetInt,
    GetStr,
    GetBool,
    GetHash,
    GetPlainText,
    GetDomain,
    GetDomainHost,
}

pub const NAMES: [(&str, Func); 15] = [
    ("human_bytes", Func::HumanBytes),
    ("human_1k_bytes", Func::Human1kBytes),
    ("human_kib", Func::HumanKib),
    ("human_bit", Func::HumanBit),
    ("human_bps", Func::HumanBps),
    ("human_base", Func::HumanBase),
    ("get_round", Func::GetRound),
    ("get_comma", Func::GetComma),
    ("get_int", Func::GetInt),
    ("get_str", Func::GetStr),
    ("get_bool", Func::GetBool),
    ("get_hash", Func::GetHash),
    ("get_plain_text", Func::GetPlainText),
    ("get_domain", Func::GetDomain),
    ("get_domain_host", Func::GetDomainHost),
];

impl Func {
    pub fn by_name(name: &str) -> Option<Func> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// Applies the function. `None` when the value does not fit the
    /// function (PyAgent raised and fell back to the default).
    /// `buf` is scratch space reused across calls.
    pub fn apply(self, v: &FieldValue, buf: &mut String) -> Option<FieldValue> {
        match self {
            Func::HumanBytes | Func::HumanBase => human_base(v, 1024.0, &human::BYTES, buf),
            Func::Human1kBytes => human_base(v, 1000.0, &human::BYTES, buf),
            Func::HumanKib => human_base(v, 1024.0, &human::KIB, buf),
            Func::HumanBit => human_base(v, 1000.0, &human::BIT, buf),
            Func::HumanBps => human_base(v, 1000.0, &human::BPS, buf),
            Func::GetRound => get_round(v, 2).map(FieldValue::Float),
            Func::GetComma => get_comma(v, buf),
            Func::GetInt => get_int(v).map(FieldValue::Int),
            Func::GetStr => {
                buf.clear();
                let _ = write!(buf, "{v}");
                Some(FieldValue::Str(Str::new(&buf)))
            }
            Func::GetBool => {
                buf.clear();
                let _ = write!(buf, "{v}");
                Some(FieldValue::Bool(matches!(
                    buf.as_str(),
                    "1" | "t" | "T" | "true" | "TRUE" | "True"
                )))
            }
            Func::GetHash => {
                buf.clear();
                let _ = write!(buf, "{v}");
                let digest = Md5::digest(buf.as_bytes());
                buf.clear();
                for b in digest {
                    let _ = write!(buf, "{b:02x}");
                }
                Some(FieldValue::Str(Str::new(&buf)))
            }
            Func::GetPlainText => v
                .as_str()
                .map(|s| FieldValue::Str(Str::from(plain_text(s)))),
            Func::GetDomain => v
                .as_str()
                .and_then(get_domain)
                .map(|d| FieldValue::Str(Str::new(d))),
            Func::GetDomainHost => v
                .as_str()
                .and_then(get_domain_host)
                .map(|d| FieldValue::Str(Str::new(d))),
        }
    }
}

/// A plain number: ints, uints and floats (PyAgent's `int`/`float`; bools
/// and strings are not numbers for the `human_*` functions).
fn number(v: &FieldValue) -> Option<f64> {
    match v {
        FieldValue::Int(i) => Some(*i as f64),
        FieldValue::Uint(u) => Some(*u as f64),
        FieldValue::Float(f) => Some(*f),
        _ => None,
    }
}

/// `n` in the largest unit below it, one decimal: `23.5 GB`; below one
/// unit the number as it was: `512 B`.
fn human_base(
    v: &FieldValue,
    base: f64,
    sizes: &[&str; 9],
    buf: &mut String,
) -> Option<FieldValue> {
    let n = number(v)?;
    if n.is_nan() {
        return None;
    }
    buf.clear();
    if n < base {
        let _ = write!(buf, "{v} {}", sizes[0]);
        return Some(FieldValue::Str(Str::new(&buf)));
    }
    if n.is_infinite() {
        return None;
    }
    human::write_scaled(n, base, sizes, buf);
    Some(FieldValue::Str(Str::new(&buf)))
}

fn get_round(v: &FieldValue, nd: i32) -> Option<f64> {
    match v {
        FieldValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        FieldValue::Str(s) => s.trim().parse::<f64>().ok().map(|f| py_round(f, nd)),
        other => number(other).map(|f| py_round(f, nd)),
    }
}

fn get_int(v: &FieldValue) -> Option<i64> {
    match v {
        FieldValue::Int(i) => Some(*i),
        FieldValue::Uint(u) => i64::try_from(*u).ok(),
        FieldValue::Float(f) if f.is_finite() && f.abs() < 9.2e18 => Some(f.trunc() as i64),
        FieldValue::Float(_) => None,
        FieldValue::Bool(b) => Some(*b as i64),
        FieldValue::Str(s) => s.trim().parse::<i64>().ok(),
    }
}

/// Python's `'{:,}'.format(n)`: thousands separators in the integer part.
fn get_comma(v: &FieldValue, buf: &mut String) -> Option<FieldValue> {
    let mut digits = String::with_capacity(32);
    match v {
        FieldValue::Bool(b) => {
            let _ = write!(digits, "{}", *b as i64);
        }
        FieldValue::Str(_) => return None,
        FieldValue::Float(f) if !f.is_finite() => return None,
        other => {
            let _ = write!(digits, "{other}");
        }
    }
    let (sign, rest) = match digits.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", digits.as_str()),
    };
    let int_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (int_part, tail) = rest.split_at(int_end);
    buf.clear();
    buf.push_str(sign);
    for (i, c) in int_part.chars().enumerate() {
        if i > 0 && (int_part.len() - i) % 3 == 0 {
            buf.push(',');
        }
        buf.push(c);
    }
    buf.push_str(tail);
    Some(FieldValue::Str(Str::new(&buf)))
}

/// HTML tags removed, whitespace runs collapsed to one space, trimmed.
pub fn plain_text(s: &str) -> String {
    static TAGS: OnceLock<Option<Regex>> = OnceLock::new();
    let no_tags = match TAGS.get_or_init(|| Regex::new(r"<[^>]+>").ok()) {
        Some(re) => re.replace_all(s, ""),
        None => s.into(),
    };
    no_tags.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn std_domain_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$").ok()
    })
    .as_ref()
}

fn extend_domain_re() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^([-_a-zA-Z0-9]{1,63}\.)+[-_a-zA-Z0-9]{1,63}$").ok())
        .as_ref()
}

/// A standard domain (3..=255 chars, labels of letters, digits and inner
/// hyphens, no `--`, alphabetic TLD), trimmed; `None` otherwise.
pub fn get_domain(s: &str) -> Option<&str> {
    let d = s.trim();
    let ok = (3..=255).contains(&d.chars().count())
        && !d.contains("--")
        && std_domain_re().is_some_and(|re| re.is_match(d));
    ok.then_some(d)
}

/// Loose domain: also `*.` wildcards and underscores in labels.
fn get_extend_domain(s: &str) -> Option<&str> {
    if let Some(d) = get_domain(s) {
        return Some(d);
    }
    let d = s.trim();
    if !(3..=255).contains(&d.chars().count()) {
        return None;
    }
    let body = d.strip_prefix("*.").unwrap_or(d);
    extend_domain_re()
        .is_some_and(|re| re.is_match(body))
        .then_some(d)
}

/// A valid host record (the part left of a domain), trimmed.
pub fn get_domain_host(s: &str) -> Option<&str> {
    let h = s.trim();
    let mut probe = String::with_capacity(h.len() + 2);
    probe.push_str(h);
    probe.push_str(".f");
    get_extend_domain(&probe).is_some().then_some(h)
}
