//! `disk`: one metric per writable, real (block-device backed) partition,
//! like PyAgent's `psutil.disk_partitions()` + `disk_usage()` loop.
//!
//! On Linux the mounts come from `/proc/self/mounts`, the real filesystem
//! types from `/proc/filesystems` (types not marked `nodev`, as psutil does)
//! and the sizes from one `statvfs` per mount, so no sysinfo `System`/`Disks`
//! is kept. Other systems use sysinfo's `Disks`.
use crate::metric::Metric;
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::plugins::inputs::mem::{human_bytes, round_to};
use crate::registry::Registry;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DiskConfig {}

/// A mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub device: String,
    pub mountpoint: String,
    pub fstype: String,
    pub opts: String,
}

/// Sizes in bytes, psutil's `disk_usage` semantics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub total: u64,
    pub used: u64,
    /// Free for unprivileged users (`f_bavail`).
    pub free: u64,
    pub percent: f64,
    pub maxfile: u64,
    pub maxpath: u64,
}

impl Usage {
    /// psutil: `used / (used + free) * 100`, where `free` excludes the blocks
    /// reserved for root, one decimal.
    pub fn from_blocks(frsize: u64, blocks: u64, bfree: u64, bavail: u64, namemax: u64) -> Self {
        let total = blocks.saturating_mul(frsize);
        let used = blocks.saturating_sub(bfree).saturating_mul(frsize);
        let free = bavail.saturating_mul(frsize);
        let denom = used.saturating_add(free);
        let percent = if denom == 0 {
            0.0
        } else {
            round_to(used as f64 / denom as f64 * 100.0, 1)
        };
        Usage {
            total,
            used,
            free,
            percent,
            maxfile: namemax,
            maxpath: 4096, // PATH_MAX on Linux, what psutil reports.
        }
    }
}

/// Undoes the octal escapes of `/proc/mounts` (`\040` is a space).
pub fn unescape_mount_field(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystem types backed by a device: the lines of `/proc/filesystems`
/// without `nodev`, plus zfs (psutil's rule).
pub fn real_fstypes(proc_filesystems: &str) -> Vec<String> {
    let mut out: Vec<String> = proc_filesystems
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    out.push("zfs".into());
    out
}

/// Writable real partitions from `/proc/self/mounts` text: real fstype,
/// a device, `rw` among the options. A mountpoint mounted twice is kept
/// once, the last mount (the one visible).
pub fn writable_partitions(mounts: &str, fstypes: &[String]) -> Vec<Partition> {
    let mut out: Vec<Partition> = Vec::new();
    for line in mounts.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(device), Some(mountpoint), Some(fstype), Some(opts)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if device.is_empty() || device == "none" || !fstypes.iter().any(|t| t == fstype) {
            continue;
        }
        if !opts.split(',').any(|o| o == "rw") {
            continue;
        }
        let p = Partition {
            device: unescape_mount_field(device),
            mountpoint: unescape_mount_field(mountpoint),
            fstype: fstype.to_string(),
            opts: opts.to_string(),
        };
        out.retain(|q| q.mountpoint != p.mountpoint);
        out.push(p);
    }
    out
}

#[cfg(unix)]
pub fn statvfs_usage(path: &str) -> std::io::Result<Usage> {
    use std::ffi::CString;
    let c =
        CString::new(path).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `st` is plain data fully written by statvfs on success; `c`
    // is a valid NUL-terminated path for the duration of the call.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st
    };
    #[allow(clippy::unnecessary_cast)] // field widths differ between platforms
    Ok(Usage::from_blocks(
        st.f_frsize as u64,
        st.f_blocks as u64,
        st.f_bfree as u64,
        st.f_bavail as u64,
        st.f_namemax as u64,
    ))
}

fn push_metric(acc: &mut Accumulator, p: &Partition, usage: Result<Usage, String>) {
    let mut m: Metric = acc.metric();
    m.tags.push(("device".into(), p.device.as_str().into()));
    m.tags
        .push(("mountpoint".into(), p.mountpoint.as_str().into()));
    m.fields.reserve(11);
    m.push_field("fstype", p.fstype.as_str());
    m.push_field("opts", p.opts.as_str());
    match usage {
        Ok(u) => {
            m.push_field("maxfile", u.maxfile);
            m.push_field("maxpath", u.maxpath);
            m.push_field("total", u.total);
            m.push_field("used", u.used);
            m.push_field("free", u.free);
            m.push_field("percent", u.percent);
            m.push_field("human_total", human_bytes(u.total));
            m.push_field("human_used", human_bytes(u.used));
            m.push_field("human_free", human_bytes(u.free));
        }
        // One unreadable mount (permissions, a vanished mount) must not hide
        // the others: report it on its own metric.
        Err(e) => m.push_field("error", e),
    }
    acc.add(m);
}

pub struct Disk {
    #[cfg(not(target_os = "linux"))]
    disks: Option<sysinfo::Disks>,
}

impl Disk {
    pub fn new(_config: DiskConfig) -> Self {
        Disk {
            #[cfg(not(target_os = "linux"))]
            disks: None,
        }
    }
}

impl Input for Disk {
    #[cfg(target_os = "linux")]
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        use crate::plugin::PluginError;
        let mounts = std::fs::read_to_string("/proc/self/mounts")
            .map_err(|e| PluginError::context("reading /proc/self/mounts", e))?;
        let filesystems = std::fs::read_to_string("/proc/filesystems")
            .map_err(|e| PluginError::context("reading /proc/filesystems", e))?;
        for p in writable_partitions(&mounts, &real_fstypes(&filesystems)) {
            let usage = statvfs_usage(&p.mountpoint).map_err(|e| format!("statvfs: {e}"));
            push_metric(acc, &p, usage);
        }
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    async fn gather(&mut self, acc: &mut Accumulator) -> PluginResult {
        use crate::plugin::PluginError;
        if self.disks.is_none() {
            let disks = sysinfo::Disks::new_with_refreshed_list()
                .map_err(|e| PluginError::msg(format!("sysinfo disks: {e:?}")))?;
            self.disks = Some(disks);
        }
        let Some(disks) = self.disks.as_mut() else {
            return Err(PluginError::msg("sysinfo disks unavailable"));
        };
        disks.refresh(true);
        for d in disks.iter() {
            if d.is_read_only() {
                continue;
            }
            let p = Partition {
                device: d.name().to_string_lossy().into_owned(),
                mountpoint: d.mount_point().to_string_lossy().into_owned(),
                fstype: d.file_system().to_string_lossy().into_owned(),
                opts: "rw".into(),
            };
            #[cfg(unix)]
            let usage = statvfs_usage(&p.mountpoint).map_err(|e| format!("statvfs: {e}"));
            #[cfg(not(unix))]
            let usage = {
                let total = d.total_space();
                let free = d.available_space();
                let mut u = Usage::from_blocks(1, total, free, free, 255);
                u.maxpath = 260; // MAX_PATH on Windows
                Ok::<Usage, String>(u)
            };
            push_metric(acc, &p, usage);
        }
        Ok(())
    }
}

pub fn register(r: &mut Registry) {
    r.add_input(
        "disk",
        "Size and usage of every writable real partition",
        include_str!("sample.yaml"),
        |cfg| Ok(Disk::new(cfg.parse()?)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::FieldValue;

    #[test]
    fn filters_pseudo_readonly_and_duplicates() {
        let fs = real_fstypes("nodev\tsysfs\nnodev\ttmpfs\n\text4\n\txfs\nnodev\toverlay\n");
        assert_eq!(fs, ["ext4", "xfs", "zfs"]);
        let mounts = "proc /proc proc rw,relatime 0 0\n\
                      /dev/vda / ext4 rw,relatime 0 0\n\
                      tmpfs /dev/shm tmpfs rw,relatime 0 0\n\
                      /dev/vdb /data\\040disk xfs rw,noatime 0 0\n\
                      /dev/loop0 /snap/core squashfs ro,nodev 0 0\n\
                      /dev/vdc /ro ext4 ro,relatime 0 0\n\
                      /dev/vdd /data\\040disk ext4 rw 0 0\n\
                      overlay /merged overlay rw 0 0\n\
                      short line\n";
        let parts = writable_partitions(mounts, &fs);
        let got: Vec<(&str, &str, &str)> = parts
            .iter()
            .map(|p| (p.device.as_str(), p.mountpoint.as_str(), p.fstype.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/dev/vda", "/", "ext4"),
                ("/dev/vdd", "/data disk", "ext4")
            ]
        );
    }

    #[test]
    fn unescape_octal() {
        assert_eq!(unescape_mount_field("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_mount_field("/plain"), "/plain");
        assert_eq!(unescape_mount_field("/bad\\09"), "/bad\\09");
        assert_eq!(unescape_mount_field("/end\\04"), "/end\\04");
    }

    #[test]
    fn usage_like_psutil() {
        // 1000 blocks of 4 KiB, 300 free of which 250 usable by non-root.
        let u = Usage::from_blocks(4096, 1000, 300, 250, 255);
        assert_eq!(u.total, 4_096_000);
        assert_eq!(u.used, 700 * 4096);
        assert_eq!(u.free, 250 * 4096);
        assert_eq!(u.percent, round_to(700.0 / 950.0 * 100.0, 1));
        assert_eq!((u.maxfile, u.maxpath), (255, 4096));
        assert_eq!(Usage::from_blocks(4096, 0, 0, 0, 255).percent, 0.0);
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn gather_matches_mounts_and_statvfs() {
        // Independently: which mounts are rw with a device-backed fs type?
        let fs_text = std::fs::read_to_string("/proc/filesystems").unwrap();
        let real: Vec<&str> = fs_text
            .lines()
            .filter(|l| !l.starts_with("nodev"))
            .map(|l| l.trim())
            .chain(["zfs"])
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mut expected: Vec<String> = mounts
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| real.contains(&f[2]) && f[3].split(',').any(|o| o == "rw"))
            .map(|f| unescape_mount_field(f[1]))
            .collect();
        expected.sort();
        expected.dedup();
        let mut disk = Disk::new(DiskConfig::default());
        let mut acc = Accumulator::new("disk", vec![].into());
        disk.gather(&mut acc).await.unwrap();
        let metrics = acc.take();
        let mut got: Vec<String> = metrics
            .iter()
            .map(|m| m.tag("mountpoint").unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, expected);
        // Pseudo filesystems never appear.
        for m in &metrics {
            assert!(!["tmpfs", "proc", "sysfs", "cgroup"]
                .contains(&m.field("fstype").unwrap().as_str().unwrap()));
        }
        if let Some(root) = metrics.iter().find(|m| m.tag("mountpoint") == Some("/")) {
            let Some(FieldValue::Uint(total)) = root.field("total") else {
                panic!("total missing: {root:?}")
            };
            // SAFETY: test-only direct statvfs on "/".
            let st = unsafe {
                let mut st: libc::statvfs = std::mem::zeroed();
                assert_eq!(libc::statvfs(c"/".as_ptr(), &mut st), 0);
                st
            };
            assert_eq!(*total, st.f_blocks * st.f_frsize);
            assert_eq!(root.field("maxfile"), Some(&FieldValue::Uint(st.f_namemax)));
            let used = root.field("used").and_then(|v| v.as_f64()).unwrap();
            let free = root.field("free").and_then(|v| v.as_f64()).unwrap();
            let percent = root.field("percent").and_then(|v| v.as_f64()).unwrap();
            assert!((percent - used / (used + free) * 100.0).abs() <= 0.051);
            assert_eq!(
                root.field("human_total").unwrap().as_str().unwrap(),
                human_bytes(*total)
            );
            assert!(root.tag("device").is_some_and(|d| !d.is_empty()));
        } else {
            // Only acceptable when "/" itself is not a writable real fs.
            assert!(!expected.iter().any(|m| m == "/"));
        }
    }
}
