//! `--delivery-stream`: Amazon Data Firehose as the destination. Against moto's Firehose, which
//! verifies signatures and writes each PutRecordBatch into its own S3 as one object (read back
//! with boto3), and against the fake server answering as Firehose: partial failures,
//! throttling, answers that prove nothing, joined records.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::*;

const LONG: Duration = Duration::from_secs(60);
const DELIVERY_STREAM: &str = "lines-to-s3";
const BUCKET: &str = "fifo2kinesis-lines";
const POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["firehose:*","s3:*"],"Resource":"*"}]}"#;

/// Lines of `writers` writers, `n` each, of 20 to 319 bytes.
fn writers_lines(writers: usize, n: usize) -> Vec<Vec<Vec<u8>>> {
    (0..writers)
        .map(|w| {
            (0..n)
                .map(|i| {
                    let mut l = format!("writer {w} line {i:06} ").into_bytes();
                    l.resize(20 + (i * 37 + w * 11) % 300, b'a' + (i % 26) as u8);
                    l
                })
                .collect()
        })
        .collect()
}

/// What a run against moto left: the S3 objects, the lines written by writer, the log.
struct MotoRun {
    objects: Vec<Vec<u8>>,
    by_writer: Vec<Vec<Vec<u8>>>,
    log: String,
}

/// Runs the daemon with `extra` against moto's Firehose into S3 as an IAM user allowed
/// `firehose:*` and `s3:*`, writes the lines of four writers at once, stops it, and reads the
/// bucket back.
fn run_on_moto(name: &str, extra: &[&str]) -> MotoRun {
    let peer = Peer::moto();
    // The first five requests are not checked: the user, its policy and key, the bucket and
    // the delivery stream.
    let admin = AwsClient::test_keys(&peer.url);
    let v = ("Version", "2010-05-08");
    admin.query(
        "iam",
        &[("Action", "CreateUser"), v, ("UserName", "writer")],
    );
    admin.query(
        "iam",
        &[
            ("Action", "PutUserPolicy"),
            v,
            ("UserName", "writer"),
            ("PolicyName", "p"),
            ("PolicyDocument", POLICY),
        ],
    );
    let xml = admin.query(
        "iam",
        &[("Action", "CreateAccessKey"), v, ("UserName", "writer")],
    );
    let (id, secret) = (
        xml_text(&xml, "AccessKeyId"),
        xml_text(&xml, "SecretAccessKey"),
    );
    let keys = (id.as_str(), secret.as_str());
    create_delivery_stream(&peer.url, DELIVERY_STREAM, BUCKET, keys);

    let dir = TempDir::new(name);
    let fifo = dir.join("in.pipe");
    let mut args = vec![
        "--fifo-name",
        fifo.to_str().unwrap(),
        "--delivery-stream",
        DELIVERY_STREAM,
        "--flush-interval",
        "300ms",
    ];
    args.extend_from_slice(extra);
    let env = vec![
        ("AWS_ACCESS_KEY_ID".into(), id.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.clone()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL_FIREHOSE".into(), peer.url.clone()),
    ];
    let daemon = Daemon::start(&dir, &args, &env);
    wait_until(LONG, "the FIFO", || fifo.exists());
    let by_writer = writers_lines(4, 2_500);
    let threads: Vec<_> = by_writer
        .iter()
        .map(|lines| spawn_writer(&fifo, lines.clone(), 50, LONG))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total: usize = by_writer.iter().map(Vec::len).sum();
    daemon.wait_lines_read(total as u64, LONG);
    wait_until(LONG, "every line accepted", || {
        daemon.stat("user_records_sent") >= total as u64
    });
    let log = stop_cleanly(daemon);
    assert!(!log.contains(&secret), "the secret leaked into the log");
    MotoRun {
        objects: s3_objects(&peer.url, BUCKET, keys),
        by_writer,
        log,
    }
}

/// Checks that the objects hold exactly the lines written, one per line, each writer's in
/// order within an object; returns the number of lines.
fn check_exactly_the_lines(run: &MotoRun) -> usize {
    let mut want: HashMap<&[u8], usize> = HashMap::new();
    for l in run.by_writer.iter().flatten() {
        *want.entry(&l[..]).or_default() += 1;
    }
    let mut got: HashMap<&[u8], usize> = HashMap::new();
    let mut lines = 0;
    for (i, object) in run.objects.iter().enumerate() {
        assert_eq!(object.last(), Some(&b'\n'), "object {i} ends mid-line");
        let mut last_of_writer: HashMap<&[u8], &[u8]> = HashMap::new();
        for line in object[..object.len() - 1].split(|&b| b == b'\n') {
            *got.entry(line).or_default() += 1;
            lines += 1;
            // "writer W line NNNNNN": within one request, each writer's lines keep their order.
            let writer = &line[..line.len().min(8)];
            if let Some(prev) = last_of_writer.insert(writer, line) {
                assert!(prev[..20] < line[..20], "out of order in object {i}");
            }
        }
    }
    assert_eq!(got, want, "exactly the lines written, each once");
    lines
}

#[test]
fn moto_firehose_writes_exactly_the_lines_of_several_writers_into_s3_one_per_line() {
    let run = run_on_moto("firehose-moto", &[]);
    let lines = check_exactly_the_lines(&run);
    assert_eq!(lines, 10_000);
    // One record a line, one object a request.
    assert_eq!(stat_from(&run.log, "records_sent"), 10_000);
    assert_eq!(stat_from(&run.log, "user_records_sent"), 10_000);
    assert_eq!(stat_from(&run.log, "requests"), run.objects.len() as u64);
    assert!(run.objects.len() >= 20, "500 records a request at most");
    eprintln!(
        "plain: {lines} lines in {} records, {} requests",
        stat_from(&run.log, "records_sent"),
        run.objects.len()
    );
}

#[test]
fn moto_firehose_with_aggregate_joins_whole_lines_into_few_records() {
    let run = run_on_moto("firehose-moto-aggregate", &["--aggregate"]);
    let lines = check_exactly_the_lines(&run);
    assert_eq!(lines, 10_000);
    let records = stat_from(&run.log, "records_sent");
    assert_eq!(stat_from(&run.log, "user_records_sent"), 10_000);
    // About 1.7 MB of lines in records of up to 1,000 KiB, a few requests of flushed batches.
    assert!(
        (2..=40).contains(&records),
        "{records} records for 10,000 lines"
    );
    // Billed in 5 KiB steps: a full record is 200 units.
    let units = stat_from(&run.log, "payload_units");
    let bytes: usize = run.objects.iter().map(Vec::len).sum();
    assert!(units >= bytes.div_ceil(5 * 1024) as u64, "{units} units");
    assert!(
        units <= (bytes.div_ceil(5 * 1024) as u64) + records,
        "{units}"
    );
    eprintln!(
        "aggregate: {lines} lines ({bytes} bytes) in {records} records, {} requests, {units} units",
        run.objects.len()
    );
}

/// Starts the daemon for the fake server's delivery stream `test-stream`.
fn start_firehose(
    dir: &TempDir,
    server: &FakeKinesis,
    extra: &[&str],
) -> (Daemon, std::path::PathBuf) {
    let fifo = dir.join("in.pipe");
    let mut args = vec![
        "--fifo-name",
        fifo.to_str().unwrap(),
        "--delivery-stream",
        "test-stream",
        "--flush-interval",
        "100ms",
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(dir, &args, &aws_env(&server.url));
    wait_until(LONG, "the FIFO", || fifo.exists());
    (daemon, fifo)
}

/// The lines of Firehose records, each record checked to end in a newline.
fn lines_of(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in records {
        assert_eq!(r.last(), Some(&b'\n'), "a record ends mid-line: {r:?}");
        out.extend(r[..r.len() - 1].split(|&b| b == b'\n').map(<[u8]>::to_vec));
    }
    out
}

#[test]
fn only_failed_firehose_records_are_resent_in_order() {
    let server = FakeKinesis::with_behaviour("test-stream", true, |n, _| match n {
        0 => Reply::FailRecords(vec![1, 3, 4], "ServiceUnavailableException"),
        _ => Reply::Accept,
    });
    let dir = TempDir::new("firehose-partial");
    let (daemon, fifo) = start_firehose(&dir, &server, &[]);
    let lines = numbered_lines("f", 6, 40);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &lines);
    wait_until(LONG, "six lines accepted", || server.received_count() >= 6);
    let log = stop_cleanly(daemon);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "one resend: {log}");
    assert_eq!(lines_of(&requests[0].data()), lines);
    assert_eq!(
        lines_of(&requests[1].data()),
        [lines[1].clone(), lines[3].clone(), lines[4].clone()],
        "only the failed records, in order"
    );
    let mut received = lines_of(&server.received());
    received.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(received, want, "nothing lost, nothing twice");
    assert_eq!(stat_from(&log, "throttled_records"), 3);
    assert_eq!(stat_from(&log, "records_sent"), 6);
}

#[test]
fn a_throttled_put_record_batch_is_retried_whole_until_accepted() {
    let server = FakeKinesis::with_behaviour("test-stream", true, |n, _| match n {
        0 | 1 => Reply::Error(
            500,
            r#"{"__type":"ServiceUnavailableException","message":"Slow down."}"#.into(),
        ),
        _ => Reply::Accept,
    });
    let dir = TempDir::new("firehose-throttled");
    let (daemon, fifo) = start_firehose(&dir, &server, &["--debug"]);
    let lines = numbered_lines("t", 20, 30);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &lines);
    wait_until(LONG, "the lines accepted", || server.received_count() >= 20);
    let log = stop_cleanly(daemon);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{log}");
    for r in &requests {
        assert_eq!(lines_of(&r.data()), lines, "the whole request again");
    }
    assert_eq!(lines_of(&server.received()), lines, "once each, in order");
    assert_eq!(stat_from(&log, "throttled_records"), 40);
    assert!(
        log.contains("failed_requests=ServiceUnavailableException:2"),
        "{log}"
    );
}

#[test]
fn a_firehose_answer_that_proves_nothing_is_a_failure_to_retry() {
    // 200s that do not account for the records: Kinesis's names, an entry short, a count that
    // disagrees, an empty body. None of them is a delivery.
    let hostile = [
        r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"},{"SequenceNumber":"2"},{"SequenceNumber":"3"}]}"#,
        r#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"1"},{"RecordId":"2"}]}"#,
        r#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"1"},{"ErrorCode":"InternalFailure"},{"RecordId":"3"}]}"#,
        "",
    ];
    let server =
        FakeKinesis::with_behaviour("test-stream", true, move |n, _| match hostile.get(n) {
            Some(body) => Reply::raw(200, *body),
            None => Reply::Accept,
        });
    let dir = TempDir::new("firehose-hostile");
    let (daemon, fifo) = start_firehose(&dir, &server, &["--debug"]);
    let lines = numbered_lines("h", 3, 30);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &lines);
    wait_until(LONG, "the lines accepted", || server.received_count() >= 3);
    let log = stop_cleanly(daemon);
    assert_eq!(server.requests().len(), 5, "{log}");
    assert_eq!(lines_of(&server.received()), lines, "once each");
    assert!(log.contains("failed_requests=MalformedResponse:4"), "{log}");
    assert!(log.contains("malformed PutRecordBatch response"), "{log}");
}

#[test]
fn joined_firehose_records_hold_whole_lines_and_a_failed_one_is_resent_whole() {
    let server = FakeKinesis::with_behaviour("test-stream", true, |n, _| match n {
        0 => Reply::FailRecords(vec![1], "InternalFailure"),
        _ => Reply::Accept,
    });
    let dir = TempDir::new("firehose-joined");
    let (daemon, fifo) = start_firehose(
        &dir,
        &server,
        &["--aggregate", "--aggregate-max-bytes", "1KiB"],
    );
    let lines = numbered_lines("j", 50, 100);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &lines);
    wait_until(LONG, "the lines accepted", || {
        lines_of(&server.received()).len() >= 50
    });
    let log = stop_cleanly(daemon);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    let requests = server.requests();
    let first = requests[0].data();
    // 100-byte lines and their newlines, 10 to a 1 KiB record.
    assert_eq!(first.len(), 5, "{log}");
    for r in &first {
        assert!(r.len() <= 1024, "a record of {} bytes", r.len());
    }
    assert_eq!(lines_of(&first), lines, "whole lines, in order");
    assert_eq!(
        requests[1].data(),
        &first[1..2],
        "the failed record, byte for byte"
    );
    let mut received = lines_of(&server.received());
    received.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(received, want, "nothing lost, nothing twice");
    assert_eq!(stat_from(&log, "records_sent"), 5);
    assert_eq!(stat_from(&log, "user_records_sent"), 50);
}

#[test]
fn a_firehose_error_retrying_cannot_fix_keeps_the_lines_on_disk_until_delivered() {
    let server = FakeKinesis::with_behaviour("test-stream", true, |n, _| {
        match n {
        0 => Reply::Error(
            400,
            r#"{"__type":"ResourceNotFoundException","message":"Firehose test-stream under account 123456789012 not found."}"#.into(),
        ),
        _ => Reply::Accept,
    }
    });
    let dir = TempDir::new("firehose-kept");
    let spool = dir.join("failed");
    let (daemon, fifo) = start_firehose(
        &dir,
        &server,
        &[
            "--failed-attempts-dir",
            spool.to_str().unwrap(),
            "--retry-interval",
            "300ms",
        ],
    );
    let lines = numbered_lines("k", 10, 30);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &lines);
    wait_until(LONG, "the kept lines delivered", || {
        server.received_count() >= 10
    });
    let log = stop_cleanly(daemon);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    assert_eq!(stat_from(&log, "lines_spooled"), 10, "{log}");
    assert_eq!(stat_from(&log, "lines_replayed"), 10, "{log}");
    assert_eq!(lines_of(&server.received()), lines);
    assert!(spool_files(&spool).is_empty(), "delivered, so removed");
}

#[test]
fn firehose_records_reach_1000_kib_and_a_longer_line_is_kept_apart() {
    let server = FakeKinesis::with_behaviour("test-stream", true, |_, _| Reply::Accept);
    let dir = TempDir::new("firehose-limits");
    let failed = dir.join("failed");
    let (daemon, fifo) = start_firehose(
        &dir,
        &server,
        &["--failed-attempts-dir", failed.to_str().unwrap()],
    );
    // The longest line a record holds with its newline, one byte more, then lines that fill
    // requests to their 4 MiB.
    let longest = vec![b'a'; 1000 * 1024 - 1];
    let too_long = vec![b'b'; 1000 * 1024];
    let fillers: Vec<Vec<u8>> = (0..9u8).map(|i| vec![b'c' + i; 900 * 1024]).collect();
    let mut lines = vec![longest.clone(), too_long.clone()];
    lines.extend(fillers.iter().cloned());
    let writer = spawn_writer(&fifo, lines, 1, LONG);
    writer.join().unwrap();
    let oversized = failed.join("oversized");
    let kept = || fs_read_all(&oversized);
    wait_until(LONG, "ten lines delivered and one kept apart", || {
        server.received_count() >= 10 && kept().len() == 1
    });
    let log = stop_cleanly(daemon);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    assert_eq!(kept(), [too_long], "the line one byte too long, whole");
    assert_eq!(stat_from(&log, "oversized_lines"), 1);
    let mut want = vec![longest];
    want.extend(fillers);
    assert_eq!(lines_of(&server.received()), want, "in order, each once");
    assert_eq!(server.received()[0].len(), 1000 * 1024, "a full record");
    for r in server.requests() {
        let bytes: usize = r.data().iter().map(Vec::len).sum();
        assert!(bytes <= 4 << 20, "a request of {bytes} bytes");
    }
}

/// The files of a directory, read, sorted.
fn fs_read_all(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_sigkill_with_durable_loses_no_line_sent_to_firehose() {
    let dir = TempDir::new("firehose-durable");
    let failed = dir.join("failed");
    let server = FakeKinesis::start("test-stream");
    let extra = [
        "--aggregate",
        "--durable",
        "--failed-attempts-dir",
        failed.to_str().unwrap(),
    ];
    let (first, fifo) = start_firehose(&dir, &server, &extra);
    first.wait_log("INFO reading ", LONG);
    let sent = numbered_lines("durable-firehose", 100_000, 100);
    // The writer holds the FIFO open read-write, as syslog-ng does: a kill of the reader
    // leaves what is in the pipe for the next run.
    let writer = {
        let (fifo, lines) = (fifo.clone(), sent.clone());
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap();
            for chunk in lines.chunks(100) {
                write_lines_atomically(&mut w, chunk);
            }
        })
    };
    wait_until(LONG, "some lines delivered", || server.received_count() > 0);
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let mut first = first;
    first.wait_exit(LONG);
    // The same FIFO and failed-attempts directory; another log.
    let logs = TempDir::new("firehose-durable-2");
    let mut args = vec![
        "--fifo-name",
        fifo.to_str().unwrap(),
        "--delivery-stream",
        "test-stream",
        "--flush-interval",
        "100ms",
    ];
    args.extend_from_slice(&extra);
    let second = Daemon::start(&logs, &args, &aws_env(&server.url));
    second.wait_log("INFO reading ", LONG);
    writer.join().unwrap();
    wait_until(LONG, "every line delivered and the journal empty", || {
        missing(&sent, &lines_of(&server.received())) == 0 && second.stat("journal_bytes") == 0
    });
    stop_cleanly(second);
    assert!(server.problems().is_empty(), "{:?}", server.problems());
    let got = lines_of(&server.received());
    let set: std::collections::HashSet<&[u8]> = got.iter().map(Vec::as_slice).collect();
    let lost = sent.iter().filter(|l| !set.contains(l.as_slice())).count();
    let sent_set: std::collections::HashSet<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    let foreign = got
        .iter()
        .filter(|l| !sent_set.contains(l.as_slice()))
        .count();
    assert_eq!((lost, foreign), (0, 0), "lines lost or cut by the kill");
    println!(
        "{} lines to Firehose, SIGKILL mid-stream: 0 lost, {} duplicates",
        sent.len(),
        got.len() - set.len()
    );
}
