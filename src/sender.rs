//! The sender thread: delivers sealed batches, retries what can be retried, keeps on disk what
//! cannot be sent yet, and replays it later.
//!
//! Hand-over: the poll loop queues batches with [`Sender::send`]; the queue is bounded by the
//! memory budget, which the poll loop enforces by pausing reads (see `daemon`); every time the
//! sender finishes a batch it wakes the loop through the `mio::Waker`. When memory runs short
//! and a spool is configured, the loop takes the oldest queued batch back
//! ([`Sender::take_oldest`]) and spools it, so reading continues.
//!
//! Delivery: a 200 answer with failed records resends only those, in their original order;
//! throttling and passing faults are retried with full-jitter exponential backoff (honouring
//! `x-amz-retry-after`), for as long as it takes; an answer saying the request is too large
//! splits the batch in halves down to single records, and a single record still too large is
//! kept as an oversized line; any other error that retrying cannot fix sends the batch to the
//! spool at once (logged once per distinct error), or without a spool counts it as dropped.
//!
//! Replay: spooled files are sent again, oldest first, at start-up, whenever Kinesis accepts a
//! request after a failure, and every `--retry-interval`; replay alternates with live batches so
//! neither starves. A file is deleted only when all its lines were accepted; a partly replayed
//! file is rewritten with what remains.
//!
//! Stopping: [`Sender::stop`] gives a deadline and closes the queue. The sender keeps delivering
//! queued batches until the deadline; what is left then goes to the spool (or is counted lost),
//! and the thread ends.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::batch::{Batch, Buffers, Keys};
use crate::kinesis::{self, ErrorKind};
use crate::log;
use crate::random::Rng;
use crate::sink::{Failure, PutResult, Sink};
use crate::spool::{Spool, SpoolError};
use crate::stats::Stats;

/// Full-jitter exponential backoff: a random wait in `0..min(cap, base * 2^attempt)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first ceiling.
    pub base: Duration,
    /// The largest ceiling.
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
}

/// How the sender works.
pub struct SenderConfig {
    /// The failed-attempts directory, if any.
    pub spool: Option<Arc<Spool>>,
    /// Retry waits.
    pub backoff: Backoff,
    /// How often spooled lines are tried again after an error retrying could not fix.
    pub retry_interval: Duration,
    /// Partition keys for replayed lines.
    pub keys: Keys,
    /// Records per replayed batch.
    pub max_records: usize,
    /// Bytes (data plus key) per replayed batch.
    pub max_request_bytes: usize,
    /// Where delivered batches leave their buffers for the reading thread to reuse.
    pub buffers: Buffers,
    /// The longest line a record holds next to its key.
    pub max_line: usize,
}

struct Queue {
    batches: VecDeque<Batch>,
    closed: bool,
    deadline: Option<Instant>,
}

/// State shared by the poll loop and the sender thread.
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
    stats: Arc<Stats>,
    waker: Arc<Waker>,
    /// Set by the thread just before its last wake-up: nothing more will happen.
    finished: AtomicBool,
    /// Whether the last attempt got records through (see [`Sender::healthy`]).
    healthy: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }

    /// Sleeps for `wait`, or less if a stop deadline comes first.
    fn sleep(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut q = self.lock();
        loop {
            let limit = q.deadline.map_or(until, |d| d.min(until));
            let now = Instant::now();
            if now >= limit {
                return;
            }
            q = self
                .changed
                .wait_timeout(q, limit - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The poll loop's handle on the sender thread.
pub struct Sender {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Starts the sender thread.
    pub fn spawn(
        sink: Box<dyn Sink>,
        config: SenderConfig,
        stats: Arc<Stats>,
        waker: Arc<Waker>,
    ) -> std::io::Result<Sender> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                batches: VecDeque::new(),
                closed: false,
                deadline: None,
            }),
            changed: Condvar::new(),
            stats,
            waker,
            finished: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
        });
        let replay_at = config.spool.as_ref().map(|_| Instant::now());
        let worker = Worker {
            sink,
            config,
            shared: Arc::clone(&shared),
            rng: Rng::from_entropy(),
            replay_at,
            replay_blocked_until: None,
            last_was_replay: false,
            logged: HashSet::new(),
        };
        let thread = thread::Builder::new()
            .name("sender".into())
            .spawn(move || worker.run())?;
        Ok(Sender {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a batch for delivery (its bytes are already counted in `buffered_bytes`).
    pub fn send(&self, batch: Batch) {
        let mut q = self.shared.lock();
        q.batches.push_back(batch);
        self.shared.changed.notify_all();
    }

    /// Batches waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.lock().batches.len()
    }

    /// Whether deliveries are going through: the last attempt got records accepted. While
    /// healthy, the poll loop keeps the queue short (memory stays small and writers wait for a
    /// moment); while not, it lets memory fill up to the budget and then spools.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Takes the oldest queued batch back (to spool it when memory runs short).
    pub fn take_oldest(&self) -> Option<Batch> {
        self.shared.lock().batches.pop_front()
    }

    /// Returns a batch taken with [`Sender::take_oldest`] to the front of the queue.
    pub fn put_back(&self, batch: Batch) {
        self.shared.lock().batches.push_front(batch);
        self.shared.changed.notify_all();
    }

    /// Asks the sender to finish by `deadline` and closes the queue.
    pub fn stop(&mut self, deadline: Instant) {
        let mut q = self.shared.lock();
        q.deadline = Some(q.deadline.map_or(deadline, |old| old.min(deadline)));
        q.closed = true;
        self.shared.changed.notify_all();
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

/// What the sender does next.
enum Work {
    Live(Batch),
    Replay,
    Done,
}

/// Why a batch was not (wholly) delivered: the records still unsent, and why.
struct Undelivered {
    batch: Batch,
    reason: String,
    permanent: bool,
}

struct Worker {
    sink: Box<dyn Sink>,
    config: SenderConfig,
    shared: Arc<Shared>,
    rng: Rng,
    /// When to try the spool again; `None`: nothing to replay.
    replay_at: Option<Instant>,
    /// After an error retrying cannot fix, no replay before this.
    replay_blocked_until: Option<Instant>,
    last_was_replay: bool,
    /// Error codes already logged at error level.
    logged: HashSet<String>,
}

impl Worker {
    fn run(mut self) {
        loop {
            match self.next_work() {
                Work::Live(batch) => {
                    self.last_was_replay = false;
                    let size = batch.memory() as u64;
                    self.deliver_live(batch);
                    Stats::sub(&self.shared.stats.buffered_bytes, size);
                    let _ = self.shared.waker.wake();
                }
                Work::Replay => {
                    self.last_was_replay = true;
                    self.replay_one();
                }
                Work::Done => break,
            }
        }
        // The poll loop waits for this flag, and the wake-up makes it look.
        self.shared.finished.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
    }

    /// Waits for a live batch or a due replay; alternates the two when both wait.
    fn next_work(&mut self) -> Work {
        let mut q = self.shared.lock();
        loop {
            let now = Instant::now();
            let stopping = q.deadline.is_some();
            let replay_due = !stopping && self.replay_at.is_some_and(|at| at <= now);
            if replay_due && (q.batches.is_empty() || !self.last_was_replay) {
                return Work::Replay;
            }
            if let Some(b) = q.batches.pop_front() {
                // Room in the queue: the poll loop may read on while this batch is sent.
                let _ = self.shared.waker.wake();
                return Work::Live(b);
            }
            if q.closed {
                return Work::Done;
            }
            q = match self.replay_at.filter(|_| !stopping) {
                Some(at) => {
                    self.shared
                        .changed
                        .wait_timeout(q, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .shared
                    .changed
                    .wait(q)
                    .unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    fn deliver_live(&mut self, batch: Batch) {
        let mut batch = batch;
        let mut warned_full: Option<Instant> = None;
        loop {
            let n = batch.len();
            let u = match self.deliver(batch) {
                Ok(()) => {
                    // Kinesis accepts requests: what waits on disk may go too.
                    if self.config.spool.is_some() {
                        let earliest = self
                            .replay_blocked_until
                            .unwrap_or_else(Instant::now)
                            .max(Instant::now());
                        self.replay_at = Some(
                            self.replay_at
                                .map_or(earliest, |at| at.min(earliest))
                                .max(earliest),
                        );
                    }
                    return;
                }
                Err(u) => u,
            };
            if u.permanent {
                self.block_replay();
            }
            log!(
                Debug,
                "{} of {n} records not delivered: {}",
                u.batch.len(),
                u.reason
            );
            let stopping = self.shared.deadline().is_some();
            match self.config.spool.clone() {
                // A full spool never loses what it holds: keep the batch in memory (reading
                // pauses meanwhile) and try again later; only a stop gives up on it.
                Some(spool) if !stopping && spool.would_overflow(u.batch.size() as u64) => {
                    let now = Instant::now();
                    if warned_full.is_none_or(|at| now >= at + Duration::from_secs(30)) {
                        warned_full = Some(now);
                        log!(Warn, "the failed-attempts directory is full; holding {} lines in memory and trying again", u.batch.len());
                    }
                    self.shared.sleep(self.config.retry_interval);
                    batch = u.batch;
                }
                _ => {
                    self.set_aside(&u.batch, &u.reason);
                    return;
                }
            }
        }
    }

    fn block_replay(&mut self) {
        let until = Instant::now() + self.config.retry_interval;
        self.replay_blocked_until = Some(until);
        if self.config.spool.is_some() {
            self.replay_at = Some(until);
        }
    }

    /// Sends (part of) the oldest spool file.
    fn replay_one(&mut self) {
        let Some(spool) = self.config.spool.clone() else {
            self.replay_at = None;
            return;
        };
        let files = match spool.pending_files() {
            Ok(f) => f,
            Err(e) => {
                log!(Error, "cannot list {}: {e}", spool.dir().display());
                self.replay_at = Some(Instant::now() + self.config.retry_interval);
                return;
            }
        };
        let Some(path) = files.first() else {
            self.replay_at = None;
            return;
        };
        let Ok(Some(lines)) = spool.read(path) else {
            return; // Gone, or renamed aside as unreadable: look again next time.
        };
        let (batch, taken) = self.replay_batch(&spool, &lines);
        let sent = batch.len();
        let outcome = if batch.is_empty() {
            Ok(())
        } else {
            self.deliver(batch)
        };
        let remaining: Vec<Vec<u8>> = match &outcome {
            Ok(()) => lines[taken..].to_vec(),
            Err(u) => u
                .batch
                .records()
                .map(|(d, _)| d.to_vec())
                .chain(lines[taken..].iter().cloned())
                .collect(),
        };
        let result = if remaining.is_empty() {
            spool.remove(path)
        } else {
            spool.rewrite(path, &remaining)
        };
        if let Err(e) = result {
            log!(Error, "cannot update {}: {e}", path.display());
        }
        match outcome {
            Ok(()) => {
                Stats::add(&self.shared.stats.lines_replayed, sent as u64);
                log!(Debug, "replayed {sent} lines from {}", path.display());
                self.replay_at = Some(Instant::now());
            }
            Err(u) => {
                if u.permanent {
                    self.block_replay();
                } else {
                    self.replay_at = Some(Instant::now() + self.config.retry_interval);
                }
            }
        }
    }

    /// The first lines of a spool file that fit one request; lines too long for a record are
    /// moved to the oversized directory. Returns the batch and how many lines it consumed.
    fn replay_batch(&mut self, spool: &Spool, lines: &[Vec<u8>]) -> (Batch, usize) {
        let mut batch = Batch::new();
        let mut key = Vec::new();
        let mut taken = 0;
        for line in lines {
            if line.len() > self.config.max_line {
                keep_oversized(Some(spool), line, &self.shared.stats);
                taken += 1;
                continue;
            }
            key.clear();
            self.config.keys.fill(&mut key);
            if batch.len() == self.config.max_records
                || batch.size() + line.len() + key.len() > self.config.max_request_bytes
            {
                break;
            }
            batch.push(line, &key);
            taken += 1;
        }
        (batch, taken)
    }

    /// Delivers `batch`, retrying for as long as retrying can help and the stop deadline allows.
    fn deliver(&mut self, batch: Batch) -> Result<(), Undelivered> {
        let stats = Arc::clone(&self.shared.stats);
        let mut pending = batch;
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            let deadline = self.shared.deadline();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Undelivered {
                    batch: pending,
                    reason: "the stop deadline passed before delivery".into(),
                    permanent: false,
                });
            }
            Stats::add(&stats.requests, 1);
            if attempt > 0 {
                Stats::add(&stats.retries, 1);
            }
            let result = self.sink.put(&pending, deadline);
            let progress = matches!(result, PutResult::Accepted | PutResult::Partial { .. });
            self.shared.healthy.store(progress, Ordering::Relaxed);
            let wait = match result {
                PutResult::Accepted => {
                    Stats::add(&stats.records_sent, pending.len() as u64);
                    if attempt > 0 {
                        log!(
                            Debug,
                            "delivered {} records after {} retries",
                            pending.len(),
                            attempt
                        );
                    }
                    self.config.buffers.recycle(pending);
                    return Ok(());
                }
                PutResult::Partial { failed, .. } => {
                    let throttled = failed
                        .iter()
                        .filter(|f| kinesis::classify_record(&f.code) == ErrorKind::Throttled)
                        .count();
                    Stats::add(&stats.records_sent, (pending.len() - failed.len()) as u64);
                    Stats::add(&stats.throttled_records, throttled as u64);
                    log!(
                        Debug,
                        "{} of {} records failed ({} throttled; first: {}: {}); resending them",
                        failed.len(),
                        pending.len(),
                        throttled,
                        failed[0].code,
                        kinesis::one_line(&failed[0].message, 200)
                    );
                    let indices: Vec<usize> = failed.iter().map(|f| f.index).collect();
                    pending = pending.subset(&indices);
                    // Records went through: throttling is per shard and partial, so wait a
                    // little, but do not escalate as for a failed request.
                    let wait = self.config.backoff.delay(0, &mut self.rng);
                    attempt = 0;
                    wait
                }
                PutResult::Failed(f) if f.kind == ErrorKind::ExpiredCredentials && !refreshed => {
                    log!(
                        Info,
                        "credentials expired ({}); refreshing and retrying",
                        f.code
                    );
                    self.sink.credentials_expired();
                    refreshed = true;
                    Duration::ZERO
                }
                PutResult::Failed(f) if f.kind.is_retryable() => {
                    if f.kind == ErrorKind::ExpiredCredentials {
                        self.sink.credentials_expired();
                    }
                    self.log_retry(&f, attempt, pending.len());
                    Stats::count_error(&stats, &f.code);
                    if f.kind == ErrorKind::Throttled {
                        Stats::add(&stats.throttled_records, pending.len() as u64);
                    }
                    let jitter = self.config.backoff.delay(attempt, &mut self.rng);
                    f.retry_after.map_or(jitter, |r| r.max(jitter))
                }
                PutResult::Failed(f) if f.kind == ErrorKind::TooLarge => {
                    Stats::count_error(&stats, &f.code);
                    return self.split(pending, &f);
                }
                PutResult::Failed(f) => {
                    Stats::count_error(&stats, &f.code);
                    self.log_permanent(&f);
                    return Err(Undelivered {
                        batch: pending,
                        reason: f.code,
                        permanent: true,
                    });
                }
            };
            attempt = attempt.saturating_add(1);
            self.shared.sleep(wait);
        }
    }

    /// The request was too large for the stream: halves, down to single records.
    fn split(&mut self, batch: Batch, f: &Failure) -> Result<(), Undelivered> {
        if batch.len() == 1 {
            let (data, _) = batch.record(0);
            log!(Warn, "a record of {} bytes is too large for the stream ({}); keeping it as an oversized line", data.len(), f.message);
            keep_oversized(self.config.spool.as_deref(), data, &self.shared.stats);
            return Ok(());
        }
        log!(
            Debug,
            "request of {} records too large ({}); splitting it",
            batch.len(),
            f.code
        );
        let half = batch.len() / 2;
        let first: Vec<usize> = (0..half).collect();
        let second: Vec<usize> = (half..batch.len()).collect();
        match self.deliver(batch.subset(&first)) {
            Ok(()) => self.deliver(batch.subset(&second)),
            Err(mut u) => {
                // Keep order: what the first half left, then the whole second half.
                let rest = batch.subset(&second);
                for (d, k) in rest.records() {
                    u.batch.push(d, k);
                }
                Err(u)
            }
        }
    }

    fn log_retry(&self, f: &Failure, attempt: u32, records: usize) {
        let level = if attempt == 0 {
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
                "request to {} failed: {}: {}; {what}retrying {records} records",
                self.sink.describe(),
                f.code,
                f.message
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
        let next = if self.config.spool.is_some() {
            format!(
                "; keeping the lines and trying again every {:?}",
                self.config.retry_interval
            )
        } else {
            String::new()
        };
        log::write(
            level,
            format_args!(
                "request to {} failed and will not succeed if repeated: {}{next}",
                self.sink.describe(),
                f.message
            ),
        );
    }

    fn set_aside(&self, batch: &Batch, reason: &str) {
        set_aside(
            self.config.spool.as_deref(),
            batch,
            reason,
            &self.shared.stats,
        );
    }
}

/// Keeps undeliverable lines in the spool, or (with none, or if that fails) counts and logs
/// them as dropped.
pub fn set_aside(spool: Option<&Spool>, batch: &Batch, reason: &str, stats: &Stats) {
    let n = batch.len() as u64;
    if n == 0 {
        return;
    }
    match spool.map(|s| (s, s.write_batch(batch))) {
        Some((_, Ok(path))) => {
            Stats::add(&stats.lines_spooled, n);
            log!(
                Debug,
                "kept {n} undelivered lines in {} ({reason})",
                path.display()
            );
        }
        Some((s, Err(e))) => {
            Stats::add(&stats.lines_dropped, n);
            log!(
                Error,
                "dropped {n} lines: could not keep them in {}: {e} ({reason})",
                s.dir().display()
            );
        }
        None => {
            Stats::add(&stats.lines_dropped, n);
            log!(
                Error,
                "dropped {n} lines ({reason}); set --failed-attempts-dir to keep them"
            );
        }
    }
}

/// Keeps one line too long for a record in the spool's oversized directory, or drops it.
pub fn keep_oversized(spool: Option<&Spool>, line: &[u8], stats: &Stats) {
    let kept = spool.map(|s| {
        s.begin_oversized().and_then(|mut f| {
            f.write(line).map_err(SpoolError::Io)?;
            s.commit_oversized(f)
        })
    });
    match kept {
        Some(Ok(path)) => log!(
            Info,
            "kept a line of {} bytes in {}",
            line.len(),
            path.display()
        ),
        Some(Err(e)) => {
            Stats::add(&stats.lines_dropped, 1);
            log!(Error, "dropped a line of {} bytes: {e}", line.len());
        }
        None => {
            Stats::add(&stats.lines_dropped, 1);
            log!(Error, "dropped a line of {} bytes that no record can hold; set --failed-attempts-dir to keep such lines", line.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Full jitter spreads waits over the whole range.
        let waits: Vec<_> = (0..1000).map(|_| b.delay(10, &mut rng)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_secs(2)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(18)));
    }
}
