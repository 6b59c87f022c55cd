//! Every option, defined once: its names, its variable, its default and its `--help` line.
//!
//! The command line parser, the environment lookup, the defaults, `--help` and the man page
//! all read [`OPTIONS`]; no option is defined anywhere else. The table is in the order of
//! `--help` and the man page, grouped by [`Category`]; an option's [`OptId`] is its index.
//! The man page's paragraph for each is in [`super::docs`], out of the daemon's binary. The
//! texts are plain ASCII prose; `--name` in them is set in bold in the man page.

/// Which option: an index into [`OPTIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OptId {
    FifoName,
    FlushHandler,
    StreamName,
    DeliveryStream,
    PartitionKey,
    BufferQueueLimit,
    FlushInterval,
    MaxRecordBytes,
    MaxRequestBytes,
    Aggregate,
    AggregateMaxBytes,
    FailedAttemptsDir,
    FailedAttemptsMaxBytes,
    Durable,
    FsyncInterval,
    MaxBufferBytes,
    RetryInterval,
    RequestTimeout,
    ShutdownTimeout,
    Region,
    EndpointUrl,
    RoleArn,
    RoleSessionName,
    RoleExternalId,
    StsEndpointUrl,
    CaBundle,
    StatsInterval,
    MetricsFile,
    Debug,
    Help,
    Version,
}

/// How many options there are.
pub(super) const COUNT: usize = OPTIONS.len();

/// The heading an option is listed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Category {
    Input,
    Batches,
    Failures,
    Aws,
    Reporting,
    Other,
}

impl Category {
    /// Every category, in the order of the documentation.
    pub(super) const ALL: [Category; 6] = [
        Category::Input,
        Category::Batches,
        Category::Failures,
        Category::Aws,
        Category::Reporting,
        Category::Other,
    ];

    /// The heading.
    pub(super) fn title(self) -> &'static str {
        match self {
            Category::Input => "Input and output",
            Category::Batches => "Batches",
            Category::Failures => "Failures, memory and stopping",
            Category::Aws => "AWS",
            Category::Reporting => "Logging and metrics",
            Category::Other => "Other",
        }
    }
}

/// What an option takes on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Takes {
    /// A value, shown as this name: `--name VALUE`, `--name=VALUE`, `-xVALUE`.
    Value(&'static str),
    /// Nothing (true), or a boolean attached: `--debug=false`.
    Switch,
    /// Nothing: the option does something instead of running (help, version); no variable.
    Action,
}

/// What an option is when neither the command line nor the environment gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Unset {
    /// This value, read exactly as a given one would be.
    Value(&'static str),
    /// No value; the words say what happens instead.
    Absent(&'static str),
}

/// One option.
#[derive(Debug)]
pub(super) struct Opt {
    pub id: OptId,
    pub long: &'static str,
    pub short: Option<char>,
    pub takes: Takes,
    /// `FIFO2KINESIS_<LONG>`; `None` for actions.
    pub var: Option<&'static str>,
    /// Variables of the AWS tools read, in order, after `var` and before the default.
    pub aws_vars: &'static [&'static str],
    pub unset: Unset,
    pub category: Category,
    /// One line for `--help`. The man page's paragraph is [`super::docs::doc`]'s.
    pub help: &'static str,
}

impl Opt {
    /// `--long`, as errors name it.
    pub(super) fn flag(&self) -> String {
        format!("--{}", self.long)
    }

    /// The default as the documentation shows it: the AWS variables looked at, then the
    /// value or what happens without one. Empty for actions.
    pub(super) fn default_text(&self) -> String {
        let last = match self.unset {
            Unset::Value(v) | Unset::Absent(v) => v,
        };
        let mut parts: Vec<&str> = self.aws_vars.to_vec();
        parts.push(last);
        parts.retain(|p| !p.is_empty());
        parts.join(", then ")
    }
}

/// The option with this long name.
pub(super) fn by_long(name: &str) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.long == name)
}

/// The option with this short letter.
pub(super) fn by_short(c: char) -> Option<&'static Opt> {
    OPTIONS.iter().find(|o| o.short == Some(c))
}

/// The definition of `id`.
pub(super) fn def(id: OptId) -> &'static Opt {
    &OPTIONS[id as usize]
}

/// Every option, in the documentation's order; `OPTIONS[id as usize].id == id`.
pub(super) const OPTIONS: &[Opt] = &[
    Opt {
        id: OptId::FifoName,
        long: "fifo-name",
        short: Some('f'),
        takes: Takes::Value("PATH"),
        var: Some("FIFO2KINESIS_FIFO_NAME"),
        aws_vars: &[],
        unset: Unset::Absent("required"),
        category: Category::Input,
        help: "The named pipe to read; created (mode 0600) if missing; '-' reads standard input",
    },
    Opt {
        id: OptId::FlushHandler,
        long: "flush-handler",
        short: Some('h'),
        takes: Takes::Value("NAME"),
        var: Some("FIFO2KINESIS_FLUSH_HANDLER"),
        aws_vars: &[],
        unset: Unset::Value("kinesis"),
        category: Category::Input,
        help: "Where batches go: kinesis, or logger (standard output, no AWS needed)",
    },
    Opt {
        id: OptId::StreamName,
        long: "stream-name",
        short: Some('s'),
        takes: Takes::Value("NAME"),
        var: Some("FIFO2KINESIS_STREAM_NAME"),
        aws_vars: &[],
        unset: Unset::Absent("required with kinesis, unless --delivery-stream"),
        category: Category::Input,
        help: "The Kinesis stream to publish to",
    },
    Opt {
        id: OptId::DeliveryStream,
        long: "delivery-stream",
        short: None,
        takes: Takes::Value("NAME"),
        var: Some("FIFO2KINESIS_DELIVERY_STREAM"),
        aws_vars: &[],
        unset: Unset::Absent("none"),
        category: Category::Input,
        help: "A Firehose delivery stream to publish to instead of --stream-name",
    },
    Opt {
        id: OptId::PartitionKey,
        long: "partition-key",
        short: Some('p'),
        takes: Takes::Value("KEY"),
        var: Some("FIFO2KINESIS_PARTITION_KEY"),
        aws_vars: &[],
        unset: Unset::Absent("random"),
        category: Category::Input,
        help: "The partition key of every record; unset or empty, a random 12-character key each",
    },
    Opt {
        id: OptId::BufferQueueLimit,
        long: "buffer-queue-limit",
        short: Some('l'),
        takes: Takes::Value("N"),
        var: Some("FIFO2KINESIS_BUFFER_QUEUE_LIMIT"),
        aws_vars: &[],
        unset: Unset::Value("500"),
        category: Category::Batches,
        help: "Records in a batch before it is flushed (1 to 500 with kinesis)",
    },
    Opt {
        id: OptId::FlushInterval,
        long: "flush-interval",
        short: Some('i'),
        takes: Takes::Value("DURATION"),
        var: Some("FIFO2KINESIS_FLUSH_INTERVAL"),
        aws_vars: &[],
        unset: Unset::Value("5"),
        category: Category::Batches,
        help: "Time after a batch's first line before it is flushed; 0 disables the timer",
    },
    Opt {
        id: OptId::MaxRecordBytes,
        long: "max-record-bytes",
        short: None,
        takes: Takes::Value("BYTES"),
        var: Some("FIFO2KINESIS_MAX_RECORD_BYTES"),
        aws_vars: &[],
        unset: Unset::Value("1MiB"),
        category: Category::Batches,
        help: "Largest record (line plus partition key), up to 10MiB (1000KiB, the default, with \
               --delivery-stream); longer lines are skipped",
    },
    Opt {
        id: OptId::MaxRequestBytes,
        long: "max-request-bytes",
        short: None,
        takes: Takes::Value("BYTES"),
        var: Some("FIFO2KINESIS_MAX_REQUEST_BYTES"),
        aws_vars: &[],
        unset: Unset::Value("5MiB"),
        category: Category::Batches,
        help: "Largest request (sum of its records), up to 10MiB (4MiB with --delivery-stream)",
    },
    Opt {
        id: OptId::Aggregate,
        long: "aggregate",
        short: None,
        takes: Takes::Switch,
        var: Some("FIFO2KINESIS_AGGREGATE"),
        aws_vars: &[],
        unset: Unset::Value("false"),
        category: Category::Batches,
        help: "Pack many lines into each record (Kinesis: KPL aggregation, consumers must \
               deaggregate; Firehose: whole lines joined)",
    },
    Opt {
        id: OptId::AggregateMaxBytes,
        long: "aggregate-max-bytes",
        short: None,
        takes: Takes::Value("BYTES"),
        var: Some("FIFO2KINESIS_AGGREGATE_MAX_BYTES"),
        aws_vars: &[],
        unset: Unset::Value("50KiB"),
        category: Category::Batches,
        help: "With --aggregate, largest aggregated record (with its partition key; \
               --max-record-bytes by default with --delivery-stream)",
    },
    Opt {
        id: OptId::FailedAttemptsDir,
        long: "failed-attempts-dir",
        short: Some('D'),
        takes: Takes::Value("DIR"),
        var: Some("FIFO2KINESIS_FAILED_ATTEMPTS_DIR"),
        aws_vars: &[],
        unset: Unset::Absent("none"),
        category: Category::Failures,
        help: "Directory that keeps lines that could not be delivered",
    },
    Opt {
        id: OptId::FailedAttemptsMaxBytes,
        long: "failed-attempts-max-bytes",
        short: None,
        takes: Takes::Value("BYTES"),
        var: Some("FIFO2KINESIS_FAILED_ATTEMPTS_MAX_BYTES"),
        aws_vars: &[],
        unset: Unset::Value("1GiB"),
        category: Category::Failures,
        help: "Largest size of the failed-attempts directory; past it, reading pauses",
    },
    Opt {
        id: OptId::Durable,
        long: "durable",
        short: None,
        takes: Takes::Switch,
        var: Some("FIFO2KINESIS_DURABLE"),
        aws_vars: &[],
        unset: Unset::Value("false"),
        category: Category::Failures,
        help: "Journal every byte read on disk first: a crash loses nothing (needs \
               --failed-attempts-dir)",
    },
    Opt {
        id: OptId::FsyncInterval,
        long: "fsync-interval",
        short: None,
        takes: Takes::Value("DURATION"),
        var: Some("FIFO2KINESIS_FSYNC_INTERVAL"),
        aws_vars: &[],
        unset: Unset::Value("1s"),
        category: Category::Failures,
        help: "With --durable, how often the journal is flushed to the disk (0: after every \
               write)",
    },
    Opt {
        id: OptId::MaxBufferBytes,
        long: "max-buffer-bytes",
        short: None,
        takes: Takes::Value("BYTES"),
        var: Some("FIFO2KINESIS_MAX_BUFFER_BYTES"),
        aws_vars: &[],
        unset: Unset::Value("32MiB"),
        category: Category::Failures,
        help: "Memory for lines read but not yet accepted (at least twice --max-request-bytes)",
    },
    Opt {
        id: OptId::RetryInterval,
        long: "retry-interval",
        short: None,
        takes: Takes::Value("DURATION"),
        var: Some("FIFO2KINESIS_RETRY_INTERVAL"),
        aws_vars: &[],
        unset: Unset::Value("30s"),
        category: Category::Failures,
        help: "How often kept lines are tried again after an error retrying could not fix",
    },
    Opt {
        id: OptId::RequestTimeout,
        long: "request-timeout",
        short: None,
        takes: Takes::Value("DURATION"),
        var: Some("FIFO2KINESIS_REQUEST_TIMEOUT"),
        aws_vars: &[],
        unset: Unset::Value("30s"),
        category: Category::Failures,
        help: "How long one request may take, answer included (at least 100ms)",
    },
    Opt {
        id: OptId::ShutdownTimeout,
        long: "shutdown-timeout",
        short: None,
        takes: Takes::Value("DURATION"),
        var: Some("FIFO2KINESIS_SHUTDOWN_TIMEOUT"),
        aws_vars: &[],
        unset: Unset::Value("10s"),
        category: Category::Failures,
        help: "How long a stop may take to deliver what is in memory",
    },
    Opt {
        id: OptId::Region,
        long: "region",
        short: Some('R'),
        takes: Takes::Value("REGION"),
        var: Some("FIFO2KINESIS_REGION"),
        aws_vars: &["AWS_REGION", "AWS_DEFAULT_REGION"],
        unset: Unset::Absent("the profile's, then the instance's"),
        category: Category::Aws,
        help: "The AWS region of the stream",
    },
    Opt {
        id: OptId::EndpointUrl,
        long: "endpoint-url",
        short: None,
        takes: Takes::Value("URL"),
        var: Some("FIFO2KINESIS_ENDPOINT_URL"),
        aws_vars: &["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL"],
        unset: Unset::Absent("the region's"),
        category: Category::Aws,
        help: "The Kinesis (or Firehose) endpoint",
    },
    Opt {
        id: OptId::RoleArn,
        long: "role-arn",
        short: Some('r'),
        takes: Takes::Value("ARN"),
        var: Some("FIFO2KINESIS_ROLE_ARN"),
        aws_vars: &[],
        unset: Unset::Absent("none"),
        category: Category::Aws,
        help: "A role to assume with STS before publishing",
    },
    Opt {
        id: OptId::RoleSessionName,
        long: "role-session-name",
        short: Some('S'),
        takes: Takes::Value("NAME"),
        var: Some("FIFO2KINESIS_ROLE_SESSION_NAME"),
        aws_vars: &[],
        unset: Unset::Absent("fifo2kinesis-<unix seconds>"),
        category: Category::Aws,
        help: "The session name used when assuming --role-arn",
    },
    Opt {
        id: OptId::RoleExternalId,
        long: "role-external-id",
        short: None,
        takes: Takes::Value("ID"),
        var: Some("FIFO2KINESIS_ROLE_EXTERNAL_ID"),
        aws_vars: &[],
        unset: Unset::Absent("none"),
        category: Category::Aws,
        help: "The external ID the role's trust policy asks for",
    },
    Opt {
        id: OptId::StsEndpointUrl,
        long: "sts-endpoint-url",
        short: None,
        takes: Takes::Value("URL"),
        var: Some("FIFO2KINESIS_STS_ENDPOINT_URL"),
        aws_vars: &["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"],
        unset: Unset::Absent("the region's"),
        category: Category::Aws,
        help: "The STS endpoint used to assume roles",
    },
    Opt {
        id: OptId::CaBundle,
        long: "ca-bundle",
        short: None,
        takes: Takes::Value("PATH"),
        var: Some("FIFO2KINESIS_CA_BUNDLE"),
        aws_vars: &["AWS_CA_BUNDLE"],
        unset: Unset::Absent("none"),
        category: Category::Aws,
        help: "PEM certificates trusted in addition to the built-in roots",
    },
    Opt {
        id: OptId::StatsInterval,
        long: "stats-interval",
        short: None,
        takes: Takes::Value("DURATION"),
        var: Some("FIFO2KINESIS_STATS_INTERVAL"),
        aws_vars: &[],
        unset: Unset::Value("60s"),
        category: Category::Reporting,
        help: "How often the counters are logged and the metrics file written; 0: not on a timer",
    },
    Opt {
        id: OptId::MetricsFile,
        long: "metrics-file",
        short: None,
        takes: Takes::Value("PATH"),
        var: Some("FIFO2KINESIS_METRICS_FILE"),
        aws_vars: &[],
        unset: Unset::Absent("none"),
        category: Category::Reporting,
        help: "File of the counters in Prometheus text format, written at start, every \
               --stats-interval (if not 0), on SIGUSR1 and at the stop",
    },
    Opt {
        id: OptId::Debug,
        long: "debug",
        short: Some('d'),
        takes: Takes::Switch,
        var: Some("FIFO2KINESIS_DEBUG"),
        aws_vars: &[],
        unset: Unset::Value("false"),
        category: Category::Reporting,
        help: "Show debug log lines",
    },
    Opt {
        id: OptId::Help,
        long: "help",
        short: None,
        takes: Takes::Action,
        var: None,
        aws_vars: &[],
        unset: Unset::Absent(""),
        category: Category::Other,
        help: "Print this help and exit; so does -h with no value after it",
    },
    Opt {
        id: OptId::Version,
        long: "version",
        short: Some('V'),
        takes: Takes::Action,
        var: None,
        aws_vars: &[],
        unset: Unset::Absent(""),
        category: Category::Other,
        help: "Print the version and exit",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_index_the_table_and_names_are_unique() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert_eq!(o.id as usize, i, "--{} is out of place", o.long);
            assert_eq!(by_long(o.long).map(|d| d.id), Some(o.id), "--{}", o.long);
            if let Some(c) = o.short {
                assert_eq!(by_short(c).map(|d| d.id), Some(o.id), "-{c}");
            }
        }
    }

    #[test]
    fn each_variable_is_the_long_name_in_capitals() {
        for o in OPTIONS {
            let want = (o.takes != Takes::Action)
                .then(|| format!("FIFO2KINESIS_{}", o.long.to_uppercase().replace('-', "_")));
            assert_eq!(o.var.map(String::from), want, "--{}", o.long);
        }
    }

    #[test]
    fn categories_are_contiguous_and_in_order() {
        let order: Vec<Category> = OPTIONS.iter().map(|o| o.category).collect();
        let mut sorted = order.clone();
        sorted.sort_by_key(|c| Category::ALL.iter().position(|a| a == c));
        assert_eq!(order, sorted);
    }

    #[test]
    fn texts_are_plain_ascii_on_one_line() {
        for o in OPTIONS {
            for text in [o.help, super::super::docs::doc(o.id), &o.default_text()] {
                assert!(
                    text.is_ascii() && !text.contains('\n') && !text.contains("  "),
                    "--{}: {text:?}",
                    o.long
                );
            }
        }
    }

    #[test]
    fn defaults_show_the_aws_variables_first() {
        assert_eq!(
            def(OptId::Region).default_text(),
            "AWS_REGION, then AWS_DEFAULT_REGION, then the profile's, then the instance's"
        );
        assert_eq!(
            def(OptId::CaBundle).default_text(),
            "AWS_CA_BUNDLE, then none"
        );
        assert_eq!(def(OptId::FlushInterval).default_text(), "5");
        assert_eq!(def(OptId::Help).default_text(), "");
    }
}
