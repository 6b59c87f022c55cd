//! The main loop: one `mio::Poll` watching the input, the signalfd and the sender's waker.
//!
//! Every wake-up runs the same steps: read the input until `WouldBlock`, handing sealed batches
//! to the sender; seal the batch whose flush interval has passed. The poll timeout is the
//! earliest deadline, so the timer fires with no input at all, and an idle daemon sleeps.
//!
//! What happens to lines that cannot be sent yet — the memory budget, the failed-attempts
//! directory, over-long lines, replay — is the backlog's decision ([`crate::backlog`]); the loop
//! asks it for room before each read and for the next job whenever the sender's channel has
//! room, and hands it the sender's reports.
//!
//! A stop (SIGTERM, SIGINT, or the end of standard input) stops reading, turns an unfinished
//! line into a line, flushes the pending batch and gives the sender until `--shutdown-timeout`
//! to deliver what is in memory; the rest goes to the failed-attempts directory. A second stop
//! signal spools everything at once. Lines neither delivered nor kept are counted as lost and
//! make the exit status 1.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::backlog::durable::JournalRead;
use crate::backlog::journal::{Journal, Recovered};
use crate::backlog::policy::{stop_step, StopStep};
use crate::backlog::spool::Spool;
use crate::backlog::{self, Backlog, SenderLoad};
use crate::batch::{Batch, Batcher, Buffers, Limits};
use crate::delivery::Backoff;
use crate::input::lines::{LineSplitter, Piece};
use crate::input::{Input, ReadOutcome};
use crate::log;
use crate::options::Config;
use crate::sender::Sender;
use crate::sink::{Encoder, Sink};
use crate::stats::Stats;
use crate::stop::StopSignal;

const INPUT: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// Bytes asked for by each read of the input.
const READ_SIZE: usize = 64 * 1024;
/// How often the FIFO's path is checked (removed or replaced), and a path that cannot be
/// opened is tried again.
const PATH_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long after the stop deadline the loop waits for the sender thread to finish.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Lines read but neither delivered nor kept on disk, over the whole run.
    pub lost: u64,
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
    pub spool: Option<Spool>,
    /// Its journal, with `--durable` or when an earlier run left one to deliver.
    pub journal: Option<(Journal, Recovered)>,
    /// The stop deadline, shared with the sender and the credential sources.
    pub stop: Arc<StopSignal>,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

struct Stopping {
    deadline: Instant,
    channel_closed: bool,
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
    /// The most a read can add to memory: its bytes plus a partition key (or, packed, the
    /// framing) per line.
    read_reserve: u64,
    /// When the counters are next logged (and the metrics file written).
    next_report: Option<Instant>,
    /// Whether the last metrics file write failed (so the failure is logged once).
    metrics_failing: bool,
    /// When the FIFO's path is next checked (FIFO input only).
    path_check_at: Option<Instant>,
    /// The input is detached: its writers hung up and the path could not be opened again.
    detached: bool,
    /// The last problem with the path that was logged (logged again only when it changes).
    path_problem: Option<String>,
    /// Standard input ended with `--durable`: the stop begins once the journal was read.
    stdin_ended: bool,
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
        journal,
        stop,
    } = parts;
    input.register(poll.registry(), INPUT)?;
    let signal_fd = std::os::fd::AsRawFd::as_raw_fd(&signals);
    poll.registry().register(
        &mut mio::unix::SourceFd(&signal_fd),
        SIGNALS,
        mio::Interest::READABLE,
    )?;

    // Bodies are built here, on the reading thread, while the sender is busy.
    let encoder = sink.encoder();
    let overhead = encoder.as_ref().map_or(0, |e| e.line_overhead());
    let limits = Limits {
        max_records: config.buffer_queue_limit,
        max_bytes: config.max_request_bytes,
        interval: config.flush_interval,
    };
    let packing = encoder.as_ref().and_then(|e| e.packing());
    let batcher = match packing {
        Some(packing) => Batcher::packing(limits, packing),
        None => Batcher::new(limits, overhead),
    };
    // Validated: every record holds a line next to what the encoder adds.
    let max_line = config
        .max_record_bytes
        .checked_sub(overhead)
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            io::Error::other(format!(
                "--max-record-bytes ({}) leaves no room for a line next to the {overhead} bytes a record adds",
                config.max_record_bytes
            ))
        })?;
    // What a line adds to memory besides its bytes: its key in the body, or, packed, its
    // framing.
    let line_memory = packing.map_or(overhead, |p| p.max_line_framing);
    let buffers = batcher.buffers().clone();
    let sender = Sender::spawn(
        sink,
        Backoff::default(),
        buffers.clone(),
        Arc::clone(&stats),
        waker,
        stop,
    )?;
    let mut backlog = Backlog::new(
        backlog::Limits {
            budget: config.max_buffer_bytes as u64,
            retry_interval: config.retry_interval,
            max_records: config.buffer_queue_limit,
            max_request_bytes: config.max_request_bytes,
            max_line,
            overhead,
            packing,
        },
        spool,
        Arc::clone(&stats),
        Instant::now(),
    );
    let mut start_at = 0;
    if let Some((journal, recovered)) = journal {
        start_at = recovered.start;
        backlog.attach_journal(journal, recovered);
    }
    let mut batcher = batcher;
    batcher.set_range_start(start_at);
    let intake = Intake {
        splitter: LineSplitter::new(max_line),
        batcher,
        backlog,
        stats: Arc::clone(&stats),
        max_line,
        encoder,
        buffers,
        piece_end: start_at,
        long_from: start_at,
        long_read_to: None,
        long_released_to: start_at,
        carry_end: None,
        discard_to_newline: false,
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
        read_reserve: (READ_SIZE + READ_SIZE / 2 * line_memory) as u64,
        next_report: first_report,
        metrics_failing: false,
        path_check_at: None,
        detached: false,
        path_problem: None,
        stdin_ended: false,
    };
    if daemon.input.path().is_some() {
        daemon.path_check_at = Some(Instant::now() + PATH_CHECK_EVERY);
    }
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
                    // The sender took a job from a full channel, finished one or ended; the
                    // steps below act on it.
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
            None if (self.input_ready
                && !self.input.pollable()
                && !self.intake.backlog.journal_blocked()
                || self.intake.backlog.journal_unread())
                && self.may_read() =>
            {
                Some(now)
            }
            None => [
                self.intake.batcher.deadline(),
                self.next_report,
                self.intake.backlog.deadline(),
                self.intake.backlog.journal_deadline(),
                self.path_check_at,
            ]
            .into_iter()
            .flatten()
            .min(),
        };
        deadline.map(|d| d.saturating_duration_since(now))
    }

    fn step(&mut self, poll: &Poll) -> io::Result<Option<Outcome>> {
        self.take_reports();
        if self.stopping.is_none() && self.sender.is_finished() {
            // Only a panic ends the sender before a stop; without it nothing would be sent.
            return Err(io::Error::other("the sender thread ended unexpectedly"));
        }
        if self.stopping.is_none() {
            if (self.input_ready && !self.detached) || self.intake.backlog.journal_unread() {
                self.read_input(poll)?;
            }
            if self.stdin_ended
                && !self.intake.backlog.journal_unread()
                && !self.intake.backlog.journal_newline_owed()
            {
                log!(Info, "standard input ended");
                self.begin_stop();
            }
            self.intake.backlog.journal_sync(Instant::now(), false);
            if self.path_check_at.is_some_and(|at| Instant::now() >= at) {
                self.check_path(poll)?;
                self.path_check_at = Some(Instant::now() + PATH_CHECK_EVERY);
            }
            if let Some(b) = self.intake.batcher.take_due(Instant::now()) {
                log!(
                    Debug,
                    "flush interval passed: flushing {} records",
                    b.record_count()
                );
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

    /// Passes the sender's reports to the backlog.
    fn take_reports(&mut self) {
        let now = Instant::now();
        for report in self.sender.reports() {
            self.intake.backlog.on_report(report, now);
        }
    }

    /// Offers the sender jobs while its channel takes them.
    fn hand_over(&mut self) {
        let now = Instant::now();
        while let Some(mut job) = self.intake.backlog.next_job(now) {
            if job.batch.prepared().is_none() {
                // A replayed file's lines, or lines held back: their body is made here too.
                job.batch = encode(job.batch, &mut self.intake.encoder, &self.intake.buffers);
            }
            if let Err(job) = self.sender.try_send(job) {
                self.intake.backlog.put_back(job);
                return;
            }
        }
    }

    /// Whether the backlog would let a read go ahead now (without spilling anything).
    fn may_read(&self) -> bool {
        self.intake.backlog.memory()
            + self.intake.batcher.pending_memory() as u64
            + self.read_reserve
            <= self.config.max_buffer_bytes as u64
            && !(self.sender.healthy()
                && (self.intake.backlog.has_waiting() || self.sender.queue_full()))
    }

    /// Asks the backlog for room for a read (it may spill to disk to make some).
    fn make_room(&mut self) -> bool {
        self.take_reports();
        self.hand_over();
        let filling = self.intake.batcher.pending_memory() as u64;
        let sender = SenderLoad {
            healthy: self.sender.healthy(),
            queue_full: self.sender.queue_full(),
        };
        self.intake
            .backlog
            .room(self.read_reserve, filling, sender, Instant::now())
    }

    /// Reads until `WouldBlock`, or until the memory budget says to pause.
    fn read_input(&mut self, poll: &Poll) -> io::Result<()> {
        if self.intake.backlog.reads_journal() {
            return self.read_journaled(poll);
        }
        while self.stopping.is_none() && !self.detached && self.make_room() {
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

    /// Reads the journal into lines while memory allows, and moves the input's bytes into
    /// the journal while its cap allows (`--durable`). Without `--durable`, reads an earlier
    /// run's journal to its end, then the input as usual.
    fn read_journaled(&mut self, poll: &Poll) -> io::Result<()> {
        while self.stopping.is_none() {
            let now = Instant::now();
            if self.intake.backlog.journal_unread() && self.make_room() {
                match self.intake.backlog.read_journal(&mut self.buf) {
                    Ok(JournalRead::Bytes { at, n }) => {
                        self.intake.feed_at(&self.buf[..n], at, now);
                        self.hand_over();
                    }
                    Ok(JournalRead::Skipped { from, to }) => self.intake.skipped(from, to, now),
                    Err(e) => {
                        return Err(io::Error::other(format!("cannot read the journal: {e}")))
                    }
                }
                continue;
            }
            if !self.intake.backlog.durable() {
                if self.intake.backlog.journal_unread() {
                    return Ok(());
                }
                // An earlier run's journal was read; the input completes a line it left
                // unfinished.
                self.intake.journal_read_to_the_end();
                self.intake.backlog.journal_read_all();
                self.hand_over();
                return self.read_input(poll);
            }
            let owed = self.intake.backlog.journal_newline_owed();
            if !owed && (!self.input_ready || self.detached || self.stdin_ended) {
                return Ok(());
            }
            match self
                .intake
                .backlog
                .append_input(&mut self.input, &mut self.buf, now)?
            {
                Some(ReadOutcome::Data(n)) => Stats::add(&self.stats.bytes_read, n as u64),
                Some(ReadOutcome::WouldBlock) => self.input_ready = false,
                Some(ReadOutcome::Closed) => self.on_input_closed(poll)?,
                // A line longer than the journal can hold gives up its bytes read so far
                // (they are in oversized/), and the journal tries again.
                None if self.intake.release_long_line() => {}
                // Full or failing: delivered lines or the retry deadline wake the loop.
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// The last writer hung up: its unterminated tail is a line; reopen (or stop, for stdin).
    fn on_input_closed(&mut self, poll: &Poll) -> io::Result<()> {
        if self.intake.backlog.durable() {
            // The journal ends the line; the reader finds it there.
            self.intake.backlog.writer_hung_up(Instant::now());
            if self.input.path().is_none() {
                self.stdin_ended = true;
                self.input_ready = false;
                return Ok(());
            }
        } else {
            self.finish_partial_line();
        }
        self.hand_over();
        if self.input.path().is_none() {
            log!(Info, "standard input ended");
            self.begin_stop();
            return Ok(());
        }
        match self.input.reopen(poll.registry(), INPUT) {
            Ok(()) => {
                Stats::add(&self.stats.fifo_reopens, 1);
                log!(Debug, "last writer hung up; reopened the named pipe");
                self.input_ready = true;
            }
            Err(e) => {
                // Carry on with what was read; try the path again every second.
                self.input.detach(poll.registry());
                self.detached = true;
                self.input_ready = false;
                self.path_trouble(format!(
                    "{e}; delivering what was read and trying again every {PATH_CHECK_EVERY:?}"
                ));
            }
        }
        Ok(())
    }

    /// Notices a FIFO path that was removed or replaced, without waiting for SIGHUP: what is
    /// left in the pipe being read is read first, then the path is opened again (a missing
    /// FIFO is created). A path that is not a FIFO now is tried again every second; meanwhile
    /// the pipe already open is read as long as it has writers.
    fn check_path(&mut self, poll: &Poll) -> io::Result<()> {
        if !self.detached && self.input.path_is_current() {
            return Ok(());
        }
        if !self.detached {
            self.read_input(poll)?;
            if self.stopping.is_some() {
                return Ok(());
            }
        }
        match self.input.reopen(poll.registry(), INPUT) {
            Ok(()) => {
                Stats::add(&self.stats.fifo_reopens, 1);
                if let Some(p) = self.input.path() {
                    log!(Info, "the named pipe {} was removed or replaced: reading it anew", p.display());
                }
                self.detached = false;
                self.path_problem = None;
                self.input_ready = true;
            }
            Err(e) if self.detached => self.path_trouble(format!("{e}; trying again every {PATH_CHECK_EVERY:?}")),
            Err(e) => self.path_trouble(format!("{e}; still reading the pipe already open and trying again every {PATH_CHECK_EVERY:?}")),
        }
        Ok(())
    }

    /// Logs a problem with the FIFO's path once, until it changes.
    fn path_trouble(&mut self, what: String) {
        if self.path_problem.as_deref() != Some(what.as_str()) {
            log!(Warn, "{what}");
            self.path_problem = Some(what);
        }
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
                        Ok(()) => {
                            Stats::add(&self.stats.fifo_reopens, 1);
                            self.detached = false;
                        }
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
            s.channel_closed = true;
            return;
        }
        if !self.intake.backlog.reads_journal() {
            // With a journal, an unfinished line stays there for the next run to complete.
            self.complete_partial_line();
            self.finish_partial_line();
        }
        if let Some(b) = self.intake.batcher.take() {
            self.intake.seal(b);
        }
        self.intake.backlog.begin_stop();
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
        let spool_bytes = self.intake.backlog.spool_bytes();
        self.stats
            .snapshot(spool_bytes, self.intake.backlog.journal_pending())
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
        loop {
            let s = self.stopping.as_ref()?;
            let now = Instant::now();
            let step = stop_step(
                now,
                s.deadline,
                STOP_GRACE,
                self.intake.backlog.has_waiting(),
                s.channel_closed,
                self.sender.is_finished(),
            );
            match step {
                StopStep::HandOver => {
                    self.hand_over();
                    if self.intake.backlog.has_waiting() {
                        return None;
                    }
                }
                StopStep::Close => {
                    let deadline = s.deadline;
                    self.sender.stop(deadline);
                    if let Some(s) = self.stopping.as_mut() {
                        s.channel_closed = true;
                    }
                }
                StopStep::AwaitSender => return None,
                StopStep::Finish | StopStep::GiveUp => {
                    if step == StopStep::Finish {
                        self.sender.join();
                    } else {
                        let lost = self.intake.backlog.abandon_in_flight();
                        log!(
                            Error,
                            "the sender did not finish in time: {lost} lines it held are lost"
                        );
                    }
                    self.take_reports();
                    self.intake.backlog.finish_stop(now);
                    self.report("stopped");
                    return Some(Outcome {
                        lost: Stats::get(&self.stats.lines_dropped),
                    });
                }
            }
        }
    }
}

/// Lines on their way into batches: the splitter, the batch being filled, and the backlog that
/// takes sealed batches and over-long lines.
struct Intake {
    splitter: LineSplitter,
    batcher: Batcher,
    backlog: Backlog,
    stats: Arc<Stats>,
    /// The longest line a record holds next to its key.
    max_line: usize,
    /// The sink's encoder, which measures request bodies here, ahead of sending.
    encoder: Option<Box<dyn Encoder>>,
    /// Spare buffers for the request bodies (the batcher's, shared with the sender).
    buffers: Buffers,
    /// The journal offset just past the last piece read from the journal.
    piece_end: u64,
    /// Where the over-long line being read from the journal started.
    long_from: u64,
    /// How far that line has been read, while it is being read.
    long_read_to: Option<u64>,
    /// How far its bytes were given up to make room in the journal.
    long_released_to: u64,
    /// The journal offset the next line ends at: an earlier run's journal ended in the middle
    /// of a line, which the input completes (without `--durable`).
    carry_end: Option<u64>,
    /// The input's first bytes up to a newline are the rest of an over-long line the journal
    /// of an earlier run began (without `--durable`).
    discard_to_newline: bool,
}

impl Intake {
    /// Runs `f` with the splitter taken out, so that its pieces can reach the rest of `self`.
    fn with_splitter(&mut self, f: impl FnOnce(&mut LineSplitter, &mut Intake)) {
        let mut splitter = std::mem::replace(&mut self.splitter, LineSplitter::new(0));
        f(&mut splitter, self);
        self.splitter = splitter;
    }

    /// Splits a chunk read at `now` into lines and batches.
    fn feed(&mut self, mut chunk: &[u8], now: Instant) {
        if self.discard_to_newline {
            let Some(nl) = memchr::memchr(b'\n', chunk) else {
                return;
            };
            self.discard_to_newline = false;
            chunk = &chunk[nl + 1..];
        }
        self.with_splitter(|s, me| s.feed(chunk, &mut |p| me.on_piece(p, now, None)));
    }

    /// Splits a chunk read from the journal at offset `at`.
    fn feed_at(&mut self, chunk: &[u8], at: u64, now: Instant) {
        self.with_splitter(|s, me| {
            s.feed_at(chunk, &mut |p, n| me.on_piece(p, now, Some(at + n as u64)))
        });
    }

    /// An earlier run's journal was read to its end: a line it left unfinished is completed
    /// by the input (its writer may hold the FIFO open), and covers the journal to its end.
    fn journal_read_to_the_end(&mut self) {
        if self.splitter.has_partial() {
            self.carry_end = self.backlog.journal_tail();
        }
        // The journal ended inside an over-long line whose start was handled: the input's
        // first bytes up to a newline are the rest of it.
        self.discard_to_newline = self.backlog.journal_skips_to_newline();
    }

    /// The journal reader moved from `from` to `to` over bytes that need nothing more.
    fn skipped(&mut self, from: u64, to: u64, now: Instant) {
        if self.splitter.has_partial() {
            // Only a damaged journal skips inside a line: what came before is a line.
            self.with_splitter(|s, me| s.finish(&mut |p| me.on_piece(p, now, Some(from))));
        }
        self.piece_end = to;
        if !self.batcher.is_filling() {
            self.batcher.set_range_start(to);
        }
    }

    /// Journal bytes up to `end` that hold no line for a batch (empty lines, the end of an
    /// over-long line) need nothing more when no batch is being filled to cover them.
    fn between_batches(&mut self, end: u64) {
        if !self.batcher.is_filling() {
            let start = self.batcher.range_start();
            self.backlog.journal_done(Some(start..end));
            self.batcher.set_range_start(end);
        }
    }

    /// Ends the current line, if any: the input ended or the daemon is stopping.
    fn finish_line(&mut self, now: Instant) {
        self.with_splitter(|s, me| s.finish(&mut |p| me.on_piece(p, now, None)));
    }

    /// The journal is full in the middle of an over-long line: the bytes of it read so far
    /// (streamed to `oversized/`, or counted lost) need nothing more. True if that gave
    /// anything up, so that appending is worth another try.
    /// Only when everything before the line is done: otherwise the journal would get nothing
    /// back, and the line would lose its guarantee of being kept whole across a crash.
    fn release_long_line(&mut self) -> bool {
        match self.long_read_to {
            Some(to)
                if to > self.long_released_to
                    && self.backlog.journal_watermark() >= self.long_from =>
            {
                self.backlog.journal_done(Some(self.long_from..to));
                self.backlog.long_released();
                self.long_released_to = to;
                true
            }
            _ => false,
        }
    }

    /// Hands a sealed batch to the backlog, with its request body made here.
    fn seal(&mut self, batch: Batch) {
        let batch = encode(batch, &mut self.encoder, &self.buffers);
        self.backlog.push(batch);
    }

    /// Routes one piece from the splitter; `end`: the journal offset just past it, for lines
    /// read from the journal.
    fn on_piece(&mut self, piece: Piece<'_>, now: Instant, end: Option<u64>) {
        match piece {
            Piece::Line(line) => {
                Stats::add(&self.stats.lines_read, 1);
                let end = end.or_else(|| self.carry_end.take());
                let Intake {
                    batcher,
                    backlog,
                    encoder,
                    buffers,
                    ..
                } = self;
                let sealed = &mut |b| backlog.push(encode(b, encoder, buffers));
                match end {
                    None => batcher.push(line, now, sealed),
                    Some(end) => {
                        batcher.push_at(line, now, end, sealed);
                        if end <= backlog.resend_below() {
                            Stats::add(&self.stats.lines_resent, 1);
                        }
                        self.piece_end = end;
                    }
                }
            }
            Piece::Empty => {
                Stats::add(&self.stats.empty_lines, 1);
                if let Some(end) = end.or_else(|| self.carry_end.take()) {
                    self.piece_end = end;
                    self.between_batches(end);
                }
            }
            Piece::LongStart(bytes) => {
                self.long_from = self.piece_end;
                self.long_released_to = self.piece_end;
                self.long_read_to = end;
                self.backlog.long_start(bytes);
            }
            Piece::LongMore(bytes) => {
                self.long_read_to = end;
                self.backlog.long_more(bytes);
            }
            Piece::Oversized { len } => {
                // Kept in oversized/ (or counted lost) now: its journal bytes need nothing
                // more. Until here a crash reads it again from the journal, whole.
                self.backlog.long_end(len, self.max_line);
                self.long_read_to = None;
                if let Some(end) = end.or_else(|| self.carry_end.take()) {
                    self.backlog.journal_done(Some(self.long_from..end));
                    self.piece_end = end;
                    self.between_batches(end);
                }
            }
        }
    }
}

/// Measures the request body of a sealed batch (if its sink sends bodies): its length and
/// SHA-256, which SigV4 signs, in a spare buffer that keeps the body if it is small. Encoding
/// and hashing here overlap with the sender's sending; a large body is written again as it is
/// sent, so a batch of large lines in flight is one copy, its lines.
fn encode(mut batch: Batch, encoder: &mut Option<Box<dyn Encoder>>, buffers: &Buffers) -> Batch {
    if let Some(encoder) = encoder {
        let mut prepared = encoder.prepare(&mut batch, buffers.take(0));
        if prepared.kept().is_none() {
            buffers.keep(std::mem::take(&mut prepared.body));
        }
        batch.set_prepared(prepared);
    }
    batch
}
