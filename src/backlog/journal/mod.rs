//! The journal (`--durable`): every byte taken from the input, on disk before anything else
//! happens to it.
//!
//! The journal is one byte stream, numbered from 0 when it was first made, kept in segment
//! files `journal/segment-<offset>` (the offset of the segment's first byte, 20 digits, so names
//! sort by offset). Bytes are appended at the tail by `splice(2)` straight from the pipe into
//! the last segment: no read byte is ever only in the process. The reader makes lines and
//! batches from the journal behind the tail; a batch knows the bytes it covers, and once the
//! destination accepted it (or its lines were kept elsewhere) those bytes are *done*. The
//! *watermark* is the offset below which everything is done; segments wholly below it are
//! removed.
//!
//! `journal/state` records the watermark, the done ranges above it, the highest offset handed
//! to the sender, and whether the watermark falls inside a line (the rest of an over-long
//! line, already kept apart). It is written in place after every change, alternating between
//! two 4 KiB slots with a sequence number and a checksum, so a torn write leaves the other slot
//! valid; a state that cannot be read means everything in the journal is sent again
//! (duplicates, never a loss).
//!
//! Nothing is forced to the disk more than every `--fsync-interval` (0: after every append);
//! a killed process loses nothing (the page cache survives it), a power cut at most that
//! interval. Every file is created 0600, without following symlinks; a segment that is not a
//! regular file, or overlaps another, is renamed aside with `.bad` and reported.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, SpliceFFlags};

use super::spool::{prepare_dir, sync_dir, Spool, BAD_SUFFIX};
use crate::log;

mod state;

use state::{encode_state, read_state, MAX_RANGES, SLOT};
pub use state::{parse_state_slot, State};

/// The journal's subdirectory of the failed-attempts directory.
pub const JOURNAL_DIR: &str = "journal";
/// Prefix of a segment's file name.
const SEGMENT_PREFIX: &str = "segment-";
/// The state file's name.
const STATE_FILE: &str = "state";
/// The largest segment; smaller when `--failed-attempts-max-bytes` is small, so that done
/// segments free room in time. One file made and removed per MiB costs nothing measurable.
const SEGMENT_MAX: u64 = 1 << 20;
/// The most moved from the input at once.
pub const SPLICE_MAX: usize = 1 << 20;
/// The largest offset accepted from the directory (2^62: centuries of input at any rate), so
/// that no sum of offsets overflows.
pub(crate) const MAX_OFFSET: u64 = 1 << 62;

/// One segment file.
#[derive(Debug)]
struct Segment {
    start: u64,
    len: u64,
    file: File,
    /// Bytes at its start given back to the file system (a full disk): a hole now.
    punched: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// What [`Journal::append_from`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Moved this many bytes to the tail.
    Bytes(usize),
    /// The input had nothing now.
    WouldBlock,
    /// The input reported its end (no writer, or standard input closed).
    End,
    /// `--failed-attempts-max-bytes` leaves no room.
    Full,
}

/// What the journal held when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Where reading starts: the watermark.
    pub start: u64,
    /// The watermark falls inside a line whose start was handled: skip to its end.
    pub mid_line: bool,
    /// Lines ending at or below this offset, not done, may have been accepted before the
    /// restart: sending them again may duplicate them.
    pub handed: u64,
    /// Bytes not done yet.
    pub pending: u64,
}

/// The journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// Where the next appended byte goes.
    tail: u64,
    segment_max: u64,
    /// Whether bytes are appended (`--durable`), or the journal of an earlier run is only
    /// delivered and emptied.
    appending: bool,
    watermark: u64,
    /// Done ranges above the watermark: start → end, disjoint and not touching.
    done: BTreeMap<u64, u64>,
    /// The watermark falls inside a line.
    mid_line: bool,
    handed: u64,
    state: File,
    state_seq: u64,
    fsync_interval: Duration,
    /// Since when appended bytes wait to be forced to the disk.
    dirty_since: Option<Instant>,
    /// A segment was created or removed since the directory was last forced to the disk.
    dir_dirty: bool,
    /// Bytes from this offset on have not been forced to the disk.
    synced_to: u64,
    /// When a failed sync was last logged.
    sync_warned: Option<Instant>,
    /// The next append starts a new segment (the directory was made again).
    roll_next: bool,
}

impl Journal {
    /// Opens the journal in `spool`'s directory, recovering what an earlier run left. With
    /// `appending` false (no `--durable`) it returns `None` when there is nothing to deliver.
    /// Its bytes are counted in the spool's size already ([`Spool::open`]).
    pub fn open(
        spool: &Spool,
        appending: bool,
        fsync_interval: Duration,
    ) -> io::Result<Option<(Journal, Recovered)>> {
        let dir = spool.dir().join(JOURNAL_DIR);
        if !appending {
            // Only an earlier --durable run's segments are worth a look; anything else under
            // that name is left alone.
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    log!(
                        Warn,
                        "{} is not a directory: no journal to deliver",
                        dir.display()
                    );
                    return Ok(None);
                }
                Err(_) => return Ok(None),
            }
        }
        prepare_dir(&dir)?;
        let segments = open_segments(&dir)?;
        if !appending && segments.is_empty() {
            return Ok(None);
        }
        let state = open_state(&dir)?;
        let saved = read_state(&state);
        // Both slots are written out now, so that recording the state later never needs a
        // new block of a full disk.
        let len = state.metadata()?.len();
        if len < 2 * SLOT as u64 {
            state.write_all_at(&vec![0; 2 * SLOT - len as usize], len)?;
            spool.add_held(2 * SLOT as u64 - len);
        }
        let cap = spool.max_bytes();
        let mut journal = Journal {
            dir,
            segments,
            tail: 0,
            segment_max: (cap / 4).clamp(4096, SEGMENT_MAX),
            appending,
            watermark: 0,
            done: BTreeMap::new(),
            mid_line: false,
            handed: 0,
            state,
            state_seq: 0,
            fsync_interval,
            dirty_since: None,
            dir_dirty: false,
            synced_to: 0,
            sync_warned: None,
            roll_next: false,
        };
        let first = journal.segments.front().map_or(0, |s| s.start);
        journal.tail = journal.segments.back().map_or(0, Segment::end);
        match saved {
            Some(s) => {
                journal.state_seq = s.seq;
                journal.watermark = s.watermark;
                journal.mid_line = s.mid_line;
                journal.handed = s.handed;
                for (a, b) in s.done {
                    journal.done.insert(a, b);
                }
                if journal.segments.is_empty() {
                    journal.tail = journal.watermark;
                }
            }
            None => {
                if journal.tail > first {
                    log!(
                        Warn,
                        "the journal's state in {} is missing or unreadable: everything in the \
                         journal is sent again (some lines may arrive twice)",
                        journal.dir.display()
                    );
                }
                journal.watermark = first;
                journal.handed = journal.tail;
            }
        }
        if journal.watermark < first {
            // Segments below it were removed: they were done.
            journal.watermark = first;
            journal.mid_line = false;
        }
        if journal.watermark > journal.tail {
            // Everything on disk was done (a power cut may have cut the last segment short):
            // the stream goes on from the watermark, with a new line.
            journal.tail = journal.watermark;
            journal.mid_line = false;
        }
        // Gaps between segments (a segment removed by hand) hold nothing to read.
        let gaps: Vec<(u64, u64)> = journal
            .segments
            .iter()
            .zip(journal.segments.iter().skip(1))
            .filter(|(a, b)| a.end() < b.start)
            .map(|(a, b)| (a.end(), b.start))
            .collect();
        let (watermark, tail) = (journal.watermark, journal.tail);
        let saved_done = std::mem::take(&mut journal.done);
        for (a, b) in saved_done {
            let (a, b) = (a.max(watermark), b.min(tail));
            if a < b {
                journal.insert_done(a, b);
            }
        }
        for (a, b) in gaps.into_iter().filter(|&(_, b)| b > watermark) {
            log!(
                Warn,
                "the journal has no bytes from {a} to {b} (a segment is missing); going on after it"
            );
            journal.insert_done(a.max(watermark), b);
        }
        // A watermark in a gap moves over it, with a new line after it.
        // (advance_watermark finds no byte before a watermark in a gap: not inside a line.)
        journal.advance_watermark();
        journal.remove_segments(spool, false);
        journal.write_state();
        let done_above: u64 = journal.done.iter().map(|(a, b)| b - a).sum();
        let recovered = Recovered {
            start: journal.watermark,
            mid_line: journal.mid_line,
            handed: journal.handed.min(journal.tail),
            pending: journal.tail - journal.watermark - done_above,
        };
        if !appending && recovered.pending == 0 && !recovered.mid_line {
            return Ok(None);
        }
        Ok(Some((journal, recovered)))
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset the next appended byte gets.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Everything below this offset needs nothing more.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Whether the watermark falls inside a line (the rest of an over-long one).
    pub fn mid_line(&self) -> bool {
        self.mid_line
    }

    /// Whether bytes are appended to it.
    pub fn appending(&self) -> bool {
        self.appending
    }

    /// The first done range that ends after `at`, if any: the reader skips it.
    pub fn done_after(&self, at: u64) -> Option<(u64, u64)> {
        if at < self.watermark {
            return Some((at, self.watermark));
        }
        self.done
            .range(..=at)
            .next_back()
            .filter(|(_, &b)| b > at)
            .or_else(|| self.done.range(at + 1..).next())
            .map(|(&a, &b)| (a, b))
    }

    /// Reads bytes at `at` (below the tail) into `buf`, at most up to the end of the segment
    /// holding them.
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Some(seg) = self.segments.iter().find(|s| s.start <= at && at < s.end()) else {
            return Err(io::Error::other(format!(
                "the journal holds no byte at offset {at}"
            )));
        };
        let n = buf.len().min((seg.end() - at) as usize);
        loop {
            match seg.file.read_at(&mut buf[..n], at - seg.start) {
                Ok(0) if n > 0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "a journal segment is shorter than it was",
                    ))
                }
                Ok(k) => return Ok(k),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The last segment, ready for more bytes: a new one when there is none, it is full, or
    /// it does not end at the tail.
    fn writable_segment(&mut self) -> io::Result<&mut Segment> {
        let roll = self.roll_next
            || self
                .segments
                .back()
                .is_none_or(|s| s.len >= self.segment_max || s.end() != self.tail);
        if roll {
            self.ensure_dir()?;
            let path = self.dir.join(segment_name(self.tail));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&path)?;
            self.dir_dirty = true;
            self.roll_next = false;
            self.segments.push_back(Segment {
                start: self.tail,
                len: 0,
                file,
                punched: 0,
            });
        }
        Ok(self.segments.back_mut().expect("a segment was made"))
    }

    /// Makes the journal's directory and state file again if someone removed them.
    fn ensure_dir(&mut self) -> io::Result<()> {
        if self.dir.join(STATE_FILE).is_file() {
            return Ok(());
        }
        log!(
            Warn,
            "the journal directory {} was removed; creating it again",
            self.dir.display()
        );
        prepare_dir(&self.dir)?;
        self.state = open_state(&self.dir)?;
        self.state.write_all_at(&[0; 2 * SLOT], 0)?;
        self.write_state();
        self.dir_dirty = true;
        // What the removed segments held is read on from their open files, but is not on the
        // disk any more: appending goes on in a new segment.
        self.roll_next = true;
        Ok(())
    }

    /// Moves up to [`SPLICE_MAX`] bytes from `input` (a pipe, nonblocking) to the tail,
    /// within the room the spool's cap gives. An error is the file system's (disk full, I/O
    /// error) or the input's; `splice` takes nothing from the pipe that it did not write.
    pub fn append_from(
        &mut self,
        input: impl AsFd,
        spool: &Spool,
        now: Instant,
    ) -> io::Result<Appended> {
        let segment_max = self.segment_max;
        let seg = self.writable_segment()?;
        let want = (segment_max - seg.len.min(segment_max)).clamp(1, SPLICE_MAX as u64);
        let granted = spool.reserve_up_to(want);
        if granted == 0 {
            return Ok(Appended::Full);
        }
        let result = {
            let mut off = seg.len as i64;
            loop {
                match nix::fcntl::splice(
                    input.as_fd(),
                    None,
                    seg.file.as_fd(),
                    Some(&mut off),
                    granted as usize,
                    SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.map_err(io::Error::from),
                }
            }
        };
        match result {
            Ok(0) => {
                spool.release(granted);
                Ok(Appended::End)
            }
            Ok(n) => {
                spool.release(granted - n as u64);
                self.appended(n as u64, now);
                Ok(Appended::Bytes(n))
            }
            Err(e) => {
                spool.release(granted);
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(Appended::WouldBlock)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Appends `bytes` (read from an input `splice` cannot take, such as a regular file). On
    /// an error nothing counts as appended; the caller keeps the bytes and tries again.
    pub fn append_bytes(
        &mut self,
        bytes: &[u8],
        spool: &Spool,
        now: Instant,
    ) -> io::Result<Appended> {
        let n = bytes.len() as u64;
        if !spool.reserve(n) {
            return Ok(Appended::Full);
        }
        let written = self
            .writable_segment()
            .and_then(|seg| seg.file.write_all_at(bytes, seg.len));
        match written {
            Ok(()) => {
                self.appended(n, now);
                Ok(Appended::Bytes(bytes.len()))
            }
            Err(e) => {
                spool.release(n);
                Err(e)
            }
        }
    }

    /// Counts `n` appended bytes. With `--fsync-interval 0` they are forced to the disk now;
    /// a sync that fails is logged and tried again at the next append (the bytes are in).
    fn appended(&mut self, n: u64, now: Instant) {
        let seg = self.segments.back_mut().expect("appended to a segment");
        seg.len += n;
        self.tail += n;
        self.dirty_since.get_or_insert(now);
        if self.fsync_interval.is_zero() {
            self.sync_or_warn(now);
        }
    }

    /// Forces the journal to the disk; a failure is logged (once a minute) and tried again
    /// after `--fsync-interval` (at least a second), not at once.
    pub fn sync_or_warn(&mut self, now: Instant) {
        if let Err(e) = self.sync() {
            if self
                .sync_warned
                .is_none_or(|at| now >= at + Duration::from_secs(60))
            {
                self.sync_warned = Some(now);
                log!(
                    Warn,
                    "cannot force the journal in {} to the disk: {e}",
                    self.dir.display()
                );
            }
            self.dirty_since =
                Some(now + Duration::from_secs(1).saturating_sub(self.fsync_interval));
        }
    }

    /// Ends an unterminated last line with `\n` (its writer hung up: it is a whole line).
    /// `Bytes(0)` when the line was ended already; `Full` when the cap leaves no room for it.
    pub fn terminate_last_line(&mut self, spool: &Spool, now: Instant) -> io::Result<Appended> {
        if !self.appending {
            return Ok(Appended::Bytes(0));
        }
        let unterminated = if self.tail == self.watermark {
            // Everything is done; the last line may still be the rest of an over-long one.
            self.mid_line
        } else {
            let mut last = [0u8; 1];
            self.read_at(self.tail - 1, &mut last)? == 1 && last[0] != b'\n'
        };
        if unterminated {
            self.append_bytes(b"\n", spool, now)
        } else {
            Ok(Appended::Bytes(0))
        }
    }

    /// Records that `range` is done (accepted, or kept elsewhere) and removes the segments
    /// this completes.
    pub fn mark_done(&mut self, range: std::ops::Range<u64>, spool: &Spool) {
        if range.start >= range.end || range.end <= self.watermark {
            return;
        }
        self.insert_done(range.start.max(self.watermark), range.end);
        if self.advance_watermark() {
            self.remove_segments(spool, false);
        }
        self.write_state();
    }

    /// Notes that bytes up to `end` were handed to the sender.
    pub fn mark_handed(&mut self, end: u64) {
        if end > self.handed {
            self.handed = end;
            self.write_state();
        }
    }

    fn insert_done(&mut self, mut a: u64, mut b: u64) {
        // Merge with a range that starts before and reaches `a`.
        if let Some((&pa, &pb)) = self.done.range(..=a).next_back() {
            if pb >= a {
                a = pa;
                b = b.max(pb);
                self.done.remove(&pa);
            }
        }
        // Absorb the ranges that start within.
        let inside: Vec<(u64, u64)> = self.done.range(a..=b).map(|(&x, &y)| (x, y)).collect();
        for (x, y) in inside {
            b = b.max(y);
            self.done.remove(&x);
        }
        self.done.insert(a, b);
    }

    /// Moves the watermark over the done ranges that reach it; true if it moved.
    fn advance_watermark(&mut self) -> bool {
        let before = self.watermark;
        while let Some((&a, &b)) = self.done.iter().next() {
            if a > self.watermark {
                break;
            }
            self.watermark = self.watermark.max(b);
            self.done.remove(&a);
        }
        if self.watermark != before {
            let mut last = [0u8; 1];
            self.mid_line =
                matches!(self.read_at(self.watermark - 1, &mut last), Ok(1) if last[0] != b'\n');
            true
        } else {
            false
        }
    }

    /// Gives back to a full disk what is done: every done segment, the one being appended to
    /// included, and the done start of the first one left (punched out of the file). Returns
    /// how many bytes it gave back.
    pub fn free_done(&mut self, spool: &Spool) -> u64 {
        let before = spool.used();
        self.remove_segments(spool, true);
        let mut freed = before.saturating_sub(spool.used());
        let Some(seg) = self.segments.front_mut() else {
            return freed;
        };
        let done = (self.watermark.saturating_sub(seg.start).min(seg.len)) & !4095;
        if done > seg.punched {
            let punched = nix::fcntl::fallocate(
                &seg.file,
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                    | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                seg.punched as i64,
                (done - seg.punched) as i64,
            );
            if punched.is_ok() {
                spool.release(done - seg.punched);
                freed += done - seg.punched;
                seg.punched = done;
            }
        }
        freed
    }

    /// Removes the segments that end at or below the watermark; the one being appended to
    /// only when it is full, or when `squeeze` (the disk or the cap is full).
    fn remove_segments(&mut self, spool: &Spool, squeeze: bool) {
        while let Some(seg) = self.segments.front() {
            // The segment being appended to stays until it is full (unless the disk is):
            // removing and making it again for every delivered batch would cost two file
            // operations each.
            let appending_to = !squeeze
                && self.appending
                && self.segments.len() == 1
                && seg.end() == self.tail
                && seg.len < self.segment_max;
            if seg.end() > self.watermark || appending_to {
                break;
            }
            let path = self.dir.join(segment_name(seg.start));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    log!(
                        Warn,
                        "cannot remove the delivered journal segment {}: {e}",
                        path.display()
                    );
                    return;
                }
            }
            spool.release(seg.len - seg.punched);
            self.dir_dirty = true;
            self.segments.pop_front();
        }
    }

    /// Writes the state to the next slot (forced to the disk with the next sync).
    fn write_state(&mut self) {
        self.state_seq += 1;
        let record = encode_state(&State {
            seq: self.state_seq,
            watermark: self.watermark,
            handed: self.handed,
            mid_line: self.mid_line,
            done: self
                .done
                .iter()
                .take(MAX_RANGES)
                .map(|(&a, &b)| (a, b))
                .collect(),
        });
        let slot = (self.state_seq % 2) * SLOT as u64;
        if let Err(e) = self.state.write_all_at(&record, slot) {
            log!(
                Warn,
                "cannot record the journal's state: {e} (after a restart, lines may arrive twice)"
            );
        }
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// When appended bytes are next forced to the disk, if any wait.
    pub fn sync_deadline(&self) -> Option<Instant> {
        self.dirty_since.map(|d| d + self.fsync_interval)
    }

    /// Forces what was appended (and the state) to the disk.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty_since.is_none() && !self.dir_dirty {
            return Ok(());
        }
        self.ensure_dir()?;
        // Every segment written since the last sync (more than one when segments rolled over).
        for seg in self.segments.iter().filter(|s| s.end() > self.synced_to) {
            seg.file.sync_data()?;
        }
        self.synced_to = self.tail;
        self.state.sync_data()?;
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.dirty_since = None;
        Ok(())
    }

    /// Bytes not done yet.
    pub fn pending(&self) -> u64 {
        let done: u64 = self.done.iter().map(|(a, b)| b - a).sum();
        self.tail - self.watermark - done
    }
}

/// Opens (or creates, 0600) the state file without following a symlink or blocking, and
/// refuses anything but a regular file.
fn open_state(dir: &Path) -> io::Result<File> {
    let path = dir.join(STATE_FILE);
    let state = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(&path)?;
    if !state.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(state)
}

fn segment_name(start: u64) -> String {
    format!("{SEGMENT_PREFIX}{start:020}")
}

/// Opens the segments in `dir`, oldest first; sets aside what is not a regular file or
/// overlaps another segment.
fn open_segments(dir: &Path) -> io::Result<VecDeque<Segment>> {
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(digits) = name.strip_prefix(SEGMENT_PREFIX) else {
            continue;
        };
        // Exactly the names this journal writes: 20 ASCII digits, within MAX_OFFSET.
        match digits.parse::<u64>() {
            Ok(start) if start <= MAX_OFFSET && name == segment_name(start) => {
                found.push((start, entry.path()))
            }
            _ => {}
        }
    }
    found.sort();
    let mut segments: VecDeque<Segment> = VecDeque::new();
    for (start, path) in found {
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
            .open(&path)
            .and_then(|f| {
                let m = f.metadata()?;
                if m.is_file() {
                    Ok((f, m.len()))
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ))
                }
            });
        let overlaps = segments.back().is_some_and(|s| s.end() > start);
        match opened {
            Ok((file, len)) if !overlaps && start + len <= MAX_OFFSET => {
                segments.push_back(Segment {
                    start,
                    len,
                    file,
                    punched: 0,
                })
            }
            other => {
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "it overlaps the segment before it".into(),
                };
                let bad = PathBuf::from(format!("{}{BAD_SUFFIX}", path.display()));
                match fs::rename(&path, &bad) {
                    Ok(()) => log!(
                        Error,
                        "journal segment {} cannot be used ({why}): renamed to {}",
                        path.display(),
                        bad.display()
                    ),
                    Err(e) => log!(
                        Error,
                        "journal segment {} cannot be used ({why}) nor renamed aside: {e}",
                        path.display()
                    ),
                }
            }
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("f2k-journal-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn pipe_with(bytes: &[u8]) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        nix::unistd::write(&w, bytes).unwrap();
        (r, w)
    }

    fn read_all(j: &Journal, from: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = from;
        let mut buf = [0u8; 7];
        while at < j.tail() {
            let n = j.read_at(at, &mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
            at += n as u64;
        }
        out
    }

    #[test]
    fn bytes_spliced_from_a_pipe_are_read_back_across_segments() {
        let dir = temp("splice");
        let spool = Spool::open(&dir, 2 * SLOT as u64 + 16 * 1024).unwrap();
        let (mut j, r) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            Recovered {
                start: 0,
                mid_line: false,
                handed: 0,
                pending: 0
            }
        );
        let content: Vec<u8> = (0..1000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let t0 = Instant::now();
        for part in content.chunks(3000) {
            let (rd, _w) = pipe_with(part);
            let mut got = 0;
            while let Appended::Bytes(n) = j.append_from(&rd, &spool, t0).unwrap() {
                got += n;
            }
            assert_eq!(got, part.len());
            assert_eq!(
                j.append_from(&rd, &spool, t0).unwrap(),
                Appended::WouldBlock
            );
        }
        assert!(j.segments.len() > 1, "4 KiB segments under a 16 KiB cap");
        assert_eq!(read_all(&j, 0), content);
        assert_eq!(spool.used(), content.len() as u64 + 2 * SLOT as u64);
        for seg in fs::read_dir(dir.join(JOURNAL_DIR)).unwrap() {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                seg.unwrap().metadata().unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cap_stops_appending_and_done_segments_give_room_back() {
        let dir = temp("cap");
        let spool = Spool::open(&dir, 2 * SLOT as u64 + 8192).unwrap();
        let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        let (rd, w) = pipe_with(&[b'x'; 10_000]);
        let mut got = 0;
        while let Appended::Bytes(n) = j.append_from(&rd, &spool, t0).unwrap() {
            got += n;
        }
        assert_eq!(got, 8192);
        assert_eq!(j.append_from(&rd, &spool, t0).unwrap(), Appended::Full);
        j.mark_done(0..4096, &spool);
        assert_eq!(
            j.segments.front().unwrap().start,
            4096,
            "the first segment was removed"
        );
        assert_eq!(
            j.append_from(&rd, &spool, t0).unwrap(),
            Appended::Bytes(10_000 - 8192)
        );
        drop(w);
        assert_eq!(j.append_from(&rd, &spool, t0).unwrap(), Appended::End);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_restart_starts_at_the_watermark_and_skips_what_was_done_above_it() {
        let dir = temp("restart");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let t0 = Instant::now();
        {
            let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
                .unwrap()
                .unwrap();
            j.append_bytes(b"a\nbb\nccc\ndddd\npartial", &spool, t0)
                .unwrap();
            j.mark_handed(14);
            j.mark_done(0..2, &spool);
            j.mark_done(5..9, &spool);
            // Killed here: nothing was synced, the page cache keeps it.
        }
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (j, r) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(r.start, 2);
        assert!(!r.mid_line);
        assert_eq!(r.handed, 14);
        assert_eq!(r.pending, 21 - 2 - 4);
        assert_eq!(j.done_after(2), Some((5, 9)));
        assert_eq!(j.done_after(9), None);
        assert_eq!(read_all(&j, 2), b"bb\nccc\ndddd\npartial");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_or_foreign_state_falls_back_to_the_other_slot_or_to_everything() {
        let s = State {
            seq: 7,
            watermark: 10,
            handed: 20,
            mid_line: true,
            done: vec![(12, 15), (16, 18)],
        };
        let mut slot = encode_state(&s);
        assert_eq!(parse_state_slot(&slot), Some(s.clone()));
        for i in 0..slot.len() {
            let mut torn = slot.clone();
            torn[i] ^= 0x40;
            assert_eq!(parse_state_slot(&torn), None, "byte {i} changed");
        }
        slot.truncate(slot.len() - 1);
        assert_eq!(parse_state_slot(&slot), None);
        let bad = State {
            done: vec![(15, 12)],
            ..s.clone()
        };
        assert_eq!(
            parse_state_slot(&encode_state(&bad)),
            None,
            "ranges must be well formed"
        );
        let below = State {
            done: vec![(5, 12)],
            ..s
        };
        assert_eq!(
            parse_state_slot(&encode_state(&below)),
            None,
            "ranges lie above the watermark"
        );

        let dir = temp("torn");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        {
            let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
                .unwrap()
                .unwrap();
            j.append_bytes(b"one\ntwo\n", &spool, Instant::now())
                .unwrap();
            j.mark_done(0..4, &spool);
        }
        fs::write(dir.join(JOURNAL_DIR).join(STATE_FILE), b"garbage").unwrap();
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (_, r) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(r.start, 0, "no state: everything is sent again");
        assert_eq!(r.handed, 8, "and counted as possibly sent before");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn done_ranges_merge_and_move_the_watermark() {
        let dir = temp("merge");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        j.append_bytes(&[b'\n'; 100], &spool, Instant::now())
            .unwrap();
        j.mark_done(10..20, &spool);
        j.mark_done(30..40, &spool);
        j.mark_done(20..30, &spool);
        assert_eq!(j.done.iter().collect::<Vec<_>>(), vec![(&10, &40)]);
        j.mark_done(5..12, &spool);
        j.mark_done(0..5, &spool);
        assert_eq!(j.watermark, 40);
        assert!(j.done.is_empty());
        assert_eq!(j.pending(), 60);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_segment_that_is_not_a_regular_file_is_set_aside_never_opened() {
        let dir = temp("hostile");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let jdir = dir.join(JOURNAL_DIR);
        prepare_dir(&jdir).unwrap();
        let fifo = jdir.join(segment_name(0));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let (_, r) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(r.pending, 0);
        assert!(!fifo.exists());
        assert!(jdir
            .join(format!("{}{BAD_SUFFIX}", segment_name(0)))
            .exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_fsync_interval_of_zero_forces_every_append_and_one_second_waits() {
        let dir = temp("fsync");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let t0 = Instant::now();
        {
            let (mut j, _) = Journal::open(&spool, true, Duration::ZERO)
                .unwrap()
                .unwrap();
            j.append_bytes(b"a\n", &spool, t0).unwrap();
            assert_eq!(j.sync_deadline(), None, "forced at once");
            assert_eq!(j.synced_to, 2);
        }
        let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        j.sync().unwrap();
        j.append_bytes(b"b\n", &spool, t0).unwrap();
        assert_eq!(j.sync_deadline(), Some(t0 + Duration::from_secs(1)));
        j.sync().unwrap();
        assert_eq!((j.sync_deadline(), j.synced_to), (None, 4));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_state_file_that_is_a_symlink_is_refused_not_followed() {
        let dir = temp("symlink");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let jdir = dir.join(JOURNAL_DIR);
        prepare_dir(&jdir).unwrap();
        let target = dir.join("elsewhere");
        fs::write(&target, b"not the journal's").unwrap();
        std::os::unix::fs::symlink(&target, jdir.join(STATE_FILE)).unwrap();
        assert!(Journal::open(&spool, true, Duration::from_secs(1)).is_err());
        assert_eq!(fs::read(&target).unwrap(), b"not the journal's");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_segment_under_the_watermark_is_gone_over_not_read() {
        let dir = temp("gap");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        {
            let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
                .unwrap()
                .unwrap();
            j.append_bytes(b"aaaa\n", &spool, Instant::now()).unwrap();
            j.tail = 10_000;
            j.segments.clear();
            j.append_bytes(b"bbbb\ncccc\n", &spool, Instant::now())
                .unwrap();
            j.mark_done(10_000..10_005, &spool);
        }
        // A stray earlier segment, and the watermark's segment missing.
        let jdir = dir.join(JOURNAL_DIR);
        fs::write(jdir.join(segment_name(0)), b"old\n").unwrap();
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (j, r) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(r.start, 0);
        assert_eq!(
            j.done_after(4),
            Some((4, 10_005)),
            "the gap and what was done after it"
        );
        assert_eq!(r.pending, 4 + 5);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_names_the_journal_writes_are_segments() {
        let dir = temp("names");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let jdir = dir.join(JOURNAL_DIR);
        prepare_dir(&jdir).unwrap();
        fs::write(jdir.join(segment_name(0)), b"real\n").unwrap();
        fs::write(jdir.join("segment-+0000000000000000000"), b"forged\n").unwrap();
        fs::write(jdir.join(segment_name(MAX_OFFSET + 1)), b"far\n").unwrap();
        let (j, r) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(r.pending, 5);
        let mut buf = [0u8; 5];
        j.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"real\n");
        assert!(jdir.join(segment_name(0)).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_durable_anything_but_a_journal_with_segments_is_left_alone() {
        let dir = temp("plain");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        fs::write(dir.join(JOURNAL_DIR), b"a file").unwrap();
        assert!(Journal::open(&spool, false, Duration::from_secs(1))
            .unwrap()
            .is_none());
        fs::remove_file(dir.join(JOURNAL_DIR)).unwrap();
        prepare_dir(&dir.join(JOURNAL_DIR)).unwrap();
        assert!(Journal::open(&spool, false, Duration::from_secs(1))
            .unwrap()
            .is_none());
        assert!(
            !dir.join(JOURNAL_DIR).join(STATE_FILE).exists(),
            "nothing written"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hang_up_after_an_over_long_line_whose_bytes_are_all_done_still_ends_it() {
        let dir = temp("hangup");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        j.append_bytes(b"ok\nxxxxxxxxxx", &spool, t0).unwrap();
        j.mark_done(0..13, &spool);
        assert!(j.mid_line);
        assert_eq!(
            j.terminate_last_line(&spool, t0).unwrap(),
            Appended::Bytes(1)
        );
        assert_eq!(j.tail(), 14);
        assert_eq!(
            j.terminate_last_line(&spool, t0).unwrap(),
            Appended::Bytes(0),
            "once"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_cap_gets_back_the_done_bytes_of_the_segment_being_written() {
        let dir = temp("squeeze");
        // Room for the state and 3000 bytes: less than one 4 KiB segment.
        let spool = Spool::open(&dir, 2 * SLOT as u64 + 3000).unwrap();
        let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        let t0 = Instant::now();
        let (rd, _w) = pipe_with(&[b'\n'; 5000]);
        while let Appended::Bytes(_) = j.append_from(&rd, &spool, t0).unwrap() {}
        assert_eq!(j.append_from(&rd, &spool, t0).unwrap(), Appended::Full);
        j.mark_done(0..3000, &spool);
        assert_eq!(
            j.segments.len(),
            1,
            "the segment being written is kept while there is room"
        );
        assert_eq!(j.append_from(&rd, &spool, t0).unwrap(), Appended::Full);
        assert_eq!(j.free_done(&spool), 3000);
        assert!(matches!(
            j.append_from(&rd, &spool, t0).unwrap(),
            Appended::Bytes(2000)
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
