//! Counters shared by the poll loop and the sender thread, and their two reports: one log line
//! (every `--stats-interval`, on SIGUSR1 and at the stop) and the Prometheus text exposition
//! format for node_exporter's textfile collector (`--metrics-file`).
//!
//! Plain relaxed atomics: each counter is exact, and the set is read together only for
//! reports, where a line read a microsecond late does no harm.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Credentials fetched (first fetches and refreshes) by any provider in this process.
static CREDENTIAL_FETCHES: AtomicU64 = AtomicU64::new(0);

/// Counts one fetch of credentials (called by the credential cache).
pub fn count_credential_fetch() {
    CREDENTIAL_FETCHES.fetch_add(1, Ordering::Relaxed);
}

/// What the daemon has done so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines read from the input (non-empty, within the size limit).
    pub lines_read: AtomicU64,
    /// Bytes read from the input.
    pub bytes_read: AtomicU64,
    /// Empty lines skipped.
    pub empty_lines: AtomicU64,
    /// Lines over the record size limit (kept in `oversized/` or skipped).
    pub oversized_lines: AtomicU64,
    /// Records accepted by the destination.
    pub records_sent: AtomicU64,
    /// Lines accepted by the destination (more than records with `--aggregate`).
    pub user_records_sent: AtomicU64,
    /// The units the records accepted were billed in: each record's data and key in whole
    /// 25 KiB (Kinesis PUT payload units), or its data in 5 KiB steps (Firehose).
    pub payload_units: AtomicU64,
    /// Requests made (every attempt).
    pub requests: AtomicU64,
    /// Requests that were retries.
    pub retries: AtomicU64,
    /// Records reported as throttled.
    pub throttled_records: AtomicU64,
    /// Records reported as failed for another reason than throttling (and sent again).
    pub failed_records: AtomicU64,
    /// Lines written to the failed-attempts directory.
    pub lines_spooled: AtomicU64,
    /// Lines that could not be delivered nor kept.
    pub lines_dropped: AtomicU64,
    /// Times the FIFO was reopened after its last writer hung up.
    pub fifo_reopens: AtomicU64,
    /// Lines sent again from the failed-attempts directory and accepted.
    pub lines_replayed: AtomicU64,
    /// Lines sent again from the journal after a restart that may have been accepted before
    /// it (possible duplicates).
    pub lines_resent: AtomicU64,
    /// Bytes of lines read but not yet accepted, kept on disk or dropped (the memory budget).
    pub buffered_bytes: AtomicU64,
    /// Failed requests by error code.
    pub errors: Mutex<BTreeMap<String, u64>>,
}

/// Whether a figure only grows or goes up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows while the daemon runs.
    Counter,
    /// A level: bytes held now.
    Gauge,
}

/// One figure of a [`Snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figure {
    /// Its name in the log line; the metric name adds `fifo2kinesis_` (and `_total` for
    /// counters).
    pub name: &'static str,
    /// What it counts (the metric's HELP).
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its value.
    pub value: u64,
}

/// Every counter read at one moment, with the figures that live elsewhere (the spool's size).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The figures, in report order.
    pub figures: Vec<Figure>,
    /// Failed requests by error code.
    pub failed_requests: BTreeMap<String, u64>,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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

    /// Reads every figure; `spool_bytes` is the failed-attempts directory's size now and
    /// `journal_bytes` the bytes in the journal not delivered yet.
    pub fn snapshot(&self, spool_bytes: u64, journal_bytes: u64) -> Snapshot {
        use Kind::{Counter, Gauge};
        let f = |name, help, kind, value| Figure {
            name,
            help,
            kind,
            value,
        };
        let g = Stats::get;
        let figures = vec![
            f(
                "lines_read",
                "Lines read from the input.",
                Counter,
                g(&self.lines_read),
            ),
            f(
                "bytes_read",
                "Bytes read from the input.",
                Counter,
                g(&self.bytes_read),
            ),
            f(
                "empty_lines",
                "Empty lines skipped.",
                Counter,
                g(&self.empty_lines),
            ),
            f(
                "oversized_lines",
                "Lines longer than a record holds, kept apart or skipped.",
                Counter,
                g(&self.oversized_lines),
            ),
            f(
                "records_sent",
                "Records the stream accepted.",
                Counter,
                g(&self.records_sent),
            ),
            f(
                "user_records_sent",
                "Lines the stream accepted (many to a record with --aggregate).",
                Counter,
                g(&self.user_records_sent),
            ),
            f(
                "payload_units",
                "Billed units of the records accepted (Kinesis: whole 25 KiB of data and key; \
                 Firehose: 5 KiB steps).",
                Counter,
                g(&self.payload_units),
            ),
            f(
                "requests",
                "PutRecords (or PutRecordBatch) requests made, retries included.",
                Counter,
                g(&self.requests),
            ),
            f(
                "retries",
                "Requests that were retries.",
                Counter,
                g(&self.retries),
            ),
            f(
                "throttled_records",
                "Records the stream answered as throttled.",
                Counter,
                g(&self.throttled_records),
            ),
            f(
                "failed_records",
                "Records the stream answered as failed, not throttled (sent again).",
                Counter,
                g(&self.failed_records),
            ),
            f(
                "lines_spooled",
                "Lines written to the failed-attempts directory.",
                Counter,
                g(&self.lines_spooled),
            ),
            f(
                "lines_replayed",
                "Lines sent again from the failed-attempts directory and accepted.",
                Counter,
                g(&self.lines_replayed),
            ),
            f(
                "lines_resent",
                "Lines sent again from the journal after a restart that may have been accepted before it.",
                Counter,
                g(&self.lines_resent),
            ),
            f(
                "lines_dropped",
                "Lines neither delivered nor kept.",
                Counter,
                g(&self.lines_dropped),
            ),
            f(
                "fifo_reopens",
                "Times the FIFO was reopened after its last writer hung up.",
                Counter,
                g(&self.fifo_reopens),
            ),
            f(
                "credential_refreshes",
                "Credentials fetched, the first time included.",
                Counter,
                CREDENTIAL_FETCHES.load(Ordering::Relaxed),
            ),
            f(
                "buffered_bytes",
                "Bytes of lines held in memory until the stream accepts them.",
                Gauge,
                g(&self.buffered_bytes),
            ),
            f(
                "spool_bytes",
                "Bytes in the failed-attempts directory.",
                Gauge,
                spool_bytes,
            ),
            f(
                "journal_bytes",
                "Bytes in the journal (--durable) not delivered yet.",
                Gauge,
                journal_bytes,
            ),
        ];
        let failed_requests = self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Snapshot {
            figures,
            failed_requests,
        }
    }
}

impl Snapshot {
    /// One line for the log: `name=value` for every figure, then
    /// `failed_requests=Code:n,Code:n` (`-` when none).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for f in &self.figures {
            let _ = write!(out, "{}={} ", f.name, f.value);
        }
        out.push_str("failed_requests=");
        if self.failed_requests.is_empty() {
            out.push('-');
        }
        for (i, (code, n)) in self.failed_requests.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}{code}:{n}");
        }
        out
    }

    /// The figures in the Prometheus text exposition format (version 0.0.4), each with HELP
    /// and TYPE lines.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for f in &self.figures {
            let (name, kind) = match f.kind {
                Kind::Counter => (format!("fifo2kinesis_{}_total", f.name), "counter"),
                Kind::Gauge => (format!("fifo2kinesis_{}", f.name), "gauge"),
            };
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", f.value);
        }
        let name = "fifo2kinesis_failed_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed PutRecords (or PutRecordBatch) requests by error code."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (code, n) in &self.failed_requests {
            let _ = writeln!(out, "{name}{{code=\"{}\"}} {n}", label_value(code));
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the exposition format asks.
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_figure_and_the_failures_by_code() {
        let s = Stats::default();
        Stats::add(&s.lines_read, 3);
        s.count_error("InternalFailure");
        s.count_error("InternalFailure");
        s.count_error("ProvisionedThroughputExceededException");
        let line = s.snapshot(42, 0).summary();
        assert!(line.starts_with("lines_read=3 bytes_read=0 "), "{line}");
        assert!(line.contains(" spool_bytes=42 "), "{line}");
        assert!(line.ends_with(
            " failed_requests=InternalFailure:2,ProvisionedThroughputExceededException:1"
        ));
        assert!(Stats::default()
            .snapshot(0, 0)
            .summary()
            .ends_with(" failed_requests=-"));
    }

    #[test]
    fn prometheus_text_has_help_type_and_a_sample_per_figure() {
        let s = Stats::default();
        Stats::add(&s.records_sent, 7);
        Stats::add(&s.buffered_bytes, 100);
        s.count_error("Odd\"Code\\");
        let text = s.snapshot(5, 0).prometheus();
        assert!(text.contains(
            "# TYPE fifo2kinesis_records_sent_total counter\nfifo2kinesis_records_sent_total 7\n"
        ));
        assert!(text.contains(
            "# TYPE fifo2kinesis_buffered_bytes gauge\nfifo2kinesis_buffered_bytes 100\n"
        ));
        assert!(text.contains("fifo2kinesis_spool_bytes 5\n"));
        assert!(text.contains("fifo2kinesis_failed_requests_total{code=\"Odd\\\"Code\\\\\"} 1\n"));
        let samples = text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples, 21);
        assert_eq!(text.matches("# HELP ").count(), 21);
    }
}
