//! The main loop: one `mio::Poll` watching the input, the signalfd and the sender's waker.
//!
//! Every wake-up runs the same steps: read the input until `WouldBlock`, handing sealed batches
//! to the sender; seal the batch whose flush interval has passed. The poll timeout is the
//! earliest deadline, so the timer fires with no input at all, and an idle daemon sleeps.
//!
//! Memory budget (`--max-buffer-bytes`): lines read but not yet accepted by Kinesis (the batch
//! being filled, queued, in flight, being retried) are counted in `buffered_bytes`. Before each
//! read the loop makes sure a read's worth fits; if not, it moves the oldest queued batch to
//! the failed-attempts directory (reading continues), or, with no directory or a full one,
//! pauses reading — writers block on the full pipe — until the sender's waker says memory was
//! freed. Lines too long for a record are streamed to the directory's `oversized/` as they
//! arrive.
//!
//! A stop (SIGTERM, SIGINT, or the end of standard input) stops reading, turns an unfinished
//! line into a line, flushes the pending batch and gives the sender until `--shutdown-timeout`
//! to deliver what is in memory; the rest goes to the failed-attempts directory. A second stop
//! signal spools everything at once. Lines neither delivered nor kept are counted as lost and
//! make the exit status 1.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::batch::{Batch, Batcher, Buffers, Keys, Limits};
use crate::config::{Config, Handler};
use crate::fifo::{Input, ReadOutcome};
use crate::lines::{LineSplitter, Piece};
use crate::log;
use crate::random::Rng;
use crate::sender::{Backoff, Sender, SenderConfig};
use crate::sink::Sink;
use crate::spool::{NewFile, Spool};
use crate::stats::Stats;

const INPUT: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// Bytes asked for by each read of the input.
const READ_SIZE: usize = 64 * 1024;
/// Batches queued for a healthy sender before reading waits for it.
const HEALTHY_QUEUE_BATCHES: usize = 2;
/// How often a paused daemon says so when memory and the failed-attempts directory are full.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(30);
/// How long after the stop deadline the loop waits for the sender thread to finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Lines read but neither delivered nor kept on disk during the stop.
    pub lost_at_stop: u64,
}

/// Everything the loop needs that is set up before it starts.
pub struct Parts {
    /// The opened input.
    pub input: Input,
    /// The signalfd from [`crate::signals::block`], created before any thread.
    pub signals: SignalFd,
    /// Where batches go.
    pub sink: Box<dyn Sink>,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// The failed-attempts directory, if configured.
    pub spool: Option<Arc<Spool>>,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

struct Stopping {
    deadline: Instant,
    channel_closed: bool,
    dropped_before: u64,
}

struct Daemon {
    config: Config,
    input: Input,
    signals: SignalFd,
    intake: Intake,
    sender: Sender,
    stats: Arc<Stats>,
    /// The input may have data: it has not returned `WouldBlock` since its last event.
    input_ready: bool,
    stopping: Option<Stopping>,
    buf: Vec<u8>,
    /// The most a read can add to memory: its bytes plus a partition key per line.
    read_reserve: u64,
    /// When reading last paused for a full spool was reported.
    full_warned_at: Option<Instant>,
    /// When the counters are next logged (and the metrics file written).
    next_report: Option<Instant>,
    /// Whether the last metrics file write failed (so the failure is logged once).
    metrics_failing: bool,
}

/// Runs the daemon until it is stopped.
pub fn run(config: Config, parts: Parts) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let Parts {
        mut input,
        signals,
        sink,
        stats,
        spool,
    } = parts;
    input.register(poll.registry(), INPUT)?;
    let signal_fd = std::os::fd::AsRawFd::as_raw_fd(&signals);
    poll.registry().register(
        &mut mio::unix::SourceFd(&signal_fd),
        SIGNALS,
        mio::Interest::READABLE,
    )?;

    let keys = || match config.handler {
        Handler::Kinesis => Keys::from_config(&config.partition_key, Rng::from_entropy()),
        Handler::Logger => Keys::None,
    };
    let batcher = Batcher::new(
        Limits {
            max_records: config.buffer_queue_limit,
            max_bytes: config.max_request_bytes,
            interval: config.flush_interval,
        },
        keys(),
    );
    let key_len = batcher.key_len();
    let max_line = config.max_record_bytes - key_len;
    let sender_config = SenderConfig {
        spool: spool.clone(),
        backoff: Backoff::default(),
        retry_interval: config.retry_interval,
        keys: keys(),
        max_records: config.buffer_queue_limit,
        max_request_bytes: config.max_request_bytes,
        max_line,
        buffers: batcher.buffers().clone(),
    };
    let buffers = batcher.buffers().clone();
    let sender = Sender::spawn(sink, sender_config, Arc::clone(&stats), waker)?;
    let intake = Intake {
        splitter: LineSplitter::new(max_line),
        batcher,
        ready: VecDeque::new(),
        stats: Arc::clone(&stats),
        spool,
        max_line,
        prepare_for: config.kinesis.as_ref().map(|k| k.stream_name.clone()),
        buffers,
        long_line: None,
    };

    let first_report = config.stats_interval.map(|i| Instant::now() + i);
    let mut daemon = Daemon {
        config,
        input,
        signals,
        intake,
        sender,
        stats,
        input_ready: true,
        stopping: None,
        buf: vec![0; READ_SIZE],
        read_reserve: (READ_SIZE + READ_SIZE / 2 * key_len) as u64,
        full_warned_at: None,
        next_report: first_report,
        metrics_failing: false,
    };
    daemon.write_metrics(&daemon.snapshot());
    daemon.run(&mut poll)
}

impl Daemon {
    fn run(&mut self, poll: &mut Poll) -> io::Result<Outcome> {
        let mut events = Events::with_capacity(16);
        match self.input.path() {
            Some(p) => log!(Info, "reading {}", p.display()),
            None => log!(Info, "reading standard input"),
        }
        loop {
            let timeout = self.timeout(Instant::now());
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    INPUT => {
                        self.input_ready = true;
                        if event.is_read_closed() {
                            self.input.saw_hangup();
                        }
                    }
                    SIGNALS => self.on_signals(poll),
                    // The sender took a batch or ended; the steps below act on it.
                    WAKER => {}
                    _ => {}
                }
            }
            if let Some(outcome) = self.step(poll)? {
                return Ok(outcome);
            }
        }
    }

    /// How long `poll` may sleep: until the earliest deadline.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let deadline = match &self.stopping {
            Some(s) if s.channel_closed => Some(s.deadline + STOP_GRACE),
            Some(s) => Some(s.deadline),
            None if self.input_ready
                && !self.input.pollable()
                && self.fits_in_memory()
                && !self.sender_busy() =>
            {
                Some(now)
            }
            None => match (self.intake.batcher.deadline(), self.next_report) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        deadline.map(|d| d.saturating_duration_since(now))
    }

    fn step(&mut self, poll: &Poll) -> io::Result<Option<Outcome>> {
        if self.stopping.is_none() && self.sender.is_finished() {
            // Only a panic ends the sender before a stop; without it nothing would be sent.
            return Err(io::Error::other("the sender thread ended unexpectedly"));
        }
        if self.stopping.is_none() {
            if self.input_ready {
                self.read_input(poll)?;
            }
            if let Some(b) = self.intake.batcher.take_due(Instant::now()) {
                log!(Debug, "flush interval passed: flushing {} records", b.len());
                self.intake.seal(b);
            }
            self.hand_over();
            if self.next_report.is_some_and(|at| Instant::now() >= at) {
                self.report("stats");
                self.next_report = self.config.stats_interval.map(|i| Instant::now() + i);
            }
        }
        Ok(self.stop_progress())
    }

    /// Hands sealed batches to the sender.
    fn hand_over(&mut self) {
        for b in self.intake.ready.drain(..) {
            self.sender.send(b);
        }
    }

    /// Bytes held in memory, as the budget counts them.
    fn in_memory(&self) -> u64 {
        Stats::get(&self.stats.buffered_bytes) + self.intake.batcher.pending_memory() as u64
    }

    /// Whether a read's worth still fits the memory budget.
    fn fits_in_memory(&self) -> bool {
        self.in_memory() + self.read_reserve <= self.config.max_buffer_bytes as u64
    }

    /// Whether a healthy sender has enough queued: then reading waits for it, to keep memory
    /// small, rather than spooling.
    fn sender_busy(&self) -> bool {
        self.sender.healthy() && self.sender.queued() >= HEALTHY_QUEUE_BATCHES
    }

    /// Makes room for a read: moves the oldest queued batches to the spool while memory is
    /// short. Returns whether a read fits now.
    fn make_room(&mut self) -> bool {
        if self.sender_busy() {
            return false;
        }
        while !self.fits_in_memory() {
            let Some(spool) = self.intake.spool.clone() else {
                return false;
            };
            let Some(oldest) = self.sender.take_oldest() else {
                return false;
            };
            match spool.write_batch(&oldest) {
                Ok(path) => {
                    Stats::add(&self.stats.lines_spooled, oldest.len() as u64);
                    Stats::sub(&self.stats.buffered_bytes, oldest.memory() as u64);
                    log!(
                        Debug,
                        "memory budget reached: kept {} lines in {}",
                        oldest.len(),
                        path.display()
                    );
                }
                Err(e) => {
                    self.sender.put_back(oldest);
                    let now = Instant::now();
                    if self
                        .full_warned_at
                        .is_none_or(|at| now >= at + FULL_WARNING_EVERY)
                    {
                        self.full_warned_at = Some(now);
                        log!(Warn, "memory and the failed-attempts directory are full ({e}); reading paused, writers wait");
                    }
                    return false;
                }
            }
        }
        true
    }

    /// Reads until `WouldBlock`, or until the memory budget says to pause.
    fn read_input(&mut self, poll: &Poll) -> io::Result<()> {
        while self.stopping.is_none() && self.make_room() {
            match self.input.read(&mut self.buf) {
                Ok(ReadOutcome::Data(n)) => {
                    Stats::add(&self.stats.bytes_read, n as u64);
                    self.intake.feed(&self.buf[..n], Instant::now());
                    self.hand_over();
                }
                Ok(ReadOutcome::WouldBlock) => {
                    self.input_ready = false;
                    return Ok(());
                }
                Ok(ReadOutcome::Closed) => self.on_input_closed(poll)?,
                Err(e) if would_block(&e) => {
                    self.input_ready = false;
                    return Ok(());
                }
                Err(e) => {
                    log!(Error, "reading the input failed: {e}");
                    self.on_input_closed(poll)?;
                }
            }
        }
        Ok(())
    }

    /// The last writer hung up: its unterminated tail is a line; reopen (or stop, for stdin).
    fn on_input_closed(&mut self, poll: &Poll) -> io::Result<()> {
        self.finish_partial_line();
        self.hand_over();
        if self.input.path().is_none() {
            log!(Info, "standard input ended");
            self.begin_stop();
            return Ok(());
        }
        self.input
            .reopen(poll.registry(), INPUT)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Stats::add(&self.stats.fifo_reopens, 1);
        log!(Debug, "last writer hung up; reopened the named pipe");
        self.input_ready = true;
        Ok(())
    }

    /// At a stop, reads the rest of a line the last read cut in two, a byte at a time, so
    /// that the line is delivered whole and the next line starts the pipe's contents. Writers
    /// that keep the FIFO open (the syslog daemons) hand what is left in it to the next run;
    /// without this, a stop between two reads would split a line into two records. Stops at
    /// the newline, when nothing more is there, or at the record size limit.
    fn complete_partial_line(&mut self) {
        let splitter = &self.intake.splitter;
        // An over-long line (streamed to the failed-attempts directory) holds nothing here.
        if splitter.pending_len() == 0 || splitter.pending_len() > splitter.max_line() {
            return;
        }
        let mut byte = [0u8; 1];
        for _ in splitter.pending_len()..=splitter.max_line() {
            match self.input.read(&mut byte) {
                Ok(ReadOutcome::Data(1)) => {
                    Stats::add(&self.stats.bytes_read, 1);
                    self.intake.feed(&byte, Instant::now());
                    if byte[0] == b'\n' {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn finish_partial_line(&mut self) {
        self.intake.finish_line(Instant::now());
    }

    fn on_signals(&mut self, poll: &Poll) {
        for sig in crate::signals::drain(&self.signals) {
            match sig {
                Signal::SIGTERM | Signal::SIGINT => {
                    log!(Info, "received {}", sig.as_str());
                    self.begin_stop();
                }
                // For a FIFO that was replaced. A partial line is kept: if the path still
                // names the same pipe, its writer continues it.
                Signal::SIGHUP if self.input.path().is_some() && self.stopping.is_none() => {
                    log!(Info, "received SIGHUP: reopening the named pipe");
                    match self.input.reopen(poll.registry(), INPUT) {
                        Ok(()) => Stats::add(&self.stats.fifo_reopens, 1),
                        Err(e) => log!(Error, "reopening on SIGHUP failed: {e}"),
                    }
                    self.input_ready = true;
                }
                Signal::SIGUSR1 => self.report("stats"),
                _ => {}
            }
        }
    }

    fn begin_stop(&mut self) {
        let now = Instant::now();
        if let Some(s) = &mut self.stopping {
            log!(
                Warn,
                "second stop request: keeping what is left on disk now"
            );
            s.deadline = now;
            self.sender.stop(now);
            return;
        }
        self.complete_partial_line();
        self.finish_partial_line();
        if let Some(b) = self.intake.batcher.take() {
            self.intake.seal(b);
        }
        self.hand_over();
        let deadline = now + self.config.shutdown_timeout;
        log!(
            Info,
            "stopping: delivering what is in memory (up to {:?})",
            self.config.shutdown_timeout
        );
        self.stopping = Some(Stopping {
            deadline,
            channel_closed: false,
            dropped_before: Stats::get(&self.stats.lines_dropped),
        });
    }

    /// Logs the counters after `what` and rewrites the metrics file.
    fn report(&mut self, what: &str) {
        let snapshot = self.snapshot();
        log!(Info, "{what}: {}", snapshot.summary());
        self.write_metrics(&snapshot);
    }

    /// Every counter now, with the failed-attempts directory's size.
    fn snapshot(&self) -> crate::stats::Snapshot {
        let spool_bytes = self.intake.spool.as_ref().map_or(0, |s| s.used());
        self.stats.snapshot(spool_bytes)
    }

    /// Rewrites the metrics file, if there is one; a failure is logged once until it works.
    fn write_metrics(&mut self, snapshot: &crate::stats::Snapshot) {
        if let Some(path) = &self.config.metrics_file {
            match crate::metrics::write(path, &snapshot.prometheus()) {
                Ok(()) => self.metrics_failing = false,
                Err(e) if !self.metrics_failing => {
                    self.metrics_failing = true;
                    log!(
                        Warn,
                        "cannot write the metrics file {}: {e}",
                        path.display()
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// Advances a stop; returns the outcome once it is over.
    fn stop_progress(&mut self) -> Option<Outcome> {
        let s = self.stopping.as_mut()?;
        let now = Instant::now();
        if !s.channel_closed {
            self.sender.stop(s.deadline);
            s.channel_closed = true;
        }
        let done = s.channel_closed && self.sender.is_finished();
        if !done && now < s.deadline + STOP_GRACE {
            return None;
        }
        if done {
            self.sender.join();
        } else {
            log!(Error, "the sender did not finish in time");
        }
        let lost_at_stop = Stats::get(&self.stats.lines_dropped) - s.dropped_before;
        self.report("stopped");
        Some(Outcome { lost_at_stop })
    }
}

/// Lines on their way into batches: the splitter, the batch being filled, sealed batches on
/// their way to the sender, and the file an over-long line is being streamed to.
struct Intake {
    splitter: LineSplitter,
    batcher: Batcher,
    ready: VecDeque<Batch>,
    stats: Arc<Stats>,
    spool: Option<Arc<Spool>>,
    /// The longest line a record holds next to its key.
    max_line: usize,
    /// The stream whose request bodies are made here, ahead of sending (Kinesis only).
    prepare_for: Option<String>,
    /// Spare buffers for the request bodies (the batcher's, shared with the sender).
    buffers: Buffers,
    /// The file the current over-long line goes to (`None` without a spool or after an error).
    long_line: Option<NewFile>,
}

impl Intake {
    /// Splits a chunk read at `now` into lines and batches.
    fn feed(&mut self, chunk: &[u8], now: Instant) {
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0));
        splitter.feed(chunk, &mut |p| self.on_piece(p, now));
        self.splitter = splitter;
    }

    /// Ends the current line, if any: the input ended or the daemon is stopping.
    fn finish_line(&mut self, now: Instant) {
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0));
        splitter.finish(&mut |p| self.on_piece(p, now));
        self.splitter = splitter;
    }

    /// Queues a sealed batch; its bytes count against the memory budget until the sender is
    /// done with it.
    fn seal(&mut self, batch: Batch) {
        seal(
            batch,
            self.prepare_for.as_deref(),
            &self.buffers,
            &mut self.ready,
            &self.stats,
        );
    }

    /// Routes one piece from the splitter.
    fn on_piece(&mut self, piece: Piece<'_>, now: Instant) {
        match piece {
            Piece::Line(line) => {
                Stats::add(&self.stats.lines_read, 1);
                let Intake {
                    batcher,
                    ready,
                    stats,
                    prepare_for,
                    buffers,
                    ..
                } = self;
                batcher.push(line, now, &mut |b| {
                    seal(b, prepare_for.as_deref(), buffers, ready, stats)
                });
            }
            Piece::Empty => Stats::add(&self.stats.empty_lines, 1),
            Piece::LongStart(bytes) => {
                self.long_line = self.spool.as_ref().and_then(|s| match s.begin_oversized() {
                    Ok(f) => Some(f),
                    Err(e) => {
                        log!(Error, "cannot keep an over-long line: {e}");
                        None
                    }
                });
                self.write_long(bytes);
            }
            Piece::LongMore(bytes) => self.write_long(bytes),
            Piece::Oversized { len } => {
                Stats::add(&self.stats.oversized_lines, 1);
                let limit = self.max_line;
                let kept = match (self.long_line.take(), &self.spool) {
                    (Some(file), Some(spool)) => {
                        spool.commit_oversized(file).map_err(|e| e.to_string())
                    }
                    (None, Some(_)) => Err("it could not be written".to_string()),
                    (_, None) => Err("no --failed-attempts-dir is set".to_string()),
                };
                match kept {
                    Ok(path) => {
                        Stats::add(&self.stats.lines_spooled, 1);
                        log!(Warn, "a line of {len} bytes is longer than the {limit} bytes a record leaves for data; kept it in {}", path.display());
                    }
                    Err(why) => {
                        Stats::add(&self.stats.lines_dropped, 1);
                        log!(Warn, "skipped a line of {len} bytes, longer than the {limit} bytes a record leaves for data ({why})");
                    }
                }
            }
        }
    }

    fn write_long(&mut self, bytes: &[u8]) {
        if let Some(f) = self.long_line.as_mut() {
            if let Err(e) = f.write(bytes) {
                log!(Error, "cannot keep an over-long line: {e}");
                if let Some(f) = self.long_line.take() {
                    f.abandon();
                }
            }
        }
    }
}

/// Makes the request body of a sealed batch (if it goes to a stream) in a spare buffer, counts
/// its memory and queues it for the sender. Encoding and hashing here overlap with the
/// sender's sending.
fn seal(
    mut batch: Batch,
    stream: Option<&str>,
    buffers: &Buffers,
    ready: &mut VecDeque<Batch>,
    stats: &Stats,
) {
    if let Some(stream) = stream {
        let prepared = crate::kinesis::prepare(stream, &batch, buffers.take(0));
        batch.set_prepared(prepared);
    }
    Stats::add(&stats.buffered_bytes, batch.memory() as u64);
    ready.push_back(batch);
}
