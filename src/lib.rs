//! fifo2kinesis reads lines from a named pipe (FIFO) and publishes them to an Amazon Kinesis
//! Data Stream.
//!
//! The binary is a thin wrapper around [`run`]: one poll loop on the main thread (`daemon`)
//! reads the FIFO and splits lines (`input`) and fills batches (`batch`), whose request bodies
//! the destination's encoder builds (`sink`); the backlog (`backlog`) owns them until they are
//! accepted — the memory budget, the failed-attempts directory, replay; a sender thread
//! (`sender`) takes them from a bounded channel, delivers each as `delivery` decides, signs
//! and sends them ([`aws`], `sink`), and reports back how each ended.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod log;

pub mod options;

pub mod aws;
mod backlog;
mod batch;
mod clock;
mod daemon;
mod delivery;
mod input;
mod metrics;
mod random;
mod sender;
mod signals;
mod sink;
mod stats;
mod stop;

pub use clock::UtcDateTime;
pub use daemon::Outcome;

/// The parsers of hostile input (the FIFO's bytes, spool files, service answers) and the
/// request encoder, for the fuzz targets and tests.
pub mod parsers {
    pub use crate::backlog::journal::parse_state_slot;
    pub use crate::backlog::replay::{FileLines, Item};
    pub use crate::backlog::spool::{recoverable_lines, split_lines};
    pub use crate::batch::{Batch, Batcher, Limits, Packing, Prepared};
    pub use crate::input::lines::{LineSplitter, Piece};
    pub use crate::random::Rng;
    pub use crate::sink::errors::{
        classify, classify_record, parse_error, parse_retry_after, sanitize_code,
    };
    pub use crate::sink::firehose::FirehoseEncoder;
    pub use crate::sink::kinesis::{aggregate, multi_md5, Keys, KinesisEncoder};
    pub use crate::sink::output::{
        parse_put_record_batch_output, parse_put_records_output, PutRecordsOutput,
    };
    pub use crate::sink::signed::BodyEncoder;
    pub use crate::sink::{Encoder, ErrorKind};
}

use std::fmt;
use std::sync::Arc;

use daemon::Parts;
use options::Destination;
use options::{Config, Handler};
use sink::kinesis::Keys;
use sink::logger::LoggerSink;
use sink::signed::HttpTimeouts;
use sink::Sink;

/// Why a run could not start or had to end.
#[derive(Debug)]
pub enum Error {
    /// A setting or the environment is wrong (exit status 2).
    Setup(String),
    /// Something failed while running (exit status 1).
    Runtime(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup(msg) => f.write_str(msg),
            Error::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Setup(_) => None,
            Error::Runtime(e) => Some(e),
        }
    }
}

/// Sets everything up from `config` and the process environment, then runs until stopped.
pub fn run(config: Config) -> Result<Outcome, Error> {
    // Before any thread exists, so that every thread inherits the blocked signals.
    let signals = signals::block()
        .map_err(|e| Error::Setup(format!("cannot set up signal handling: {e}")))?;
    let _locks = take_locks(&config)?;
    let spool = match &config.failed_attempts_dir {
        None => None,
        Some(dir) => Some(
            backlog::spool::Spool::open(dir, config.failed_attempts_max_bytes).map_err(|e| {
                Error::Setup(format!("--failed-attempts-dir: {}: {e}", dir.display()))
            })?,
        ),
    };
    let journal = match &spool {
        None => None,
        Some(spool) => {
            backlog::journal::Journal::open(spool, config.durable, config.fsync_interval).map_err(
                |e| {
                    Error::Setup(format!(
                        "--failed-attempts-dir: the journal in {}: {e}",
                        spool.dir().join(backlog::journal::JOURNAL_DIR).display()
                    ))
                },
            )?
        }
    };
    let stop = Arc::new(stop::StopSignal::default());
    let sink = make_sink(&config, &aws::Env::from_process(), &stop)?;
    let input = input::Input::open(&config.input).map_err(|e| Error::Setup(e.to_string()))?;
    let stats = Arc::new(stats::Stats::default());
    let outcome = daemon::run(
        config,
        Parts {
            input,
            signals,
            sink,
            stats,
            spool,
            journal,
            stop,
        },
    );
    // A credential_process still running was given up on at the stop deadline.
    aws::kill_credential_processes();
    outcome.map_err(Error::Runtime)
}

/// Locks the FIFO (`<fifo>.lock`) and the failed-attempts directory (`<dir>/.lock`) for this
/// run, before either is touched, so that a second daemon on either is refused. Standard input
/// is this process's own and needs no lock.
fn take_locks(config: &Config) -> Result<Vec<input::lock::Lock>, Error> {
    let mut locks = Vec::new();
    if let options::Input::Fifo(fifo) = &config.input {
        locks.extend(take_lock(
            "--fifo-name",
            &input::lock::fifo_lock_path(fifo),
        )?);
    }
    if let Some(dir) = &config.failed_attempts_dir {
        backlog::spool::prepare_dir(dir)
            .map_err(|e| Error::Setup(format!("--failed-attempts-dir: {}: {e}", dir.display())))?;
        locks.extend(take_lock(
            "--failed-attempts-dir",
            &dir.join(input::lock::DIR_LOCK_NAME),
        )?);
    }
    Ok(locks)
}

/// One lock; `None` where the lock file cannot be created for want of permission (a FIFO
/// made beforehand in a directory this user may not write to, a read-only failed-attempts
/// directory): those ran before there were locks, and still do, unguarded.
fn take_lock(option: &str, path: &std::path::Path) -> Result<Option<input::lock::Lock>, Error> {
    match input::lock::acquire(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.is_not_permitted() => {
            log!(
                Warn,
                "{e}; running without the one-daemon check for {option}"
            );
            Ok(None)
        }
        Err(e) => Err(Error::Setup(format!("{option}: {e}"))),
    }
}

/// Builds the flush handler the configuration names; for Kinesis, resolves region, endpoint
/// and credentials from `env` and the shared files.
/// Credential fetches give up at `stop`'s deadline.
pub fn make_sink(
    config: &Config,
    env: &aws::Env,
    stop: &Arc<stop::StopSignal>,
) -> Result<Box<dyn Sink>, Error> {
    match (config.handler, &config.kinesis) {
        (Handler::Logger, _) => Ok(Box::new(LoggerSink::stdout())),
        (Handler::Kinesis, None) => Err(Error::Setup(
            "the kinesis handler needs --stream-name or --delivery-stream".into(),
        )),
        (Handler::Kinesis, Some(k)) => {
            // A source failing for now (instance metadata asked for the region) may be there
            // after a restart; wrong configuration will not.
            let aws = aws::resolve(k, env, stop).map_err(|e| {
                if e.is_configuration() {
                    Error::Setup(e.to_string())
                } else {
                    Error::Runtime(std::io::Error::other(e))
                }
            })?;
            log!(
                Info,
                "publishing to {} in {} at {}",
                k.destination,
                aws.region,
                aws::loggable_url(&aws.endpoint)
            );
            log!(Info, "credentials: {}", aws.credentials_source);
            if aws.http.extra_root_count() > 0 {
                log!(
                    Info,
                    "trusting {} extra CA certificates besides the built-in roots",
                    aws.http.extra_root_count()
                );
            }
            let timeouts = HttpTimeouts {
                request: config.request_timeout,
                ..HttpTimeouts::default()
            };
            let agent = aws
                .http
                .service_agent(timeouts.connect.min(timeouts.request), timeouts.request);
            Ok(match &k.destination {
                Destination::Stream(stream) => Box::new(sink::kinesis::sink(
                    agent,
                    &aws.endpoint,
                    &aws.region,
                    stream,
                    Keys::from_config(&config.partition_key, random::Rng::from_entropy()),
                    config.aggregate,
                    aws.credentials,
                    timeouts,
                )),
                Destination::DeliveryStream(name) => Box::new(sink::firehose::sink(
                    agent,
                    &aws.endpoint,
                    &aws.region,
                    name,
                    config.aggregate,
                    aws.credentials,
                    timeouts,
                )),
            })
        }
    }
}
