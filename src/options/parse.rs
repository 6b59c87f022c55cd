//! Reading the options: a lexopt loop over the command line, then every option's value into a
//! typed field of [`RawArgs`].
//!
//! Precedence, for each option: the command line (the last occurrence wins), else its
//! `FIFO2KINESIS_*` variable, else the AWS variables it falls back to (`--region`:
//! `AWS_REGION`, `AWS_DEFAULT_REGION`), else its default. A blank variable counts as unset; a
//! value on the command line counts as given even when blank. Values are read here one at a
//! time (a number, a duration, a size); checks that involve other options are
//! [`super::validate`]'s. Every error names what gave the bad value: `--name`, or the variable.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use super::defs::{self, OptId, Takes, Unset, COUNT};
use super::{invalid, parse_bool, parse_duration, parse_size, ConfigError, Handler};

/// What the command line asks for, before the environment is looked at.
pub(super) enum Parsed {
    /// Print the help.
    Help,
    /// Print the version.
    Version,
    /// Run with these values.
    Run(Box<CommandLine>),
}

/// The values given on the command line, by option.
pub(super) struct CommandLine {
    values: [Option<OsString>; COUNT],
}

impl CommandLine {
    fn get(&self, id: OptId) -> Option<&OsString> {
        self.values[id as usize].as_ref()
    }
}

/// Reads `args` (without the program name).
pub(super) fn command_line<I>(args: I) -> Result<Parsed, ConfigError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;
    let mut given = CommandLine {
        values: std::array::from_fn(|_| None),
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next()? {
        let opt = match arg {
            Short('h') => match flush_handler_after_h(&mut parser)? {
                Some(name) => {
                    given.values[OptId::FlushHandler as usize] = Some(name);
                    continue;
                }
                None => return Ok(Parsed::Help),
            },
            Short(c) => defs::by_short(c),
            Long(name) => defs::by_long(name),
            Value(v) => {
                return Err(ConfigError::Usage(format!(
                    "unexpected argument {:?}: options take the form --name value",
                    v.to_string_lossy()
                )))
            }
        };
        let Some(opt) = opt else {
            return Err(arg.unexpected().into());
        };
        let value = match opt.takes {
            Takes::Action if opt.id == OptId::Version => return Ok(Parsed::Version),
            Takes::Action => return Ok(Parsed::Help),
            Takes::Switch => parser.optional_value().unwrap_or_else(|| "true".into()),
            Takes::Value(_) => parser.value()?,
        };
        given.values[opt.id as usize] = Some(value);
    }
    Ok(Parsed::Run(Box::new(given)))
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

/// Where a value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// The command line.
    CommandLine,
    /// This environment variable.
    Variable(&'static str),
    /// The option's default.
    Default,
}

/// A value with the option it is for, the text it was read from, and where that came from.
#[derive(Clone, Debug)]
pub(super) struct Given<T> {
    pub value: T,
    /// The text as given, for error messages.
    pub text: String,
    pub id: OptId,
    pub from: Origin,
}

impl<T> Given<T> {
    /// What to blame for the value: `--name`, or the variable that held it.
    pub(super) fn name(&self) -> String {
        match self.from {
            Origin::Variable(var) => var.to_string(),
            Origin::CommandLine | Origin::Default => defs::def(self.id).flag(),
        }
    }

    /// The error for this value, which is not `expected`.
    pub(super) fn invalid(&self, expected: &str) -> ConfigError {
        invalid(&self.name(), &self.text, expected)
    }

    /// The value if `check` accepts it (`Err` says what is expected). A default is taken as
    /// it is: the checks against other options apply to values the user gave.
    pub(super) fn checked(
        self,
        check: impl FnOnce(&T) -> Result<(), String>,
    ) -> Result<T, ConfigError> {
        if self.from == Origin::Default {
            return Ok(self.value);
        }
        match check(&self.value) {
            Ok(()) => Ok(self.value),
            Err(expected) => Err(self.invalid(&expected)),
        }
    }
}

/// Every option's value, typed, as read from the command line, the environment and the
/// defaults; not yet checked against each other.
pub(super) struct RawArgs {
    pub fifo_name: Option<Given<OsString>>,
    pub flush_handler: Given<Handler>,
    pub partition_key: Option<Given<String>>,
    pub buffer_queue_limit: Given<usize>,
    pub flush_interval: Given<Duration>,
    pub max_record_bytes: Given<usize>,
    pub max_request_bytes: Given<usize>,
    pub aggregate: Given<bool>,
    pub aggregate_max_bytes: Given<usize>,
    pub failed_attempts_dir: Option<Given<OsString>>,
    pub failed_attempts_max_bytes: Given<usize>,
    pub durable: Given<bool>,
    pub fsync_interval: Given<Duration>,
    pub max_buffer_bytes: Given<usize>,
    pub retry_interval: Given<Duration>,
    pub request_timeout: Given<Duration>,
    pub shutdown_timeout: Given<Duration>,
    pub stats_interval: Given<Duration>,
    pub metrics_file: Option<Given<OsString>>,
    pub debug: Given<bool>,
    pub kinesis: KinesisArgs,
}

/// The values only the `kinesis` handler reads (and checks).
pub(super) struct KinesisArgs {
    pub stream_name: Option<Given<String>>,
    pub delivery_stream: Option<Given<String>>,
    pub region: Option<Given<String>>,
    pub endpoint_url: Option<Given<String>>,
    pub role_arn: Option<Given<String>>,
    pub role_session_name: Option<Given<String>>,
    pub role_external_id: Option<Given<String>>,
    pub sts_endpoint_url: Option<Given<String>>,
    pub ca_bundle: Option<Given<OsString>>,
    /// `AWS_USE_FIPS_ENDPOINT` (no option), with its name.
    pub use_fips: Option<(&'static str, String)>,
    /// `AWS_USE_DUALSTACK_ENDPOINT` (no option), with its name.
    pub use_dualstack: Option<(&'static str, String)>,
}

/// Reads every option's value: the command line's, else the environment's (seen through
/// `env`), else the default.
pub(super) fn raw_args<E>(cli: &CommandLine, env: &E) -> Result<RawArgs, ConfigError>
where
    E: Fn(&str) -> Option<OsString>,
{
    let read = Reader { cli, env };
    let delivery_stream = read.string(OptId::DeliveryStream)?;
    // Firehose's own endpoint variable stands for Kinesis's.
    let endpoint_url = match delivery_stream {
        Some(_) => read.string_or_aws(
            OptId::EndpointUrl,
            &["AWS_ENDPOINT_URL_FIREHOSE", "AWS_ENDPOINT_URL"],
        )?,
        None => read.string(OptId::EndpointUrl)?,
    };
    Ok(RawArgs {
        fifo_name: read.os(OptId::FifoName),
        flush_handler: read.parsed(OptId::FlushHandler, str::parse)?,
        partition_key: read.string(OptId::PartitionKey)?,
        buffer_queue_limit: read.parsed(OptId::BufferQueueLimit, parse_count)?,
        flush_interval: read.parsed(OptId::FlushInterval, parse_duration)?,
        max_record_bytes: read.parsed(OptId::MaxRecordBytes, parse_size)?,
        max_request_bytes: read.parsed(OptId::MaxRequestBytes, parse_size)?,
        aggregate: read.parsed(OptId::Aggregate, parse_bool)?,
        aggregate_max_bytes: read.parsed(OptId::AggregateMaxBytes, parse_size)?,
        failed_attempts_dir: read.os(OptId::FailedAttemptsDir),
        failed_attempts_max_bytes: read.parsed(OptId::FailedAttemptsMaxBytes, parse_size)?,
        durable: read.parsed(OptId::Durable, parse_bool)?,
        fsync_interval: read.parsed(OptId::FsyncInterval, parse_duration)?,
        max_buffer_bytes: read.parsed(OptId::MaxBufferBytes, parse_size)?,
        retry_interval: read.parsed(OptId::RetryInterval, parse_duration)?,
        request_timeout: read.parsed(OptId::RequestTimeout, parse_duration)?,
        shutdown_timeout: read.parsed(OptId::ShutdownTimeout, parse_duration)?,
        stats_interval: read.parsed(OptId::StatsInterval, parse_duration)?,
        metrics_file: read.os(OptId::MetricsFile),
        debug: read.parsed(OptId::Debug, parse_bool)?,
        kinesis: KinesisArgs {
            stream_name: read.string(OptId::StreamName)?,
            delivery_stream,
            region: read.string(OptId::Region)?,
            endpoint_url,
            role_arn: read.string(OptId::RoleArn)?,
            role_session_name: read.string(OptId::RoleSessionName)?,
            role_external_id: read.string(OptId::RoleExternalId)?,
            sts_endpoint_url: read.string(OptId::StsEndpointUrl)?,
            ca_bundle: read.os(OptId::CaBundle),
            use_fips: read.aws_var("AWS_USE_FIPS_ENDPOINT"),
            use_dualstack: read.aws_var("AWS_USE_DUALSTACK_ENDPOINT"),
        },
    })
}

/// A count of records: a whole number (its range depends on the handler: checked later).
fn parse_count(s: &str) -> Result<usize, String> {
    s.parse()
        .map_err(|_| "a whole number of records, at least 1".to_string())
}

/// Looks options up in the command line, then the environment.
struct Reader<'a, E> {
    cli: &'a CommandLine,
    env: &'a E,
}

impl<E: Fn(&str) -> Option<OsString>> Reader<'_, E> {
    /// The value of `id` as given, if it is, and where it came from.
    fn given(&self, id: OptId) -> Option<(OsString, Origin)> {
        self.given_or_aws(id, defs::def(id).aws_vars)
    }

    /// The value of `id` as given, falling back to `aws_vars` instead of its own.
    fn given_or_aws(&self, id: OptId, aws_vars: &[&'static str]) -> Option<(OsString, Origin)> {
        if let Some(v) = self.cli.get(id) {
            return Some((v.clone(), Origin::CommandLine));
        }
        let opt = defs::def(id);
        if let Some(var) = opt.var {
            if let Some(v) = self.var(var) {
                return Some((v, Origin::Variable(var)));
            }
        }
        // The AWS tools' own variables, read as they read them: trimmed.
        aws_vars.iter().find_map(|&var| {
            let v = self.var(var)?;
            Some((trimmed(&v).into(), Origin::Variable(var)))
        })
    }

    /// A variable's value; blank is unset.
    fn var(&self, name: &str) -> Option<OsString> {
        (self.env)(name).filter(|v| !trimmed(v).is_empty())
    }

    /// A path or other value that need not be UTF-8.
    fn os(&self, id: OptId) -> Option<Given<OsString>> {
        self.given(id).map(|(value, from)| Given {
            text: value.to_string_lossy().into_owned(),
            value,
            id,
            from,
        })
    }

    /// A text value, as given (not trimmed).
    fn string(&self, id: OptId) -> Result<Option<Given<String>>, ConfigError> {
        self.string_or_aws(id, defs::def(id).aws_vars)
    }

    /// A text value, as given, falling back to `aws_vars` instead of the option's own.
    fn string_or_aws(
        &self,
        id: OptId,
        aws_vars: &[&'static str],
    ) -> Result<Option<Given<String>>, ConfigError> {
        let given = self.given_or_aws(id, aws_vars);
        let Some(g) = given.map(|(value, from)| Given {
            text: value.to_string_lossy().into_owned(),
            value,
            id,
            from,
        }) else {
            return Ok(None);
        };
        match g.value.clone().into_string() {
            Ok(value) => Ok(Some(Given {
                value,
                text: g.text,
                id,
                from: g.from,
            })),
            Err(_) => Err(g.invalid("valid UTF-8")),
        }
    }

    /// A value read by `parse` (trimmed first), or the default read the same way.
    fn parsed<T>(
        &self,
        id: OptId,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Given<T>, ConfigError> {
        let given = match self.string(id)? {
            Some(g) => g,
            None => Given {
                value: default_of(id).to_string(),
                text: default_of(id).to_string(),
                id,
                from: Origin::Default,
            },
        };
        match parse(given.value.trim()) {
            Ok(value) => Ok(Given {
                value,
                text: given.text,
                id,
                from: given.from,
            }),
            Err(expected) => Err(given.invalid(&expected)),
        }
    }

    /// An AWS variable that is no option, trimmed, if set.
    fn aws_var(&self, name: &'static str) -> Option<(&'static str, String)> {
        self.var(name).map(|v| (name, trimmed(&v).to_string()))
    }
}

/// The default value of an option that has one.
fn default_of(id: OptId) -> &'static str {
    match defs::def(id).unset {
        Unset::Value(v) => v,
        // A definition that says otherwise is a bug the defaults test finds.
        Unset::Absent(_) => panic!("--{} has no default value", defs::def(id).long),
    }
}

fn trimmed(v: &OsStr) -> String {
    v.to_string_lossy().trim().to_string()
}
