//! The options: command line and environment, read once into a validated [`Config`].
//!
//! Every option has a long form, most a short form, and an environment variable
//! `FIFO2KINESIS_<OPTION_IN_CAPS_WITH_UNDERSCORES>`; the command line beats the environment,
//! and a blank environment value counts as unset. Options, short letters, variables and
//! defaults are those of the Go fifo2kinesis, so existing service files keep working: `-h NAME`
//! is `--flush-handler NAME`, as there. Only a bare `-h`, with no value after it, prints the
//! help, as `--help` does; a Go service file never has one. Any bad value is a [`ConfigError`]
//! naming the option (or variable) and what it accepts; the binary turns it into exit status 2.
//!
//! Each option is defined once, in `defs.rs`, with its names, variable, default and texts;
//! reading (`parse.rs`), checking (`validate.rs`), [`help_text`] and [`man_page`] all work
//! from that table.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod defs;
mod docs;
mod help;
mod man;
mod parse;
mod validate;

pub use help::help_text;
pub use man::man_page;

/// Records per request allowed by Kinesis (PutRecords) and Firehose (PutRecordBatch).
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// The largest record and request size the Kinesis API accepts (10 MiB).
pub const API_MAX_BYTES: usize = 10 * 1024 * 1024;
/// The largest Firehose record, before base64 (1,000 KiB).
pub const FIREHOSE_MAX_RECORD_BYTES: usize = 1000 * 1024;
/// The largest Firehose PutRecordBatch request (4 MiB).
pub const FIREHOSE_MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
/// The smallest `--aggregate-max-bytes`.
pub const MIN_AGGREGATE_BYTES: usize = 1024;
/// Length of the random partition key used when none is configured.
pub const RANDOM_KEY_LEN: usize = 12;
/// Longest partition key Kinesis accepts, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// A configuration problem, reported as one line and exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The command line could not be read (unknown option, missing value…).
    Usage(String),
    /// A value was given but is not acceptable.
    Invalid {
        /// The option, as `--name` (or the variable when it came from the environment).
        option: String,
        /// The value as given.
        value: String,
        /// What is accepted.
        expected: String,
    },
    /// A required option is missing.
    Missing {
        /// The option, as `--name`.
        option: String,
        /// Where else it may come from.
        hint: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage(msg) => write!(f, "{msg} (see --help)"),
            ConfigError::Invalid {
                option,
                value,
                expected,
            } => {
                write!(f, "{option}: invalid value {value:?}: expected {expected}")
            }
            ConfigError::Missing { option, hint } => {
                write!(f, "missing required option {option} ({hint})")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<lexopt::Error> for ConfigError {
    fn from(e: lexopt::Error) -> Self {
        ConfigError::Usage(e.to_string())
    }
}

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the daemon.
    Run(Box<Config>),
    /// Print help.
    Help,
    /// Print the version.
    Version,
}

/// Where lines come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A named pipe at this path.
    Fifo(PathBuf),
    /// Standard input (`--fifo-name -`); its end stops the daemon.
    Stdin,
}

/// Where batches go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// PutRecords to Kinesis, or PutRecordBatch to Firehose (`--delivery-stream`).
    Kinesis,
    /// Each record on standard output, one per line.
    Logger,
}

impl FromStr for Handler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kinesis" => Ok(Handler::Kinesis),
            "logger" => Ok(Handler::Logger),
            _ => Err("kinesis or logger".into()),
        }
    }
}

/// The partition key given to every record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionKey {
    /// The same key for every record.
    Fixed(String),
    /// A fresh random alphanumeric key of [`RANDOM_KEY_LEN`] characters per record.
    Random,
}

impl PartitionKey {
    /// The key's length in bytes, which counts against the record size.
    pub fn len(&self) -> usize {
        match self {
            PartitionKey::Fixed(k) => k.len(),
            PartitionKey::Random => RANDOM_KEY_LEN,
        }
    }

    /// Whether the key is empty (never true for a validated key).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the `kinesis` handler publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A Kinesis data stream (`--stream-name`), with PutRecords.
    Stream(String),
    /// A Firehose delivery stream (`--delivery-stream`), with PutRecordBatch.
    DeliveryStream(String),
}

impl Destination {
    /// The service's endpoint prefix: `kinesis` or `firehose`.
    pub fn service(&self) -> &'static str {
        match self {
            Destination::Stream(_) => "kinesis",
            Destination::DeliveryStream(_) => "firehose",
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Stream(n) => write!(f, "stream {n}"),
            Destination::DeliveryStream(n) => write!(f, "delivery stream {n}"),
        }
    }
}

/// Kinesis (and Firehose) settings, present when the handler is `kinesis`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisConfig {
    /// The stream or delivery stream.
    pub destination: Destination,
    /// AWS region, if given by option or environment (else the profile's or the instance's).
    pub region: Option<String>,
    /// Kinesis (or Firehose) endpoint URL given by option or environment.
    pub endpoint_url: Option<String>,
    /// STS endpoint URL given by option or environment.
    pub sts_endpoint_url: Option<String>,
    /// `AWS_USE_FIPS_ENDPOINT`.
    pub use_fips: bool,
    /// `AWS_USE_DUALSTACK_ENDPOINT`.
    pub use_dualstack: bool,
    /// Extra trusted roots (PEM), from `--ca-bundle` or `AWS_CA_BUNDLE`.
    pub ca_bundle: Option<PathBuf>,
    /// Role to assume with STS, if any.
    pub role_arn: Option<String>,
    /// Session name used when assuming `role_arn`.
    pub role_session_name: Option<String>,
    /// External ID used when assuming `role_arn`.
    pub role_external_id: Option<String>,
}

/// The validated configuration of one daemon run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where lines come from.
    pub input: Input,
    /// Where batches go.
    pub handler: Handler,
    /// Kinesis settings (handler `kinesis` only).
    pub kinesis: Option<KinesisConfig>,
    /// Partition key policy.
    pub partition_key: PartitionKey,
    /// Records per batch.
    pub buffer_queue_limit: usize,
    /// Directory for lines that could not be delivered.
    pub failed_attempts_dir: Option<PathBuf>,
    /// Time after a batch's first record before it is flushed; `None` disables the timer.
    pub flush_interval: Option<Duration>,
    /// Largest record: data bytes plus partition key bytes.
    pub max_record_bytes: usize,
    /// Largest request: the sum of its records' sizes.
    pub max_request_bytes: usize,
    /// With `--aggregate`: the largest aggregated record, partition key included.
    pub aggregate: Option<usize>,
    /// How long a stop may take to deliver what is in memory.
    pub shutdown_timeout: Duration,
    /// Memory for lines read but not accepted yet.
    pub max_buffer_bytes: usize,
    /// Largest size of the failed-attempts directory.
    pub failed_attempts_max_bytes: u64,
    /// Whether every byte read is journaled on disk first (`--durable`).
    pub durable: bool,
    /// How often the journal is forced to the disk; zero: after every write.
    pub fsync_interval: Duration,
    /// How often kept lines are tried again after an error retrying could not fix.
    pub retry_interval: Duration,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// How often the counters are logged and the metrics file written; `None`: never.
    pub stats_interval: Option<Duration>,
    /// Where the counters go in Prometheus text format.
    pub metrics_file: Option<PathBuf>,
    /// Whether debug lines are logged.
    pub debug: bool,
}

/// Parses `args` (without the program name) and the environment seen through `env`.
pub fn parse<I, E>(args: I, env: E) -> Result<Command, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
    E: Fn(&str) -> Option<OsString>,
{
    match parse::command_line(args)? {
        parse::Parsed::Help => Ok(Command::Help),
        parse::Parsed::Version => Ok(Command::Version),
        parse::Parsed::Run(given) => {
            let raw = parse::raw_args(&given, &env)?;
            validate::validate(raw).map(|c| Command::Run(Box::new(c)))
        }
    }
}

/// The error for `value`, given by `option` (or a variable), which is not `expected`.
fn invalid(option: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        option: option.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

/// Reads a boolean the way the Go tool's configuration library did.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err("true or false".into()),
    }
}

/// Reads a duration: a plain number is seconds (`5`, `1.5`); units `ms`, `s`, `m`, `h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "seconds (5, 1.5) or a number with ms, s, m or h (250ms, 1.5s)";
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(EXPECTED.into()),
    };
    let n: f64 = num.parse().map_err(|_| EXPECTED.to_string())?;
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(EXPECTED.into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Reads a size in bytes: `1048576`, `512KiB`, `1MiB`, `1GiB` (also `K`, `KB`, `M`, `MB`, `G`,
/// `GB` as binary units).
pub fn parse_size(s: &str) -> Result<usize, String> {
    const EXPECTED: &str = "a size in bytes, or with KiB, MiB or GiB (512KiB, 1MiB, 1GiB)";
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(EXPECTED.into()),
    };
    let n: usize = num.parse().map_err(|_| EXPECTED.to_string())?;
    n.checked_mul(scale).ok_or_else(|| EXPECTED.to_string())
}

#[cfg(test)]
mod docs_agree;
#[cfg(test)]
mod tests;
