//! Typed config values: one type per kind of value, each of which refuses
//! what it cannot hold while it is parsed. A struct field of one of these
//! types therefore never holds NaN, a negative size or a number of seconds
//! that would panic when turned into a [`Duration`].
//!
//! Ranges that depend on the key (an interval, a timeout, a jitter) are
//! checked afterwards with [`Seconds::within`] and friends, whose reasons
//! end up in a `file: key: reason` [`super::ConfigError`].
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// The largest number of seconds any key accepts before its own range is
/// checked (ten years): far below what overflows a [`Duration`] or an
/// `Instant` it is added to.
pub const MAX_SECONDS: f64 = 315_360_000.0;

/// The largest count any key accepts before its own range is checked:
/// bigger numbers are typos, and a buffer sized by one would not fit in
/// memory anyway.
pub const MAX_COUNT: u64 = 1 << 40;

/// A number as written in error messages: `1e300`, not 301 digits.
struct Shown(f64);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.is_finite() && self.0.abs() >= 1e15 {
            write!(f, "{:e}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// A number read from YAML: integers stay exact, floats are checked.
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn as_f64(&self) -> f64 {
        match *self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x}"),
        }
    }
}

/// Accepts any YAML number; everything else is refused with `expecting`.
struct NumVisitor(&'static str);

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        Ok(Num::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Num, E> {
        Ok(Num::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Num, E> {
        Ok(Num::Int(i128::try_from(v).unwrap_or(i128::MAX)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        Ok(Num::Float(v))
    }
}

fn number<'de, D: Deserializer<'de>>(d: D, expecting: &'static str) -> Result<Num, D::Error> {
    d.deserialize_any(NumVisitor(expecting))
}

/// A number of seconds (fractions allowed): finite, not negative, at most
/// [`MAX_SECONDS`]. Converts to a [`Duration`] without panicking.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Seconds(f64);

impl Seconds {
    /// `secs` if it is a valid number of seconds.
    pub fn new(secs: f64) -> Result<Seconds, String> {
        if !secs.is_finite() {
            return Err(format!("expected a number of seconds, got {secs}"));
        }
        if secs < 0.0 {
            return Err(format!("must not be negative, got {}", Shown(secs)));
        }
        if secs > MAX_SECONDS {
            return Err(format!(
                "must be at most {MAX_SECONDS} seconds (ten years), got {}",
                Shown(secs)
            ));
        }
        Ok(Seconds(secs))
    }

    /// A constant known to be valid (defaults).
    pub const fn from_secs(secs: u32) -> Seconds {
        Seconds(secs as f64)
    }

    /// A constant known to be valid (defaults).
    pub const fn from_millis(ms: u32) -> Seconds {
        Seconds(ms as f64 / 1000.0)
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        // Cannot fail: the value is finite, not negative and bounded.
        Duration::try_from_secs_f64(self.0).unwrap_or(Duration::ZERO)
    }

    /// The duration if `min <= secs <= max`; otherwise the reason, for a
    /// config error. Keys that must be above 0 use a `min` of 0.001: below
    /// a millisecond, timers and libcurl round to 0, which means "never".
    pub fn within(self, min: f64, max: f64) -> Result<Duration, String> {
        if (min..=max).contains(&self.0) {
            Ok(self.as_duration())
        } else {
            Err(format!(
                "must be a number of seconds between {min} and {max}, got {}",
                Shown(self.0)
            ))
        }
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = number(d, "a number of seconds")?;
        Seconds::new(n.as_f64()).map_err(de::Error::custom)
    }
}

/// A non-negative whole number, at most [`MAX_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Count(u64);

impl Count {
    pub fn new(n: u64) -> Result<Count, String> {
        if n > MAX_COUNT {
            Err(format!("must be at most {MAX_COUNT}, got {n}"))
        } else {
            Ok(Count(n))
        }
    }

    pub const fn from_const(n: u32) -> Count {
        Count(n as u64)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// As a `usize` (the bound keeps it exact on 64-bit targets).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// As a `u32`, saturating (only for keys whose range is checked below it).
    pub fn as_u32(self) -> u32 {
        u32::try_from(self.0).unwrap_or(u32::MAX)
    }

    /// `Ok(self)` if `min <= n <= max`, else the reason.
    pub fn within(self, min: u64, max: u64) -> Result<Count, String> {
        if (min..=max).contains(&self.0) {
            Ok(self)
        } else {
            Err(format!("must be between {min} and {max}, got {}", self.0))
        }
    }

    fn from_num(n: Num) -> Result<Count, String> {
        match n {
            Num::Int(i) if i < 0 => Err(format!("must not be negative, got {i}")),
            Num::Int(i) => Count::new(u64::try_from(i).unwrap_or(u64::MAX)),
            Num::Float(f) if f.is_finite() && f.fract() == 0.0 && f >= 0.0 => {
                if f > MAX_COUNT as f64 {
                    Err(format!("must be at most {MAX_COUNT}, got {}", Shown(f)))
                } else {
                    Ok(Count(f as u64))
                }
            }
            Num::Float(f) => Err(format!("expected a whole number, got {}", Shown(f))),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = number(d, "a whole number")?;
        Count::from_num(n).map_err(de::Error::custom)
    }
}

/// A size in bytes: a whole number, or a number with a unit such as
/// `50 MB`, `1.5KB`, `10MiB` (K, M, G and T are powers of 1024, as in
/// loguru). Not negative, at most 2^62 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Size(u64);

const MAX_SIZE: u64 = 1 << 62;

impl Size {
    pub const fn from_bytes(n: u64) -> Size {
        Size(n)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Parses `50 MB`, `10MiB`, `512 kb` or a plain number of bytes.
    pub fn parse(text: &str) -> Result<Size, String> {
        let bad = || format!("expected a size such as `50 MB` or a number of bytes, got {text:?}");
        let s = text.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let num: f64 = num.trim().parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = num * mult as f64;
        if !bytes.is_finite() || bytes > MAX_SIZE as f64 {
            return Err(format!("must be at most {MAX_SIZE} bytes, got {text:?}"));
        }
        Ok(Size(bytes as u64))
    }

    fn from_num(n: Num) -> Result<Size, String> {
        match n {
            Num::Int(i) if i < 0 => Err(format!("must not be negative, got {i}")),
            Num::Int(i) if i > MAX_SIZE as i128 => {
                Err(format!("must be at most {MAX_SIZE} bytes, got {i}"))
            }
            Num::Int(i) => Ok(Size(i as u64)),
            Num::Float(f) if f.is_finite() && f >= 0.0 && f <= MAX_SIZE as f64 => {
                Ok(Size(f as u64))
            }
            Num::Float(f) => Err(format!(
                "expected a size between 0 and {MAX_SIZE} bytes, got {}",
                Shown(f)
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as `50 MB` or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                Size::from_num(Num::Int(v.into())).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Size::from_num(Num::Int(v.into())).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                Size::from_num(Num::Float(v)).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A finite number (a percent, a ratio, an alarm threshold): NaN and
/// infinities are refused.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Finite(f64);

impl Finite {
    pub fn new(v: f64) -> Result<Finite, String> {
        if v.is_finite() {
            Ok(Finite(v))
        } else {
            Err(format!("expected a finite number, got {v}"))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = number(d, "a number")?;
        Finite::new(n.as_f64()).map_err(de::Error::custom)
    }
}

/// `host:port` (a name or an IP address; IPv6 in brackets), port 1..=65535.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address(String);

impl Address {
    pub fn parse(text: &str) -> Result<Address, String> {
        let bad = |why: &str| format!("expected `host:port`, got {text:?}: {why}");
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.contains(char::is_whitespace) {
            return Err(bad("space in host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Address(text.to_string())),
            _ => Err(bad("the port must be 1 to 65535")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Address::parse(&s).map_err(de::Error::custom)
    }
}

/// An `http://` or `https://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Url(String);

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        let t = text.trim();
        let rest = t
            .strip_prefix("http://")
            .or_else(|| t.strip_prefix("https://"))
            .ok_or_else(|| format!("expected an http:// or https:// URL, got {text:?}"))?;
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        if host.is_empty() || host.starts_with(':') || rest.contains(char::is_whitespace) {
            return Err(format!("expected a URL with a host, got {text:?}"));
        }
        Ok(Url(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Url {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Url::parse(&s).map_err(de::Error::custom)
    }
}

/// loguru's retention: a number of files, or `N days` / `N files` (read as
/// N files: one rotation a day is the usual case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(Count);

impl Retention {
    pub fn files(self) -> usize {
        self.0.as_usize()
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const WHAT: &str = "a number of files such as `10` or `10 days`";
        impl<'de> Visitor<'de> for V {
            type Value = Retention;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(WHAT)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Retention, E> {
                Count::from_num(Num::Int(v.into()))
                    .map(Retention)
                    .map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Retention, E> {
                Count::from_num(Num::Int(v.into()))
                    .map(Retention)
                    .map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Retention, E> {
                Count::from_num(Num::Float(v))
                    .map(Retention)
                    .map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Retention, E> {
                let mut words = v.split_whitespace();
                let n = words.next().and_then(|n| n.parse::<u64>().ok());
                // loguru's units, each read as a number of files (as
                // PyAgent configs were read before).
                let unit_ok = match words.next() {
                    None => true,
                    Some(u) => matches!(
                        u.to_ascii_lowercase().trim_end_matches('s'),
                        "file" | "second" | "minute" | "hour" | "day" | "week" | "month" | "year"
                    ),
                } && words.next().is_none();
                match n {
                    Some(n) if unit_ok => Count::new(n).map(Retention).map_err(E::custom),
                    _ => Err(E::custom(format!("expected {WHAT}, got {v:?}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention(Count::from_const(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::from_str;

    fn hostile() -> Vec<&'static str> {
        vec![
            "-1",
            ".nan",
            ".inf",
            "-.inf",
            "1e300",
            "18446744073709551616",
            "abc",
            "[1]",
            "{a: 1}",
            "true",
            "~",
        ]
    }

    #[test]
    fn seconds_refuses_what_cannot_be_a_duration() {
        for bad in hostile() {
            assert!(from_str::<Seconds>(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            from_str::<Seconds>("0").unwrap().as_duration(),
            Duration::ZERO
        );
        assert_eq!(
            from_str::<Seconds>("1.5").unwrap().as_duration(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            from_str::<Seconds>("10").unwrap().as_duration(),
            Duration::from_secs(10)
        );
        let err = from_str::<Seconds>("-1").unwrap_err().to_string();
        assert!(err.contains("must not be negative"), "{err}");
        let err = from_str::<Seconds>("1e300").unwrap_err().to_string();
        assert!(err.ends_with("got 1e300"), "{err}");
        let err = from_str::<Seconds>(".nan").unwrap_err().to_string();
        assert!(err.contains("NaN"), "{err}");
    }

    #[test]
    fn seconds_within_names_the_range() {
        let s: Seconds = from_str("0").unwrap();
        let err = s.within(0.001, 3600.0).unwrap_err();
        assert!(err.contains("between 0.001 and 3600"), "{err}");
        let s: Seconds = from_str("7200").unwrap();
        assert!(s.within(0.001, 3600.0).is_err());
        let s: Seconds = from_str("0.001").unwrap();
        assert_eq!(s.within(0.001, 86_400.0).unwrap(), Duration::from_millis(1));
    }

    #[test]
    fn count_takes_whole_non_negative_numbers_only() {
        for bad in hostile() {
            assert!(from_str::<Count>(bad).is_err(), "{bad} accepted");
        }
        assert!(from_str::<Count>("1.5").is_err());
        assert_eq!(from_str::<Count>("0").unwrap().get(), 0);
        assert_eq!(from_str::<Count>("3.0").unwrap().get(), 3);
        assert_eq!(from_str::<Count>("1000").unwrap().as_usize(), 1000);
        assert!(from_str::<Count>("0").unwrap().within(1, 10).is_err());
    }

    #[test]
    fn size_takes_bytes_or_units() {
        for bad in hostile() {
            assert!(from_str::<Size>(bad).is_err(), "{bad} accepted");
        }
        for bad in [
            "\"-5 MB\"",
            "\"lots\"",
            "\"1e300 GB\"",
            "\"99999999999 TB\"",
        ] {
            assert!(from_str::<Size>(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(from_str::<Size>("\"50 MB\"").unwrap().bytes(), 50 << 20);
        assert_eq!(from_str::<Size>("\"10MiB\"").unwrap().bytes(), 10 << 20);
        assert_eq!(from_str::<Size>("\"1.5KB\"").unwrap().bytes(), 1536);
        assert_eq!(from_str::<Size>("10").unwrap().bytes(), 10);
        assert_eq!(from_str::<Size>("0").unwrap().bytes(), 0);
    }

    #[test]
    fn finite_refuses_nan_and_infinities() {
        for bad in [".nan", ".inf", "-.inf", "abc", "[1]", "{a: 1}", "true", "~"] {
            assert!(from_str::<Finite>(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(from_str::<Finite>("-1").unwrap().get(), -1.0);
        assert_eq!(from_str::<Finite>("1e300").unwrap().get(), 1e300);
        assert_eq!(from_str::<Finite>("0").unwrap().get(), 0.0);
    }

    #[test]
    fn address_needs_host_and_port() {
        assert!(Address::parse("127.0.0.1:9273").is_ok());
        assert!(Address::parse("[::1]:80").is_ok());
        assert!(Address::parse("localhost:1").is_ok());
        for bad in ["127.0.0.1", ":80", "h:0", "h:65536", "h:-1", "h:x", ""] {
            assert!(Address::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(from_str::<Address>("1").is_err());
    }

    #[test]
    fn url_must_be_http_with_a_host() {
        assert!(Url::parse("http://127.0.0.1:9200").is_ok());
        assert!(Url::parse("https://user:pw@es.example/x?y").is_ok());
        for bad in [
            "ftp://x",
            "http://",
            "http:///x",
            "localhost:9200",
            "",
            "http://a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn retention_is_files_or_days() {
        assert_eq!(from_str::<Retention>("10").unwrap().files(), 10);
        assert_eq!(from_str::<Retention>("\"10 days\"").unwrap().files(), 10);
        assert_eq!(from_str::<Retention>("\"3 files\"").unwrap().files(), 3);
        assert_eq!(from_str::<Retention>("\"1 week\"").unwrap().files(), 1);
        for bad in ["-1", ".nan", "\"many\"", "\"10 parsecs\"", "[1]", "1e300"] {
            assert!(from_str::<Retention>(bad).is_err(), "{bad} accepted");
        }
    }
}
