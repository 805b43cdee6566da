//! After start-up, give back the code pages that only start-up used.
//!
//! Parsing the command line and the YAML config, building the registry and
//! the plan, and the first gathers run code the agent may not touch again
//! for hours; the kernel also maps neighbouring pages around every fault.
//! Once the agent is settled, dropping the process's clean text pages
//! (`MADV_DONTNEED` on read-only, executable, file-backed mappings, which
//! are never written) lets the resident set shrink to the code that really
//! runs each interval: the next access maps a page back from the page
//! cache. Writable or relocated mappings are never touched.
#[cfg(target_os = "linux")]
pub fn drop_startup_text() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut dropped = 0;
    for line in maps.lines() {
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
        // Only file-backed, private, read+execute, never-writable text.
        if perms != "r-xp" || inode == "0" {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is a whole mapping of this process, read-only
        // and file-backed: MADV_DONTNEED only unmaps its pages, and the
        // next access faults them back in from the same file.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if rc == 0 {
            dropped += end - start;
        }
    }
    dropped
}

#[cfg(not(target_os = "linux"))]
pub fn drop_startup_text() -> usize {
    0
}
