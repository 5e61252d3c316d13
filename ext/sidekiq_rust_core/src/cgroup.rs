//! The memory cgroup of a process: usage, limit and OOM counters, from cgroup v2 (`memory.current`,
//! `memory.max`, `memory.stat`, `memory.events`, `memory.oom.group`) or, where the memory controller sits on a v1
//! hierarchy (the hybrid layout included), `memory.usage_in_bytes`, `memory.limit_in_bytes`, `memory.stat`,
//! `memory.failcnt` and `memory.oom_control`.
//!
//! The usage the guard compares is the working set: the charged memory minus the inactive file cache
//! (`inactive_file`, `total_inactive_file` on v1), which the kernel reclaims before it OOM-kills anything. It is
//! what kubelet reports as `container_memory_working_set_bytes` and evicts on; the raw charge (`current`), which
//! counts every cached page of every file the process read, would restart processes that are in no danger.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Usage and limit of a memory cgroup, in bytes. `limit` is `None` where there is no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMemory {
    /// The working set: `current` minus the inactive file cache.
    pub usage: u64,
    /// What the cgroup is charged (`memory.current`, `memory.usage_in_bytes`), page cache included.
    pub current: u64,
    pub inactive_file: u64,
    pub limit: Option<u64>,
    pub version: u8,
    /// The cgroup's directory.
    pub dir: PathBuf,
}

/// The OOM counters of a memory cgroup (`None`: the kernel does not say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomCounters {
    pub version: u8,
    /// Processes the kernel's OOM killer killed in the cgroup (v2 `oom_kill` of memory.events, v1 `oom_kill`
    /// of memory.oom_control, kernels 4.13 and later).
    pub oom_kills: Option<u64>,
    /// Times the usage hit the limit (v2 `max` of memory.events, v1 memory.failcnt).
    pub limit_hits: Option<u64>,
    /// Whether an OOM kill takes every process of the cgroup (v2 memory.oom.group; v1 kills one process).
    pub group_kill: bool,
    /// v1 `oom_kill_disable`: the OOM killer is off and the cgroup's processes hang at the limit instead.
    pub kill_disabled: bool,
    pub dir: PathBuf,
}

/// cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The memory cgroup's version and directory for the process whose `/proc/PID/cgroup` text is `proc_cgroup`,
/// with the cgroup file systems mounted under `root` (normally `/sys/fs/cgroup`). `None`: no memory cgroup that
/// can be read (e.g. the v2 root cgroup, or a v2 hierarchy without the memory controller).
pub fn locate(root: &Path, proc_cgroup: &str) -> Option<(u8, PathBuf)> {
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return cgroup_dir(&root.join("memory"), path, "memory.usage_in_bytes").map(|d| (1, d));
        }
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path);
        }
    }
    cgroup_dir(root, v2_path?, "memory.current").map(|d| (2, d))
}

/// Reads the memory cgroup's usage and limit (see `locate`). `Ok(None)`: no memory cgroup.
pub fn read(root: &Path, proc_cgroup: &str) -> io::Result<Option<CgroupMemory>> {
    match locate(root, proc_cgroup) {
        Some((1, dir)) => read_v1(dir).map(Some),
        Some((_, dir)) => read_v2(root, dir).map(Some),
        None => Ok(None),
    }
}

/// Reads the memory cgroup's OOM counters (see `locate`). `Ok(None)`: no memory cgroup.
pub fn read_oom(root: &Path, proc_cgroup: &str) -> io::Result<Option<OomCounters>> {
    let Some((version, dir)) = locate(root, proc_cgroup) else {
        return Ok(None);
    };
    let counters = if version == 1 {
        let control = read_optional(&dir.join("memory.oom_control"))?.unwrap_or_default();
        let failcnt = dir.join("memory.failcnt");
        OomCounters {
            version,
            oom_kills: field(&control, "oom_kill"),
            limit_hits: if failcnt.is_file() {
                Some(read_number(&failcnt)?)
            } else {
                None
            },
            group_kill: false,
            kill_disabled: field(&control, "oom_kill_disable") == Some(1),
            dir,
        }
    } else {
        let events = read_optional(&dir.join("memory.events"))?.unwrap_or_default();
        let group = read_optional(&dir.join("memory.oom.group"))?;
        OomCounters {
            version,
            oom_kills: field(&events, "oom_kill"),
            limit_hits: field(&events, "max"),
            group_kill: group.is_some_and(|g| g.trim() == "1"),
            kill_disabled: false,
            dir,
        }
    };
    Ok(Some(counters))
}

/// The cgroup's own `memory.pressure` (PSI) on v2; `None` elsewhere (v1 has none: the system's
/// `/proc/pressure/memory` is the reading there).
pub fn pressure_file(root: &Path, proc_cgroup: &str) -> Option<PathBuf> {
    match locate(root, proc_cgroup) {
        Some((2, dir)) => Some(dir.join("memory.pressure")).filter(|f| f.is_file()),
        _ => None,
    }
}

/// The directory of the cgroup: `base/path` when it exists (host view), else `base` itself
/// (a container that mounts its own cgroup at the root but shows the host path).
fn cgroup_dir(base: &Path, path: &str, probe: &str) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    let full = base.join(relative);
    if full.join(probe).is_file() {
        Some(full)
    } else if base.join(probe).is_file() {
        Some(base.to_path_buf())
    } else {
        None
    }
}

fn read_v2(root: &Path, dir: PathBuf) -> io::Result<CgroupMemory> {
    let current = read_number(&dir.join("memory.current"))?;
    let stat = read_optional(&dir.join("memory.stat"))?.unwrap_or_default();
    let inactive_file = field(&stat, "inactive_file").unwrap_or(0);
    // A limit set on any ancestor applies too: the effective limit is the smallest on the way up.
    let mut limit: Option<u64> = None;
    let mut here = Some(dir.as_path());
    while let Some(d) = here {
        let file = d.join("memory.max");
        if file.is_file() {
            if let Some(l) = read_limit_v2(&file)? {
                limit = Some(limit.map_or(l, |m| m.min(l)));
            }
        }
        if d == root {
            break;
        }
        here = d.parent().filter(|p| p.starts_with(root));
    }
    Ok(CgroupMemory {
        usage: current.saturating_sub(inactive_file),
        current,
        inactive_file,
        limit,
        version: 2,
        dir,
    })
}

fn read_v1(dir: PathBuf) -> io::Result<CgroupMemory> {
    let current = read_number(&dir.join("memory.usage_in_bytes"))?;
    let stat = read_optional(&dir.join("memory.stat"))?.unwrap_or_default();
    let inactive_file = field(&stat, "total_inactive_file")
        .or_else(|| field(&stat, "inactive_file"))
        .unwrap_or(0);
    let limit_file = dir.join("memory.limit_in_bytes");
    let own = if limit_file.is_file() {
        Some(read_number(&limit_file)?)
    } else {
        None
    };
    // With use_hierarchy (the default on every current kernel) an ancestor's limit applies too: memory.stat
    // says which one holds.
    let limit = [own, field(&stat, "hierarchical_memory_limit")]
        .into_iter()
        .flatten()
        .filter(|l| *l < V1_UNLIMITED)
        .min();
    Ok(CgroupMemory {
        usage: current.saturating_sub(inactive_file),
        current,
        inactive_file,
        limit,
        version: 1,
        dir,
    })
}

/// The value of a `key value` line (memory.stat, memory.events, memory.oom_control).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

fn read_optional(file: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_limit_v2(file: &Path) -> io::Result<Option<u64>> {
    let text = fs::read_to_string(file)?;
    if text.trim() == "max" {
        Ok(None)
    } else {
        parse_number(&text, file).map(Some)
    }
}

fn read_number(file: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(file)?;
    parse_number(&text, file)
}

fn parse_number(text: &str, file: &Path) -> io::Result<u64> {
    text.trim().parse::<u64>().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds {:?}, not a number of bytes",
                file.display(),
                text.trim()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../spec/fixtures/cgroup")
            .join(name)
    }

    fn proc_cgroup(name: &str) -> String {
        fs::read_to_string(fixture(name).join("proc_self_cgroup")).unwrap()
    }

    fn read_fixture(name: &str) -> io::Result<Option<CgroupMemory>> {
        read(&fixture(name).join("sys_fs_cgroup"), &proc_cgroup(name))
    }

    fn oom_fixture(name: &str) -> OomCounters {
        read_oom(&fixture(name).join("sys_fs_cgroup"), &proc_cgroup(name))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn v2_with_limit() {
        let m = read_fixture("v2_limited").unwrap().unwrap();
        assert_eq!(m.usage, 268435456);
        assert_eq!(m.limit, Some(1073741824));
        assert_eq!(m.version, 2);
    }

    #[test]
    fn v2_max_is_no_limit() {
        let m = read_fixture("v2_unlimited").unwrap().unwrap();
        assert_eq!(m.usage, 104857600);
        assert_eq!(m.limit, None);
    }

    #[test]
    fn v2_ancestor_limit_applies() {
        let m = read_fixture("v2_nested").unwrap().unwrap();
        assert_eq!(m.limit, Some(536870912));
    }

    #[test]
    fn v2_working_set_leaves_out_the_inactive_file_cache() {
        let m = read_fixture("v2_kubepods").unwrap().unwrap();
        assert_eq!(m.limit, Some(536870912));
        assert_eq!(m.current, 300 * 1048576);
        assert_eq!(m.inactive_file, 100 * 1048576);
        assert_eq!(m.usage, 200 * 1048576);
    }

    #[test]
    fn v2_container_view_falls_back_to_the_mount_root() {
        let m = read_fixture("v2_namespaced").unwrap().unwrap();
        assert_eq!(m.usage, 52428800);
        assert_eq!(m.limit, Some(209715200));
    }

    #[test]
    fn v1_limited_and_unlimited() {
        let m = read_fixture("v1_limited").unwrap().unwrap();
        assert_eq!(
            (m.usage, m.limit, m.version),
            (314572800, Some(2147483648), 1)
        );
        let m = read_fixture("v1_unlimited").unwrap().unwrap();
        assert_eq!(m.limit, None);
    }

    #[test]
    fn v1_nested_takes_the_hierarchical_limit_and_the_working_set() {
        let m = read_fixture("v1_nested").unwrap().unwrap();
        assert_eq!(m.limit, Some(268435456), "the parent's limit holds");
        assert_eq!(m.current, 209715200);
        assert_eq!(
            m.usage,
            209715200 - 52428800,
            "total_inactive_file left out"
        );
    }

    #[test]
    fn oom_counters_v1_and_v2() {
        let v1 = oom_fixture("v1_nested");
        assert_eq!(
            (
                v1.version,
                v1.oom_kills,
                v1.limit_hits,
                v1.group_kill,
                v1.kill_disabled
            ),
            (1, Some(3), Some(17), false, false)
        );
        let v2 = oom_fixture("v2_kubepods");
        assert_eq!(
            (v2.version, v2.oom_kills, v2.limit_hits, v2.group_kill),
            (2, Some(2), Some(40), true)
        );
        let bare = oom_fixture("v2_limited");
        assert_eq!((bare.oom_kills, bare.group_kill), (None, false));
    }

    #[test]
    fn pressure_file_only_on_v2() {
        let root = fixture("v2_kubepods").join("sys_fs_cgroup");
        let file = pressure_file(&root, &proc_cgroup("v2_kubepods")).unwrap();
        assert!(file.ends_with("kubepods/pod1/worker/memory.pressure"));
        let v1 = fixture("v1_nested").join("sys_fs_cgroup");
        assert_eq!(pressure_file(&v1, &proc_cgroup("v1_nested")), None);
    }

    #[test]
    fn no_memory_cgroup() {
        assert_eq!(read_fixture("none").unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let err = read_fixture("v2_garbage").unwrap_err();
        assert!(err.to_string().contains("memory.current"), "{err}");
    }
}
