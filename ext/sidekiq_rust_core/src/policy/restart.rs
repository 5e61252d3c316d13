//! The restart path: the phases of a process from serving to its stop, the limits' decisions while it serves
//! (reclaim, ask for a restart slot, or warn of a restart loop), and the quiet, quarantine, stop and kill sequence.

use super::{Action, Policy, Reason, StopCause};

/// Reclaim that gives back less than this share (percent) of the memory counts as "little" for the
/// restart-loop detection.
pub const LOOP_RECLAIM_PERCENT: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Reclaiming(Reason),
    WaitingSlot(Reason),
    Quieting { since_ms: u64 },
    Quarantining { cause: StopCause },
    Stopping { since_ms: u64 },
    Done,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Reclaiming(_) => "reclaiming",
            Phase::WaitingSlot(_) => "waiting_slot",
            Phase::Quieting { .. } => "quieting",
            Phase::Quarantining { .. } => "quarantining",
            Phase::Stopping { .. } => "stopping",
            Phase::Done => "done",
        }
    }

    /// Quiet was asked for: the restart sequence (quiet, stop, kill) is under way.
    pub fn restarting(self) -> bool {
        matches!(
            self,
            Phase::Quieting { .. }
                | Phase::Quarantining { .. }
                | Phase::Stopping { .. }
                | Phase::Done
        )
    }
}

/// Memory passed the soft limit: the reading that passed it, and how long the grace time still runs (then a
/// reclaim, when on, and a restart request if still over; the hard limit acts at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverSoft {
    pub memory: u64,
    pub grace_left_ms: u64,
}

/// The memory before and after the last reclaim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimResult {
    pub before: u64,
    pub after: u64,
}

impl ReclaimResult {
    /// Gave back less than `LOOP_RECLAIM_PERCENT` of the memory.
    pub fn little(self) -> bool {
        self.before.saturating_sub(self.after) * 100 < self.before * LOOP_RECLAIM_PERCENT
    }
}

impl Policy {
    fn over_hard(&self, memory: u64) -> bool {
        self.limits.hard.is_some_and(|hard| memory >= hard)
    }

    pub(super) fn request(&mut self, reason: Reason, memory: u64, now_ms: u64) -> Action {
        if now_ms < self.next_request_ms {
            return Action::None;
        }
        self.decision_memory = memory;
        self.phase = Phase::WaitingSlot(reason);
        Action::RequestRestart(reason)
    }

    pub(super) fn reclaim(&mut self, reason: Reason, memory: u64, now_ms: u64) -> Action {
        self.last_reclaim_ms = Some(now_ms);
        self.reclaim_before = memory;
        self.decision_memory = memory;
        self.phase = Phase::Reclaiming(reason);
        Action::Reclaim(reason)
    }

    fn may_reclaim(&self, now_ms: u64) -> bool {
        self.limits.reclaim
            && self
                .last_reclaim_ms
                .is_none_or(|last| now_ms.saturating_sub(last) >= self.limits.reclaim_cooldown_ms)
    }

    /// A process that replaced a memory restart, within `loop_window_ms` of its boot.
    fn young(&self, now_ms: u64) -> bool {
        self.limits.replaced_restart && now_ms < self.limits.loop_window_ms
    }

    /// A restart now would most likely rebuild the same memory: a young process whose last reclaim gave back
    /// little (or none ran), or one that reported a loop already.
    pub(super) fn loop_suspected(&self, now_ms: u64) -> bool {
        self.young(now_ms)
            && (self.loop_reported || self.last_reclaim.is_none_or(ReclaimResult::little))
    }

    /// Over the soft limit for the grace time, reclaimed or not: restart, unless it is a restart loop.
    fn request_soft(&mut self, memory: u64, now_ms: u64) -> Action {
        let young = self.young(now_ms);
        if young && self.loop_reported {
            return Action::None; // backing off until the window ends
        }
        let reclaim_little = self.last_reclaim.is_none_or(ReclaimResult::little);
        if young && reclaim_little {
            self.loop_reported = true;
            self.decision_memory = memory;
            return Action::WarnLoop;
        }
        // A process its brake holds paused with no job running serves nothing: its restart is for retained
        // memory, which needs no other serving process.
        let reason = if self.paused() && self.brake.last_busy == 0 {
            Reason::Retained
        } else {
            Reason::Soft
        };
        self.request(reason, memory, now_ms)
    }

    /// The restart path of a serving process: the limits.
    pub(super) fn serving(&mut self, memory: u64, now_ms: u64) -> Action {
        if memory < self.limits.soft {
            self.over_soft_since = None;
            self.over_soft_untold = None;
            return Action::None;
        }
        if self.over_soft_since.is_none() {
            self.over_soft_untold = Some(memory);
        }
        let since = *self.over_soft_since.get_or_insert(now_ms);
        if self.over_hard(memory) {
            if self.may_reclaim(now_ms) {
                return self.reclaim(Reason::Hard, memory, now_ms);
            }
            return self.request(Reason::Hard, memory, now_ms);
        }
        if now_ms.saturating_sub(since) < self.limits.grace_ms {
            return Action::None;
        }
        if self.may_reclaim(now_ms) {
            return self.reclaim(Reason::Soft, memory, now_ms);
        }
        self.request_soft(memory, now_ms)
    }

    pub(super) fn after_reclaim(&mut self, reason: Reason, memory: u64, now_ms: u64) -> Action {
        self.phase = Phase::Serving;
        self.decision_memory = memory;
        self.last_reclaim = Some(ReclaimResult {
            before: self.reclaim_before,
            after: memory,
        });
        if self.over_hard(memory) {
            return self.request(Reason::Hard, memory, now_ms);
        }
        if memory < self.limits.soft {
            self.over_soft_since = None;
            self.over_soft_untold = None;
            return Action::None;
        }
        // Brought under the hard limit but still over the soft one: the soft limit's grace still applies.
        let since = *self.over_soft_since.get_or_insert(now_ms);
        if reason != Reason::Soft && now_ms.saturating_sub(since) < self.limits.grace_ms {
            return Action::None;
        }
        self.request_soft(memory, now_ms)
    }

    pub(super) fn quieting(
        &mut self,
        since_ms: u64,
        memory: u64,
        now_ms: u64,
        busy: u32,
    ) -> Action {
        let quiet_at = match self.quiet_at {
            Some(at) => at,
            None if now_ms.saturating_sub(since_ms) >= self.limits.quiet_timeout_ms => {
                self.quiet_at = Some(now_ms);
                return Action::QuietUnconfirmed;
            }
            None => return Action::None,
        };
        let quiet_for = now_ms.saturating_sub(quiet_at);
        if quiet_for < self.limits.settle_ms {
            return Action::None;
        }
        let cause = if busy == 0 {
            StopCause::Idle
        } else if self.over_hard(memory) {
            StopCause::HardLimit
        } else if quiet_for >= self.limits.shutdown_wait_ms {
            StopCause::Waited
        } else {
            return Action::None;
        };
        self.decision_memory = memory;
        if busy > 0 && self.limits.quarantine {
            self.phase = Phase::Quarantining { cause };
            return Action::Quarantine;
        }
        self.stop(cause, now_ms)
    }

    pub(super) fn stop(&mut self, cause: StopCause, now_ms: u64) -> Action {
        self.phase = if self.limits.embedded {
            Phase::Done
        } else {
            Phase::Stopping { since_ms: now_ms }
        };
        Action::Stop(cause)
    }
}
