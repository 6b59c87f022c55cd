//! `--durable`: crashes at random moments lose and cut nothing, a full disk pauses reading and
//! loses nothing, the journal survives a stop during an outage, and an earlier run's journal is
//! delivered without `--durable`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(180);

/// Starts the daemon on `fifo` for an endpoint that may not answer yet, and waits for the FIFO.
fn start_with_endpoint(dir: &TempDir, fifo: &Path, endpoint: &str, extra: &[&str]) -> Daemon {
    let daemon = Daemon::start(
        dir,
        &kinesis_args(fifo.to_str().unwrap(), extra),
        &aws_env(endpoint),
    );
    wait_until(LONG, "the FIFO", || {
        assert!(!daemon.has_exited(), "{}", daemon.stderr());
        fifo.exists()
    });
    daemon
}

/// A cheap, repeatable hash for choosing moments.
fn mix(a: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^ (x >> 29)
}

/// Starts the daemon on `fifo` with its log in a directory of its own (restarts keep every
/// run's log).
fn start_run(run: usize, fifo: &Path, server: &FakeKinesis, extra: &[&str]) -> (Daemon, TempDir) {
    let logs = TempDir::new(&format!("durable-run-{run}"));
    let daemon = start_daemon(&logs, fifo, server, extra);
    // Signals are handled from here on (SIGUSR1 for the counters would end it before).
    daemon.wait_log("INFO reading ", LONG);
    (daemon, logs)
}

/// What arrived against what was written: (lost, cut or foreign, duplicates).
fn tally(received: &[Vec<u8>], sent: &[Vec<u8>]) -> (usize, usize, usize) {
    let sent_set: HashSet<&[u8]> = sent.iter().map(Vec::as_slice).collect();
    let mut counts: HashMap<&[u8], usize> = HashMap::with_capacity(sent.len());
    let mut foreign = 0;
    for l in received {
        if sent_set.contains(l.as_slice()) {
            *counts.entry(l.as_slice()).or_default() += 1;
        } else {
            foreign += 1;
        }
    }
    let lost = sent.len() - counts.len();
    let dups = counts.values().map(|c| c - 1).sum();
    (lost, foreign, dups)
}

/// A writer that holds the FIFO open read-write, as syslog-ng and rsyslog do, and writes
/// `lines` at a steady pace (whole lines per write), so that kills land while it writes.
fn steady_writer(
    fifo: &Path,
    lines: Vec<Vec<u8>>,
    done: Arc<AtomicBool>,
    written: Arc<AtomicUsize>,
) -> thread::JoinHandle<()> {
    let fifo = fifo.to_path_buf();
    thread::spawn(move || {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        for chunk in lines.chunks(300) {
            write_lines_atomically(&mut f, chunk);
            written.fetch_add(chunk.len(), Ordering::Relaxed);
            thread::sleep(Duration::from_millis(3));
        }
        done.store(true, Ordering::Relaxed);
        // Held open until the last run ended, as a syslog daemon would.
        while done.load(Ordering::Relaxed) {
            thread::sleep(Duration::from_millis(20));
        }
    })
}

/// 300,000 lines while the daemon is killed with SIGKILL at 10 moments and restarted at once.
fn killed_ten_times(durable: bool) -> (usize, usize, usize, u64) {
    let name = if durable {
        "kill-durable"
    } else {
        "kill-plain"
    };
    let dir = TempDir::new(name);
    let fifo = dir.join("in.pipe");
    let failed = dir.join("failed");
    let server = FakeKinesis::start("test-stream");
    let mut extra = vec![
        "--failed-attempts-dir",
        failed.to_str().unwrap(),
        "--flush-interval",
        "100ms",
    ];
    if durable {
        extra.push("--durable");
    }
    let (mut daemon, mut logs) = start_run(0, &fifo, &server, &extra);
    let sent = numbered_lines(name, 300_000, 100);
    let done = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = steady_writer(&fifo, sent.clone(), Arc::clone(&done), Arc::clone(&written));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut moments = Vec::new();
    for k in 0..10u64 {
        // Between 100 and 600 ms after the last start: during reading, batching and sending.
        let wait = Duration::from_millis(100 + mix(seed ^ k) % 500);
        thread::sleep(wait);
        moments.push(written.load(Ordering::Relaxed));
        daemon.signal(Signal::SIGKILL);
        daemon.wait_exit(LONG);
        (daemon, logs) = start_run(k as usize + 1, &fifo, &server, &extra);
    }
    wait_until(LONG, "the writer", || done.load(Ordering::Relaxed));
    let during = moments.iter().filter(|&&w| w > 0 && w < sent.len()).count();
    assert!(
        during >= 5,
        "most kills land while the writer writes: {moments:?}"
    );
    // Everything the writer wrote is read and delivered (or, without --durable, lost): with
    // --durable, until every line arrived and the journal is empty; without, until nothing
    // more arrives for 2 s with nothing in memory.
    let mut last = (usize::MAX, Instant::now());
    wait_until(LONG, "the last run to catch up", || {
        let got = server.received_count();
        if durable {
            // Every line, not as many as were sent: the kills' duplicates count in `got`.
            return got >= sent.len()
                && missing(&sent, &server.received()) == 0
                && daemon.stat("journal_bytes") == 0;
        }
        if got != last.0 {
            last = (got, Instant::now());
        }
        last.1.elapsed() > Duration::from_secs(2) && daemon.stat("buffered_bytes") == 0
    });
    let log = stop_cleanly(daemon);
    done.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    drop(logs);
    let (lost, cut, dups) = tally(&server.received(), &sent);
    let resent = stat_from(&log, "lines_resent");
    println!(
        "{name}: {} lines, SIGKILL with {moments:?} lines written: {lost} lost, {cut} cut or foreign, {dups} duplicates (last run counted {resent} possible duplicates)",
        sent.len()
    );
    (lost, cut, dups, resent)
}

#[test]
fn sigkill_at_ten_random_moments_loses_and_cuts_nothing_with_durable() {
    let (lost, cut, _dups, _) = killed_ten_times(true);
    assert_eq!(lost, 0, "lines lost");
    assert_eq!(cut, 0, "lines cut in two or foreign");
}

#[test]
fn sigkill_at_ten_random_moments_without_durable_prints_what_it_lost() {
    // Not asserted: what the default mode loses to crashes, for comparison.
    killed_ten_times(false);
}

/// Mounts a tmpfs of `size` at `at` (the tests run as root in CI); unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        s.blocks_available() as u64 * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_pauses_reading_and_every_line_arrives_once_space_is_freed() {
    let dir = TempDir::new("disk-full");
    let failed = dir.join("failed");
    let disk = Tmpfs::mount(&failed, "4m");
    // Leave about 600 KiB: the journal fills it while the stream is down.
    let filler = failed.join("filler");
    let free = disk.free();
    fs::write(&filler, vec![0u8; (free - 600 * 1024) as usize]).unwrap();
    let port = free_port();
    let fifo = dir.join("in.pipe");
    let daemon = start_with_endpoint(
        &dir,
        &fifo,
        &format!("http://127.0.0.1:{port}"),
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--durable",
            "--flush-interval",
            "100ms",
        ],
    );
    // 20,000 lines of 100 bytes: 2 MB, more than the disk has left.
    let sent = numbered_lines("diskfull", 20_000, 100);
    let w = spawn_writer(&fifo, sent.clone(), 100, LONG);
    daemon.wait_log("cannot write the journal", LONG);
    thread::sleep(Duration::from_secs(2));
    assert!(!w.is_finished(), "reading pauses: the writer waits");
    assert!(
        disk.free() < 64 * 1024,
        "the disk is full: {} bytes free",
        disk.free()
    );
    assert_eq!(daemon.stat("lines_dropped"), 0);
    // Space comes back and the stream with it.
    fs::remove_file(&filler).unwrap();
    let server = FakeKinesis::on_port(port, "test-stream", |_, _| Reply::Accept);
    w.join().unwrap();
    wait_until(LONG, "every line", || server.received_count() >= sent.len());
    daemon.wait_log("the journal takes writes again", LONG);
    let log = stop_cleanly(daemon);
    let (lost, cut, dups) = tally(&server.received(), &sent);
    println!(
        "disk full: {} lines, {lost} lost, {cut} cut, {dups} duplicates; lines_dropped={}",
        sent.len(),
        stat_from(&log, "lines_dropped")
    );
    assert_eq!((lost, cut, dups), (0, 0, 0));
    assert_eq!(stat_from(&log, "lines_dropped"), 0);
    drop(disk);
}

/// SIGTERM or SIGKILL during an outage with `--durable`: every line written is in the journal
/// (0600), none in spool files, and the next run delivers all of them once.
fn durable_stop_during_an_outage(kill9: bool) {
    let name = if kill9 {
        "durable-kill9"
    } else {
        "durable-sigterm"
    };
    let dir = TempDir::new(name);
    let failed = dir.join("failed");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let extra = [
        "--failed-attempts-dir",
        failed.to_str().unwrap(),
        "--durable",
        "--shutdown-timeout",
        "1s",
        "--max-buffer-bytes",
        "10MiB",
    ];
    let fifo = dir.join("in.pipe");
    let mut daemon = start_with_endpoint(&dir, &fifo, &endpoint, &extra);
    let sent = numbered_lines(name, 100_000, 150);
    spawn_writer(&fifo, sent.clone(), 1000, LONG)
        .join()
        .unwrap();
    // 15 MB: more than memory holds; the rest waits in the journal.
    wait_until(LONG, "every byte in the journal", || {
        daemon.stat("journal_bytes") >= 100_000 * 151
    });
    if kill9 {
        daemon.signal(Signal::SIGKILL);
        daemon.wait_exit(LONG);
    } else {
        let log = stop_cleanly(daemon);
        assert_eq!(stat_from(&log, "lines_dropped"), 0, "{log}");
    }
    assert!(
        spool_files(&failed).is_empty(),
        "the journal is the spool: no second copy"
    );
    let journal = failed.join("journal");
    let segments: Vec<PathBuf> = fs::read_dir(&journal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(segments.len() > 1, "{segments:?}");
    for f in &segments {
        assert_eq!(
            fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{f:?}"
        );
    }
    let server = FakeKinesis::on_port(port, "test-stream", |_, _| Reply::Accept);
    let again = TempDir::new(&format!("{name}-again"));
    let daemon = start_daemon_with_env(&again, &fifo, &extra, &aws_env(&endpoint));
    wait_until(LONG, "every line", || server.received_count() >= sent.len());
    wait_until(LONG, "an empty journal", || {
        daemon.stat("journal_bytes") == 0
    });
    let log = stop_cleanly(daemon);
    let (lost, cut, dups) = tally(&server.received(), &sent);
    println!(
        "{name} during an outage: {} lines, {lost} lost, {cut} cut, {dups} duplicates after the restart",
        sent.len()
    );
    assert_eq!((lost, cut, dups), (0, 0, 0), "{log}");
}

#[test]
fn sigterm_during_an_outage_keeps_every_line_in_the_journal() {
    durable_stop_during_an_outage(false);
}

#[test]
fn kill_9_during_an_outage_keeps_every_line_in_the_journal() {
    durable_stop_during_an_outage(true);
}

#[test]
fn a_journal_left_by_a_durable_run_is_delivered_without_durable() {
    let dir = TempDir::new("journal-plain");
    let failed = dir.join("failed");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let fifo = dir.join("in.pipe");
    let args = [
        "--failed-attempts-dir",
        failed.to_str().unwrap(),
        "--shutdown-timeout",
        "1s",
    ];
    let durable: Vec<&str> = args.iter().copied().chain(["--durable"]).collect();
    let daemon = start_with_endpoint(&dir, &fifo, &endpoint, &durable);
    let sent = numbered_lines("leftover", 1000, 50);
    spawn_writer(&fifo, sent.clone(), 100, LONG).join().unwrap();
    wait_until(LONG, "every line read", || {
        daemon.stat("lines_read") == 1000
    });
    stop_cleanly(daemon);
    let server = FakeKinesis::on_port(port, "test-stream", |_, _| Reply::Accept);
    let again = TempDir::new("journal-plain-again");
    let daemon = start_daemon_with_env(&again, &fifo, &args, &aws_env(&endpoint));
    daemon.wait_log("holds", LONG);
    wait_until(LONG, "every line", || server.received_count() >= sent.len());
    let log = stop_cleanly(daemon);
    assert_eq!(tally(&server.received(), &sent), (0, 0, 0), "{log}");
    let left: Vec<_> = fs::read_dir(failed.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("segment-"))
        .collect();
    assert!(left.is_empty(), "delivered segments are removed: {left:?}");
}

/// The journal alone fills the disk while deliveries go through: what was delivered is given
/// back (done segments removed, the done start of the segment being written punched out) and
/// reading goes on by itself, with nothing freed by hand.
#[test]
fn a_disk_the_journal_fills_itself_gets_delivered_bytes_back_and_reading_goes_on() {
    let dir = TempDir::new("disk-self");
    let failed = dir.join("failed");
    let disk = Tmpfs::mount(&failed, "4m");
    let filler = failed.join("filler");
    fs::write(&filler, vec![0u8; (disk.free() - 300 * 1024) as usize]).unwrap();
    let server = FakeKinesis::start("test-stream");
    let fifo = dir.join("in.pipe");
    let daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--durable",
            "--flush-interval",
            "100ms",
        ],
    );
    // 3 MB through 300 KiB of free disk.
    let sent = numbered_lines("diskself", 30_000, 100);
    spawn_writer(&fifo, sent.clone(), 100, LONG).join().unwrap();
    wait_until(LONG, "every line", || server.received_count() >= sent.len());
    let log = stop_cleanly(daemon);
    let (lost, cut, dups) = tally(&server.received(), &sent);
    println!(
        "a disk with 300 KiB free: {} lines, {lost} lost, {cut} cut, {dups} duplicates; the full disk was warned about {} time(s)",
        sent.len(),
        log.matches("cannot write the journal").count()
    );
    assert_eq!((lost, cut, dups), (0, 0, 0));
    assert!(filler.exists(), "nothing was freed by hand");
    drop(disk);
}

/// `--failed-attempts-max-bytes` bounds the journal: when it is full, reading pauses and the
/// writer waits; nothing kept is deleted, and every line arrives once the stream is back.
#[test]
fn a_full_journal_pauses_the_writer_and_deletes_nothing() {
    let dir = TempDir::new("journal-cap");
    let failed = dir.join("failed");
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let fifo = dir.join("in.pipe");
    let daemon = start_with_endpoint(
        &dir,
        &fifo,
        &endpoint,
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--durable",
            "--failed-attempts-max-bytes",
            "2MiB",
            "--max-record-bytes",
            "64KiB",
            "--max-request-bytes",
            "256KiB",
            "--max-buffer-bytes",
            "1MiB",
        ],
    );
    // 5 MB: past the journal's cap and the pipe's buffer.
    let sent = numbered_lines("cap", 50_000, 100);
    let w = spawn_writer(&fifo, sent.clone(), 100, LONG);
    daemon.wait_log("--failed-attempts-max-bytes", LONG);
    thread::sleep(Duration::from_secs(1));
    assert!(
        !w.is_finished(),
        "the writer waits while the journal is full"
    );
    let journal_bytes = |d: &Path| -> u64 {
        fs::read_dir(d.join("journal"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    assert!(journal_bytes(&failed) <= 2 << 20, "the cap holds");
    let server = FakeKinesis::on_port(port, "test-stream", |_, _| Reply::Accept);
    w.join().unwrap();
    wait_until(LONG, "every line", || server.received_count() >= sent.len());
    let log = stop_cleanly(daemon);
    let (lost, cut, dups) = tally(&server.received(), &sent);
    println!(
        "a 2 MiB journal for 5 MB: {lost} lost, {cut} cut, {dups} duplicates, lines_dropped={}",
        stat_from(&log, "lines_dropped")
    );
    assert_eq!((lost, cut, dups), (0, 0, 0));
}

/// Lines of every kind (short, empty, over-long, CRLF) from writers that hang up in the middle
/// of a line, while the daemon is killed 6 times: every short line arrives whole, every
/// over-long line is whole in `oversized/`, and nothing arrives cut.
#[test]
fn sigkill_with_over_long_lines_empty_lines_and_hang_ups_mid_line() {
    let dir = TempDir::new("kill-mixed");
    let fifo = dir.join("in.pipe");
    let failed = dir.join("failed");
    let server = FakeKinesis::start("test-stream");
    let extra = [
        "--failed-attempts-dir",
        failed.to_str().unwrap(),
        "--durable",
        "--flush-interval",
        "100ms",
        "--max-record-bytes",
        "1000",
    ];
    let (mut daemon, mut _logs) = start_run(100, &fifo, &server, &extra);
    let short = numbered_lines("mixed", 20_000, 80);
    let long: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let mut l = format!("long-{i:03}-").into_bytes();
            l.resize(3000 + i * 500, b'L');
            l
        })
        .collect();
    let (short2, long2) = (short.clone(), long.clone());
    let fifo2 = fifo.clone();
    let written = Arc::new(AtomicUsize::new(0));
    let progress = Arc::clone(&written);
    let writer = thread::spawn(move || {
        for (i, chunk) in short2.chunks(1000).enumerate() {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo2)
                .unwrap();
            let mut bytes = Vec::new();
            for (j, l) in chunk.iter().enumerate() {
                bytes.extend_from_slice(l);
                bytes.extend_from_slice(if j % 7 == 0 { b"\r\n\n" } else { b"\n" });
                if j == 500 {
                    // An over-long line, written in two halves 30 ms apart: kills land
                    // while the daemon is in the middle of it.
                    std::io::Write::write_all(&mut f, &bytes).unwrap();
                    bytes.clear();
                    let l = &long2[i];
                    std::io::Write::write_all(&mut f, &l[..l.len() / 2]).unwrap();
                    thread::sleep(Duration::from_millis(30));
                    bytes.extend_from_slice(&l[l.len() / 2..]);
                    bytes.push(b'\n');
                }
            }
            // Every other writer writes its last line in two parts before it hangs up.
            let cut = if i % 2 == 0 {
                bytes.len() - 10
            } else {
                bytes.len()
            };
            std::io::Write::write_all(&mut f, &bytes[..cut]).unwrap();
            if cut < bytes.len() {
                thread::sleep(Duration::from_millis(5));
                std::io::Write::write_all(&mut f, &bytes[cut..]).unwrap();
            }
            progress.fetch_add(chunk.len(), Ordering::Relaxed);
            thread::sleep(Duration::from_millis(60));
        }
    });
    let mut moments = Vec::new();
    for k in 0..6u64 {
        thread::sleep(Duration::from_millis(150 + mix(k ^ 77) % 300));
        moments.push(written.load(Ordering::Relaxed));
        daemon.signal(Signal::SIGKILL);
        daemon.wait_exit(LONG);
        (daemon, _logs) = start_run(101 + k as usize, &fifo, &server, &extra);
    }
    writer.join().unwrap();
    assert!(
        moments.iter().filter(|&&w| w < short.len()).count() >= 4,
        "the kills land while the writers write: {moments:?}"
    );
    wait_until(LONG, "every short line", || {
        server.received_count() >= short.len()
            && missing(&short, &server.received()) == 0
            && daemon.stat("journal_bytes") == 0
    });
    stop_cleanly(daemon);
    let (lost, cut, dups) = tally(&server.received(), &short);
    let kept: Vec<Vec<u8>> = fs::read_dir(failed.join("oversized"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".partial"))
        .map(|p| fs::read(p).unwrap())
        .collect();
    let whole = long.iter().filter(|l| kept.contains(l)).count();
    println!(
        "mixed lines, SIGKILL with {moments:?} lines written: {} short lines, {lost} lost, {cut} cut, {dups} duplicates; {whole} of {} over-long lines whole in oversized/ ({} files)",
        short.len(),
        long.len(),
        kept.len()
    );
    assert_eq!((lost, cut), (0, 0));
    assert_eq!(whole, long.len(), "every over-long line is kept whole");
}

/// A journal that ends in the middle of a line (the daemon was killed) is delivered by a run
/// without `--durable`, and the line is completed from the pipe, not cut in two.
#[test]
fn a_line_a_kill_cut_is_completed_by_a_run_without_durable() {
    let dir = TempDir::new("cut-plain");
    let fifo = dir.join("in.pipe");
    let failed = dir.join("failed");
    let server = FakeKinesis::start("test-stream");
    let args = ["--failed-attempts-dir", failed.to_str().unwrap()];
    let durable: Vec<&str> = args.iter().copied().chain(["--durable"]).collect();
    let (mut daemon, _logs) = start_run(200, &fifo, &server, &durable);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    std::io::Write::write_all(&mut f, b"whole line\nfirst-half-").unwrap();
    wait_until(LONG, "the whole line", || server.received_count() == 1);
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(LONG);
    std::io::Write::write_all(&mut f, b"second-half\nnext line\n").unwrap();
    let (daemon, _logs2) = start_run(201, &fifo, &server, &args);
    wait_until(LONG, "every line", || {
        server.received().last().is_some_and(|l| l == b"next line")
    });
    stop_cleanly(daemon);
    let mut got: Vec<String> = server
        .received()
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    // The first line may come twice: the kill may beat the record of its acceptance.
    got.dedup();
    assert_eq!(got, ["whole line", "first-half-second-half", "next line"]);
}

/// FNV-1a, as the journal checks its state slots with.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A journal state file, written independently of the daemon's code: magic, sequence,
/// watermark, handed, mid-line flag, the done ranges, the checksum; two 4 KiB slots.
fn state_file(watermark: u64, mid_line: bool, done: &[(u64, u64)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(b"F2KJ");
    v.extend_from_slice(&5u64.to_le_bytes());
    v.extend_from_slice(&watermark.to_le_bytes());
    v.extend_from_slice(&watermark.to_le_bytes());
    v.push(u8::from(mid_line));
    v.extend_from_slice(&(done.len() as u32).to_le_bytes());
    for (a, b) in done {
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&b.to_le_bytes());
    }
    let s = fnv1a(&v);
    v.extend_from_slice(&s.to_le_bytes());
    v.resize(8192, 0);
    v
}

/// The journal a --durable run leaves after it released the first part of an over-long line
/// (journal full) and was killed: the rest of that line is still in the FIFO. A run without
/// --durable must not deliver that rest as a line.
#[test]
fn the_rest_of_a_released_over_long_line_is_not_a_line_without_durable() {
    for (name, watermark, mid, done) in [
        ("all-done", 53u64, true, vec![]),
        ("pending", 0u64, false, vec![(3u64, 53u64)]),
    ] {
        let dir = TempDir::new(&format!("rest-of-long-{name}"));
        let fifo = dir.join("in.pipe");
        let failed = dir.join("failed");
        let jdir = failed.join("journal");
        fs::create_dir_all(&jdir).unwrap();
        fs::set_permissions(&failed, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(&jdir, fs::Permissions::from_mode(0o700)).unwrap();
        let mut seg = b"ok\n".to_vec();
        seg.resize(53, b'L');
        fs::write(jdir.join("segment-00000000000000000000"), &seg).unwrap();
        fs::write(jdir.join("state"), state_file(watermark, mid, &done)).unwrap();
        let server = FakeKinesis::start("test-stream");
        let args = [
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--max-record-bytes",
            "40",
            "--flush-interval",
            "100ms",
        ];
        let (daemon, _logs) = start_run(300, &fifo, &server, &args);
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .unwrap();
        std::io::Write::write_all(&mut f, b"tail-of-long\nnext\n").unwrap();
        wait_until(LONG, "next", || {
            server.received().last().is_some_and(|l| l == b"next")
        });
        let log = stop_cleanly(daemon);
        let got: Vec<String> = server
            .received()
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        println!("{name}: received {got:?}");
        assert!(
            !got.iter().any(|l| l == "tail-of-long"),
            "{name}: the rest of an over-long line arrived as a line: {got:?}\n{log}"
        );
    }
}
