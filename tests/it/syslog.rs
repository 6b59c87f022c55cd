//! The README's recipes with the real writers: syslog-ng and rsyslog (Debian's packages,
//! unpacked under target/peers by `scripts/peers`) take messages on a TCP port on 127.0.0.1
//! and write them into the daemon's FIFO with the configuration in contrib/; the daemon
//! publishes them to kinesalite. Midway the daemon is stopped, and started again two seconds
//! later, while the messages keep coming; every message must arrive once, in order.
//!
//! What the writers do meanwhile (printed by each test): both hold the FIFO open read-write,
//! so the pipe and what it holds outlive the daemon. syslog-ng with `flags(flow-control)`
//! waits when the FIFO is full. rsyslog's `ompipe` writes non-blocking: a message that finds
//! the FIFO full is retried a second later, after messages behind it (with the recipe's
//! action queue; without one it is dropped), so rsyslog keeps order only while the FIFO has
//! room — the last test fills it on purpose and checks that nothing is lost.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::syslog::SyslogDaemon;
use crate::support::*;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(30);
/// Lines the first daemon reads before it is stopped.
const RESTART_AFTER: u64 = 5_000;
/// How long no fifo2kinesis runs (a restart by a service manager takes about this long).
const DOWN_FOR: Duration = Duration::from_secs(2);

/// How a test sends its messages.
struct Pace {
    messages: usize,
    /// Messages sent a millisecond; 0: as fast as the syslog daemon takes them.
    per_ms: usize,
    /// Whether the messages must arrive in the order sent (or only each once).
    in_order: bool,
}

/// Starts fifo2kinesis and waits until it reads (a SIGUSR1 before it has set up its signal
/// handling would end it).
fn start(dir: &TempDir, fifo: &Path, url: &str) -> Daemon {
    let daemon = Daemon::start(
        dir,
        &[
            "--fifo-name",
            fifo.to_str().unwrap(),
            "--stream-name",
            "syslog",
            "--flush-interval",
            "200ms",
        ],
        &aws_env(url),
    );
    daemon.wait_log(" reading ", LONG);
    daemon
}

/// Sends messages through the syslog daemon `start_writer` starts, restarting fifo2kinesis
/// after RESTART_AFTER lines, and checks kinesalite holds every message once (and in order,
/// if the pace says so).
fn every_message_arrives_across_a_restart(
    name: &str,
    start_writer: fn(&TempDir, &Path) -> SyslogDaemon,
    pace: Pace,
) {
    let Pace {
        messages: count,
        per_ms,
        in_order,
    } = pace;
    let peer = Peer::kinesalite();
    let client = AwsClient::test_keys(&peer.url);
    client.create_stream("syslog");
    let shared = TempDir::new(name);
    let (first_dir, second_dir) = (
        TempDir::new(&format!("{name}-first")),
        TempDir::new(&format!("{name}-second")),
    );
    let fifo = shared.join("fifo2kinesis.pipe");
    let mut first = start(&first_dir, &fifo, &peer.url);
    wait_until(LONG, "the FIFO", || fifo.exists());
    let writer = start_writer(&shared, &fifo);

    let messages: Vec<String> = (0..count)
        .map(|i| format!("seq {i:06} {}", "x".repeat(i % 200)))
        .collect();
    let started = Instant::now();
    let sending = {
        let messages = messages.clone();
        let port = writer.port;
        thread::spawn(move || SyslogDaemon::send_to(port, &messages, per_ms))
    };

    wait_until(LONG, "the first daemon to read its share", || {
        first.stat("lines_read") >= RESTART_AFTER
    });
    first.signal(Signal::SIGTERM);
    let status = first.wait_exit(LONG);
    assert!(status.success(), "{}", first.stderr());
    let read_by_first = stat_from(&first.stderr(), "lines_read");
    let stopped_at = started.elapsed();
    let mode = writer.fifo_mode(&fifo);
    println!("{name}: holds the FIFO {mode:?} after the first daemon stopped");
    // The outage itself, not a wait for something: the writer goes on meanwhile.
    thread::sleep(DOWN_FOR);
    let mut second = start(&second_dir, &fifo, &peer.url);
    let restarted_at = started.elapsed();

    sending.join().unwrap();
    let sent_at = started.elapsed();
    let want = count as u64 - read_by_first;
    let deadline = Instant::now() + LONG;
    while second.stat("lines_read") < want {
        if Instant::now() >= deadline {
            let got = client.read_all("syslog");
            let missing: Vec<&String> = messages
                .iter()
                .filter(|m| !got.iter().any(|r| r.ends_with(m.as_bytes())))
                .collect();
            panic!(
                "the second daemon read {} of {want}; {} records in the stream, missing {:?}; \
                 {name} holds the FIFO {:?} and said:\n{}\nthe second daemon said:\n{}",
                second.stat("lines_read"),
                got.len(),
                missing
                    .iter()
                    .take(20)
                    .map(|m| &m[..10])
                    .collect::<Vec<_>>(),
                writer.fifo_mode(&fifo),
                writer.log(),
                second.stderr()
            );
        }
    }
    second.signal(Signal::SIGTERM);
    assert!(second.wait_exit(LONG).success(), "{}", second.stderr());
    assert_eq!(stat_from(&second.stderr(), "lines_read"), want);

    let got = client.read_all("syslog");
    let position: std::collections::HashMap<&[u8], usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_bytes(), i))
        .collect();
    // Each record is "<date> <host> app[42]: <message>".
    let sent_as: Vec<Option<usize>> = got
        .iter()
        .map(|r| {
            let at = r.windows(9).position(|w| w == b"app[42]: ")?;
            position.get(&r[at + 9..]).copied()
        })
        .collect();
    let out_of_order = sent_as.windows(2).filter(|w| w[0] > w[1]).count();
    println!(
        "{name}: {count} sent, {} arrived, {out_of_order} after a later one; the first daemon \
         read {read_by_first} and stopped at {stopped_at:.2?}, the second started at \
         {restarted_at:.2?}, sending ended at {sent_at:.2?}; with no reader {name} held the \
         FIFO open {}",
        got.len(),
        mode.unwrap_or("not at all")
    );
    println!("{name} said:\n{}", writer.log());
    assert_eq!(got.len(), count, "messages lost or repeated");
    assert!(
        sent_as.iter().all(Option::is_some),
        "a record is not a message sent: {:?}",
        got.iter()
            .zip(&sent_as)
            .find(|(_, s)| s.is_none())
            .map(|(r, _)| String::from_utf8_lossy(r))
    );
    let mut each: Vec<usize> = sent_as.iter().flatten().copied().collect();
    each.sort_unstable();
    each.dedup();
    assert_eq!(each.len(), count, "a message arrived twice");
    if in_order {
        assert_eq!(out_of_order, 0, "messages arrived out of order");
    }
}

#[test]
fn syslog_ng_messages_all_arrive_in_order_across_a_restart() {
    let pace = Pace {
        messages: 20_000,
        per_ms: 5,
        in_order: true,
    };
    every_message_arrives_across_a_restart("syslog-ng", SyslogDaemon::syslog_ng, pace);
}

/// 1,000 messages a second: what rsyslog writes while no daemon runs fits in the FIFO.
#[test]
fn rsyslog_messages_all_arrive_in_order_across_a_restart() {
    let pace = Pace {
        messages: 10_000,
        per_ms: 1,
        in_order: true,
    };
    every_message_arrives_across_a_restart("rsyslog", SyslogDaemon::rsyslog, pace);
}

/// As fast as rsyslog takes them: the FIFO fills while no daemon runs. Nothing is lost; the
/// messages that found it full come a little later (the count is printed).
#[test]
fn rsyslog_loses_nothing_when_the_fifo_fills() {
    let pace = Pace {
        messages: 20_000,
        per_ms: 0,
        in_order: false,
    };
    every_message_arrives_across_a_restart("rsyslog-full", SyslogDaemon::rsyslog, pace);
}

/// The README shows the recipes exactly as the tests use them.
#[test]
fn the_readme_recipes_are_the_tested_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    for recipe in ["syslog-ng/fifo2kinesis.conf", "rsyslog/fifo2kinesis.conf"] {
        let text = fs::read_to_string(root.join("contrib").join(recipe)).unwrap();
        assert!(
            readme.contains(&text),
            "README.md does not show contrib/{recipe} as it is"
        );
    }
}
