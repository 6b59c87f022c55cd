//! The main loop: one `mio::Poll` watching the input, the signalfd and the sender's waker.
//!
//! Every wake-up runs the same steps: hand sealed batches to the sender; read the input until
//! `WouldBlock` (or until the sender's channel is full — then reading pauses and writers block
//! on the full pipe until the sender's waker says there is room); seal the batch whose flush
//! interval has passed. The poll timeout is the earliest deadline, so the timer fires with no
//! input at all, and an idle daemon sleeps in `poll`.
//!
//! A stop (SIGTERM, SIGINT, or the end of standard input) stops reading, turns an unfinished
//! line into a line, flushes the pending batch and gives the sender until `--shutdown-timeout`
//! to deliver everything. A second stop signal gives up at once. What could not be delivered is
//! kept in `--failed-attempts-dir` or counted as lost; lost lines make the exit status 1.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::batch::{Batch, Batcher, Keys, Limits};
use crate::config::{Config, Handler};
use crate::fifo::{Input, ReadOutcome};
use crate::lines::{LineSplitter, Piece};
use crate::log;
use crate::random::Rng;
use crate::sender::{self, Sender, SenderConfig};
use crate::sink::Sink;
use crate::stats::Stats;

const INPUT: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// Bytes asked for by each read of the input.
const READ_SIZE: usize = 64 * 1024;
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
    } = parts;
    input.register(poll.registry(), INPUT)?;
    let signal_fd = std::os::fd::AsRawFd::as_raw_fd(&signals);
    poll.registry().register(
        &mut mio::unix::SourceFd(&signal_fd),
        SIGNALS,
        mio::Interest::READABLE,
    )?;

    let sender_config = SenderConfig {
        failed_attempts_dir: config.failed_attempts_dir.clone(),
        ..SenderConfig::default()
    };
    let sender = Sender::spawn(sink, sender_config, Arc::clone(&stats), waker)?;
    let keys = match config.handler {
        Handler::Kinesis => Keys::from_config(&config.partition_key, Rng::from_entropy()),
        Handler::Logger => Keys::None,
    };
    let limits = Limits {
        max_records: config.buffer_queue_limit,
        max_bytes: config.max_request_bytes,
        interval: config.flush_interval,
    };
    let batcher = Batcher::new(limits, keys);
    let splitter = LineSplitter::new(config.max_record_bytes - batcher.key_len());
    let intake = Intake {
        splitter,
        batcher,
        ready: VecDeque::new(),
        stats: Arc::clone(&stats),
    };

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
    };
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
            None if self.intake.ready.is_empty() && self.input_ready && !self.input.pollable() => {
                Some(now)
            }
            None => self.intake.batcher.deadline(),
        };
        deadline.map(|d| d.saturating_duration_since(now))
    }

    fn step(&mut self, poll: &Poll) -> io::Result<Option<Outcome>> {
        self.hand_over();
        if self.stopping.is_none() && self.sender.is_finished() {
            // Only a panic ends the sender before a stop; without it nothing would be sent.
            return Err(io::Error::other("the sender thread ended unexpectedly"));
        }
        if self.stopping.is_none() {
            if self.input_ready && self.intake.ready.is_empty() {
                self.read_input(poll)?;
            }
            if let Some(b) = self.intake.batcher.take_due(Instant::now()) {
                log!(Debug, "flush interval passed: flushing {} records", b.len());
                self.intake.ready.push_back(b);
                self.hand_over();
            }
        }
        Ok(self.stop_progress())
    }

    /// Hands sealed batches to the sender while its channel has room.
    fn hand_over(&mut self) {
        while let Some(b) = self.intake.ready.pop_front() {
            if let Err(b) = self.sender.try_send(b) {
                self.intake.ready.push_front(b);
                break;
            }
        }
    }

    /// Reads until `WouldBlock`, or until sealed batches wait for room in the channel.
    fn read_input(&mut self, poll: &Poll) -> io::Result<()> {
        while self.intake.ready.is_empty() && self.stopping.is_none() {
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
                Signal::SIGUSR1 => log!(Info, "stats: {}", self.stats.summary()),
                _ => {}
            }
        }
    }

    fn begin_stop(&mut self) {
        let now = Instant::now();
        if let Some(s) = &mut self.stopping {
            log!(Warn, "second stop request: giving up on delivery now");
            s.deadline = now;
            self.sender.stop(now);
            return;
        }
        self.finish_partial_line();
        if let Some(b) = self.intake.batcher.take() {
            self.intake.ready.push_back(b);
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

    /// Advances a stop; returns the outcome once it is over.
    fn stop_progress(&mut self) -> Option<Outcome> {
        let s = self.stopping.as_mut()?;
        let now = Instant::now();
        if !s.channel_closed && (self.intake.ready.is_empty() || now >= s.deadline) {
            // Batches the sender could not take in time are set aside here.
            for b in self.intake.ready.drain(..) {
                sender::set_aside(
                    self.config.failed_attempts_dir.as_deref(),
                    &b,
                    "the stop deadline passed before delivery",
                    &self.stats,
                );
            }
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
        log!(Info, "stopped: {}", self.stats.summary());
        Some(Outcome { lost_at_stop })
    }
}

/// Lines on their way into batches: the splitter, the batch being filled, and the sealed
/// batches waiting for the sender (kept short by pausing reads).
struct Intake {
    splitter: LineSplitter,
    batcher: Batcher,
    ready: VecDeque<Batch>,
    stats: Arc<Stats>,
}

impl Intake {
    /// Splits a chunk read at `now` into lines and batches.
    fn feed(&mut self, chunk: &[u8], now: Instant) {
        let Intake {
            splitter,
            batcher,
            ready,
            stats,
        } = self;
        let limit = splitter.max_line();
        splitter.feed(chunk, &mut |p| {
            on_piece(p, limit, now, batcher, ready, stats)
        });
    }

    /// Ends the current line, if any: the input ended or the daemon is stopping.
    fn finish_line(&mut self, now: Instant) {
        let Intake {
            splitter,
            batcher,
            ready,
            stats,
        } = self;
        let limit = splitter.max_line();
        splitter.finish(&mut |p| on_piece(p, limit, now, batcher, ready, stats));
    }
}

/// Routes one piece from the splitter.
fn on_piece(
    piece: Piece<'_>,
    limit: usize,
    now: Instant,
    batcher: &mut Batcher,
    ready: &mut VecDeque<Batch>,
    stats: &Stats,
) {
    match piece {
        Piece::Line(line) => {
            Stats::add(&stats.lines_read, 1);
            batcher.push(line, now, &mut |b| ready.push_back(b));
        }
        Piece::Empty => Stats::add(&stats.empty_lines, 1),
        Piece::LongStart(_) | Piece::LongMore(_) => {}
        Piece::Oversized { len } => {
            Stats::add(&stats.oversized_lines, 1);
            log!(Warn, "skipped a line of {len} bytes: longer than the {limit} bytes a record leaves for data");
        }
    }
}
