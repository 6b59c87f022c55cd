//! Command line and environment: raw arguments first, then one validated [`Config`].
//!
//! Every option has a long form, most a short form, and an environment variable
//! `FIFO2KINESIS_<OPTION_IN_CAPS_WITH_UNDERSCORES>`; the command line beats the environment,
//! and a blank environment value counts as unset. Options, short letters, variables and
//! defaults are those of the Go fifo2kinesis, so existing service files keep working: `-h NAME`
//! is `--flush-handler NAME`, as there. Only a bare `-h`, with no value after it, prints the
//! help, as `--help` does; a Go service file never has one. Any bad value is a [`ConfigError`] naming the option and what it
//! accepts; the binary turns it into exit status 2.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod endpoint;

use endpoint::checked_endpoint;
pub use endpoint::{default_endpoint, regional_endpoint, service_endpoint};

/// Records per PutRecords request allowed by Kinesis.
pub const MAX_RECORDS_PER_REQUEST: usize = 500;
/// The largest record and request size the Kinesis API accepts (10 MiB).
pub const API_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Length of the random partition key used when none is configured.
pub const RANDOM_KEY_LEN: usize = 12;
/// Longest partition key Kinesis accepts, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// One option as the help text and the environment lookup know it.
struct OptionSpec {
    long: &'static str,
    short: Option<char>,
    value: &'static str,
    default: &'static str,
    help: &'static str,
}

const OPTIONS: &[OptionSpec] = &[
    OptionSpec { long: "fifo-name", short: Some('f'), value: "PATH", default: "(required)", help: "The named pipe to read; created (mode 0600) if missing; '-' reads standard input" },
    OptionSpec { long: "stream-name", short: Some('s'), value: "NAME", default: "(required for kinesis)", help: "The Kinesis stream to publish to" },
    OptionSpec { long: "partition-key", short: Some('p'), value: "KEY", default: "random", help: "The partition key; a random 12-character key per record when empty" },
    OptionSpec { long: "buffer-queue-limit", short: Some('l'), value: "N", default: "500", help: "Records in a batch before it is flushed (1..=500 with kinesis)" },
    OptionSpec { long: "failed-attempts-dir", short: Some('D'), value: "DIR", default: "none", help: "Directory that keeps lines that could not be delivered" },
    OptionSpec { long: "flush-interval", short: Some('i'), value: "DURATION", default: "5", help: "Seconds (or 250ms, 1.5s) after a batch's first line before it is flushed; 0 disables the timer" },
    OptionSpec { long: "flush-handler", short: Some('h'), value: "NAME", default: "kinesis", help: "Where batches go: kinesis, or logger (standard output, no AWS needed)" },
    OptionSpec { long: "region", short: Some('R'), value: "REGION", default: "AWS_REGION, AWS_DEFAULT_REGION, the profile's, the instance's", help: "The AWS region of the stream" },
    OptionSpec { long: "role-arn", short: Some('r'), value: "ARN", default: "none", help: "A role to assume with STS before publishing" },
    OptionSpec { long: "role-session-name", short: Some('S'), value: "NAME", default: "fifo2kinesis-<unix seconds>", help: "The session name used when assuming --role-arn" },
    OptionSpec { long: "role-external-id", short: None, value: "ID", default: "none", help: "The external ID the role's trust policy asks for" },
    OptionSpec { long: "sts-endpoint-url", short: None, value: "URL", default: "AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, or the region's", help: "The STS endpoint used to assume roles" },
    OptionSpec { long: "ca-bundle", short: None, value: "PATH", default: "AWS_CA_BUNDLE", help: "PEM certificates trusted in addition to the built-in roots" },
    OptionSpec { long: "endpoint-url", short: None, value: "URL", default: "AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL, or the region's", help: "The Kinesis endpoint" },
    OptionSpec { long: "max-record-bytes", short: None, value: "BYTES", default: "1MiB", help: "Largest record (line + partition key), up to 10MiB; longer lines are skipped" },
    OptionSpec { long: "max-request-bytes", short: None, value: "BYTES", default: "5MiB", help: "Largest PutRecords request (sum of records), up to 10MiB" },
    OptionSpec { long: "max-buffer-bytes", short: None, value: "BYTES", default: "32MiB", help: "Memory for lines read but not yet accepted; past it, batches go to the failed-attempts directory or reading pauses" },
    OptionSpec { long: "failed-attempts-max-bytes", short: None, value: "BYTES", default: "1GiB", help: "Largest size of the failed-attempts directory; past it, reading pauses" },
    OptionSpec { long: "retry-interval", short: None, value: "DURATION", default: "30s", help: "How often kept lines are tried again after an error retrying could not fix" },
    OptionSpec { long: "request-timeout", short: None, value: "DURATION", default: "30s", help: "How long one PutRecords request may take, answer included" },
    OptionSpec { long: "shutdown-timeout", short: None, value: "DURATION", default: "10s", help: "How long a stop may take to deliver what is in memory" },
    OptionSpec { long: "stats-interval", short: None, value: "DURATION", default: "60s", help: "How often the counters are logged (and the metrics file rewritten); 0 turns it off" },
    OptionSpec { long: "metrics-file", short: None, value: "PATH", default: "none", help: "File rewritten with the counters in Prometheus text format at every stats interval" },
    OptionSpec { long: "debug", short: Some('d'), value: "", default: "false", help: "Show debug log lines" },
];

/// The environment variable that stands for the long option `long`.
pub fn env_name(long: &str) -> String {
    format!(
        "FIFO2KINESIS_{}",
        long.to_ascii_uppercase().replace('-', "_")
    )
}

/// The `--help` text: every option with its variable and default.
pub fn help_text() -> String {
    let mut out = String::from(
        "fifo2kinesis: read lines from a named pipe and publish them to an Amazon Kinesis stream\n\n\
         Usage: fifo2kinesis --fifo-name PATH --stream-name NAME [OPTIONS]\n\n\
         Every option may also be set by its environment variable; the command line wins.\n\n\
         Options:\n",
    );
    for o in OPTIONS {
        let short = o
            .short
            .map(|c| format!("-{c}, "))
            .unwrap_or_else(|| "    ".into());
        let flag = if o.value.is_empty() {
            format!("--{}", o.long)
        } else {
            format!("--{} {}", o.long, o.value)
        };
        out.push_str(&format!(
            "  {short}{flag}\n        {}\n        env: {}   default: {}\n",
            o.help,
            env_name(o.long),
            o.default
        ));
    }
    out.push_str(
        "      --help\n        Print this help and exit; so does -h with no value after it\n  \
         -V, --version\n        Print the version and exit\n",
    );
    out
}

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
        option: &'static str,
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
    /// PutRecords to Kinesis.
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

/// Kinesis settings, present when the handler is `kinesis`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KinesisConfig {
    /// Stream name.
    pub stream_name: String,
    /// AWS region, if given by option or environment (else the profile's or the instance's).
    pub region: Option<String>,
    /// Kinesis endpoint URL given by option or environment.
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
    /// How long a stop may take to deliver what is in memory.
    pub shutdown_timeout: Duration,
    /// Memory for lines read but not accepted yet.
    pub max_buffer_bytes: usize,
    /// Largest size of the failed-attempts directory.
    pub failed_attempts_max_bytes: u64,
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

impl Config {
    /// The longest line that fits in a record next to its partition key.
    pub fn max_line_bytes(&self) -> usize {
        self.max_record_bytes - self.partition_key.len()
    }
}

/// Values as given on the command line, before the environment and validation.
#[derive(Default)]
struct Raw {
    values: Vec<(&'static str, OsString)>,
    debug: Option<OsString>,
}

impl Raw {
    fn set(&mut self, long: &'static str, v: OsString) {
        self.values.retain(|(k, _)| *k != long);
        self.values.push((long, v));
    }
}

fn spec_for_short(c: char) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.short == Some(c))
}

fn spec_for_long(name: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.long == name)
}

/// Parses `args` (without the program name) and the environment seen through `env`.
pub fn parse<I, E>(args: I, env: E) -> Result<Command, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
    E: Fn(&str) -> Option<OsString>,
{
    use lexopt::prelude::*;
    let mut raw = Raw::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        let spec = match arg {
            Short('h') => match flush_handler_after_h(&mut parser)? {
                Some(name) => {
                    raw.set("flush-handler", name);
                    continue;
                }
                None => return Ok(Command::Help),
            },
            Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('d') | Long("debug") => {
                raw.debug = Some(parser.optional_value().unwrap_or_else(|| "true".into()));
                continue;
            }
            Short(c) => spec_for_short(c),
            Long(name) => spec_for_long(name),
            Value(v) => {
                return Err(ConfigError::Usage(format!(
                    "unexpected argument {:?}: options take the form --name value",
                    v.to_string_lossy()
                )))
            }
        };
        let Some(spec) = spec else {
            return Err(arg.unexpected().into());
        };
        let value = parser.value()?;
        raw.set(spec.long, value);
    }
    build(raw, &env).map(|c| Command::Run(Box::new(c)))
}

/// The value of a `-h`, which is `--flush-handler` as in the Go tool: attached (`-hNAME`,
/// `-h=NAME`) or the next argument unless that is an option. `None` (a bare `-h`, last or
/// before another option) asks for the help, as `--help` does.
fn flush_handler_after_h(parser: &mut lexopt::Parser) -> Result<Option<OsString>, ConfigError> {
    if let Some(v) = parser.optional_value() {
        return Ok(Some(v));
    }
    let is_option = |a: &OsStr| a.len() > 1 && a.as_encoded_bytes()[0] == b'-';
    Ok(parser.raw_args()?.next_if(|a| !is_option(a)))
}

/// Looks an option up: command line first, then its environment variable. Blank is unset.
struct Lookup<'a, E> {
    raw: &'a Raw,
    env: &'a E,
}

impl<E: Fn(&str) -> Option<OsString>> Lookup<'_, E> {
    /// The value and the name to blame if it is bad.
    fn get(&self, long: &'static str) -> Option<(String, OsString)> {
        if let Some((_, v)) = self.raw.values.iter().find(|(k, _)| *k == long) {
            return Some((format!("--{long}"), v.clone()));
        }
        let name = env_name(long);
        non_blank((self.env)(&name)).map(|v| (name, v))
    }

    fn string(&self, long: &'static str) -> Result<Option<(String, String)>, ConfigError> {
        match self.get(long) {
            None => Ok(None),
            Some((who, v)) => match v.into_string() {
                Ok(s) => Ok(Some((who, s))),
                Err(v) => Err(invalid(&who, &v.to_string_lossy(), "valid UTF-8")),
            },
        }
    }

    fn parsed<T>(
        &self,
        long: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.string(long)? {
            None => Ok(default),
            Some((who, s)) => parse(s.trim()).map_err(|expected| invalid(&who, &s, &expected)),
        }
    }
}

fn non_blank(v: Option<OsString>) -> Option<OsString> {
    v.filter(|v| !v.to_string_lossy().trim().is_empty())
}

fn invalid(option: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        option: option.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn build<E: Fn(&str) -> Option<OsString>>(raw: Raw, env: &E) -> Result<Config, ConfigError> {
    let look = Lookup { raw: &raw, env };

    let debug = match raw
        .debug
        .clone()
        .map(|v| ("--debug".to_string(), v))
        .or_else(|| {
            let name = env_name("debug");
            non_blank(env(&name)).map(|v| (name, v))
        }) {
        None => false,
        Some((who, v)) => {
            parse_bool(&v.to_string_lossy()).map_err(|e| invalid(&who, &v.to_string_lossy(), &e))?
        }
    };

    let handler = look.parsed("flush-handler", Handler::Kinesis, |s| s.parse())?;

    let input = match look.get("fifo-name") {
        None => {
            return Err(ConfigError::Missing {
                option: "--fifo-name",
                hint: format!("or {}", env_name("fifo-name")),
            })
        }
        Some((_, v)) if v == OsStr::new("-") => Input::Stdin,
        Some((_, v)) => Input::Fifo(PathBuf::from(v)),
    };

    let partition_key = match look.string("partition-key")? {
        None => PartitionKey::Random,
        Some((who, k)) => {
            if k.chars().count() > MAX_PARTITION_KEY_CHARS {
                return Err(invalid(&who, &k, "at most 256 characters"));
            }
            PartitionKey::Fixed(k)
        }
    };

    let buffer_queue_limit = look.parsed("buffer-queue-limit", MAX_RECORDS_PER_REQUEST, |s| {
        let n: usize = s
            .parse()
            .map_err(|_| "a whole number of records, at least 1".to_string())?;
        match handler {
            Handler::Kinesis if !(1..=MAX_RECORDS_PER_REQUEST).contains(&n) => {
                Err("a number from 1 to 500 with the kinesis flush handler".into())
            }
            _ if n == 0 => Err("a whole number of records, at least 1".into()),
            _ => Ok(n),
        }
    })?;

    let failed_attempts_dir = look
        .get("failed-attempts-dir")
        .map(|(_, v)| PathBuf::from(v));

    let flush_interval = look.parsed("flush-interval", Some(Duration::from_secs(5)), |s| {
        parse_duration(s).map(|d| (!d.is_zero()).then_some(d))
    })?;
    let shutdown_timeout =
        look.parsed("shutdown-timeout", Duration::from_secs(10), parse_duration)?;

    let max_record_bytes = look.parsed("max-record-bytes", 1024 * 1024, |s| {
        parse_size(s).and_then(|n| {
            if n <= partition_key.len() || n > API_MAX_BYTES {
                Err(format!(
                    "a size above the partition key's {} bytes and at most 10MiB",
                    partition_key.len()
                ))
            } else {
                Ok(n)
            }
        })
    })?;
    let max_request_bytes = look.parsed("max-request-bytes", 5 * 1024 * 1024, |s| {
        parse_size(s).and_then(|n| {
            if n < max_record_bytes || n > API_MAX_BYTES {
                Err(format!(
                    "a size from --max-record-bytes ({max_record_bytes}) to 10MiB"
                ))
            } else {
                Ok(n)
            }
        })
    })?;

    let max_buffer_bytes = look.parsed("max-buffer-bytes", 32 * 1024 * 1024, |s| {
        parse_size(s).and_then(|n| {
            if n < 2 * max_request_bytes {
                Err(format!(
                    "a size of at least twice --max-request-bytes ({})",
                    2 * max_request_bytes
                ))
            } else {
                Ok(n)
            }
        })
    })?;
    let failed_attempts_max_bytes = look.parsed("failed-attempts-max-bytes", 1 << 30, |s| {
        parse_size(s).and_then(|n| {
            if n == 0 {
                Err("a size above zero".into())
            } else {
                Ok(n as u64)
            }
        })
    })?;
    let retry_interval = look.parsed("retry-interval", Duration::from_secs(30), |s| {
        parse_duration(s).and_then(|d| {
            if d.is_zero() {
                Err("a duration above zero (30s, 500ms)".into())
            } else {
                Ok(d)
            }
        })
    })?;

    let request_timeout = look.parsed("request-timeout", Duration::from_secs(30), |s| {
        parse_duration(s).and_then(|d| {
            if d < Duration::from_millis(100) {
                Err("a duration of at least 100ms (30s, 2s)".into())
            } else {
                Ok(d)
            }
        })
    })?;

    let stats_interval = look.parsed("stats-interval", Some(Duration::from_secs(60)), |s| {
        parse_duration(s).and_then(|d| {
            if d.is_zero() {
                Ok(None)
            } else if d < Duration::from_secs(1) {
                Err("0 (off) or a duration of at least 1s (60s, 5m)".into())
            } else {
                Ok(Some(d))
            }
        })
    })?;
    let metrics_file = match look.get("metrics-file") {
        Some((who, v)) if stats_interval.is_none() => {
            return Err(invalid(
                &who,
                &v.to_string_lossy(),
                "no metrics file while --stats-interval is 0 (it is written at every interval)",
            ))
        }
        Some((_, v)) => Some(PathBuf::from(v)),
        None => None,
    };

    let kinesis = match handler {
        Handler::Logger => None,
        Handler::Kinesis => Some(kinesis_config(&look)?),
    };

    Ok(Config {
        input,
        handler,
        kinesis,
        partition_key,
        buffer_queue_limit,
        failed_attempts_dir,
        flush_interval,
        max_record_bytes,
        max_request_bytes,
        shutdown_timeout,
        max_buffer_bytes,
        failed_attempts_max_bytes,
        retry_interval,
        request_timeout,
        stats_interval,
        metrics_file,
        debug,
    })
}

fn kinesis_config<E: Fn(&str) -> Option<OsString>>(
    look: &Lookup<'_, E>,
) -> Result<KinesisConfig, ConfigError> {
    let stream_name = match look.string("stream-name")? {
        None => {
            return Err(ConfigError::Missing {
                option: "--stream-name",
                hint: format!(
                    "or {}; not needed with --flush-handler logger",
                    env_name("stream-name")
                ),
            })
        }
        Some((who, s)) if !valid_stream_name(&s) => {
            return Err(invalid(
                &who,
                &s,
                "1 to 128 characters of a-z A-Z 0-9 _ . -",
            ))
        }
        Some((_, s)) => s,
    };

    // The region may also come from the profile or instance metadata: resolved at start-up.
    let region = match look.string("region")? {
        Some((who, r)) => Some(checked_region(&who, r)?),
        None => match first_env(look, &["AWS_REGION", "AWS_DEFAULT_REGION"]) {
            Some((name, v)) => Some(checked_region(name, v)?),
            None => None,
        },
    };
    let endpoint_url = endpoint_override(
        look,
        "endpoint-url",
        &["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL"],
    )?;
    let sts_endpoint_url = endpoint_override(
        look,
        "sts-endpoint-url",
        &["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"],
    )?;
    let flag = |name: &'static str| -> Result<bool, ConfigError> {
        match first_env(look, &[name]) {
            None => Ok(false),
            Some((who, v)) => parse_bool(&v).map_err(|e| invalid(who, &v, &e)),
        }
    };
    let use_fips = flag("AWS_USE_FIPS_ENDPOINT")?;
    let use_dualstack = flag("AWS_USE_DUALSTACK_ENDPOINT")?;
    let ca_bundle = match look.get("ca-bundle") {
        Some((_, v)) => Some(PathBuf::from(v)),
        None => first_env(look, &["AWS_CA_BUNDLE"]).map(|(_, v)| PathBuf::from(v)),
    };
    let role_external_id = match look.string("role-external-id")? {
        Some((who, id)) if !(2..=1224).contains(&id.len()) || id.contains(char::is_whitespace) => {
            return Err(invalid(&who, &id, "2 to 1224 characters without spaces"))
        }
        other => other.map(|(_, id)| id),
    };

    let role_arn = match look.string("role-arn")? {
        Some((who, a)) if !a.starts_with("arn:") || a.split(':').count() < 6 => {
            return Err(invalid(
                &who,
                &a,
                "a role ARN like arn:aws:iam::123456789012:role/NAME",
            ))
        }
        other => other.map(|(_, a)| a),
    };
    let role_session_name = match look.string("role-session-name")? {
        Some((who, n)) if !valid_session_name(&n) => {
            return Err(invalid(
                &who,
                &n,
                "2 to 64 characters of letters, digits and _+=,.@-",
            ))
        }
        other => other.map(|(_, n)| n),
    };

    Ok(KinesisConfig {
        stream_name,
        region,
        endpoint_url,
        sts_endpoint_url,
        use_fips,
        use_dualstack,
        ca_bundle,
        role_arn,
        role_session_name,
        role_external_id,
    })
}

/// The first of `names` set in the environment, with its value.
fn first_env<E: Fn(&str) -> Option<OsString>>(
    look: &Lookup<'_, E>,
    names: &[&'static str],
) -> Option<(&'static str, String)> {
    names.iter().find_map(|&name| {
        non_blank((look.env)(name)).map(|v| (name, v.to_string_lossy().trim().to_string()))
    })
}

/// An endpoint URL from the option `long`, else the first of the variables `vars`.
fn endpoint_override<E: Fn(&str) -> Option<OsString>>(
    look: &Lookup<'_, E>,
    long: &'static str,
    vars: &[&'static str],
) -> Result<Option<String>, ConfigError> {
    match look.string(long)? {
        Some((who, u)) => checked_endpoint(&who, &u).map(Some),
        None => match first_env(look, vars) {
            Some((name, v)) => checked_endpoint(name, &v).map(Some),
            None => Ok(None),
        },
    }
}

fn checked_region(who: &str, r: String) -> Result<String, ConfigError> {
    let r = r.trim().to_string();
    let ok = !r.is_empty()
        && r.len() <= 64
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(r)
    } else {
        Err(invalid(who, &r, "a region name like us-east-1"))
    }
}

fn valid_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_session_name(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'=' | b',' | b'.' | b'@' | b'-')
        })
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        match parse(args.iter().map(OsString::from), |k| env.get(k).cloned())? {
            Command::Run(c) => Ok(*c),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    const BASE: &[&str] = &[
        "--fifo-name",
        "/tmp/p",
        "--stream-name",
        "s",
        "--region",
        "us-east-1",
    ];

    #[test]
    fn defaults_match_the_go_tool() {
        let c = run(BASE, &[]).unwrap();
        assert_eq!(c.input, Input::Fifo("/tmp/p".into()));
        assert_eq!(c.handler, Handler::Kinesis);
        assert_eq!(c.buffer_queue_limit, 500);
        assert_eq!(c.flush_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.partition_key, PartitionKey::Random);
        assert_eq!(c.failed_attempts_dir, None);
        assert_eq!(c.max_record_bytes, 1 << 20);
        assert_eq!(c.max_request_bytes, 5 << 20);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.max_buffer_bytes, 32 << 20);
        assert_eq!(c.failed_attempts_max_bytes, 1 << 30);
        assert_eq!(c.retry_interval, Duration::from_secs(30));
        assert_eq!(c.stats_interval, Some(Duration::from_secs(60)));
        assert_eq!(c.metrics_file, None);
        assert!(!c.debug);
        let k = c.kinesis.unwrap();
        assert_eq!(k.endpoint_url, None);
        assert_eq!(k.region.as_deref(), Some("us-east-1"));
        assert_eq!(k.stream_name, "s");
    }

    #[test]
    fn command_line_beats_environment_and_blank_env_is_unset() {
        let env = [
            ("FIFO2KINESIS_FIFO_NAME", "/env/p"),
            ("FIFO2KINESIS_STREAM_NAME", "envstream"),
            ("FIFO2KINESIS_BUFFER_QUEUE_LIMIT", "7"),
            ("FIFO2KINESIS_FLUSH_INTERVAL", "250ms"),
            ("FIFO2KINESIS_PARTITION_KEY", " "),
            ("FIFO2KINESIS_DEBUG", "true"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-west-2"),
        ];
        let c = run(&["--stream-name=cli", "-l", "9"], &env).unwrap();
        assert_eq!(c.input, Input::Fifo("/env/p".into()));
        assert_eq!(c.kinesis.as_ref().unwrap().stream_name, "cli");
        assert_eq!(c.buffer_queue_limit, 9);
        assert_eq!(c.flush_interval, Some(Duration::from_millis(250)));
        assert_eq!(c.partition_key, PartitionKey::Random);
        assert!(c.debug);
        assert_eq!(c.kinesis.unwrap().region.as_deref(), Some("eu-west-1"));
        let c = run(&["-f", "/p", "-s", "x", "--debug=false"], &env).unwrap();
        assert!(!c.debug);
    }

    #[test]
    fn short_options_as_the_go_tool_had_them() {
        let c = run(
            &[
                "-f",
                "/p",
                "-s",
                "st",
                "-p",
                "key",
                "-l",
                "10",
                "-D",
                "/fa",
                "-i",
                "1.5",
                "-R",
                "ap-south-1",
                "-r",
                "arn:aws:iam::1:role/x",
                "-S",
                "sess",
                "-d",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.partition_key, PartitionKey::Fixed("key".into()));
        assert_eq!(c.failed_attempts_dir, Some("/fa".into()));
        assert_eq!(c.flush_interval, Some(Duration::from_millis(1500)));
        assert!(c.debug);
        let k = c.kinesis.unwrap();
        assert_eq!(k.region.as_deref(), Some("ap-south-1"));
        assert_eq!(k.role_arn.as_deref(), Some("arn:aws:iam::1:role/x"));
        assert_eq!(k.role_session_name.as_deref(), Some("sess"));
    }

    #[test]
    fn help_and_version() {
        let none = |_: &str| None;
        assert_eq!(parse(["-h"], none).unwrap(), Command::Help);
        assert_eq!(parse(["--version"], none).unwrap(), Command::Version);
        let help = help_text();
        for o in OPTIONS {
            assert!(help.contains(&format!("--{}", o.long)), "{}", o.long);
            assert!(help.contains(&env_name(o.long)), "{}", o.long);
        }
    }

    #[test]
    fn short_h_with_a_value_is_the_flush_handler_as_in_go_service_files() {
        for form in [
            &["-h", "logger"][..],
            &["-hlogger"][..],
            &["-h=logger"][..],
            &["--flush-handler", "logger"][..],
        ] {
            let mut a = vec!["-f", "/p"];
            a.extend(form);
            assert_eq!(run(&a, &[]).unwrap().handler, Handler::Logger, "{form:?}");
        }
        let mut a = BASE.to_vec();
        a.extend(["-h", "kinesis"]);
        assert_eq!(run(&a, &[]).unwrap().handler, Handler::Kinesis);
        let long = {
            let mut a = BASE.to_vec();
            a.extend(["--flush-handler", "kafka"]);
            err(&a, &[])
        };
        assert!(
            long.starts_with("--flush-handler: invalid value \"kafka\""),
            "{long}"
        );
        for form in [&["-h", "kafka"][..], &["-hkafka"][..], &["-h=kafka"][..]] {
            let mut a = BASE.to_vec();
            a.extend(form);
            assert_eq!(err(&a, &[]), long, "{form:?}");
        }
    }

    #[test]
    fn bare_short_h_prints_the_help() {
        let none = |_: &str| None;
        assert_eq!(parse(["-h"], none).unwrap(), Command::Help);
        assert_eq!(parse(["-f", "/p", "-h"], none).unwrap(), Command::Help);
        assert_eq!(parse(["-h", "-f", "/p"], none).unwrap(), Command::Help);
        assert_eq!(
            parse(["-h", "--fifo-name", "/p"], none).unwrap(),
            Command::Help
        );
        assert_eq!(parse(["--help", "logger"], none).unwrap(), Command::Help);
        assert!(help_text().contains("-h, --flush-handler NAME"));
    }

    #[test]
    fn endpoint_precedence_and_china() {
        let c = run(
            BASE,
            &[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"),
                ("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:2"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.kinesis.unwrap().endpoint_url.as_deref(),
            Some("http://127.0.0.1:2")
        );
        let c = run(BASE, &[("AWS_ENDPOINT_URL", "http://127.0.0.1:1/")]).unwrap();
        assert_eq!(
            c.kinesis.unwrap().endpoint_url.as_deref(),
            Some("http://127.0.0.1:1")
        );
        let mut args = BASE.to_vec();
        args.extend(["--endpoint-url", "http://localhost:3"]);
        let c = run(&args, &[("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:2")]).unwrap();
        assert_eq!(
            c.kinesis.unwrap().endpoint_url.as_deref(),
            Some("http://localhost:3")
        );
        let sts = run(
            BASE,
            &[
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"),
                ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:4"),
            ],
        )
        .unwrap();
        assert_eq!(
            sts.kinesis.unwrap().sts_endpoint_url.as_deref(),
            Some("http://127.0.0.1:4")
        );
    }

    #[test]
    fn service_endpoints_by_region_fips_and_dualstack() {
        assert_eq!(
            default_endpoint("cn-north-1"),
            "https://kinesis.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            service_endpoint("kinesis", "us-east-1", false, false),
            "https://kinesis.us-east-1.amazonaws.com"
        );
        assert_eq!(
            service_endpoint("kinesis", "us-east-1", true, false),
            "https://kinesis-fips.us-east-1.amazonaws.com"
        );
        assert_eq!(
            service_endpoint("kinesis", "us-east-1", false, true),
            "https://kinesis.us-east-1.api.aws"
        );
        assert_eq!(
            service_endpoint("sts", "us-gov-west-1", true, true),
            "https://sts-fips.us-gov-west-1.api.aws"
        );
        assert_eq!(
            service_endpoint("kinesis", "cn-north-1", false, true),
            "https://kinesis.cn-north-1.api.amazonwebservices.com.cn"
        );
        let c = run(
            BASE,
            &[
                ("AWS_USE_FIPS_ENDPOINT", "true"),
                ("AWS_USE_DUALSTACK_ENDPOINT", "false"),
            ],
        )
        .unwrap()
        .kinesis
        .unwrap();
        assert!(c.use_fips && !c.use_dualstack);
        assert!(err(BASE, &[("AWS_USE_FIPS_ENDPOINT", "maybe")]).contains("AWS_USE_FIPS_ENDPOINT"));
    }

    #[test]
    fn logger_needs_no_aws_settings_and_allows_large_batches() {
        let c = run(&["-f", "-", "--flush-handler", "logger", "-l", "5000"], &[]).unwrap();
        assert_eq!(c.input, Input::Stdin);
        assert_eq!(c.kinesis, None);
        assert_eq!(c.buffer_queue_limit, 5000);
    }

    fn err(args: &[&str], env: &[(&str, &str)]) -> String {
        run(args, env).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_option_and_what_is_accepted() {
        let e = err(&["--stream-name", "s", "-R", "us-east-1"], &[]);
        assert!(
            e.contains("--fifo-name") && e.contains("FIFO2KINESIS_FIFO_NAME"),
            "{e}"
        );
        let e = err(&["-f", "/p", "-R", "us-east-1"], &[]);
        assert!(e.contains("--stream-name"), "{e}");
        // Without a region here, start-up looks in the profile and instance metadata.
        assert_eq!(
            run(&["-f", "/p", "-s", "s"], &[])
                .unwrap()
                .kinesis
                .unwrap()
                .region,
            None
        );
        let mut a = BASE.to_vec();
        a.extend(["-l", "501"]);
        assert!(err(&a, &[]).contains(
            "--buffer-queue-limit: invalid value \"501\": expected a number from 1 to 500"
        ));
        let e = err(BASE, &[("FIFO2KINESIS_BUFFER_QUEUE_LIMIT", "0")]);
        assert!(
            e.starts_with("FIFO2KINESIS_BUFFER_QUEUE_LIMIT: invalid value \"0\""),
            "{e}"
        );
        let mut a = BASE.to_vec();
        a.extend(["--flush-handler", "kafka"]);
        assert!(err(&a, &[]).contains("expected kinesis or logger"));
        let mut a = BASE.to_vec();
        a.extend(["--flush-interval", "soon"]);
        assert!(err(&a, &[]).contains("--flush-interval"));
        let mut a = BASE.to_vec();
        a.extend(["--max-record-bytes", "11MiB"]);
        assert!(err(&a, &[]).contains("--max-record-bytes"));
        let mut a = BASE.to_vec();
        a.extend(["--max-request-bytes", "512KiB"]);
        assert!(err(&a, &[]).contains("--max-request-bytes"));
        let mut a = BASE.to_vec();
        a.extend(["--endpoint-url", "kinesis.local"]);
        assert!(err(&a, &[]).contains("--endpoint-url"));
        assert!(err(&["--bogus"], &[]).contains("--bogus"));
        assert!(err(&["stray"], &[]).contains("stray"));
        assert!(err(&["-f"], &[]).contains("-f"));
        let e = err(&["-f", "/p", "-s", "bad name!", "-R", "us-east-1"], &[]);
        assert!(e.contains("--stream-name"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn flush_interval_zero_disables_the_timer() {
        let mut a = BASE.to_vec();
        a.extend(["--flush-interval", "0"]);
        assert_eq!(run(&a, &[]).unwrap().flush_interval, None);
    }

    #[test]
    fn max_line_bytes_leaves_room_for_the_key() {
        let c = run(BASE, &[]).unwrap();
        assert_eq!(c.max_line_bytes(), (1 << 20) - RANDOM_KEY_LEN);
        let mut a = BASE.to_vec();
        a.extend(["-p", "abc"]);
        assert_eq!(run(&a, &[]).unwrap().max_line_bytes(), (1 << 20) - 3);
    }

    #[test]
    fn stats_interval_zero_is_off_and_a_metrics_file_needs_an_interval() {
        let mut a = BASE.to_vec();
        a.extend(["--stats-interval", "5m", "--metrics-file", "/m/f.prom"]);
        let c = run(&a, &[]).unwrap();
        assert_eq!(c.stats_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.metrics_file, Some(PathBuf::from("/m/f.prom")));
        let c = run(BASE, &[("FIFO2KINESIS_STATS_INTERVAL", "0")]).unwrap();
        assert_eq!(c.stats_interval, None);
        let mut a = BASE.to_vec();
        a.extend(["--stats-interval", "500ms"]);
        assert!(err(&a, &[]).contains("--stats-interval"));
        let mut a = BASE.to_vec();
        a.extend(["--stats-interval", "0", "--metrics-file", "/m/f.prom"]);
        let e = err(&a, &[]);
        assert!(
            e.contains("--metrics-file") && e.contains("--stats-interval is 0"),
            "{e}"
        );
    }
}
