//! Which malloc the process runs, found once at run time in the global symbol scope (never from build flags):
//! jemalloc (a `mallctl` that is not this extension's own), glibc (`malloc` in libc), or another one.

use std::ffi::{c_void, CStr};
use std::sync::OnceLock;

use magnus::Error;
use sidekiq_rust_core::allocator as policy;

use super::glibc::glibc_version;
use super::jemalloc::{jemalloc_version, MallctlFn};
use crate::errors::{error, Kind};

/// The address of `name` in the process's global symbol scope.
pub(super) fn global_symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!sym.is_null()).then_some(sym)
}

/// The file of the loaded object that holds `addr`.
pub(super) fn library_of(addr: *const c_void) -> Option<String> {
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

/// What the process's allocator is, detected once (`detected`).
pub(super) struct Detected {
    pub(super) name: &'static str,
    pub(super) version: Option<String>,
    pub(super) library: Option<String>,
    pub(super) mallctl: Option<MallctlFn>,
}

/// The process's allocator, detected at the first call and kept (it does not change while the process runs).
pub(super) fn detected() -> &'static Detected {
    static DETECTED: OnceLock<Detected> = OnceLock::new();
    DETECTED.get_or_init(detect)
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

pub(super) fn ld_preload_entries() -> Vec<String> {
    std::env::var("LD_PRELOAD")
        .map(|v| {
            policy::preload_entries(&v)
                .into_iter()
                .map(|e| if e.contains('/') { real_path(&e) } else { e })
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn unsupported_text(d: &Detected, what: &str) -> String {
    format!(
        "{what} needs glibc malloc or jemalloc, but this process's malloc is {} ({}); \
         run Sidekiq on glibc or preload jemalloc (`sidekiq_rust exec`)",
        d.name,
        d.library.as_deref().unwrap_or("library unknown")
    )
}

pub(super) fn unsupported(d: &Detected, what: &str) -> Error {
    error(Kind::NotSupported, unsupported_text(d, what))
}
