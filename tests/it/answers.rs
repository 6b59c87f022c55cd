//! Hostile or broken answers from the endpoint: an answer that does not prove success is a
//! failure to retry, never a delivery. Each test writes lines, has the fake server answer some
//! requests badly, then accept, and checks that every line arrives exactly as written, exactly
//! once (a badly answered request is not recorded as received, so nothing is duplicated), and
//! that the daemon logged the bad answer.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::*;

const LONG: Duration = Duration::from_secs(120);

fn lines(tag: &str, n: usize, size: usize) -> Vec<Vec<u8>> {
    numbered_lines(tag, n, size)
}

/// Writes `lines` into the FIFO from another thread (it blocks while the daemon pauses reading).
fn writer(fifo: &Path, lines: Vec<Vec<u8>>) -> JoinHandle<()> {
    spawn_writer(fifo, lines, 100, LONG)
}

fn start(dir: &TempDir, server: &FakeKinesis, extra: &[&str]) -> (Daemon, PathBuf) {
    let fifo = dir.join("in.pipe");
    let mut args = vec!["--flush-interval", "100ms"];
    args.extend_from_slice(extra);
    let daemon = start_daemon(dir, &fifo, server, &args);
    (daemon, fifo)
}

/// Every line arrived exactly once, byte for byte, and nothing else did.
fn assert_arrived_exactly(server: &FakeKinesis, sent: &[Vec<u8>]) {
    let mut got = server.received();
    got.sort();
    let mut want = sent.to_vec();
    want.sort();
    let missing = want
        .iter()
        .filter(|l| got.binary_search(l).is_err())
        .count();
    assert_eq!(
        (got.len(), missing),
        (want.len(), 0),
        "received {} lines for {} sent, {missing} missing",
        got.len(),
        want.len()
    );
    assert!(got == want, "the received lines differ from those sent");
}

/// The all-accepted answer for `n` records.
fn accepted(n: usize) -> String {
    let entries: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"SequenceNumber":"4954698668313554428650745793632167567570019247115{i:07}","ShardId":"shardId-000000000000"}}"#))
        .collect();
    format!(
        r#"{{"FailedRecordCount":0,"Records":[{}],"EncryptionType":"NONE"}}"#,
        entries.join(",")
    )
}

/// 200 answers that do not account for the `n` records sent; all but the last were once read
/// as "all accepted" and their records lost.
fn broken_answers(n: usize) -> Vec<(&'static str, String)> {
    let with_errors = {
        let mut entries: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"SequenceNumber":"{i}","ShardId":"shardId-000000000000"}}"#))
            .collect();
        for e in entries.iter_mut().take(3) {
            *e = r#"{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded"}"#.into();
        }
        format!(
            r#"{{"FailedRecordCount":0,"Records":[{}]}}"#,
            entries.join(",")
        )
    };
    vec![
        ("an empty object", "{}".into()),
        ("null", "null".into()),
        ("an empty array", "[]".into()),
        ("a count alone", r#"{"FailedRecordCount":0}"#.into()),
        (
            "JSON cut after the count",
            r#"{"FailedRecordCount":0"#.into(),
        ),
        ("Records 10 short", accepted(n.saturating_sub(10))),
        ("a count of 0 beside 3 ErrorCodes", with_errors),
        (
            "an empty Records",
            r#"{"FailedRecordCount":0,"Records":[]}"#.into(),
        ),
        ("a page", "<html><body>OK</body></html>".into()),
    ]
}

/// Regression: a 200 that did not account for every record counted as "all accepted", and its
/// records were lost. Each broken answer goes to a batch's first attempt, its retry is accepted.
#[test]
fn malformed_200_answers_are_retried_not_counted_as_delivered() {
    const N: usize = 5_000;
    let dir = TempDir::new("answers-malformed");
    let shapes = broken_answers(0).len();
    let posts = Arc::new(AtomicUsize::new(0));
    let served = Arc::clone(&posts);
    let server = FakeKinesis::with_behaviour("test-stream", false, move |_, req| {
        let n = served.fetch_add(1, Ordering::SeqCst);
        match broken_answers(req.records.len()).get(n / 2) {
            Some((_, body)) if n.is_multiple_of(2) => Reply::raw(200, body.as_bytes()),
            _ => Reply::Accept,
        }
    });
    // Batches of at most 100 records: many more batches than broken answers.
    let (daemon, fifo) = start(&dir, &server, &["-l", "100"]);
    let sent = lines("malformed", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    // The server keeps the records before it answers: once the daemon counts every line as
    // sent, every line has arrived, unless broken answers were counted as deliveries.
    wait_until(LONG, "records_sent to reach every line", || {
        daemon.stat("records_sent") >= N as u64
    });
    let records_sent = daemon.stat("records_sent");
    let log = stop_cleanly(daemon);
    assert!(
        posts.load(Ordering::SeqCst) >= 2 * shapes,
        "every broken answer was served"
    );
    assert_arrived_exactly(&server, &sent);
    assert_eq!(records_sent, server.received_count() as u64);
    let logged = log
        .lines()
        .filter(|l| l.contains("malformed PutRecords response"))
        .count();
    assert!(logged >= 1, "the malformed answers are logged:\n{log}");
    assert_eq!(server.problems(), Vec::<String>::new());
    println!(
        "{shapes} malformed 200 answers: {N} lines delivered once each, {logged} log lines, {} requests",
        posts.load(Ordering::SeqCst)
    );
}

/// Regression: a 302 to the signed POST was followed as an unsigned GET, whose 200 was read as
/// the PutRecords answer. Redirects are not followed; a 3xx is an error to retry.
#[test]
fn a_redirect_is_an_error_not_a_delivery() {
    const N: usize = 2_000;
    const REDIRECTS: usize = 3;
    let dir = TempDir::new("answers-redirect");
    let posts = Arc::new(AtomicUsize::new(0));
    let gets = Arc::new(AtomicUsize::new(0));
    let last_records = Arc::new(AtomicUsize::new(0));
    let (p, g, last) = (
        Arc::clone(&posts),
        Arc::clone(&gets),
        Arc::clone(&last_records),
    );
    let server = FakeKinesis::with_behaviour("test-stream", false, move |_, req| {
        if req.method == "GET" {
            // What a redirect target could answer: a 200 that looks like all accepted.
            g.fetch_add(1, Ordering::SeqCst);
            return Reply::raw(200, accepted(last.load(Ordering::SeqCst)));
        }
        last.store(req.records.len(), Ordering::SeqCst);
        let n = p.fetch_add(1, Ordering::SeqCst);
        if n.is_multiple_of(2) && n / 2 < REDIRECTS {
            Reply::Raw {
                status: 302,
                headers: vec![("Location".into(), "/accepted-elsewhere".into())],
                body: b"<html>Found</html>".to_vec(),
                received: false,
            }
        } else {
            Reply::Accept
        }
    });
    let (daemon, fifo) = start(&dir, &server, &["-l", "100"]);
    let sent = lines("redirect", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    wait_until(LONG, "records_sent to reach every line", || {
        daemon.stat("records_sent") >= N as u64
    });
    let records_sent = daemon.stat("records_sent");
    let log = stop_cleanly(daemon);
    assert_eq!(gets.load(Ordering::SeqCst), 0, "no GET reaches the server");
    assert!(posts.load(Ordering::SeqCst) >= 2 * REDIRECTS);
    assert_arrived_exactly(&server, &sent);
    assert_eq!(records_sent, N as u64);
    assert!(
        log.lines()
            .any(|l| l.contains("HTTP 302") && l.contains("/accepted-elsewhere")),
        "the redirect is logged:\n{log}"
    );
    assert_eq!(server.problems(), Vec::<String>::new());
}

/// The service agent reads response heads of up to 8 KiB in a 16 KiB receive buffer (ureq's
/// default is 128 KiB, with a 64 KiB head limit). A 200 whose head is longer is a failure to
/// retry ("response header is too big"), never a delivery nor a stalled connection; heads a
/// little under the limit, and answers much longer than the buffer (500 records: 50 KB), are
/// read as before. The header sizes bracket the limit, so another limit fails the test.
#[test]
fn a_response_head_over_8_kib_is_retried_and_one_under_it_is_read() {
    const N: usize = 3_000;
    let dir = TempDir::new("answers-long-head");
    let posts = Arc::new(AtomicUsize::new(0));
    let p = Arc::clone(&posts);
    let server = FakeKinesis::with_behaviour("test-stream", false, move |_, req| {
        let n = p.fetch_add(1, Ordering::SeqCst);
        // The first three answers' heads are just over 8 KiB (the header alone 8,300 bytes)
        // and accept everything; then heads just under it (7,800 bytes and the rest).
        let padding = if n < 3 { 8_300 } else { 7_800 };
        Reply::Raw {
            status: 200,
            headers: vec![("x-amz-padding".into(), "p".repeat(padding))],
            body: accepted(req.records.len()).into_bytes(),
            received: n >= 3,
        }
    });
    let (daemon, fifo) = start(&dir, &server, &["-l", "500"]);
    let sent = lines("long-head", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    wait_until(LONG, "records_sent to reach every line", || {
        daemon.stat("records_sent") >= N as u64
    });
    let records_sent = daemon.stat("records_sent");
    let log = stop_cleanly(daemon);
    let posts = posts.load(Ordering::SeqCst);
    assert!(
        posts >= N / 500 + 3,
        "the first three answers were retried: {posts} requests"
    );
    assert_eq!(
        records_sent, N as u64,
        "counted once, after a readable answer"
    );
    assert_arrived_exactly(&server, &sent);
    assert!(
        log.lines()
            .any(|l| l.contains("response header is too big")),
        "the long head is logged:\n{log}"
    );
    assert_eq!(server.problems(), Vec::<String>::new());
}

/// Regression: a proxy's 413 page was read as "too large" (its words mention a size), so the
/// batch was halved down to single records, thousands of requests a second, and every line went
/// to `oversized/`. A 413 is a passing fault: backed off and retried.
#[test]
fn a_proxy_413_is_backed_off_not_split_into_oversized() {
    const N: usize = 5_000;
    const PHASE: Duration = Duration::from_secs(2);
    let dir = TempDir::new("answers-413");
    let failed = dir.join("failed");
    let oversized = failed.join("oversized");
    let first = Arc::new(OnceLock::<Instant>::new());
    let refused = Arc::new(AtomicUsize::new(0));
    let (since, count) = (Arc::clone(&first), Arc::clone(&refused));
    let server = FakeKinesis::with_behaviour("test-stream", false, move |_, _| {
        if since.get_or_init(Instant::now).elapsed() < PHASE {
            count.fetch_add(1, Ordering::SeqCst);
            Reply::Raw {
                status: 413,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body: b"<html><head><title>413 Request Entity Too Large</title></head><body><h1>Request Entity Too Large</h1><p>The request size exceeds the limit allowed by this proxy.</p></body></html>".to_vec(),
                received: false,
            }
        } else {
            Reply::Accept
        }
    });
    let (daemon, fifo) = start(
        &dir,
        &server,
        &["--failed-attempts-dir", failed.to_str().unwrap()],
    );
    let sent = lines("proxy413", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    let kept = || fs::read_dir(&oversized).map_or(0, |d| d.count());
    // Stops early, and fails below, if lines are set aside as oversized.
    wait_until(LONG, "every line, or lines kept as oversized", || {
        server.received_count() >= N || kept() > 0
    });
    let log = stop_cleanly(daemon);
    let requests = refused.load(Ordering::SeqCst);
    println!("{requests} requests during {PHASE:?} of 413 answers");
    assert_eq!(kept(), 0, "nothing is kept as oversized");
    assert_arrived_exactly(&server, &sent);
    // Backoff from 100 ms doubling: a handful; splitting made thousands.
    assert!(
        (1..=30).contains(&requests),
        "{requests} requests answered 413"
    );
    assert!(log.contains("HTTP 413"), "the 413 is logged:\n{log}");
    assert_eq!(server.problems(), Vec::<String>::new());
}

/// A stream still at the default 1 MiB record limit while `--max-record-bytes` allows 2 MiB:
/// requests holding a record over 1 MiB are answered with ValidationException; the batch is
/// split down to that record, which is kept as an oversized line, and everything else arrives.
#[test]
fn too_large_for_the_stream_splits_down_to_the_record() {
    const N: usize = 20_000;
    const STREAM_LIMIT: usize = 1 << 20;
    let dir = TempDir::new("answers-too-large");
    let failed = dir.join("failed");
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, req| {
        if req
            .records
            .iter()
            .any(|(d, k)| d.len() + k.len() > STREAM_LIMIT)
        {
            Reply::Error(
                400,
                r#"{"__type":"ValidationException","message":"1 validation error detected: Value at 'records.1.member.data' failed to satisfy constraint: Member must have length less than or equal to 1048576"}"#.into(),
            )
        } else {
            Reply::Accept
        }
    });
    let (daemon, fifo) = start(
        &dir,
        &server,
        &[
            "--max-record-bytes",
            "2MiB",
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
        ],
    );
    let sent = lines("split", N, 100);
    let big: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            let mut l = format!("big-{i}-").into_bytes();
            l.resize(STREAM_LIMIT + STREAM_LIMIT / 10, b'x');
            l
        })
        .collect();
    let mut wire = sent.clone();
    for (i, b) in big.iter().enumerate() {
        wire.insert(i * (N / big.len()) + 7, b.clone());
    }
    writer(&fifo, wire).join().unwrap();
    let kept = || -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = fs::read_dir(failed.join("oversized"))
            .map(|d| d.map(|e| fs::read(e.unwrap().path()).unwrap()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    wait_until(LONG, "every normal line and the big ones on disk", || {
        server.received_count() >= N && kept().len() >= big.len()
    });
    let log = stop_cleanly(daemon);
    assert!(kept() == big, "the big records are kept as they were");
    assert_arrived_exactly(&server, &sent);
    assert!(log.contains("ValidationException"), "{log}");
    println!(
        "too large for the stream: {N} lines delivered, {} records kept as oversized",
        big.len()
    );
}

/// The answer's `x-amz-retry-after` is honoured up to a cap: a throttled request asking for an
/// hour is retried within a minute, and the log says what was asked and waited.
#[test]
fn x_amz_retry_after_is_capped_and_logged() {
    const N: usize = 1_000;
    let dir = TempDir::new("answers-retry-after");
    let server = FakeKinesis::with_behaviour("test-stream", false, |n, _| {
        if n == 0 {
            Reply::Raw {
                status: 400,
                headers: vec![("x-amz-retry-after".into(), "3600000".into())],
                body: br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_vec(),
                received: false,
            }
        } else {
            Reply::Accept
        }
    });
    let started = Instant::now();
    let (daemon, fifo) = start(&dir, &server, &[]);
    let sent = lines("retry-after", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    wait_until(
        Duration::from_secs(60),
        "every line within a minute",
        || server.received_count() >= N,
    );
    println!("delivered {:.1?} after the start", started.elapsed());
    let log = stop_cleanly(daemon);
    assert_arrived_exactly(&server, &sent);
    assert!(
        log.lines()
            .any(|l| l.contains("ThrottlingException") && l.contains("3600s")),
        "the log mentions the hour asked for:\n{log}"
    );
}
