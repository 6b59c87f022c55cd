//! The backlog: the one owner of every line read and not yet accepted.
//!
//! It holds the memory budget, the batches waiting for the sender, those in flight, those held
//! back because the failed-attempts directory would not take them, the directory itself
//! ([`spool`]) with its cap, over-long lines on their way to `oversized/`, replay of kept files
//! ([`replay`]) and its progress, and the count of lines lost. It lives on the poll loop's
//! thread: the loop asks it for room before reading and for the next job to offer the sender;
//! the sender only reports outcomes, which the backlog takes in here. Its decisions are the
//! plain functions of [`policy`].
//!
//! What it promises: every line read ends in exactly one of accepted, in the failed-attempts
//! directory (with `--durable`, in the journal: [`journal`], [`durable`]), or counted as lost
//! (`lines_dropped`, and the exit status 1). Lines are lost only
//! when there is nowhere to keep them: no directory, or at the stop a directory that is full or
//! failing, or a sender that overran the stop deadline and its grace. While the daemon runs, a
//! full or failing directory makes it hold lines in memory and pause reading instead.

pub mod durable;
pub mod journal;
pub mod policy;
pub mod replay;
pub mod spool;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{Batch, Packing};
use crate::log;
use crate::sender::{Job, Report};
use crate::stats::Stats;
use policy::{Disposal, Memory, Room, Schedule};
use replay::Replaying;
use spool::{NewFile, Spool, SpoolError};

/// How often a warning about a full or failing directory is repeated.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// After the directory refused a spill, how long before trying again.
const SPILL_PAUSE: Duration = Duration::from_secs(1);

/// The limits replayed batches are made with, and the memory budget.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `--max-buffer-bytes`.
    pub budget: u64,
    /// How often kept lines are tried again after an error retrying could not fix.
    pub retry_interval: Duration,
    /// Records per request.
    pub max_records: usize,
    /// Bytes per request, counting each line's overhead.
    pub max_request_bytes: usize,
    /// The longest line a record holds next to its overhead.
    pub max_line: usize,
    /// The bytes the destination adds to each line (its partition key).
    pub overhead: usize,
    /// How the destination packs lines many to a record, if it does: replayed batches are
    /// filled by it.
    pub packing: Option<Packing>,
}

/// Where a job's records came from, and so where they go if they come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Read from the input.
    Live,
    /// Held in memory after the directory refused them.
    Held,
    /// A spool file's lines, ending at this offset.
    Replay { end: u64 },
}

#[derive(Debug)]
struct InFlight {
    lines: u64,
    memory: u64,
    origin: Origin,
    /// The journal bytes its lines came from (`--durable`, or an earlier run's journal).
    journal: Option<Range<u64>>,
}

/// An over-long line being streamed to `oversized/`.
struct LongLine {
    file: Option<NewFile>,
    /// Why it is not being kept, once it is not.
    refused: Option<String>,
    /// Its journal bytes read so far were given up to make room (`--durable`): the file is
    /// the only copy of them.
    released: bool,
}

/// The owner of every line not yet accepted.
pub struct Backlog {
    limits: Limits,
    stats: Arc<Stats>,
    spool: Option<Spool>,
    /// Bytes of every batch owned: waiting, unsent, in flight, held.
    memory: u64,
    waiting: VecDeque<Batch>,
    held: VecDeque<Batch>,
    /// A job the sender's channel handed back, offered again first.
    unsent: Option<Job>,
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    schedule: Schedule,
    replaying: Option<Replaying>,
    /// Files that could be neither read nor renamed aside; tried again after an interval.
    unreadable: HashSet<PathBuf>,
    /// Files delivered whole that could not be removed: never sent again.
    delivered_files: HashSet<PathBuf>,
    long: Option<LongLine>,
    spill_paused_until: Option<Instant>,
    warned_at: Option<Instant>,
    stopping: bool,
    /// The journal, with `--durable` or while an earlier run's is delivered.
    reading: Option<durable::Reading>,
}

/// How the sender is doing, as the memory rules look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderLoad {
    /// The last attempt got records through.
    pub healthy: bool,
    /// Its channel holds as many jobs as it takes.
    pub queue_full: bool,
}

#[cfg(test)]
impl SenderLoad {
    fn healthy() -> SenderLoad {
        SenderLoad {
            healthy: true,
            queue_full: false,
        }
    }

    fn stuck() -> SenderLoad {
        SenderLoad {
            healthy: false,
            queue_full: true,
        }
    }
}

impl Backlog {
    /// A backlog.
    pub fn new(limits: Limits, spool: Option<Spool>, stats: Arc<Stats>, now: Instant) -> Backlog {
        let pending = spool
            .as_ref()
            .is_some_and(|s| s.pending_files().is_ok_and(|f| !f.is_empty()));
        Backlog {
            limits,
            stats,
            spool,
            memory: 0,
            waiting: VecDeque::new(),
            held: VecDeque::new(),
            unsent: None,
            in_flight: HashMap::new(),
            next_id: 0,
            schedule: Schedule::new(limits.retry_interval, pending, now),
            replaying: None,
            unreadable: HashSet::new(),
            delivered_files: HashSet::new(),
            long: None,
            spill_paused_until: None,
            warned_at: None,
            stopping: false,
            reading: None,
        }
    }

    /// Bytes held in memory.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// Bytes in the failed-attempts directory.
    pub fn spool_bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, Spool::used)
    }

    /// Whether anything waits to be offered to the sender.
    pub fn has_waiting(&self) -> bool {
        self.unsent.is_some() || !self.waiting.is_empty()
    }

    /// The next moment the backlog has something to do (a retry of kept lines, a spill).
    pub fn deadline(&self) -> Option<Instant> {
        if self.stopping {
            return None;
        }
        // While batches wait for room in the sender's channel, its next report wakes the loop:
        // kept lines come after them anyway.
        let retry = self.schedule.next().filter(|_| !self.has_waiting());
        match (retry, self.spill_paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn set_memory(&mut self, memory: u64) {
        self.memory = memory;
        self.stats.buffered_bytes.store(memory, Ordering::Relaxed);
    }

    /// Takes a sealed batch of lines read from the input.
    pub fn push(&mut self, batch: Batch) {
        self.set_memory(self.memory + batch.memory() as u64);
        self.waiting.push_back(batch);
    }

    /// Whether a read of up to `need` bytes may go ahead, with `filling` bytes in the batch
    /// being filled; spills waiting batches to disk when the policy says so.
    pub fn room(&mut self, need: u64, filling: u64, sender: SenderLoad, now: Instant) -> bool {
        loop {
            // With --durable the lines are on disk already: memory waits for the sender.
            let can_spill = self.spool.is_some()
                && !self.durable()
                && self.spill_paused_until.is_none_or(|until| now >= until);
            let m = Memory {
                held: self.memory + filling,
                need,
                budget: self.limits.budget,
                waiting: self.waiting.len() + usize::from(self.unsent.is_some()),
                sender_healthy: sender.healthy,
                sender_queue_full: sender.queue_full,
                can_spill,
            };
            match policy::room(&m) {
                Room::Read => return true,
                Room::Wait => return false,
                Room::Spill => {
                    if !self.spill_oldest(now) {
                        return false;
                    }
                }
            }
        }
    }

    /// Writes the oldest waiting batch to disk; false if the directory refused it.
    fn spill_oldest(&mut self, now: Instant) -> bool {
        let Some(batch) = self.waiting.pop_front() else {
            return false;
        };
        let spool = self.spool.as_ref().expect("spilling needs a directory");
        match write_batch(spool, &batch) {
            Ok(path) => {
                Stats::add(&self.stats.lines_spooled, batch.len() as u64);
                self.journal_done(batch.journal());
                log!(
                    Debug,
                    "memory budget reached: kept {} lines in {}",
                    batch.len(),
                    path.display()
                );
                self.set_memory(self.memory - batch.memory() as u64);
                self.schedule.kept(now);
                true
            }
            Err(e) => {
                self.waiting.push_front(batch);
                self.spill_paused_until = Some(now + SPILL_PAUSE);
                warn_limited(
                &mut self.warned_at,
                    now,
                    format_args!("memory is full and the failed-attempts directory does not take more ({e}); reading paused, writers wait"),
                );
                false
            }
        }
    }

    /// The next job to offer the sender: a waiting batch, else (when due) a held batch or the
    /// next batch of a spool file.
    pub fn next_job(&mut self, now: Instant) -> Option<Job> {
        if let Some(job) = self.unsent.take() {
            return Some(job);
        }
        if let Some(batch) = self.waiting.pop_front() {
            return Some(self.job(batch, Origin::Live));
        }
        if self.stopping || !self.schedule.due(now) {
            return None;
        }
        if !self.held.is_empty() {
            if !self.durable() {
                self.spool_held(now);
            }
            if let Some(batch) = self.held.pop_front() {
                self.set_memory(self.memory - batch.memory() as u64);
                self.schedule.later(now);
                return Some(self.job(batch, Origin::Held));
            }
        }
        // A replayed batch takes up to a request's worth of memory; with nothing else held it
        // may always go, so replay cannot stall on a small budget.
        if self.memory > 0
            && self.memory + self.limits.max_request_bytes as u64 > self.limits.budget
        {
            // Memory is short: try again later (an accepted delivery brings it on sooner).
            self.schedule.later(now);
            return None;
        }
        self.next_replay_job(now)
    }

    /// A job the sender's channel did not take: offered again first.
    pub fn put_back(&mut self, job: Job) {
        debug_assert!(self.unsent.is_none());
        self.unsent = Some(job);
    }

    fn job(&mut self, batch: Batch, origin: Origin) -> Job {
        let id = self.next_id;
        self.next_id += 1;
        let memory = batch.memory() as u64;
        if origin != Origin::Live {
            self.set_memory(self.memory + memory);
        }
        let journal = batch.journal();
        if let Some(range) = &journal {
            self.journal_handed(range.end);
        }
        self.in_flight.insert(
            id,
            InFlight {
                lines: batch.len() as u64,
                memory,
                origin,
                journal,
            },
        );
        Job { id, batch }
    }

    /// Takes in how a job ended.
    pub fn on_report(&mut self, report: Report, now: Instant) {
        let Some(entry) = self.in_flight.remove(&report.id) else {
            log!(
                Error,
                "a report for an unknown job {} was ignored",
                report.id
            );
            return;
        };
        self.set_memory(self.memory.saturating_sub(entry.memory));
        let finish = report.finish;
        if finish.accepted > 0 {
            self.schedule.accepted(now);
        }
        for line in &finish.oversized {
            self.keep_oversized(line);
        }
        match entry.origin {
            Origin::Replay { end } => self.replay_reported(end, finish, now),
            Origin::Live | Origin::Held => match finish.undelivered {
                None => self.journal_done(entry.journal),
                Some(mut u) => {
                    if u.permanent {
                        self.schedule.block(now);
                    }
                    log!(
                        Debug,
                        "{} lines came back undelivered ({})",
                        u.batch.len(),
                        u.reason
                    );
                    // What comes back covers the whole job's journal bytes until it is done.
                    u.batch.set_journal(entry.journal);
                    self.set_aside(u.batch, &u.reason, now);
                }
            },
        }
    }

    /// Keeps handed-back lines: on disk, else in memory, else counted as lost.
    fn set_aside(&mut self, batch: Batch, reason: &str, now: Instant) {
        let n = batch.len() as u64;
        if n == 0 {
            self.journal_done(batch.journal());
            return;
        }
        if self.durable() {
            // The journal keeps them: held in memory and tried again (or read from the
            // journal by the next run).
            if !self.stopping {
                self.set_memory(self.memory + batch.memory() as u64);
                self.held.push_back(batch);
                self.schedule.kept(now);
            }
            return;
        }
        let written = self.spool.as_ref().map(|s| write_batch(s, &batch));
        let took = matches!(written, Some(Ok(_)));
        match policy::dispose(self.spool.is_some(), took, self.stopping) {
            Disposal::Spool => {
                Stats::add(&self.stats.lines_spooled, n);
                self.journal_done(batch.journal());
                if let Some(Ok(path)) = written {
                    log!(
                        Debug,
                        "kept {n} undelivered lines in {} ({reason})",
                        path.display()
                    );
                }
                self.schedule.kept(now);
            }
            Disposal::Hold => {
                let e = written.and_then(Result::err).map(|e| e.to_string());
                warn_limited(
                &mut self.warned_at,
                    now,
                    format_args!(
                        "cannot keep {n} undelivered lines in the failed-attempts directory ({}); holding them in memory and trying again every {:?}",
                        e.unwrap_or_default(),
                        self.limits.retry_interval
                    ),
                );
                self.set_memory(self.memory + batch.memory() as u64);
                self.held.push_back(batch);
                self.schedule.kept(now);
            }
            Disposal::Lose => {
                self.lose(n);
                match written {
                    Some(Err(e)) => log!(
                        Error,
                        "dropped {n} lines: could not keep them in the failed-attempts directory: {e} ({reason})"
                    ),
                    _ => log!(
                        Error,
                        "dropped {n} lines ({reason}); set --failed-attempts-dir to keep them"
                    ),
                }
            }
        }
    }

    fn lose(&mut self, lines: u64) {
        Stats::add(&self.stats.lines_dropped, lines);
    }

    /// Writes held batches to disk while the directory takes them.
    fn spool_held(&mut self, now: Instant) {
        let Some(spool) = &self.spool else { return };
        let _ = spool.ensure_dirs();
        while let Some(batch) = self.held.front() {
            match write_batch(spool, batch) {
                Ok(path) => {
                    Stats::add(&self.stats.lines_spooled, batch.len() as u64);
                    log!(
                        Info,
                        "kept {} held lines in {}",
                        batch.len(),
                        path.display()
                    );
                    let batch = self.held.pop_front().expect("front exists");
                    self.memory -= batch.memory() as u64;
                    self.schedule.kept(now);
                }
                Err(_) => break,
            }
        }
        self.set_memory(self.memory);
    }

    /// Keeps one line too long for a record in `oversized/`, or counts it as lost.
    fn keep_oversized(&mut self, line: &[u8]) {
        let kept = self.spool.as_ref().map(|s| {
            let _ = s.ensure_dirs();
            s.begin_oversized().and_then(|mut f| {
                s.write_reserved(&mut f, line)?;
                s.commit_oversized(f)
            })
        });
        match kept {
            Some(Ok(path)) => {
                Stats::add(&self.stats.lines_spooled, 1);
                log!(
                    Info,
                    "kept a line of {} bytes in {}",
                    line.len(),
                    path.display()
                );
            }
            Some(Err(e)) => {
                self.lose(1);
                log!(Error, "dropped a line of {} bytes: {e}", line.len());
            }
            None => {
                self.lose(1);
                log!(Error, "dropped a line of {} bytes that no record can hold; set --failed-attempts-dir to keep such lines", line.len());
            }
        }
    }

    /// The start of a line too long for a record, read from the input.
    pub fn long_start(&mut self, bytes: &[u8]) {
        let mut long = LongLine {
            file: None,
            refused: None,
            released: false,
        };
        match &self.spool {
            None => long.refused = Some("no --failed-attempts-dir is set".into()),
            Some(s) => match s
                .ensure_dirs()
                .map_err(SpoolError::Io)
                .and_then(|()| s.begin_oversized())
            {
                Ok(f) => long.file = Some(f),
                Err(e) => long.refused = Some(e.to_string()),
            },
        }
        self.long = Some(long);
        self.long_more(bytes);
    }

    /// More of that line; past the cap, the rest of it is not kept.
    pub fn long_more(&mut self, bytes: &[u8]) {
        let (Some(long), Some(spool)) = (self.long.as_mut(), self.spool.as_ref()) else {
            return;
        };
        let Some(file) = long.file.as_mut() else {
            return;
        };
        if let Err(e) = spool.write_reserved(file, bytes) {
            let file = long.file.take().expect("checked above");
            let why = e.to_string();
            let kept = if file.written() > 0 {
                spool.keep_partial(file).ok()
            } else {
                spool.abandon(file);
                None
            };
            let partial = kept.map_or(String::new(), |p| {
                format!("; its first part is in {}", p.display())
            });
            // Once per line: the rest of it is not looked at again.
            log!(
                Warn,
                "an over-long line cannot be kept ({why}): the rest of it is dropped{partial}"
            );
            long.refused = Some(why);
        }
    }

    /// That line ended, `len` bytes long.
    pub fn long_end(&mut self, len: u64, limit: usize) {
        Stats::add(&self.stats.oversized_lines, 1);
        let Some(long) = self.long.take() else { return };
        let kept = match (long.file, &self.spool) {
            (Some(file), Some(spool)) => spool.commit_oversized(file).map_err(|e| e.to_string()),
            _ => Err(long
                .refused
                .unwrap_or_else(|| "it could not be written".into())),
        };
        match kept {
            Ok(path) => {
                Stats::add(&self.stats.lines_spooled, 1);
                log!(Warn, "a line of {len} bytes is longer than the {limit} bytes a record leaves for data; kept it in {}", path.display());
            }
            Err(why) => {
                self.lose(1);
                log!(Warn, "dropped a line of {len} bytes, longer than the {limit} bytes a record leaves for data ({why})");
            }
        }
    }

    /// The over-long line being read gave up its journal bytes read so far (`--durable`).
    pub fn long_released(&mut self) {
        if let Some(long) = self.long.as_mut() {
            long.released = true;
        }
    }

    /// The daemon is stopping: no more replays or retries of held lines.
    pub fn begin_stop(&mut self) {
        self.stopping = true;
    }

    /// The sender finished at the stop: keeps on disk everything not delivered (what waits,
    /// what is held), counting as lost what the directory does not take.
    pub fn finish_stop(&mut self, now: Instant) {
        self.stopping = true;
        let mut left: Vec<Batch> = Vec::new();
        if let Some(job) = self.unsent.take() {
            if let Some(entry) = self.in_flight.remove(&job.id) {
                if !matches!(entry.origin, Origin::Replay { .. }) {
                    left.push(job.batch);
                }
            }
        }
        left.extend(self.waiting.drain(..));
        left.extend(self.held.drain(..));
        if self.durable() {
            // All of it is in the journal, for the next run.
            left.clear();
        }
        for batch in left {
            self.set_aside(batch, "stopping", now);
        }
        self.set_memory(0);
        if let Some(long) = self.long.take() {
            // An over-long line the stop cut: with its journal bytes given up, the start kept
            // so far is all there is (the next run skips the rest); otherwise the journal reads
            // it again whole.
            if let (Some(file), Some(spool)) = (long.file, self.spool.as_ref()) {
                if long.released {
                    Stats::add(&self.stats.lines_dropped, 1);
                    match spool.keep_partial(file) {
                        Ok(p) => log!(Warn, "an over-long line longer than the journal holds was cut by the stop: its start is in {}", p.display()),
                        Err(e) => log!(Error, "an over-long line cut by the stop is lost: {e}"),
                    }
                } else {
                    spool.abandon(file);
                }
            }
        }
        self.journal_sync(now, true);
    }

    /// The sender overran the stop: the lines it still has are lost (those of a spool file
    /// stay in the file). Returns how many were lost.
    pub fn abandon_in_flight(&mut self) -> u64 {
        let durable = self.durable();
        let lost: u64 = self
            .in_flight
            .values()
            .filter(|e| !matches!(e.origin, Origin::Replay { .. }))
            .filter(|e| !(durable && e.journal.is_some()))
            .map(|e| e.lines)
            .sum();
        self.in_flight.clear();
        self.lose(lost);
        lost
    }
}

/// Logs a warning at most every [`WARN_EVERY`].
fn warn_limited(warned_at: &mut Option<Instant>, now: Instant, what: std::fmt::Arguments<'_>) {
    if warned_at.is_none_or(|at| now >= at + WARN_EVERY) {
        *warned_at = Some(now);
        log::write(log::Level::Warn, what);
    }
}

/// Writes a batch to the directory, recreating it if it was removed.
fn write_batch(spool: &Spool, batch: &Batch) -> Result<PathBuf, SpoolError> {
    match spool.write_batch(batch) {
        Err(SpoolError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            log!(
                Warn,
                "the failed-attempts directory {} was removed; creating it again",
                spool.dir().display()
            );
            spool.ensure_dirs()?;
            spool.write_batch(batch)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Finish, Undelivered};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("f2k-backlog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn limits(budget: u64) -> Limits {
        Limits {
            budget,
            retry_interval: Duration::from_secs(10),
            max_records: 500,
            max_request_bytes: 1 << 20,
            max_line: 1000,
            overhead: 0,
            packing: None,
        }
    }

    fn batch(tag: &str, n: usize) -> Batch {
        let mut b = Batch::new();
        for i in 0..n {
            b.push(format!("{tag}{i:-<60}").as_bytes());
        }
        b
    }

    fn backlog(dir: Option<&PathBuf>, cap: u64, budget: u64, t0: Instant) -> (Backlog, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let spool = dir.map(|d| Spool::open(d, cap).unwrap());
        let b = Backlog::new(limits(budget), spool, Arc::clone(&stats), t0);
        (b, stats)
    }

    fn lines_on_disk(dir: &std::path::Path) -> usize {
        let spool = Spool::open(dir, u64::MAX).unwrap();
        spool
            .pending_files()
            .unwrap()
            .iter()
            .map(|p| spool::split_lines(&std::fs::read(p).unwrap()).len())
            .sum()
    }

    fn undelivered(job: &Job, permanent: bool) -> Report {
        Report {
            id: job.id,
            finish: Finish {
                accepted: 0,
                oversized: Vec::new(),
                undelivered: Some(Undelivered {
                    batch: job.batch.clone(),
                    reason: "TestError".into(),
                    permanent,
                }),
            },
        }
    }

    #[test]
    fn spills_the_oldest_waiting_batch_when_the_sender_is_stuck() {
        let t0 = Instant::now();
        let dir = temp("spill");
        let (mut b, stats) = backlog(Some(&dir), 1 << 20, 20_000, t0);
        for i in 0..4 {
            b.push(batch(&format!("b{i}-"), 100));
        }
        assert!(b.memory() > 20_000 - 1000);
        assert!(
            !b.room(1000, 0, SenderLoad::healthy(), t0),
            "a healthy sender is waited for"
        );
        assert_eq!(lines_on_disk(&dir), 0);
        assert!(
            b.room(1000, 0, SenderLoad::stuck(), t0),
            "a stuck one: spill until a read fits"
        );
        assert!(b.memory() + 1000 <= 20_000);
        assert!(lines_on_disk(&dir) >= 100);
        assert_eq!(
            Stats::get(&stats.lines_spooled) as usize,
            lines_on_disk(&dir)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_wake_up_is_due_while_batches_wait_for_the_sender_or_memory_is_short() {
        let t0 = Instant::now();
        let dir = temp("no-spin");
        spool::prepare_dir(&dir).unwrap();
        std::fs::write(dir.join("fifo2kinesis-20200101000000-000001-1"), b"kept").unwrap();
        let (mut b, _) = backlog(Some(&dir), 1 << 20, 3 << 20, t0);
        b.push(batch("w", 3));
        assert_eq!(
            b.deadline(),
            None,
            "a waiting batch: the sender's report wakes the loop"
        );
        let live = b.next_job(t0).unwrap();
        // Memory short (a live batch of 2 MiB in flight, 1 MiB requests, 3 MiB budget).
        let mut big = Batch::new();
        big.push(&vec![b'x'; 2 << 20]);
        b.push(big);
        let _big = b.next_job(t0).unwrap();
        assert!(b.next_job(t0).is_none(), "no replay while memory is short");
        assert!(
            b.deadline().is_some_and(|d| d > t0),
            "and no wake-up due at once"
        );
        drop(live);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn waits_when_nothing_can_be_spilled() {
        let t0 = Instant::now();
        let (mut b, _) = backlog(None, 0, 2_000, t0);
        b.push(batch("x", 100));
        assert!(!b.room(1000, 0, SenderLoad::stuck(), t0));
        assert!(b.has_waiting(), "nothing was dropped");
    }

    #[test]
    fn a_permanent_error_sets_lines_aside_and_blocks_replay_for_an_interval() {
        let t0 = Instant::now();
        let dir = temp("aside");
        let (mut b, stats) = backlog(Some(&dir), 1 << 20, 1 << 20, t0);
        b.push(batch("p", 3));
        let job = b.next_job(t0).unwrap();
        b.on_report(undelivered(&job, true), t0);
        assert_eq!(lines_on_disk(&dir), 3);
        assert_eq!(Stats::get(&stats.lines_spooled), 3);
        assert_eq!(b.memory(), 0);
        assert!(b.next_job(t0 + Duration::from_secs(9)).is_none(), "blocked");
        let replay = b
            .next_job(t0 + Duration::from_secs(10))
            .expect("due after the interval");
        assert_eq!(replay.batch.len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_the_directory_refuses_are_held_in_memory_and_retried() {
        let t0 = Instant::now();
        let dir = temp("hold");
        let (mut b, stats) = backlog(Some(&dir), 4, 1 << 20, t0);
        b.push(batch("held", 3));
        let job = b.next_job(t0).unwrap();
        b.on_report(undelivered(&job, true), t0);
        assert_eq!(lines_on_disk(&dir), 0, "the cap refused them");
        assert!(b.memory() > 0, "held in memory");
        assert_eq!(Stats::get(&stats.lines_dropped), 0);
        assert!(b.next_job(t0 + Duration::from_secs(1)).is_none());
        let again = b.next_job(t0 + Duration::from_secs(10)).expect("retried");
        assert_eq!(again.batch.len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn at_the_stop_what_is_left_goes_to_disk_or_is_counted_lost() {
        let t0 = Instant::now();
        let dir = temp("stop");
        let (mut b, stats) = backlog(Some(&dir), 1 << 20, 1 << 20, t0);
        b.push(batch("w", 5));
        b.begin_stop();
        b.finish_stop(t0);
        assert_eq!(lines_on_disk(&dir), 5);
        assert_eq!(Stats::get(&stats.lines_dropped), 0);
        std::fs::remove_dir_all(&dir).unwrap();

        let (mut b, stats) = backlog(None, 0, 1 << 20, t0);
        b.push(batch("w", 5));
        let job = b.next_job(t0).unwrap();
        b.push(batch("v", 2));
        b.begin_stop();
        assert_eq!(b.abandon_in_flight(), 5, "the sender overran the stop");
        b.finish_stop(t0);
        assert_eq!(Stats::get(&stats.lines_dropped), 7);
        drop(job);
    }

    #[test]
    fn a_replayed_file_is_removed_only_once_every_batch_was_accepted() {
        let t0 = Instant::now();
        let dir = temp("replay");
        prepare_dir_for_test(&dir);
        let file = dir.join("fifo2kinesis-20200101000000-000001-1");
        let content: Vec<u8> = (0..1200)
            .flat_map(|i| format!("r{i}\n").into_bytes())
            .collect();
        std::fs::write(&file, &content).unwrap();
        let (mut b, stats) = backlog(Some(&dir), 1 << 20, 1 << 20, t0);
        let mut sent = 0;
        while let Some(job) = b.next_job(t0) {
            assert!(b.next_job(t0).is_none(), "one replayed batch at a time");
            assert_eq!(b.deadline(), None, "no wake-up while it is with the sender");
            sent += job.batch.len();
            assert!(file.exists());
            b.on_report(
                Report {
                    id: job.id,
                    finish: Finish {
                        accepted: job.batch.len() as u64,
                        ..Finish::default()
                    },
                },
                t0,
            );
        }
        assert_eq!(sent, 1200);
        assert!(!file.exists());
        assert_eq!(Stats::get(&stats.lines_replayed), 1200);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn prepare_dir_for_test(dir: &std::path::Path) {
        spool::prepare_dir(dir).unwrap();
    }
}
