//! Destinations (flush handlers): where a batch goes, one attempt at a time, and how it is
//! encoded on the way.
//!
//! A [`Sink`] makes one attempt to deliver a batch and says what happened ([`PutResult`]);
//! retrying, backoff and keeping failed lines are the sender's business. A sink that sends
//! request bodies hands the poll loop an [`Encoder`], so bodies are built on the reading
//! thread while the sender is busy; a batch knows nothing of any destination. Three sinks
//! exist: [`kinesis::KinesisSink`] (PutRecords to a stream) and [`firehose::FirehoseSink`]
//! (PutRecordBatch to a delivery stream), both a [`signed::SignedSink`] that reads answers
//! with [`output`] and [`errors`], and [`logger::LoggerSink`] (each line on standard output).

pub mod errors;
pub mod firehose;
pub mod json;
pub mod kinesis;
pub mod logger;
pub mod output;
pub mod signed;

use std::time::{Duration, Instant};

use crate::batch::{Batch, Packing, Prepared};

pub use output::FailedRecord;

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum PutResult {
    /// Every record was accepted.
    Accepted,
    /// These records failed (ascending indices); the others were accepted.
    Partial {
        /// The failed records, in request order.
        failed: Vec<FailedRecord>,
        /// How long the service asked us to wait (`x-amz-retry-after`), uncapped.
        retry_after: Option<Duration>,
    },
    /// The whole attempt failed.
    Failed(Failure),
}

/// Why a whole attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// What the failure means for the data.
    pub kind: ErrorKind,
    /// The error code (`ResourceNotFoundException`, `connection`, …), for logs and grouping.
    pub code: String,
    /// A one-line description with no secret in it.
    pub message: String,
    /// How long the service asked us to wait, if it did.
    pub retry_after: Option<Duration>,
}

/// Somewhere batches can be delivered.
pub trait Sink: Send {
    /// Makes one attempt to deliver `batch`, giving up at `deadline` if one is set.
    fn put(&mut self, batch: &mut Batch, deadline: Option<Instant>) -> PutResult;
    /// What the destination is called in log lines.
    fn describe(&self) -> String;
    /// Called when the service said the credentials expired.
    fn credentials_expired(&mut self) {}
    /// The encoder the poll loop builds this sink's request bodies with, if it sends any.
    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        None
    }
    /// The units the destination bills record `r` of `batch` in (whole PUT payload units of
    /// its data and key for Kinesis, 5 KiB steps for Firehose), if it bills records by size.
    fn payload_units(&self, _batch: &Batch, _r: usize) -> Option<u64> {
        None
    }
}

/// Turns batches of lines into one destination's request bodies.
pub trait Encoder: Send {
    /// The most bytes the destination counts for a line in a record of its own beyond the
    /// line's (a partition key, aggregate framing): the record size limit counts them, and
    /// the batcher too unless lines are packed.
    fn line_overhead(&self) -> usize;
    /// How lines are packed many to a record, if they are (KPL aggregation); the batcher
    /// then counts records and bytes by it. A batch given to [`Encoder::prepare`] unpacked is
    /// packed there the same way.
    fn packing(&self) -> Option<Packing> {
        None
    }
    /// Learns the length and SHA-256 of the request body for `batch` by writing it a part at
    /// a time into `buffer` (a reused one), which keeps a small body; a large one is not kept,
    /// and the sender writes it again as it sends. What the encoder chose for each line (a
    /// random partition key) is attached to the batch first, so that both writings, and a
    /// resend of some of its lines, carry the same.
    fn prepare(&mut self, batch: &mut Batch, buffer: Vec<u8>) -> Prepared;
    /// A copy for another thread.
    fn boxed_clone(&self) -> Box<dyn Encoder>;
}

/// What an error means for the data it concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling: retry with backoff.
    Throttled,
    /// A passing fault (5xx, internal failure, network): retry with backoff.
    Transient,
    /// The credentials expired: refresh them and retry.
    ExpiredCredentials,
    /// The request's signature time is too far from the service's clock: retry later.
    ClockSkew,
    /// A request beyond the default limits was refused as invalid: split it, or set a single
    /// record aside.
    TooLarge,
    /// Retrying now will not help (no such stream, access denied…): keep the data aside.
    Permanent,
}

impl ErrorKind {
    /// Whether the same request may succeed if sent again soon.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::Transient
                | ErrorKind::ExpiredCredentials
                | ErrorKind::ClockSkew
        )
    }
}
