//! `disk`: one metric per writable, real (block-device backed) partition,
//! like PyAgent's `psutil.disk_partitions()` + `disk_usage()` loop.
//!
//! On Linux the mounts come from `/proc/self/mounts`, the real filesystem
//! types from `/proc/filesystems` (types not marked `nodev`, as psutil does)
//! and the sizes from one `statvfs` per mount, so no sysinfo `System`/`Disks`
//! is kept. Other systems use sysinfo's `Disks`.
//!
//! `statvfs` can block for minutes (a dead NFS server, a stalled disk), so
//! it runs on a prober thread ([`StatvfsProber`]) with a per-mount timeout,
//! never on the event loop.
pub mod schema;
#[cfg(unix)]
use crate::blocking::{Worker, WorkerError};
use crate::format::human::{human_bytes, py_round as round_to};
use crate::metric::Metric;
use crate::plugin::{Accumulator, Input, PluginResult};
use crate::registry::Registry;
use serde::Deserialize;
#[cfg(unix)]
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
#[cfg(unix)]
use std::sync::Mutex;
#[cfg(unix)]
use std::time::{Duration, Instant};

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

/// How long one mount's `statvfs` may take (normally microseconds). Kept
/// well under the shortest gather interval (1 s), so even a gather that
/// meets a newly hung mount finishes in time.
#[cfg(unix)]
pub const STATVFS_TIMEOUT: Duration = Duration::from_millis(500);

/// `statvfs` calls that have not returned yet: call id, mount, start.
/// Shared by every disk input and kept across plugin rebuilds, so a hung
/// mount is probed by one stuck thread at a time, never one more per gather.
#[cfg(unix)]
static IN_PROGRESS: Mutex<Vec<(u64, String, Instant)>> = Mutex::new(Vec::new());

#[cfg(unix)]
fn in_progress() -> std::sync::MutexGuard<'static, Vec<(u64, String, Instant)>> {
    // Only plain pushes and removals happen under the lock.
    IN_PROGRESS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes its call from [`IN_PROGRESS`] when dropped: when the call
/// returns, and also when it never runs (refused or cancelled).
#[cfg(unix)]
struct CallDone(u64);

#[cfg(unix)]
impl Drop for CallDone {
    fn drop(&mut self) {
        in_progress().retain(|(i, ..)| *i != self.0);
    }
}

/// Runs `statvfs` on a thread of its own, one mount at a time, with
/// [`STATVFS_TIMEOUT`] per mount. A call that times out keeps its thread
/// (which ends when the call returns) and the prober starts a new thread
/// for the other mounts; the hung mount is reported as an error and
/// skipped until its call returns. So a hung mount costs one thread, not
/// every gather.
#[cfg(unix)]
pub struct StatvfsProber {
    worker: Option<Worker<()>>,
    thread_name: &'static str,
    probe: fn(&str) -> std::io::Result<Usage>,
    timeout: Duration,
}

#[cfg(unix)]
impl StatvfsProber {
    pub fn new() -> Self {
        StatvfsProber {
            worker: None,
            thread_name: "statvfs",
            probe: statvfs_usage,
            timeout: STATVFS_TIMEOUT,
        }
    }

    /// Tests: another probe function (standing in for a hung mount), its
    /// own thread name and timeout.
    #[cfg(test)]
    fn with_probe(
        probe: fn(&str) -> std::io::Result<Usage>,
        thread_name: &'static str,
        timeout: Duration,
    ) -> Self {
        StatvfsProber {
            worker: None,
            thread_name,
            probe,
            timeout,
        }
    }

    /// The usage of the filesystem mounted at `mount`, or why there is none.
    pub async fn usage(&mut self, mount: &str) -> Result<Usage, String> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Relaxed);
        {
            let mut calls = in_progress();
            // A call younger than the timeout is just running (another disk
            // input); an older one is stuck.
            let stuck = calls
                .iter()
                .find(|(_, m, since)| m == mount && since.elapsed() >= self.timeout);
            if let Some((.., since)) = stuck {
                return Err(format!(
                    "statvfs has not returned for {:.0}s (hung mount?); skipped",
                    since.elapsed().as_secs_f64()
                ));
            }
            calls.push((id, mount.to_string(), Instant::now()));
        }
        let done = CallDone(id);
        let worker = match self.worker.take() {
            Some(w) => w,
            None => match Worker::spawn(self.thread_name, 1, ()) {
                Ok(w) => w,
                Err(e) => return Err(e.to_string()),
            },
        };
        let (probe, path) = (self.probe, mount.to_string());
        let call = move |_: &mut ()| {
            let _done = done;
            probe(&path)
        };
        let reply = worker.submit(call).map_err(|e| e.to_string())?;
        match reply.wait(self.timeout).await {
            Ok(r) => {
                self.worker = Some(worker);
                r.map_err(|e| format!("statvfs: {e}"))
            }
            // The worker stays inside the call: let it go (it ends when the
            // call returns); the next mount gets a new thread.
            Err(WorkerError::TimedOut(..)) => Err(format!(
                "statvfs did not return within {:.1}s (hung mount?)",
                self.timeout.as_secs_f64()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(unix)]
impl Default for StatvfsProber {
    fn default() -> Self {
        Self::new()
    }
}

pub struct Disk {
    #[cfg(unix)]
    prober: StatvfsProber,
    #[cfg(not(target_os = "linux"))]
    disks: Option<sysinfo::Disks>,
}

impl Disk {
    pub fn new(_config: DiskConfig) -> Self {
        Disk {
            #[cfg(unix)]
            prober: StatvfsProber::new(),
            #[cfg(not(target_os = "linux"))]
            disks: None,
        }
    }

    /// One metric per partition, sizes from the prober.
    #[cfg(unix)]
    async fn gather_partitions(&mut self, acc: &mut Accumulator, partitions: &[Partition]) {
        for p in partitions {
            let usage = self.prober.usage(&p.mountpoint).await;
            push_metric(acc, p, usage);
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
        let partitions = writable_partitions(&mounts, &real_fstypes(&filesystems));
        self.gather_partitions(acc, &partitions).await;
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
            let usage = self.prober.usage(&p.mountpoint).await;
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

    /// Stands in for statvfs: `/test/hung` blocks until [`release_hung`].
    fn probe_with_hung_mount(path: &str) -> std::io::Result<Usage> {
        if path == "/test/hung" {
            let (lock, cv) = &HUNG_GATE;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
        Ok(Usage::from_blocks(4096, 1000, 300, 250, 255))
    }

    static HUNG_GATE: (Mutex<bool>, std::sync::Condvar) =
        (Mutex::new(false), std::sync::Condvar::new());

    fn release_hung() {
        *HUNG_GATE.0.lock().unwrap() = true;
        HUNG_GATE.1.notify_all();
    }

    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    /// Per partition of one gather: (mountpoint, `total=..` or the error).
    async fn outcomes(disk: &mut Disk, parts: &[Partition]) -> Vec<(String, String)> {
        let mut acc = Accumulator::new("disk", vec![].into());
        disk.gather_partitions(&mut acc, parts).await;
        acc.take()
            .into_iter()
            .map(|m| {
                let mount = m.tag("mountpoint").unwrap().to_string();
                let outcome = match (m.field("total"), m.field("error")) {
                    (Some(t), None) => format!("total={}", t.as_f64().unwrap()),
                    (None, Some(e)) => e.as_str().unwrap().to_string(),
                    other => panic!("{other:?}"),
                };
                (mount, outcome)
            })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[actix_rt::test]
    async fn a_hung_mount_costs_one_thread_and_is_skipped_until_it_returns() {
        let part = |m: &str| Partition {
            device: "/dev/test".into(),
            mountpoint: m.into(),
            fstype: "ext4".into(),
            opts: "rw".into(),
        };
        let parts = [part("/test/ok1"), part("/test/hung"), part("/test/ok2")];
        let mut disk = Disk::new(DiskConfig::default());
        disk.prober = StatvfsProber::with_probe(
            probe_with_hung_mount,
            "statvfs-test",
            Duration::from_secs(1),
        );
        // The hung call times out; the gather goes on (the probe is still
        // blocked, so returning at all shows the loop did not wait for it).
        let first = outcomes(&mut disk, &parts).await;
        assert_eq!(first.len(), 3);
        assert_eq!(first[0].1, "total=4096000");
        assert!(first[1].1.contains("did not return"), "{first:?}");
        assert_eq!(first[2].1, "total=4096000");
        // One thread stuck in the hung call, one serving the other mounts.
        assert_eq!(threads_named("statvfs-test"), 2);
        // Later gathers skip the hung mount: no new thread per gather.
        for _ in 0..3 {
            let again = outcomes(&mut disk, &parts).await;
            assert!(again[1].1.contains("has not returned"), "{again:?}");
            assert_eq!(again[2].1, "total=4096000");
            assert_eq!(threads_named("statvfs-test"), 2);
        }
        // When the call returns, the mount is probed again and the stuck
        // thread ends.
        release_hung();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = outcomes(&mut disk, &parts).await;
            if now[1].1 == "total=4096000" && threads_named("statvfs-test") == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "{now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
