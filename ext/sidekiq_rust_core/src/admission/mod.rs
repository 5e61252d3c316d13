//! Admission: a job starts only when what it needs fits. After the fetcher's pop the job's class is known; the
//! job starts when memory now, plus what the running jobs may still add, plus its class's working set stays
//! under the bound (the brake's `brake_at`); else it goes back to the front of its queue (Ruby, through the
//! fetcher's own unit of work) and the thread waits for a running job to end.
//!
//! A class's working set is the most memory one of its jobs adds while it runs: declared
//! (`sidekiq_options memory:`) or learned from the process's own jobs in clean windows, a job that started with
//! no other running and ended before any other started, measured as the kernel's peak RSS over the window
//! (VmHWM, reset at its start) less RSS at its start. A class not yet measured runs alone (its first job in the
//! process is such a window: it waits for the running jobs to end and no other job starts while it runs); so
//! does a class that needs more than the process can ever give (the bound less its idle memory), said once. A
//! job never waits while nothing runs: with the process idle, whatever was fetched starts.
//!
//! "What the running jobs may still add": each running job's working set, less what memory already grew since
//! the oldest of them was admitted (that growth is theirs, and it is already in the reading).
//!
//! "Memory now" is RSS, the figure the bound is on. Memory a job left to the garbage collector or the allocator
//! counts until a GC or a purge gives it back: it is not room a job of another thread can be sure of (glibc's
//! arenas are per thread, Ruby frees a job's garbage at its next GC). So admission asks for a reclaim (GC +
//! purge) first, and is asked again for the same job, when the job starts alone and does not fit, and when it
//! would wait though the process's idle memory plus what the running jobs need plus its own would fit (at most
//! one every RECLAIM_EVERY_NS, counting every reclaim the process runs; sooner, after RECLAIM_SOON_NS, when the
//! jobs that ended since the last reclaim may have left enough to make the room: their working sets sum to at
//! least how far the job is over the bound).

pub mod payload;

use std::collections::HashMap;

use crate::names::Named;

pub use payload::{job_facts, parse_size, Declared, JobFacts};

/// A job admitted but not started yet (the processor parses it, then the middleware counts it in) is given up
/// after this long (a job Sidekiq failed before its middleware).
pub const RESERVED_NS: u64 = 60_000_000_000;

/// Clean windows of classes already measured are opened at most this often (each costs a write to
/// /proc/self/clear_refs at the start and a read of /proc/self/status at the end, tens of microseconds).
pub const NATURAL_WINDOW_EVERY_NS: u64 = 1_000_000_000;

/// Admission asks for a reclaim for a job that would wait at most this often (a GC and a purge cost
/// milliseconds, and take the GVL for the GC): any reclaim the process ran (the policy's, the monitor's
/// measuring one) counts. A job that starts alone over the bound always gets one.
pub const RECLAIM_EVERY_NS: u64 = 2_000_000_000;

/// Sooner, at most this often, when the jobs that ended since the last reclaim may have left what the held job
/// is over the bound by (the sum of their working sets).
pub const RECLAIM_SOON_NS: u64 = 500_000_000;

/// The learned figure and a declared one are "more than twice off" past this ratio.
pub const MISMATCH_RATIO: u64 = 2;

/// What admission decided for a fetched job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It fits: it starts.
    Start,
    /// Its class is not measured yet: it starts alone, measured; no other job starts until it ends.
    Probe,
    /// Its class needs more than the process can ever give: it starts alone, the rest held while it runs.
    Alone,
    /// It waits (`Admitted::hold` says why): back to the front of its queue, and the thread waits for a running
    /// job to end.
    Hold,
    /// What the last jobs left (garbage, the allocator's free memory) stands between it and the bound: the
    /// caller runs a reclaim (GC + purge), then asks again for the same job (the answer then is never this one).
    Reclaim,
}

impl Named for Decision {
    const WHAT: &'static str = "admission decision";

    fn all() -> &'static [Decision] {
        &[
            Decision::Start,
            Decision::Probe,
            Decision::Alone,
            Decision::Hold,
            Decision::Reclaim,
        ]
    }

    fn as_str(self) -> &'static str {
        match self {
            Decision::Start => "start",
            Decision::Probe => "probe",
            Decision::Alone => "alone",
            Decision::Hold => "hold",
            Decision::Reclaim => "reclaim",
        }
    }
}

/// Why a job waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Memory now, what the running jobs may still add and its working set pass the bound.
    NoRoom,
    /// Its class is not measured yet: it runs alone once the running jobs end.
    Unmeasured,
    /// Its class needs more than the process can ever give: it runs alone once the running jobs end.
    TooBig,
    /// A job runs alone (measured, or too big to share the process).
    Exclusive,
}

impl Named for Hold {
    const WHAT: &'static str = "admission hold";

    fn all() -> &'static [Hold] {
        &[
            Hold::NoRoom,
            Hold::Unmeasured,
            Hold::TooBig,
            Hold::Exclusive,
        ]
    }

    fn as_str(self) -> &'static str {
        match self {
            Hold::NoRoom => "no_room",
            Hold::Unmeasured => "unmeasured",
            Hold::TooBig => "too_big",
            Hold::Exclusive => "exclusive",
        }
    }
}

/// Said once per class (and process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    /// Its working set is more than the process can ever give (the bound less its idle memory).
    TooBig { need: u64, room: u64 },
    /// The declared and the learned figures are more than MISMATCH_RATIO apart.
    Mismatch { declared: u64, learned: u64 },
    /// The declared value is not a size: the class runs undeclared.
    BadDeclared(String),
}

/// Admission's answer for one fetched job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub decision: Decision,
    /// Why it waits (with `Decision::Hold` only).
    pub hold: Option<Hold>,
    pub class: String,
    /// Its class's working set (None: not measured, nothing declared).
    pub need: Option<u64>,
    /// Memory now, plus what the running jobs may still add, plus `need`.
    pub projected: u64,
    pub bound: u64,
    pub say: Option<Say>,
}

/// A clean window that ended: its class and RSS at its start; the caller reads the peak (VmHWM) and hands both
/// to `Admission::learned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub class: String,
    pub rss_start: u64,
    /// The peak was reset at its start (else the caller takes RSS at its end: a lower bound).
    pub peak_reset: bool,
}

/// One class's figures, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassNeed {
    pub class: String,
    pub learned: Option<u64>,
    /// Clean windows measured.
    pub samples: u32,
    pub declared: Option<u64>,
    /// Its jobs sent back to their queue to wait.
    pub deferred: u64,
}

#[derive(Debug, Default)]
struct Need {
    learned: Option<u64>,
    samples: u32,
    declared: Option<u64>,
    deferred: u64,
    said_too_big: bool,
    said_mismatch: bool,
    said_bad: bool,
}

impl Need {
    fn figure(&self) -> Option<u64> {
        self.declared.or(self.learned)
    }
}

#[derive(Debug)]
struct Admit {
    jid: String,
    need: u64,
    exclusive: bool,
    memory: u64,
    at_ns: u64,
}

#[derive(Debug)]
struct Open {
    token: u64,
    class: String,
    /// RSS at its start, and whether the peak was reset then.
    start: Option<(u64, bool)>,
    clean: bool,
}

/// Admission's state in one process.
#[derive(Debug, Default)]
pub struct Admission {
    on: bool,
    classes: HashMap<String, Need>,
    /// Admitted, not started yet.
    reserved: Vec<Admit>,
    /// Started, by the guard's job token.
    running: HashMap<u64, Admit>,
    window: Option<Open>,
    last_window_ns: Option<u64>,
    /// RSS when no job ran: the least seen.
    idle: u64,
    /// When the process last ran a reclaim, or admission last asked for one.
    last_reclaim_ns: Option<u64>,
    /// Jobs admission asked a reclaim for (jid, when), until they are asked for again (then they get a decision;
    /// meanwhile the process counts as busy: no second thread reclaims for a job that would start alone).
    reclaims: Vec<(String, u64)>,
    /// The working sets of the jobs that ended since the last reclaim: at most what they left to it.
    ended_since_reclaim: u64,
}

impl Admission {
    pub fn new(on: bool, rss: u64) -> Self {
        Admission {
            on,
            idle: rss,
            ..Admission::default()
        }
    }

    pub fn on(&self) -> bool {
        self.on
    }

    fn busy(&self) -> bool {
        !self.reserved.is_empty() || !self.running.is_empty() || !self.reclaims.is_empty()
    }

    /// Whether a job runs (or is about to) alone: no other thread may fetch.
    pub fn exclusive(&self) -> bool {
        self.reserved.iter().any(|a| a.exclusive) || self.running.values().any(|a| a.exclusive)
    }

    /// A reading (RSS) with `busy` jobs counted in by the middleware: with none running nor admitted, the
    /// process's idle memory is the least seen.
    pub fn reading(&mut self, rss: u64, busy: u32) {
        if busy == 0 && !self.busy() {
            self.idle = self.idle.min(rss);
        }
    }

    /// Decides for a fetched job (`memory`: RSS now, or read within the guard's read gate; `bound`: what the
    /// process's memory should stay under).
    pub fn admit(&mut self, facts: &JobFacts, memory: u64, bound: u64, now_ns: u64) -> Admitted {
        self.reserved
            .retain(|a| now_ns.saturating_sub(a.at_ns) < RESERVED_NS);
        self.reclaims
            .retain(|(_, at)| now_ns.saturating_sub(*at) < RESERVED_NS);
        let asked = self.reclaims.iter().position(|(jid, _)| *jid == facts.jid);
        let asked_again = asked.map(|i| self.reclaims.swap_remove(i)).is_some();
        let busy = self.busy();
        let exclusive = self.exclusive();
        let room = bound.saturating_sub(self.idle);
        let (running_need, base) = self.running_need(memory);
        let idle = self.idle;
        let since_reclaim = self.last_reclaim_ns.map(|t| now_ns.saturating_sub(t));
        let ended = self.ended_since_reclaim;
        let need = self.classes.entry(facts.class.clone()).or_default();
        let mut say = None;
        match &facts.declared {
            Declared::Bytes(b) => need.declared = Some(*b),
            Declared::Bad(text) if !need.said_bad => {
                need.said_bad = true;
                say = Some(Say::BadDeclared(text.clone()));
            }
            _ => {}
        }
        let figure = need.figure();
        let projected = memory.max(base.saturating_add(running_need)) + figure.unwrap_or(0);
        let (decision, hold) = match figure {
            _ if exclusive => (Decision::Hold, Some(Hold::Exclusive)),
            None if busy => (Decision::Hold, Some(Hold::Unmeasured)),
            None => (Decision::Probe, None),
            Some(n) if n > room && busy => (Decision::Hold, Some(Hold::TooBig)),
            Some(n) if n > room => (Decision::Alone, None),
            Some(_) if busy && projected > bound => (Decision::Hold, Some(Hold::NoRoom)),
            Some(_) => (Decision::Start, None),
        };
        if let (Some(n), false) = (figure, need.said_too_big) {
            if n > room && say.is_none() {
                need.said_too_big = true;
                say = Some(Say::TooBig { need: n, room });
            }
        }
        // A reclaim may make the room: the job starts alone over the bound (always: it would start over it), or
        // it would wait though the idle memory plus the running jobs' needs plus its own fits (at most every
        // RECLAIM_EVERY_NS; every RECLAIM_SOON_NS when the jobs that ended since the last reclaim need at least
        // what it is over by). Asked again after the reclaim, the job gets a decision.
        let reclaim = match decision {
            Decision::Hold => {
                let over = projected.saturating_sub(bound);
                let due = since_reclaim.is_none_or(|t| {
                    t >= RECLAIM_EVERY_NS || (t >= RECLAIM_SOON_NS && ended >= over)
                });
                due && hold == Some(Hold::NoRoom)
                    && idle
                        .saturating_add(running_need)
                        .saturating_add(figure.unwrap_or(0))
                        <= bound
            }
            _ => !busy && projected > bound,
        };
        if reclaim && !asked_again {
            self.last_reclaim_ns = Some(now_ns);
            self.reclaims.push((facts.jid.clone(), now_ns));
            return Admitted {
                decision: Decision::Reclaim,
                hold: None,
                class: facts.class.clone(),
                need: figure,
                projected,
                bound,
                say,
            };
        }
        match decision {
            Decision::Hold => need.deferred += 1,
            _ => self.reserved.push(Admit {
                jid: facts.jid.clone(),
                need: figure.unwrap_or(0),
                exclusive: matches!(decision, Decision::Probe | Decision::Alone),
                memory,
                at_ns: now_ns,
            }),
        }
        Admitted {
            decision,
            hold,
            class: facts.class.clone(),
            need: figure,
            projected,
            bound,
            say,
        }
    }

    /// What the running and admitted jobs may still add, and the memory when the oldest of them was admitted (of
    /// jobs admitted at the same instant, the least: the running jobs are a HashMap, whose order is not fixed).
    fn running_need(&self, memory: u64) -> (u64, u64) {
        let all = self.reserved.iter().chain(self.running.values());
        let need = all.clone().map(|a| a.need).fold(0u64, u64::saturating_add);
        let base = all
            .min_by_key(|a| (a.at_ns, a.memory))
            .map_or(memory, |a| a.memory.min(memory));
        (need, base)
    }

    /// A job starts (the middleware): its admission, if any, becomes a running job. Returns whether the caller
    /// opens a clean window for it (resets the peak and reads RSS, then calls `window_opened`): a probe, a job
    /// alone, or a job that starts with none other, at most every NATURAL_WINDOW_EVERY_NS. Any other start
    /// spoils the window open.
    pub fn job_started(&mut self, token: u64, class: &str, jid: &str, now_ns: u64) -> bool {
        if !self.on {
            return false;
        }
        let admit = match self.reserved.iter().position(|a| a.jid == jid) {
            Some(i) => self.reserved.swap_remove(i),
            None => Admit {
                jid: String::new(),
                need: self.classes.get(class).and_then(Need::figure).unwrap_or(0),
                exclusive: false,
                memory: 0,
                at_ns: now_ns,
            },
        };
        let exclusive = admit.exclusive;
        // A job admission asked a reclaim for that starts without being asked for again (the caller failed).
        self.reclaims.retain(|(asked, _)| asked != jid);
        let alone = !self.busy();
        self.running.insert(token, admit);
        if let Some(open) = self.window.as_mut() {
            open.clean = false;
            return false;
        }
        let due = self
            .last_window_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= NATURAL_WINDOW_EVERY_NS);
        if !(exclusive || (alone && due)) {
            return false;
        }
        self.last_window_ns = Some(now_ns);
        self.window = Some(Open {
            token,
            class: class.to_string(),
            start: None,
            clean: true,
        });
        true
    }

    /// The window `job_started` asked for is open: RSS read after the peak was reset (`peak_reset`: whether
    /// the reset worked).
    pub fn window_opened(&mut self, token: u64, rss: u64, peak_reset: bool) {
        if let Some(open) = self.window.as_mut().filter(|o| o.token == token) {
            open.start = Some((rss, peak_reset));
        }
    }

    /// A job ends. Returns its window when it was clean (the caller reads the peak and calls `learned`).
    pub fn job_finished(&mut self, token: u64) -> Option<Window> {
        if !self.on {
            return None;
        }
        if let Some(admit) = self.running.remove(&token) {
            self.ended_since_reclaim = self.ended_since_reclaim.saturating_add(admit.need);
        }
        if self.window.as_ref().is_none_or(|o| o.token != token) {
            return None;
        }
        let open = self.window.take()?;
        let (rss_start, peak_reset) = open.start.filter(|_| open.clean)?;
        Some(Window {
            class: open.class,
            rss_start,
            peak_reset,
        })
    }

    /// The peak RSS over a clean window: the class's working set is the most any of its windows added. Returns
    /// the mismatch with its declared figure, said once.
    pub fn learned(&mut self, window: &Window, peak: u64) -> Option<Say> {
        let sample = peak.saturating_sub(window.rss_start);
        let need = self.classes.entry(window.class.clone()).or_default();
        need.samples = need.samples.saturating_add(1);
        let learned = need.learned.map_or(sample, |l| l.max(sample));
        need.learned = Some(learned);
        let declared = need.declared?;
        let off = learned > declared.saturating_mul(MISMATCH_RATIO)
            || learned.saturating_mul(MISMATCH_RATIO) < declared;
        if !off || need.said_mismatch || learned == 0 {
            return None;
        }
        need.said_mismatch = true;
        Some(Say::Mismatch { declared, learned })
    }

    /// Every class seen, by name.
    pub fn classes(&self) -> Vec<ClassNeed> {
        let mut rows: Vec<ClassNeed> = self
            .classes
            .iter()
            .map(|(class, n)| ClassNeed {
                class: class.clone(),
                learned: n.learned,
                samples: n.samples,
                declared: n.declared,
                deferred: n.deferred,
            })
            .collect();
        rows.sort_by(|a, b| a.class.cmp(&b.class));
        rows
    }

    /// A reclaim ran (GC + purge, whoever asked for it), RSS `before` and `after` it: admission asks for none
    /// within RECLAIM_EVERY_NS (RECLAIM_SOON_NS when enough jobs ended since). What it gave back was no running
    /// job's growth as far as it was there when a job was admitted (at most that job's memory then, less the idle
    /// memory: the last jobs' garbage and free memory): that job's memory at admission comes down by as much, so
    /// that its growth since (already in the reading) is not counted again as what it may still add.
    pub fn reclaimed(&mut self, now_ns: u64, before: u64, after: u64) {
        self.last_reclaim_ns = Some(now_ns);
        self.ended_since_reclaim = 0;
        let freed = before.saturating_sub(after);
        let idle = self.idle;
        for admit in self.reserved.iter_mut().chain(self.running.values_mut()) {
            admit.memory -= freed.min(admit.memory.saturating_sub(idle));
        }
    }

    /// RSS when no job ran, last seen.
    pub fn idle(&self) -> u64 {
        self.idle
    }
}

#[cfg(test)]
mod tests;
