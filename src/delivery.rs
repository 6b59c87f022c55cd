//! Delivering one batch: every decision the sender makes about it, as a state machine.
//!
//! A [`Delivery`] is fed the outcome of each attempt and says what to do next ([`Step`]):
//! send (the whole batch, the records that failed, or one half of a batch too large for the
//! stream), wait until a moment, or stop with a [`Finish`] that accounts for every record
//! exactly once: accepted, too large for any record (handed back to be kept in `oversized/`),
//! or undelivered (handed back, in order, with the reason). Time is passed in and nothing here
//! does I/O, so every rule is unit-tested with a scripted sink and a manual clock.
//!
//! The rules:
//! - all accepted: done;
//! - some records failed (a 200 answer listing them): resend only those, in order, after a
//!   short wait (or what `x-amz-retry-after` asks, capped); attempts do not escalate, since
//!   records got through;
//! - throttling and passing faults: retry with full-jitter exponential backoff for as long as
//!   it takes; `x-amz-retry-after` is honoured up to the backoff ceiling;
//! - expired credentials: refresh and retry at once the first time, then back off;
//! - too large for the stream (only when the request is beyond the documented limits, see
//!   `kinesis::classify`): halve, down to single records, and a record of many lines down to
//!   single lines; a single line that is still too large is handed back as oversized;
//! - an error retrying cannot fix: stop, handing back what is left as `permanent`;
//! - the stop deadline passed: stop, handing back what is left.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::batch::Batch;
use crate::random::Rng;
use crate::sink::errors::classify_record;
use crate::sink::{ErrorKind, FailedRecord};
use crate::sink::{Failure, PutResult};

/// Full-jitter exponential backoff: a random wait in `0..min(cap, base * 2^attempt)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first ceiling.
    pub base: Duration,
    /// The largest ceiling; also the longest `x-amz-retry-after` honoured.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(20),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.cap);
        Duration::from_nanos(rng.below(ceiling.as_nanos().max(1) as u64))
    }

    /// The wait before a retry: the jittered delay, or what the service asked for if longer,
    /// never more than the ceiling.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>, rng: &mut Rng) -> Duration {
        let jitter = self.delay(attempt, rng);
        retry_after.map_or(jitter, |r| r.min(self.cap).max(jitter))
    }
}

/// What to do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Make an attempt with these records.
    Send(&'a mut Batch),
    /// Sleep until then (or until the stop deadline, if that comes first), then ask again.
    Wait(Instant),
    /// Finished: take the outcome with [`Delivery::finish`].
    Done,
}

/// Records handed back undelivered.
#[derive(Debug, PartialEq, Eq)]
pub struct Undelivered {
    /// The records not accepted, in their original order.
    pub batch: Batch,
    /// Why, for the log (an error code, or the stop deadline).
    pub reason: String,
    /// Whether retrying soon cannot help (the data is kept aside and tried again later).
    pub permanent: bool,
}

/// How a delivery ended: every record of the batch is counted once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Finish {
    /// Lines accepted (in as many records or fewer).
    pub accepted: u64,
    /// Single records the stream refused as too large (their data only).
    pub oversized: Vec<Vec<u8>>,
    /// What is left, if the delivery stopped before everything was accepted.
    pub undelivered: Option<Undelivered>,
}

/// What the last answer made the delivery decide, for the sender's log and counters.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// These records were accepted; if nothing is left, the delivery is done.
    Accepted(usize),
    /// Some records failed: resend them after `wait`.
    Resend {
        /// Records accepted by this answer.
        accepted: usize,
        /// The failed records (indices into the attempt).
        failed: Vec<FailedRecord>,
        /// Of those, how many were throttled.
        throttled: usize,
        /// The wait before resending.
        wait: Duration,
        /// What `x-amz-retry-after` asked for, if anything (before the cap).
        asked: Option<Duration>,
    },
    /// The whole attempt failed and is retried after `wait`.
    Retry {
        /// The failure.
        failure: Failure,
        /// Retries of this request so far, this one not included.
        attempt: u32,
        /// The wait before retrying.
        wait: Duration,
        /// Whether the credentials must be fetched again first.
        refresh: bool,
    },
    /// The request was too large for the stream: its halves go separately.
    Split(Failure),
    /// A single record too large for the stream was handed back as oversized.
    Oversized(Failure),
    /// An error retrying cannot fix: what is left is handed back.
    GiveUp(Failure),
}

/// The delivery of one batch.
#[derive(Debug)]
pub struct Delivery {
    backoff: Backoff,
    /// What is left to send, in order; the front is what the next attempt sends.
    pieces: VecDeque<Batch>,
    /// Retries of the front piece (reset when records get through).
    attempt: u32,
    /// Whether credentials were refreshed for an expiry already.
    refreshed: bool,
    not_before: Option<Instant>,
    finish: Finish,
    done: bool,
    /// The last piece accepted, whose buffers can be reused.
    spent: Option<Batch>,
}

impl Delivery {
    /// Starts delivering `batch`.
    pub fn new(batch: Batch, backoff: Backoff) -> Delivery {
        let done = batch.is_empty();
        Delivery {
            backoff,
            pieces: VecDeque::from([batch]),
            attempt: 0,
            refreshed: false,
            not_before: None,
            finish: Finish::default(),
            done,
            spent: None,
        }
    }

    /// The records the last answer accepted, once, so their buffers can be reused.
    pub fn take_spent(&mut self) -> Option<Batch> {
        self.spent.take()
    }

    /// What to do at `now`, with the stop `deadline` if one is set.
    pub fn next(&mut self, now: Instant, deadline: Option<Instant>) -> Step<'_> {
        if self.done {
            return Step::Done;
        }
        if deadline.is_some_and(|d| now >= d) {
            self.give_up("the stop deadline passed before delivery".into(), false);
            return Step::Done;
        }
        if let Some(at) = self.not_before.filter(|at| *at > now) {
            return Step::Wait(deadline.map_or(at, |d| d.min(at)));
        }
        match self.pieces.front_mut() {
            Some(b) => Step::Send(b),
            None => {
                self.done = true;
                Step::Done
            }
        }
    }

    /// Takes in the result of the attempt [`Delivery::next`] asked for, made at `now`.
    pub fn on_result(&mut self, result: PutResult, now: Instant, rng: &mut Rng) -> Decision {
        let sent = self.pieces.front().map_or(0, Batch::record_count);
        let decision = match result {
            PutResult::Accepted => {
                self.finish.accepted += self.pieces.front().map_or(0, Batch::len) as u64;
                self.attempt = 0;
                self.refreshed = false;
                self.spent = self.pieces.pop_front();
                self.not_before = None;
                if self.pieces.is_empty() {
                    self.done = true;
                }
                return Decision::Accepted(sent);
            }
            PutResult::Partial {
                failed,
                retry_after,
            } => {
                let throttled = failed
                    .iter()
                    .filter(|f| classify_record(&f.code) == ErrorKind::Throttled)
                    .count();
                let accepted = sent - failed.len();
                let indices: Vec<usize> = failed.iter().map(|f| f.index).collect();
                let front = self.pieces.front_mut().expect("an attempt was made");
                let failed_lines: usize =
                    indices.iter().map(|&i| front.record_lines(i).len()).sum();
                self.finish.accepted += (front.len() - failed_lines) as u64;
                *front = front.subset(&indices);
                // Records went through: throttling is per shard, so wait a little, but do not
                // escalate as for a failed request.
                self.attempt = 0;
                let wait = self.backoff.wait(0, retry_after, rng);
                Decision::Resend {
                    accepted,
                    failed,
                    throttled,
                    wait,
                    asked: retry_after,
                }
            }
            PutResult::Failed(f) if f.kind == ErrorKind::ExpiredCredentials && !self.refreshed => {
                self.refreshed = true;
                Decision::Retry {
                    failure: f,
                    attempt: self.attempt,
                    wait: Duration::ZERO,
                    refresh: true,
                }
            }
            PutResult::Failed(f) if f.kind.is_retryable() => {
                let wait = self.backoff.wait(self.attempt, f.retry_after, rng);
                let attempt = self.attempt;
                self.attempt = self.attempt.saturating_add(1);
                Decision::Retry {
                    refresh: f.kind == ErrorKind::ExpiredCredentials,
                    failure: f,
                    attempt,
                    wait,
                }
            }
            PutResult::Failed(f) if f.kind == ErrorKind::TooLarge => {
                let front = self.pieces.pop_front().expect("an attempt was made");
                self.attempt = 0;
                let Some((first, second)) = front.halves() else {
                    self.finish.oversized.push(front.line(0).to_vec());
                    if self.pieces.is_empty() {
                        self.done = true;
                    }
                    return Decision::Oversized(f);
                };
                self.pieces.push_front(second);
                self.pieces.push_front(first);
                return Decision::Split(f);
            }
            PutResult::Failed(f) => {
                self.give_up(f.code.clone(), true);
                return Decision::GiveUp(f);
            }
        };
        let wait = match &decision {
            Decision::Resend { wait, .. } | Decision::Retry { wait, .. } => *wait,
            _ => Duration::ZERO,
        };
        self.not_before = Some(now + wait);
        decision
    }

    /// Hands back everything not yet accepted, in order.
    fn give_up(&mut self, reason: String, permanent: bool) {
        let mut left = self.pieces.pop_front().unwrap_or_default();
        for piece in self.pieces.drain(..) {
            left.append(&piece);
        }
        if !left.is_empty() {
            self.finish.undelivered = Some(Undelivered {
                batch: left,
                reason,
                permanent,
            });
        }
        self.done = true;
    }

    /// The outcome, once [`Delivery::next`] said [`Step::Done`].
    pub fn finish(self) -> Finish {
        debug_assert!(self.done, "finish is taken once the delivery is done");
        self.finish
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        let mut b = Batch::new();
        for i in 0..n {
            b.push(format!("line {i}").as_bytes());
        }
        b
    }

    fn lines(b: &Batch) -> Vec<String> {
        b.lines()
            .map(|d| String::from_utf8(d.to_vec()).unwrap())
            .collect()
    }

    fn failure(kind: ErrorKind, code: &str, retry_after: Option<Duration>) -> PutResult {
        PutResult::Failed(Failure {
            kind,
            code: code.into(),
            message: String::new(),
            retry_after,
        })
    }

    fn failed(indices: &[usize], code: &str) -> Vec<FailedRecord> {
        indices
            .iter()
            .map(|&index| FailedRecord {
                index,
                code: code.into(),
                message: String::new(),
            })
            .collect()
    }

    /// Drives a delivery against a scripted sink and a manual clock: each attempt takes the
    /// next scripted answer; waits advance the clock. Returns the finish, the batches sent and
    /// the clock at the end.
    fn run(
        batch: Batch,
        mut script: Vec<PutResult>,
        deadline: Option<Instant>,
        t0: Instant,
    ) -> (Finish, Vec<Vec<String>>, Instant) {
        script.reverse();
        let mut rng = Rng::with_seed(7);
        let mut d = Delivery::new(batch, Backoff::default());
        let mut now = t0;
        let mut sent = Vec::new();
        loop {
            match d.next(now, deadline) {
                Step::Send(b) => {
                    sent.push(lines(b));
                    let result = script.pop().unwrap_or(PutResult::Accepted);
                    d.on_result(result, now, &mut rng);
                }
                Step::Wait(until) => {
                    assert!(until > now, "a wait is in the future");
                    now = until;
                }
                Step::Done => return (d.finish(), sent, now),
            }
        }
    }

    #[test]
    fn accepted_at_once() {
        let t0 = Instant::now();
        let (f, sent, end) = run(batch(3), vec![PutResult::Accepted], None, t0);
        assert_eq!(f.accepted, 3);
        assert_eq!(f.undelivered, None);
        assert_eq!(sent.len(), 1);
        assert_eq!(end, t0, "no wait");
    }

    #[test]
    fn retry_backs_off_under_the_ceiling_for_as_long_as_it_takes() {
        let t0 = Instant::now();
        let script: Vec<_> = (0..30)
            .map(|_| failure(ErrorKind::Transient, "InternalFailure", None))
            .collect();
        let (f, sent, end) = run(batch(2), script, None, t0);
        assert_eq!(
            (f.accepted, sent.len()),
            (2, 31),
            "30 failures, then accepted"
        );
        // 30 waits, each under its ceiling: at most 100 ms * 2^n, capped at 20 s.
        let most: Duration = (0..30u32)
            .map(|a| {
                (Duration::from_millis(100) * 2u32.pow(a.min(20))).min(Duration::from_secs(20))
            })
            .sum();
        assert!(end - t0 <= most, "{:?}", end - t0);
        assert!(
            end - t0 >= Duration::from_secs(60),
            "backoff grows: {:?}",
            end - t0
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_ceiling() {
        let t0 = Instant::now();
        let hour = Some(Duration::from_secs(3600));
        let (f, _, end) = run(
            batch(1),
            vec![failure(ErrorKind::Throttled, "ThrottlingException", hour)],
            None,
            t0,
        );
        assert_eq!(f.accepted, 1);
        assert_eq!(
            end - t0,
            Duration::from_secs(20),
            "capped at the backoff ceiling"
        );
        let mut rng = Rng::with_seed(1);
        let b = Backoff::default();
        assert_eq!(
            b.wait(0, Some(Duration::from_millis(1500)), &mut rng),
            Duration::from_millis(1500)
        );
        assert_eq!(b.wait(0, Some(Duration::MAX), &mut rng), b.cap);
    }

    #[test]
    fn partial_failures_resend_only_the_failed_records_in_order_honouring_retry_after() {
        let t0 = Instant::now();
        let script = vec![
            PutResult::Partial {
                failed: failed(&[1, 3], "ProvisionedThroughputExceededException"),
                retry_after: Some(Duration::from_secs(2)),
            },
            PutResult::Partial {
                failed: failed(&[1], "InternalFailure"),
                retry_after: None,
            },
        ];
        let (f, sent, end) = run(batch(4), script, None, t0);
        assert_eq!(
            sent,
            vec![
                vec!["line 0", "line 1", "line 2", "line 3"],
                vec!["line 1", "line 3"],
                vec!["line 3"],
            ]
        );
        assert_eq!(f.accepted, 4);
        assert!(end - t0 >= Duration::from_secs(2), "retry-after on a 200");
        assert!(end - t0 < Duration::from_millis(2100), "no escalation");
    }

    #[test]
    fn a_permanent_error_hands_back_what_is_left_in_order() {
        let t0 = Instant::now();
        let script = vec![
            PutResult::Partial {
                failed: failed(&[0, 2], "InternalFailure"),
                retry_after: None,
            },
            failure(ErrorKind::Permanent, "ResourceNotFoundException", None),
        ];
        let (f, sent, _) = run(batch(3), script, None, t0);
        assert_eq!(sent.len(), 2);
        assert_eq!(f.accepted, 1);
        let u = f.undelivered.unwrap();
        assert!(u.permanent);
        assert_eq!(u.reason, "ResourceNotFoundException");
        assert_eq!(lines(&u.batch), ["line 0", "line 2"]);
    }

    #[test]
    fn expired_credentials_refresh_at_once_then_back_off() {
        let mut rng = Rng::with_seed(3);
        let t0 = Instant::now();
        let mut d = Delivery::new(batch(1), Backoff::default());
        assert!(matches!(d.next(t0, None), Step::Send(_)));
        let first = d.on_result(
            failure(ErrorKind::ExpiredCredentials, "ExpiredTokenException", None),
            t0,
            &mut rng,
        );
        assert!(matches!(
            first,
            Decision::Retry {
                refresh: true,
                wait: Duration::ZERO,
                ..
            }
        ));
        assert!(matches!(d.next(t0, None), Step::Send(_)), "at once");
        let second = d.on_result(
            failure(ErrorKind::ExpiredCredentials, "ExpiredTokenException", None),
            t0,
            &mut rng,
        );
        assert!(matches!(second, Decision::Retry { refresh: true, .. }));
    }

    #[test]
    fn too_large_splits_down_to_the_record_which_is_handed_back_as_oversized() {
        let t0 = Instant::now();
        let too_large = || failure(ErrorKind::TooLarge, "ValidationException", None);
        // 4 records, record 2 too large: [0..4] fails, [0,1] ok, [2,3] fails, [2] oversized,
        // [3] ok.
        let script = vec![
            too_large(),
            PutResult::Accepted,
            too_large(),
            too_large(),
            PutResult::Accepted,
        ];
        let (f, sent, end) = run(batch(4), script, None, t0);
        assert_eq!(sent.len(), 5);
        assert_eq!(f.accepted, 3);
        assert_eq!(f.oversized, vec![b"line 2".to_vec()]);
        assert_eq!(f.undelivered, None);
        assert_eq!(end, t0);
    }

    /// Lines "line 0".."line 5" in three records of two.
    fn packed() -> Batch {
        let mut b = Batch::new();
        for i in 0..6 {
            if i % 2 == 0 {
                b.start_record();
            }
            b.push(format!("line {i}").as_bytes());
        }
        b
    }

    #[test]
    fn a_failed_aggregate_is_resent_whole_and_accepted_counts_lines() {
        let t0 = Instant::now();
        let script = vec![PutResult::Partial {
            failed: failed(&[1], "ProvisionedThroughputExceededException"),
            retry_after: None,
        }];
        let (f, sent, _) = run(packed(), script, None, t0);
        assert_eq!(
            sent,
            [lines(&packed()), vec!["line 2".into(), "line 3".into()]]
        );
        assert_eq!(f.accepted, 6, "lines, not records");

        // Given up after a partial failure: the rest goes back with its records.
        let script = vec![
            PutResult::Partial {
                failed: failed(&[0, 2], "InternalFailure"),
                retry_after: None,
            },
            failure(ErrorKind::Permanent, "AccessDeniedException", None),
        ];
        let (f, _, _) = run(packed(), script, None, t0);
        assert_eq!(f.accepted, 2);
        let u = f.undelivered.unwrap();
        assert_eq!(u.batch.record_count(), 2);
        assert_eq!(lines(&u.batch), ["line 0", "line 1", "line 4", "line 5"]);
    }

    #[test]
    fn too_large_halves_an_aggregate_down_to_its_lines() {
        let t0 = Instant::now();
        let too_large = || failure(ErrorKind::TooLarge, "ValidationException", None);
        let mut one = Batch::new();
        one.start_record();
        for l in ["a", "b", "c"] {
            one.push(l.as_bytes());
        }
        // [a b c] fails, [a] ok, [b c] fails, [b] oversized, [c] ok.
        let script = vec![
            too_large(),
            PutResult::Accepted,
            too_large(),
            too_large(),
            PutResult::Accepted,
        ];
        let (f, sent, _) = run(one, script, None, t0);
        assert_eq!(
            sent,
            [
                vec!["a", "b", "c"],
                vec!["a"],
                vec!["b", "c"],
                vec!["b"],
                vec!["c"]
            ]
        );
        assert_eq!(f.accepted, 2);
        assert_eq!(f.oversized, vec![b"b".to_vec()]);
    }

    #[test]
    fn the_stop_deadline_hands_back_everything_left_unsent() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(5);
        let script: Vec<_> = (0..100)
            .map(|_| failure(ErrorKind::Transient, "connection", None))
            .collect();
        let (f, sent, end) = run(batch(3), script, Some(deadline), t0);
        assert!(!sent.is_empty());
        assert_eq!(end, deadline, "waits end at the deadline");
        let u = f.undelivered.unwrap();
        assert!(!u.permanent);
        assert_eq!(u.batch.len(), 3);
        assert_eq!(f.accepted, 0);
    }

    #[test]
    fn backoff_stays_under_the_ceiling() {
        let b = Backoff::default();
        let mut rng = Rng::with_seed(9);
        for attempt in 0..40 {
            let ceiling = (Duration::from_millis(100) * 2u32.pow(attempt.min(20)))
                .min(Duration::from_secs(20));
            for _ in 0..100 {
                assert!(b.delay(attempt, &mut rng) < ceiling);
            }
        }
        let waits: Vec<_> = (0..1000).map(|_| b.delay(10, &mut rng)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_secs(2)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(18)));
    }
}
