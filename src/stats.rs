//! Counters shared by the poll loop and the sender thread.
//!
//! Plain relaxed atomics: each counter is exact, and the set is read together only for
//! reports, where a line read a microsecond late does no harm.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What the daemon has done so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines read from the input (non-empty, within the size limit).
    pub lines_read: AtomicU64,
    /// Bytes read from the input.
    pub bytes_read: AtomicU64,
    /// Empty lines skipped.
    pub empty_lines: AtomicU64,
    /// Lines over the record size limit, skipped.
    pub oversized_lines: AtomicU64,
    /// Records accepted by the destination.
    pub records_sent: AtomicU64,
    /// Requests made (every attempt).
    pub requests: AtomicU64,
    /// Requests that were retries.
    pub retries: AtomicU64,
    /// Records reported as throttled.
    pub throttled_records: AtomicU64,
    /// Lines written to the failed-attempts directory.
    pub lines_spooled: AtomicU64,
    /// Lines that could not be delivered nor kept.
    pub lines_dropped: AtomicU64,
    /// Times the FIFO was reopened after its last writer hung up.
    pub fifo_reopens: AtomicU64,
    /// Lines sent again from the failed-attempts directory and accepted.
    pub lines_replayed: AtomicU64,
    /// Bytes of lines read but not yet accepted, kept on disk or dropped (the memory budget).
    pub buffered_bytes: AtomicU64,
    /// Failed requests by error code.
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a counter.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts a failed request under its error code.
    pub fn count_error(&self, code: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(code.to_string()).or_default() += 1;
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line with every counter, for the log.
    pub fn summary(&self) -> String {
        let g = Stats::get;
        format!(
            "lines_read={} bytes_read={} empty_lines={} oversized_lines={} records_sent={} requests={} retries={} throttled_records={} lines_spooled={} lines_replayed={} lines_dropped={} buffered_bytes={} fifo_reopens={}",
            g(&self.lines_read),
            g(&self.bytes_read),
            g(&self.empty_lines),
            g(&self.oversized_lines),
            g(&self.records_sent),
            g(&self.requests),
            g(&self.retries),
            g(&self.throttled_records),
            g(&self.lines_spooled),
            g(&self.lines_replayed),
            g(&self.lines_dropped),
            g(&self.buffered_bytes),
            g(&self.fifo_reopens),
        )
    }
}
