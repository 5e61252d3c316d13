//! `SidekiqRust::Native::Guard`: the process-wide guard state. It owns the pure policy state machine and the
//! per-job-class attribution; the Ruby side feeds it readings and carries out the actions it returns.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use magnus::{function, method, prelude::*, Error, RModule, RString, Ruby, Symbol};
use sidekiq_rust_core::attribution::Attribution;
use sidekiq_rust_core::policy::{Action, Event, Limits, Phase, Policy, Reason, StopCause};

use crate::allocator::thread_allocated;
use crate::errors::{error, io_error, Kind};
use crate::memory::self_rss_bytes;
use crate::nogvl::nogvl;

/// A job's end reads RSS only when the last reading is older than this (a reading costs about a microsecond,
/// the rest of a job's bookkeeping a few tens of nanoseconds).
const READ_EVERY_NS: u64 = 20_000_000;

struct State {
    policy: Policy,
    jobs: Attribution,
}

#[magnus::wrap(class = "SidekiqRust::Native::Guard", free_immediately, size)]
pub struct Guard {
    state: Mutex<State>,
    started: Instant,
    busy: AtomicU32,
    last_memory: AtomicU64,
    /// When RSS was last read, ns since `started` (0: never).
    last_read_ns: AtomicU64,
}

/// `[class, jobs, retained_per_job, growth_per_job, allocated_per_job]`, bytes (nil: unknown).
type Row = (String, u64, Option<i64>, Option<i64>, Option<i64>);

pub fn init(ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    let class = native.define_class("Guard", ruby.class_object())?;
    class.define_singleton_method("new", function!(Guard::new, 11))?;
    class.define_method("job_started", method!(Guard::job_started, 2))?;
    class.define_method("job_finished", method!(Guard::job_finished, 2))?;
    class.define_method("sample", method!(Guard::sample, 2))?;
    class.define_method("reclaim_started", method!(Guard::reclaim_started, 0))?;
    class.define_method("reclaim_finished", method!(Guard::reclaim_finished, 0))?;
    class.define_method("reclaimed", method!(Guard::reclaimed, 1))?;
    class.define_method("slot_granted", method!(Guard::slot_granted, 0))?;
    class.define_method("slot_denied", method!(Guard::slot_denied, 0))?;
    class.define_method("quieted", method!(Guard::quieted, 0))?;
    class.define_method("decision_memory", method!(Guard::decision_memory, 0))?;
    class.define_method("last_reclaim", method!(Guard::last_reclaim, 0))?;
    class.define_method("uptime", method!(Guard::uptime, 0))?;
    class.define_method("phase", method!(Guard::phase, 0))?;
    class.define_method("busy", method!(Guard::busy, 0))?;
    class.define_method("last_memory", method!(Guard::last_memory, 0))?;
    class.define_method("report", method!(Guard::report, 0))?;
    class.define_method("in_flight", method!(Guard::in_flight, 0))?;
    class.define_method("reset_report", method!(Guard::reset_report, 0))?;
    Ok(())
}

fn action_symbol(ruby: &Ruby, action: Action) -> Option<Symbol> {
    let name = match action {
        Action::None => return None,
        Action::Reclaim => "reclaim",
        Action::RequestRestart(Reason::Hard) => "restart_hard",
        Action::RequestRestart(Reason::Soft) => "restart_soft",
        Action::RestartLoop => "restart_loop",
        Action::Quiet => "quiet",
        Action::QuietUnconfirmed => "quiet_unconfirmed",
        Action::Stop(StopCause::Idle) => "stop_idle",
        Action::Stop(StopCause::Waited) => "stop_waited",
        Action::Stop(StopCause::HardLimit) => "stop_hard",
        Action::Kill => "kill",
    };
    Some(ruby.to_symbol(name))
}

fn read_rss() -> Result<u64, Error> {
    self_rss_bytes().map_err(|e| io_error(&e, "/proc/self/statm", None))
}

impl Guard {
    /// `Guard.new(soft, hard_or_nil, grace_ms, reclaim, reclaim_cooldown_ms, retry_ms, shutdown_wait_ms,
    /// kill_after_ms, settle_ms, quiet_timeout_ms, loop_window_ms)`; bytes and milliseconds. Ruby validates the
    /// values first.
    #[allow(clippy::too_many_arguments)]
    fn new(
        soft: u64,
        hard: Option<u64>,
        grace_ms: u64,
        reclaim: bool,
        reclaim_cooldown_ms: u64,
        retry_ms: u64,
        shutdown_wait_ms: u64,
        kill_after_ms: u64,
        settle_ms: u64,
        quiet_timeout_ms: u64,
        loop_window_ms: u64,
    ) -> Result<Guard, Error> {
        if soft == 0 || hard.is_some_and(|h| h < soft) {
            return Err(error(
                Kind::Error,
                "the soft limit must be above 0 and the hard limit at least the soft limit",
            ));
        }
        let limits = Limits {
            soft,
            hard,
            grace_ms,
            reclaim,
            reclaim_cooldown_ms,
            retry_ms,
            shutdown_wait_ms,
            kill_after_ms,
            settle_ms,
            quiet_timeout_ms,
            loop_window_ms,
        };
        let guard = Guard {
            state: Mutex::new(State {
                policy: Policy::new(limits),
                jobs: Attribution::new(),
            }),
            started: Instant::now(),
            busy: AtomicU32::new(0),
            last_memory: AtomicU64::new(0),
            last_read_ns: AtomicU64::new(0),
        };
        // The first reading opens the first window.
        let rss = read_rss()?;
        guard.remember(rss, guard.now_ns().max(1));
        guard.state().jobs.reading(rss, guard.now_ns());
        Ok(guard)
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The policy's clock: milliseconds since the guard was made.
    fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, memory: u64, now_ns: u64) {
        self.last_memory.store(memory, Ordering::Release);
        self.last_read_ns.store(now_ns, Ordering::Release);
    }

    /// Counts a job in (no system call); returns its token for `job_finished`.
    fn job_started(&self, class: RString, jid: RString) -> u64 {
        self.busy.fetch_add(1, Ordering::AcqRel);
        // SAFETY: the borrowed bytes are used before any call back into Ruby (a lossy copy only when they are
        // not UTF-8).
        let (class, jid) = unsafe { (class.as_slice(), jid.as_slice()) };
        let (class, jid) = (String::from_utf8_lossy(class), String::from_utf8_lossy(jid));
        let allocated = thread_allocated();
        let now = self.now_ns();
        self.state().jobs.job_started(&class, &jid, now, allocated)
    }

    /// Counts a job out. Reads RSS only when the last reading is older than READ_EVERY_NS, and then (when the
    /// guard's metric is RSS) feeds it to the policy. Returns the action to take, or nil.
    fn job_finished(
        ruby: &Ruby,
        rb_self: &Self,
        token: u64,
        feed_policy: bool,
    ) -> Result<Option<Symbol>, Error> {
        let allocated = thread_allocated();
        let _ = rb_self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1));
        let now = rb_self.now_ns();
        let due = now.saturating_sub(rb_self.last_read_ns.load(Ordering::Acquire)) >= READ_EVERY_NS;
        let rss = if due { Some(read_rss()?) } else { None };
        let mut state = rb_self.state();
        state.jobs.job_finished(token, now, allocated);
        let Some(rss) = rss else {
            return Ok(None);
        };
        rb_self.remember(rss, now);
        state.jobs.reading(rss, now);
        if !feed_policy || state.policy.phase() != Phase::Serving {
            return Ok(None);
        }
        let action = state.policy.step(Event::Sample {
            memory: rss,
            now_ms: now / 1_000_000,
            busy: rb_self.busy.load(Ordering::Acquire),
        });
        Ok(action_symbol(ruby, action))
    }

    /// Feeds a reading (`nil`: RSS, read now) with this process's busy count; returns `[action or nil, memory]`.
    /// RSS is read either way for the attribution. Watchers (the monitor) pass `restarting = false` and only
    /// move a serving process; the restart sequence passes `true` and gets the quiet -> stop -> kill steps.
    fn sample(
        ruby: &Ruby,
        rb_self: &Self,
        memory: Option<u64>,
        restarting: bool,
    ) -> Result<(Option<Symbol>, u64), Error> {
        let rss = read_rss()?;
        let memory = memory.unwrap_or(rss);
        let now = rb_self.now_ns();
        rb_self.remember(memory, now);
        let event = Event::Sample {
            memory,
            now_ms: now / 1_000_000,
            busy: rb_self.busy.load(Ordering::Acquire),
        };
        let mut state = rb_self.state();
        state.jobs.reading(rss, now);
        if !restarting && state.policy.phase() != Phase::Serving {
            return Ok((None, memory));
        }
        let action = state.policy.step(event);
        Ok((action_symbol(ruby, action), memory))
    }

    /// A reclaim (GC + purge) starts: reads RSS, closing the window; returns the reading.
    fn reclaim_started(&self) -> Result<u64, Error> {
        let rss = read_rss()?;
        let now = self.now_ns();
        self.state().jobs.reclaim_started(rss, now);
        Ok(rss)
    }

    /// The reclaim is over: reads the floor; what it gave back counts for no job. Returns the reading.
    fn reclaim_finished(&self) -> Result<u64, Error> {
        let rss = read_rss()?;
        let now = self.now_ns();
        self.remember(rss, now);
        self.state().jobs.reclaim_finished(rss, now);
        Ok(rss)
    }

    fn reclaimed(ruby: &Ruby, rb_self: &Self, memory: u64) -> Option<Symbol> {
        let now_ms = rb_self.now_ms();
        let action = rb_self
            .state()
            .policy
            .step(Event::Reclaimed { memory, now_ms });
        action_symbol(ruby, action)
    }

    fn slot_granted(ruby: &Ruby, rb_self: &Self) -> Option<Symbol> {
        let now_ms = rb_self.now_ms();
        let action = rb_self.state().policy.step(Event::SlotGranted { now_ms });
        action_symbol(ruby, action)
    }

    fn slot_denied(ruby: &Ruby, rb_self: &Self) -> Option<Symbol> {
        let now_ms = rb_self.now_ms();
        let action = rb_self.state().policy.step(Event::SlotDenied { now_ms });
        action_symbol(ruby, action)
    }

    /// Sidekiq's `:quiet` event: quiet took effect now.
    fn quieted(&self) {
        let now_ms = self.now_ms();
        self.state().policy.step(Event::Quieted { now_ms });
    }

    /// The reading the last reclaim, restart or restart-loop decision was made on (0: none yet).
    fn decision_memory(&self) -> u64 {
        self.state().policy.decision_memory()
    }

    /// `[before, after]` of the last reclaim, or nil.
    fn last_reclaim(&self) -> Option<(u64, u64)> {
        self.state()
            .policy
            .last_reclaim()
            .map(|r| (r.before, r.after))
    }

    /// Seconds since the guard was made (at Sidekiq's startup).
    fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn phase(&self) -> &'static str {
        self.state().policy.phase().as_str()
    }

    fn busy(&self) -> u32 {
        self.busy.load(Ordering::Acquire)
    }

    fn last_memory(&self) -> u64 {
        self.last_memory.load(Ordering::Acquire)
    }

    /// Every class with a finished job, ranked: `[[class, jobs, retained, growth, allocated], ...]`. The fit runs
    /// without the GVL and without the lock (on a copy), so jobs go on meanwhile.
    fn report(&self) -> Result<Vec<Row>, Error> {
        let snapshot = self.state().jobs.snapshot();
        let rows = nogvl("fitting the per-class memory figures", move || {
            snapshot.report()
        })?;
        Ok(rows
            .into_iter()
            .map(|r| (r.class, r.jobs, r.retained, r.growth, r.allocated))
            .collect())
    }

    /// The jobs running now, longest first: `[[class, jid, seconds running], ...]`.
    fn in_flight(&self) -> Vec<(String, String, f64)> {
        let now = self.now_ns();
        self.state()
            .jobs
            .in_flight(now)
            .into_iter()
            .map(|j| (j.class, j.jid, j.running_ns as f64 / 1e9))
            .collect()
    }

    fn reset_report(&self) {
        self.state().jobs.clear();
    }
}
