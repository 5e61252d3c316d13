//! Decisions about the process's allocator that need no system call: where its `malloc` comes from,
//! how many glibc arenas `malloc_info` lists, which arena limit glibc was given, the fragmentation ratio, and
//! what the calls of a purge returned (whether it happened, and if not all of it, why).

/// How the allocator came into the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Linked into Ruby (or a library Ruby needs), e.g. Ruby built `--with-jemalloc`.
    Linked,
    /// Loaded first through `LD_PRELOAD`.
    Preloaded,
    /// The C library's own malloc.
    System,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Linked => "linked",
            Source::Preloaded => "preloaded",
            Source::System => "system",
        }
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `library` (the file that provides `malloc`, as `dladdr` names it, resolved to its real path)
/// is one of the `LD_PRELOAD` entries (each also resolved where it could be). Entries are separated by
/// colons or white space; a bare file name matches by name.
pub fn is_preloaded(library: &str, ld_preload: &[String]) -> bool {
    ld_preload.iter().any(|entry| {
        entry == library || (!entry.contains('/') && basename(library) == entry.as_str())
    })
}

/// Splits `LD_PRELOAD` into its entries.
pub fn preload_entries(ld_preload: &str) -> Vec<String> {
    ld_preload
        .split(|c: char| c == ':' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// The source of an allocator named `name` whose `malloc` lives in `library`.
pub fn source(name: &str, library: &str, ld_preload: &[String]) -> Source {
    if is_preloaded(library, ld_preload) {
        Source::Preloaded
    } else if name == "glibc" {
        Source::System
    } else {
        Source::Linked
    }
}

/// The number of arenas in glibc's `malloc_info` XML: one `<heap nr="N">` element each.
pub fn malloc_info_heaps(xml: &str) -> usize {
    xml.matches("<heap nr=").count()
}

/// The arena limit glibc was started with: `GLIBC_TUNABLES=glibc.malloc.arena_max=N` wins over `MALLOC_ARENA_MAX`.
pub fn arena_max(malloc_arena_max: Option<&str>, glibc_tunables: Option<&str>) -> Option<u64> {
    let tunable = glibc_tunables.and_then(|t| {
        t.split(':')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == "glibc.malloc.arena_max")
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .next_back()
    });
    tunable.or_else(|| malloc_arena_max.and_then(|v| v.trim().parse::<u64>().ok()))
}

/// `footprint / in_use`, or `None` when nothing is in use.
pub fn fragmentation(footprint: u64, in_use: u64) -> Option<f64> {
    if in_use == 0 {
        None
    } else {
        Some(footprint as f64 / in_use as f64)
    }
}

/// What the calls of one purge returned (None: not called). jemalloc: `mallctl("thread.tcache.flush")`,
/// `mallctl("arena.<all>.purge")` (the first failing attempt's code, else 0) and `mallctl("epoch")` (the
/// statistics refresh that tells whether dirty pages remain; the first failing code, else 0), each 0 when done,
/// else an errno value. glibc: `malloc_trim(0)`, 1 when memory went back, 0 when there was none to give back
/// (no failure); None there means the C library has no `malloc_trim`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeCalls {
    pub tcache_flush: Option<i32>,
    pub arena_purge: Option<i32>,
    pub epoch: Option<i32>,
    pub malloc_trim: Option<i32>,
}

/// Whether a purge happened, and what went wrong in it (None: nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeOutcome {
    pub purged: bool,
    pub error: Option<String>,
}

/// The name of the errno values `mallctl` returns (Linux numbering).
fn errno_name(rc: i32) -> Option<&'static str> {
    match rc {
        1 => Some("EPERM"),
        2 => Some("ENOENT"),
        11 => Some("EAGAIN"),
        12 => Some("ENOMEM"),
        14 => Some("EFAULT"),
        22 => Some("EINVAL"),
        _ => None,
    }
}

fn mallctl_failed(name: &str, rc: i32, meaning: &str) -> String {
    let errno = errno_name(rc).map_or(String::new(), |n| format!(" ({n})"));
    format!("mallctl(\"{name}\") returned {rc}{errno}: {meaning}")
}

/// A jemalloc purge happened when its arena purge returned 0; a glibc one when `malloc_trim` was there to call.
/// Every call that failed is named, with its code and what it means for the purge.
pub fn purge_outcome(calls: &PurgeCalls, purge_name: &str) -> PurgeOutcome {
    let mut errors = Vec::new();
    if let Some(rc) = calls.tcache_flush.filter(|&rc| rc != 0) {
        errors.push(mallctl_failed(
            "thread.tcache.flush",
            rc,
            "the thread's cache was not flushed (jemalloc says EFAULT when the thread cache is off)",
        ));
    }
    if let Some(rc) = calls.arena_purge.filter(|&rc| rc != 0) {
        errors.push(mallctl_failed(
            purge_name,
            rc,
            "jemalloc refused the purge, no dirty page went back",
        ));
    }
    if let Some(rc) = calls.epoch.filter(|&rc| rc != 0) {
        errors.push(mallctl_failed(
            "epoch",
            rc,
            "the statistics were not refreshed, so the purge could not tell whether dirty pages remained",
        ));
    }
    let purged = match (calls.arena_purge, calls.malloc_trim) {
        (Some(rc), _) => rc == 0,
        (None, Some(_)) => true,
        (None, None) => {
            errors.push(
                "malloc_trim is not in this process's C library: glibc malloc without it cannot give memory back"
                    .to_string(),
            );
            false
        }
    };
    PurgeOutcome {
        purged,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_matching() {
        let entries =
            preload_entries("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 libfoo.so:/opt/x.so");
        assert_eq!(entries.len(), 3);
        assert!(is_preloaded(
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            &entries
        ));
        assert!(
            is_preloaded("/usr/lib/libfoo.so", &entries),
            "a bare name matches by name"
        );
        assert!(!is_preloaded(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            &entries
        ));
        assert!(
            !is_preloaded("/elsewhere/x.so", &entries),
            "a path matches only itself"
        );
    }

    #[test]
    fn sources() {
        let none: Vec<String> = Vec::new();
        let pre = preload_entries("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2");
        assert_eq!(
            source("glibc", "/lib/x86_64-linux-gnu/libc.so.6", &none),
            Source::System
        );
        assert_eq!(
            source(
                "jemalloc",
                "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                &pre
            ),
            Source::Preloaded
        );
        assert_eq!(
            source(
                "jemalloc",
                "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                &none
            ),
            Source::Linked
        );
        assert_eq!(
            source("jemalloc", "/usr/bin/ruby", &none).as_str(),
            "linked"
        );
    }

    #[test]
    fn heaps_in_malloc_info() {
        let xml = "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n</sizes>\n</heap>\n<heap nr=\"1\">\n</heap>\n<total type=\"fast\"/>\n</malloc>\n";
        assert_eq!(malloc_info_heaps(xml), 2);
        assert_eq!(malloc_info_heaps(""), 0);
    }

    #[test]
    fn arena_limits() {
        assert_eq!(arena_max(Some("2"), None), Some(2));
        assert_eq!(arena_max(Some("x"), None), None);
        assert_eq!(
            arena_max(
                Some("2"),
                Some("glibc.malloc.arena_max=4:glibc.malloc.tcache_count=0")
            ),
            Some(4)
        );
        assert_eq!(arena_max(None, Some("glibc.malloc.tcache_count=0")), None);
        assert_eq!(arena_max(None, None), None);
    }

    #[test]
    fn fragmentation_ratio() {
        assert_eq!(fragmentation(300, 100), Some(3.0));
        assert_eq!(fragmentation(300, 0), None);
    }

    const PURGE: &str = "arena.4096.purge";

    #[test]
    fn a_jemalloc_purge_that_went_through_says_nothing() {
        let calls = PurgeCalls {
            tcache_flush: Some(0),
            arena_purge: Some(0),
            epoch: Some(0),
            malloc_trim: None,
        };
        assert_eq!(
            purge_outcome(&calls, PURGE),
            PurgeOutcome {
                purged: true,
                error: None
            }
        );
    }

    #[test]
    fn a_refused_arena_purge_is_no_purge_and_says_its_code() {
        let calls = PurgeCalls {
            tcache_flush: Some(0),
            arena_purge: Some(14),
            epoch: None,
            malloc_trim: None,
        };
        let outcome = purge_outcome(&calls, PURGE);
        assert!(!outcome.purged);
        assert_eq!(
            outcome.error.as_deref(),
            Some("mallctl(\"arena.4096.purge\") returned 14 (EFAULT): jemalloc refused the purge, no dirty page went back")
        );
    }

    #[test]
    fn a_failed_flush_or_epoch_is_said_beside_a_purge_that_happened() {
        let calls = PurgeCalls {
            tcache_flush: Some(14),
            arena_purge: Some(0),
            epoch: Some(99),
            malloc_trim: None,
        };
        let outcome = purge_outcome(&calls, PURGE);
        assert!(outcome.purged);
        let error = outcome.error.unwrap_or_default();
        assert!(error.starts_with("mallctl(\"thread.tcache.flush\") returned 14 (EFAULT)"));
        assert!(
            error.contains("; mallctl(\"epoch\") returned 99: the statistics were not refreshed")
        );
    }

    #[test]
    fn glibc_purges_when_malloc_trim_is_there_whatever_it_gave_back() {
        for rc in [0, 1] {
            let calls = PurgeCalls {
                malloc_trim: Some(rc),
                ..PurgeCalls::default()
            };
            assert_eq!(
                purge_outcome(&calls, PURGE),
                PurgeOutcome {
                    purged: true,
                    error: None
                }
            );
        }
        let outcome = purge_outcome(&PurgeCalls::default(), PURGE);
        assert!(!outcome.purged);
        assert!(outcome
            .error
            .unwrap_or_default()
            .starts_with("malloc_trim is not in this process's C library"));
    }
}
