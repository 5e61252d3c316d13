//! `SidekiqRust::Native` allocator functions: which malloc the process runs (detect.rs, found once at run time),
//! its statistics, and giving free memory back to the OS, for jemalloc (jemalloc.rs) and glibc (glibc.rs).

mod detect;
mod glibc;
mod jemalloc;

use std::time::Instant;

use magnus::{function, Error, Object, RHash, RModule, Ruby, Value};
use sidekiq_rust_core::allocator::{self as policy, PurgeCalls, PurgeOutcome};

use crate::errors::{error, Kind};
use crate::memory::self_rss_bytes;
use crate::named::Named;
use crate::nogvl::nogvl;
use detect::{detected, ld_preload_entries, unsupported, unsupported_text};
use jemalloc::PURGE_ALL_ARENAS_NAME;

pub use jemalloc::thread_allocated;

pub fn init(_ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    native.define_singleton_method("allocator_info", function!(allocator_info, 0))?;
    native.define_singleton_method("allocator_stats", function!(allocator_stats, 0))?;
    native.define_singleton_method("allocator_purge", function!(allocator_purge, 0))?;
    native.define_singleton_method("thread_allocated", function!(thread_allocated, 0))?;
    Ok(())
}

/// `{name:, version: (nil: unknown), source: (:linked, :preloaded or :system), library: (path, nil: unknown)}`.
fn allocator_info(ruby: &Ruby) -> Result<RHash, Error> {
    let d = detected();
    let source = match &d.library {
        Some(lib) => policy::source(d.name, lib, &ld_preload_entries()),
        None if d.name == "glibc" => policy::Source::System,
        None => policy::Source::Linked,
    };
    Named::new(ruby)
        .with("name", d.name)
        .with("version", d.version.clone())
        .with("source", ruby.to_symbol(source.as_str()))
        .with("library", d.library.clone())
        .hash()
}

fn set(hash: &RHash, ruby: &Ruby, key: &str, value: impl magnus::IntoValue) -> Result<(), Error> {
    let value: Value = ruby.into_value(value);
    hash.aset(ruby.to_symbol(key), value)
}

fn allocator_stats(ruby: &Ruby) -> Result<RHash, Error> {
    let d = detected();
    let hash = ruby.hash_new();
    set(&hash, ruby, "allocator", d.name)?;
    if let Some(mallctl) = d.mallctl {
        jemalloc::jemalloc_stats(ruby, &hash, mallctl)?;
    } else if d.name == "glibc" {
        glibc::glibc_stats(ruby, &hash)?;
    } else {
        return Err(unsupported(d, "Allocator.stats"));
    }
    Ok(hash)
}

/// Bytes the process's allocator has handed out and not had back: jemalloc's `stats.allocated` less what the
/// thread caches hold, glibc's mallinfo2 in use + mmapped (every arena, under its lock: milliseconds on a heap of
/// many free chunks, so no GVL). None under another allocator, or a jemalloc without statistics. Read after a
/// GC it is the heap's floor: unlike RSS it does not hide a leak in memory the allocator had kept free. Also
/// returns when the reading was done (before the GVL is taken back).
pub fn in_use_bytes() -> Result<(Option<u64>, Instant), Error> {
    let d = detected();
    if d.mallctl.is_none() && d.name != "glibc" {
        return Ok((None, Instant::now()));
    }
    let mallctl = d.mallctl;
    nogvl("reading the allocator's bytes in use", move || {
        let bytes = match mallctl {
            Some(mallctl) => jemalloc::in_use(mallctl),
            None => Some(glibc::in_use()),
        };
        (bytes, Instant::now())
    })
}

/// What a purge did: RSS before and after it, how long it took, and whether it happened (see
/// `sidekiq_rust_core::allocator::purge_outcome`).
pub struct Purged {
    pub rss_before: u64,
    pub rss_after: u64,
    pub seconds: f64,
    pub outcome: PurgeOutcome,
}

/// A purge that could not be tried: the allocator is not one this gem purges, or RSS could not be read around it.
pub struct PurgeFailed {
    kind: Kind,
    pub message: String,
}

impl From<PurgeFailed> for Error {
    fn from(failed: PurgeFailed) -> Error {
        error(failed.kind, failed.message)
    }
}

/// `{rss_before:, rss_after:, released: (never negative), seconds:}` (`Native.allocator_purge`). A purge the
/// allocator refused raises `SidekiqRust::Error`, saying why.
fn allocator_purge(ruby: &Ruby) -> Result<RHash, Error> {
    let p = purge()?;
    if !p.outcome.purged {
        let why = p.outcome.error.unwrap_or_default();
        return Err(error(
            Kind::Error,
            format!("the purge did not happen: {why}"),
        ));
    }
    Named::new(ruby)
        .with("rss_before", p.rss_before)
        .with("rss_after", p.rss_after)
        .with("released", p.rss_before.saturating_sub(p.rss_after))
        .with("seconds", p.seconds)
        .hash()
}

/// Gives free memory back to the OS: jemalloc purges every arena, glibc runs `malloc_trim(0)`; runs without
/// the GVL. The outcome says whether the allocator did it, and if not all of it, why.
pub fn purge() -> Result<Purged, PurgeFailed> {
    let d = detected();
    let mallctl = d.mallctl;
    if mallctl.is_none() && d.name != "glibc" {
        return Err(PurgeFailed {
            kind: Kind::NotSupported,
            message: unsupported_text(d, "the purge"),
        });
    }
    let result = nogvl("purging the allocator", move || {
        let before = self_rss_bytes()?;
        let started = Instant::now();
        let calls = match mallctl {
            Some(mallctl) => jemalloc::jemalloc_purge(mallctl),
            None => PurgeCalls {
                // SAFETY: malloc_trim has no preconditions.
                malloc_trim: glibc::malloc_trim_fn().map(|trim| unsafe { trim(0) }),
                ..PurgeCalls::default()
            },
        };
        let seconds = started.elapsed().as_secs_f64();
        let after = self_rss_bytes()?;
        Ok::<_, std::io::Error>(Purged {
            rss_before: before,
            rss_after: after,
            seconds,
            outcome: policy::purge_outcome(&calls, PURGE_ALL_ARENAS_NAME),
        })
    });
    match result {
        Ok(Ok(purged)) => Ok(purged),
        Ok(Err(e)) => Err(PurgeFailed {
            kind: Kind::Error,
            message: format!("reading /proc/self/statm around the purge failed: {e}"),
        }),
        Err(_) => Err(PurgeFailed {
            kind: Kind::Error,
            message:
                "purging the allocator failed inside the native extension (a bug: please report it)"
                    .to_string(),
        }),
    }
}
