//! The man page's paragraph for each option. They are kept apart from
//! [`super::defs::OPTIONS`] so that only the man page's generator and the tests link them: the
//! daemon's static binary has a size budget, and `--help` shows the one-line texts. The
//! texts are plain ASCII prose; `--name` in them is set in bold in the man page.

use super::defs::OptId;

/// The man page's paragraph for option `id`.
pub(super) fn doc(id: OptId) -> &'static str {
    match id {
        OptId::FifoName => {
            "The named pipe to read. It is created with mode 0600 if missing; a path that is \
              not a FIFO is refused. When the last writer closes it, it is opened again, and \
              the path is checked every second, so a FIFO that was removed or replaced is read \
              anew. The PATH '-' reads standard input until it ends, then stops. Only one \
              fifo2kinesis reads a FIFO: it holds a lock on PATH.lock, and a second one exits \
              with status 2 naming the holder."
        }
        OptId::FlushHandler => {
            "Where batches go: kinesis publishes them with PutRecords (PutRecordBatch with \
              --delivery-stream); logger prints each \
              record on standard output, one per line, and needs no AWS settings. As in the Go \
              tool, -h NAME (also -hNAME, -h=NAME) is --flush-handler NAME; only a bare -h, \
              the last argument or one followed by another option, prints the help."
        }
        OptId::StreamName => {
            "The Kinesis stream to publish to: 1 to 128 letters, digits, _ . and -. The \
              kinesis handler takes it or --delivery-stream, not both."
        }
        OptId::DeliveryStream => {
            "An Amazon Data Firehose delivery stream (Direct PUT) to publish to with \
              PutRecordBatch, instead of a Kinesis stream: 1 to 64 letters, digits, _ . and -. \
              Each record ends in its line's newline, so the lines arrive one per line in S3 \
              and the other destinations. Records have no partition key; requests take 4MiB \
              and records 1000KiB, the defaults of --max-request-bytes and --max-record-bytes \
              with it."
        }
        OptId::PartitionKey => {
            "The partition key of every record, at most 256 characters; it counts against \
              --max-record-bytes. Unset or empty, each record gets a random 12-character \
              alphanumeric key, which spreads the records over the stream's shards. Firehose \
              records have none: it cannot be set with --delivery-stream."
        }
        OptId::BufferQueueLimit => {
            "Records in a batch before it is flushed: 1 to 500 with the kinesis handler \
              (the most one PutRecords or PutRecordBatch request takes), any number from 1 \
              with logger."
        }
        OptId::FlushInterval => {
            "How long after its first line a batch is flushed, even if nothing else is \
              written. 0 disables the timer: a batch then waits until it is full. A plain \
              number is seconds, as in the Go tool."
        }
        OptId::MaxRecordBytes => {
            "The largest record, its line and partition key together, up to 10MiB (streams \
              take 1MiB records unless told otherwise); with --aggregate, the aggregate's \
              framing too. With --delivery-stream, the line and its newline, up to (and by \
              default) 1000KiB. A longer line is counted, logged and kept in the oversized/ \
              folder of --failed-attempts-dir, or dropped without one."
        }
        OptId::MaxRequestBytes => {
            "The largest PutRecords request, the sum of its records' sizes: from \
              --max-record-bytes to 10MiB; with --delivery-stream, the largest PutRecordBatch, \
              up to (and by default) 4MiB. A batch is flushed before it would grow past it."
        }
        OptId::Aggregate => {
            "Lines are packed into KPL aggregated records, as the Kinesis Producer Library \
              makes them: hundreds of short lines in one record, up to --aggregate-max-bytes, \
              so a stream takes far fewer records and PUT payload units for the same lines. \
              Every line of a record shares its partition key (--partition-key, or a random \
              key per record), so each reaches its shard's consumers. Consumers must \
              deaggregate: the KCL, AWS Lambda with the aws-kinesis-agg libraries and Flink's \
              Kinesis connector do; others see each record as binary data. With \
              --delivery-stream, a record instead joins whole lines, each with its newline, \
              which Firehose writes out as they are: fewer records billed, the same lines at \
              the other end. Lines are still kept one by one in --failed-attempts-dir and the \
              journal. The logger handler prints lines as without it."
        }
        OptId::AggregateMaxBytes => {
            "With --aggregate, the largest aggregated record, its partition key included: \
              from 1KiB to --max-record-bytes (the default is lowered to it). The default, \
              the KPL's, is two PUT payload units; smaller records spread a request over \
              more shards. With --delivery-stream the default is --max-record-bytes, as \
              Firehose bills each record rounded up to 5KB. A line too long to share a record \
              goes in one of its own, up to --max-record-bytes."
        }
        OptId::FailedAttemptsDir => {
            "Where lines that cannot be delivered are kept (created with mode 0700 if \
              missing): batches Kinesis refuses for good, batches that do not fit in \
              --max-buffer-bytes, what is still unsent at the end of --shutdown-timeout, and \
              lines too long for a record. Kept files are sent again, oldest first, at start, \
              whenever Kinesis accepts a request again and every --retry-interval. Without \
              it, such lines are lost, counted, and the exit status is 1. Only one \
              fifo2kinesis uses a directory: it holds a lock on DIR/.lock."
        }
        OptId::FailedAttemptsMaxBytes => {
            "The largest size of --failed-attempts-dir. When it is full, nothing more is \
              written to it: reading pauses once memory is full too, and writers block. Kept \
              data is never deleted to make room."
        }
        OptId::Durable => {
            "Bytes leave the FIFO only into an append-only journal in \
              --failed-attempts-dir/journal (moved by splice(2), inside the kernel), and \
              batches are made from the journal; a journal segment is removed once every \
              line in it was accepted. After a crash, a kill or a power cut, the next run \
              delivers what the journal holds first (a line the crash cut is completed from \
              it), resending at most what was in flight; it never loses or splits a line that \
              reached the journal. The journal counts against --failed-attempts-max-bytes: \
              when it is full, or the disk is, reading pauses and writers block until there \
              is room again. Memory stays within --max-buffer-bytes however large the journal \
              grows. Needs --failed-attempts-dir, and --failed-attempts-max-bytes of at \
              least twice --max-request-bytes."
        }
        OptId::FsyncInterval => {
            "With --durable, how often the journal is forced to the disk (fdatasync): a \
              power cut loses at most the lines read in this interval. 0 forces it after \
              every write, at a cost in throughput. Without --durable it has no effect."
        }
        OptId::MaxBufferBytes => {
            "Memory for lines read but not yet accepted by Kinesis, at least twice \
              --max-request-bytes. When it is reached, the oldest waiting batches go to \
              --failed-attempts-dir; without it, or when the directory is full, reading \
              pauses and writers block until memory is freed."
        }
        OptId::RetryInterval => {
            "How often kept lines are tried again after an error that retrying could not \
              fix (no such stream, access denied), and how often a batch the failed-attempts \
              directory would not take is offered to it again."
        }
        OptId::RequestTimeout => {
            "How long one PutRecords (or PutRecordBatch) request may take, its answer \
              included, at least 100ms. \
              A request that takes longer is retried."
        }
        OptId::ShutdownTimeout => {
            "How long a stop may take to deliver what is in memory. What is still unsent \
              then goes to --failed-attempts-dir, or is lost without it."
        }
        OptId::Region => {
            "The AWS region of the stream (or delivery stream), like us-east-1. Without it, \
              the region of the \
              AWS profile is used, then that of the EC2 instance."
        }
        OptId::EndpointUrl => {
            "The Kinesis endpoint, an http:// or https:// URL. The region's is \
              https://kinesis.REGION.amazonaws.com (.amazonaws.com.cn in China), with \
              -fips after kinesis when AWS_USE_FIPS_ENDPOINT is true, and .api.aws when \
              AWS_USE_DUALSTACK_ENDPOINT is true. With --delivery-stream, the Firehose \
              endpoint: firehose instead of kinesis, and AWS_ENDPOINT_URL_FIREHOSE instead of \
              AWS_ENDPOINT_URL_KINESIS."
        }
        OptId::RoleArn => {
            "A role to assume with STS AssumeRole, over the credentials found, before \
              publishing; like arn:aws:iam::123456789012:role/NAME. Its credentials are \
              renewed ahead of their expiry."
        }
        OptId::RoleSessionName => {
            "The session name used when assuming --role-arn: 2 to 64 letters, digits and \
              _+=,.@-."
        }
        OptId::RoleExternalId => {
            "The external ID the trust policy of --role-arn asks for: 2 to 1224 characters \
              without spaces."
        }
        OptId::StsEndpointUrl => {
            "The STS endpoint used to assume roles, an http:// or https:// URL. The \
              region's is https://sts.REGION.amazonaws.com, FIPS and dualstack as for \
              --endpoint-url."
        }
        OptId::CaBundle => {
            "A file of PEM certificates trusted in addition to the web PKI roots built into \
              the binary, for the AWS endpoints."
        }
        OptId::StatsInterval => {
            "How often the counters are logged, on one info line, and --metrics-file is \
              rewritten: 0 (not on a timer) or at least 1s. SIGUSR1 logs them at any time; \
              the metrics file is also written at start, on SIGUSR1 and at the stop, whatever \
              the interval."
        }
        OptId::MetricsFile => {
            "A file rewritten with the counters in the Prometheus text format, for \
              node_exporter's textfile collector (name it *.prom): at start, every \
              --stats-interval (unless it is 0), on SIGUSR1 and at the stop. Each write goes \
              to .NAME.tmp beside it and is renamed over it, so a reader never sees half a \
              file. It is readable by all (mode 0644)."
        }
        OptId::Debug => {
            "Log debug lines too. --debug=false turns it off again; the variable takes \
              true or false (also 1, 0, yes, no, on, off)."
        }
        OptId::Help => "Print a summary of the options and exit; so does a bare -h.",
        OptId::Version => "Print the version and exit.",
    }
}
