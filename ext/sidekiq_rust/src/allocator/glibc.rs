//! glibc malloc: its version, `mallinfo2` and `malloc_info`'s figures, `malloc_trim`.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;

use magnus::{Error, RHash, Ruby};
use sidekiq_rust_core::allocator as policy;

use super::detect::global_symbol;
use super::set;
use crate::memory::self_rss_bytes;
use crate::nogvl::nogvl;

pub(super) fn glibc_version() -> Option<String> {
    global_symbol(c"gnu_get_libc_version")?;
    // SAFETY: glibc returns a pointer to a static NUL-terminated string.
    let version = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
    Some(version.to_string_lossy().into_owned())
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

pub(super) fn glibc_stats(ruby: &Ruby, hash: &RHash) -> Result<(), Error> {
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

/// glibc's `malloc_trim`, looked up in the process's global symbol scope (None: the C library has none).
pub(super) fn malloc_trim_fn() -> Option<unsafe extern "C" fn(usize) -> c_int> {
    let sym = global_symbol(c"malloc_trim")?;
    // SAFETY: a symbol named `malloc_trim` in the global scope has glibc's malloc_trim signature.
    Some(unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(usize) -> c_int>(sym) })
}

/// mallinfo2's bytes in use: what the arenas handed out plus the mmapped blocks (every arena, under its lock).
pub(super) fn in_use() -> u64 {
    // SAFETY: mallinfo2 has no preconditions.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}
