//! libcurl and OpenSSL are initialised at the first HTTP request, not
//! before `main`.
//!
//! The `curl` crate calls `curl_global_init(CURL_GLOBAL_ALL)` (and, through
//! `openssl-sys`, `OPENSSL_init_ssl`) from a static constructor. That pulls
//! about 2 MB of libcrypto and libcurl code into memory at start-up, for an
//! agent that may never speak HTTP. The link step wraps both symbols
//! (build.rs: `--wrap`): before `main` they return success without doing
//! anything; from `main` on they pass through. libcurl then initialises
//! itself at the first `curl_easy_init` (its documented fallback), which
//! runs the real `OPENSSL_init_ssl` through this wrapper.
use std::os::raw::{c_int, c_long, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

static MAIN_STARTED: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`: from now on the wrapped calls are real.
pub fn main_started() {
    MAIN_STARTED.store(true, Ordering::SeqCst);
}

extern "C" {
    fn __real_curl_global_init(flags: c_long) -> c_int;
    fn __real_OPENSSL_init_ssl(opts: u64, settings: *const c_void) -> c_int;
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

/// # Safety
/// Called with OpenSSL's contract.
#[no_mangle]
pub unsafe extern "C" fn __wrap_OPENSSL_init_ssl(opts: u64, settings: *const c_void) -> c_int {
    if !MAIN_STARTED.load(Ordering::SeqCst) {
        return 1; // success: done for real on first use.
    }
    // SAFETY: same arguments, same contract as the wrapped function.
    unsafe { __real_OPENSSL_init_ssl(opts, settings) }
}
