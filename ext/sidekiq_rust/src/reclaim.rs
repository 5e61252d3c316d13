//! `Native::Guard#reclaim`: the metric, then `GC.start` and the allocator purge (without the GVL), then the
//! metric again and the attribution's floor; the core records it (what it gave back counts for no job) and,
//! for a reclaim the policy asked for (`decide`), gives the policy's next action and its verdict.

use magnus::{Error, RHash, Ruby};
use sidekiq_rust_core::guard::ReclaimReadings;

use crate::allocator::{in_use_bytes, purge};
use crate::convert::action_symbol;
use crate::guard::{read_rss, Guard};
use crate::named::Named;
use crate::symbol_enum::symbol;

/// Returns `{reason:, action:, verdict:, still_over:, before:, after:, purged:, purge_error:, measured:}`: why the
/// policy asked for it (:max_rss, :hard_max_rss or :brake; nil for a measuring reclaim), its next action (a Symbol
/// or nil) and what it concluded (`verdict`: :back_under, :under_hard, :still_over,
/// :loop, :resumed or :retained; nil for a measuring reclaim), the metric before and after, whether the
/// allocator gave memory back, what went wrong in the purge (a String saying why there was none or what part
/// failed; nil: nothing), and whether its floor closed a window of the per-class retained figure (false when a
/// job had just started, see `Attribution::reclaim_finished`).
pub fn reclaim(ruby: &Ruby, guard: &Guard, decide: bool) -> Result<RHash, Error> {
    let rss = read_rss()?;
    let before = guard.read_metric(rss)?;
    guard.core().reclaim_started(rss, guard.now_ns());
    ruby.gc_start();
    let (purged, purge_error) = match purge() {
        Ok(p) => (p.outcome.purged, p.outcome.error),
        Err(failed) => (false, Some(failed.message)),
    };
    let rss = read_rss()?;
    let after = guard.read_metric(rss)?;
    // The attribution's floors are all one kind of reading: the allocator's bytes in use, or RSS. Read after the
    // purge: the jobs that started before the GC have run on during it (with the GVL read right after the GC,
    // one that had just started had not allocated yet). It is read without the GVL, and the jobs that start
    // meanwhile are told apart by when they started.
    let read_from = guard.now_ns();
    let (in_use, read_at) = in_use_bytes()?;
    let read = (
        read_from,
        read_at
            .saturating_duration_since(guard.started())
            .as_nanos() as u64,
    );
    let readings = ReclaimReadings {
        before,
        after,
        rss,
        floor: in_use.unwrap_or(rss),
        read,
        now_ns: guard.now_ns(),
    };
    let outcome = guard.core().reclaim_finished(readings, decide);
    Named::new(ruby)
        .with("reason", outcome.reason.map(|r| symbol(ruby, r)))
        .with("action", action_symbol(ruby, outcome.action))
        .with("verdict", outcome.verdict.map(|v| symbol(ruby, v)))
        .with(
            "still_over",
            outcome.verdict.is_some_and(|v| v.still_over()),
        )
        .with("before", before)
        .with("after", after)
        .with("purged", purged)
        .with("purge_error", purge_error)
        .with("measured", outcome.measured)
        .hash()
}
