//! Decisions about the process's allocator that need no system call: where its `malloc` comes from,
//! how many glibc arenas `malloc_info` lists, which arena limit glibc was given, and the fragmentation ratio.

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
}
