//! The backlog's side of the journal ([`super::journal`]): moving the input's bytes into it,
//! handing them to the loop to make lines of as memory allows, and marking what was delivered.
//!
//! With `--durable` every byte of the input goes through the journal: the loop moves bytes
//! from the pipe to the journal's tail while the cap allows (independent of memory, so a slow
//! destination fills the disk, not memory), and reads the journal behind the tail into lines
//! while the memory budget allows. Without `--durable`, a journal an earlier run left is read
//! first, the same way, and emptied; then the input is read as usual.

use std::io;
use std::ops::Range;
use std::time::{Duration, Instant};

use super::journal::{Appended, Journal, Recovered};
use super::{warn_limited, Backlog};
use crate::input::{Input, ReadOutcome};
use crate::log;

/// After the journal could not be written (disk full, I/O error), how long before trying
/// again.
const WRITE_PAUSE: Duration = Duration::from_secs(1);

/// The journal and how far it has been read.
pub(super) struct Reading {
    pub(super) journal: Journal,
    /// The next byte to hand to the loop.
    cursor: u64,
    /// The bytes at the cursor are the rest of a line whose start was handled: skip them.
    skip_to_newline: bool,
    /// Lines ending at or below this offset may have been accepted before a restart.
    pub(super) resend_below: u64,
    /// After a write error, no write before this.
    paused_until: Option<Instant>,
    /// The journal could not be written: reading waits (logged once until it can again).
    failing: bool,
    /// Bytes read from an input `splice` cannot take (a regular file), not yet in the journal.
    unwritten: Vec<u8>,
    /// The input is not a pipe: it is read, then written to the journal.
    no_splice: bool,
    /// A journal left by an earlier run was read to its end (without `--durable`).
    read_all: bool,
    /// The last writer hung up on an unfinished line and its `\n` is not written yet.
    newline_owed: bool,
    /// The last attempt to append found the journal full or failing: reading waits.
    blocked: bool,
}

/// What [`Backlog::read_journal`] gave.
#[derive(Debug, PartialEq, Eq)]
pub enum JournalRead {
    /// `n` bytes at offset `at` are in the buffer.
    Bytes {
        /// The offset of the first.
        at: u64,
        /// How many.
        n: usize,
    },
    /// The reader moved from `from` to `to` over bytes that need nothing more.
    Skipped {
        /// Where it was.
        from: u64,
        /// Where it is.
        to: u64,
    },
}

impl Backlog {
    /// Takes the journal (opened with [`Journal::open`]) and reads it from where `recovered`
    /// says.
    pub fn attach_journal(&mut self, journal: Journal, recovered: Recovered) {
        if recovered.pending > 0 {
            log!(
                Info,
                "the journal in {} holds {} bytes not delivered yet: sending them first",
                journal.dir().display(),
                recovered.pending
            );
        }
        self.reading = Some(Reading {
            journal,
            cursor: recovered.start,
            skip_to_newline: recovered.mid_line,
            resend_below: recovered.handed,
            paused_until: None,
            failing: false,
            unwritten: Vec::new(),
            no_splice: false,
            read_all: false,
            newline_owed: false,
            blocked: false,
        });
    }

    /// Whether the input goes through the journal (`--durable`).
    pub fn durable(&self) -> bool {
        self.reading.as_ref().is_some_and(|r| r.journal.appending())
    }

    /// Whether lines come from the journal now: with `--durable` always, without it until an
    /// earlier run's journal was read.
    pub fn reads_journal(&self) -> bool {
        self.reading
            .as_ref()
            .is_some_and(|r| r.journal.appending() || !r.read_all)
    }

    /// Whether the journal holds bytes not handed to the loop yet.
    pub fn journal_unread(&self) -> bool {
        self.reading
            .as_ref()
            .is_some_and(|r| !r.read_all && r.cursor < r.journal.tail())
    }

    /// The offset the journal's next byte gets.
    pub fn journal_tail(&self) -> Option<u64> {
        self.reading.as_ref().map(|r| r.journal.tail())
    }

    /// Bytes in the journal not delivered yet.
    pub fn journal_pending(&self) -> u64 {
        self.reading.as_ref().map_or(0, |r| r.journal.pending())
    }

    /// Everything in the journal below this offset needs nothing more.
    pub fn journal_watermark(&self) -> u64 {
        self.reading.as_ref().map_or(0, |r| r.journal.watermark())
    }

    /// Whether the last writer's unfinished line still waits for its `\n` (a full journal).
    pub fn journal_newline_owed(&self) -> bool {
        self.reading.as_ref().is_some_and(|r| r.newline_owed)
    }

    /// Whether the rest of an over-long line is skipped when reading goes on (its start was
    /// handled before a restart).
    pub fn journal_skips_to_newline(&self) -> bool {
        self.reading.as_ref().is_some_and(|r| r.skip_to_newline)
    }

    /// Lines ending at or below this offset may have been accepted before a restart.
    pub fn resend_below(&self) -> u64 {
        self.reading.as_ref().map_or(0, |r| r.resend_below)
    }

    /// An earlier run's journal was read to its end: the input is read as usual from now on.
    pub fn journal_read_all(&mut self) {
        if let Some(r) = self.reading.as_mut() {
            r.read_all = true;
        }
    }

    /// Reads the next bytes of the journal into `buf`, up to the next range that needs nothing
    /// more (which is skipped).
    pub fn read_journal(&mut self, buf: &mut [u8]) -> io::Result<JournalRead> {
        let spool = self.spool.as_ref().expect("a journal has a directory");
        let r = self.reading.as_mut().expect("a journal is being read");
        let at = r.cursor;
        let mut limit = r.journal.tail() - at;
        if let Some((a, b)) = r.journal.done_after(at) {
            if a <= at {
                r.cursor = b;
                // A done range that ends inside a line: the rest of an over-long line. At the
                // watermark the journal knows (the byte before may be punched or removed).
                r.skip_to_newline = if b == r.journal.watermark() {
                    r.journal.mid_line()
                } else {
                    let mut last = [0u8; 1];
                    matches!(r.journal.read_at(b - 1, &mut last), Ok(1) if last[0] != b'\n')
                };
                return Ok(JournalRead::Skipped { from: at, to: b });
            }
            limit = limit.min(a - at);
        }
        let want = buf.len().min(limit as usize);
        let n = r.journal.read_at(at, &mut buf[..want])?;
        if r.skip_to_newline {
            let end = match memchr::memchr(b'\n', &buf[..n]) {
                Some(i) => {
                    r.skip_to_newline = false;
                    log!(
                        Info,
                        "skipped the rest of an over-long line a restart cut, up to offset {} of the journal",
                        at + i as u64 + 1
                    );
                    at + i as u64 + 1
                }
                None => at + n as u64,
            };
            r.cursor = end;
            r.journal.mark_done(at..end, spool);
            return Ok(JournalRead::Skipped { from: at, to: end });
        }
        r.cursor = at + n as u64;
        Ok(JournalRead::Bytes { at, n })
    }

    /// Moves what the input has into the journal (`buf` is for inputs `splice` cannot take).
    /// `Ok(None)`: the journal cannot take more now (full, or writes failing): the loop waits.
    pub fn append_input(
        &mut self,
        input: &mut Input,
        buf: &mut [u8],
        now: Instant,
    ) -> io::Result<Option<ReadOutcome>> {
        let spool = self.spool.as_ref().expect("a journal has a directory");
        let r = self.reading.as_mut().expect("a journal is being read");
        if r.paused_until.is_some_and(|until| now < until) {
            return Ok(None);
        }
        r.paused_until = None;
        let result = if r.newline_owed {
            // The line the last writer left unfinished ends before the next writer's bytes.
            r.journal.terminate_last_line(spool, now).map(|a| {
                if a != Appended::Full {
                    r.newline_owed = false;
                }
                match a {
                    Appended::Full => Appended::Full,
                    _ => Appended::Bytes(0),
                }
            })
        } else if !r.unwritten.is_empty() {
            r.journal.append_bytes(&r.unwritten, spool, now).map(|a| {
                if a != Appended::Full {
                    r.unwritten.clear();
                }
                a
            })
        } else if r.no_splice {
            match input.read(buf)? {
                ReadOutcome::Data(n) => {
                    r.unwritten.extend_from_slice(&buf[..n]);
                    return Ok(Some(ReadOutcome::Data(0)));
                }
                other => return Ok(Some(other)),
            }
        } else {
            match r.journal.append_from(input.fd(), spool, now) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    log!(
                        Debug,
                        "the input is not a pipe: it is read, then written to the journal"
                    );
                    r.no_splice = true;
                    return Ok(Some(ReadOutcome::Data(0)));
                }
                other => other,
            }
        };
        let outcome = match result {
            Ok(Appended::Bytes(n)) => {
                if n > 0 {
                    input.got_data();
                }
                Some(ReadOutcome::Data(n))
            }
            Ok(Appended::WouldBlock) => Some(ReadOutcome::WouldBlock),
            Ok(Appended::End) => Some(input.end_of_input()),
            Ok(Appended::Full) if r.journal.free_done(spool) > 0 => {
                // Delivered bytes the segment being written still held came back: again.
                Some(ReadOutcome::Data(0))
            }
            Ok(Appended::Full) => {
                warn_limited(
                    &mut self.warned_at,
                    now,
                    format_args!(
                        "the failed-attempts directory is full (--failed-attempts-max-bytes): \
                         reading paused, writers wait until delivered lines free room"
                    ),
                );
                None
            }
            Err(e) => {
                // What was delivered makes room: if some came back, try again at once.
                let freed = r.journal.free_done(spool);
                if freed > 0 {
                    log!(
                        Debug,
                        "the journal could not be written ({e}): gave {freed} delivered bytes back to the disk"
                    );
                    return Ok(Some(ReadOutcome::Data(0)));
                }
                r.paused_until = Some(now + WRITE_PAUSE);
                r.failing = true;
                warn_limited(
                    &mut self.warned_at,
                    now,
                    format_args!(
                        "cannot write the journal in {}: {e}; reading paused (nothing is lost), \
                         trying again every {WRITE_PAUSE:?}",
                        r.journal.dir().display()
                    ),
                );
                None
            }
        };
        if outcome.is_some() && r.failing {
            r.failing = false;
            log!(Info, "the journal takes writes again: reading resumed");
        }
        r.blocked = outcome.is_none();
        Ok(outcome)
    }

    /// Whether the last attempt to append found the journal full or failing (the loop waits
    /// for a delivery or the pause's end rather than trying again at once).
    pub fn journal_blocked(&self) -> bool {
        self.reading.as_ref().is_some_and(|r| r.blocked)
    }

    /// The input's last writer hung up: an unfinished last line is a whole line. Its `\n` is
    /// written now, or before anything else when the journal takes writes again.
    pub fn writer_hung_up(&mut self, now: Instant) {
        let (Some(r), Some(spool)) = (self.reading.as_mut(), self.spool.as_ref()) else {
            return;
        };
        r.newline_owed =
            !matches!(r.journal.terminate_last_line(spool, now), Ok(a) if a != Appended::Full);
    }

    /// Records that the journal's `range` needs nothing more (delivered, or kept elsewhere).
    pub fn journal_done(&mut self, range: Option<Range<u64>>) {
        if let (Some(r), Some(range), Some(spool)) =
            (self.reading.as_mut(), range, self.spool.as_ref())
        {
            r.journal.mark_done(range, spool);
        }
    }

    /// Notes that the journal's bytes up to `end` were handed to the sender.
    pub(super) fn journal_handed(&mut self, end: u64) {
        if let Some(r) = self.reading.as_mut() {
            r.journal.mark_handed(end);
        }
    }

    /// When the journal next needs the loop: a sync, or the end of a pause after a write
    /// error.
    pub fn journal_deadline(&self) -> Option<Instant> {
        let r = self.reading.as_ref()?;
        match (r.journal.sync_deadline(), r.paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forces the journal to the disk when it is due (`force`: now).
    pub fn journal_sync(&mut self, now: Instant, force: bool) {
        let Some(r) = self.reading.as_mut() else {
            return;
        };
        if force || r.journal.sync_deadline().is_some_and(|d| d <= now) {
            r.journal.sync_or_warn(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::journal::Journal;
    use crate::backlog::spool::Spool;
    use crate::backlog::Limits;
    use crate::stats::Stats;
    use std::sync::Arc;

    const STATE_FILE_NAME: &str = "state";

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("f2k-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A backlog reading the journal `j` of `spool` from where `rec` says.
    fn backlog_reading(spool: Spool, j: Journal, rec: Recovered) -> Backlog {
        let limits = Limits {
            budget: 1 << 20,
            retry_interval: Duration::from_secs(1),
            max_records: 500,
            max_request_bytes: 1 << 20,
            max_line: 1000,
            overhead: 0,
            packing: None,
        };
        let mut b = Backlog::new(
            limits,
            Some(spool),
            Arc::new(Stats::default()),
            Instant::now(),
        );
        b.attach_journal(j, rec);
        b
    }

    /// A restart leaves a done range above the watermark ending at a 4 KiB boundary; the batch
    /// before it is delivered while the reader waits (memory), a full journal punches up to
    /// the new watermark, and the reader's mid-line test reads a hole.
    #[test]
    fn a_done_range_ending_at_a_punched_watermark_keeps_the_next_line() {
        let dir = temp("punch");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        // 100 bytes line, then lines up to 4096, then "victim\n", "after\n".
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[b'a'; 99]);
        bytes.push(b'\n');
        while bytes.len() < 4096 {
            let room = 4096 - bytes.len();
            let n = room.min(50);
            bytes.extend(std::iter::repeat_n(b'b', n - 1));
            bytes.push(b'\n');
        }
        assert_eq!(bytes.len(), 4096);
        bytes.extend_from_slice(b"victim\nafter\n");
        {
            let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
                .unwrap()
                .unwrap();
            j.append_bytes(&bytes, &spool, Instant::now()).unwrap();
            // The previous run: [100, 4096) delivered before [0, 100).
            j.mark_done(100..4096, &spool);
        }
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (j, rec) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(rec.start, 0);
        let mut b = backlog_reading(spool, j, rec);
        let mut buf = vec![0u8; 100];
        assert_eq!(
            b.read_journal(&mut buf).unwrap(),
            JournalRead::Bytes { at: 0, n: 100 }
        );
        // The reader pauses (memory); the batch of [0, 100) is delivered.
        b.journal_done(Some(0..100));
        // The journal is full: free_done gives back the done bytes.
        let spool = b.spool.as_ref().unwrap();
        let freed = b.reading.as_mut().unwrap().journal.free_done(spool);
        assert!(freed > 0);
        let mut big = vec![0u8; 8192];
        let r1 = b.read_journal(&mut big).unwrap();
        let r2 = b.read_journal(&mut big).unwrap();
        assert_eq!(
            r1,
            JournalRead::Skipped {
                from: 100,
                to: 4096
            }
        );
        assert!(
            matches!(r2, JournalRead::Bytes { at: 4096, .. }),
            "the line \"victim\" at 4096 must be read, got {r2:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The same with the segment that held the byte before the watermark removed: a released
    /// prefix of an over-long line ending at a segment's end, and its rest read as a line.
    #[test]
    fn a_released_prefix_ending_at_a_removed_segment_still_skips_the_rest_of_its_line() {
        let dir = temp("rm");
        let cap = 16384;
        let spool = Spool::open(&dir, cap).unwrap();
        let mut bytes = b"ok\n".to_vec();
        bytes.resize(3 + 5000, b'L');
        bytes.extend_from_slice(b"\nnext\n");
        {
            let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
                .unwrap()
                .unwrap();
            j.append_bytes(&bytes[..4096], &spool, Instant::now())
                .unwrap();
            j.append_bytes(&bytes[4096..], &spool, Instant::now())
                .unwrap();
            // The previous run released the long line's first 4093 bytes (to the segment's end).
            j.mark_done(3..4096, &spool);
        }
        let spool = Spool::open(&dir, cap).unwrap();
        let (j, rec) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        let mut b = backlog_reading(spool, j, rec);
        let mut buf = vec![0u8; 3];
        assert_eq!(
            b.read_journal(&mut buf).unwrap(),
            JournalRead::Bytes { at: 0, n: 3 }
        );
        b.journal_done(Some(0..3));
        let mut big = vec![0u8; 8192];
        let r1 = b.read_journal(&mut big).unwrap();
        assert_eq!(r1, JournalRead::Skipped { from: 3, to: 4096 });
        let r2 = b.read_journal(&mut big).unwrap();
        assert!(
            matches!(r2, JournalRead::Skipped { .. }),
            "the rest of the released line must be skipped, got {r2:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A journal directory removed while the daemon runs is made again (with its state) at
    /// the next sync, not only when a segment fills up.
    #[test]
    fn a_removed_journal_directory_is_made_again_at_the_next_sync() {
        let dir = temp("rmdir");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (mut j, _) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        j.append_bytes(b"a\n", &spool, Instant::now()).unwrap();
        std::fs::remove_dir_all(j.dir()).unwrap();
        j.append_bytes(b"b\n", &spool, Instant::now()).unwrap();
        j.sync_or_warn(Instant::now());
        assert!(
            j.dir().join(STATE_FILE_NAME).is_file(),
            "made again, with its state"
        );
        j.append_bytes(b"c\n", &spool, Instant::now()).unwrap();
        drop(j);
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let (_, rec) = Journal::open(&spool, true, Duration::from_secs(1))
            .unwrap()
            .unwrap();
        assert_eq!(rec.pending, 2, "what came after is in the new directory");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
