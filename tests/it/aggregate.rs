//! `--aggregate`: lines packed into KPL aggregated records. Read back by AWS's own
//! deaggregator (aws-kinesis-agg, through GetRecords on kinesalite) and, against the fake
//! Kinesis, by a decoder of the tests' own.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use crate::support::*;

const LONG: Duration = Duration::from_secs(60);

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

/// Runs the daemon with `extra` against kinesalite's stream `stream` of `shards` shards, writes
/// the lines of several writers at once, stops it and reads the stream back through the
/// deaggregator. Returns what it printed, the lines written by writer, and the log.
fn run_on_kinesalite(
    stream: &str,
    shards: u32,
    extra: &[&str],
) -> (Value, Vec<Vec<Vec<u8>>>, String) {
    let peer = Peer::kinesalite();
    AwsClient::test_keys(&peer.url).create_stream_of(stream, shards);
    let dir = TempDir::new("aggregate-kinesalite");
    let fifo = dir.join("in.pipe");
    let mut args = vec![
        "--fifo-name",
        fifo.to_str().unwrap(),
        "--stream-name",
        stream,
        "--aggregate",
        "--flush-interval",
        "300ms",
    ];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(&dir, &args, &aws_env(&peer.url));
    wait_until(LONG, "the FIFO", || fifo.exists());
    let by_writer = writers_lines(4, 5_000);
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
    (deaggregate(&peer.url, stream), by_writer, log)
}

/// The user records' lines, by shard, in read order.
fn user_lines(out: &Value) -> Vec<(String, Vec<u8>, String)> {
    out["user_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(u["data"].as_str().unwrap())
                .unwrap();
            (
                u["shard"].as_str().unwrap().to_string(),
                data,
                u["partition_key"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn aws_kinesis_agg_reads_back_exactly_the_lines_of_several_writers_across_four_shards() {
    let (out, by_writer, log) = run_on_kinesalite("agg-random", 4, &[]);
    let total: usize = by_writer.iter().map(Vec::len).sum();
    let records = out["kinesis_records"].as_u64().unwrap();
    assert_eq!(out["shards"], 4);
    assert_eq!(
        out["aggregated"].as_u64(),
        Some(records),
        "every record is an aggregate"
    );
    assert_eq!(
        out["outside_range"], 0,
        "a user record hashes outside its shard"
    );
    let users = user_lines(&out);
    let mut got: Vec<Vec<u8>> = users.iter().map(|(_, d, _)| d.clone()).collect();
    let mut want: Vec<Vec<u8>> = by_writer.concat();
    got.sort();
    want.sort();
    assert_eq!(got.len(), total, "lines lost or duplicated");
    assert!(
        got == want,
        "the deaggregated lines are not the lines written"
    );
    // Random keys, one per aggregate: every shard got some.
    let shards: std::collections::HashSet<&str> =
        users.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(shards.len(), 4, "{shards:?}");
    // Lines of one aggregate share its key; a writer's lines keep their order within a key.
    let mut by_key: HashMap<&str, Vec<&[u8]>> = HashMap::new();
    for (_, d, k) in &users {
        by_key.entry(k.as_str()).or_default().push(d);
    }
    assert!((by_key.len() as u64) <= records);
    assert_eq!(stat_from(&log, "records_sent"), records);
    assert_eq!(stat_from(&log, "user_records_sent"), total as u64);
    let units = stat_from(&log, "payload_units");
    assert!(
        (records..=2 * records).contains(&units),
        "a 50 KiB aggregate is one or two units: {units} for {records} records"
    );
    assert!(
        records * 100 < total as u64,
        "{records} Kinesis records for {total} lines"
    );
    assert!(!log.contains(TEST_SECRET));
    println!("{total} lines from 4 writers: {records} Kinesis records, {units} payload units");
}

#[test]
fn a_fixed_key_keeps_every_writers_lines_in_order_in_one_shard() {
    let (out, by_writer, log) = run_on_kinesalite("agg-fixed", 2, &["--partition-key", "host-1"]);
    assert_eq!(out["outside_range"], 0);
    let users = user_lines(&out);
    assert!(users
        .iter()
        .all(|(s, _, k)| s == &users[0].0 && k == "host-1"));
    for (w, lines) in by_writer.iter().enumerate() {
        let prefix = format!("writer {w} ");
        let got: Vec<&[u8]> = users
            .iter()
            .map(|(_, d, _)| &d[..])
            .filter(|d| d.starts_with(prefix.as_bytes()))
            .collect();
        let want: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        assert!(got == want, "writer {w}'s lines are not all there in order");
    }
    assert_eq!(stat_from(&log, "user_records_sent"), users.len() as u64);
}

/// The records of every request the fake Kinesis saw, decoded: (key, lines) per record.
fn decoded(server: &FakeKinesis) -> Vec<Vec<(String, Vec<Vec<u8>>)>> {
    server
        .requests()
        .iter()
        .map(|r| {
            r.records
                .iter()
                .map(|(data, key)| {
                    let users = kpl_user_records(data).expect("a valid aggregated record");
                    assert!(
                        users.iter().all(|(_, k)| k == key),
                        "a user record's key differs"
                    );
                    (key.clone(), users.into_iter().map(|(d, _)| d).collect())
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_failed_aggregate_is_resent_whole_and_in_order() {
    let dir = TempDir::new("aggregate-resend");
    let fifo = dir.join("in.pipe");
    // The first request's second record fails; everything else is accepted.
    let server = FakeKinesis::with_behaviour("test-stream", true, |n, _| match n {
        0 => Reply::FailRecords(vec![1], "ProvisionedThroughputExceededException"),
        _ => Reply::Accept,
    });
    let daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--aggregate",
            "--aggregate-max-bytes",
            "4KiB",
            "--partition-key",
            "k",
            "--flush-interval",
            "200ms",
        ],
    );
    let sent = numbered_lines("resend", 3_000, 100);
    spawn_writer(&fifo, sent.clone(), 100, LONG).join().unwrap();
    wait_until(LONG, "every line accepted", || {
        daemon.stat("user_records_sent") >= sent.len() as u64
    });
    let log = stop_cleanly(daemon);
    let requests = decoded(&server);
    assert!(
        requests[0].len() > 2,
        "the first request holds several aggregates"
    );
    assert_eq!(
        requests[1],
        [requests[0][1].clone()],
        "the failed aggregate is sent again alone, whole"
    );
    // Read order: the records of every request but the resend, in order, hold the lines
    // as written.
    let lines_of = |req: &[(String, Vec<Vec<u8>>)]| -> Vec<Vec<u8>> {
        req.iter().flat_map(|(_, l)| l.iter().cloned()).collect()
    };
    let mut read_order = lines_of(&requests[0]);
    for req in &requests[2..] {
        read_order.extend(lines_of(req));
    }
    assert!(read_order == sent, "lines lost, duplicated or out of order");
    for req in server.requests() {
        for (data, key) in &req.records {
            assert!(
                data.len() + key.len() <= 4096,
                "a record over --aggregate-max-bytes"
            );
        }
    }
    assert_eq!(stat_from(&log, "throttled_records"), 1);
    assert_eq!(stat_from(&log, "user_records_sent"), sent.len() as u64);
    assert_eq!(server.problems(), Vec::<String>::new());
}

#[test]
fn the_logger_handler_prints_lines_as_without_aggregation() {
    let dir = TempDir::new("aggregate-logger");
    let input = dir.join("input.txt");
    let lines: Vec<u8> = (0..2_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    std::fs::write(&input, &lines).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["-f", "-", "--flush-handler", "logger", "--aggregate"])
        .env_clear()
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == lines,
        "the logger's output differs from its input"
    );
}

/// The lines of the aggregated records the fake Kinesis accepted, in order.
fn received_lines(server: &FakeKinesis) -> Vec<Vec<u8>> {
    server
        .received()
        .iter()
        .flat_map(|data| kpl_user_records(data).expect("a valid aggregated record"))
        .map(|(line, _)| line)
        .collect()
}

#[test]
fn kept_lines_are_replayed_in_full_aggregates() {
    let dir = TempDir::new("aggregate-replay");
    let failed = dir.join("failed");
    std::fs::create_dir_all(&failed).unwrap();
    let sent = numbered_lines("kept", 100_000, 100);
    let mut content = sent.join(&b'\n');
    content.push(b'\n');
    std::fs::write(
        failed.join("fifo2kinesis-20200101000000-000001-1"),
        &content,
    )
    .unwrap();
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::start("test-stream");
    let daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--aggregate",
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
        ],
    );
    wait_until(LONG, "every kept line", || {
        daemon.stat("user_records_sent") >= sent.len() as u64
    });
    let log = stop_cleanly(daemon);
    assert!(
        received_lines(&server) == sent,
        "the kept lines, once each, in order"
    );
    // 10 MB in aggregates of up to 50 KiB: about 210 records, not one a line, nor one per
    // 500 lines.
    let records = server.received_count();
    assert!(
        records <= 220,
        "{records} Kinesis records for {} lines",
        sent.len()
    );
    assert_eq!(stat_from(&log, "lines_replayed"), sent.len() as u64);
    assert_eq!(stat_from(&log, "records_sent"), records as u64);
}

#[test]
fn a_sigkill_with_durable_loses_no_aggregated_line() {
    let dir = TempDir::new("aggregate-durable");
    let fifo = dir.join("in.pipe");
    let failed = dir.join("failed");
    let server = FakeKinesis::start("test-stream");
    let extra = [
        "--aggregate",
        "--durable",
        "--failed-attempts-dir",
        failed.to_str().unwrap(),
        "--flush-interval",
        "100ms",
    ];
    let first = start_daemon(&dir, &fifo, &server, &extra);
    first.wait_log("INFO reading ", LONG);
    let sent = numbered_lines("durable-agg", 200_000, 100);
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
    wait_until(LONG, "some lines delivered", || server.received_count() > 5);
    first.signal(nix::sys::signal::Signal::SIGKILL);
    let mut first = first;
    first.wait_exit(LONG);
    let logs = TempDir::new("aggregate-durable-2");
    let second = start_daemon(&logs, &fifo, &server, &extra);
    second.wait_log("INFO reading ", LONG);
    writer.join().unwrap();
    wait_until(LONG, "every line delivered and the journal empty", || {
        missing(&sent, &received_lines(&server)) == 0 && second.stat("journal_bytes") == 0
    });
    stop_cleanly(second);
    let got = received_lines(&server);
    let set: std::collections::HashSet<&[u8]> = got.iter().map(Vec::as_slice).collect();
    let lost = sent.iter().filter(|l| !set.contains(l.as_slice())).count();
    let sent_set: std::collections::HashSet<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    let foreign = got
        .iter()
        .filter(|l| !sent_set.contains(l.as_slice()))
        .count();
    assert_eq!((lost, foreign), (0, 0), "lines lost or cut by the kill");
    println!(
        "{} lines, SIGKILL mid-stream: 0 lost, {} duplicates",
        sent.len(),
        got.len() - set.len()
    );
}

/// Regression: the memory a read may add was counted with a whole lone aggregate's framing per
/// line (twice the key and more): with a 256-character key it was more than a 10 MiB budget
/// holds, and the daemon never read a line.
#[test]
fn a_long_key_and_a_small_budget_still_read() {
    let dir = TempDir::new("aggregate-budget");
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::start("test-stream");
    let key = "k".repeat(256);
    let daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--aggregate",
            "--partition-key",
            &key,
            "--max-buffer-bytes",
            "10MiB",
            "--flush-interval",
            "100ms",
        ],
    );
    let sent = numbered_lines("budget", 1_000, 100);
    spawn_writer(&fifo, sent.clone(), 100, LONG).join().unwrap();
    wait_until(LONG, "every line delivered", || {
        daemon.stat("user_records_sent") >= sent.len() as u64
    });
    stop_cleanly(daemon);
    assert!(received_lines(&server) == sent);
}
