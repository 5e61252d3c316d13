//! `SidekiqRust::Native` readers of the memory cgroup (usage, limit, OOM counters) and of memory pressure (PSI).
//! Each reads a few small files of /proc and /sys (microseconds): they keep the GVL.

use std::fs;
use std::io;
use std::path::Path;

use magnus::{function, Error, Object, RHash, RModule, Ruby};
use sidekiq_rust_core::{cgroup, psi};

use crate::errors::{error, io_error, Kind};
use crate::named::Named;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PROC_CGROUP: &str = "/proc/self/cgroup";

pub fn init(_ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    native.define_singleton_method("cgroup", function!(cgroup_memory, 2))?;
    native.define_singleton_method("cgroup_oom", function!(cgroup_oom, 2))?;
    native.define_singleton_method("pressure", function!(pressure, 3))?;
    Ok(())
}

/// The text of `/proc/self/cgroup` (or the file given); `None` when there is no such file (not Linux).
fn proc_cgroup_text(proc_cgroup: &str) -> Result<Option<String>, Error> {
    match fs::read_to_string(proc_cgroup) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&e, proc_cgroup, None)),
    }
}

/// The working set of this process's memory cgroup; a NotSupported error when it is in none.
pub fn self_usage() -> Result<u64, Error> {
    match read_memory(CGROUP_ROOT, PROC_CGROUP)? {
        Some(memory) => Ok(memory.usage),
        None => Err(error(
            Kind::NotSupported,
            "this process is in no memory cgroup: use metric :rss or :pss",
        )),
    }
}

/// The limit of this process's memory cgroup (None: no cgroup, or no limit).
pub fn self_limit() -> Result<Option<u64>, Error> {
    Ok(read_memory(CGROUP_ROOT, PROC_CGROUP)?.and_then(|memory| memory.limit))
}

fn cgroup_error(root: &str, e: io::Error) -> Error {
    error(
        Kind::Error,
        format!("reading the memory cgroup under {root} failed: {e}"),
    )
}

fn read_memory(root: &str, proc_cgroup: &str) -> Result<Option<cgroup::CgroupMemory>, Error> {
    let Some(text) = proc_cgroup_text(proc_cgroup)? else {
        return Ok(None);
    };
    cgroup::read(Path::new(root), &text).map_err(|e| cgroup_error(root, e))
}

/// `nil`, or `{usage: (working set), limit: (nil: none), version:, current: (charged), inactive_file:, dir:}`.
fn cgroup_memory(ruby: &Ruby, root: String, proc_cgroup: String) -> Result<Option<RHash>, Error> {
    read_memory(&root, &proc_cgroup)?
        .map(|m| {
            Named::new(ruby)
                .with("usage", m.usage)
                .with("limit", m.limit)
                .with("version", m.version)
                .with("current", m.current)
                .with("inactive_file", m.inactive_file)
                .with("dir", m.dir.display().to_string())
                .hash()
        })
        .transpose()
}

/// `nil`, or `{oom_kills: (nil: not counted), limit_hits: (nil: not counted), group_kill:, kill_disabled:, version:,
/// dir:}`.
fn cgroup_oom(ruby: &Ruby, root: String, proc_cgroup: String) -> Result<Option<RHash>, Error> {
    let Some(text) = proc_cgroup_text(&proc_cgroup)? else {
        return Ok(None);
    };
    let found = cgroup::read_oom(Path::new(&root), &text).map_err(|e| cgroup_error(&root, e))?;
    found
        .map(|c| {
            Named::new(ruby)
                .with("oom_kills", c.oom_kills)
                .with("limit_hits", c.limit_hits)
                .with("group_kill", c.group_kill)
                .with("kill_disabled", c.kill_disabled)
                .with("version", c.version)
                .with("dir", c.dir.display().to_string())
                .hash()
        })
        .transpose()
}

/// One kind of stall (`some` or `full`, nil: the file has no such line) as `KIND_avg10`, `KIND_avg60`,
/// `KIND_avg300` and `KIND_total_us`.
fn with_stall<'r>(named: Named<'r>, kind: &str, stall: Option<psi::Stall>) -> Named<'r> {
    named
        .with(&format!("{kind}_avg10"), stall.map(|s| s.avg10))
        .with(&format!("{kind}_avg60"), stall.map(|s| s.avg60))
        .with(&format!("{kind}_avg300"), stall.map(|s| s.avg300))
        .with(&format!("{kind}_total_us"), stall.map(|s| s.total_us))
}

/// `nil` where the kernel has no PSI, or `{some_avg10:, some_avg60:, some_avg300:, some_total_us:, full_avg10:, ...,
/// source:}` (the `full_*` figures nil where the file has no `full` line), read from the cgroup's memory.pressure
/// on v2, else from `system_file`; `source` is the file read.
fn pressure(
    ruby: &Ruby,
    root: String,
    proc_cgroup: String,
    system_file: String,
) -> Result<Option<RHash>, Error> {
    let own = proc_cgroup_text(&proc_cgroup)?
        .and_then(|text| cgroup::pressure_file(Path::new(&root), &text));
    let file = own.map_or(system_file, |f| f.display().to_string());
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        // No PSI in this kernel (CONFIG_PSI off, or psi=0 on its command line).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(None),
        Err(e) => return Err(io_error(&e, &file, None)),
    };
    let parsed = psi::parse(&text).ok_or_else(|| {
        error(
            Kind::Error,
            format!("{file} is not a PSI file (some avg10=... avg60=... avg300=... total=...): {text:?}"),
        )
    })?;
    let named = with_stall(Named::new(ruby), "some", Some(parsed.some));
    with_stall(named, "full", parsed.full)
        .with("source", file)
        .hash()
        .map(Some)
}
