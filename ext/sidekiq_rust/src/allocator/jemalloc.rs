//! jemalloc, through the process's `mallctl`: its statistics, the per-thread allocation counter, the purge.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;

use magnus::{Error, RHash, Ruby};
use sidekiq_rust_core::allocator::{self as policy, PurgeCalls};

use super::detect::detected;
use super::set;
use crate::errors::{error, Kind};

pub(super) type MallctlFn =
    unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;

/// jemalloc's `MALLCTL_ARENAS_ALL`: an arena index that means every arena.
const PURGE_ALL_ARENAS: &CStr = c"arena.4096.purge";
pub(super) const PURGE_ALL_ARENAS_NAME: &str = "arena.4096.purge";
/// How often a purge is repeated while dirty pages remain (each after 10 ms).
const PURGE_ATTEMPTS: u32 = 5;

/// jemalloc caches its statistics until the epoch is bumped: refreshes them. Returns mallctl's code (0: done).
pub(super) fn refresh_stats(mallctl: MallctlFn) -> c_int {
    let mut epoch: u64 = 1;
    let mut len = size_of::<u64>();
    // SAFETY: reads and writes one u64 through valid pointers.
    unsafe {
        mallctl(
            c"epoch".as_ptr(),
            &mut epoch as *mut u64 as *mut c_void,
            &mut len,
            &mut epoch as *mut u64 as *mut c_void,
            size_of::<u64>(),
        )
    }
}

/// Runs a jemalloc control that reads and writes no value (`thread.tcache.flush`, `arena.N.purge`); returns
/// mallctl's code (0: done).
fn mallctl_run(mallctl: MallctlFn, name: &CStr) -> c_int {
    // SAFETY: a control name with no value read or written.
    unsafe {
        mallctl(
            name.as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    }
}

/// `thread.allocatedp` of the calling thread: 0 = not looked up yet, 1 = not available (not jemalloc, or a
/// jemalloc without statistics), otherwise the address of the thread's counter, which lives as long as the thread.
const NOT_LOOKED_UP: usize = 0;
const UNAVAILABLE: usize = 1;
thread_local! {
    static ALLOCATEDP: Cell<usize> = const { Cell::new(NOT_LOOKED_UP) };
}

/// Bytes the calling thread has allocated so far (jemalloc's per-thread counter, one load after the first call
/// on a thread); None under any other allocator.
pub fn thread_allocated() -> Option<u64> {
    let mut counter = ALLOCATEDP.with(Cell::get);
    if counter == NOT_LOOKED_UP {
        counter = detected()
            .mallctl
            .and_then(|m| mallctl_read::<usize>(m, c"thread.allocatedp"))
            .filter(|&p| p > UNAVAILABLE)
            .unwrap_or(UNAVAILABLE);
        ALLOCATEDP.with(|c| c.set(counter));
    }
    if counter == UNAVAILABLE {
        return None;
    }
    // SAFETY: jemalloc's thread.allocatedp is the address of this thread's u64 counter, valid while the thread
    // lives; the cache is per thread.
    Some(unsafe { ptr::read_volatile(counter as *const u64) })
}

/// Reads a fixed-size jemalloc control value.
pub(super) fn mallctl_read<T: Copy + Default>(mallctl: MallctlFn, name: &CStr) -> Option<T> {
    let mut value = T::default();
    let mut len = size_of::<T>();
    // SAFETY: `value` has exactly `len` writable bytes; no new value is written.
    let rc = unsafe {
        mallctl(
            name.as_ptr(),
            &mut value as *mut T as *mut c_void,
            &mut len,
            ptr::null_mut(),
            0,
        )
    };
    (rc == 0 && len == size_of::<T>()).then_some(value)
}

pub(super) fn jemalloc_version(mallctl: MallctlFn) -> Option<String> {
    let ptr: usize = mallctl_read(mallctl, c"version")?;
    if ptr == 0 {
        return None;
    }
    // SAFETY: jemalloc's "version" is a pointer to a static NUL-terminated string.
    Some(
        unsafe { CStr::from_ptr(ptr as *const c_char) }
            .to_string_lossy()
            .into_owned(),
    )
}

pub(super) fn jemalloc_stats(ruby: &Ruby, hash: &RHash, mallctl: MallctlFn) -> Result<(), Error> {
    let rc = refresh_stats(mallctl);
    if rc != 0 {
        return Err(error(
            Kind::Error,
            format!(
                "mallctl(\"epoch\") returned {rc}: jemalloc's statistics could not be refreshed (they would be \
                 stale); is this jemalloc built with statistics (--enable-stats)?"
            ),
        ));
    }
    let sizes: [(&str, &CStr); 7] = [
        ("allocated", c"stats.allocated"),
        ("active", c"stats.active"),
        ("metadata", c"stats.metadata"),
        ("resident", c"stats.resident"),
        ("mapped", c"stats.mapped"),
        ("retained", c"stats.retained"),
        ("tcache", c"stats.arenas.4096.tcache_bytes"),
    ];
    for (key, name) in sizes {
        set(
            hash,
            ruby,
            key,
            mallctl_read::<usize>(mallctl, name).map(|v| v as u64),
        )?;
    }
    set(
        hash,
        ruby,
        "narenas",
        mallctl_read::<u32>(mallctl, c"arenas.narenas"),
    )?;
    set(
        hash,
        ruby,
        "dirty_decay_ms",
        mallctl_read::<isize>(mallctl, c"arenas.dirty_decay_ms").map(|v| v as i64),
    )?;
    set(
        hash,
        ruby,
        "muzzy_decay_ms",
        mallctl_read::<isize>(mallctl, c"arenas.muzzy_decay_ms").map(|v| v as i64),
    )?;
    set(
        hash,
        ruby,
        "background_thread",
        mallctl_read::<bool>(mallctl, c"background_thread"),
    )?;
    let allocated = mallctl_read::<usize>(mallctl, c"stats.allocated").unwrap_or(0) as u64;
    let resident = mallctl_read::<usize>(mallctl, c"stats.resident").unwrap_or(0) as u64;
    set(
        hash,
        ruby,
        "fragmentation",
        policy::fragmentation(resident, allocated),
    )?;
    Ok(())
}

/// What jemalloc's purge calls return: the thread's cache flushed, then every arena purged, again (briefly)
/// while dirty pages remain: jemalloc skips a forced purge of an arena its background thread is purging at that
/// moment.
pub(super) fn jemalloc_purge(mallctl: MallctlFn) -> PurgeCalls {
    let mut calls = PurgeCalls {
        tcache_flush: Some(mallctl_run(mallctl, c"thread.tcache.flush")),
        ..PurgeCalls::default()
    };
    for attempt in 0..PURGE_ATTEMPTS {
        let rc = mallctl_run(mallctl, PURGE_ALL_ARENAS);
        calls.arena_purge = Some(rc);
        if rc != 0 || attempt + 1 == PURGE_ATTEMPTS {
            break;
        }
        let epoch = refresh_stats(mallctl);
        if matches!(calls.epoch, None | Some(0)) {
            calls.epoch = Some(epoch);
        }
        if epoch == 0 && mallctl_read::<usize>(mallctl, c"stats.arenas.4096.pdirty") == Some(0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    calls
}

/// jemalloc's bytes allocated less what the thread caches hold (None: a jemalloc without statistics).
pub(super) fn in_use(mallctl: MallctlFn) -> Option<u64> {
    // A failed refresh (jemalloc never fails it for these arguments) leaves the figures of the last one: this
    // floor would be as stale as that.
    let _ = refresh_stats(mallctl);
    // What the threads' caches hold counts as allocated to jemalloc; it is free to the process, and how full
    // another thread's cache is says nothing of a job.
    let cached = mallctl_read::<usize>(mallctl, c"stats.arenas.4096.tcache_bytes").unwrap_or(0);
    mallctl_read::<usize>(mallctl, c"stats.allocated").map(|v| v.saturating_sub(cached) as u64)
}
