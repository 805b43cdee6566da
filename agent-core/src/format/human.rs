//! PyAgent's human-readable numbers (`23.5 GB`, `12.3 Kbps`) and Python's
//! `round`, shared by the converter and the inputs that emit `human_*`
//! fields, so both print exactly the same text.
use std::fmt::Write;

pub const BYTES: [&str; 9] = ["B", "KB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
pub const KIB: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
pub const BIT: [&str; 9] = ["b", "Kb", "Mb", "Gb", "Tb", "Pb", "Eb", "Zb", "Yb"];
pub const BPS: [&str; 9] = [
    "bps", "Kbps", "Mbps", "Gbps", "Tbps", "Pbps", "Ebps", "Zbps", "Ybps",
];

/// Python's `round(x, nd)`: correctly rounded, ties to even on the exact
/// binary value. Rust's fixed-precision formatting rounds the same way, so
/// near-ties go through it; everything else is a multiply and round.
pub fn py_round(x: f64, nd: i32) -> f64 {
    if !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(nd);
    let y = x * scale;
    if !y.is_finite() {
        return x;
    }
    let frac = (y - y.trunc()).abs();
    if (frac - 0.5).abs() > 1e-6 {
        return y.round() / scale;
    }
    let mut b = [0u8; 64];
    let mut w = Cursor {
        buf: &mut b,
        len: 0,
    };
    if write!(w, "{:.*}", nd.max(0) as usize, x).is_err() {
        return y.round() / scale;
    }
    let len = w.len;
    std::str::from_utf8(&b[..len])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(x)
}

/// A fixed stack buffer for formatting without allocating.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes `n` (finite, at or above `base` for a unit above the first) in
/// the largest unit not above it, one decimal, like a Python float:
/// `2.0 KB`, `23.5 GB`.
pub fn write_scaled(n: f64, base: f64, units: &[&str; 9], buf: &mut String) {
    // The unit by multiplication: exact for powers of the base, no ln/powf.
    let mut i = 0usize;
    let mut unit = 1.0;
    while i + 1 < units.len() && n >= unit * base {
        unit *= base;
        i += 1;
    }
    let mut m = py_round(n / unit, 1);
    // 1023.96 KB rounds to 1024.0: one unit up, as PyAgent did.
    if m >= base && i + 1 < units.len() {
        m = py_round(m / base, 1);
        i += 1;
    }
    write_one_decimal(m, buf);
    buf.push(' ');
    buf.push_str(units[i]);
}

/// Writes `m`, a value already rounded to one decimal, as Python's `repr`
/// would (`23.5`, `2.0`). Below 1e15 that is the integer part, a dot and
/// the tenths digit: the nearest double to k/10 prints back as k/10, so
/// this is `{:?}` without the shortest-digits search, which was a fifth of
/// the converter's time. Larger or odd values go through `{:?}`.
fn write_one_decimal(m: f64, buf: &mut String) {
    let tenths = (m * 10.0).round();
    if m.is_sign_negative() || tenths >= 1e15 || tenths / 10.0 != m {
        let _ = write!(buf, "{m:?}");
        return;
    }
    let k = tenths as u64;
    let _ = write!(buf, "{}.{}", k / 10, k % 10);
}

/// Bytes in 1024 steps: `512 B`, `1.0 KB`, `23.5 GB` (PyAgent's `human_bytes`).
pub fn human_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let mut s = String::with_capacity(12);
    write_scaled(n as f64, 1024.0, &BYTES, &mut s);
    s
}

/// Bits per second in 1000 steps: `0.0 bps`, `12.3 Kbps` (PyAgent's
/// `human_bps`; below 1000 the float is printed as is).
pub fn human_bps(bps: f64) -> String {
    if !bps.is_finite() || bps < 1000.0 {
        return format!("{:?} bps", if bps.is_finite() { bps } else { 0.0 });
    }
    let mut s = String::with_capacity(12);
    write_scaled(bps, 1000.0, &BPS, &mut s);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_like_pyagent() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KB");
        assert_eq!(human_bytes(1536), "1.5 KB");
        // 23.5 GiB
        assert_eq!(human_bytes(25_232_932_864), "23.5 GB");
        // Rounds up into the next unit rather than printing 1024.0 KB.
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MB");
        assert_eq!(human_bytes(5 * 1024u64.pow(4)), "5.0 TB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EB");
    }

    #[test]
    fn one_decimal_writes_what_debug_writes() {
        // Every tenth up to 100k, then a spread of magnitudes up to and
        // past the fast path's bound, and the values around it.
        let mut values: Vec<f64> = (0..1_000_000u64).map(|k| k as f64 / 10.0).collect();
        let mut x = 1e5;
        while x < 1e20 {
            for d in [0.0, 0.1, 0.5, 0.9] {
                values.push(py_round(x + d, 1));
            }
            x *= 1.37;
        }
        values.extend([
            -0.0,
            -2.5,
            f64::NAN,
            f64::INFINITY,
            0.05,
            1e14 + 0.3,
            99_999_999_999_999.9,
            1e15,
            1e300,
        ]);
        for m in values {
            let mut fast = String::new();
            write_one_decimal(m, &mut fast);
            assert_eq!(fast, format!("{m:?}"), "value {m}");
        }
    }

    #[test]
    fn human_bps_like_pyagent() {
        assert_eq!(human_bps(0.0), "0.0 bps");
        assert_eq!(human_bps(999.5), "999.5 bps");
        assert_eq!(human_bps(1000.0), "1.0 Kbps");
        assert_eq!(human_bps(12_345.0), "12.3 Kbps");
        assert_eq!(human_bps(2_500_000.0), "2.5 Mbps");
        assert_eq!(human_bps(f64::NAN), "0.0 bps");
    }
}
