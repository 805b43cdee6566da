//! libcurl is initialised at the first HTTP request, not before `main`.
//!
//! The `curl` crate calls `curl_global_init(CURL_GLOBAL_ALL)` from a static
//! constructor, which keeps libcurl's start-up code resident in an agent
//! that may never speak HTTP. The link step wraps it (build.rs: `--wrap`):
//! before `main` it returns success without doing anything; from `main` on
//! it passes through. libcurl then initialises itself at the first
//! `curl_easy_init` (its documented fallback). TLS is rustls (through
//! libcurl's rustls backend), which initialises itself at the first
//! handshake.
use std::os::raw::{c_int, c_long};
use std::sync::atomic::{AtomicBool, Ordering};

static MAIN_STARTED: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`: from now on the wrapped call is real.
pub fn main_started() {
    MAIN_STARTED.store(true, Ordering::SeqCst);
}

extern "C" {
    fn __real_curl_global_init(flags: c_long) -> c_int;
}

/// # Safety
/// Called by libcurl's users with libcurl's contract.
#[no_mangle]
pub unsafe extern "C" fn __wrap_curl_global_init(flags: c_long) -> c_int {
    if !MAIN_STARTED.load(Ordering::SeqCst) {
        return 0; // CURLE_OK: done for real on first use.
    }
    // SAFETY: same arguments, same contract as the wrapped function.
    unsafe { __real_curl_global_init(flags) }
}
