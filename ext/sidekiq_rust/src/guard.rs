//! `SidekiqRust::Native::Guard`: the process-wide guard state. It owns the pure policy state machine and the
//! per-job-class attribution, reads the guard's metric itself, and returns each action the Ruby side must carry
//! out as a Symbol of the one table in `sidekiq_rust_core::policy::ACTIONS`; Ruby reports the outcome back.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use magnus::r_hash::ForEach;
use magnus::{
    function, method, prelude::*, Error, Float, Integer, RArray, RHash, RModule, RString, Ruby,
    Symbol, Value,
};
use sidekiq_rust_core::attribution::Attribution;
use sidekiq_rust_core::policy::{Action, Denial, Event, Phase, Policy};
use sidekiq_rust_core::settings::{self, guard_settings, Metric};

use crate::allocator::{in_use_bytes, purge, thread_allocated};
use crate::errors::{error, io_error, Kind};
use crate::memory::{self_cgroup_usage, self_rss_bytes, smaps_totals};
use crate::named::Named;
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
    metric: Metric,
    started: Instant,
    busy: AtomicU32,
    /// Jobs finished since the guard was made.
    done: AtomicU64,
    /// The last memory pressure given, hundredths of a percent.
    pressure: AtomicU32,
    last_memory: AtomicU64,
    /// When RSS was last read, ns since `started` (0: never).
    last_read_ns: AtomicU64,
}

pub fn init(ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    let class = native.define_class("Guard", ruby.class_object())?;
    class.define_singleton_method("new", function!(Guard::new, 1))?;
    class.define_singleton_method("actions", function!(actions, 0))?;
    class.define_method("job_started", method!(Guard::job_started, 2))?;
    class.define_method("job_finished", method!(Guard::job_finished, 1))?;
    class.define_method("sample", method!(Guard::sample, 1))?;
    class.define_method("reclaim", method!(Guard::reclaim, 1))?;
    class.define_method("slot_granted", method!(Guard::slot_granted, 0))?;
    class.define_method("slot_denied", method!(Guard::slot_denied, 1))?;
    class.define_method("quieted", method!(Guard::quieted, 0))?;
    class.define_method("quarantined", method!(Guard::quarantined, 0))?;
    class.define_method("pressure=", method!(Guard::set_pressure, 1))?;
    class.define_method("pressure", method!(Guard::pressure, 0))?;
    class.define_method("pressured?", method!(Guard::pressured, 0))?;
    class.define_method("decision_memory", method!(Guard::decision_memory, 0))?;
    class.define_method("last_reclaim", method!(Guard::last_reclaim, 0))?;
    class.define_method("last_denial", method!(Guard::last_denial, 0))?;
    class.define_method("uptime", method!(Guard::uptime, 0))?;
    class.define_method("phase", method!(Guard::phase, 0))?;
    class.define_method("busy", method!(Guard::busy, 0))?;
    class.define_method("done", method!(Guard::done, 0))?;
    class.define_method("window", method!(Guard::window, 0))?;
    class.define_method("paused?", method!(Guard::paused, 0))?;
    class.define_method("paused_seconds", method!(Guard::paused_seconds, 0))?;
    class.define_method("last_memory", method!(Guard::last_memory, 0))?;
    class.define_method("report", method!(Guard::report, 0))?;
    class.define_method("in_flight", method!(Guard::in_flight, 0))?;
    class.define_method("reset_report", method!(Guard::reset_report, 0))?;
    Ok(())
}

/// Every action name the guard can return (`Native::Guard.actions`), for the Ruby side's checks.
fn actions(ruby: &Ruby) -> Result<RArray, Error> {
    guarded("listing the actions", || {
        let names = sidekiq_rust_core::policy::ACTIONS
            .iter()
            .map(|(_, name)| *name)
            .chain(["widen"]);
        Ok(ruby.ary_from_iter(names.map(|name| ruby.to_symbol(name))))
    })
}

fn action_symbol(ruby: &Ruby, action: Action) -> Option<Symbol> {
    action.name().map(|name| ruby.to_symbol(name))
}

fn read_rss() -> Result<u64, Error> {
    self_rss_bytes().map_err(|e| io_error(&e, "/proc/self/statm", None))
}

/// Runs the guard's bookkeeping so that a panic in it becomes a `SidekiqRust::Error` (which the Ruby side
/// rescues and logs), never an unwind into a job's thread nor Ruby `fatal`. Every method of `Native::Guard`
/// runs its body through it.
fn guarded<T>(what: &str, func: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(func)).unwrap_or_else(|_| {
        Err(error(
            Kind::Error,
            format!("{what} failed inside the native extension (a bug: please report it)"),
        ))
    })
}

/// A Ruby value of the settings Hash, as the pure settings check takes it.
fn setting_value(ruby: &Ruby, value: Value) -> Result<settings::Value, Error> {
    if value.is_nil() {
        Ok(settings::Value::Nil)
    } else if value.is_kind_of(ruby.class_true_class()) {
        Ok(settings::Value::Bool(true))
    } else if value.is_kind_of(ruby.class_false_class()) {
        Ok(settings::Value::Bool(false))
    } else if let Some(i) = Integer::from_value(value) {
        i.to_i64()
            .map(settings::Value::Int)
            .map_err(|_| error(Kind::ConfigurationError, format!("{i} is too large")))
    } else if let Some(f) = Float::from_value(value) {
        Ok(settings::Value::Float(f.to_f64()))
    } else if let Some(s) = Symbol::from_value(value) {
        Ok(settings::Value::Name(s.name()?.into_owned()))
    } else if let Some(s) = RString::from_value(value) {
        Ok(settings::Value::Name(s.to_string()?))
    } else {
        Ok(settings::Value::Name(format!(
            "<{}>",
            value.class().inspect()
        )))
    }
}

fn key_name(key: Value) -> Result<String, Error> {
    if let Some(s) = Symbol::from_value(key) {
        return Ok(s.name()?.into_owned());
    }
    if let Some(s) = RString::from_value(key) {
        return s.to_string();
    }
    Err(error(
        Kind::ConfigurationError,
        format!(
            "the native guard's settings take Symbol keys, got {}",
            key.inspect()
        ),
    ))
}

/// A denial reason of the policy's table, from its Symbol.
fn denial(reason: Symbol) -> Result<Denial, Error> {
    let name = reason.name()?;
    Denial::from_name(&name).ok_or_else(|| {
        let known: Vec<&str> = Denial::ALL.iter().map(|d| d.as_str()).collect();
        error(
            Kind::InvalidArgument,
            format!(
                "unknown denial reason :{name} (one of :{})",
                known.join(", :")
            ),
        )
    })
}

impl Guard {
    /// `Guard.new({max_rss:, kill_after:, ...})`: bytes and seconds, checked by
    /// `sidekiq_rust_core::settings` (unknown keys rejected). Ruby resolves the user's configuration first.
    fn new(ruby: &Ruby, options: RHash) -> Result<Guard, Error> {
        guarded("making the guard", || Self::build(ruby, options))
    }

    fn build(ruby: &Ruby, options: RHash) -> Result<Guard, Error> {
        let mut pairs = Vec::new();
        options.foreach(|key: Value, value: Value| {
            pairs.push((key_name(key)?, setting_value(ruby, value)?));
            Ok(ForEach::Continue)
        })?;
        let settings = guard_settings(&pairs).map_err(|e| error(Kind::ConfigurationError, e))?;
        let guard = Guard {
            state: Mutex::new(State {
                policy: Policy::new(settings.limits),
                jobs: Attribution::new(),
            }),
            metric: settings.metric,
            started: Instant::now(),
            busy: AtomicU32::new(0),
            done: AtomicU64::new(0),
            pressure: AtomicU32::new(0),
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

    /// The guard's metric, given this moment's RSS.
    fn read_metric(&self, rss: u64) -> Result<u64, Error> {
        match self.metric {
            Metric::Rss => Ok(rss),
            Metric::Pss => Ok(smaps_totals(None)?.pss),
            Metric::Cgroup => self_cgroup_usage(),
        }
    }

    fn sample_event(&self, memory: u64, now_ns: u64) -> Event {
        Event::Sample {
            memory,
            now_ms: now_ns / 1_000_000,
            busy: self.busy.load(Ordering::Acquire),
            done: self.done.load(Ordering::Acquire),
        }
    }

    /// Counts a job in (no system call); returns its token for `job_finished`.
    fn job_started(&self, class: RString, jid: RString) -> Result<u64, Error> {
        guarded("counting a job in", || {
            self.busy.fetch_add(1, Ordering::AcqRel);
            // SAFETY: the borrowed bytes are used before any call back into Ruby (a lossy copy only when they
            // are not UTF-8).
            let (class, jid) = unsafe { (class.as_slice(), jid.as_slice()) };
            let (class, jid) = (String::from_utf8_lossy(class), String::from_utf8_lossy(jid));
            let allocated = thread_allocated();
            let now = self.now_ns();
            Ok(self.state().jobs.job_started(&class, &jid, now, allocated))
        })
    }

    /// Counts a job out. Reads RSS only when the last reading is older than READ_EVERY_NS, and then (when the
    /// guard's metric is RSS) feeds it to the policy. Returns the action to take, or nil.
    fn job_finished(ruby: &Ruby, rb_self: &Self, token: u64) -> Result<Option<Symbol>, Error> {
        let action = guarded("counting a job out", || {
            let allocated = thread_allocated();
            let _ = rb_self
                .busy
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1));
            rb_self.done.fetch_add(1, Ordering::AcqRel);
            let now = rb_self.now_ns();
            let due =
                now.saturating_sub(rb_self.last_read_ns.load(Ordering::Acquire)) >= READ_EVERY_NS;
            let rss = if due { Some(read_rss()?) } else { None };
            let mut state = rb_self.state();
            state.jobs.job_finished(token, now, allocated);
            let Some(rss) = rss else {
                return Ok(Action::None);
            };
            rb_self.remember(rss, now);
            state.jobs.reading(rss, now);
            if rb_self.metric != Metric::Rss || state.policy.phase() != Phase::Serving {
                return Ok(Action::None);
            }
            Ok(state.policy.step(rb_self.sample_event(rss, now)))
        })?;
        Ok(action_symbol(ruby, action))
    }

    /// Reads the metric (RSS is read either way, for the attribution) with this process's busy count; returns
    /// `{action: Symbol or nil, memory:}`. Watchers (the monitor) pass `restarting = false` and only move a serving
    /// process; the restart sequence passes `true` and gets the quiet -> stop -> kill steps.
    fn sample(ruby: &Ruby, rb_self: &Self, restarting: bool) -> Result<RHash, Error> {
        guarded("taking a reading", || rb_self.take_sample(ruby, restarting))
    }

    fn take_sample(&self, ruby: &Ruby, restarting: bool) -> Result<RHash, Error> {
        let rss = read_rss()?;
        let memory = self.read_metric(rss)?;
        let now = self.now_ns();
        self.remember(memory, now);
        let event = self.sample_event(memory, now);
        let action = guarded("deciding on a reading", || {
            let mut state = self.state();
            state.jobs.reading(rss, now);
            if !restarting && state.policy.phase() != Phase::Serving {
                return Ok(Action::None);
            }
            Ok(state.policy.step(event))
        })?;
        Named::new(ruby)
            .with("action", action_symbol(ruby, action))
            .with("memory", memory)
            .hash()
    }

    /// A reclaim: the metric, then `GC.start` and the allocator purge (without the GVL), then the metric again;
    /// what it gave back counts for no job. With `decide = true` (a reclaim the policy asked for) the outcome
    /// goes to the policy. Returns `{action:, before:, after:, purged:, measured:, purge_error:}`: the policy's
    /// next action (a Symbol or nil), the metric before and after, whether the allocator gave memory back (false
    /// when it cannot purge), whether its floor closed a window of the per-class retained figure (false when a
    /// job had just started, see `Attribution::reclaim_finished`), and what went wrong in the purge (a String
    /// saying why there was none or what part failed; nil: nothing).
    fn reclaim(ruby: &Ruby, rb_self: &Self, decide: bool) -> Result<RHash, Error> {
        guarded("reclaiming", || rb_self.run_reclaim(ruby, decide))
    }

    fn run_reclaim(&self, ruby: &Ruby, decide: bool) -> Result<RHash, Error> {
        let rss = read_rss()?;
        let before = self.read_metric(rss)?;
        self.state().jobs.reclaim_started(rss, self.now_ns());
        ruby.gc_start();
        let (purged, purge_error) = match purge() {
            Ok(p) => (p.outcome.purged, p.outcome.error),
            Err(failed) => (false, Some(failed.message)),
        };
        let rss = read_rss()?;
        let after = self.read_metric(rss)?;
        // The attribution's floors are all one kind of reading: the allocator's bytes in use, or RSS. Read after
        // the purge: the jobs that started before the GC have run on during it (with the GVL read right after
        // the GC, one that had just started had not allocated yet). It is read without the GVL, and the jobs
        // that start meanwhile are told apart by when they started.
        let read_from = self.now_ns();
        let (in_use, read_at) = in_use_bytes()?;
        let read = (
            read_from,
            read_at.saturating_duration_since(self.started).as_nanos() as u64,
        );
        let floor = in_use.unwrap_or(rss);
        let now = self.now_ns();
        self.remember(after, now);
        let (action, measured) = guarded("deciding on a reclaim", || {
            let mut state = self.state();
            let measured = state.jobs.reclaim_finished(rss, floor, now, read);
            if !decide {
                return Ok((Action::None, measured));
            }
            let action = state.policy.step(Event::Reclaimed {
                memory: after,
                now_ms: now / 1_000_000,
            });
            Ok((action, measured))
        })?;
        Named::new(ruby)
            .with("action", action_symbol(ruby, action))
            .with("before", before)
            .with("after", after)
            .with("purged", purged)
            .with("measured", measured)
            .with("purge_error", purge_error)
            .hash()
    }

    /// Gives the policy the event `event` makes of this moment (ms since the guard was made).
    fn step(
        ruby: &Ruby,
        rb_self: &Self,
        event: impl FnOnce(u64) -> Event,
    ) -> Result<Option<Symbol>, Error> {
        let action = guarded("deciding", || {
            let event = event(rb_self.now_ms());
            Ok(rb_self.state().policy.step(event))
        })?;
        Ok(action_symbol(ruby, action))
    }

    fn slot_granted(ruby: &Ruby, rb_self: &Self) -> Result<Option<Symbol>, Error> {
        Self::step(ruby, rb_self, |now_ms| Event::SlotGranted { now_ms })
    }

    /// The restart slot was refused: `reason` is one of :dry_run, :embedded, :no_slot, :sole_process,
    /// :redis_unavailable.
    fn slot_denied(ruby: &Ruby, rb_self: &Self, reason: Symbol) -> Result<Option<Symbol>, Error> {
        let reason = guarded("reading a denial", || denial(reason))?;
        Self::step(ruby, rb_self, |now_ms| Event::SlotDenied { reason, now_ms })
    }

    /// Sidekiq's `:quiet` event: quiet took effect now.
    fn quieted(ruby: &Ruby, rb_self: &Self) -> Result<Option<Symbol>, Error> {
        Self::step(ruby, rb_self, |now_ms| Event::Quieted { now_ms })
    }

    /// The quarantine the policy asked for is done; returns the stop.
    fn quarantined(ruby: &Ruby, rb_self: &Self) -> Result<Option<Symbol>, Error> {
        Self::step(ruby, rb_self, |now_ms| Event::Quarantined { now_ms })
    }

    /// The memory pressure now (PSI "some" avg10, percent; nil: unknown, counted as none), for the brake.
    fn set_pressure(&self, percent: Option<f64>) -> Result<(), Error> {
        guarded("setting the memory pressure", || {
            let hundredths = percent
                .filter(|p| p.is_finite() && *p > 0.0)
                .map_or(0, |p| (p.min(100.0) * 100.0).round() as u32);
            self.pressure.store(hundredths, Ordering::Release);
            self.state().policy.step(Event::Pressure { hundredths });
            Ok(())
        })
    }

    /// The last pressure given (percent).
    fn pressure(&self) -> Result<f64, Error> {
        guarded("reading the memory pressure", || {
            Ok(f64::from(self.pressure.load(Ordering::Acquire)) / 100.0)
        })
    }

    /// Whether the pressure is at the brake's `brake_pressure`.
    fn pressured(&self) -> Result<bool, Error> {
        guarded("reading the brake's pressure", || {
            Ok(self.state().policy.pressured())
        })
    }

    /// The reading the last reclaim, restart or restart-loop decision was made on (0: none yet).
    fn decision_memory(&self) -> Result<u64, Error> {
        guarded("reading the decision's memory", || {
            Ok(self.state().policy.decision_memory())
        })
    }

    /// `{before:, after:}` of the last reclaim the policy asked for, or nil.
    fn last_reclaim(ruby: &Ruby, rb_self: &Self) -> Result<Option<RHash>, Error> {
        guarded("reading the last reclaim", || {
            let last = rb_self.state().policy.last_reclaim();
            last.map(|r| {
                Named::new(ruby)
                    .with("before", r.before)
                    .with("after", r.after)
                    .hash()
            })
            .transpose()
        })
    }

    /// Why the last restart was refused (a Symbol), nil when the last request got its slot.
    fn last_denial(ruby: &Ruby, rb_self: &Self) -> Result<Option<Symbol>, Error> {
        guarded("reading the last denial", || {
            let last = rb_self.state().policy.last_denial();
            Ok(last.map(|d| ruby.to_symbol(d.as_str())))
        })
    }

    /// Seconds since the guard was made (at Sidekiq's startup).
    fn uptime(&self) -> Result<f64, Error> {
        guarded("reading the uptime", || {
            Ok(self.started.elapsed().as_secs_f64())
        })
    }

    fn phase(&self) -> Result<&'static str, Error> {
        guarded("reading the phase", || {
            Ok(self.state().policy.phase().as_str())
        })
    }

    fn busy(&self) -> Result<u32, Error> {
        guarded("reading the jobs running", || {
            Ok(self.busy.load(Ordering::Acquire))
        })
    }

    fn done(&self) -> Result<u64, Error> {
        guarded("reading the jobs done", || {
            Ok(self.done.load(Ordering::Acquire))
        })
    }

    /// How many job threads may fetch now (the brake's window; 0 without a brake).
    fn window(&self) -> Result<u32, Error> {
        guarded("reading the brake's window", || {
            Ok(self.state().policy.window())
        })
    }

    fn paused(&self) -> Result<bool, Error> {
        guarded("reading the brake", || Ok(self.state().policy.paused()))
    }

    /// Seconds the brake held fetching, over the process's life.
    fn paused_seconds(&self) -> Result<f64, Error> {
        guarded("reading the brake's time", || {
            let now_ms = self.now_ms();
            Ok(self.state().policy.paused_ms(now_ms) as f64 / 1000.0)
        })
    }

    fn last_memory(&self) -> Result<u64, Error> {
        guarded("reading the last memory figure", || {
            Ok(self.last_memory.load(Ordering::Acquire))
        })
    }

    /// Every class with a finished job, ranked: `[{class:, jobs:, retained_per_job:, growth_per_job:,
    /// allocated_per_job:, retained_error:, windows:}, ...]`, bytes (nil: unknown); `retained_error` is the
    /// standard error of retained_per_job, `windows` the retained windows the class's jobs started in. The fit
    /// runs without the GVL and without the lock (on a copy), so jobs go on meanwhile.
    fn report(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guarded("reporting the per-class figures", || rb_self.rows(ruby))
    }

    fn rows(&self, ruby: &Ruby) -> Result<RArray, Error> {
        let snapshot = self.state().jobs.snapshot();
        let rows = nogvl("fitting the per-class memory figures", move || {
            snapshot.report()
        })?;
        let answer = ruby.ary_new_capa(rows.len());
        for r in rows {
            let row = Named::new(ruby)
                .with("class", r.class)
                .with("jobs", r.jobs)
                .with("retained_per_job", r.retained)
                .with("growth_per_job", r.growth)
                .with("allocated_per_job", r.allocated)
                .with("retained_error", r.retained_error)
                .with("windows", r.windows)
                .hash()?;
            answer.push(row)?;
        }
        Ok(answer)
    }

    /// The jobs running now, longest first: `[{class:, jid:, running_s:}, ...]` (seconds running).
    fn in_flight(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guarded("listing the jobs in flight", || {
            let now = rb_self.now_ns();
            let jobs = rb_self.state().jobs.in_flight(now);
            let answer = ruby.ary_new_capa(jobs.len());
            for j in jobs {
                let job = Named::new(ruby)
                    .with("class", j.class)
                    .with("jid", j.jid)
                    .with("running_s", j.running_ns as f64 / 1e9)
                    .hash()?;
                answer.push(job)?;
            }
            Ok(answer)
        })
    }

    fn reset_report(&self) -> Result<(), Error> {
        guarded("clearing the per-class figures", || {
            self.state().jobs.clear();
            Ok(())
        })
    }
}
