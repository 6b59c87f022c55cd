//! Reading a spool file back, a batch at a time, without holding the file in memory.
//!
//! [`FileLines`] reads a file in chunks and hands out its lines (the pieces between `\n`; the
//! last one may be unterminated, as the Go tool wrote them; empty ones are skipped) with the
//! byte offset just past each, so that how far delivery got can be recorded as an offset at a
//! line boundary. A line longer than `max_line` is never held: it is passed on in pieces, to be
//! moved to `oversized/`. Memory stays at one read buffer plus one line of at most `max_line`.
//!
//! The backlog's side of replay is here too: which file is next (oldest first, skipping what
//! cannot be read or was delivered but not removed), one batch of it at a time with the
//! sender, its progress recorded beside it after each accepted batch, and its removal once
//! every line was accepted or moved to `oversized/`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

use super::spool::{self, Spool};
use super::{Backlog, LongLine, Origin};
use crate::batch::{Batch, Filling, Fit};
use crate::delivery::Finish;
use crate::log;
use crate::sender::Job;
use crate::stats::Stats;

/// The most read from the file at once.
const CHUNK: usize = 64 * 1024;

/// What the reader found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A line of at most `max_line` bytes; `end` is the offset just past it (and its `\n`).
    Line {
        /// The line, without its `\n`.
        line: &'a [u8],
        /// The offset just past the line.
        end: u64,
    },
    /// A piece of a line longer than `max_line`; more follow, then [`Item::LongEnd`].
    LongPiece(&'a [u8]),
    /// The long line ended; `end` is the offset just past it.
    LongEnd {
        /// Its length.
        len: u64,
        /// The offset just past it.
        end: u64,
    },
    /// The end of the file.
    End,
}

/// The lines of a file, read in chunks.
#[derive(Debug)]
pub struct FileLines<R> {
    source: R,
    max_line: usize,
    /// Read buffer; the unread bytes are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// How many unread bytes are known to hold no newline (not searched again).
    searched: usize,
    /// The file offset of `buf[start]`.
    offset: u64,
    eof: bool,
    /// In a long line: its length so far.
    long: Option<u64>,
    /// The most asked of the source at once.
    chunk: usize,
}

impl<R: Read> FileLines<R> {
    /// Reads `source`, whose first byte is at `offset` in the file.
    pub fn new(source: R, offset: u64, max_line: usize) -> Self {
        FileLines::with_chunk(source, offset, max_line, CHUNK)
    }

    /// Like [`FileLines::new`], reading at most `chunk` bytes at once (at least 1): small
    /// chunks reach the buffer's edge cases in tests.
    pub fn with_chunk(source: R, offset: u64, max_line: usize, chunk: usize) -> Self {
        FileLines {
            chunk: chunk.max(1),
            source,
            max_line,
            buf: Vec::new(),
            start: 0,
            end: 0,
            searched: 0,
            offset,
            eof: false,
            long: None,
        }
    }

    /// Whether everything was handed out (reads ahead if it must to know).
    pub fn at_end(&mut self) -> io::Result<bool> {
        loop {
            if self.long.is_some() || self.start < self.end {
                return Ok(false);
            }
            if self.eof {
                return Ok(true);
            }
            self.fill()?;
        }
    }

    /// The offset of the first byte not yet handed out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next line that is at most `fits` bytes long, if the next line is short enough,
    /// without consuming it otherwise: `Ok(None)` means the next item is a line longer than
    /// `fits` (but not over `max_line`), left for the next batch.
    pub fn next_if(&mut self, fits: usize) -> io::Result<Option<Item<'_>>> {
        loop {
            if let Some(len) = self.long {
                return self.continue_long(len).map(Some);
            }
            let unread = &self.buf[self.start..self.end];
            let from = self.searched.min(unread.len());
            let found = memchr::memchr(b'\n', &unread[from..]).map(|i| i + from);
            self.searched = found.unwrap_or(unread.len());
            if let Some(nl) = found {
                if nl == 0 {
                    self.consume(1);
                    continue;
                }
                if nl > self.max_line {
                    self.long = Some(0);
                    continue;
                }
                if nl > fits {
                    return Ok(None);
                }
                return Ok(Some(self.take_line(nl, 1)));
            }
            if unread.len() > self.max_line {
                self.long = Some(0);
                continue;
            }
            if self.eof {
                if unread.is_empty() {
                    return Ok(Some(Item::End));
                }
                if unread.len() > fits {
                    return Ok(None);
                }
                let n = unread.len();
                return Ok(Some(self.take_line(n, 0)));
            }
            self.fill()?;
        }
    }

    fn take_line(&mut self, len: usize, terminator: usize) -> Item<'_> {
        let at = self.start;
        self.consume(len + terminator);
        Item::Line {
            line: &self.buf[at..at + len],
            end: self.offset,
        }
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.offset += n as u64;
        self.searched = self.searched.saturating_sub(n);
    }

    /// Hands out what is buffered of a long line, up to its newline or the end of the file.
    fn continue_long(&mut self, len: u64) -> io::Result<Item<'_>> {
        if self.start == self.end && !self.eof {
            self.fill()?;
        }
        let unread = &self.buf[self.start..self.end];
        match memchr::memchr(b'\n', unread) {
            Some(0) => {
                self.consume(1);
                self.long = None;
                Ok(Item::LongEnd {
                    len,
                    end: self.offset,
                })
            }
            Some(n) => Ok(self.long_piece(n, len)),
            None if unread.is_empty() => {
                self.long = None;
                Ok(Item::LongEnd {
                    len,
                    end: self.offset,
                })
            }
            None => Ok(self.long_piece(unread.len(), len)),
        }
    }

    fn long_piece(&mut self, n: usize, len: u64) -> Item<'_> {
        let at = self.start;
        self.consume(n);
        self.long = Some(len + n as u64);
        Item::LongPiece(&self.buf[at..at + n])
    }

    /// Reads another chunk, keeping the unread bytes (moved to the front when the room after
    /// them runs short). The buffer grows
    /// only while a line does not fit in it, up to `max_line` plus a chunk.
    fn fill(&mut self) -> io::Result<()> {
        if self.buf.len() - self.end < self.chunk {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < self.chunk {
                self.buf.resize(self.end + self.chunk, 0);
            }
        }
        let n = loop {
            match self.source.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        if n == 0 {
            self.eof = true;
        }
        Ok(())
    }
}

/// The spool file being replayed.
pub(super) struct Replaying {
    path: PathBuf,
    lines: FileLines<File>,
    /// Everything before this offset was delivered (or moved to `oversized/`).
    delivered: u64,
    /// The reader reached the end of the file.
    read_all: bool,
    /// A batch of this file is with the sender.
    in_flight: bool,
}

impl Backlog {
    /// Makes a job from the next lines of the oldest spool file.
    pub(super) fn next_replay_job(&mut self, now: Instant) -> Option<Job> {
        if self.replaying.as_ref().is_some_and(|r| r.in_flight) {
            return None;
        }
        if self.replaying.is_none() && !self.open_next_file(now) {
            return None;
        }
        match self.replay_batch() {
            Ok(Some((batch, end))) => {
                if let Some(r) = self.replaying.as_mut() {
                    r.in_flight = true;
                }
                // No wake-ups while it is out: the report brings the next one on.
                self.schedule.await_report();
                Some(self.job(batch, Origin::Replay { end }))
            }
            Ok(None) => {
                // Nothing left to send in this file.
                self.finish_file(now);
                self.schedule.continue_now(now);
                None
            }
            Err(e) => {
                let path = self.replaying.take().map(|r| r.path).unwrap_or_default();
                self.unreadable_file(path, &e, now);
                None
            }
        }
    }

    /// Opens the oldest file to replay; false if there is none (or none can be opened now).
    fn open_next_file(&mut self, now: Instant) -> bool {
        let Some(spool) = &self.spool else {
            self.schedule.idle();
            return false;
        };
        let files = match spool.pending_files() {
            Ok(f) => f,
            Err(e) => {
                log!(Error, "cannot list {}: {e}", spool.dir().display());
                self.schedule.later(now);
                return false;
            }
        };
        let mut bad = Vec::new();
        let mut opened = None;
        for path in files {
            if self.delivered_files.contains(&path) {
                if spool.remove(&path).is_ok() {
                    self.delivered_files.remove(&path);
                }
                continue;
            }
            if self.unreadable.contains(&path) {
                continue;
            }
            match open_at_progress(spool, &path, self.limits.max_line) {
                Ok(lines) => {
                    opened = Some((path, lines));
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => bad.push((path, e)),
            }
        }
        for (path, e) in bad {
            self.unreadable_file(path, &e, now);
        }
        if let Some((path, lines)) = opened {
            let delivered = lines.offset();
            self.replaying = Some(Replaying {
                path,
                lines,
                delivered,
                read_all: false,
                in_flight: false,
            });
            return true;
        }
        if self.unreadable.is_empty() && self.delivered_files.is_empty() {
            self.schedule.idle();
        } else {
            // Try those again later, without spinning.
            self.unreadable.clear();
            self.schedule.block(now);
        }
        false
    }

    /// A file that cannot be read: renamed aside, or if even that fails, skipped for now.
    fn unreadable_file(&mut self, path: PathBuf, e: &io::Error, now: Instant) {
        let Some(spool) = &self.spool else { return };
        match spool.set_aside_unreadable(&path) {
            Ok(bad) => log!(
                Error,
                "cannot read failed-attempts file {}: {e}; renamed it to {}",
                path.display(),
                bad.display()
            ),
            Err(e2) => {
                if self.unreadable.insert(path.clone()) {
                    log!(
                        Error,
                        "cannot read failed-attempts file {}: {e}, nor rename it aside: {e2}; skipping it",
                        path.display()
                    );
                }
                self.schedule.later(now);
            }
        }
    }

    /// The next batch of the file being replayed, with the offset just past it; lines too long
    /// for a record are moved to `oversized/` on the way. `None` at the end of the file.
    fn replay_batch(&mut self) -> io::Result<Option<(Batch, u64)>> {
        let limits = self.limits;
        let overhead = limits.overhead;
        let r = self.replaying.as_mut().expect("a file is open");
        let spool = self.spool.as_ref().expect("replay needs a directory");
        let mut batch = Batch::new();
        let mut end = r.lines.offset();
        // Lines packed many to a record fill records as the batcher does.
        let mut filling = limits.packing.map(Filling::new);
        loop {
            let room = match &filling {
                Some(f) => match f.room(&batch, limits.max_records, limits.max_request_bytes) {
                    Some(room) => room,
                    None => break,
                },
                None if batch.len() < limits.max_records => limits
                    .max_request_bytes
                    .saturating_sub(batch.size_with(overhead) + overhead),
                None => break,
            };
            match r.lines.next_if(room.min(limits.max_line))? {
                None => break,
                Some(Item::Line { line, end: e }) => {
                    match &mut filling {
                        Some(f) => {
                            let fit = f.fit(
                                &batch,
                                line.len(),
                                limits.max_records,
                                limits.max_request_bytes,
                            );
                            debug_assert_ne!(fit, Fit::Full, "a line within the room fits");
                            f.push(&mut batch, line, fit);
                        }
                        None => batch.push(line),
                    }
                    end = e;
                }
                Some(Item::LongPiece(piece)) => {
                    if self.long.as_ref().is_none_or(|l| l.file.is_none()) {
                        self.long = Some(LongLine {
                            file: spool.begin_oversized().ok(),
                            refused: None,
                            released: false,
                        });
                    }
                    if let Some(f) = self.long.as_mut().and_then(|l| l.file.as_mut()) {
                        spool.write_moved(f, piece)?;
                    }
                }
                Some(Item::LongEnd { len, end: e }) => {
                    let file = self.long.take().and_then(|l| l.file);
                    let file =
                        file.ok_or_else(|| io::Error::other("cannot create a file in oversized/"))?;
                    let path = spool
                        .commit_oversized(file)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    Stats::add(&self.stats.oversized_lines, 1);
                    log!(Warn, "a replayed line of {len} bytes is longer than the {} bytes a record leaves for data; moved it to {}", limits.max_line, path.display());
                    end = e;
                }
                Some(Item::End) => {
                    r.read_all = true;
                    break;
                }
            }
        }
        // A file that ends with this batch is removed once it is accepted, with no progress
        // record in between.
        if !r.read_all && r.lines.at_end()? {
            r.read_all = true;
        }
        if batch.is_empty() {
            if end > r.delivered {
                // Only over-long lines were passed: they are kept, so the file moves on.
                r.delivered = end;
                spool.set_progress(&r.path, end)?;
            }
            if r.read_all {
                return Ok(None);
            }
        }
        Ok(Some((batch, end)))
    }

    /// A replayed batch came back.
    pub(super) fn replay_reported(&mut self, end: u64, finish: Finish, now: Instant) {
        Stats::add(&self.stats.lines_replayed, finish.accepted);
        let Some(r) = self.replaying.as_mut() else {
            return;
        };
        r.in_flight = false;
        match finish.undelivered {
            None => {
                r.delivered = end;
                if r.read_all {
                    self.finish_file(now);
                } else if let Some(spool) = &self.spool {
                    if let Err(e) = spool.set_progress(&r.path, end) {
                        log!(
                            Warn,
                            "cannot record replay progress of {}: {e}",
                            r.path.display()
                        );
                    }
                }
                self.schedule.continue_now(now);
            }
            Some(u) => {
                // The file still holds them: read again from what was delivered, later.
                log!(
                    Debug,
                    "{} replayed lines came back undelivered ({}); they stay in {}",
                    u.batch.len(),
                    u.reason,
                    r.path.display()
                );
                self.replaying = None;
                if u.permanent {
                    self.schedule.block(now);
                } else {
                    self.schedule.later(now);
                }
            }
        }
    }

    /// The open file was delivered whole: remove it (or remember it, if that fails).
    fn finish_file(&mut self, now: Instant) {
        let Some(r) = self.replaying.take() else {
            return;
        };
        let Some(spool) = &self.spool else { return };
        match spool.remove(&r.path) {
            Ok(()) => log!(Debug, "replayed {}", r.path.display()),
            Err(e) => {
                log!(
                    Error,
                    "cannot remove the delivered file {}: {e}; it will not be sent again",
                    r.path.display()
                );
                self.delivered_files.insert(r.path);
                self.schedule.later(now);
            }
        }
    }
}

/// Opens a spool file where its replay left off. A progress record that does not point just
/// past a newline inside the file is ignored: the file is sent from the start (duplicates
/// rather than loss).
fn open_at_progress(
    spool: &Spool,
    path: &std::path::Path,
    max_line: usize,
) -> io::Result<FileLines<File>> {
    let mut f = spool::open_regular(path)?;
    let len = f.metadata()?.len();
    let mut offset = spool.progress(path);
    if offset > 0 {
        let mut byte = [0u8];
        let valid =
            offset <= len && f.read_exact_at(&mut byte, offset - 1).is_ok() && byte[0] == b'\n';
        if !valid {
            log!(Warn, "ignoring the replay progress of {}: it does not end a line; sending the file from the start", path.display());
            offset = 0;
        }
    }
    f.seek(SeekFrom::Start(offset))?;
    Ok(FileLines::new(f, offset, max_line))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads everything, in reads of at most `chunk` bytes, as (lines, long lines, end).
    fn read_all(data: &[u8], chunk: usize, max_line: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        struct Trickle<'a>(&'a [u8], usize);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = FileLines::new(Trickle(data, chunk), 0, max_line);
        let (mut lines, mut longs, mut long) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            match r.next_if(usize::MAX).unwrap().unwrap() {
                Item::Line { line, end } => {
                    assert!(end as usize <= data.len());
                    lines.push(line.to_vec());
                }
                Item::LongPiece(p) => long.extend_from_slice(p),
                Item::LongEnd { len, .. } => {
                    assert_eq!(len as usize, long.len());
                    longs.push(std::mem::take(&mut long));
                }
                Item::End => return (lines, longs),
            }
        }
    }

    #[test]
    fn reads_the_same_lines_in_every_chunk_size() {
        let data = b"one\n\ntwo\nthree-is-long\nfour\nlast-unterminated";
        for chunk in 1..=data.len() {
            let (lines, longs) = read_all(data, chunk, 8);
            assert_eq!(
                lines,
                [&b"one"[..], b"two", b"four"].map(<[u8]>::to_vec),
                "chunk {chunk}"
            );
            assert_eq!(
                longs,
                vec![b"three-is-long".to_vec(), b"last-unterminated".to_vec()]
            );
        }
    }

    #[test]
    fn a_line_that_does_not_fit_is_left_for_the_next_batch_and_offsets_are_line_ends() {
        let data = b"aa\nbbbb\ncc";
        let mut r = FileLines::new(&data[..], 0, 100);
        assert_eq!(
            r.next_if(3).unwrap(),
            Some(Item::Line {
                line: b"aa",
                end: 3
            })
        );
        assert_eq!(r.next_if(3).unwrap(), None, "bbbb does not fit");
        assert_eq!(r.offset(), 3);
        assert_eq!(
            r.next_if(10).unwrap(),
            Some(Item::Line {
                line: b"bbbb",
                end: 8
            })
        );
        assert_eq!(
            r.next_if(10).unwrap(),
            Some(Item::Line {
                line: b"cc",
                end: 10
            })
        );
        assert_eq!(r.next_if(10).unwrap(), Some(Item::End));
    }

    #[test]
    fn memory_stays_bounded_for_a_huge_line() {
        let data = vec![b'x'; 10 * 1024 * 1024];
        let mut r = FileLines::new(&data[..], 0, 1000);
        let mut total = 0;
        loop {
            match r.next_if(usize::MAX).unwrap().unwrap() {
                Item::LongPiece(p) => total += p.len(),
                Item::LongEnd { len, .. } => {
                    assert_eq!(len as usize, total);
                    break;
                }
                other => panic!("{other:?}"),
            }
            assert!(r.buf.capacity() <= 1000 + 2 * CHUNK);
        }
        assert_eq!(total, data.len());
    }
}
