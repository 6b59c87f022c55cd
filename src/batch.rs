//! Batches of lines and the rules that decide when a batch is flushed.
//!
//! A [`Batch`] keeps its lines back to back in one buffer, so a line costs one copy and no
//! allocation of its own; it knows nothing of any destination. A record is one line, or, when
//! the destination packs many lines into a record (KPL aggregation), a run of lines the batch
//! marks. What a destination adds to a record is told to the [`Batcher`] as numbers (a
//! partition key's bytes, or a [`Packing`]); the request body is written from the lines by the
//! destination's encoder ([`crate::sink::Encoder`]), which leaves with the batch only the
//! body's length and hash ([`Prepared`]). The [`Batcher`] seals the batch it is filling when it holds `max_records` records,
//! when the next line would push it past `max_bytes` (counting what the destination adds, as
//! it counts a request), or when `interval` has passed since its first line entered. Time is
//! passed in, so tests drive it.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where one line lies in the batch's buffer (8 bytes: batches stay far below 4 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(&self) -> Range<usize> {
        let start = self.start as usize;
        start..start + self.len as usize
    }
}

/// Lines ready to be sent together, in the order they were read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    bytes: Vec<u8>,
    spans: Vec<Span>,
    prepared: Option<Box<Prepared>>,
    /// The first line of each record when lines are packed many to a record (ascending, the
    /// first 0); empty: every line is a record of its own.
    records: Vec<u32>,
    /// Bytes an encoder attached to every record (`attached_each` per record, in order), kept
    /// through [`Batch::subset`] so that a resend is encoded as the first attempt was.
    attached: Vec<u8>,
    attached_each: usize,
    /// The bytes of the journal the lines were read from (`--durable`): from the end of the
    /// batch before to just past this batch's last line.
    journal: Option<Range<u64>>,
}

/// What SigV4 needs to know of a request body ahead of sending it: its length and its
/// SHA-256 (lowercase hex), and the body itself if it is small. A large body is not kept: the
/// encoder writes it again, a part at a time, as the connection takes it, so a batch of large
/// lines in flight is its lines alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The body's length in bytes.
    pub len: u64,
    /// SHA-256 of the body, lowercase hex.
    pub sha256_hex: String,
    /// The body when it is kept (`len` bytes), else empty.
    pub body: Vec<u8>,
    /// What the encoder computed for each record in the first writing and uses again in the
    /// second (the MD5 digest that ends a KPL aggregate), in record order; empty if nothing.
    pub digests: Vec<[u8; 16]>,
}

impl Prepared {
    /// The body, if it was kept.
    pub fn kept(&self) -> Option<&[u8]> {
        (self.body.len() as u64 == self.len && self.len > 0).then_some(&self.body[..])
    }
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a line: to the last record if the batch packs lines ([`Batch::start_record`]),
    /// otherwise as a record of its own.
    pub fn push(&mut self, line: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(line);
        // Lines are at most 10 MiB and batches at most 10 MiB, validated upstream.
        self.spans.push(Span {
            start: start as u32,
            len: line.len() as u32,
        });
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Makes the next line pushed the first of a new record: the batch then packs lines many
    /// to a record. Starting a record in a batch that holds lines one to a record makes each
    /// of them a record first.
    pub fn start_record(&mut self) {
        let lines = self.spans.len() as u32;
        if self.records.last() == Some(&lines) {
            return;
        }
        if self.records.is_empty() {
            self.records.extend(0..self.spans.len() as u32);
        }
        self.records.push(lines);
    }

    /// Whether lines are packed many to a record.
    pub fn is_packed(&self) -> bool {
        !self.records.is_empty()
    }

    /// The number of records.
    pub fn record_count(&self) -> usize {
        if self.records.is_empty() {
            self.spans.len()
        } else {
            // A record started last holds no line until one is pushed; it does not count.
            self.records.len()
                - usize::from(self.records.last() == Some(&(self.spans.len() as u32)))
        }
    }

    /// The indices of the lines of record `r`.
    pub fn record_lines(&self, r: usize) -> Range<usize> {
        if self.records.is_empty() {
            return r..r + 1;
        }
        let start = self.records[r] as usize;
        let end = self
            .records
            .get(r + 1)
            .map_or(self.spans.len(), |&e| e as usize);
        start..end
    }

    /// The lines of record `r`, in order.
    pub fn record(&self, r: usize) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans[self.record_lines(r)]
            .iter()
            .map(|s| &self.bytes[s.range()])
    }

    /// Whether there are no lines.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of all lines.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The size as a destination counts it that adds `overhead` bytes (a partition key) to
    /// every line.
    pub fn size_with(&self, overhead: usize) -> usize {
        self.bytes.len() + self.spans.len() * overhead
    }

    /// The memory the batch holds (its buffers' capacities), as the memory budget counts it.
    pub fn memory(&self) -> usize {
        self.bytes.capacity()
            + self.spans.capacity() * std::mem::size_of::<Span>()
            + self.records.capacity() * std::mem::size_of::<u32>()
            + self.attached.capacity()
            + self.prepared.as_ref().map_or(0, |p| p.body.capacity())
    }

    /// Attaches `each` bytes to every record (`bytes` holds them in record order), for the
    /// encoder that made them to use again when some of the records are sent again.
    pub fn attach(&mut self, each: usize, bytes: Vec<u8>) {
        assert_eq!(
            bytes.len(),
            each * self.record_count(),
            "attached bytes for every record"
        );
        self.attached = bytes;
        self.attached_each = each;
    }

    /// The bytes attached to record `i`, if any were.
    pub fn attached(&self, i: usize) -> Option<&[u8]> {
        if self.attached.is_empty() {
            return None;
        }
        let each = self.attached_each;
        Some(&self.attached[i * each..(i + 1) * each])
    }

    /// Attaches what was learnt of the request body for this batch.
    pub fn set_prepared(&mut self, prepared: Prepared) {
        self.prepared = Some(Box::new(prepared));
    }

    /// The request body's length and hash, if they were learnt ahead of time.
    pub fn prepared(&self) -> Option<&Prepared> {
        self.prepared.as_deref()
    }

    /// The bytes of the journal this batch covers, if it was read from one.
    pub fn journal(&self) -> Option<Range<u64>> {
        self.journal.clone()
    }

    /// Sets the bytes of the journal this batch covers.
    pub fn set_journal(&mut self, range: Option<Range<u64>>) {
        self.journal = range;
    }

    /// Line `i`.
    pub fn line(&self, i: usize) -> &[u8] {
        &self.bytes[self.spans[i].range()]
    }

    /// All lines in order.
    pub fn lines(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans.iter().map(|s| &self.bytes[s.range()])
    }

    /// A new batch with only the records at `indices` (ascending), in their original order,
    /// packed as they were, and what was attached to them.
    pub fn subset(&self, indices: &[usize]) -> Batch {
        let mut b = Batch::new();
        for &i in indices {
            self.push_record_to(i, &mut b);
        }
        b.attached_each = self.attached_each;
        b
    }

    /// Adds record `r` of this batch to `to` as a record of its own, with what was attached to
    /// it.
    fn push_record_to(&self, r: usize, to: &mut Batch) {
        if self.is_packed() {
            to.start_record();
        }
        for line in self.record(r) {
            to.push(line);
        }
        if let Some(a) = self.attached(r) {
            to.attached.extend_from_slice(a);
        }
    }

    /// The batch in two halves for requests that are too large: its records in two runs, or,
    /// for one record of many lines, its lines in two records (each with the record's key).
    /// A batch of one line cannot be split.
    pub fn halves(&self) -> Option<(Batch, Batch)> {
        let records = self.record_count();
        if records >= 2 {
            let first: Vec<usize> = (0..records / 2).collect();
            let second: Vec<usize> = (records / 2..records).collect();
            return Some((self.subset(&first), self.subset(&second)));
        }
        if self.len() < 2 {
            return None;
        }
        let half = self.len() / 2;
        let make = |lines: Range<usize>| {
            let mut b = Batch::new();
            b.start_record();
            for i in lines {
                b.push(self.line(i));
            }
            if let Some(a) = self.attached(0) {
                b.attach(self.attached_each, a.to_vec());
            }
            b
        };
        Some((make(0..half), make(half..self.len())))
    }

    /// Adds every record of `other` after this batch's, packed as they were. What was
    /// attached stays only if both batches carry it alike; a body made before is dropped.
    pub fn append(&mut self, other: &Batch) {
        if other.is_empty() {
            return;
        }
        self.prepared = None;
        let keep_attached = self.is_empty()
            || (self.attached_each == other.attached_each
                && self.attached.is_empty() == other.attached.is_empty());
        if self.is_empty() {
            self.attached_each = other.attached_each;
        }
        for r in 0..other.record_count() {
            if other.is_packed() || self.is_packed() {
                self.start_record();
            }
            for line in other.record(r) {
                self.push(line);
            }
        }
        if keep_attached {
            self.attached.extend_from_slice(&other.attached);
        } else {
            self.attached.clear();
            self.attached_each = 0;
        }
    }

    /// Packs a batch whose lines are one to a record as `packing` would have, first line
    /// first, each record as full as it may be. What was attached to its lines is dropped.
    pub fn pack(&mut self, packing: &Packing) {
        if self.is_packed() {
            return;
        }
        let mut open = 0;
        for i in 0..self.spans.len() {
            let cost = (packing.line_cost)(self.spans[i].len as usize);
            if i == 0 || open + cost > packing.max_record_bytes {
                self.records.push(i as u32);
                open = packing.record_overhead;
            }
            open += cost;
        }
        self.attached.clear();
        self.attached_each = 0;
    }

    /// The lines joined by `\n`: the failed-attempts file format.
    pub fn joined_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() + self.len());
        for (i, d) in self.lines().enumerate() {
            if i > 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(d);
        }
        out
    }
}

/// When a batch is sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Records per batch.
    pub max_records: usize,
    /// Bytes per batch, counting each line's overhead.
    pub max_bytes: usize,
    /// Time from a batch's first record to its flush; `None`: no timer.
    pub interval: Option<Duration>,
}

/// How a destination packs many lines into one record (KPL aggregation), in the numbers the
/// [`Batcher`] needs to count records and bytes as the destination will.
#[derive(Clone, Copy, Debug)]
pub struct Packing {
    /// The bytes of a record besides its lines' (framing, digest, partition key).
    pub record_overhead: usize,
    /// The bytes a line of `n` bytes takes in a record.
    pub line_cost: fn(usize) -> usize,
    /// The most `line_cost(n)` adds to `n`, for any line.
    pub max_line_framing: usize,
    /// The largest record of more than one line. A line too long to share a record is a
    /// record of its own, as large as the destination's record limit allows.
    pub max_record_bytes: usize,
}

impl Packing {
    /// The size of a record holding `lines`.
    pub fn record_bytes<'a>(&self, lines: impl Iterator<Item = &'a [u8]>) -> usize {
        self.record_overhead + lines.map(|l| (self.line_cost)(l.len())).sum::<usize>()
    }
}

/// A batch being filled with lines packed many to a record, counted as the destination
/// counts it: the lines of its last record, and of the whole batch.
#[derive(Clone, Copy, Debug)]
pub struct Filling {
    packing: Packing,
    /// The bytes of the batch's records.
    filled: usize,
    /// The bytes of its last record.
    record: usize,
}

/// Where the next line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Into the batch's last record.
    Joins,
    /// Into a new record of the batch.
    NewRecord,
    /// Not into this batch: it is full.
    Full,
}

impl Filling {
    /// Counting for an empty batch.
    pub fn new(packing: Packing) -> Self {
        Filling {
            packing,
            filled: 0,
            record: 0,
        }
    }

    /// Where a line of `n` bytes goes in `batch` (filled through this), which may hold
    /// `max_records` records and `max_bytes` bytes.
    pub fn fit(&self, batch: &Batch, n: usize, max_records: usize, max_bytes: usize) -> Fit {
        let cost = (self.packing.line_cost)(n);
        if batch.is_empty() {
            return Fit::NewRecord;
        }
        if self.record + cost <= self.packing.max_record_bytes {
            if self.filled + cost <= max_bytes {
                Fit::Joins
            } else {
                Fit::Full
            }
        } else if batch.record_count() < max_records
            && self.filled + self.packing.record_overhead + cost <= max_bytes
        {
            Fit::NewRecord
        } else {
            Fit::Full
        }
    }

    /// The longest line sure to go into `batch` (with [`Filling::fit`]'s limits), for a
    /// reader that must say before it reads one; `None` if not even an empty line is.
    pub fn room(&self, batch: &Batch, max_records: usize, max_bytes: usize) -> Option<usize> {
        let framing = self.packing.max_line_framing;
        let new = (batch.record_count() < max_records)
            .then(|| max_bytes.checked_sub(self.filled + self.packing.record_overhead + framing))
            .flatten();
        if batch.is_empty() {
            return new;
        }
        let joins = self
            .packing
            .max_record_bytes
            .checked_sub(self.record + framing)
            .zip(max_bytes.checked_sub(self.filled + framing))
            .map(|(a, b)| a.min(b));
        new.max(joins)
    }

    /// Adds a line to `batch` where [`Filling::fit`] said it goes (never [`Fit::Full`]).
    pub fn push(&mut self, batch: &mut Batch, line: &[u8], fit: Fit) {
        debug_assert_ne!(fit, Fit::Full);
        let cost = (self.packing.line_cost)(line.len());
        if fit == Fit::NewRecord || batch.is_empty() {
            batch.start_record();
            self.record = self.packing.record_overhead;
            self.filled += self.packing.record_overhead;
        }
        batch.push(line);
        self.record += cost;
        self.filled += cost;
    }
}

/// Spare buffers the delivered batches leave behind, for the next ones: a steady flow of
/// batches then allocates nothing large. Allocators that hand large blocks back to the system
/// at once (musl's) otherwise pay page faults and TLB flushes for every batch. At most
/// [`SPARE_BUFFERS`] buffers of up to [`SPARE_BUFFER_MAX`] bytes each are kept, so what waits
/// here stays small.
#[derive(Clone, Debug, Default)]
pub struct Buffers(Arc<Mutex<Vec<Vec<u8>>>>);

/// How many spare buffers [`Buffers`] keeps.
pub const SPARE_BUFFERS: usize = 4;
/// The largest buffer [`Buffers`] keeps; larger ones go back to the allocator.
pub const SPARE_BUFFER_MAX: usize = 512 * 1024;

impl Buffers {
    /// An empty buffer with room for `capacity` bytes, reused when one is spare.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let spare = self.0.lock().expect("buffers lock").pop();
        let mut v = spare.unwrap_or_default();
        v.clear();
        v.reserve(capacity);
        v
    }

    /// Keeps a batch's buffers (its lines, and its request body if it was kept) for reuse.
    pub fn recycle(&self, batch: Batch) {
        let Batch {
            bytes, prepared, ..
        } = batch;
        self.keep(bytes);
        if let Some(p) = prepared {
            self.keep(p.body);
        }
    }

    /// Keeps a buffer for reuse, if it is not too large and fewer than [`SPARE_BUFFERS`] wait.
    pub fn keep(&self, buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > SPARE_BUFFER_MAX {
            return;
        }
        let mut spare = self.0.lock().expect("buffers lock");
        if spare.len() < SPARE_BUFFERS {
            spare.push(buffer);
        }
    }

    /// How many buffers are spare.
    #[cfg(test)]
    fn spare(&self) -> usize {
        self.0.lock().expect("buffers lock").len()
    }
}

/// Fills batches and seals them by the [`Limits`].
#[derive(Debug)]
pub struct Batcher {
    limits: Limits,
    /// Bytes the destination adds to each line (its partition key).
    overhead: usize,
    /// How lines are packed many to a record, if they are, and the batch being filled counted
    /// so.
    filling: Option<Filling>,
    current: Batch,
    first_at: Option<Instant>,
    buffers: Buffers,
    /// Where the next sealed batch's journal range starts.
    range_start: u64,
    /// The journal offset just past the last line of the batch being filled, if its lines
    /// came from the journal.
    last_end: Option<u64>,
}

impl Batcher {
    /// A batcher for a destination that adds `overhead` bytes to each line;
    /// `limits.max_bytes` must be at least one largest line plus its overhead.
    pub fn new(limits: Limits, overhead: usize) -> Self {
        assert!(limits.max_records > 0, "a batch holds at least one line");
        Batcher {
            limits,
            overhead,
            filling: None,
            current: Batch::new(),
            first_at: None,
            buffers: Buffers::default(),
            range_start: 0,
            last_end: None,
        }
    }

    /// A batcher for a destination that packs many lines into a record as `packing` says:
    /// `limits` count records, not lines.
    pub fn packing(limits: Limits, packing: Packing) -> Self {
        let mut b = Batcher::new(limits, 0);
        b.filling = Some(Filling::new(packing));
        b
    }

    /// The spare buffers new batches are made from; delivered batches go back to them.
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// Adds a line read at `now`, passing each batch this seals to `sealed`.
    #[inline]
    pub fn push(&mut self, line: &[u8], now: Instant, sealed: &mut impl FnMut(Batch)) {
        self.push_inner(line, now, None, sealed);
    }

    /// Adds a line read from the journal that ends (with its `\n`) at offset `end`: sealed
    /// batches carry the journal range they cover ([`Batch::journal`]).
    pub fn push_at(&mut self, line: &[u8], now: Instant, end: u64, sealed: &mut impl FnMut(Batch)) {
        self.push_inner(line, now, Some(end), sealed);
    }

    #[inline]
    fn push_inner(
        &mut self,
        line: &[u8],
        now: Instant,
        end: Option<u64>,
        sealed: &mut impl FnMut(Batch),
    ) {
        if self.filling.is_some() {
            return self.push_packed(line, now, end, sealed);
        }
        let record = line.len() + self.overhead;
        if !self.current.is_empty()
            && self.current.size_with(self.overhead) + record > self.limits.max_bytes
        {
            sealed(self.take_current());
        }
        if self.current.is_empty() {
            self.first_at = Some(now);
        }
        self.current.push(line);
        if end.is_some() {
            self.last_end = end;
        }
        if self.current.len() >= self.limits.max_records {
            sealed(self.take_current());
        }
    }

    /// Adds a line to the last record if it fits there, or to a new one.
    fn push_packed(
        &mut self,
        line: &[u8],
        now: Instant,
        end: Option<u64>,
        sealed: &mut impl FnMut(Batch),
    ) {
        let Limits {
            max_records,
            max_bytes,
            ..
        } = self.limits;
        let filling = self.filling.as_mut().expect("packing");
        let mut fit = filling.fit(&self.current, line.len(), max_records, max_bytes);
        if fit == Fit::Full {
            sealed(self.take_current());
            fit = Fit::NewRecord;
        }
        if self.current.is_empty() {
            self.first_at = Some(now);
        }
        let filling = self.filling.as_mut().expect("packing");
        filling.push(&mut self.current, line, fit);
        if end.is_some() {
            self.last_end = end;
        }
    }

    /// Where the next batch's journal range starts: the end of the last one sealed, or a
    /// position the reader moved to while no batch was being filled.
    pub fn range_start(&self) -> u64 {
        self.range_start
    }

    /// Moves the start of the next batch's journal range (no batch may be being filled).
    pub fn set_range_start(&mut self, at: u64) {
        debug_assert!(self.current.is_empty());
        self.range_start = at;
    }

    /// Whether a batch is being filled.
    pub fn is_filling(&self) -> bool {
        !self.current.is_empty()
    }

    /// When the batch being filled must be flushed, if it has records and the timer is on.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.first_at? + self.limits.interval?)
    }

    /// The batch being filled, if its deadline has come by `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        match self.deadline() {
            Some(d) if d <= now => Some(self.take_current()),
            _ => None,
        }
    }

    /// The batch being filled, if it has any records (flush on stop or end of input).
    pub fn take(&mut self) -> Option<Batch> {
        (!self.current.is_empty()).then(|| self.take_current())
    }

    /// Memory held by the batch being filled.
    pub fn pending_memory(&self) -> usize {
        self.current.memory()
    }

    fn take_current(&mut self) -> Batch {
        self.first_at = None;
        if let Some(f) = &mut self.filling {
            *f = Filling::new(f.packing);
        }
        let cap = self.current.size().max(4096);
        let records = self.current.len();
        let mut next = Batch {
            bytes: self.buffers.take(cap),
            spans: Vec::with_capacity(records),
            ..Batch::default()
        };
        std::mem::swap(&mut next, &mut self.current);
        if let Some(end) = self.last_end.take() {
            next.journal = Some(self.range_start..end);
            self.range_start = end;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batcher(
        max_records: usize,
        max_bytes: usize,
        interval: Option<Duration>,
        overhead: usize,
    ) -> Batcher {
        Batcher::new(
            Limits {
                max_records,
                max_bytes,
                interval,
            },
            overhead,
        )
    }

    fn data(b: &Batch) -> Vec<String> {
        b.lines()
            .map(|d| String::from_utf8(d.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn seals_on_record_count() {
        let mut b = batcher(3, 1000, None, 0);
        let mut out = Vec::new();
        let now = Instant::now();
        for l in ["a", "b", "c", "d"] {
            b.push(l.as_bytes(), now, &mut |x| out.push(x));
        }
        assert_eq!(out.len(), 1);
        assert_eq!(data(&out[0]), ["a", "b", "c"]);
        assert_eq!(data(&b.take().unwrap()), ["d"]);
        assert!(b.take().is_none());
    }

    #[test]
    fn seals_before_a_line_would_pass_the_byte_limit_counting_its_overhead() {
        // Each line is 3 bytes + 2 of overhead = 5 bytes; 12 bytes hold two.
        let mut b = batcher(500, 12, None, 2);
        let mut out = Vec::new();
        let now = Instant::now();
        for l in ["aaa", "bbb", "ccc", "ddd", "eeeeeee"] {
            b.push(l.as_bytes(), now, &mut |x| out.push(x));
        }
        assert_eq!(
            out.iter().map(data).collect::<Vec<_>>(),
            vec![vec!["aaa", "bbb"], vec!["ccc", "ddd"]]
        );
        assert!(out.iter().all(|x| x.size_with(2) <= 12));
        assert_eq!(out[0].line(1), b"bbb");
        let last = b.take().unwrap();
        assert_eq!((last.size(), last.size_with(2)), (7, 9));
    }

    #[test]
    fn exactly_full_by_bytes_stays_open_until_next_record() {
        let mut b = batcher(500, 10, None, 0);
        let mut out = Vec::new();
        let now = Instant::now();
        b.push(b"0123456789", now, &mut |x| out.push(x));
        assert!(out.is_empty());
        b.push(b"x", now, &mut |x| out.push(x));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].size(), 10);
    }

    #[test]
    fn limit_of_one_with_byte_overflow_seals_both() {
        let mut b = batcher(1, 5, None, 0);
        let mut out = Vec::new();
        let now = Instant::now();
        b.push(b"abc", now, &mut |x| out.push(x));
        b.push(b"def", now, &mut |x| out.push(x));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn timer_runs_from_the_first_record() {
        let t0 = Instant::now();
        let i = Duration::from_secs(5);
        let mut b = batcher(500, 1000, Some(i), 0);
        assert_eq!(b.deadline(), None);
        let mut out = Vec::new();
        b.push(b"a", t0, &mut |x| out.push(x));
        b.push(b"b", t0 + Duration::from_secs(3), &mut |x| out.push(x));
        assert_eq!(b.deadline(), Some(t0 + i));
        assert!(b.take_due(t0 + Duration::from_millis(4999)).is_none());
        assert_eq!(data(&b.take_due(t0 + i).unwrap()), ["a", "b"]);
        assert_eq!(b.deadline(), None);
        b.push(b"c", t0 + Duration::from_secs(7), &mut |x| out.push(x));
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(12)));
        assert!(out.is_empty());
    }

    #[test]
    fn no_timer_when_interval_is_off() {
        let mut b = batcher(500, 1000, None, 0);
        b.push(b"a", Instant::now(), &mut |_| {});
        assert_eq!(b.deadline(), None);
        assert!(b
            .take_due(Instant::now() + Duration::from_secs(3600))
            .is_none());
    }

    #[test]
    fn subset_keeps_order_and_joined_lines_is_the_file_format() {
        let mut batch = Batch::new();
        for d in ["a", "b", "c", "d"] {
            batch.push(d.as_bytes());
        }
        let s = batch.subset(&[1, 3]);
        assert_eq!(s.lines().collect::<Vec<_>>(), vec![&b"b"[..], &b"d"[..]]);
        assert_eq!(s.attached(0), None);
        batch.attach(2, b"k1k2k3k4".to_vec());
        let s = batch.subset(&[1, 3]);
        assert_eq!(
            (s.attached(0), s.attached(1)),
            (Some(&b"k2"[..]), Some(&b"k4"[..]))
        );
        assert_eq!(s.subset(&[1]).attached(0), Some(&b"k4"[..]));
        assert_eq!(batch.joined_lines(), b"a\nb\nc\nd");
    }

    /// A packing of one-byte framing per line and 10 bytes per record, 30 bytes at most.
    fn packing() -> Packing {
        Packing {
            record_overhead: 10,
            line_cost: |n| n + 1,
            max_line_framing: 1,
            max_record_bytes: 30,
        }
    }

    fn records(b: &Batch) -> Vec<Vec<String>> {
        (0..b.record_count())
            .map(|r| {
                b.record(r)
                    .map(|d| String::from_utf8(d.to_vec()).unwrap())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn packing_fills_records_to_their_limit_and_requests_by_records_and_bytes() {
        let limits = Limits {
            max_records: 2,
            max_bytes: 1000,
            interval: None,
        };
        let mut b = Batcher::packing(limits, packing());
        let mut out = Vec::new();
        let now = Instant::now();
        // 10 + 3 × (5 + 1) = 28 bytes fit a record; a fourth line would make 34.
        for l in [
            "aaaaa", "bbbbb", "ccccc", "ddddd", "eeeee", "fffff", "ggggg",
        ] {
            b.push(l.as_bytes(), now, &mut |x| out.push(x));
        }
        assert_eq!(out.len(), 1, "two records make a request");
        assert_eq!(
            records(&out[0]),
            [
                vec!["aaaaa", "bbbbb", "ccccc"],
                vec!["ddddd", "eeeee", "fffff"]
            ]
        );
        assert_eq!(out[0].len(), 6);
        let last = b.take().unwrap();
        assert_eq!(records(&last), [vec!["ggggg"]]);

        // Bytes: 28 + 16 = 44; the next line, joining the second record, would make 50.
        let limits = Limits {
            max_records: 500,
            max_bytes: 48,
            interval: None,
        };
        let mut b = Batcher::packing(limits, packing());
        let mut out = Vec::new();
        for l in ["aaaaa", "bbbbb", "ccccc", "ddddd", "eeeee"] {
            b.push(l.as_bytes(), now, &mut |x| out.push(x));
        }
        assert_eq!(
            records(&out[0]),
            [vec!["aaaaa", "bbbbb", "ccccc"], vec!["ddddd"]]
        );
        assert_eq!(records(&b.take().unwrap()), [vec!["eeeee"]]);
    }

    #[test]
    fn any_line_within_the_room_fits_and_records_keep_their_limits() {
        // Lines of pseudo-random lengths into batches of at most 3 records and 100 bytes.
        let mut x = 7u32;
        let mut lens = || {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as usize % 45
        };
        for _ in 0..200 {
            let mut batch = Batch::new();
            let mut f = Filling::new(packing());
            loop {
                let room = f.room(&batch, 3, 100);
                let n = lens();
                let fit = f.fit(&batch, n, 3, 100);
                if room.is_some_and(|room| n <= room) {
                    assert_ne!(fit, Fit::Full, "{n} bytes within a room of {room:?}");
                }
                if fit == Fit::Full {
                    break;
                }
                f.push(&mut batch, &vec![b'x'; n], fit);
                let sizes: Vec<usize> = (0..batch.record_count())
                    .map(|r| packing().record_bytes(batch.record(r)))
                    .collect();
                assert!(batch.record_count() <= 3);
                assert!(sizes.iter().sum::<usize>() <= 100, "{sizes:?}");
                for (r, size) in sizes.iter().enumerate() {
                    assert!(*size <= 30 || batch.record_lines(r).len() == 1, "{sizes:?}");
                }
            }
        }
    }

    #[test]
    fn a_line_too_long_to_share_a_record_has_one_of_its_own() {
        let limits = Limits {
            max_records: 500,
            max_bytes: 1000,
            interval: None,
        };
        let mut b = Batcher::packing(limits, packing());
        let long = "x".repeat(40);
        for l in ["a", &long, "b", "c"] {
            b.push(l.as_bytes(), Instant::now(), &mut |_| panic!("sealed"));
        }
        let batch = b.take().unwrap();
        assert_eq!(
            records(&batch),
            [vec!["a"], vec![long.as_str()], vec!["b", "c"]]
        );
        assert_eq!(
            packing().record_bytes(batch.record(1)),
            10 + 41,
            "over the limit alone"
        );
        // Packing the same lines afterwards gives the same records.
        let mut plain = Batch::new();
        for l in batch.lines() {
            plain.push(l);
        }
        assert_eq!(plain.record_count(), 4);
        plain.pack(&packing());
        assert_eq!(records(&plain), records(&batch));
    }

    #[test]
    fn packed_batches_keep_their_records_through_subsets_halves_and_appends() {
        let mut b = Batch::new();
        for (i, l) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            if i != 1 && i != 4 {
                b.start_record();
            }
            b.push(l.as_bytes());
        }
        assert_eq!(records(&b), [vec!["a", "b"], vec!["c"], vec!["d", "e"]]);
        b.attach(2, b"k0k1k2".to_vec());
        let s = b.subset(&[0, 2]);
        assert_eq!(records(&s), [vec!["a", "b"], vec!["d", "e"]]);
        assert_eq!(
            (s.attached(0), s.attached(1)),
            (Some(&b"k0"[..]), Some(&b"k2"[..]))
        );

        let (first, second) = b.halves().unwrap();
        assert_eq!(records(&first), [vec!["a", "b"]]);
        assert_eq!(records(&second), [vec!["c"], vec!["d", "e"]]);
        // One record of many lines halves into two records with its key.
        let (x, y) = first.halves().unwrap();
        assert_eq!(records(&x), [vec!["a"]]);
        assert_eq!(records(&y), [vec!["b"]]);
        assert_eq!(
            (x.attached(0), y.attached(0)),
            (Some(&b"k0"[..]), Some(&b"k0"[..]))
        );
        assert!(x.halves().is_none(), "one line cannot be halved");

        let mut joined = first.clone();
        joined.set_prepared(Prepared {
            len: 2,
            sha256_hex: String::new(),
            body: b"{}".to_vec(),
            digests: Vec::new(),
        });
        joined.append(&second);
        assert_eq!(
            joined.prepared(),
            None,
            "a body of fewer records is dropped"
        );
        assert_eq!(records(&joined), records(&b));
        assert_eq!(joined.attached(2), Some(&b"k2"[..]));
        // Lines one to a record join as records of their own; keys attached to one side only
        // are dropped.
        let mut plain = Batch::new();
        plain.push(b"p");
        plain.push(b"q");
        joined.append(&plain);
        assert_eq!(records(&joined)[3..], [vec!["p"], vec!["q"]]);
        assert_eq!(joined.attached(0), None);
        let mut other = plain.clone();
        other.append(&first);
        assert_eq!(records(&other), [vec!["p"], vec!["q"], vec!["a", "b"]]);
    }

    #[test]
    fn delivered_batches_leave_a_few_small_buffers_for_reuse() {
        let buffers = Buffers::default();
        for _ in 0..SPARE_BUFFERS + 2 {
            let mut b = Batch::new();
            b.push(b"line");
            buffers.recycle(b);
        }
        assert_eq!(buffers.spare(), SPARE_BUFFERS, "kept beyond the limit");
        let reused = buffers.take(10);
        assert!(reused.is_empty() && reused.capacity() >= 10);
        assert_eq!(buffers.spare(), SPARE_BUFFERS - 1);

        let big = Buffers::default();
        let mut b = Batch::new();
        b.push(&vec![b'x'; SPARE_BUFFER_MAX + 1]);
        big.recycle(b);
        assert_eq!(big.spare(), 0, "a large buffer was kept");
    }
}
