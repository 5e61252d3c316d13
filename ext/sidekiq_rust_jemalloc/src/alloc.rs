//! The allocation entry points, exported under their plain names and forwarded to the static jemalloc.
//!
//! The C standard and glibc set (`malloc` ... `pvalloc`, `malloc_usable_size`) so that nothing in the process
//! reaches glibc's allocator, plus jemalloc's own `*allocx` API: a program linked against a system jemalloc
//! (Debian's redis-server calls `nallocx`, for example) then uses this one for every call, never two at once.
//!
//! Safety, for every function here: the caller's contract is the C function's, and it is passed on unchanged.

use std::ffi::{c_int, c_void};

use tikv_jemalloc_sys as jem;

// Built by jemalloc on glibc but not declared by tikv-jemalloc-sys.
extern "C" {
    #[link_name = "_rjem_memalign"]
    fn je_memalign(alignment: usize, size: usize) -> *mut c_void;
    #[link_name = "_rjem_valloc"]
    fn je_valloc(size: usize) -> *mut c_void;
    #[link_name = "_rjem_pvalloc"]
    fn je_pvalloc(size: usize) -> *mut c_void;
}

/// malloc(3).
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
    jem::malloc(size)
}

/// calloc(3).
#[no_mangle]
pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    jem::calloc(count, size)
}

/// realloc(3).
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    jem::realloc(ptr, size)
}

/// free(3).
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut c_void) {
    jem::free(ptr)
}

/// C23 free_sized.
#[no_mangle]
pub unsafe extern "C" fn free_sized(ptr: *mut c_void, size: usize) {
    jem::free_sized(ptr, size)
}

/// C23 free_aligned_sized.
#[no_mangle]
pub unsafe extern "C" fn free_aligned_sized(ptr: *mut c_void, alignment: usize, size: usize) {
    jem::free_aligned_sized(ptr, alignment, size)
}

/// posix_memalign(3).
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(
    out: *mut *mut c_void,
    alignment: usize,
    size: usize,
) -> c_int {
    jem::posix_memalign(out, alignment, size)
}

/// aligned_alloc(3).
#[no_mangle]
pub unsafe extern "C" fn aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
    jem::aligned_alloc(alignment, size)
}

/// memalign(3), obsolete but still called.
#[no_mangle]
pub unsafe extern "C" fn memalign(alignment: usize, size: usize) -> *mut c_void {
    je_memalign(alignment, size)
}

/// valloc(3), obsolete but still called.
#[no_mangle]
pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
    je_valloc(size)
}

/// pvalloc(3): glibc has it, so without this one its memory would come from glibc and be freed by jemalloc.
#[no_mangle]
pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
    je_pvalloc(size)
}

/// malloc_usable_size(3); Ruby's GC calls it for every malloc'ed object it frees.
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
    jem::malloc_usable_size(ptr)
}

/// jemalloc mallocx.
#[no_mangle]
pub unsafe extern "C" fn mallocx(size: usize, flags: c_int) -> *mut c_void {
    jem::mallocx(size, flags)
}

/// jemalloc rallocx.
#[no_mangle]
pub unsafe extern "C" fn rallocx(ptr: *mut c_void, size: usize, flags: c_int) -> *mut c_void {
    jem::rallocx(ptr, size, flags)
}

/// jemalloc xallocx.
#[no_mangle]
pub unsafe extern "C" fn xallocx(
    ptr: *mut c_void,
    size: usize,
    extra: usize,
    flags: c_int,
) -> usize {
    jem::xallocx(ptr, size, extra, flags)
}

/// jemalloc sallocx.
#[no_mangle]
pub unsafe extern "C" fn sallocx(ptr: *const c_void, flags: c_int) -> usize {
    jem::sallocx(ptr, flags)
}

/// jemalloc dallocx.
#[no_mangle]
pub unsafe extern "C" fn dallocx(ptr: *mut c_void, flags: c_int) {
    jem::dallocx(ptr, flags)
}

/// jemalloc sdallocx.
#[no_mangle]
pub unsafe extern "C" fn sdallocx(ptr: *mut c_void, size: usize, flags: c_int) {
    jem::sdallocx(ptr, size, flags)
}

/// jemalloc nallocx.
#[no_mangle]
pub unsafe extern "C" fn nallocx(size: usize, flags: c_int) -> usize {
    jem::nallocx(size, flags)
}
