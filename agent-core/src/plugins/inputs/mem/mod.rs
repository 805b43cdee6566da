//! `mem`: virtual memory like psutil's `virtual_memory()`, plus `human_<field>`
//! strings (formatted by [`crate::format::human`]).
//!
//! On Linux every figure comes from one read of `/proc/meminfo` (sysinfo
//! reads the same file but lacks active/inactive/buffers/cached/shared/slab,
//! and its `used` is not psutil's), so no `System` is kept at all. Elsewhere
//! sysinfo's memory refresh gives total/available/free/used and the
//! Linux-only figures are 0.
pub mod schema;
use crate::format::human::{human_bytes, py_round as round_to};
use crate::metric::Metric;
use crate::plugin::{Accumulator, Input, PluginError, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemConfig {}

/// psutil's `svmem`, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VirtualMemory {
    pub total: u64,
    pub available: u64,
    pub used: u64,
    pub free: u64,
    pub active: u64,
    pub inactive: u64,
    pub buffers: u64,
    pub cached: u64,
    pub shared: u64,
    pub slab: u64,
}

impl VirtualMemory {
    /// psutil: `(total - available) / total * 100`, one decimal.
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        round_to(
            self.total.saturating_sub(self.available) as f64 / self.total as f64 * 100.0,
            1,
        )
    }

    /// psutil's computation from `/proc/meminfo` text (values in kB).
    pub fn from_meminfo(text: &str) -> Result<Self, String> {
        let mut total = None;
        let mut free = None;
        let mut available = None;
        let (mut buffers, mut cached, mut reclaimable) = (0u64, 0u64, 0u64);
        let (mut shared, mut active, mut inactive, mut slab) = (0u64, 0u64, 0u64, 0u64);
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let Some(kb) = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            let bytes = kb.saturating_mul(1024);
            match key {
                "MemTotal" => total = Some(bytes),
                "MemFree" => free = Some(bytes),
                "MemAvailable" => available = Some(bytes),
                "Buffers" => buffers = bytes,
                "Cached" => cached = bytes,
                "SReclaimable" => reclaimable = bytes,
                "Shmem" => shared = bytes,
                "Active" => active = bytes,
                "Inactive" => inactive = bytes,
                "Slab" => slab = bytes,
                _ => {}
            }
        }
        let total = total.ok_or("MemTotal missing")?;
        let free = free.ok_or("MemFree missing")?;
        // Like `free` and psutil: reclaimable slab counts as cache.
        let cached = cached.saturating_add(reclaimable);
        let used = match total.checked_sub(free + cached + buffers) {
            Some(u) => u,
            None => total.saturating_sub(free),
        };
        // Kernels before 3.14 lack MemAvailable: psutil then estimates
        // free + buffers + cached, and so do we.
        let available = available.unwrap_or(free + buffers + cached).min(total);
        Ok(VirtualMemory {
            total,
            available,
            used,
            free,
            active,
            inactive,
            buffers,
            cached,
            shared,
            slab,
        })
    }
}

pub struct Mem {
    #[cfg(not(target_os = "linux"))]
    sys: Option<sysinfo::System>,
}

impl Mem {
    pub fn new(_config: MemConfig) -> Self {
        Mem {
            #[cfg(not(target_os = "linux"))]
            sys: None,
        }
    }

    #[cfg(target_os = "linux")]
    fn read(&mut self) -> PluginResult<VirtualMemory> {
        let text = std::fs::read_to_string("/proc/meminfo")
            .map_err(|e| PluginError::context("reading /proc/meminfo", e))?;
        VirtualMemory::from_meminfo(&text)
            .map_err(|e| PluginError::msg(format!("/proc/meminfo: {e}")))
    }

    #[cfg(not(target_os = "linux"))]
    fn read(&mut self) -> PluginResult<VirtualMemory> {
        use sysinfo::{MemoryRefreshKind, System};
        if self.sys.is_none() {
            let sys = System::new().map_err(|e| PluginError::msg(format!("sysinfo: {e:?}")))?;
            self.sys = Some(sys);
        }
        let Some(sys) = self.sys.as_mut() else {
            return Err(PluginError::msg("sysinfo unavailable"));
        };
        sys.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        Ok(VirtualMemory {
            total: sys.total_memory(),
            available: sys.available_memory(),
            used: sys.used_memory(),
            free: sys.free_memory(),
            ..VirtualMemory::default()
        })
    }
}

/// Appends the fields in psutil's order, then the `human_` strings.
pub fn push_fields(m: &mut Metric, vm: &VirtualMemory) {
    let sized: [(&'static str, &'static str, u64); 10] = [
        ("total", "human_total", vm.total),
        ("available", "human_available", vm.available),
        ("used", "human_used", vm.used),
        ("free", "human_free", vm.free),
        ("active", "human_active", vm.active),
        ("inactive", "human_inactive", vm.inactive),
        ("buffers", "human_buffers", vm.buffers),
        ("cached", "human_cached", vm.cached),
        ("shared", "human_shared", vm.shared),
        ("slab", "human_slab", vm.slab),
    ];
    m.fields.reserve(21);
    for (i, (key, _, v)) in sized.iter().enumerate() {
        m.push_field(*key, *v);
        if i == 1 {
            m.push_field("percent", vm.percent());
        }
    }
    for (_, human, v) in sized {
        m.push_field(human, human_bytes(v));
    }
}

impl Input for Mem {
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        let vm = self.read()?;
        let mut m = acc.metric();
        push_fields(&mut m, &vm);
        acc.add(m);
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "mem",
        "Virtual memory like psutil: total, available, percent, used, cached ...",
        include_str!("sample.yaml"),
        |cfg| Ok(Mem::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::FieldValue;

    #[test]
    fn meminfo_psutil_semantics() {
        let text = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    600 kB\n\
                    Buffers:          50 kB\nCached:          300 kB\nSReclaimable:     20 kB\n\
                    Shmem:            10 kB\nActive:          400 kB\nInactive:        200 kB\n\
                    Slab:             30 kB\n";
        let vm = VirtualMemory::from_meminfo(text).unwrap();
        assert_eq!(vm.total, 1_024_000);
        assert_eq!(vm.cached, 320 * 1024);
        assert_eq!(vm.used, (1000 - 100 - 320 - 50) * 1024);
        assert_eq!(vm.available, 600 * 1024);
        assert_eq!(vm.percent(), 40.0);
        assert_eq!((vm.shared, vm.slab), (10 * 1024, 30 * 1024));
        assert!(VirtualMemory::from_meminfo("garbage\n").is_err());
    }

    fn meminfo_kb(key: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn gather_matches_proc_meminfo() {
        let mut mem = Mem::new(MemConfig::default());
        let mut acc = Accumulator::new("mem", vec![].into());
        mem.gather(&mut acc).await.unwrap();
        let m = acc.take().pop().unwrap();
        assert_eq!(m.name, "mem");
        assert_eq!(
            m.field("total"),
            Some(&FieldValue::Uint(meminfo_kb("MemTotal:") * 1024))
        );
        let keys: Vec<&str> = m.fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            &keys[..11],
            [
                "total",
                "available",
                "percent",
                "used",
                "free",
                "active",
                "inactive",
                "buffers",
                "cached",
                "shared",
                "slab"
            ]
        );
        let total = m.field("total").and_then(|v| v.as_f64()).unwrap();
        let available = m.field("available").and_then(|v| v.as_f64()).unwrap();
        let percent = m.field("percent").and_then(|v| v.as_f64()).unwrap();
        assert!(available <= total && available > 0.0);
        assert!((0.0..=100.0).contains(&percent));
        // percent is derived from the same snapshot as total/available.
        assert!((percent - (total - available) / total * 100.0).abs() <= 0.051);
        let Some(FieldValue::Str(h)) = m.field("human_total") else {
            panic!("human_total missing")
        };
        assert_eq!(h.as_str(), human_bytes(total as u64));
        assert!(m.field("human_percent").is_none());
        assert_eq!(m.fields.len(), 21);
    }
}
