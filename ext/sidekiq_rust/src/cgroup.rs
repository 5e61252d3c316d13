//! `SidekiqRust::Native` readers of the memory cgroup (usage, limit, OOM counters) and of memory pressure (PSI).
//! Each reads a few small files of /proc and /sys (microseconds): they keep the GVL.

use std::fs;
use std::io;
use std::path::Path;

use magnus::{function, Error, Object, RModule, Ruby};
use sidekiq_rust_core::{cgroup, psi};

use crate::errors::{error, io_error, Kind};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PROC_CGROUP: &str = "/proc/self/cgroup";

type CgroupRow = (u64, Option<u64>, u8, u64, u64, String);
type OomRow = (Option<u64>, Option<u64>, bool, bool, u8, String);
type StallRow = (f64, f64, f64, u64);

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
    match cgroup_memory(CGROUP_ROOT.to_string(), PROC_CGROUP.to_string())? {
        Some(row) => Ok(row.0),
        None => Err(error(
            Kind::NotSupported,
            "this process is in no memory cgroup: use metric :rss or :pss",
        )),
    }
}

fn cgroup_error(root: &str, e: io::Error) -> Error {
    error(
        Kind::Error,
        format!("reading the memory cgroup under {root} failed: {e}"),
    )
}

/// `nil`, or `[usage (working set), limit or nil, version, current (charged), inactive_file, directory]`.
fn cgroup_memory(root: String, proc_cgroup: String) -> Result<Option<CgroupRow>, Error> {
    let Some(text) = proc_cgroup_text(&proc_cgroup)? else {
        return Ok(None);
    };
    let found = cgroup::read(Path::new(&root), &text).map_err(|e| cgroup_error(&root, e))?;
    Ok(found.map(|m| {
        let dir = m.dir.display().to_string();
        (m.usage, m.limit, m.version, m.current, m.inactive_file, dir)
    }))
}

/// `nil`, or `[oom_kills or nil, limit_hits or nil, group_kill, kill_disabled, version, directory]`.
fn cgroup_oom(root: String, proc_cgroup: String) -> Result<Option<OomRow>, Error> {
    let Some(text) = proc_cgroup_text(&proc_cgroup)? else {
        return Ok(None);
    };
    let found = cgroup::read_oom(Path::new(&root), &text).map_err(|e| cgroup_error(&root, e))?;
    Ok(found.map(|c| {
        let dir = c.dir.display().to_string();
        (
            c.oom_kills,
            c.limit_hits,
            c.group_kill,
            c.kill_disabled,
            c.version,
            dir,
        )
    }))
}

fn stall_row(stall: psi::Stall) -> StallRow {
    (stall.avg10, stall.avg60, stall.avg300, stall.total_us)
}

/// `nil` where the kernel has no PSI, or `[file read, some, full or nil]`, each stall
/// `[avg10, avg60, avg300, total_us]`: the cgroup's memory.pressure on v2, else `system_file`.
fn pressure(
    root: String,
    proc_cgroup: String,
    system_file: String,
) -> Result<Option<(String, StallRow, Option<StallRow>)>, Error> {
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
    Ok(Some((
        file,
        stall_row(parsed.some),
        parsed.full.map(stall_row),
    )))
}
