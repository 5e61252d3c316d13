//! `SidekiqRust::Native` allocator functions: which malloc the process runs (found at run time in the
//! global symbol scope, never from build flags), its statistics, and giving free memory back to the OS.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;
use std::time::Instant;

use magnus::{function, Error, Object, RHash, RModule, Ruby, Value};
use sidekiq_rust_core::allocator::{self as policy, PurgeCalls, PurgeOutcome};

use crate::errors::{error, Kind};
use crate::memory::self_rss_bytes;
use crate::named::Named;
use crate::nogvl::nogvl;

type MallctlFn =
    unsafe extern "C" fn(*const c_char, *mut c_void, *mut usize, *mut c_void, usize) -> c_int;

/// jemalloc's `MALLCTL_ARENAS_ALL`: an arena index that means every arena.
const PURGE_ALL_ARENAS: &CStr = c"arena.4096.purge";
const PURGE_ALL_ARENAS_NAME: &str = "arena.4096.purge";
/// How often a purge is repeated while dirty pages remain (each after 10 ms).
const PURGE_ATTEMPTS: u32 = 5;

/// jemalloc caches its statistics until the epoch is bumped: refreshes them. Returns mallctl's code (0: done).
fn refresh_stats(mallctl: MallctlFn) -> c_int {
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

pub fn init(_ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    native.define_singleton_method("allocator_info", function!(allocator_info, 0))?;
    native.define_singleton_method("allocator_stats", function!(allocator_stats, 0))?;
    native.define_singleton_method("allocator_purge", function!(allocator_purge, 0))?;
    native.define_singleton_method("thread_allocated", function!(thread_allocated, 0))?;
    Ok(())
}

/// The address of `name` in the process's global symbol scope.
fn global_symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

/// The file of the loaded object that holds `addr`.
fn library_of(addr: *const c_void) -> Option<String> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads `addr` as a number and fills `info`.
    let found = unsafe { libc::dladdr(addr, &mut info) };
    if found == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname points to a NUL-terminated string owned by the dynamic linker.
    let name = unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    Some(real_path(&name))
}

fn real_path(path: &str) -> String {
    std::fs::canonicalize(path)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| path.to_string())
}

/// jemalloc's `mallctl`, if the process's allocator is jemalloc. A `mallctl` inside this extension itself
/// would be the extension's private allocator, not the process's: it does not count.
fn process_mallctl() -> Option<MallctlFn> {
    let sym = global_symbol(c"mallctl")?;
    let own = library_of(process_mallctl as *const c_void);
    if own.is_some() && library_of(sym) == own {
        return None;
    }
    // SAFETY: a symbol named `mallctl` in the global scope has jemalloc's mallctl signature.
    Some(unsafe { std::mem::transmute::<*mut c_void, MallctlFn>(sym) })
}

/// The process's `mallctl`, looked up once.
fn cached_mallctl() -> Option<MallctlFn> {
    static MALLCTL: OnceLock<Option<MallctlFn>> = OnceLock::new();
    *MALLCTL.get_or_init(process_mallctl)
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
        counter = cached_mallctl()
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
fn mallctl_read<T: Copy + Default>(mallctl: MallctlFn, name: &CStr) -> Option<T> {
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

fn jemalloc_version(mallctl: MallctlFn) -> Option<String> {
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

fn glibc_version() -> Option<String> {
    global_symbol(c"gnu_get_libc_version")?;
    // SAFETY: glibc returns a pointer to a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
    Some(version.to_string_lossy().into_owned())
}

struct Detected {
    name: &'static str,
    version: Option<String>,
    library: Option<String>,
    mallctl: Option<MallctlFn>,
}

fn detect() -> Detected {
    let malloc_library = global_symbol(c"malloc").and_then(|m| library_of(m as *const c_void));
    if let Some(mallctl) = process_mallctl() {
        return Detected {
            name: "jemalloc",
            version: jemalloc_version(mallctl),
            library: library_of(mallctl as *const c_void),
            mallctl: Some(mallctl),
        };
    }
    let is_libc = malloc_library.as_deref().is_some_and(|lib| {
        lib.rsplit('/')
            .next()
            .is_some_and(|f| f.starts_with("libc.so") || f.starts_with("libc-"))
    });
    if is_libc {
        if let Some(version) = glibc_version() {
            return Detected {
                name: "glibc",
                version: Some(version),
                library: malloc_library,
                mallctl: None,
            };
        }
    }
    Detected {
        name: "unknown",
        version: None,
        library: malloc_library,
        mallctl: None,
    }
}

fn ld_preload_entries() -> Vec<String> {
    std::env::var("LD_PRELOAD")
        .map(|v| {
            policy::preload_entries(&v)
                .into_iter()
                .map(|e| if e.contains('/') { real_path(&e) } else { e })
                .collect()
        })
        .unwrap_or_default()
}

/// `{name:, version: (nil: unknown), source: (:linked, :preloaded or :system), library: (path, nil: unknown)}`.
fn allocator_info(ruby: &Ruby) -> Result<RHash, Error> {
    let d = detect();
    let source = match &d.library {
        Some(lib) => policy::source(d.name, lib, &ld_preload_entries()),
        None if d.name == "glibc" => policy::Source::System,
        None => policy::Source::Linked,
    };
    Named::new(ruby)
        .with("name", d.name)
        .with("version", d.version)
        .with("source", ruby.to_symbol(source.as_str()))
        .with("library", d.library)
        .hash()
}

fn unsupported_text(d: &Detected, what: &str) -> String {
    format!(
        "{what} needs glibc malloc or jemalloc, but this process's malloc is {} ({}); \
         run Sidekiq on glibc or preload jemalloc (`sidekiq_rust exec`)",
        d.name,
        d.library.as_deref().unwrap_or("library unknown")
    )
}

fn unsupported(d: &Detected, what: &str) -> Error {
    error(Kind::NotSupported, unsupported_text(d, what))
}

fn set(hash: &RHash, ruby: &Ruby, key: &str, value: impl magnus::IntoValue) -> Result<(), Error> {
    let value: Value = ruby.into_value(value);
    hash.aset(ruby.to_symbol(key), value)
}

fn allocator_stats(ruby: &Ruby) -> Result<RHash, Error> {
    let d = detect();
    let hash = ruby.hash_new();
    set(&hash, ruby, "allocator", d.name)?;
    if let Some(mallctl) = d.mallctl {
        jemalloc_stats(ruby, &hash, mallctl)?;
    } else if d.name == "glibc" {
        glibc_stats(ruby, &hash)?;
    } else {
        return Err(unsupported(&d, "Allocator.stats"));
    }
    Ok(hash)
}

fn jemalloc_stats(ruby: &Ruby, hash: &RHash, mallctl: MallctlFn) -> Result<(), Error> {
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

struct GlibcFigures {
    arena: u64,
    mmapped: u64,
    in_use: u64,
    free: u64,
    releasable: u64,
    arenas: Option<usize>,
}

/// mallinfo2 and malloc_info walk every arena under its lock: milliseconds on a big heap, so no GVL.
fn glibc_figures() -> GlibcFigures {
    // SAFETY: mallinfo2 has no preconditions.
    let info = unsafe { libc::mallinfo2() };
    GlibcFigures {
        arena: info.arena as u64,
        mmapped: info.hblkhd as u64,
        in_use: (info.uordblks + info.hblkhd) as u64,
        free: info.fordblks as u64,
        releasable: info.keepcost as u64,
        arenas: malloc_info_xml().map(|xml| policy::malloc_info_heaps(&xml)),
    }
}

/// glibc's `malloc_info` XML, written to a memory stream.
fn malloc_info_xml() -> Option<String> {
    let mut buf: *mut c_char = ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: open_memstream allocates `buf` (with malloc) and keeps it updated until fclose.
    unsafe {
        let stream = libc::open_memstream(&mut buf, &mut size);
        if stream.is_null() {
            return None;
        }
        let rc = libc::malloc_info(0, stream);
        libc::fclose(stream);
        if buf.is_null() {
            return None;
        }
        let xml = std::slice::from_raw_parts(buf as *const u8, size);
        let text = (rc == 0).then(|| String::from_utf8_lossy(xml).into_owned());
        libc::free(buf as *mut c_void);
        text
    }
}

fn glibc_stats(ruby: &Ruby, hash: &RHash) -> Result<(), Error> {
    let f = nogvl("reading glibc malloc statistics", glibc_figures)?;
    set(hash, ruby, "arena", f.arena)?;
    set(hash, ruby, "mmapped", f.mmapped)?;
    set(hash, ruby, "in_use", f.in_use)?;
    set(hash, ruby, "free", f.free)?;
    set(hash, ruby, "releasable", f.releasable)?;
    set(hash, ruby, "arenas", f.arenas.map(|n| n as u64))?;
    let arena_max = policy::arena_max(
        std::env::var("MALLOC_ARENA_MAX").ok().as_deref(),
        std::env::var("GLIBC_TUNABLES").ok().as_deref(),
    );
    set(hash, ruby, "arena_max", arena_max)?;
    let rss = self_rss_bytes().unwrap_or(0);
    set(
        hash,
        ruby,
        "fragmentation",
        policy::fragmentation(rss, f.in_use),
    )?;
    Ok(())
}

/// Which of the two allocators the process runs, decided once (None: another one).
fn known_allocator() -> Option<Option<MallctlFn>> {
    static KNOWN: OnceLock<Option<Option<MallctlFn>>> = OnceLock::new();
    *KNOWN.get_or_init(|| {
        let d = detect();
        match (d.mallctl, d.name) {
            (Some(mallctl), _) => Some(Some(mallctl)),
            (None, "glibc") => Some(None),
            _ => None,
        }
    })
}

/// Bytes the process's allocator has handed out and not had back: jemalloc's `stats.allocated` less what the
/// thread caches hold, glibc's mallinfo2 in use + mmapped (every arena, under its lock: milliseconds on a heap of
/// many free chunks, so no GVL). None under another allocator, or a jemalloc without statistics. Read after a
/// GC it is the heap's floor: unlike RSS it does not hide a leak in memory the allocator had kept free. Also
/// returns when the reading was done (before the GVL is taken back).
pub fn in_use_bytes() -> Result<(Option<u64>, Instant), Error> {
    let Some(mallctl) = known_allocator() else {
        return Ok((None, Instant::now()));
    };
    nogvl("reading the allocator's bytes in use", move || {
        let bytes = match mallctl {
            Some(mallctl) => {
                // A failed refresh (jemalloc never fails it for these arguments) leaves the figures of the last
                // one: this floor would be as stale as that.
                let _ = refresh_stats(mallctl);
                // What the threads' caches hold counts as allocated to jemalloc; it is free to the process, and
                // how full another thread's cache is says nothing of a job.
                let cached =
                    mallctl_read::<usize>(mallctl, c"stats.arenas.4096.tcache_bytes").unwrap_or(0);
                mallctl_read::<usize>(mallctl, c"stats.allocated")
                    .map(|v| v.saturating_sub(cached) as u64)
            }
            None => {
                // SAFETY: mallinfo2 has no preconditions.
                let info = unsafe { libc::mallinfo2() };
                Some((info.uordblks + info.hblkhd) as u64)
            }
        };
        (bytes, Instant::now())
    })
}

/// What a purge did: RSS before and after it, how long it took, and whether it happened (see
/// `sidekiq_rust_core::allocator::purge_outcome`).
pub struct Purged {
    pub rss_before: u64,
    pub rss_after: u64,
    pub seconds: f64,
    pub outcome: PurgeOutcome,
}

/// A purge that could not be tried: the allocator is not one this gem purges, or RSS could not be read around it.
pub struct PurgeFailed {
    kind: Kind,
    pub message: String,
}

impl From<PurgeFailed> for Error {
    fn from(failed: PurgeFailed) -> Error {
        error(failed.kind, failed.message)
    }
}

/// `{rss_before:, rss_after:, released: (never negative), seconds:}` (`Native.allocator_purge`). A purge the
/// allocator refused raises `SidekiqRust::Error`, saying why.
fn allocator_purge(ruby: &Ruby) -> Result<RHash, Error> {
    let p = purge()?;
    if !p.outcome.purged {
        let why = p.outcome.error.unwrap_or_default();
        return Err(error(
            Kind::Error,
            format!("the purge did not happen: {why}"),
        ));
    }
    Named::new(ruby)
        .with("rss_before", p.rss_before)
        .with("rss_after", p.rss_after)
        .with("released", p.rss_before.saturating_sub(p.rss_after))
        .with("seconds", p.seconds)
        .hash()
}

/// glibc's `malloc_trim`, looked up in the process's global symbol scope (None: the C library has none).
fn malloc_trim_fn() -> Option<unsafe extern "C" fn(usize) -> c_int> {
    let sym = global_symbol(c"malloc_trim")?;
    // SAFETY: a symbol named `malloc_trim` in the global scope has glibc's malloc_trim signature.
    Some(unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(usize) -> c_int>(sym) })
}

/// What jemalloc's purge calls return: the thread's cache flushed, then every arena purged, again (briefly)
/// while dirty pages remain: jemalloc skips a forced purge of an arena its background thread is purging at that
/// moment.
fn jemalloc_purge(mallctl: MallctlFn) -> PurgeCalls {
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

/// Gives free memory back to the OS: jemalloc purges every arena, glibc runs `malloc_trim(0)`; runs without
/// the GVL. The outcome says whether the allocator did it, and if not all of it, why.
pub fn purge() -> Result<Purged, PurgeFailed> {
    let d = detect();
    let mallctl = d.mallctl;
    if mallctl.is_none() && d.name != "glibc" {
        return Err(PurgeFailed {
            kind: Kind::NotSupported,
            message: unsupported_text(&d, "the purge"),
        });
    }
    let result = nogvl("purging the allocator", move || {
        let before = self_rss_bytes()?;
        let started = Instant::now();
        let calls = match mallctl {
            Some(mallctl) => jemalloc_purge(mallctl),
            None => PurgeCalls {
                // SAFETY: malloc_trim has no preconditions.
                malloc_trim: malloc_trim_fn().map(|trim| unsafe { trim(0) }),
                ..PurgeCalls::default()
            },
        };
        let seconds = started.elapsed().as_secs_f64();
        let after = self_rss_bytes()?;
        Ok::<_, std::io::Error>(Purged {
            rss_before: before,
            rss_after: after,
            seconds,
            outcome: policy::purge_outcome(&calls, PURGE_ALL_ARENAS_NAME),
        })
    });
    match result {
        Ok(Ok(purged)) => Ok(purged),
        Ok(Err(e)) => Err(PurgeFailed {
            kind: Kind::Error,
            message: format!("reading /proc/self/statm around the purge failed: {e}"),
        }),
        Err(_) => Err(PurgeFailed {
            kind: Kind::Error,
            message:
                "purging the allocator failed inside the native extension (a bug: please report it)"
                    .to_string(),
        }),
    }
}
