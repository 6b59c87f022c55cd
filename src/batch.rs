//! Batches of records and the rules that decide when a batch is flushed.
//!
//! A [`Batch`] keeps its records back to back in one buffer (data, then partition key), so a
//! line costs one copy and no allocation of its own. The [`Batcher`] seals the batch it is
//! filling when it holds `max_records` records, when the next record would push it past
//! `max_bytes` (data plus key bytes, as Kinesis counts a request), or when `interval` has
//! passed since its first record entered. Time is passed in, so tests drive it.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{PartitionKey, RANDOM_KEY_LEN};
use crate::random::Rng;

/// Where one record lies in the batch's buffer (12 bytes: batches stay far below 4 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    data_len: u32,
    key_len: u16,
}

impl Span {
    fn data(&self) -> Range<usize> {
        let start = self.start as usize;
        start..start + self.data_len as usize
    }
    fn key(&self) -> Range<usize> {
        let start = self.start as usize + self.data_len as usize;
        start..start + self.key_len as usize
    }
}

/// Records ready to be sent together, in the order they were read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    bytes: Vec<u8>,
    spans: Vec<Span>,
    prepared: Option<Box<Prepared>>,
}

/// A request body made from a batch ahead of time, with its SHA-256 (lowercase hex), so the
/// sender only signs and sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The body.
    pub body: Vec<u8>,
    /// SHA-256 of `body`, lowercase hex.
    pub sha256_hex: String,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Batch::default()
    }

    /// Adds a record.
    pub fn push(&mut self, data: &[u8], key: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.bytes.extend_from_slice(key);
        // Records are at most 10 MiB and keys 256 characters (1 KiB), validated upstream.
        self.spans.push(Span {
            start: start as u32,
            data_len: data.len() as u32,
            key_len: key.len() as u16,
        });
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The size as Kinesis counts it: data bytes plus partition key bytes of every record.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The memory the batch holds (its buffers' capacities), as the memory budget counts it.
    pub fn memory(&self) -> usize {
        self.bytes.capacity()
            + self.spans.capacity() * std::mem::size_of::<Span>()
            + self.prepared.as_ref().map_or(0, |p| p.body.capacity())
    }

    /// Attaches a request body made from this batch.
    pub fn set_prepared(&mut self, prepared: Prepared) {
        self.prepared = Some(Box::new(prepared));
    }

    /// The request body made ahead of time, if any.
    pub fn prepared(&self) -> Option<&Prepared> {
        self.prepared.as_deref()
    }

    /// Record `i`: its data and its partition key.
    pub fn record(&self, i: usize) -> (&[u8], &[u8]) {
        let s = &self.spans[i];
        (&self.bytes[s.data()], &self.bytes[s.key()])
    }

    /// All records in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + '_ {
        self.spans
            .iter()
            .map(|s| (&self.bytes[s.data()], &self.bytes[s.key()]))
    }

    /// A new batch with only the records at `indices` (ascending), in their original order.
    pub fn subset(&self, indices: &[usize]) -> Batch {
        let mut b = Batch::new();
        for &i in indices {
            let (d, k) = self.record(i);
            b.push(d, k);
        }
        b
    }

    /// The records' data joined by `\n`: the failed-attempts file format.
    pub fn joined_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size() + self.len());
        for (i, (d, _)) in self.records().enumerate() {
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
    /// Data plus key bytes per batch.
    pub max_bytes: usize,
    /// Time from a batch's first record to its flush; `None`: no timer.
    pub interval: Option<Duration>,
}

/// Where partition keys come from.
#[derive(Debug)]
pub enum Keys {
    /// The same key for every record.
    Fixed(Vec<u8>),
    /// A random alphanumeric key per record.
    Random(Rng),
    /// No key (the logger handler).
    None,
}

impl Keys {
    /// The keys a configured policy gives.
    pub fn from_config(key: &PartitionKey, rng: Rng) -> Keys {
        match key {
            PartitionKey::Fixed(k) => Keys::Fixed(k.as_bytes().to_vec()),
            PartitionKey::Random => Keys::Random(rng),
        }
    }

    /// The length of every key these give.
    pub fn key_len(&self) -> usize {
        match self {
            Keys::Fixed(k) => k.len(),
            Keys::Random(_) => RANDOM_KEY_LEN,
            Keys::None => 0,
        }
    }

    /// Appends the next record's key to `out`.
    pub fn fill(&mut self, out: &mut Vec<u8>) {
        match self {
            Keys::Fixed(k) => out.extend_from_slice(k),
            Keys::Random(rng) => rng.push_alphanumeric(out, RANDOM_KEY_LEN),
            Keys::None => {}
        }
    }
}

/// Spare buffers the batches and request bodies of delivered batches leave behind, for the
/// next ones: a steady flow of batches then allocates nothing large. Allocators that hand
/// large blocks back to the system at once (musl's) otherwise pay page faults and TLB
/// flushes for every batch. At most [`SPARE_BUFFERS`] buffers of up to [`SPARE_BUFFER_MAX`]
/// bytes each are kept, so what waits here stays small.
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

    /// Keeps a batch's buffers (its records and its request body) for reuse.
    pub fn recycle(&self, batch: Batch) {
        let Batch {
            bytes, prepared, ..
        } = batch;
        self.keep(bytes);
        if let Some(p) = prepared {
            self.keep(p.body);
        }
    }

    fn keep(&self, buffer: Vec<u8>) {
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
    keys: Keys,
    current: Batch,
    first_at: Option<Instant>,
    key_buf: Vec<u8>,
    buffers: Buffers,
}

impl Batcher {
    /// A batcher; `limits.max_bytes` must be at least one largest record.
    pub fn new(limits: Limits, keys: Keys) -> Self {
        assert!(limits.max_records > 0, "a batch holds at least one record");
        Batcher {
            limits,
            keys,
            current: Batch::new(),
            first_at: None,
            key_buf: Vec::with_capacity(RANDOM_KEY_LEN),
            buffers: Buffers::default(),
        }
    }

    /// The spare buffers new batches are made from; delivered batches go back to them.
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// The partition key length every record carries.
    pub fn key_len(&self) -> usize {
        self.keys.key_len()
    }

    /// Adds a line read at `now`, passing each batch this seals to `sealed`.
    pub fn push(&mut self, line: &[u8], now: Instant, sealed: &mut impl FnMut(Batch)) {
        let record = line.len() + self.keys.key_len();
        if !self.current.is_empty() && self.current.size() + record > self.limits.max_bytes {
            sealed(self.take_current());
        }
        self.key_buf.clear();
        self.keys.fill(&mut self.key_buf);
        if self.current.is_empty() {
            self.first_at = Some(now);
        }
        self.current.push(line, &self.key_buf);
        if self.current.len() >= self.limits.max_records {
            sealed(self.take_current());
        }
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
        let cap = self.current.size().max(4096);
        let records = self.current.len();
        let mut next = Batch {
            bytes: self.buffers.take(cap),
            spans: Vec::with_capacity(records),
            prepared: None,
        };
        std::mem::swap(&mut next, &mut self.current);
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
        keys: Keys,
    ) -> Batcher {
        Batcher::new(
            Limits {
                max_records,
                max_bytes,
                interval,
            },
            keys,
        )
    }

    fn data(b: &Batch) -> Vec<String> {
        b.records()
            .map(|(d, _)| String::from_utf8(d.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn seals_on_record_count() {
        let mut b = batcher(3, 1000, None, Keys::None);
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
    fn seals_before_a_record_would_pass_the_byte_limit_counting_keys() {
        // Each record is 3 data + 2 key = 5 bytes; 12 bytes hold two.
        let mut b = batcher(500, 12, None, Keys::Fixed(b"pk".to_vec()));
        let mut out = Vec::new();
        let now = Instant::now();
        for l in ["aaa", "bbb", "ccc", "ddd", "eeeeeee"] {
            b.push(l.as_bytes(), now, &mut |x| out.push(x));
        }
        assert_eq!(
            out.iter().map(data).collect::<Vec<_>>(),
            vec![vec!["aaa", "bbb"], vec!["ccc", "ddd"]]
        );
        assert!(out.iter().all(|x| x.size() <= 12));
        assert_eq!(out[0].record(1), (&b"bbb"[..], &b"pk"[..]));
        let last = b.take().unwrap();
        assert_eq!(last.size(), 9);
    }

    #[test]
    fn exactly_full_by_bytes_stays_open_until_next_record() {
        let mut b = batcher(500, 10, None, Keys::None);
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
        let mut b = batcher(1, 5, None, Keys::None);
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
        let mut b = batcher(500, 1000, Some(i), Keys::None);
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
        let mut b = batcher(500, 1000, None, Keys::None);
        b.push(b"a", Instant::now(), &mut |_| {});
        assert_eq!(b.deadline(), None);
        assert!(b
            .take_due(Instant::now() + Duration::from_secs(3600))
            .is_none());
    }

    #[test]
    fn random_keys_are_twelve_alphanumerics_per_record() {
        let mut b = batcher(500, 10_000, None, Keys::Random(Rng::with_seed(3)));
        b.push(b"x", Instant::now(), &mut |_| {});
        b.push(b"y", Instant::now(), &mut |_| {});
        let batch = b.take().unwrap();
        let (d0, k0) = batch.record(0);
        let (_, k1) = batch.record(1);
        assert_eq!(d0, b"x");
        assert_eq!(k0.len(), 12);
        assert!(k0.iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(k0, k1);
        assert_eq!(batch.size(), 26);
    }

    #[test]
    fn subset_keeps_order_and_joined_lines_is_the_file_format() {
        let mut batch = Batch::new();
        for (d, k) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
            batch.push(d.as_bytes(), k.as_bytes());
        }
        let s = batch.subset(&[1, 3]);
        assert_eq!(
            s.records().collect::<Vec<_>>(),
            vec![(&b"b"[..], &b"2"[..]), (&b"d"[..], &b"4"[..])]
        );
        assert_eq!(batch.joined_lines(), b"a\nb\nc\nd");
    }

    #[test]
    fn delivered_batches_leave_a_few_small_buffers_for_reuse() {
        let buffers = Buffers::default();
        for _ in 0..SPARE_BUFFERS + 2 {
            let mut b = Batch::new();
            b.push(b"line", b"key");
            buffers.recycle(b);
        }
        assert_eq!(buffers.spare(), SPARE_BUFFERS, "kept beyond the limit");
        let reused = buffers.take(10);
        assert!(reused.is_empty() && reused.capacity() >= 10);
        assert_eq!(buffers.spare(), SPARE_BUFFERS - 1);

        let big = Buffers::default();
        let mut b = Batch::new();
        b.push(&vec![b'x'; SPARE_BUFFER_MAX + 1], b"k");
        big.recycle(b);
        assert_eq!(big.spare(), 0, "a large buffer was kept");
    }
}
