//! The memory cgroup of a process: usage and limit, from cgroup v2 (`memory.current`, `memory.max`)
//! or, where the memory controller sits on a v1 hierarchy, `memory.usage_in_bytes` / `memory.limit_in_bytes`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Usage and limit of a memory cgroup, in bytes. `limit` is `None` where there is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupMemory {
    pub usage: u64,
    pub limit: Option<u64>,
    pub version: u8,
}

/// cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// Reads the memory cgroup of the process whose `/proc/PID/cgroup` text is `proc_cgroup`,
/// with the cgroup file systems mounted under `root` (normally `/sys/fs/cgroup`).
/// `Ok(None)`: the process is in no memory cgroup that can be read (e.g. the v2 root cgroup).
pub fn read(root: &Path, proc_cgroup: &str) -> io::Result<Option<CgroupMemory>> {
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return read_v1(&root.join("memory"), path);
        }
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path);
        }
    }
    match v2_path {
        Some(path) => read_v2(root, path),
        None => Ok(None),
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

fn read_v2(root: &Path, path: &str) -> io::Result<Option<CgroupMemory>> {
    let Some(dir) = cgroup_dir(root, path, "memory.current") else {
        return Ok(None);
    };
    let usage = read_number(&dir.join("memory.current"))?;
    // A limit set on any ancestor applies too: the effective limit is the smallest on the way up.
    let mut limit: Option<u64> = None;
    let mut current = Some(dir.as_path());
    while let Some(d) = current {
        let file = d.join("memory.max");
        if file.is_file() {
            if let Some(l) = read_limit_v2(&file)? {
                limit = Some(limit.map_or(l, |m| m.min(l)));
            }
        }
        if d == root {
            break;
        }
        current = d.parent().filter(|p| p.starts_with(root));
    }
    Ok(Some(CgroupMemory {
        usage,
        limit,
        version: 2,
    }))
}

fn read_v1(base: &Path, path: &str) -> io::Result<Option<CgroupMemory>> {
    let Some(dir) = cgroup_dir(base, path, "memory.usage_in_bytes") else {
        return Ok(None);
    };
    let usage = read_number(&dir.join("memory.usage_in_bytes"))?;
    let limit_file = dir.join("memory.limit_in_bytes");
    let limit = if limit_file.is_file() {
        Some(read_number(&limit_file)?).filter(|l| *l < V1_UNLIMITED)
    } else {
        None
    };
    Ok(Some(CgroupMemory {
        usage,
        limit,
        version: 1,
    }))
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

    fn read_fixture(name: &str) -> io::Result<Option<CgroupMemory>> {
        let dir = fixture(name);
        let proc_cgroup = fs::read_to_string(dir.join("proc_self_cgroup"))?;
        read(&dir.join("sys_fs_cgroup"), &proc_cgroup)
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
    fn no_memory_cgroup() {
        assert_eq!(read_fixture("none").unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let err = read_fixture("v2_garbage").unwrap_err();
        assert!(err.to_string().contains("memory.current"), "{err}");
    }
}
