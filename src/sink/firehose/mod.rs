//! The Amazon Data Firehose destination: signed PutRecordBatch requests to one delivery stream.
//!
//! [`FirehoseSink`] is a [`SignedSink`] speaking [`API`]; its [`FirehoseEncoder`] builds the
//! request bodies: a record per line, or with `--aggregate` many whole lines a record, every
//! line ending in its newline, since Firehose writes records into its destination as they are.

mod encoder;

use ureq::Agent;

use crate::aws::Provider;
use crate::sink::errors::FIREHOSE_LIMITS;
use crate::sink::output::PUT_RECORD_BATCH;
use crate::sink::signed::{Api, HttpTimeouts, SignedSink};

pub use encoder::FirehoseEncoder;

/// PutRecordBatch, as Firehose takes it.
pub static API: Api = Api {
    target: "Firehose_20150804.PutRecordBatch",
    signing_name: "firehose",
    answer: &PUT_RECORD_BATCH,
    limits: FIREHOSE_LIMITS,
    // Direct PUT is billed per record rounded up to 5 KB, counted here as 5 KiB.
    payload_unit: 5 * 1024,
};

/// Signed PutRecordBatch requests to one delivery stream.
pub type FirehoseSink = SignedSink;

/// A sink for `delivery_stream` at `endpoint` in `region`, sending with `agent` (which must
/// answer 4xx/5xx as responses; see [`crate::aws::HttpSettings`]). With `aggregate`, records
/// join whole lines up to that many bytes.
pub fn sink(
    agent: Agent,
    endpoint: &str,
    region: &str,
    delivery_stream: &str,
    aggregate: Option<usize>,
    credentials: Box<dyn Provider>,
    timeouts: HttpTimeouts,
) -> FirehoseSink {
    let encoder = match aggregate {
        Some(max_bytes) => FirehoseEncoder::joining(delivery_stream, max_bytes),
        None => FirehoseEncoder::new(delivery_stream),
    };
    SignedSink::new(
        &API,
        agent,
        endpoint,
        region,
        Box::new(encoder),
        credentials,
        timeouts,
    )
}
