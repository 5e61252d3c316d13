//! The memory brake, below the restart path while the process serves: pause, reclaim when idle, resume with a
//! smaller window and widen it as jobs finish (see the policy module's notes).

use super::{Action, Policy, Reason, ResumeCause};

/// The brake's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct BrakeState {
    /// Job threads allowed to fetch; the concurrency when the brake is off.
    pub(super) window: u32,
    pub(super) paused_since: Option<u64>,
    /// Jobs running when it paused (the window it resumes with is half of it).
    pub(super) busy_at_pause: u32,
    /// The memory when it paused.
    pub(super) memory_at_pause: u64,
    /// What one job of the mix that made it pause needs: (memory at the pause - memory at the resume) / jobs
    /// running at the pause. The window grows only while memory has room for one more such job.
    pub(super) per_job: u64,
    /// This pause reclaimed already.
    pub(super) reclaimed: bool,
    /// Resumed with the memory retained: off until memory is below `resume_at`.
    pub(super) off: bool,
    /// Jobs finished when the window last grew.
    pub(super) done_seen: u64,
    /// The busy count of the last sample (the reclaim's outcome has none).
    pub(super) last_busy: u32,
    /// Milliseconds paused, over the process's life (finished pauses).
    pub(super) paused_ms: u64,
}

impl Policy {
    /// The brake of a serving process that the limits left alone (see the module's notes).
    pub(super) fn braking(&mut self, memory: u64, now_ms: u64, busy: u32, done: u64) -> Action {
        let Some(brake) = self.limits.brake else {
            return Action::None;
        };
        let pressured = self.pressured();
        if self.brake.off {
            if memory >= brake.resume_at || pressured {
                return Action::None;
            }
            self.brake.off = false;
        }
        if self.brake.paused_since.is_none() {
            if memory >= brake.pause_at || pressured {
                self.brake.paused_since = Some(now_ms);
                self.brake.busy_at_pause = busy;
                self.brake.memory_at_pause = memory;
                self.brake.reclaimed = false;
                self.brake.window = 0;
                return Action::Pause;
            }
            let finished = done > self.brake.done_seen;
            self.brake.done_seen = done;
            let room = memory < brake.resume_at
                || memory.saturating_add(self.brake.per_job) < brake.pause_at;
            if finished && room && !pressured && self.brake.window < brake.concurrency {
                self.brake.window += 1;
                return Action::Widen;
            }
            return Action::None;
        }
        self.brake.done_seen = done;
        let window = (self.brake.busy_at_pause / 2).max(1).min(brake.concurrency);
        if memory < brake.resume_at && !pressured {
            self.measure_per_job(memory);
            return self.resume(ResumeCause::Below, window, now_ms);
        }
        if busy > 0 {
            return Action::None;
        }
        if !self.brake.reclaimed && self.limits.reclaim {
            self.brake.reclaimed = true;
            return self.reclaim(Reason::Brake, memory, now_ms);
        }
        if memory >= brake.pause_at {
            // Retained, not in flight: only a restart gives it back (paused meanwhile; a refused request is asked
            // again after check_interval_ms), unless a restart would rebuild it (a restart loop: the limits' own
            // check warns of it).
            if self.loop_suspected(now_ms) {
                return self.let_go(now_ms);
            }
            return self.request(Reason::Retained, memory, now_ms);
        }
        if pressured {
            return self.let_go(now_ms);
        }
        self.measure_per_job(memory);
        self.resume(ResumeCause::Idle, window, now_ms)
    }

    /// What one job of the mix that made it pause needs, from what came back since the pause. A pause with no job
    /// running (memory the allocator keeps) says nothing of it.
    fn measure_per_job(&mut self, memory: u64) {
        if self.brake.busy_at_pause > 0 {
            self.brake.per_job = self.brake.memory_at_pause.saturating_sub(memory)
                / u64::from(self.brake.busy_at_pause);
        }
    }

    /// The brake lets go: every thread fetches, and the brake stays off until memory is below `resume_at`.
    pub(super) fn let_go(&mut self, now_ms: u64) -> Action {
        let concurrency = self.limits.brake.map_or(0, |b| b.concurrency);
        self.brake.off = true;
        self.resume(ResumeCause::Retained, concurrency, now_ms)
    }

    fn resume(&mut self, cause: ResumeCause, window: u32, now_ms: u64) -> Action {
        if let Some(since) = self.brake.paused_since.take() {
            self.brake.paused_ms += now_ms.saturating_sub(since);
        }
        self.brake.window = window;
        Action::Resume(cause)
    }
}
