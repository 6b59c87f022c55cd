//! The backlog's decisions, as plain functions of state and time.
//!
//! The backlog and the loop only carry these out; each is unit-tested here with a manual
//! clock.

use std::time::{Duration, Instant};

/// What the memory budget says about reading more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Room {
    /// A read fits: go on.
    Read,
    /// Memory is short and the sender is stuck: move the oldest waiting batch to disk, then
    /// ask again.
    Spill,
    /// Pause reading (writers block on the full pipe) until the sender makes progress.
    Wait,
}

/// What [`room`] looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Bytes held now (waiting, in flight, held back, being filled).
    pub held: u64,
    /// The most the next read can add.
    pub need: u64,
    /// `--max-buffer-bytes`.
    pub budget: u64,
    /// Batches sealed but not taken by the sender (its channel is full).
    pub waiting: usize,
    /// Whether the last attempt got records through.
    pub sender_healthy: bool,
    /// Whether the sender has as many jobs queued behind the one it works on as its channel
    /// takes.
    pub sender_queue_full: bool,
    /// Whether waiting batches can be written to the failed-attempts directory now.
    pub can_spill: bool,
}

/// Read, spill or wait.
///
/// A healthy sender with a full queue is waited for: memory stays small and writers pause for
/// a moment. Reading waits as soon as the channel is full, before a batch waits behind it, so
/// a healthy flow holds two sealed batches (the one sent and the one queued) and the one
/// being filled only while there is room for it. A stuck sender lets memory fill up to the
/// budget, then the oldest waiting batch goes to disk so reading continues; with no directory
/// (or a full or failing one) reading waits.
pub fn room(m: &Memory) -> Room {
    if m.sender_healthy && (m.waiting > 0 || m.sender_queue_full) {
        Room::Wait
    } else if m.held + m.need <= m.budget {
        Room::Read
    } else if m.can_spill && m.waiting > 0 {
        Room::Spill
    } else {
        Room::Wait
    }
}

/// What becomes of records the sender handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposal {
    /// Write them to the failed-attempts directory.
    Spool,
    /// Keep them in memory (counted against the budget) and try again later: the directory
    /// is full or failing, and nothing may be lost while the daemon runs.
    Hold,
    /// Count them as lost: there is nowhere to keep them.
    Lose,
}

/// Where handed-back records go: to the directory if there is one and it takes them; held in
/// memory if it does not (until the stop, when holding is over); lost without a directory.
pub fn dispose(has_spool: bool, spool_took_them: bool, stopping: bool) -> Disposal {
    match (has_spool, spool_took_them, stopping) {
        (false, _, _) => Disposal::Lose,
        (true, true, _) => Disposal::Spool,
        (true, false, false) => Disposal::Hold,
        (true, false, true) => Disposal::Lose,
    }
}

/// When kept lines (spool files, batches held in memory) are tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    interval: Duration,
    /// The next try; `None`: nothing to try.
    next: Option<Instant>,
    /// After an error retrying cannot fix, nothing before this.
    blocked_until: Option<Instant>,
}

impl Schedule {
    /// A schedule that tries every `interval` after an error retrying cannot fix; `pending`:
    /// something is kept already (tried at once).
    pub fn new(interval: Duration, pending: bool, now: Instant) -> Schedule {
        Schedule {
            interval,
            next: pending.then_some(now),
            blocked_until: None,
        }
    }

    /// Whether a try is due.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_some_and(|at| at <= now)
    }

    /// When the next try is due, if one is.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Something was kept: try it when allowed, at the latest after one interval.
    pub fn kept(&mut self, now: Instant) {
        let at = self
            .blocked_until
            .filter(|b| *b > now)
            .unwrap_or(now + self.interval);
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// The destination accepted records: kept lines may go now (unless blocked).
    pub fn accepted(&mut self, now: Instant) {
        if self.next.is_some() {
            let at = self.blocked_until.filter(|b| *b > now).unwrap_or(now);
            self.next = Some(at);
        }
    }

    /// A kept batch was delivered: carry on with the next one.
    pub fn continue_now(&mut self, now: Instant) {
        self.next = Some(now);
    }

    /// An error retrying cannot fix (or a file that cannot be handled now): nothing before
    /// an interval has passed.
    pub fn block(&mut self, now: Instant) {
        let until = now + self.interval;
        self.blocked_until = Some(until);
        self.next = Some(until);
    }

    /// A passing failure of kept lines: try again after an interval, without blocking.
    pub fn later(&mut self, now: Instant) {
        self.next = Some(now + self.interval);
    }

    /// Nothing is kept any more.
    pub fn idle(&mut self) {
        self.next = None;
    }

    /// A kept batch is with the sender: nothing is due until it reports (then
    /// [`Schedule::continue_now`], [`Schedule::later`] or [`Schedule::block`]).
    pub fn await_report(&mut self) {
        self.next = None;
    }
}

/// What a stop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Keep handing waiting batches to the sender.
    HandOver,
    /// Nothing more to hand over (or the deadline passed): close the channel.
    Close,
    /// The channel is closed; wait for the sender to report what it had.
    AwaitSender,
    /// The sender finished: keep on disk what it handed back, and end.
    Finish,
    /// The sender overran the deadline and its grace: what it still holds is lost; end.
    GiveUp,
}

/// The step of a stop at `now`.
pub fn stop_step(
    now: Instant,
    deadline: Instant,
    grace: Duration,
    left_to_hand_over: bool,
    closed: bool,
    sender_finished: bool,
) -> StopStep {
    if sender_finished {
        StopStep::Finish
    } else if !closed && left_to_hand_over && now < deadline {
        StopStep::HandOver
    } else if !closed {
        StopStep::Close
    } else if now < deadline + grace {
        StopStep::AwaitSender
    } else {
        StopStep::GiveUp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(held: u64, waiting: usize, healthy: bool, can_spill: bool) -> Memory {
        Memory {
            held,
            need: 10,
            budget: 100,
            waiting,
            sender_healthy: healthy,
            sender_queue_full: false,
            can_spill,
        }
    }

    #[test]
    fn read_while_memory_fits_and_the_sender_keeps_up() {
        assert_eq!(room(&mem(0, 0, true, false)), Room::Read);
        assert_eq!(
            room(&mem(90, 0, false, false)),
            Room::Read,
            "exactly full fits"
        );
    }

    #[test]
    fn wait_for_a_healthy_sender_rather_than_spill() {
        assert_eq!(room(&mem(10, 1, true, true)), Room::Wait);
        assert_eq!(room(&mem(95, 3, true, true)), Room::Wait);
    }

    #[test]
    fn wait_for_a_healthy_sender_whose_queue_is_full_before_a_batch_waits() {
        let full = |healthy| Memory {
            sender_queue_full: true,
            ..mem(10, 0, healthy, true)
        };
        assert_eq!(room(&full(true)), Room::Wait);
        assert_eq!(
            room(&full(false)),
            Room::Read,
            "a stuck sender lets memory fill to the budget"
        );
    }

    #[test]
    fn spill_the_oldest_when_memory_is_short_and_the_sender_is_stuck() {
        assert_eq!(room(&mem(95, 3, false, true)), Room::Spill);
        assert_eq!(
            room(&mem(50, 3, false, true)),
            Room::Read,
            "no spill while it fits"
        );
    }

    #[test]
    fn wait_when_nothing_can_be_spilled() {
        assert_eq!(room(&mem(95, 3, false, false)), Room::Wait, "no directory");
        assert_eq!(room(&mem(95, 0, false, true)), Room::Wait, "all in flight");
    }

    #[test]
    fn set_aside_goes_to_disk_else_memory_else_is_lost() {
        assert_eq!(dispose(true, true, false), Disposal::Spool);
        assert_eq!(dispose(true, false, false), Disposal::Hold);
        assert_eq!(dispose(true, false, true), Disposal::Lose);
        assert_eq!(dispose(false, false, false), Disposal::Lose);
        assert_eq!(dispose(true, true, true), Disposal::Spool);
    }

    #[test]
    fn retry_kept_lines_after_an_error_only_once_the_interval_passed() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Schedule::new(ms(1000), true, t0);
        assert!(s.due(t0), "kept lines are tried at start-up");
        s.block(t0);
        assert!(!s.due(t0 + ms(999)));
        s.accepted(t0 + ms(10));
        assert!(!s.due(t0 + ms(999)), "a delivery does not lift the block");
        assert!(s.due(t0 + ms(1000)));
        s.continue_now(t0 + ms(1000));
        s.accepted(t0 + ms(1500));
        assert!(
            s.due(t0 + ms(1500)),
            "after the block, deliveries bring replay on"
        );
        s.idle();
        assert!(!s.due(t0 + ms(9999)));
        s.accepted(t0 + ms(2000));
        assert_eq!(s.next(), None, "nothing kept: nothing due");
        s.kept(t0 + ms(2000));
        assert_eq!(s.next(), Some(t0 + ms(3000)));
        s.later(t0 + ms(3000));
        assert_eq!(s.next(), Some(t0 + ms(4000)));
    }

    #[test]
    fn a_stop_hands_over_until_the_deadline_then_waits_out_the_grace() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (d, g) = (t0 + ms(100), ms(50));
        assert_eq!(stop_step(t0, d, g, true, false, false), StopStep::HandOver);
        assert_eq!(stop_step(t0, d, g, false, false, false), StopStep::Close);
        assert_eq!(stop_step(d, d, g, true, false, false), StopStep::Close);
        assert_eq!(stop_step(d, d, g, true, true, false), StopStep::AwaitSender);
        assert_eq!(stop_step(d + g, d, g, true, true, false), StopStep::GiveUp);
        assert_eq!(stop_step(d + g, d, g, true, true, true), StopStep::Finish);
    }
}
