//! Fault injection against the fake Kinesis server: outages, throttling, server errors, dropped
//! connections, slow answers, a stream not created yet, stops and crashes during outages, the
//! memory budget, and hostile input. Each scenario writes at least 100,000 lines and checks that
//! every line arrives at least once, byte-identical; the duplicate count is printed, and must be
//! zero except where connections are dropped after the server took the records.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::support::*;
use nix::sys::signal::Signal;

const N: usize = 100_000;
const LONG: Duration = Duration::from_secs(180);

fn lines(tag: &str, n: usize, size: usize) -> Vec<Vec<u8>> {
    numbered_lines(tag, n, size)
}

/// Writes `lines` into the FIFO from another thread (it blocks while the daemon pauses reading).
fn writer(fifo: &Path, lines: Vec<Vec<u8>>) -> JoinHandle<()> {
    spawn_writer(fifo, lines, 1000, LONG)
}

/// Checks that every line arrived at least once and nothing else did; returns the duplicates.
fn check_delivery(received: &[Vec<u8>], sent: &[Vec<u8>]) -> usize {
    let mut counts: HashMap<&[u8], usize> = HashMap::with_capacity(sent.len());
    for l in received {
        *counts.entry(l.as_slice()).or_default() += 1;
    }
    for (i, l) in sent.iter().enumerate() {
        assert!(
            counts.contains_key(l.as_slice()),
            "line {i} never arrived: {:?}",
            String::from_utf8_lossy(&l[..l.len().min(40)])
        );
    }
    assert_eq!(
        counts.len(),
        sent.len(),
        "lines that were never written arrived"
    );
    received.len() - sent.len()
}

fn start(dir: &TempDir, endpoint: &str, extra: &[&str]) -> (Daemon, PathBuf) {
    let fifo = dir.join("in.pipe");
    let mut args = kinesis_args(fifo.to_str().unwrap(), &["--flush-interval", "100ms"]);
    args.extend_from_slice(extra);
    let daemon = Daemon::start(dir, &args, &aws_env(endpoint));
    wait_until(LONG, "the FIFO", || fifo.exists());
    (daemon, fifo)
}

fn spooled_lines(dir: &Path) -> Vec<Vec<u8>> {
    spool_files(dir)
        .iter()
        .flat_map(|p| {
            fs::read(p)
                .unwrap()
                .split(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Where lines wait while they cannot be delivered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Memory only.
    Memory,
    /// Memory, then the failed-attempts directory.
    Spool,
    /// The journal (`--durable`).
    Journal,
}

/// The options for `keep`, with the failed-attempts directory `failed`.
fn keep_args(keep: Keep, failed: &Path) -> Vec<&str> {
    let dir = failed.to_str().unwrap();
    match keep {
        Keep::Memory => vec![],
        Keep::Spool => vec!["--failed-attempts-dir", dir],
        Keep::Journal => vec!["--failed-attempts-dir", dir, "--durable"],
    }
}

/// The endpoint refuses connections for 10 s, then comes back.
fn refused_then_back(keep: Keep) {
    let name = match keep {
        Keep::Memory => "refused-nospool",
        Keep::Spool => "refused-spool",
        Keep::Journal => "refused-durable",
    };
    let spool = keep == Keep::Spool;
    let dir = TempDir::new(name);
    let failed = dir.join("failed");
    let port = free_port();
    let mut extra = vec!["--max-buffer-bytes", "10MiB"];
    extra.extend(keep_args(keep, &failed));
    let (daemon, fifo) = start(&dir, &format!("http://127.0.0.1:{port}"), &extra);
    let sent = lines(name, N, 200);
    let w = writer(&fifo, sent.clone());
    let outage_end = Instant::now() + Duration::from_secs(10);
    if spool {
        // Memory fills, then batches go to disk and reading continues.
        wait_until(
            Duration::from_secs(10),
            "spool files during the outage",
            || !spool_files(&failed).is_empty(),
        );
    }
    if keep == Keep::Journal {
        // Memory fills; reading goes on into the journal.
        wait_until(
            Duration::from_secs(10),
            "the journal to grow past memory",
            || daemon.stat("journal_bytes") > 10 << 20,
        );
    }
    thread::sleep(outage_end.saturating_duration_since(Instant::now()));
    if spool {
        assert!(w.is_finished() || daemon.stat("lines_spooled") > 0);
    } else if keep == Keep::Journal {
        assert!(spool_files(&failed).is_empty(), "the journal is the spool");
    } else {
        assert!(
            !w.is_finished(),
            "without a spool the writer must wait during the outage"
        );
    }
    let server = FakeKinesis::on_port(port, "test-stream", |_, _| Reply::Accept);
    w.join().unwrap();
    wait_until(LONG, "every line", || server.received_count() >= N);
    if spool {
        wait_until(LONG, "an empty spool", || spool_files(&failed).is_empty());
    }
    if keep == Keep::Journal {
        wait_until(LONG, "an empty journal", || {
            daemon.stat("journal_bytes") == 0
        });
    }
    let log = stop_cleanly(daemon);
    let dups = check_delivery(&server.received(), &sent);
    println!(
        "{name}: {N} lines, {dups} duplicates, {} spooled",
        stat_from(&log, "lines_spooled")
    );
    assert_eq!(dups, 0);
    assert_eq!(server.problems(), Vec::<String>::new());
}

#[test]
fn connections_refused_for_10s_without_a_spool() {
    refused_then_back(Keep::Memory);
}

#[test]
fn connections_refused_for_10s_with_a_spool() {
    refused_then_back(Keep::Spool);
}

#[test]
fn connections_refused_for_10s_with_durable() {
    refused_then_back(Keep::Journal);
}

/// A cheap, repeatable hash for choosing faults.
fn mix(a: usize, b: usize) -> u64 {
    let mut x = (a as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (b as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

#[test]
fn throttling_server_errors_and_slow_answers_lose_and_repeat_nothing() {
    throttling_server_errors_and_slow_answers(Keep::Memory);
}

#[test]
fn throttling_server_errors_and_slow_answers_lose_and_repeat_nothing_with_durable() {
    throttling_server_errors_and_slow_answers(Keep::Journal);
}

fn throttling_server_errors_and_slow_answers(keep: Keep) {
    let dir = TempDir::new("faults-mixed");
    let failed = dir.join("failed");
    let server =
        FakeKinesis::with_behaviour("test-stream", false, |n, req| match mix(n, 0) % 100 {
            0..=9 => Reply::Error(
                500,
                r#"{"__type":"InternalFailure","message":"boom"}"#.into(),
            ),
            10 => Reply::Slow(Duration::from_millis(1500)),
            _ => {
                let throttled: Vec<usize> = (0..req.records.len())
                    .filter(|&i| mix(n, i + 1).is_multiple_of(5))
                    .collect();
                Reply::FailRecords(throttled, "ProvisionedThroughputExceededException")
            }
        });
    let mut extra = vec!["--request-timeout", "1s"];
    extra.extend(keep_args(keep, &failed));
    let (daemon, fifo) = start(&dir, &server.url, &extra);
    let sent = lines("mixed", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    wait_until(LONG, "every line", || server.received_count() >= N);
    let log = stop_cleanly(daemon);
    let dups = check_delivery(&server.received(), &sent);
    println!(
        "throttling 20% of records, 10% 500s, 1% slow answers{}: {N} lines, {dups} duplicates, {} retries, {} throttled records",
        if keep == Keep::Journal { " (--durable)" } else { "" },
        stat_from(&log, "retries"),
        stat_from(&log, "throttled_records")
    );
    assert_eq!(dups, 0);
    assert!(
        stat_from(&log, "throttled_records") > 0 && log.contains("timeout"),
        "{log}"
    );
    assert_eq!(server.problems(), Vec::<String>::new());
}

#[test]
fn dropped_connections_may_repeat_but_lose_nothing() {
    dropped_connections(Keep::Memory);
}

#[test]
fn dropped_connections_may_repeat_but_lose_nothing_with_durable() {
    dropped_connections(Keep::Journal);
}

fn dropped_connections(keep: Keep) {
    let dir = TempDir::new("faults-hangup");
    let failed = dir.join("failed");
    let server = FakeKinesis::with_behaviour("test-stream", false, |n, _| {
        if mix(n, 7) % 100 < 5 {
            Reply::HangUp {
                processed: n % 2 == 0,
            }
        } else {
            Reply::Accept
        }
    });
    let (daemon, fifo) = start(&dir, &server.url, &keep_args(keep, &failed));
    let sent = lines("hangup", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    wait_until(LONG, "every line", || check_all(&server, &sent));
    stop_cleanly(daemon);
    let dups = check_delivery(&server.received(), &sent);
    println!(
        "5% of connections closed mid-request{}: {N} lines, {dups} duplicates",
        if keep == Keep::Journal {
            " (--durable)"
        } else {
            ""
        }
    );
}

/// Whether every sent line has arrived (duplicates allowed).
fn check_all(server: &FakeKinesis, sent: &[Vec<u8>]) -> bool {
    if server.received_count() < sent.len() {
        return false;
    }
    let got: std::collections::HashSet<Vec<u8>> = server.received().into_iter().collect();
    sent.iter().all(|l| got.contains(l))
}

#[test]
fn a_stream_being_created_for_10s_then_success() {
    stream_being_created(Keep::Spool);
}

#[test]
fn a_stream_being_created_for_10s_then_success_with_durable() {
    stream_being_created(Keep::Journal);
}

fn stream_being_created(keep: Keep) {
    let dir = TempDir::new("faults-notfound");
    let failed = dir.join("failed");
    let born = Instant::now() + Duration::from_secs(10);
    let server = FakeKinesis::with_behaviour("test-stream", false, move |_, _| {
        if Instant::now() < born {
            Reply::Error(400, r#"{"__type":"ResourceNotFoundException","message":"Stream test-stream under account 123456789012 not found."}"#.into())
        } else {
            Reply::Accept
        }
    });
    let (daemon, fifo) = start(
        &dir,
        &server.url,
        &[keep_args(keep, &failed), vec!["--retry-interval", "1s"]].concat(),
    );
    let sent = lines("notfound", N, 100);
    writer(&fifo, sent.clone()).join().unwrap();
    wait_until(LONG, "every line", || server.received_count() >= N);
    wait_until(LONG, "an empty spool", || spool_files(&failed).is_empty());
    if keep == Keep::Journal {
        wait_until(LONG, "an empty journal", || {
            daemon.stat("journal_bytes") == 0
        });
    }
    let log = stop_cleanly(daemon);
    let dups = check_delivery(&server.received(), &sent);
    let logged = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("ResourceNotFoundException"))
        .count();
    let mode = if keep == Keep::Journal {
        " (--durable)"
    } else {
        ""
    };
    println!(
        "stream missing for 10 s{mode}: {N} lines, {dups} duplicates, {} replayed, error logged {logged} time(s)",
        stat_from(&log, "lines_replayed")
    );
    assert_eq!(dups, 0);
    assert_eq!(logged, 1, "a distinct error is logged once:\n{log}");
}

/// SIGTERM (`kill9`: SIGKILL) during an outage, then a restart with the endpoint back: the
/// spooled lines are replayed and the spool ends empty.
fn stop_during_outage_then_restart(kill9: bool) {
    let name = if kill9 { "kill9" } else { "sigterm" };
    let dir = TempDir::new(name);
    let failed = dir.join("failed");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let extra = [
        "--max-buffer-bytes",
        "10MiB",
        "--failed-attempts-dir",
        failed.to_str().unwrap(),
        "--shutdown-timeout",
        "1s",
    ];
    let (mut daemon, fifo) = start(&dir, &endpoint, &extra);
    let sent = lines(name, N, 150);
    writer(&fifo, sent.clone()).join().unwrap();
    wait_until(LONG, "every line read", || {
        daemon.stat("lines_read") == N as u64
    });
    let expected: Vec<Vec<u8>> = if kill9 {
        daemon.signal(Signal::SIGKILL);
        daemon.wait_exit(LONG);
        // Lines still in memory at a crash are lost; those on disk must all come through.
        spooled_lines(&failed)
    } else {
        let t = Instant::now();
        let log = stop_cleanly(daemon);
        println!("{name}: stopped in {:.2} s", t.elapsed().as_secs_f64());
        assert!(log.contains("stopping"), "{log}");
        sent.clone()
    };
    let on_disk = spooled_lines(&failed);
    for f in spool_files(&failed) {
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    if !kill9 {
        assert_eq!(on_disk.len(), N, "every line is on disk after the stop");
    }
    assert!(!expected.is_empty());
    let server = FakeKinesis::on_port(port, "test-stream", |_, _| Reply::Accept);
    let (daemon, _) = start(
        &TempDir::new(&format!("{name}-again")),
        &endpoint,
        &extra[2..],
    );
    wait_until(LONG, "the spooled lines", || {
        server.received_count() >= expected.len() && spool_files(&failed).is_empty()
    });
    stop_cleanly(daemon);
    let got = server.received();
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for l in &got {
        *counts.entry(l).or_default() += 1;
    }
    for l in &expected {
        assert!(
            counts.contains_key(l.as_slice()),
            "a spooled line was not replayed"
        );
    }
    let dups = got.len() - counts.len();
    println!(
        "{name} during an outage: {} lines on disk, {} replayed after restart, {dups} duplicates",
        on_disk.len(),
        got.len()
    );
    assert_eq!(dups, 0);
}

#[test]
fn sigterm_during_an_outage_spools_and_a_restart_replays() {
    stop_during_outage_then_restart(false);
}

#[test]
fn kill_9_during_an_outage_keeps_what_was_spooled() {
    stop_during_outage_then_restart(true);
}

/// A 30 s outage: memory stays within budget + 8 MB; without a spool writers block; with one,
/// reading continues and files appear; with `--durable`, reading continues into the journal.
fn memory_during_outage(keep: Keep) {
    let name = match keep {
        Keep::Memory => "memory-nospool",
        Keep::Spool => "memory-spool",
        Keep::Journal => "memory-durable",
    };
    let spool = keep != Keep::Memory;
    let dir = TempDir::new(name);
    let failed = dir.join("failed");
    let port = free_port();
    let extra = keep_args(keep, &failed);
    let (daemon, fifo) = start(&dir, &format!("http://127.0.0.1:{port}"), &extra);
    // 400,000 lines of 100 bytes: about 45 MB with partition keys, over the 32 MiB default.
    let sent = lines(name, 4 * N, 100);
    let w = writer(&fifo, sent.clone());
    let end = Instant::now() + Duration::from_secs(30);
    let done = Arc::new(AtomicBool::new(false));
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(500));
        done.store(w.is_finished(), Ordering::Relaxed);
    }
    let peak = peak_rss_kib(daemon.pid());
    let budget_kib = 32 * 1024;
    println!("{name}: peak RSS {peak} KiB during a 30 s outage (budget {budget_kib} KiB); writer finished: {}", w.is_finished());
    assert!(peak <= budget_kib + 8 * 1024, "peak RSS {peak} KiB");
    if keep == Keep::Journal {
        assert!(w.is_finished(), "with --durable, reading continues");
        assert!(spool_files(&failed).is_empty(), "the journal is the spool");
        assert!(daemon.stat("journal_bytes") >= 4 * N as u64 * 101);
    } else if spool {
        assert!(w.is_finished(), "with a spool, reading continues");
        assert!(!spool_files(&failed).is_empty());
    } else {
        assert!(!w.is_finished(), "without a spool, writers wait");
    }
    let server = FakeKinesis::on_port(port, "test-stream", |_, _| Reply::Accept);
    w.join().unwrap();
    wait_until(LONG, "every line", || server.received_count() >= sent.len());
    stop_cleanly(daemon);
    assert_eq!(check_delivery(&server.received(), &sent), 0);
}

#[test]
fn memory_stays_within_budget_during_an_outage_without_a_spool() {
    memory_during_outage(Keep::Memory);
}

#[test]
fn reading_continues_during_an_outage_with_a_spool() {
    memory_during_outage(Keep::Spool);
}

#[test]
fn reading_continues_into_the_journal_within_the_memory_budget_with_durable() {
    memory_during_outage(Keep::Journal);
}

#[test]
fn hostile_input_a_100mb_line_binary_crlf_and_empty_lines() {
    let dir = TempDir::new("hostile");
    let failed = dir.join("failed");
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let (daemon, fifo) = start(
        &dir,
        &server.url,
        &["--failed-attempts-dir", failed.to_str().unwrap()],
    );
    let mut sent = Vec::with_capacity(N);
    let mut w = open_writer(&fifo, LONG);
    for i in 0..N {
        let mut line = format!("hostile-{i:08}-").into_bytes();
        match i % 4 {
            0 => line.extend_from_slice(&[0, 1, 2, 0xff, 0xfe, b'\t', 0]),
            1 => line.extend_from_slice("naïve ✓".as_bytes()),
            _ => {}
        }
        let mut wire = line.clone();
        if i % 3 == 0 {
            wire.push(b'\r');
        }
        wire.push(b'\n');
        if i % 10 == 0 {
            wire.push(b'\n'); // an empty line
        }
        w.write_all(&wire).unwrap();
        sent.push(line);
        if i == N / 2 {
            // 100 MB without a newline, then the rest of the input.
            let chunk = vec![b'z'; 1 << 20];
            for _ in 0..100 {
                w.write_all(&chunk).unwrap();
            }
            w.write_all(b"\n").unwrap();
        }
    }
    drop(w);
    wait_until(LONG, "every line", || server.received_count() >= N);
    let oversized: Vec<PathBuf> = fs::read_dir(failed.join("oversized"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let peak = peak_rss_kib(daemon.pid());
    let log = stop_cleanly(daemon);
    let dups = check_delivery(&server.received(), &sent);
    assert_eq!(dups, 0);
    assert_eq!(oversized.len(), 1, "{oversized:?}");
    assert_eq!(fs::metadata(&oversized[0]).unwrap().len(), 100 << 20);
    assert_eq!(stat_from(&log, "empty_lines"), (N / 10) as u64);
    assert_eq!(stat_from(&log, "oversized_lines"), 1);
    println!("hostile input: {N} lines, {dups} duplicates, a 100 MiB line kept on disk; peak RSS {peak} KiB");
    assert!(peak <= (32 + 8) * 1024, "peak RSS {peak} KiB");
}
