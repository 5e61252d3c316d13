//! jemalloc's control API, exported under its plain names: a Ruby process finds `mallctl` in the global scope
//! (Fiddle, or sidekiq_rust's allocator detection) to read statistics and to purge.
//!
//! Safety, for every function here: the caller's contract is jemalloc's, and it is passed on unchanged.

use std::ffi::{c_char, c_int, c_void};

use tikv_jemalloc_sys as jem;

/// The `write_cb` of malloc_stats_print.
pub type WriteCallback = Option<unsafe extern "C" fn(*mut c_void, *const c_char)>;

/// jemalloc mallctl: read or write one setting or statistic by name.
#[no_mangle]
pub unsafe extern "C" fn mallctl(
    name: *const c_char,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *mut c_void,
    newlen: usize,
) -> c_int {
    jem::mallctl(name, oldp, oldlenp, newp, newlen)
}

/// jemalloc mallctlnametomib: translate a name once for repeated mallctlbymib calls.
#[no_mangle]
pub unsafe extern "C" fn mallctlnametomib(
    name: *const c_char,
    mibp: *mut usize,
    miblenp: *mut usize,
) -> c_int {
    jem::mallctlnametomib(name, mibp, miblenp)
}

/// jemalloc mallctlbymib.
#[no_mangle]
pub unsafe extern "C" fn mallctlbymib(
    mib: *const usize,
    miblen: usize,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *mut c_void,
    newlen: usize,
) -> c_int {
    jem::mallctlbymib(mib, miblen, oldp, oldlenp, newp, newlen)
}

/// jemalloc malloc_stats_print.
#[no_mangle]
pub unsafe extern "C" fn malloc_stats_print(
    write_cb: WriteCallback,
    cbopaque: *mut c_void,
    opts: *const c_char,
) {
    jem::malloc_stats_print(write_cb, cbopaque, opts)
}
