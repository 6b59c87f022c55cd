//! The sender thread: takes jobs from a bounded channel, delivers each one, and reports how it
//! ended.
//!
//! Hand-off: the poll loop offers jobs with [`Sender::try_send`]; the channel holds at most
//! [`QUEUED_JOBS`], and a full channel hands the job back, so the loop's backlog keeps it (and
//! decides whether to wait or to spill). The sender owns nothing it is not working on: every
//! job ends in exactly one [`Report`] on the way back, which accounts for each of its records
//! (accepted, too large for any record, or undelivered with the reason), and wakes the loop
//! through the `mio::Waker`. What to do with what comes back is the backlog's business.
//!
//! Delivery itself is decided by [`crate::delivery::Delivery`]; this thread only carries it
//! out: it makes the attempts, sleeps the waits, logs and counts.
//!
//! Stopping: [`Sender::stop`] sets the shared deadline and closes the channel. Jobs already
//! queued are still delivered until the deadline; after it, each is reported undelivered at
//! once, and the thread ends when the channel is empty.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::batch::{Batch, Buffers};
use crate::delivery::{Backoff, Decision, Delivery, Finish, Step};
use crate::log;
use crate::log::one_line;
use crate::random::Rng;
use crate::sink::ErrorKind;
use crate::sink::{FailedRecord, Failure, PutResult, Sink};
use crate::stats::Stats;
use crate::stop::StopSignal;

/// Jobs queued for the sender beyond the one it is working on. One is ready when a request
/// ends, while the reading thread fills and measures the next; every further one would hold a
/// batch's lines in memory (at 500 lines of 4 KiB, 2 MB) and gain nothing, since the sender
/// sends one request at a time. `scripts/bench`, static build, TLS, medians of two runs of
/// five, when a batch kept its body too: with 2, 1 KiB lines peaked at 9.2 MB and 4 KiB lines
/// at 14.4–22.8 MB; with 1, 8.0 MB and 15.2 MB, and CPU per 100 MB did not rise.
pub const QUEUED_JOBS: usize = 1;

/// A batch to deliver, with the backlog's name for it.
#[derive(Debug)]
pub struct Job {
    /// The backlog's identifier, echoed in the report.
    pub id: u64,
    /// The records.
    pub batch: Batch,
}

/// How a job ended.
#[derive(Debug)]
pub struct Report {
    /// The job's identifier.
    pub id: u64,
    /// What became of each record.
    pub finish: Finish,
}

/// State shared with the thread.
struct Shared {
    stats: Arc<Stats>,
    waker: Arc<Waker>,
    stop: Arc<StopSignal>,
    /// Set by the thread just before its last wake-up: nothing more will happen.
    finished: AtomicBool,
    /// Whether the last attempt got records through (see [`Sender::healthy`]).
    healthy: AtomicBool,
    /// Jobs in the channel, not yet taken by the thread (see [`Sender::queue_full`]).
    queued: AtomicUsize,
}

/// The poll loop's handle on the sender thread.
pub struct Sender {
    jobs: Option<SyncSender<Job>>,
    reports: Receiver<Report>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Starts the sender thread. `stop` is the daemon's stop deadline; `buffers` is where
    /// delivered batches leave their buffers for reuse.
    pub fn spawn(
        sink: Box<dyn Sink>,
        backoff: Backoff,
        buffers: Buffers,
        stats: Arc<Stats>,
        waker: Arc<Waker>,
        stop: Arc<StopSignal>,
    ) -> std::io::Result<Sender> {
        let (jobs, inbox) = mpsc::sync_channel(QUEUED_JOBS);
        let (outbox, reports) = mpsc::channel();
        let shared = Arc::new(Shared {
            stats,
            waker,
            stop,
            finished: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            queued: AtomicUsize::new(0),
        });
        let worker = Worker {
            sink,
            backoff,
            buffers,
            shared: Arc::clone(&shared),
            rng: Rng::from_entropy(),
            logged: HashSet::new(),
            stall: Stall::default(),
        };
        let thread = thread::Builder::new()
            .name("sender".into())
            .spawn(move || worker.run(inbox, outbox))?;
        Ok(Sender {
            jobs: Some(jobs),
            reports,
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a job, or hands it back if the channel is full (or closed by a stop).
    // The job comes back as it went, moved: boxing it would allocate at every full channel.
    #[allow(clippy::result_large_err)]
    pub fn try_send(&self, job: Job) -> Result<(), Job> {
        let Some(tx) = &self.jobs else {
            return Err(job);
        };
        // Counted before it can be taken, so the thread's count never goes below zero.
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        tx.try_send(job).map_err(|e| {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
            }
        })
    }

    /// Whether the channel holds [`QUEUED_JOBS`] jobs the thread has not taken. While it does
    /// and the sender is healthy, the loop reads no more: a batch filled now would only wait,
    /// holding its memory. The thread wakes the loop when it takes a job from a full channel.
    pub fn queue_full(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) >= QUEUED_JOBS
    }

    /// Reports of finished jobs not yet taken.
    pub fn reports(&self) -> impl Iterator<Item = Report> + '_ {
        self.reports.try_iter()
    }

    /// Whether deliveries are going through: the last attempt got records accepted. While
    /// healthy, the backlog keeps the queue short (memory stays small and writers wait for a
    /// moment); while not, it lets memory fill up to the budget and then spools.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Asks the sender to finish by `deadline` (or earlier, if one was set) and closes the
    /// channel: no more jobs.
    pub fn stop(&mut self, deadline: Instant) {
        self.shared.stop.stop_by(deadline);
        self.jobs = None;
    }

    /// Whether the thread is done with its work (it may still be exiting: [`Sender::join`]).
    pub fn is_finished(&self) -> bool {
        self.shared.finished.load(Ordering::Acquire)
            || self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the thread to end.
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log!(Error, "the sender thread panicked");
            }
        }
    }
}

struct Worker {
    sink: Box<dyn Sink>,
    backoff: Backoff,
    buffers: Buffers,
    shared: Arc<Shared>,
    rng: Rng,
    /// Error codes already logged at error level.
    logged: HashSet<String>,
    stall: Stall,
}

impl Worker {
    fn run(mut self, inbox: Receiver<Job>, outbox: mpsc::Sender<Report>) {
        // Ends when the loop closes the channel (a stop) and every queued job is reported.
        // Each report wakes the loop, but when the next job is already waiting, the wake-up
        // that taking it gives announces both: one wake-up per request instead of two while
        // the loop keeps the channel full (each one that finds the loop asleep costs an
        // interrupt of the other core).
        // `report_waiting`: the last report has not woken the loop yet.
        let mut next = inbox.recv().ok().map(|job| (job, false));
        while let Some((job, report_waiting)) = next {
            let was_full = self.shared.queued.fetch_sub(1, Ordering::AcqRel) >= QUEUED_JOBS;
            if was_full || report_waiting {
                // The loop may be waiting for room in the channel to read again, or has a
                // report to take.
                let _ = self.shared.waker.wake();
            }
            let finish = self.deliver(job.batch);
            let _ = outbox.send(Report { id: job.id, finish });
            next = match inbox.try_recv() {
                Ok(job) => Some((job, true)),
                Err(TryRecvError::Empty) => {
                    let _ = self.shared.waker.wake();
                    inbox.recv().ok().map(|job| (job, false))
                }
                Err(TryRecvError::Disconnected) => None,
            };
        }
        // The poll loop waits for this flag, and the wake-up makes it look.
        self.shared.finished.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
    }

    /// Carries out a delivery: attempts and waits until it is done or the deadline passes.
    fn deliver(&mut self, batch: Batch) -> Finish {
        let stats = Arc::clone(&self.shared.stats);
        let mut delivery = Delivery::new(batch, self.backoff);
        let mut retrying = false;
        loop {
            let deadline = self.shared.stop.deadline();
            let decision = match delivery.next(Instant::now(), deadline) {
                Step::Done => return delivery.finish(),
                Step::Wait(until) => {
                    self.shared.stop.sleep_until(until);
                    continue;
                }
                Step::Send(pending) => {
                    Stats::add(&stats.requests, 1);
                    if retrying {
                        Stats::add(&stats.retries, 1);
                    }
                    let records = pending.record_count();
                    let result = self.sink.put(pending, deadline);
                    self.count_accepted(pending, &result);
                    let decision = delivery.on_result(result, Instant::now(), &mut self.rng);
                    self.note(&decision, records);
                    decision
                }
            };
            if let Some(spent) = delivery.take_spent() {
                self.buffers.recycle(spent);
            }
            retrying = matches!(decision, Decision::Retry { .. } | Decision::Resend { .. });
        }
    }

    /// Counts the lines and billed units of the records `result` says were accepted.
    fn count_accepted(&self, batch: &Batch, result: &PutResult) {
        let failed: &[FailedRecord] = match result {
            PutResult::Accepted => &[],
            PutResult::Partial { failed, .. } => failed,
            PutResult::Failed(_) => return,
        };
        let mut failed = failed.iter().map(|f| f.index).peekable();
        let (mut lines, mut units) = (0, 0);
        for r in 0..batch.record_count() {
            if failed.next_if_eq(&r).is_some() {
                continue;
            }
            lines += batch.record_lines(r).len() as u64;
            units += self.sink.payload_units(batch, r).unwrap_or(0);
        }
        let stats = &self.shared.stats;
        Stats::add(&stats.user_records_sent, lines);
        Stats::add(&stats.payload_units, units);
    }

    /// Counts and logs what an answer made the delivery decide.
    fn note(&mut self, decision: &Decision, records: usize) {
        let progress = matches!(decision, Decision::Accepted(_))
            || matches!(decision, Decision::Resend { accepted, .. } if *accepted > 0);
        if self.shared.healthy.swap(progress, Ordering::Relaxed) != progress {
            // The loop may be waiting for a healthy sender to take its batch: a stuck one lets
            // it read on (up to the budget) and spill, which it learns of only when woken.
            let _ = self.shared.waker.wake();
        }
        self.note_stall(decision, progress, Instant::now());
        let stats = &self.shared.stats;
        match decision {
            Decision::Accepted(n) => Stats::add(&stats.records_sent, *n as u64),
            Decision::Resend {
                accepted,
                failed,
                throttled,
                wait,
                asked,
            } => {
                Stats::add(&stats.records_sent, *accepted as u64);
                Stats::add(&stats.throttled_records, *throttled as u64);
                let other = failed.len() - throttled;
                Stats::add(&stats.failed_records, other as u64);
                let first = &failed[0];
                let level = if other > 0 {
                    log::Level::Info
                } else {
                    log::Level::Debug
                };
                log::write(
                    level,
                    format_args!(
                        "{} of {records} records failed ({throttled} throttled; first: {}: {}); resending them{}",
                        failed.len(),
                        first.code,
                        one_line(&first.message, 200),
                        asked_wait(*asked, *wait)
                    ),
                );
            }
            Decision::Retry {
                failure,
                refresh: true,
                wait,
                ..
            } if wait.is_zero() => {
                log!(
                    Info,
                    "credentials expired ({}); refreshing and retrying",
                    failure.code
                );
                self.sink.credentials_expired();
            }
            Decision::Retry {
                failure,
                attempt,
                wait,
                refresh,
            } => {
                Stats::count_error(stats, &failure.code);
                if failure.kind == ErrorKind::Throttled {
                    Stats::add(&stats.throttled_records, records as u64);
                }
                if *refresh {
                    self.sink.credentials_expired();
                }
                self.log_retry(failure, *attempt, records, *wait);
            }
            Decision::Split(f) => {
                Stats::count_error(stats, &f.code);
                log!(
                    Debug,
                    "request of {records} records too large ({}); splitting it",
                    f.code
                );
            }
            Decision::Oversized(f) => {
                Stats::count_error(stats, &f.code);
                log!(
                    Warn,
                    "a record is too large for the stream ({}: {}); keeping it as an oversized line",
                    f.code,
                    one_line(&f.message, 200)
                );
            }
            Decision::GiveUp(f) => {
                Stats::count_error(stats, &f.code);
                self.log_permanent(f);
            }
        }
    }

    /// Warns about a delivery that has not got through for a while (the lines about each
    /// attempt go to debug after the first), and says when it resumes.
    fn note_stall(&mut self, decision: &Decision, progress: bool, now: Instant) {
        if progress {
            if let Some(s) = self.stall.progressed(now) {
                log!(
                    Info,
                    "delivery to {} resumed after {}s and {} failed attempts",
                    self.sink.describe(),
                    s.lasted.as_secs(),
                    s.attempts
                );
            }
            return;
        }
        let (code, message) = match decision {
            Decision::Retry { failure: f, .. } | Decision::GiveUp(f) => (&f.code, &f.message),
            Decision::Resend { failed, .. } => (&failed[0].code, &failed[0].message),
            _ => return,
        };
        if let Some(s) = self.stall.failed(code, now) {
            log!(
                Warn,
                "delivery to {} has stalled for {}s: {} attempts failed since records last got through; the last: {code}: {}",
                self.sink.describe(),
                s.lasted.as_secs(),
                s.attempts,
                one_line(message, 300)
            );
        }
    }

    fn log_retry(&self, f: &Failure, attempt: u32, records: usize, wait: std::time::Duration) {
        let level = if attempt == 0 || f.retry_after.is_some() {
            log::Level::Warn
        } else {
            log::Level::Debug
        };
        let what = if f.kind == ErrorKind::ClockSkew {
            "the clock differs from the service's by over 5 minutes; "
        } else {
            ""
        };
        log::write(
            level,
            format_args!(
                "request to {} failed: {}: {}; {what}retrying {records} records{}",
                self.sink.describe(),
                f.code,
                f.message,
                asked_wait(f.retry_after, wait)
            ),
        );
    }

    /// Logs an error retrying cannot fix: in full the first time its code is seen.
    fn log_permanent(&mut self, f: &Failure) {
        let level = if self.logged.insert(f.code.clone()) {
            log::Level::Error
        } else {
            log::Level::Debug
        };
        log::write(
            level,
            format_args!(
                "request to {} failed and will not succeed if repeated: {}; the lines are kept and tried again later",
                self.sink.describe(),
                f.message
            ),
        );
    }
}

/// A delivery that is not getting through is warned about once it has lasted this long, and
/// again at most this often for each cause.
pub const STALL_WARN_EVERY: Duration = Duration::from_secs(30);

/// How long deliveries have been failing: since the first failed attempt after records last
/// got through, how many attempts failed, and when each cause (error code) was last warned
/// about. A stall is warned about once it has lasted [`STALL_WARN_EVERY`], then at most that
/// often per cause, so that it stays visible without flooding the log.
#[derive(Debug, Default)]
struct Stall {
    since: Option<Instant>,
    attempts: u64,
    warned: HashMap<String, Instant>,
}

/// What a stall amounts to so far.
#[derive(Debug, PartialEq, Eq)]
struct Stalled {
    lasted: Duration,
    attempts: u64,
}

impl Stall {
    /// Counts an attempt that failed with `code` at `now`; `Some` when it is time to warn.
    fn failed(&mut self, code: &str, now: Instant) -> Option<Stalled> {
        let since = *self.since.get_or_insert(now);
        self.attempts += 1;
        let lasted = now.saturating_duration_since(since);
        let recently = |at: &Instant| now.saturating_duration_since(*at) < STALL_WARN_EVERY;
        if lasted < STALL_WARN_EVERY || self.warned.get(code).is_some_and(recently) {
            return None;
        }
        self.warned.insert(code.to_string(), now);
        Some(Stalled {
            lasted,
            attempts: self.attempts,
        })
    }

    /// Records got through at `now`: the stall is over. `Some` if it was warned about.
    fn progressed(&mut self, now: Instant) -> Option<Stalled> {
        let since = self.since.take();
        let attempts = std::mem::take(&mut self.attempts);
        if std::mem::take(&mut self.warned).is_empty() {
            return None;
        }
        Some(Stalled {
            lasted: since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s)),
            attempts,
        })
    }
}

/// `; the service asked to wait …` when it did, with the wait actually taken.
fn asked_wait(asked: Option<std::time::Duration>, wait: std::time::Duration) -> String {
    match asked {
        Some(a) if a > wait => format!(
            " after {wait:?} (the service asked for {a:?}; waits are capped at the retry ceiling)"
        ),
        Some(a) => format!(" after {wait:?} (the service asked for {a:?})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::PutResult;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Answers from a script; records what it was sent.
    struct ScriptedSink {
        script: Arc<Mutex<Vec<PutResult>>>,
        sent: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for ScriptedSink {
        fn put(&mut self, batch: &mut Batch, _deadline: Option<Instant>) -> PutResult {
            self.sent.lock().unwrap().push(batch.len());
            self.script
                .lock()
                .unwrap()
                .pop()
                .unwrap_or(PutResult::Accepted)
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    /// A transient failure, as a lost connection gives.
    fn failing() -> PutResult {
        PutResult::Failed(Failure {
            kind: ErrorKind::Transient,
            code: "connection".into(),
            message: String::new(),
            retry_after: None,
        })
    }

    /// A sender answered from `script` (last answer first), backing off by `backoff`; with
    /// the script and what was sent, to watch and hold it.
    #[allow(clippy::type_complexity)]
    fn scripted(
        script: Vec<PutResult>,
        backoff: Backoff,
        waker: Arc<Waker>,
    ) -> (Sender, Arc<Mutex<Vec<PutResult>>>, Arc<Mutex<Vec<usize>>>) {
        let script = Arc::new(Mutex::new(script));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let sender = Sender::spawn(
            Box::new(ScriptedSink {
                script: Arc::clone(&script),
                sent: Arc::clone(&sent),
            }),
            backoff,
            Buffers::default(),
            Arc::new(Stats::default()),
            waker,
            Arc::new(StopSignal::default()),
        )
        .unwrap();
        (sender, script, sent)
    }

    fn batch(n: usize) -> Batch {
        let mut b = Batch::new();
        for i in 0..n {
            b.push(format!("{i}").as_bytes());
        }
        b
    }

    /// After the first failed attempt, repeated failures (ExpiredToken, credentials that
    /// could not be had) were logged at debug only: a delivery stalled for hours showed one
    /// warning at its start.
    #[test]
    fn a_stall_is_warned_about_every_30_s_per_cause_with_how_long_and_how_many_attempts() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut stall = Stall::default();
        assert_eq!(stall.progressed(at(0)), None, "nothing to report");
        // Every 2 s a failure; the first warning once it has lasted 30 s.
        let mut warnings = Vec::new();
        for t in (0..=100).step_by(2) {
            let code = if t < 60 {
                "credentials"
            } else {
                "ExpiredTokenException"
            };
            if let Some(s) = stall.failed(code, at(t)) {
                warnings.push((t, code, s.lasted.as_secs(), s.attempts));
            }
        }
        assert_eq!(
            warnings,
            [
                (30, "credentials", 30, 16),
                (60, "ExpiredTokenException", 60, 31),
                (90, "ExpiredTokenException", 90, 46),
            ]
        );
        assert_eq!(
            stall.progressed(at(101)),
            Some(Stalled {
                lasted: Duration::from_secs(101),
                attempts: 51
            })
        );
        // A new stall starts from nothing.
        assert_eq!(stall.failed("credentials", at(102)), None);
        assert_eq!(stall.progressed(at(103)), None, "not warned about");
    }

    /// The loop waits for a healthy sender whose channel is full; if the sender then turned
    /// unhealthy in a long delivery, nothing woke the loop to read on and spill until its next
    /// timer (none at all on standard input with no stats interval).
    #[test]
    fn the_loop_is_woken_when_the_sender_turns_unhealthy_and_the_channel_is_counted() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let script: Vec<PutResult> = (0..100_000).map(|_| failing()).collect();
        let (mut sender, script, sent) = scripted(
            script,
            Backoff {
                base: Duration::from_millis(50),
                cap: Duration::from_millis(50),
            },
            waker,
        );
        assert!(!sender.queue_full() && sender.healthy());
        // Held inside its first attempt, the sender has taken one job; the next is queued.
        let gate = script.lock().unwrap();
        assert!(sender
            .try_send(Job {
                id: 0,
                batch: batch(1)
            })
            .is_ok());
        let deadline = Instant::now() + Duration::from_secs(30);
        while sent.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the sender takes the first job");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!sender.queue_full(), "the job taken is not counted");
        assert!(sender
            .try_send(Job {
                id: 1,
                batch: batch(1)
            })
            .is_ok());
        assert!(sender.queue_full(), "one job queued fills the channel");
        assert!(sender
            .try_send(Job {
                id: 2,
                batch: batch(1)
            })
            .is_err());
        assert!(sender.queue_full(), "a job handed back is not counted");
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        // The attempt fails: the sender is unhealthy, still inside the first delivery.
        drop(gate);
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        assert!(!events.is_empty(), "woken when the sender turned unhealthy");
        assert!(!sender.healthy());
        assert_eq!(sender.reports().count(), 0, "no delivery has ended");
        sender.stop(Instant::now());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sender.is_finished() {
            assert!(Instant::now() < deadline, "the sender ends");
            std::thread::sleep(Duration::from_millis(5));
        }
        sender.join();
        assert!(!sender.queue_full(), "every queued job was taken");
    }

    #[test]
    fn every_job_is_reported_once_and_a_stop_hands_back_what_is_queued() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).unwrap());
        // The first job is accepted; then the destination fails for good.
        let mut script: Vec<PutResult> = (0..10_000).map(|_| failing()).collect();
        script.push(PutResult::Accepted);
        let (mut sender, script, sent) = scripted(
            script,
            Backoff {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(5),
            },
            waker,
        );
        let offer = |id| {
            sender
                .try_send(Job {
                    id,
                    batch: batch(3),
                })
                .is_ok()
        };
        // The script's lock holds the sender inside its first attempt (it records the batch,
        // then waits for the script), so the channel's room is all that takes jobs.
        let gate = script.lock().unwrap();
        assert!(offer(0), "an empty channel takes a job");
        let deadline = Instant::now() + Duration::from_secs(30);
        while sent.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the sender takes the first job");
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut offered = 1;
        let mut handed_back = 0;
        for id in 1..5 {
            match offer(id) {
                true => offered += 1,
                false => handed_back += 1,
            }
        }
        drop(gate);
        assert_eq!(
            offered,
            1 + QUEUED_JOBS,
            "the channel takes {QUEUED_JOBS} jobs besides the one being sent"
        );
        assert_eq!(offered + handed_back, 5);
        sender.stop(Instant::now() + Duration::from_millis(200));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sender.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the sender ends after its deadline"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        sender.join();
        let reports: Vec<Report> = sender.reports().collect();
        assert_eq!(reports.len(), offered, "one report per job taken");
        let accepted: u64 = reports.iter().map(|r| r.finish.accepted).sum();
        let back: usize = reports
            .iter()
            .filter_map(|r| r.finish.undelivered.as_ref())
            .map(|u| u.batch.len())
            .sum();
        assert_eq!(
            accepted as usize + back,
            offered * 3,
            "every record accounted for"
        );
        assert_eq!(accepted, 3);
        assert!(
            sent.lock().unwrap().len() > 2,
            "it retried until the deadline"
        );
    }
}
