//! `GuardCore`: the guard of one process, as pure state. It owns the policy, the per-class attribution, the job
//! counters and the read gate, and makes every routing decision between them: which readings reach the policy,
//! when a job's end reads memory, when a measuring reclaim is due, what a restart request needs (another
//! serving process, or no slot at all: a dry run, an embedded Sidekiq the guard cannot stop), and what a
//! reclaim concluded. The binding reads the clock and memory, calls it under one lock and converts its answers;
//! Ruby carries out the action and reports the outcome.
//!
//! Times are nanoseconds since the guard was made, given by the caller (the policy's clock is their
//! milliseconds), so the tests replay any timeline.

use crate::admission::{Admission, Admitted, ClassNeed, JobFacts, Say, Window};
use crate::attribution::{Attribution, InFlight, Snapshot};
use crate::names::Named;
use crate::policy::{
    Action, Bounds, Denial, Event, Phase, Policy, Reason, ReclaimResult, ResumeCause,
};
use crate::settings::{Follow, GuardSettings, Metric, RestartRules};

/// A job's end reads memory only when the last reading is older than this (a reading costs about a
/// microsecond, the rest of a job's bookkeeping a few tens of nanoseconds).
pub const READ_EVERY_NS: u64 = 20_000_000;

/// Measuring reclaims take at most 1/MEASURE_BUDGET of the process's time: the next one waits at least this
/// many times as long as the last reclaim took.
pub const MEASURE_BUDGET: u64 = 20;

/// After a floor that closed no window of the retained figure (a job started as it was read), the next
/// measuring reclaim comes after 1/REMEASURE_DIVISOR of measure_interval (the budget still holds).
pub const REMEASURE_DIVISOR: u64 = 10;

/// What one reclaim read: the guard's metric before and after, RSS and the floor (the allocator's bytes in use,
/// or RSS) after the purge, and when the floor was read (from, to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimReadings {
    pub before: u64,
    pub after: u64,
    pub rss: u64,
    pub floor: u64,
    pub read: (u64, u64),
    pub now_ns: u64,
}

/// What the policy concluded from a reclaim it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Under max_rss again: no restart.
    BackUnder,
    /// Still over max_rss but under the hard limit: the grace time runs on.
    UnderHard,
    /// Still over: the restart path goes on (the action says how).
    StillOver,
    /// Still over and little came back: a restart loop (warned once, no soft restart).
    Loop,
    /// The brake's reclaim brought memory below resume_at: fetching again.
    Resumed,
    /// The brake's reclaim left memory at brake_at with no job running: retained, not in flight; a restart is
    /// asked for (or, where none can be had, the brake lets go).
    Retained,
}

impl Named for Verdict {
    const WHAT: &'static str = "reclaim verdict";

    fn all() -> &'static [Verdict] {
        &[
            Verdict::BackUnder,
            Verdict::UnderHard,
            Verdict::StillOver,
            Verdict::Loop,
            Verdict::Resumed,
            Verdict::Retained,
        ]
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::BackUnder => "back_under",
            Verdict::UnderHard => "under_hard",
            Verdict::StillOver => "still_over",
            Verdict::Loop => "loop",
            Verdict::Resumed => "resumed",
            Verdict::Retained => "retained",
        }
    }
}

impl Verdict {
    /// Memory is still over the limit it was reclaimed for.
    pub fn still_over(self) -> bool {
        matches!(self, Verdict::StillOver | Verdict::Loop)
    }
}

/// Memory passed max_rss: the reading, how long the grace time still runs, and what follows it: a reclaim (when
/// on), then a restart request if still over, which needs another serving process (`require_other_process`) and
/// happens only where the guard may restart (not a dry run, not an embedded Sidekiq without its instance). The
/// hard limit, if any, acts at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverSoftNotice {
    pub memory: u64,
    pub grace_left_ms: u64,
    pub reclaim: bool,
    pub hard: Option<u64>,
    pub needs_other_process: bool,
    pub restarts: bool,
}

/// A reclaim's outcome: why the policy asked for it, its next action and its verdict (None for a measuring
/// reclaim, which the policy does not see), and whether its floor closed a window of the per-class retained
/// figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimOutcome {
    pub reason: Option<Reason>,
    pub action: Action,
    pub verdict: Option<Verdict>,
    pub measured: bool,
}

/// What a restart the policy asked for needs: `refusal` when no slot is to be asked for at all (the caller
/// reports it as the denial), else whether the slot needs another serving process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartRequest {
    pub reason: Reason,
    pub refusal: Option<Denial>,
    pub peers: Peers,
}

/// What a restart needs of the fleet's other processes before it may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// Nothing: the hard limit (the kernel's OOM killer would lose the running jobs), or `require_other_process`
    /// off.
    Any,
    /// Another serving process: the soft limit with `require_other_process`.
    Serving,
    /// Another serving process while any other is live; a process alone in the fleet restarts. Retained memory:
    /// paused, the process serves nothing, but it waits while its peers are all restarting or starting.
    ServingUnlessAlone,
}

impl Named for Peers {
    const WHAT: &'static str = "peers rule";

    fn all() -> &'static [Peers] {
        &[Peers::Any, Peers::Serving, Peers::ServingUnlessAlone]
    }

    fn as_str(self) -> &'static str {
        match self {
            Peers::Any => "any",
            Peers::Serving => "serving",
            Peers::ServingUnlessAlone => "serving_unless_alone",
        }
    }
}

/// The memory cgroup's limit changed under limits given as shares of it: the limit before and now, and the
/// bounds before and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundsMoved {
    pub was_limit: u64,
    pub limit: u64,
    pub was: Bounds,
    pub now: Bounds,
}

/// A job counted in: its token for `job_finished`, and whether the caller opens a clean window for it (resets
/// the kernel's peak RSS, reads RSS, and calls `window_opened`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStart {
    pub token: u64,
    pub window: bool,
}

/// A job counted out: whether the caller reads RSS now for `job_reading` (the read gate), and the clean window
/// it closed, if any (the caller reads the peak and calls `learned`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    pub read: bool,
    pub window: Option<Window>,
}

pub struct GuardCore {
    policy: Policy,
    admission: Admission,
    /// What admission has to say that no answer carried (a learned figure far from the declared one), for the
    /// monitor to log.
    notes: Vec<(String, Say)>,
    last_rss: u64,
    follow: Option<Follow>,
    jobs: Attribution,
    metric: Metric,
    rules: RestartRules,
    busy: u32,
    done: u64,
    pressure: u32,
    last_memory: u64,
    /// When memory was last read (or a job's end took the reading on), ns (0: never).
    last_read_ns: u64,
    measure_every_ns: Option<u64>,
    next_measure_ns: Option<u64>,
    reclaim_started_ns: u64,
    /// RSS just before the last reclaim started (admission learns what it gave back).
    reclaim_started_rss: u64,
}

impl GuardCore {
    /// The guard, with its first reading (RSS), which opens the first window.
    pub fn new(settings: GuardSettings, rss: u64, now_ns: u64) -> Self {
        let mut core = GuardCore {
            policy: Policy::new(settings.limits),
            admission: Admission::new(settings.admission, rss),
            notes: Vec::new(),
            last_rss: rss,
            follow: settings.follow,
            jobs: Attribution::new(),
            metric: settings.metric,
            rules: settings.restart,
            busy: 0,
            done: 0,
            pressure: 0,
            last_memory: 0,
            last_read_ns: 0,
            measure_every_ns: settings.measure_interval_ns,
            next_measure_ns: settings
                .measure_interval_ns
                .map(|every| now_ns.saturating_add(every)),
            reclaim_started_ns: 0,
            reclaim_started_rss: 0,
        };
        core.remember(rss, now_ns.max(1));
        core.jobs.reading(rss, now_ns);
        core
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    fn remember(&mut self, memory: u64, now_ns: u64) {
        self.last_memory = memory;
        self.last_read_ns = now_ns.max(1);
    }

    fn sample(&self, memory: u64, now_ns: u64) -> Event {
        Event::Sample {
            memory,
            now_ms: now_ns / 1_000_000,
            busy: self.busy,
            done: self.done,
            pressure: self.pressure,
        }
    }

    /// Counts a job in (and, with admission, its admission becomes a running job). `allocated`: the thread's
    /// allocated bytes (jemalloc), where known.
    pub fn job_started(
        &mut self,
        class: &str,
        jid: &str,
        now_ns: u64,
        allocated: Option<u64>,
    ) -> JobStart {
        self.busy = self.busy.saturating_add(1);
        let token = self.jobs.job_started(class, jid, now_ns, allocated);
        let window = self.admission.job_started(token, class, jid, now_ns);
        JobStart { token, window }
    }

    /// The clean window `job_started` asked for is open (see `Admission::window_opened`).
    pub fn window_opened(&mut self, token: u64, rss: u64, peak_reset: bool) {
        self.admission.window_opened(token, rss, peak_reset);
    }

    /// Counts a job out. Says whether the caller reads RSS now and hands it to `job_reading` (the read gate: at
    /// most one reading every READ_EVERY_NS; this one is taken, so no other job's end reads too), and which
    /// clean window it closed.
    pub fn job_finished(&mut self, token: u64, now_ns: u64, allocated: Option<u64>) -> JobEnd {
        self.busy = self.busy.saturating_sub(1);
        self.done += 1;
        self.jobs.job_finished(token, now_ns, allocated);
        let window = self.admission.job_finished(token);
        let read = self.read_due(now_ns);
        if read {
            self.last_read_ns = now_ns.max(1);
        }
        JobEnd { read, window }
    }

    /// The peak RSS over a clean window (VmHWM, or RSS at its end where the peak could not be reset): the
    /// class's working set learns from it. A learned figure far from the declared one is kept for `take_notes`.
    pub fn learned(&mut self, window: &Window, peak: u64) {
        if let Some(say) = self.admission.learned(window, peak) {
            self.notes.push((window.class.clone(), say));
        }
    }

    /// Whether admission is on.
    pub fn admission(&self) -> bool {
        self.admission.on()
    }

    /// Whether the RSS admission goes by is older than the read gate (the caller reads it again for `admit`).
    pub fn admission_reads(&self, now_ns: u64) -> bool {
        self.read_due(now_ns)
    }

    /// The read gate: the last reading is older than READ_EVERY_NS.
    fn read_due(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.last_read_ns) >= READ_EVERY_NS
    }

    /// Decides for a fetched job (`rss`: read now, or None to go by the last reading, within the read gate).
    /// The bound is the brake's `brake_at` (it moves with the limits).
    pub fn admit(&mut self, facts: &JobFacts, rss: Option<u64>, now_ns: u64) -> Admitted {
        if let Some(rss) = rss {
            self.last_rss = rss;
            self.last_read_ns = now_ns.max(1);
            self.admission.reading(rss, self.busy);
        }
        let limits = self.policy.limits();
        let bound = limits.brake.map_or(limits.soft, |b| b.pause_at);
        self.admission.admit(facts, self.last_rss, bound, now_ns)
    }

    /// Every class admission has seen, with its working set.
    pub fn admission_classes(&self) -> Vec<ClassNeed> {
        self.admission.classes()
    }

    /// What admission has to say since the last call (class, what).
    pub fn take_notes(&mut self) -> Vec<(String, Say)> {
        std::mem::take(&mut self.notes)
    }

    /// The RSS a job's end read: the attribution's, and the policy's only when the guard's metric is RSS (the
    /// monitor reads the others) and the process serves (the restart sequence takes its own readings).
    pub fn job_reading(&mut self, rss: u64, now_ns: u64) -> Action {
        self.remember(rss, now_ns);
        self.last_rss = rss;
        self.admission.reading(rss, self.busy);
        self.jobs.reading(rss, now_ns);
        if self.metric != Metric::Rss || self.policy.phase() != Phase::Serving {
            return Action::None;
        }
        self.policy.step(self.sample(rss, now_ns))
    }

    /// A reading of the guard's metric (`memory`) and RSS: the monitor's (`restarting = false`: it moves only a
    /// serving process) or the restart sequence's (`true`: quiet -> stop -> kill).
    pub fn reading(&mut self, rss: u64, memory: u64, now_ns: u64, restarting: bool) -> Action {
        self.remember(memory, now_ns);
        self.last_rss = rss;
        self.admission.reading(rss, self.busy);
        self.jobs.reading(rss, now_ns);
        if !restarting && self.policy.phase() != Phase::Serving {
            return Action::None;
        }
        self.policy.step(self.sample(memory, now_ns))
    }

    /// The memory pressure now (PSI "some" avg10, percent; None: unknown, counted as none). Every sample after
    /// it carries it to the policy.
    pub fn set_pressure(&mut self, percent: Option<f64>) {
        self.pressure = percent
            .filter(|p| p.is_finite() && *p > 0.0)
            .map_or(0, |p| (p.min(100.0) * 100.0).round() as u32);
    }

    /// The last pressure given, percent.
    pub fn pressure(&self) -> f64 {
        f64::from(self.pressure) / 100.0
    }

    /// Whether a measuring reclaim is due (or asked for with `force`): only while the process serves.
    pub fn measure_due(&self, now_ns: u64, force: bool) -> bool {
        self.policy.phase() == Phase::Serving
            && (force || self.next_measure_ns.is_some_and(|at| now_ns >= at))
    }

    /// A reclaim starts (before the GC): `rss` is read just before.
    pub fn reclaim_started(&mut self, rss: u64, now_ns: u64) {
        self.reclaim_started_ns = now_ns;
        self.reclaim_started_rss = rss;
        self.jobs.reclaim_started(rss, now_ns);
    }

    /// A reclaim ended: its floor goes to the attribution, the next measuring reclaim is scheduled, and with
    /// `decide` (a reclaim the policy asked for) the reading after it goes to the policy, whose next action
    /// and verdict come back.
    pub fn reclaim_finished(&mut self, r: ReclaimReadings, decide: bool) -> ReclaimOutcome {
        let measured = self.jobs.reclaim_finished(r.rss, r.floor, r.now_ns, r.read);
        self.remember(r.after, r.now_ns);
        // Admission goes by the RSS read after the purge (it asks again right after a reclaim it asked for).
        self.last_rss = r.rss;
        self.last_read_ns = r.now_ns.max(1);
        self.admission.reading(r.rss, self.busy);
        self.admission
            .reclaimed(r.now_ns, self.reclaim_started_rss, r.rss);
        self.schedule_measure(measured, r.now_ns);
        if !decide {
            return ReclaimOutcome {
                reason: None,
                action: Action::None,
                verdict: None,
                measured,
            };
        }
        let reason = match self.policy.phase() {
            Phase::Reclaiming(reason) => Some(reason),
            _ => None,
        };
        let action = self.policy.step(Event::Reclaimed {
            memory: r.after,
            now_ms: r.now_ns / 1_000_000,
        });
        ReclaimOutcome {
            reason,
            action,
            verdict: Some(self.verdict(action, r.after)),
            measured,
        }
    }

    fn verdict(&self, action: Action, after: u64) -> Verdict {
        match action {
            Action::None if after < self.policy.limits().soft => Verdict::BackUnder,
            Action::None => Verdict::UnderHard,
            Action::Resume(ResumeCause::Below | ResumeCause::Idle) => Verdict::Resumed,
            Action::Resume(ResumeCause::Retained) | Action::RequestRestart(Reason::Retained) => {
                Verdict::Retained
            }
            Action::WarnLoop => Verdict::Loop,
            _ => Verdict::StillOver,
        }
    }

    fn schedule_measure(&mut self, measured: bool, now_ns: u64) {
        let Some(every) = self.measure_every_ns else {
            return;
        };
        let delay = if measured {
            every
        } else {
            every / REMEASURE_DIVISOR
        };
        let took = now_ns.saturating_sub(self.reclaim_started_ns);
        self.next_measure_ns =
            Some(now_ns.saturating_add(delay.max(took.saturating_mul(MEASURE_BUDGET))));
    }

    /// What the restart the policy asks for now (`Action::RequestRestart`) needs; None when it asks for none.
    /// The soft limit needs another serving process (require_other_process); the hard limit is there to beat
    /// the kernel's OOM killer, which would lose the running jobs, so a sole process restarts too; so does a
    /// process alone in the fleet whose brake holds retained memory (paused, it serves no job), which otherwise
    /// waits for another serving process (`Peers`).
    pub fn restart_request(&self) -> Option<RestartRequest> {
        let Phase::WaitingSlot(reason) = self.policy.phase() else {
            return None;
        };
        let refusal = if self.rules.dry_run {
            Some(Denial::DryRun)
        } else if !self.rules.stoppable {
            Some(Denial::Embedded)
        } else {
            None
        };
        let peers = match reason {
            _ if !self.rules.require_other_process => Peers::Any,
            Reason::Soft => Peers::Serving,
            Reason::Retained => Peers::ServingUnlessAlone,
            Reason::Hard | Reason::Brake => Peers::Any,
        };
        Some(RestartRequest {
            reason,
            refusal,
            peers,
        })
    }

    /// Once per crossing of max_rss: what the guard will do about it, and when (for the one line that says so).
    pub fn take_over_soft(&mut self, now_ns: u64) -> Option<OverSoftNotice> {
        let over = self.policy.take_over_soft(now_ns / 1_000_000)?;
        let limits = self.policy.limits();
        Some(OverSoftNotice {
            memory: over.memory,
            grace_left_ms: over.grace_left_ms,
            reclaim: limits.reclaim,
            hard: limits.hard,
            needs_other_process: self.rules.require_other_process,
            restarts: !self.rules.dry_run && self.rules.stoppable,
        })
    }

    /// Whether a limit is a share of the memory cgroup's limit: the caller reads that limit with each of the
    /// monitor's readings and hands it to `cgroup_limit`.
    pub fn follows_cgroup(&self) -> bool {
        self.follow.is_some()
    }

    /// The memory cgroup's limit now (None: it has none now, and the bounds stay as they are). When it changed,
    /// the limits given as shares of it move with it, the brake's thresholds with max_rss, and the answer says
    /// from what to what.
    pub fn cgroup_limit(&mut self, limit: Option<u64>) -> Option<BoundsMoved> {
        let follow = self.follow.as_mut()?;
        let limit = limit.filter(|l| *l != follow.limit)?;
        let was = self.policy.limits().bounds();
        let now = follow.bounds(limit, was);
        let was_limit = std::mem::replace(&mut follow.limit, limit);
        self.policy.set_bounds(now);
        Some(BoundsMoved {
            was_limit,
            limit,
            was,
            now,
        })
    }

    /// The memory bounds in force (they move with the cgroup's limit where given as shares of it).
    pub fn bounds(&self) -> Bounds {
        self.policy.limits().bounds()
    }

    /// Feeds an outcome the caller reports (slot granted or denied, quiet took effect, quarantined).
    pub fn step(&mut self, event: Event) -> Action {
        self.policy.step(event)
    }

    pub fn phase(&self) -> Phase {
        self.policy.phase()
    }

    pub fn busy(&self) -> u32 {
        self.busy
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn last_memory(&self) -> u64 {
        self.last_memory
    }

    /// Whether the brake is on (asked for, and the job threads known).
    pub fn brake(&self) -> bool {
        self.policy.limits().brake.is_some()
    }

    /// Job threads allowed to fetch: the brake's window, one while admission runs a job alone.
    pub fn window(&self) -> u32 {
        if self.admission.exclusive() {
            return self.policy.window().min(1);
        }
        self.policy.window()
    }

    pub fn paused(&self) -> bool {
        self.policy.paused()
    }

    pub fn paused_ms(&self, now_ns: u64) -> u64 {
        self.policy.paused_ms(now_ns / 1_000_000)
    }

    pub fn pressured(&self) -> bool {
        self.policy.pressured()
    }

    pub fn decision_memory(&self) -> u64 {
        self.policy.decision_memory()
    }

    pub fn last_reclaim(&self) -> Option<ReclaimResult> {
        self.policy.last_reclaim()
    }

    pub fn last_denial(&self) -> Option<Denial> {
        self.policy.last_denial()
    }

    /// A copy of the attribution's state, to fit outside the lock.
    pub fn snapshot(&self) -> Snapshot {
        self.jobs.snapshot()
    }

    pub fn in_flight(&self, now_ns: u64) -> Vec<InFlight> {
        self.jobs.in_flight(now_ns)
    }

    pub fn reset_report(&mut self) {
        self.jobs.clear();
    }
}

#[cfg(test)]
mod tests;
