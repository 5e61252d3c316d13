//! `SidekiqRust::Native` memory readers: RSS from statm (own process through a file descriptor opened once),
//! PSS/USS/swap from smaps_rollup and peak RSS from status (the memory cgroup is in cgroup.rs).

use std::fs;
use std::io;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use magnus::{function, Error, Object, RHash, RModule, Ruby};
use sidekiq_rust_core::procfs::{self, SmapsTotals};

use crate::errors::{error, io_error, Kind};
use crate::named::Named;
use crate::nogvl::nogvl;

const SELF_STATM: &str = "/proc/self/statm";
const SELF_STATM_C: &[u8] = b"/proc/self/statm\0";

/// The descriptor of /proc/self/statm, opened on first use and kept; -1 when not open.
static SELF_FD: AtomicI32 = AtomicI32::new(-1);
/// Set in a forked child: the inherited descriptor still reads the parent.
static FORKED: AtomicBool = AtomicBool::new(false);
static PAGE_SIZE: AtomicU64 = AtomicU64::new(4096);

extern "C" fn after_fork_in_child() {
    FORKED.store(true, Ordering::SeqCst);
}

pub fn init(_ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    // SAFETY: sysconf and pthread_atfork have no preconditions; the handler only stores an atomic.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 {
            PAGE_SIZE.store(page as u64, Ordering::Relaxed);
        }
        libc::pthread_atfork(None, None, Some(after_fork_in_child));
    }
    native.define_singleton_method("rss_self", function!(rss_self, 0))?;
    native.define_singleton_method("rss", function!(rss, 1))?;
    native.define_singleton_method("smaps", function!(smaps, 1))?;
    native.define_singleton_method("peak_rss", function!(peak_rss, 1))?;
    Ok(())
}

fn open_self_statm() -> io::Result<i32> {
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe {
        libc::open(
            SELF_STATM_C.as_ptr() as *const libc::c_char,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(fd)
    }
}

fn drop_self_fd() {
    let old = SELF_FD.swap(-1, Ordering::SeqCst);
    if old >= 0 {
        // SAFETY: `old` was opened by us and is no longer published.
        unsafe { libc::close(old) };
    }
}

fn self_fd() -> io::Result<i32> {
    if FORKED.swap(false, Ordering::SeqCst) {
        drop_self_fd();
    }
    let fd = SELF_FD.load(Ordering::Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    let fd = open_self_statm()?;
    match SELF_FD.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(fd),
        Err(winner) => {
            // SAFETY: ours lost the race and was never published.
            unsafe { libc::close(fd) };
            Ok(winner)
        }
    }
}

/// Resident pages of this process: one `pread` on the kept descriptor, into a stack buffer.
fn read_self_pages() -> io::Result<u64> {
    let mut buf = [0u8; 160];
    let fd = self_fd()?;
    // SAFETY: `buf` is a valid writable buffer of the given length.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n > 0 {
        if let Some(pages) = procfs::statm_resident_pages(&buf[..n as usize]) {
            return Ok(pages);
        }
    }
    // The descriptor went bad (closed or reused by someone else): open a fresh one, once.
    drop_self_fd();
    let fd = self_fd()?;
    // SAFETY: as above.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    procfs::statm_resident_pages(&buf[..n as usize])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected statm format"))
}

/// This process's RSS in bytes; callable without the GVL.
pub fn self_rss_bytes() -> io::Result<u64> {
    Ok(read_self_pages()? * PAGE_SIZE.load(Ordering::Relaxed))
}

fn rss_self() -> Result<u64, Error> {
    self_rss_bytes().map_err(|e| io_error(&e, SELF_STATM, None))
}

fn rss(pid: i32) -> Result<u64, Error> {
    let file = format!("/proc/{pid}/statm");
    let bytes = fs::read(&file).map_err(|e| io_error(&e, &file, Some(pid)))?;
    let pages = procfs::statm_resident_pages(&bytes).ok_or_else(|| {
        error(
            Kind::Error,
            format!(
                "{file} has an unexpected format: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        )
    })?;
    Ok(pages * PAGE_SIZE.load(Ordering::Relaxed))
}

fn proc_dir(pid: Option<i32>) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    }
}

/// `{rss:, pss:, uss:, swap:}` in bytes (`Native.smaps`).
fn smaps(ruby: &Ruby, pid: Option<i32>) -> Result<RHash, Error> {
    let totals = smaps_totals(pid)?;
    Named::new(ruby)
        .with("rss", totals.rss)
        .with("pss", totals.pss)
        .with("uss", totals.uss())
        .with("swap", totals.swap)
        .hash()
}

/// The smaps figures, from smaps_rollup (or a full smaps where the kernel has no rollup). Reading smaps can take
/// milliseconds on a large heap: the GVL is released meanwhile.
pub fn smaps_totals(pid: Option<i32>) -> Result<SmapsTotals, Error> {
    let dir = proc_dir(pid);
    let rollup = format!("{dir}/smaps_rollup");
    let result = nogvl("reading smaps", move || match fs::read_to_string(&rollup) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && Path::new(&dir).exists() => {
            let full = format!("{dir}/smaps");
            fs::read_to_string(&full)
                .map(|text| procfs::parse_smaps(&text))
                .map_err(|e| (e, full))
        }
        other => other
            .map(|text| procfs::parse_smaps(&text))
            .map_err(|e| (e, rollup)),
    })?;
    result.map_err(|(e, file)| io_error(&e, &file, pid))
}

/// Resets this process's peak RSS (VmHWM) to its RSS now: writes "5" to /proc/self/clear_refs (Linux 4.0+;
/// a few microseconds). Admission's clean windows measure a job's working set from it.
pub fn reset_self_peak_rss() -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")?
        .write_all(b"5")
}

/// A process's peak RSS (VmHWM), in bytes: this process's (None) since it started or since
/// `reset_self_peak_rss`.
pub fn peak_rss(pid: Option<i32>) -> Result<u64, Error> {
    let file = format!("{}/status", proc_dir(pid));
    let text = fs::read_to_string(&file).map_err(|e| io_error(&e, &file, pid))?;
    procfs::status_field(&text, "VmHWM").ok_or_else(|| {
        error(
            Kind::NotSupported,
            format!("{file} has no VmHWM line (a kernel thread?)"),
        )
    })
}

/// The working set of this process's memory cgroup (what `metric = :cgroup` compares with, see
/// `sidekiq_rust_core::cgroup`); an error when it is in none.
pub fn self_cgroup_usage() -> Result<u64, Error> {
    crate::cgroup::self_usage()
}
