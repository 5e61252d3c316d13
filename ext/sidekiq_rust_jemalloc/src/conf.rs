//! The options the bundled jemalloc starts with (README: "jemalloc without rebuilding Ruby" says why).
//!
//! jemalloc reads its `malloc_conf` symbol first, then the `MALLOC_CONF` environment variable, whose keys win:
//! `MALLOC_CONF=narenas:4 sidekiq_rust exec -- ...` changes one option and keeps the others.

use std::ffi::{c_char, CStr};

/// - `background_thread:true`: purging runs on jemalloc's own threads (one per arena), so an idle worker gives
///   memory back too, and job threads never pay for it.
/// - `narenas:2`: Ruby's GVL lets one thread allocate at a time; the default (4 per CPU) only multiplies the
///   memory each arena holds, as glibc's arenas do (the MALLOC_ARENA_MAX=2 advice).
/// - `dirty_decay_ms:1000`: freed pages go back to the OS after about a second (default 10 s).
/// - `muzzy_decay_ms:0`: they go back with MADV_DONTNEED, so RSS drops at once (MADV_FREE pages stay in RSS
///   until the kernel needs them, which would mislead anything watching RSS).
pub const OPTIONS: &CStr = c"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0";

/// A C string pointer that can live in a `static`.
#[repr(transparent)]
pub struct ConfString(*const c_char);

// SAFETY: the pointer is to a 'static, immutable, NUL-terminated string; threads may share it.
unsafe impl Sync for ConfString {}

/// jemalloc's own definition of this symbol is weak and empty; this strong one replaces it at link time.
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: ConfString = ConfString(OPTIONS.as_ptr());
