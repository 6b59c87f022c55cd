//! The sender thread: takes sealed batches off a bounded channel and delivers them.
//!
//! The poll loop hands batches over with [`Sender::try_send`]; when the channel is full it
//! stops reading, and the sender wakes it through the `mio::Waker` each time it takes a batch
//! off, so reading resumes. The sender makes attempts through a [`Sink`]; a 200 answer with
//! failed records resends only those, in their original order; throttling and passing faults
//! are retried with full-jitter exponential backoff, for as long as it takes; an error that
//! retrying cannot fix sets the batch's lines aside in the failed-attempts directory (or, with
//! none configured, counts and logs them as dropped).
//!
//! Stopping: [`Sender::stop`] gives a deadline and closes the channel. The sender keeps
//! delivering until the channel is empty or the deadline passes; what is left then is set
//! aside the same way, and the thread ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::Waker;

use crate::batch::Batch;
use crate::kinesis::{self, ErrorKind};
use crate::log;
use crate::random::Rng;
use crate::sink::{PutResult, Sink};
use crate::spool;
use crate::stats::Stats;

/// Batches the channel holds between the poll loop and the sender.
pub const CHANNEL_BATCHES: usize = 2;

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

/// How the sender treats undeliverable data.
#[derive(Clone, Debug, Default)]
pub struct SenderConfig {
    /// Where lines that cannot be delivered are kept.
    pub failed_attempts_dir: Option<PathBuf>,
    /// Retry waits.
    pub backoff: Backoff,
}

/// State shared by the poll loop and the sender thread.
struct Shared {
    /// Set once a stop was asked for: deliver what you can until then.
    deadline: Mutex<Option<Instant>>,
    changed: Condvar,
    stats: Arc<Stats>,
    waker: Arc<Waker>,
    /// Set by the thread just before its last wake-up: nothing more will happen.
    finished: AtomicBool,
}

impl Shared {
    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `wait`, or less if a stop deadline comes first.
    fn sleep(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let limit = guard.map_or(until, |d| d.min(until));
            let now = Instant::now();
            if now >= limit {
                return;
            }
            guard = self
                .changed
                .wait_timeout(guard, limit - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The poll loop's handle on the sender thread.
pub struct Sender {
    tx: Option<SyncSender<Batch>>,
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
        let (tx, rx) = mpsc::sync_channel(CHANNEL_BATCHES);
        let shared = Arc::new(Shared {
            deadline: Mutex::new(None),
            changed: Condvar::new(),
            stats,
            waker,
            finished: AtomicBool::new(false),
        });
        let worker = Worker {
            sink,
            config,
            shared: Arc::clone(&shared),
            rng: Rng::from_entropy(),
        };
        let thread = thread::Builder::new()
            .name("sender".into())
            .spawn(move || worker.run(rx))?;
        Ok(Sender {
            tx: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    /// Hands a batch over, or gives it back if the channel is full (or the sender is gone).
    pub fn try_send(&self, batch: Batch) -> Result<(), Batch> {
        match &self.tx {
            None => Err(batch),
            Some(tx) => tx.try_send(batch).map_err(|e| match e {
                TrySendError::Full(b) | TrySendError::Disconnected(b) => b,
            }),
        }
    }

    /// Asks the sender to finish by `deadline` and closes the channel: nothing more will come.
    pub fn stop(&mut self, deadline: Instant) {
        let mut d = self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *d = Some(d.map_or(deadline, |old| old.min(deadline)));
        self.shared.changed.notify_all();
        drop(d);
        self.tx = None;
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
    config: SenderConfig,
    shared: Arc<Shared>,
    rng: Rng,
}

impl Worker {
    fn run(mut self, rx: Receiver<Batch>) {
        while let Ok(batch) = rx.recv() {
            // Room in the channel: the poll loop may read again.
            let _ = self.shared.waker.wake();
            self.deliver(batch);
        }
        // The poll loop waits for this flag, and the wake-up makes it look.
        self.shared.finished.store(true, Ordering::Release);
        let _ = self.shared.waker.wake();
    }

    fn set_aside(&self, batch: &Batch, reason: &str) {
        set_aside(
            self.config.failed_attempts_dir.as_deref(),
            batch,
            reason,
            &self.shared.stats,
        );
    }

    fn deliver(&mut self, batch: Batch) {
        let stats = Arc::clone(&self.shared.stats);
        let mut pending = batch;
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            let deadline = self.shared.deadline();
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.set_aside(&pending, "the stop deadline passed before delivery");
                return;
            }
            Stats::add(&stats.requests, 1);
            if attempt > 0 {
                Stats::add(&stats.retries, 1);
            }
            let wait = match self.sink.put(&pending, deadline) {
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
                    return;
                }
                PutResult::Partial(failed) => {
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
                    self.config.backoff.delay(attempt, &mut self.rng)
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
                            "request to {} failed: {}: {}; {}retrying {} records",
                            self.sink.describe(),
                            f.code,
                            f.message,
                            what,
                            pending.len()
                        ),
                    );
                    if f.kind == ErrorKind::Throttled {
                        Stats::add(&stats.throttled_records, pending.len() as u64);
                    }
                    let jitter = self.config.backoff.delay(attempt, &mut self.rng);
                    f.retry_after.map_or(jitter, |r| r.max(jitter))
                }
                PutResult::Failed(f) => {
                    log!(
                        Error,
                        "request to {} failed and will not succeed if repeated: {}",
                        self.sink.describe(),
                        f.message
                    );
                    self.set_aside(&pending, &f.code);
                    return;
                }
            };
            attempt = attempt.saturating_add(1);
            self.shared.sleep(wait);
        }
    }
}

/// Keeps undeliverable lines in the failed-attempts directory `dir`, or (with none, or if
/// writing fails) counts and logs them as dropped.
pub fn set_aside(dir: Option<&Path>, batch: &Batch, reason: &str, stats: &Stats) {
    let n = batch.len() as u64;
    match dir {
        Some(dir) => match spool::write_batch(dir, batch) {
            Ok(path) => {
                Stats::add(&stats.lines_spooled, n);
                log!(
                    Info,
                    "kept {n} undelivered lines in {} ({reason})",
                    path.display()
                );
            }
            Err(e) => {
                Stats::add(&stats.lines_dropped, n);
                log!(
                    Error,
                    "dropped {n} lines: could not write them to {}: {e} ({reason})",
                    dir.display()
                );
            }
        },
        None => {
            Stats::add(&stats.lines_dropped, n);
            log!(
                Error,
                "dropped {n} lines ({reason}); set --failed-attempts-dir to keep them"
            );
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
