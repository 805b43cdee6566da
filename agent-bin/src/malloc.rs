//! malloc set-up at start.
/// glibc gives every thread that allocates its own malloc arena (up to 8 per
/// core), each holding on to its own free memory. The agent allocates little,
/// from few threads, so one arena is enough: the same as running it with
/// `MALLOC_ARENA_MAX=1`, without asking users to set it. The environment
/// variable, when set, still wins (glibc reads it at the first allocation,
/// before `main`; mallopt is skipped then).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc parameter; called before any
        // other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}
