//! Once the agent has settled, give back the pages that only start-up (or a
//! reload) used.
//!
//! Parsing the command line and the YAML config, building the registry and
//! the plan, and the first gathers run code and read constant data the
//! agent may not touch again for hours; the kernel also maps neighbouring
//! pages around every fault. Dropping the process's clean, read-only,
//! file-backed pages (`MADV_DONTNEED`) lets the resident set shrink to what
//! really runs each interval: the next access maps a page back from the
//! page cache. Freed heap is returned to the kernel as well (`malloc_trim`).
//!
//! Only mappings that can never hold private data are touched: read-only
//! (`r--p` or `r-xp`), backed by a file, and with no anonymous (copy-on-
//! write) page, which rules out relocated data such as a GOT. The main
//! thread's stack below the caller's frame (less a 64 KiB margin) is
//! released too: start-up's deep call chains (YAML parsing) leave a few
//! hundred KB of dead frames resident there.
//!
//! Whatever code runs after the release faults its pages back and keeps
//! them until the next release, so the caller logs first (with
//! [`SettledPages::mapped_bytes`]) and [`SettledPages::release`] drops the
//! file mappings as its very last step.
use agent_core::reload::SharedReloadState;
use slog::Logger;
use std::time::Duration;

/// Releases the settled pages `settle` after start, again at `steady`
/// after start when that is later (every plugin has then run twice: code
/// that runs once, at an input's second gather or an output's first flush,
/// is let go too instead of staying resident for the agent's life), and
/// `settle` after each reload attempt (a reload runs the config code once
/// more).
pub fn schedule(settle: Duration, steady: Duration, reload_state: SharedReloadState, log: Logger) {
    actix::spawn(async move {
        let start = tokio::time::Instant::now();
        let release = |why: &str| {
            let pages = SettledPages::find();
            slog::info!(log, "settled pages released"; "mapped_bytes" => pages.mapped_bytes(), "after" => why);
            pages.release();
        };
        let mut released_at_attempt = None;
        let mut steady_due = (steady > settle).then(|| start + steady);
        loop {
            let attempts = reload_state.lock().map(|s| s.attempts).unwrap_or_default();
            if released_at_attempt != Some(attempts) {
                tokio::time::sleep(settle).await;
                released_at_attempt = Some(attempts);
                release(if attempts == 0 { "start" } else { "reload" });
            }
            if steady_due.is_some_and(|due| tokio::time::Instant::now() >= due) {
                steady_due = None;
                release("every plugin ran twice");
            }
            // A lock and a compare every few seconds; reloads are rare.
            let mut next = Duration::from_secs(5);
            if let Some(due) = steady_due {
                next = next.min(due.saturating_duration_since(tokio::time::Instant::now()));
            }
            tokio::time::sleep(next).await;
        }
    });
}

/// When every plugin of `plan` has run twice: two of its longest period
/// (input interval or output flush) and 2 s, at most 10 minutes.
pub fn steady_after(plan: &agent_core::Plan) -> Duration {
    let longest = plan
        .pipelines
        .iter()
        .map(|p| p.interval)
        .chain(plan.outputs.iter().map(|o| o.settings.flush_every()))
        .max()
        .unwrap_or_default();
    longest
        .saturating_mul(2)
        .saturating_add(Duration::from_secs(2))
        .min(Duration::from_secs(600))
}

#[derive(Debug, Default)]
pub struct SettledPages {
    /// Clean read-only file mappings.
    files: Vec<(usize, usize)>,
    /// Dead part of the main thread's stack.
    stack: Option<(usize, usize)>,
}

impl SettledPages {
    /// What can be released now; nothing where `/proc/self/smaps` is not
    /// readable (or off Linux).
    pub fn find() -> Self {
        #[cfg(target_os = "linux")]
        if let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") {
            let marker = 0u8;
            let sp = std::hint::black_box(&marker) as *const u8 as usize;
            return Self {
                files: clean_read_only_mappings(&smaps),
                stack: dead_stack_range(&smaps, sp),
            };
        }
        Self::default()
    }

    /// Bytes of address space covered (resident or not).
    pub fn mapped_bytes(&self) -> usize {
        self.files
            .iter()
            .chain(&self.stack)
            .map(|(s, e)| e - s)
            .sum()
    }

    /// Drops the pages: the dead stack, free heap, then the file mappings.
    #[cfg(target_os = "linux")]
    #[inline(never)]
    pub fn release(self) {
        if let Some((start, end)) = self.stack {
            let marker = 0u8;
            let sp = std::hint::black_box(&marker) as *const u8 as usize;
            // Called from another frame than find(): keep the margin below
            // this one.
            let end = end.min(sp.saturating_sub(STACK_MARGIN) & !0xfff);
            if end > start {
                // [start, end) lies in this thread's own stack, more than
                // STACK_MARGIN below its deepest live frame: no live data is
                // there, and the next access gets zero-filled pages.
                dont_need(start, end);
            }
        }
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free heap memory to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
        for &(start, end) in &self.files {
            // A whole mapping of this process, read-only, file-backed and
            // without private copies: its pages fault back in from the file.
            dont_need(start, end);
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn release(self) {}
}

/// `MADV_DONTNEED` on `[start, end)`; the callers say why the range holds
/// nothing that must survive.
#[cfg(target_os = "linux")]
fn dont_need(start: usize, end: usize) {
    // SAFETY: the callers pass ranges of this process whose contents come
    // back from the file, or are dead stack: unmapping them loses nothing.
    unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
}

/// The `start-end` hexadecimal range that opens a `/proc/<pid>/smaps` line.
#[cfg(any(target_os = "linux", test))]
fn parse_range(field: &str) -> Option<(usize, usize)> {
    let (start, end) = field.split_once('-')?;
    Some((
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    ))
}

/// Frames below this much under the caller stay mapped: madvise's own call
/// chain and any signal handler run there.
#[cfg(any(target_os = "linux", test))]
const STACK_MARGIN: usize = 64 << 10;

/// The page-aligned part of the `[stack]` mapping in `smaps` that lies more
/// than `STACK_MARGIN` below `sp`, if `sp` is in that mapping.
#[cfg(any(target_os = "linux", test))]
fn dead_stack_range(smaps: &str, sp: usize) -> Option<(usize, usize)> {
    let line = smaps.lines().find(|l| l.ends_with("[stack]"))?;
    let (start, end) = parse_range(line.split_whitespace().next()?)?;
    if !(start..end).contains(&sp) {
        return None;
    }
    let top = sp.checked_sub(STACK_MARGIN)? & !0xfff;
    (top > start).then_some((start, top))
}

/// Address ranges of the mappings in `smaps` (the format of
/// `/proc/<pid>/smaps`) that are read-only, private, file-backed and have no
/// anonymous page.
#[cfg(any(target_os = "linux", test))]
fn clean_read_only_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // The mapping being read: its range, if its header qualifies.
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Anonymous:") {
            let anonymous_kb = rest.trim().trim_end_matches("kB").trim();
            if let (Some(range), "0") = (current.take(), anonymous_kb) {
                found.push(range);
            }
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let Some((start, end)) = parse_range(range) else {
            continue; // a "Key: value" line
        };
        current = (matches!(perms, "r--p" | "r-xp") && inode != "0").then_some((start, end));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
00200000-0034e000 r--p 00000000 fe:01 123 /usr/bin/agent
Rss:                 860 kB
Anonymous:             0 kB
0034e000-0074b000 r-xp 0014d000 fe:01 123 /usr/bin/agent
Rss:                2464 kB
Anonymous:             0 kB
0074b000-00788000 r--p 00549000 fe:01 123 /usr/bin/agent
Rss:                 240 kB
Anonymous:             8 kB
00788000-0078a000 rw-p 00584000 fe:01 123 /usr/bin/agent
Rss:                   8 kB
Anonymous:             8 kB
01000000-01100000 rw-p 00000000 00:00 0 [heap]
Rss:                 504 kB
Anonymous:           504 kB
7f0000000000-7f0000001000 r--p 00000000 00:00 0
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn picks_only_clean_read_only_file_mappings() {
        assert_eq!(
            clean_read_only_mappings(SMAPS),
            vec![(0x200000, 0x34e000), (0x34e000, 0x74b000)],
            "relocated data (anonymous pages), writable and anonymous mappings are left alone"
        );
    }

    #[test]
    fn dead_stack_is_below_the_frame_less_the_margin() {
        let smaps = "7ffc00000000-7ffc00100000 rw-p 00000000 00:00 0 [stack]\nRss: 4 kB\n";
        let sp = 0x7ffc000f1234;
        assert_eq!(
            dead_stack_range(smaps, sp),
            Some((0x7ffc00000000, 0x7ffc000e1000))
        );
        // Another thread's stack is not [stack]: nothing to release.
        assert_eq!(dead_stack_range(smaps, 0x7f0000001000), None);
        // Less than the margin used: nothing either.
        assert_eq!(dead_stack_range(smaps, 0x7ffc00008000), None);
        assert_eq!(dead_stack_range(SMAPS, sp), None, "no [stack] line");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_own_code_is_releasable() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_str().unwrap();
        let text: Vec<(usize, usize)> = smaps
            .lines()
            .filter(|l| l.contains(" r-xp ") && l.ends_with(exe))
            .map(|l| parse_range(l.split_whitespace().next().unwrap()).unwrap())
            .collect();
        assert!(!text.is_empty(), "{smaps}");
        let releasable = clean_read_only_mappings(&smaps);
        for range in text {
            assert!(
                releasable.contains(&range),
                "{range:x?} not in {releasable:x?}"
            );
        }
    }
}
