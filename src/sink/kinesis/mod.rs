//! The Kinesis Data Streams destination: signed PutRecords requests to one stream.
//!
//! [`KinesisSink`] is a [`SignedSink`] speaking [`API`]; its [`KinesisEncoder`] builds the
//! request bodies (on the reading thread, see [`crate::sink::Encoder`]), a record per line or,
//! with `--aggregate`, KPL aggregated records of many lines ([`aggregate`], digested by
//! [`multi_md5`]).

pub mod aggregate;
mod encoder;
pub mod multi_md5;

use ureq::Agent;

use crate::aws::Provider;
use crate::sink::errors::KINESIS_LIMITS;
use crate::sink::output::PUT_RECORDS;
use crate::sink::signed::{Api, HttpTimeouts, SignedSink};

pub use encoder::{Keys, KinesisEncoder};

/// PutRecords, as Kinesis takes it.
pub static API: Api = Api {
    target: "Kinesis_20131202.PutRecords",
    signing_name: "kinesis",
    answer: &PUT_RECORDS,
    limits: KINESIS_LIMITS,
    // A PUT payload unit is 25 KB, counted here as 25 KiB, so the KPL's 50 KiB aggregate is
    // two units.
    payload_unit: 25 * 1024,
};

/// Signed PutRecords requests to one stream.
pub type KinesisSink = SignedSink;

/// A sink for `stream` at `endpoint` in `region` whose records carry `keys`, sending with
/// `agent` (which must answer 4xx/5xx as responses; see [`crate::aws::HttpSettings`]). With
/// `aggregate`, records are KPL aggregates of lines of at most that many bytes.
#[allow(clippy::too_many_arguments)]
pub fn sink(
    agent: Agent,
    endpoint: &str,
    region: &str,
    stream: &str,
    keys: Keys,
    aggregate: Option<usize>,
    credentials: Box<dyn Provider>,
    timeouts: HttpTimeouts,
) -> KinesisSink {
    let encoder = match aggregate {
        Some(max_bytes) => KinesisEncoder::aggregating(stream, keys, max_bytes),
        None => KinesisEncoder::new(stream, keys),
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
