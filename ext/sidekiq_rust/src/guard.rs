//! `SidekiqRust::Native::Guard`: the process-wide guard state. It owns the pure policy state machine and the
//! per-job-class statistics; the Ruby side feeds it readings and carries out the actions it returns.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use magnus::{function, method, prelude::*, Error, RModule, RString, Ruby, Symbol};
use sidekiq_rust_core::jobstats::JobStats;
use sidekiq_rust_core::policy::{Action, Event, Limits, Phase, Policy, Reason, StopCause};

use crate::errors::{error, io_error, Kind};
use crate::memory::self_rss_bytes;

struct State {
    policy: Policy,
    jobs: JobStats,
}

#[magnus::wrap(class = "SidekiqRust::Native::Guard", free_immediately, size)]
pub struct Guard {
    state: Mutex<State>,
    started: Instant,
    busy: AtomicU32,
    last_memory: AtomicU64,
}

pub fn init(ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    let class = native.define_class("Guard", ruby.class_object())?;
    class.define_singleton_method("new", function!(Guard::new, 11))?;
    class.define_method("job_started", method!(Guard::job_started, 0))?;
    class.define_method("job_finished", method!(Guard::job_finished, 3))?;
    class.define_method("sample", method!(Guard::sample, 2))?;
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
    class.define_method("report", method!(Guard::report, 1))?;
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
        Ok(Guard {
            state: Mutex::new(State {
                policy: Policy::new(limits),
                jobs: JobStats::new(),
            }),
            started: Instant::now(),
            busy: AtomicU32::new(0),
            last_memory: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a job in and returns the last memory reading, the baseline of its growth (no system call).
    fn job_started(&self) -> u64 {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.last_memory.load(Ordering::Acquire)
    }

    /// Counts a job out: one RSS read, the growth since `start` recorded for `class`, and (when the guard's
    /// metric is RSS) the reading fed to the policy. Returns the action to take, or nil.
    fn job_finished(
        ruby: &Ruby,
        rb_self: &Self,
        class: RString,
        start: u64,
        feed_policy: bool,
    ) -> Result<Option<Symbol>, Error> {
        let _ = rb_self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1));
        let rss = read_rss()?;
        rb_self.last_memory.store(rss, Ordering::Release);
        let busy = rb_self.busy.load(Ordering::Acquire);
        let now_ms = rb_self.now_ms();
        let mut state = rb_self.state();
        if start > 0 {
            let growth = rss as i64 - start as i64;
            // SAFETY: the borrowed text is used before any call back into Ruby.
            match unsafe { class.as_str() } {
                Ok(name) => state.jobs.record(name, growth),
                Err(_) => match class.to_string() {
                    Ok(name) => state.jobs.record(&name, growth),
                    Err(_) => state.jobs.record("(unreadable class name)", growth),
                },
            }
        }
        if !feed_policy || state.policy.phase() != Phase::Serving {
            return Ok(None);
        }
        let action = state.policy.step(Event::Sample {
            memory: rss,
            now_ms,
            busy,
        });
        Ok(action_symbol(ruby, action))
    }

    /// Feeds a reading (`nil`: read RSS now) with this process's busy count; returns `[action or nil, memory]`.
    /// Watchers (the monitor) pass `restarting = false` and only move a serving process; the restart sequence
    /// passes `true` and gets the quiet -> stop -> kill steps.
    fn sample(
        ruby: &Ruby,
        rb_self: &Self,
        memory: Option<u64>,
        restarting: bool,
    ) -> Result<(Option<Symbol>, u64), Error> {
        let memory = match memory {
            Some(m) => m,
            None => read_rss()?,
        };
        rb_self.last_memory.store(memory, Ordering::Release);
        let event = Event::Sample {
            memory,
            now_ms: rb_self.now_ms(),
            busy: rb_self.busy.load(Ordering::Acquire),
        };
        let mut state = rb_self.state();
        if !restarting && state.policy.phase() != Phase::Serving {
            return Ok((None, memory));
        }
        let action = state.policy.step(event);
        Ok((action_symbol(ruby, action), memory))
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

    /// The `n` job classes that grew memory the most: `[[class, count, total_growth, max_growth], ...]`.
    fn report(&self, n: usize) -> Vec<(String, u64, i64, i64)> {
        self.state()
            .jobs
            .top(n)
            .into_iter()
            .map(|(class, s)| (class, s.count, s.total_growth, s.max_growth))
            .collect()
    }

    fn reset_report(&self) {
        self.state().jobs.clear();
    }
}
