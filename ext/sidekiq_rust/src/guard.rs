//! `SidekiqRust::Native::Guard`: the process-wide guard. Every decision is the core's `GuardCore` (policy,
//! attribution, counters, read gate, routing); this file reads the clock and memory, calls it under one lock,
//! and converts its answers: each action as a Symbol of the one table in `sidekiq_rust_core::policy::ACTIONS`,
//! every answer of more than one figure as a Hash with Symbol keys. Ruby carries out the action and reports the
//! outcome. Every method runs through `guarded`: a panic is a `SidekiqRust::Error`, never Ruby `fatal`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use magnus::{function, method, prelude::*, Error, RArray, RHash, RModule, RString, Ruby, Symbol};
use sidekiq_rust_core::admission::{job_facts, Decision, Say, Window};
use sidekiq_rust_core::guard::GuardCore;
use sidekiq_rust_core::policy::{Bounds, Denial, Event, ACTIONS};
use sidekiq_rust_core::settings::{guard_settings, Metric};

use crate::allocator::thread_allocated;
use crate::cgroup::self_limit;
use crate::convert::{action_symbol, settings_pairs};
use crate::errors::{error, io_error, Kind};
use crate::memory::{
    peak_rss, reset_self_peak_rss, self_cgroup_usage, self_rss_bytes, smaps_totals,
};
use crate::named::Named;
use crate::nogvl::nogvl;
use crate::symbol_enum::{from_symbol, symbol};

#[magnus::wrap(class = "SidekiqRust::Native::Guard", free_immediately, size)]
pub struct Guard {
    core: Mutex<GuardCore>,
    metric: Metric,
    started: Instant,
}

pub fn init(ruby: &Ruby, native: &RModule) -> Result<(), Error> {
    let class = native.define_class("Guard", ruby.class_object())?;
    class.define_singleton_method("new", function!(Guard::new, 1))?;
    class.define_singleton_method("actions", function!(actions, 0))?;
    class.define_method("job_started", method!(Guard::job_started, 2))?;
    class.define_method("admission?", method!(Guard::admission, 0))?;
    class.define_method("admit", method!(Guard::admit, 1))?;
    class.define_method("admission_classes", method!(Guard::admission_classes, 0))?;
    class.define_method("admission_notes", method!(Guard::admission_notes, 0))?;
    class.define_method("job_finished", method!(Guard::job_finished, 1))?;
    class.define_method("sample", method!(Guard::sample, 1))?;
    class.define_method("reclaim", method!(Guard::reclaim, 1))?;
    class.define_method("measure_due?", method!(Guard::measure_due, 1))?;
    class.define_method("restart_request", method!(Guard::restart_request, 0))?;
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
    class.define_method("brake?", method!(Guard::brake, 0))?;
    class.define_method("window", method!(Guard::window, 0))?;
    class.define_method("paused?", method!(Guard::paused, 0))?;
    class.define_method("paused_seconds", method!(Guard::paused_seconds, 0))?;
    class.define_method("last_memory", method!(Guard::last_memory, 0))?;
    class.define_method("limits", method!(Guard::limits, 0))?;
    class.define_method("report", method!(Guard::report, 0))?;
    class.define_method("in_flight", method!(Guard::in_flight, 0))?;
    class.define_method("reset_report", method!(Guard::reset_report, 0))?;
    Ok(())
}

/// Every action name the guard can return (`Native::Guard.actions`), for the executor's check at boot.
fn actions(ruby: &Ruby) -> Result<RArray, Error> {
    guarded("listing the actions", || {
        Ok(ruby.ary_from_iter(ACTIONS.iter().map(|(_, name)| ruby.to_symbol(name))))
    })
}

pub fn read_rss() -> Result<u64, Error> {
    self_rss_bytes().map_err(|e| io_error(&e, "/proc/self/statm", None))
}

/// Runs the guard's bookkeeping so that a panic in it becomes a `SidekiqRust::Error` (which the Ruby side
/// rescues and logs), never an unwind into a job's thread nor Ruby `fatal`. Every method of `Native::Guard`
/// runs its body through it.
pub fn guarded<T>(what: &str, func: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(func)).unwrap_or_else(|_| {
        Err(error(
            Kind::Error,
            format!("{what} failed inside the native extension (a bug: please report it)"),
        ))
    })
}

impl Guard {
    /// `Guard.new({max_rss:, kill_after:, ...})`: every key `sidekiq_rust_core::settings::KEYS` lists (it keeps
    /// no defaults), checked there. Ruby resolves the user's configuration first (`SidekiqRust::OPTIONS`).
    fn new(ruby: &Ruby, options: RHash) -> Result<Guard, Error> {
        guarded("making the guard", || {
            let pairs = settings_pairs(ruby, options)?;
            let settings =
                guard_settings(&pairs).map_err(|e| error(Kind::ConfigurationError, e))?;
            let started = Instant::now();
            let rss = read_rss()?;
            let now = started.elapsed().as_nanos() as u64;
            Ok(Guard {
                core: Mutex::new(GuardCore::new(settings, rss, now)),
                metric: settings.metric,
                started,
            })
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn core(&self) -> MutexGuard<'_, GuardCore> {
        // A poisoned lock only means a panic elsewhere; the state itself stays consistent.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The guard's metric, given this moment's RSS.
    pub fn read_metric(&self, rss: u64) -> Result<u64, Error> {
        match self.metric {
            Metric::Rss => Ok(rss),
            Metric::Pss => Ok(smaps_totals(None)?.pss),
            Metric::Cgroup => self_cgroup_usage(),
        }
    }

    /// Counts a job in (no system call, but where admission opens a clean window for it: the peak RSS reset and
    /// RSS read); returns its token for `job_finished`.
    fn job_started(&self, class: RString, jid: RString) -> Result<u64, Error> {
        guarded("counting a job in", || {
            // SAFETY: the borrowed bytes are used before any call back into Ruby (a lossy copy only when they
            // are not UTF-8).
            let (class, jid) = unsafe { (class.as_slice(), jid.as_slice()) };
            let (class, jid) = (String::from_utf8_lossy(class), String::from_utf8_lossy(jid));
            let allocated = thread_allocated();
            let now = self.now_ns();
            let start = self.core().job_started(&class, &jid, now, allocated);
            if start.window {
                let peak_reset = reset_self_peak_rss().is_ok();
                let rss = read_rss()?;
                self.core().window_opened(start.token, rss, peak_reset);
            }
            Ok(start.token)
        })
    }

    /// Counts a job out; when the core's read gate says a reading is due, reads RSS (outside the lock) and hands
    /// it back; when the job closed a clean window, reads its peak for the class's working set. Returns the
    /// action to take, or nil.
    fn job_finished(ruby: &Ruby, rb_self: &Self, token: u64) -> Result<Option<Symbol>, Error> {
        let action = guarded("counting a job out", || {
            let allocated = thread_allocated();
            let now = rb_self.now_ns();
            let end = rb_self.core().job_finished(token, now, allocated);
            if let Some(window) = end.window {
                rb_self.learn(&window)?;
            }
            if !end.read {
                return Ok(None);
            }
            let rss = read_rss()?;
            Ok(Some(rb_self.core().job_reading(rss, rb_self.now_ns())))
        })?;
        Ok(action.and_then(|a| action_symbol(ruby, a)))
    }

    /// The peak over a clean window (VmHWM; RSS now where the peak could not be reset), to the class's figure.
    fn learn(&self, window: &Window) -> Result<(), Error> {
        let peak = if window.peak_reset {
            peak_rss(None)?
        } else {
            read_rss()?
        };
        self.core().learned(window, peak);
        Ok(())
    }

    fn admission(&self) -> Result<bool, Error> {
        guarded("reading whether admission is on", || {
            Ok(self.core().admission())
        })
    }

    /// Admission's decision for a fetched job's payload (Sidekiq's JSON): `{decision: :start | :probe | :alone
    /// | :hold | :reclaim (run a reclaim, then ask again for the same job), hold: (why it waits: :no_room |
    /// :unmeasured | :too_big | :exclusive, or nil), class:, need: (bytes, nil: not measured), projected:,
    /// bound:, say: (nil, or {say: :too_big, need:, room:} | {say: :bad_declared, value:})}`; nil when the job
    /// starts with nothing to tell: admission is off, the payload is not a job's, or the decision is :start with
    /// nothing to say (most jobs: no Hash built). RSS is read again when the last reading is older than the
    /// guard's read gate.
    fn admit(ruby: &Ruby, rb_self: &Self, payload: RString) -> Result<Option<RHash>, Error> {
        guarded("admitting a job", || {
            if !rb_self.core().admission() {
                return Ok(None);
            }
            // SAFETY: the bytes are read before any call back into Ruby.
            let Some(facts) = job_facts(unsafe { payload.as_slice() }) else {
                return Ok(None);
            };
            let now = rb_self.now_ns();
            let rss = if rb_self.core().admission_reads(now) {
                Some(read_rss()?)
            } else {
                None
            };
            let answer = rb_self.core().admit(&facts, rss, now);
            if answer.decision == Decision::Start && answer.say.is_none() {
                return Ok(None);
            }
            let say = answer.say.map(|say| say_hash(ruby, &say)).transpose()?;
            Named::new(ruby)
                .with("decision", symbol(ruby, answer.decision))
                .with("hold", answer.hold.map(|h| symbol(ruby, h)))
                .with("class", answer.class)
                .with("need", answer.need)
                .with("projected", answer.projected)
                .with("bound", answer.bound)
                .with("say", say)
                .hash()
                .map(Some)
        })
    }

    /// Every class admission has seen: `[{class:, working_set: (bytes: the declared figure, else the learned
    /// one; nil: neither), declared:, learned:, samples: (clean windows measured), deferred: (jobs sent back to
    /// wait)}]`, by name.
    fn admission_classes(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guarded("listing admission's classes", || {
            let rows = rb_self.core().admission_classes();
            let answer = ruby.ary_new_capa(rows.len());
            for r in rows {
                let row = Named::new(ruby)
                    .with("class", r.class)
                    .with("working_set", r.declared.or(r.learned))
                    .with("declared", r.declared)
                    .with("learned", r.learned)
                    .with("samples", r.samples)
                    .with("deferred", r.deferred)
                    .hash()?;
                answer.push(row)?;
            }
            Ok(answer)
        })
    }

    /// What admission learned that the log should say (each once): `[{class:, say: :mismatch, declared:,
    /// learned:}]`.
    fn admission_notes(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guarded("reading admission's notes", || {
            let notes = rb_self.core().take_notes();
            let answer = ruby.ary_new_capa(notes.len());
            for (class, say) in notes {
                let hash = say_hash(ruby, &say)?;
                hash.aset(ruby.to_symbol("class"), class)?;
                answer.push(hash)?;
            }
            Ok(answer)
        })
    }

    /// Reads the metric (and RSS, for the attribution); returns `{action: Symbol or nil, memory:, over: Hash or
    /// nil, moved: Hash or nil}`. Watchers (the monitor) pass `restarting = false`, and get in `over`, once per
    /// crossing of max_rss, what the guard will do about it (`{memory:, grace_left:, reclaim:, hard_max_rss:,
    /// needs_other_process:, restarts:}`, grace_left in seconds), and in `moved`, where limits are shares of the
    /// memory cgroup's limit and it changed, the limits before and now (`{was_limit:, limit:, was:, now:}`, each
    /// of the two as `limits` gives them); the restart sequence passes `true` and gets the quiet -> stop -> kill
    /// steps (the core decides which readings reach the policy).
    fn sample(ruby: &Ruby, rb_self: &Self, restarting: bool) -> Result<RHash, Error> {
        guarded("taking a reading", || {
            let rss = read_rss()?;
            let memory = rb_self.read_metric(rss)?;
            let limit = if !restarting && rb_self.core().follows_cgroup() {
                self_limit()?
            } else {
                None
            };
            let now_ns = rb_self.now_ns();
            // One lock: the limits move before the reading is judged by them.
            let (moved, action, over) = {
                let mut core = rb_self.core();
                let moved = core.cgroup_limit(limit);
                let action = core.reading(rss, memory, now_ns, restarting);
                let over = if restarting {
                    None
                } else {
                    core.take_over_soft(now_ns)
                };
                (moved, action, over)
            };
            let moved = moved
                .map(|m| {
                    Named::new(ruby)
                        .with("was_limit", m.was_limit)
                        .with("limit", m.limit)
                        .with("was", bounds_hash(ruby, m.was)?)
                        .with("now", bounds_hash(ruby, m.now)?)
                        .hash()
                })
                .transpose()?;
            let over = over
                .map(|o| {
                    Named::new(ruby)
                        .with("memory", o.memory)
                        .with("grace_left", o.grace_left_ms as f64 / 1000.0)
                        .with("reclaim", o.reclaim)
                        .with("hard_max_rss", o.hard)
                        .with("needs_other_process", o.needs_other_process)
                        .with("restarts", o.restarts)
                        .hash()
                })
                .transpose()?;
            Named::new(ruby)
                .with("action", action_symbol(ruby, action))
                .with("memory", memory)
                .with("over", over)
                .with("moved", moved)
                .hash()
        })
    }

    /// A reclaim (`crate::reclaim`): `{reason:, action:, verdict:, still_over:, before:, after:, purged:,
    /// purge_error:, measured:}`.
    fn reclaim(ruby: &Ruby, rb_self: &Self, decide: bool) -> Result<RHash, Error> {
        guarded("reclaiming", || {
            crate::reclaim::reclaim(ruby, rb_self, decide)
        })
    }

    /// Whether the monitor's measuring reclaim is due now (or, with `force`, may run: the process serves).
    fn measure_due(&self, force: bool) -> Result<bool, Error> {
        guarded("asking whether a measure is due", || {
            Ok(self.core().measure_due(self.now_ns(), force))
        })
    }

    /// What the restart the policy asks for needs: `{reason: :max_rss or :hard_max_rss, refusal: :dry_run,
    /// :embedded or nil, peers: :any, :serving or :serving_unless_alone}`; nil when it asks for none.
    fn restart_request(ruby: &Ruby, rb_self: &Self) -> Result<Option<RHash>, Error> {
        guarded("reading the restart request", || {
            let request = rb_self.core().restart_request();
            request
                .map(|r| {
                    Named::new(ruby)
                        .with("reason", symbol(ruby, r.reason))
                        .with("refusal", r.refusal.map(|d| symbol(ruby, d)))
                        .with("peers", symbol(ruby, r.peers))
                        .hash()
                })
                .transpose()
        })
    }

    /// Gives the core the event `event` makes of this moment (ms since the guard was made).
    fn step(
        ruby: &Ruby,
        rb_self: &Self,
        event: impl FnOnce(u64) -> Event,
    ) -> Result<Option<Symbol>, Error> {
        let action = guarded("deciding", || {
            let event = event(rb_self.now_ns() / 1_000_000);
            Ok(rb_self.core().step(event))
        })?;
        Ok(action_symbol(ruby, action))
    }

    fn slot_granted(ruby: &Ruby, rb_self: &Self) -> Result<Option<Symbol>, Error> {
        Self::step(ruby, rb_self, |now_ms| Event::SlotGranted { now_ms })
    }

    /// The restart slot was refused: `reason` is one of :dry_run, :embedded, :no_slot, :sole_process,
    /// :redis_unavailable.
    fn slot_denied(ruby: &Ruby, rb_self: &Self, reason: Symbol) -> Result<Option<Symbol>, Error> {
        let reason = guarded("reading a denial", || from_symbol::<Denial>(reason))?;
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

    /// The memory pressure now (PSI "some" avg10, percent; nil: unknown, counted as none); every reading after
    /// it carries it to the brake.
    fn set_pressure(&self, percent: Option<f64>) -> Result<(), Error> {
        guarded("setting the memory pressure", || {
            self.core().set_pressure(percent);
            Ok(())
        })
    }

    /// The last pressure given (percent).
    fn pressure(&self) -> Result<f64, Error> {
        guarded("reading the memory pressure", || Ok(self.core().pressure()))
    }

    /// Whether the pressure at the last reading was at the brake's `brake_pressure`.
    fn pressured(&self) -> Result<bool, Error> {
        guarded("reading the brake's pressure", || {
            Ok(self.core().pressured())
        })
    }

    /// The reading the last reclaim, restart or restart-loop decision was made on (0: none yet).
    fn decision_memory(&self) -> Result<u64, Error> {
        guarded("reading the decision's memory", || {
            Ok(self.core().decision_memory())
        })
    }

    /// `{before:, after:}` of the last reclaim the policy asked for, or nil.
    fn last_reclaim(ruby: &Ruby, rb_self: &Self) -> Result<Option<RHash>, Error> {
        guarded("reading the last reclaim", || {
            let last = rb_self.core().last_reclaim();
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
            let last = rb_self.core().last_denial();
            Ok(last.map(|d| symbol(ruby, d)))
        })
    }

    /// Seconds since the guard was made (at Sidekiq's startup).
    fn uptime(&self) -> Result<f64, Error> {
        guarded("reading the uptime", || {
            Ok(self.started.elapsed().as_secs_f64())
        })
    }

    fn phase(&self) -> Result<&'static str, Error> {
        guarded("reading the phase", || Ok(self.core().phase().as_str()))
    }

    fn busy(&self) -> Result<u32, Error> {
        guarded("reading the jobs running", || Ok(self.core().busy()))
    }

    fn done(&self) -> Result<u64, Error> {
        guarded("reading the jobs done", || Ok(self.core().done()))
    }

    /// Whether the brake is on (asked for, and the job threads known).
    fn brake(&self) -> Result<bool, Error> {
        guarded("reading whether the brake is on", || {
            Ok(self.core().brake())
        })
    }

    /// How many job threads may fetch now (the brake's window; 0 without a brake).
    fn window(&self) -> Result<u32, Error> {
        guarded("reading the brake's window", || Ok(self.core().window()))
    }

    fn paused(&self) -> Result<bool, Error> {
        guarded("reading the brake", || Ok(self.core().paused()))
    }

    /// Seconds the brake held fetching, over the process's life.
    fn paused_seconds(&self) -> Result<f64, Error> {
        guarded("reading the brake's time", || {
            Ok(self.core().paused_ms(self.now_ns()) as f64 / 1000.0)
        })
    }

    fn last_memory(&self) -> Result<u64, Error> {
        guarded("reading the last memory figure", || {
            Ok(self.core().last_memory())
        })
    }

    /// The memory bounds in force: `{max_rss:, hard_max_rss: (nil: none), brake_at:, resume_at: (bytes; nil
    /// without the brake)}`. They move with the memory cgroup's limit where given as shares of it.
    fn limits(ruby: &Ruby, rb_self: &Self) -> Result<RHash, Error> {
        guarded("reading the limits", || {
            let bounds = rb_self.core().bounds();
            bounds_hash(ruby, bounds)
        })
    }

    /// Every class with a finished job, ranked: `[{class:, jobs:, retained_per_job:, growth_per_job:,
    /// allocated_per_job:, retained_error:, windows:}, ...]`, bytes (nil: unknown); `retained_error` is the
    /// standard error of retained_per_job, `windows` the retained windows the class's jobs started in. The fit
    /// runs without the GVL and without the lock (on a copy), so jobs go on meanwhile.
    fn report(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guarded("reporting the per-class figures", || {
            let snapshot = rb_self.core().snapshot();
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
        })
    }

    /// The jobs running now, longest first: `[{class:, jid:, running_s:}, ...]` (seconds running).
    fn in_flight(ruby: &Ruby, rb_self: &Self) -> Result<RArray, Error> {
        guarded("listing the jobs in flight", || {
            let jobs = rb_self.core().in_flight(rb_self.now_ns());
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
            self.core().reset_report();
            Ok(())
        })
    }
}

/// What admission says, as a Hash whose `say:` names it.
fn say_hash(ruby: &Ruby, say: &Say) -> Result<RHash, Error> {
    match say {
        Say::TooBig { need, room } => Named::new(ruby)
            .with("say", ruby.to_symbol("too_big"))
            .with("need", *need)
            .with("room", *room)
            .hash(),
        Say::Mismatch { declared, learned } => Named::new(ruby)
            .with("say", ruby.to_symbol("mismatch"))
            .with("declared", *declared)
            .with("learned", *learned)
            .hash(),
        Say::BadDeclared(value) => Named::new(ruby)
            .with("say", ruby.to_symbol("bad_declared"))
            .with("value", value.as_str())
            .hash(),
    }
}

fn bounds_hash(ruby: &Ruby, bounds: Bounds) -> Result<RHash, Error> {
    Named::new(ruby)
        .with("max_rss", bounds.soft)
        .with("hard_max_rss", bounds.hard)
        .with("brake_at", bounds.brake.map(|(pause_at, _)| pause_at))
        .with("resume_at", bounds.brake.map(|(_, resume_at)| resume_at))
        .hash()
}
