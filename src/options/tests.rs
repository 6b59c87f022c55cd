//! The options as a whole: precedence, defaults, short forms, errors.

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
    assert_eq!(k.destination, Destination::Stream("s".into()));
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
    assert_eq!(
        c.kinesis.as_ref().unwrap().destination,
        Destination::Stream("cli".into())
    );
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
    assert_eq!(parse(["-V"], none).unwrap(), Command::Version);
    let help = help_text();
    for o in defs::OPTIONS {
        assert!(help.contains(&o.flag()), "{}", o.long);
        assert!(help.contains(o.var.unwrap_or_default()), "{}", o.long);
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
fn fips_and_dualstack_endpoints_from_the_environment() {
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
    assert!(err(&a, &[])
        .contains("--buffer-queue-limit: invalid value \"501\": expected a number from 1 to 500"));
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
fn stats_interval_zero_is_off_and_a_metrics_file_may_go_with_it() {
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
    // Written at start, on SIGUSR1 and at the stop, without the timer.
    let mut a = BASE.to_vec();
    a.extend(["--stats-interval", "0", "--metrics-file", "/m/f.prom"]);
    let c = run(&a, &[]).unwrap();
    assert_eq!(c.stats_interval, None);
    assert_eq!(c.metrics_file, Some(PathBuf::from("/m/f.prom")));
}

/// `-p ""` gave every record an empty key, which Kinesis refuses; the Go tool, and the help,
/// make it random.
#[test]
fn an_empty_partition_key_is_random() {
    let mut a = BASE.to_vec();
    a.extend(["-p", ""]);
    assert_eq!(run(&a, &[]).unwrap().partition_key, PartitionKey::Random);
    let mut a = BASE.to_vec();
    a.extend(["--partition-key= "]);
    assert_eq!(
        run(&a, &[]).unwrap().partition_key,
        PartitionKey::Fixed(" ".into())
    );
}

#[test]
fn durable_needs_the_directory_and_room_for_two_requests() {
    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        [BASE, extra].concat()
    }
    let e = err(&with(&["--durable"]), &[]);
    assert!(e.contains("--failed-attempts-dir"), "{e}");
    let e = err(
        &with(&[
            "--durable",
            "-D",
            "/d",
            "--failed-attempts-max-bytes",
            "1MiB",
        ]),
        &[],
    );
    assert!(e.contains("at least twice --max-request-bytes"), "{e}");
    let c = run(
        &with(&["--durable", "-D", "/d", "--fsync-interval", "0"]),
        &[],
    )
    .unwrap();
    assert!(c.durable);
    assert_eq!(c.fsync_interval, Duration::ZERO);
    let c = run(&with(&["-D", "/d"]), &[("FIFO2KINESIS_DURABLE", "true")]).unwrap();
    assert!(c.durable);
    assert_eq!(c.fsync_interval, Duration::from_secs(1));
    assert!(!run(BASE, &[]).unwrap().durable);
}

#[test]
fn aggregate_records_are_50_kib_by_default_and_at_most_a_record() {
    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        [BASE, extra].concat()
    }
    assert_eq!(run(BASE, &[]).unwrap().aggregate, None);
    assert_eq!(
        run(&with(&["--aggregate"]), &[]).unwrap().aggregate,
        Some(50 * 1024)
    );
    let env = [
        ("FIFO2KINESIS_AGGREGATE", "true"),
        ("FIFO2KINESIS_AGGREGATE_MAX_BYTES", "8KiB"),
    ];
    assert_eq!(run(BASE, &env).unwrap().aggregate, Some(8 * 1024));
    // The default follows a smaller record limit; a given size may not pass it.
    let small = with(&[
        "--aggregate",
        "--max-record-bytes",
        "20000",
        "--max-request-bytes",
        "20000",
    ]);
    assert_eq!(run(&small, &[]).unwrap().aggregate, Some(20000));
    let e = err(
        &[small.as_slice(), &["--aggregate-max-bytes", "30000"]].concat(),
        &[],
    );
    assert!(
        e.contains("--aggregate-max-bytes") && e.contains("to --max-record-bytes (20000)"),
        "{e}"
    );
    let e = err(
        &with(&["--aggregate", "--aggregate-max-bytes", "1000"]),
        &[],
    );
    assert!(e.contains("from 1KiB"), "{e}");
}

/// Regression: with --aggregate, a --max-record-bytes that left no room for a line next to an
/// aggregate's framing was taken, and the daemon's longest line underflowed (a panic in debug
/// builds, no limit at all in release ones).
#[test]
fn aggregate_needs_a_record_that_holds_a_line_in_an_aggregate() {
    fn with(extra: &[&'static str]) -> Vec<&'static str> {
        [BASE, extra].concat()
    }
    let small = with(&[
        "--aggregate",
        "--max-record-bytes",
        "40",
        "--max-request-bytes",
        "40",
    ]);
    let e = err(&small, &[]);
    assert!(
        e.contains("--max-record-bytes") && e.contains("with --aggregate"),
        "{e}"
    );
    // Without --aggregate it is a valid record size.
    assert!(run(
        &small[..small.len() - 5]
            .iter()
            .chain(&small[small.len() - 4..])
            .copied()
            .collect::<Vec<_>>(),
        &[]
    )
    .is_ok());
    // A long fixed key counts twice: in the record and in the aggregate's key table.
    let key: &'static str = Box::leak("k".repeat(256).into_boxed_str());
    let e = err(
        &with(&[
            "--aggregate",
            "-p",
            key,
            "--max-record-bytes",
            "500",
            "--max-request-bytes",
            "500",
        ]),
        &[],
    );
    assert!(e.contains("with --aggregate"), "{e}");
    // The size of an aggregate is checked only with --aggregate.
    let env = [("FIFO2KINESIS_AGGREGATE_MAX_BYTES", "2MiB")];
    assert_eq!(run(BASE, &env).unwrap().aggregate, None);
}

const FIREHOSE: &[&str] = &[
    "--fifo-name",
    "/tmp/p",
    "--delivery-stream",
    "to-s3",
    "--region",
    "us-east-1",
];

#[test]
fn a_delivery_stream_takes_firehose_limits_by_default() {
    let c = run(FIREHOSE, &[]).unwrap();
    let k = c.kinesis.as_ref().unwrap();
    assert_eq!(k.destination, Destination::DeliveryStream("to-s3".into()));
    assert_eq!(k.destination.service(), "firehose");
    assert_eq!(c.max_record_bytes, 1000 * 1024);
    assert_eq!(c.max_request_bytes, 4 << 20);
    assert_eq!(c.aggregate, None);
    let joined = run(&[FIREHOSE, &["--aggregate"]].concat(), &[]).unwrap();
    assert_eq!(joined.aggregate, Some(1000 * 1024));
    let env = [("FIFO2KINESIS_DELIVERY_STREAM", "from-env")];
    let c = run(&["-f", "/tmp/p", "-R", "us-east-1"], &env).unwrap();
    assert_eq!(
        c.kinesis.unwrap().destination,
        Destination::DeliveryStream("from-env".into())
    );
    // Smaller limits may be given; the aggregate default follows the record limit.
    let small = [
        FIREHOSE,
        &[
            "--aggregate",
            "--max-record-bytes",
            "64KiB",
            "--max-request-bytes",
            "1MiB",
        ],
    ]
    .concat();
    let c = run(&small, &[]).unwrap();
    assert_eq!(
        (c.max_record_bytes, c.max_request_bytes, c.aggregate),
        (64 << 10, 1 << 20, Some(64 << 10))
    );
}

#[test]
fn a_delivery_stream_refuses_what_firehose_cannot_take() {
    let with = |extra: &[&str]| err(&[FIREHOSE, extra].concat(), &[]);
    // Both destinations is the error, whatever else would be wrong for one of them.
    for extra in [&[][..], &["-p", "k"], &["--max-record-bytes", "2MiB"]] {
        let e = with(&[&["--stream-name", "s"][..], extra].concat());
        assert!(
            e.contains("--stream-name and --delivery-stream are both set"),
            "{extra:?}: {e}"
        );
    }
    let e = err(&["-f", "/tmp/p", "-R", "us-east-1"], &[]);
    assert!(
        e.contains("--stream-name") && e.contains("--delivery-stream for Firehose"),
        "{e}"
    );
    let e = with(&["--partition-key", "host-1"]);
    assert!(
        e.starts_with("--partition-key: invalid value \"host-1\"")
            && e.contains("Firehose records have no partition key"),
        "{e}"
    );
    // An empty key is no key: accepted, as the Go tool's configurations may set it so.
    assert!(run(&[FIREHOSE, &["--partition-key", ""]].concat(), &[]).is_ok());
    let e = with(&["--max-record-bytes", "1MiB"]);
    assert!(e.contains("at most 1000KiB"), "{e}");
    let e = with(&["--max-record-bytes", "1"]);
    assert!(e.contains("--max-record-bytes"), "{e}");
    let e = with(&["--max-request-bytes", "5MiB"]);
    assert!(e.contains("4MiB with --delivery-stream"), "{e}");
    let e = with(&["--delivery-stream", &"d".repeat(65)]);
    assert!(e.contains("1 to 64 characters"), "{e}");
    let e = with(&["--delivery-stream", "a/b"]);
    assert!(e.starts_with("--delivery-stream: invalid value"), "{e}");
    // The logger handler ignores the destination, as it ignores --stream-name.
    let c = run(&[FIREHOSE, &["-h", "logger", "-p", "k"]].concat(), &[]).unwrap();
    assert_eq!(c.kinesis, None);
}

#[test]
fn firehose_reads_its_own_endpoint_variable_and_not_kinesis() {
    let env = [
        ("AWS_ENDPOINT_URL_KINESIS", "http://127.0.0.1:1"),
        ("AWS_ENDPOINT_URL_FIREHOSE", "http://127.0.0.1:2"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:3"),
    ];
    let endpoint =
        |args: &[&str], env: &[(&str, &str)]| run(args, env).unwrap().kinesis.unwrap().endpoint_url;
    assert_eq!(
        endpoint(FIREHOSE, &env).as_deref(),
        Some("http://127.0.0.1:2")
    );
    assert_eq!(endpoint(BASE, &env).as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(
        endpoint(FIREHOSE, &env[..1]).as_deref(),
        None,
        "Kinesis's variable is not Firehose's"
    );
    assert_eq!(
        endpoint(FIREHOSE, &env[2..]).as_deref(),
        Some("http://127.0.0.1:3")
    );
    let cli = [FIREHOSE, &["--endpoint-url", "http://127.0.0.1:4"]].concat();
    assert_eq!(endpoint(&cli, &env).as_deref(), Some("http://127.0.0.1:4"));
}
