//! The backlog's promises where lines used to be lost or stuck: the failed-attempts cap while an
//! endless line streams in, a directory that cannot be written, over-long replayed lines at the
//! cap, replay of a large file within the memory budget, FIFOs and unremovable files in the
//! directory, a credential source hanging at the stop, and a FIFO path replaced or removed.
//! Each test names the hole it closes; every line written must be accepted, kept on disk, or
//! counted as lost with exit status 1.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(120);

fn lines(tag: &str, n: usize) -> Vec<Vec<u8>> {
    numbered_lines(tag, n, 0)
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Bytes of regular files under `dir` (recursively).
fn du(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

/// A server that answers AccessDeniedException while `refuse` is set, then accepts.
fn refusing_server(refuse: &Arc<AtomicBool>) -> FakeKinesis {
    let refuse = Arc::clone(refuse);
    FakeKinesis::with_behaviour("test-stream", false, move |_, _| {
        if refuse.load(Ordering::SeqCst) {
            Reply::Error(
                400,
                r#"{"__type":"AccessDeniedException","message":"not yet"}"#.into(),
            )
        } else {
            Reply::Accept
        }
    })
}

/// Hole 5: an endless line without a newline filled 192 MiB under a 20 MiB cap. The cap holds
/// at every moment; past it the rest of the line is dropped (logged once, counted), its first
/// part is kept, and the lines after it flow.
#[test]
fn the_failed_attempts_cap_holds_while_an_endless_line_streams_in() {
    let dir = TempDir::new("cap-long");
    let failed = dir.join("failed");
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::start("test-stream");
    let mut daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--failed-attempts-max-bytes",
            "1MiB",
            "--max-record-bytes",
            "1KiB",
            "--flush-interval",
            "50ms",
        ],
    );
    let cap = 1024 * 1024;
    let writer = {
        let fifo = fifo.clone();
        thread::spawn(move || {
            let mut w = open_writer(&fifo, LONG);
            w.write_all(b"before\n").unwrap();
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..40 {
                w.write_all(&chunk).unwrap();
            }
            w.write_all(b"\nafter\n").unwrap();
        })
    };
    let mut most = 0;
    while !writer.is_finished() {
        most = most.max(du(&failed));
        thread::sleep(Duration::from_millis(5));
    }
    writer.join().unwrap();
    wait_until(LONG, "the lines around it", || server.received_count() == 2);
    most = most.max(du(&failed));
    assert!(
        most <= cap,
        "the directory reached {most} bytes, over the {cap} cap"
    );
    daemon.signal(Signal::SIGTERM);
    assert_eq!(
        daemon.wait_exit(LONG).code(),
        Some(1),
        "a dropped line: exit 1"
    );
    assert_eq!(
        server.received(),
        vec![b"before".to_vec(), b"after".to_vec()]
    );
    let log = daemon.stderr();
    assert_eq!(log.matches("the rest of it is dropped").count(), 1, "{log}");
    assert!(log.contains("lines_dropped=1 "), "{log}");
    let partial: Vec<_> = fs::read_dir(failed.join("oversized"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(partial.len(), 1, "{partial:?}");
    assert!(partial[0].to_string_lossy().ends_with(".partial"));
    println!("largest size of the directory: {most} bytes (cap {cap})");
}

/// A daemon with a failed-attempts directory, in front of a server that refuses every request
/// (AccessDeniedException) until `refuse` is cleared.
struct Refused {
    /// Kept for the life of the test; removed when dropped.
    _dir: TempDir,
    failed: std::path::PathBuf,
    fifo: std::path::PathBuf,
    refuse: Arc<AtomicBool>,
    server: FakeKinesis,
    daemon: Daemon,
}

impl Refused {
    fn start(name: &str, extra: &[&str]) -> Refused {
        let dir = TempDir::new(name);
        let failed = dir.join("failed");
        let fifo = dir.join("in.pipe");
        let refuse = Arc::new(AtomicBool::new(true));
        let server = refusing_server(&refuse);
        let mut args = vec![
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--flush-interval",
            "50ms",
        ];
        args.extend_from_slice(extra);
        let daemon = start_daemon(&dir, &fifo, &server, &args);
        wait_until(LONG, "the directory", || failed.is_dir());
        Refused {
            _dir: dir,
            failed,
            fifo,
            refuse,
            server,
            daemon,
        }
    }
}

/// Hole 6: a write error other than "full" (here: the directory replaced by a file) dropped
/// the lines of a batch set aside for a permanent error. They are held in memory, and kept on
/// disk or delivered once that works again.
#[test]
fn lines_set_aside_are_held_in_memory_when_the_directory_cannot_be_written() {
    let mut r = Refused::start("unwritable", &["--retry-interval", "1s"]);
    fs::remove_dir_all(&r.failed).unwrap();
    fs::write(&r.failed, b"not a directory").unwrap();
    let sent = lines("held", 300);
    write_lines_atomically(&mut open_writer(&r.fifo, LONG), &sent);
    r.daemon.wait_log("holding them in memory", LONG);
    fs::remove_file(&r.failed).unwrap();
    r.refuse.store(false, Ordering::SeqCst);
    wait_until(LONG, "every line", || {
        r.server.received_count() >= sent.len()
    });
    r.daemon.signal(Signal::SIGTERM);
    assert!(r.daemon.wait_exit(LONG).success(), "{}", r.daemon.stderr());
    assert_eq!(sorted(r.server.received()), sorted(sent));
    assert!(r.daemon.stderr().contains("lines_dropped=0 "));
}

/// Hole 6, the directory removed: it is created again and the lines are kept in it.
#[test]
fn a_removed_failed_attempts_dir_is_created_again() {
    let mut r = Refused::start("removed-dir", &[]);
    fs::remove_dir_all(&r.failed).unwrap();
    let sent = lines("removed", 300);
    write_lines_atomically(&mut open_writer(&r.fifo, LONG), &sent);
    wait_until(LONG, "the lines kept on disk", || {
        let kept: usize = spool_files(&r.failed)
            .iter()
            .map(|p| read_or_empty(p).split(|&b| b == b'\n').count())
            .sum();
        kept == sent.len()
    });
    r.daemon.signal(Signal::SIGTERM);
    assert!(r.daemon.wait_exit(LONG).success(), "{}", r.daemon.stderr());
    assert!(r.daemon.stderr().contains("lines_dropped=0 "));
}

/// Hole 7: a replayed line longer than a record was dropped, and its file deleted, when moving
/// it to `oversized/` would pass the cap (its bytes were counted twice). It is moved.
#[test]
fn a_replayed_over_long_line_is_moved_to_oversized_even_at_the_cap() {
    let dir = TempDir::new("replay-long");
    let failed = dir.join("failed");
    fs::create_dir_all(&failed).unwrap();
    let long = vec![b'L'; 3000];
    let mut content = b"first\n".to_vec();
    content.extend_from_slice(&long);
    content.extend_from_slice(b"\nlast");
    let file = failed.join("fifo2kinesis-20200101000000-000001-1");
    fs::write(&file, &content).unwrap();
    let cap = content.len().to_string();
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::start("test-stream");
    let mut daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--failed-attempts-max-bytes",
            &cap,
            "--max-record-bytes",
            "1KiB",
        ],
    );
    wait_until(LONG, "the replayed lines", || server.received_count() == 2);
    wait_until(LONG, "the file delivered and removed", || !file.exists());
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    assert_eq!(server.received(), vec![b"first".to_vec(), b"last".to_vec()]);
    let moved: Vec<Vec<u8>> = fs::read_dir(failed.join("oversized"))
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(moved, vec![long]);
}

/// Hole 8: replay read a whole file into memory and rewrote the rest after every 500 lines
/// (a 100 MB file took 361 MB and 26 CPU-s). Files stream through the memory budget, and the
/// file is never rewritten: progress is kept beside it.
#[test]
fn replay_streams_a_large_file_within_the_memory_budget() {
    let dir = TempDir::new("replay-large");
    let failed = dir.join("failed");
    fs::create_dir_all(&failed).unwrap();
    let n = 600_000;
    let file = failed.join("fifo2kinesis-20200101000000-000001-1");
    let mut content = Vec::with_capacity(n * 101);
    for i in 0..n {
        let start = content.len();
        content.extend_from_slice(format!("{i:010} ").as_bytes());
        content.resize(start + 100, b'a' + (i % 26) as u8);
        content.push(b'\n');
    }
    content.pop();
    fs::write(&file, &content).unwrap();
    let inode = fs::metadata(&file).unwrap().ino();
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::with_behaviour("test-stream", false, |_, _| Reply::Accept);
    let mut daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &["--failed-attempts-dir", failed.to_str().unwrap()],
    );
    let started = Instant::now();
    let progress = failed.join("fifo2kinesis-20200101000000-000001-1.progress");
    wait_until(LONG, "replay progress recorded", || progress.exists());
    assert_eq!(
        fs::metadata(&file).unwrap().ino(),
        inode,
        "the file is not rewritten"
    );
    let mut peak = 0;
    wait_until(LONG, "every replayed line", || {
        peak = peak.max(peak_rss_kib(daemon.pid()));
        server.received_count() >= n
    });
    wait_until(LONG, "the file removed", || {
        !file.exists() && !progress.exists()
    });
    let took = started.elapsed();
    let cpu = daemon.cpu_time();
    peak = peak.max(peak_rss_kib(daemon.pid()));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    assert_eq!(server.received_count(), n, "each line once");
    assert!(
        peak <= 48 * 1024,
        "peak RSS {peak} KiB for a {} MB file",
        content.len() >> 20
    );
    println!(
        "replayed {n} lines ({} MB) in {took:.1?}: {cpu:.2?} CPU, peak RSS {peak} KiB",
        content.len() >> 20
    );
}

/// Hole 9: a FIFO in the directory hung the daemon (opened blocking, without a type check)
/// and SIGTERM no longer worked. It is skipped and reported; lines flow; a stop works.
#[test]
fn a_fifo_in_the_failed_attempts_dir_does_not_hang_the_daemon() {
    let dir = TempDir::new("fifo-in-spool");
    let failed = dir.join("failed");
    fs::create_dir_all(&failed).unwrap();
    let mode = nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR;
    nix::unistd::mkfifo(
        &failed.join("fifo2kinesis-20200101000000-000001-1.tmp"),
        mode,
    )
    .unwrap();
    nix::unistd::mkfifo(&failed.join("fifo2kinesis-20200101000000-000002-1"), mode).unwrap();
    fs::write(failed.join("fifo2kinesis-20200101000000-000003-1"), b"kept").unwrap();
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::start("test-stream");
    let mut daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--flush-interval",
            "50ms",
        ],
    );
    write_lines_atomically(&mut open_writer(&fifo, LONG), &[b"live".to_vec()]);
    wait_until(LONG, "the live and the kept line", || {
        server.received_count() == 2
    });
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    assert_eq!(
        sorted(server.received()),
        vec![b"kept".to_vec(), b"live".to_vec()]
    );
    let log = daemon.stderr();
    assert!(log.contains("not a regular file"), "{log}");
}

/// Mounts `dir` read-only over itself for the life of the value.
struct ReadOnly<'a>(&'a Path);

impl<'a> ReadOnly<'a> {
    fn mount(dir: &'a Path) -> ReadOnly<'a> {
        let run = |args: &[&str]| {
            let out = Command::new("mount").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "mount {args:?}: {} (these tests run as root, as CI does)",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let d = dir.to_str().unwrap();
        run(&["--bind", d, d]);
        run(&["-o", "remount,ro,bind", d]);
        ReadOnly(dir)
    }
}

impl Drop for ReadOnly<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

/// Hole 10: replay could spin or resend. On a read-only directory a delivered file cannot be
/// removed (it was sent again and again), and an entry that can be neither read nor renamed
/// aside kept replay due every turn of the loop. Each line is sent once; the daemon rests.
#[test]
fn replay_neither_spins_nor_resends_what_cannot_be_removed() {
    let dir = TempDir::new("readonly-spool");
    let failed = dir.join("failed");
    fs::create_dir_all(failed.join("oversized")).unwrap();
    fs::write(
        failed.join("fifo2kinesis-20200101000000-000001-1"),
        b"one\ntwo\nthree",
    )
    .unwrap();
    fs::create_dir(failed.join("fifo2kinesis-20200101000000-000000-1")).unwrap();
    let _ro = ReadOnly::mount(&failed);
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::start("test-stream");
    let mut daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--retry-interval",
            "1h",
        ],
    );
    wait_until(LONG, "the replayed lines", || server.received_count() >= 3);
    let before = daemon.cpu_time();
    thread::sleep(Duration::from_secs(3));
    let used = daemon.cpu_time() - before;
    assert_eq!(
        sorted(server.received()),
        vec![b"one".to_vec(), b"three".to_vec(), b"two".to_vec()],
        "sent once, not again and again"
    );
    assert!(
        used < Duration::from_millis(300),
        "replay spun: {used:?} of CPU in 3 s"
    );
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
    let log = daemon.stderr();
    assert!(log.contains("it will not be sent again"), "{log}");
    println!("CPU over 3 s with an unremovable file and an unreadable entry: {used:?}");
}

/// Hole 11: a stop that overran its deadline lost queued and in-flight batches without
/// counting them and exited 0 (a `credential_process` hanging at the stop). Credential fetches
/// give up at the deadline; the lines go to the failed-attempts directory.
#[test]
fn a_credential_source_hanging_at_the_stop_loses_nothing() {
    let dir = TempDir::new("hanging-creds");
    let failed = dir.join("failed");
    let fifo = dir.join("in.pipe");
    let server = FakeKinesis::start("test-stream");
    let home = TempDir::new("hanging-home");
    let marker = home.join("fetched-once");
    // The first fetch gives credentials that need refreshing within about 2 s; every later
    // fetch hangs.
    let script = home.join("creds.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ -e {m} ]; then echo $$ > {m}.hung; exec sleep 1000; fi\ntouch {m}\n\
             exp=$(date -u -d @$(( $(date +%s) + 4 )) +%Y-%m-%dT%H:%M:%SZ)\n\
             printf '{{\"Version\":1,\"AccessKeyId\":\"{TEMP_KEY_ID}\",\"SecretAccessKey\":\"{TEMP_SECRET}\",\"SessionToken\":\"{TEMP_TOKEN}\",\"Expiration\":\"%s\"}}' \"$exp\"\n",
            m = marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700)).unwrap();
    let config = home.join("config");
    fs::write(
        &config,
        format!(
            "[default]\nregion = us-east-1\ncredential_process = {}\n",
            script.display()
        ),
    )
    .unwrap();
    let env = vec![
        (
            "AWS_CONFIG_FILE".to_string(),
            config.to_str().unwrap().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_string(),
            home.join("none").to_str().unwrap().to_string(),
        ),
        ("AWS_ENDPOINT_URL".to_string(), server.url.clone()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
        (
            "HOME".to_string(),
            home.path().to_str().unwrap().to_string(),
        ),
    ];
    let mut daemon = start_daemon_with_env(
        &dir,
        &fifo,
        &[
            "--failed-attempts-dir",
            failed.to_str().unwrap(),
            "--flush-interval",
            "50ms",
            "--shutdown-timeout",
            "1s",
        ],
        &env,
    );
    let mut w = open_writer(&fifo, LONG);
    write_lines_atomically(&mut w, &[b"early".to_vec()]);
    wait_until(LONG, "the first line", || server.received_count() == 1);
    thread::sleep(Duration::from_secs(3)); // let the credentials come due for a refresh
    let sent = lines("late", 40);
    write_lines_atomically(&mut w, &sent);
    daemon.wait_lines_read(41, LONG);
    let stopped = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(LONG);
    let took = stopped.elapsed();
    let log = daemon.stderr();
    let mut kept = spooled_lines_in(&failed);
    kept.extend(server.received().into_iter().skip(1));
    assert_eq!(sorted(kept), sorted(sent), "{log}");
    assert!(status.success(), "nothing lost: {log}");
    assert!(took < Duration::from_secs(10), "the stop took {took:?}");
    assert!(log.contains("lines_dropped=0 "), "{log}");
    // The hanging command does not outlive the daemon.
    let hung = fs::read_to_string(home.join("fetched-once.hung")).expect("a second fetch ran");
    let hung = format!("/proc/{}", hung.trim());
    wait_until(Duration::from_secs(5), "the hanging command's end", || {
        fs::read_to_string(format!("{hung}/stat")).map_or(true, |stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    });
}

fn spooled_lines_in(dir: &Path) -> Vec<Vec<u8>> {
    spool_files(dir)
        .iter()
        .flat_map(|p| {
            read_or_empty(p)
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Hole 12: a FIFO path replaced by a file ended the process at once with exit 1, losing what
/// was read (40 of 40 lines). The daemon carries on with what is in memory, retries the path
/// with a warning, and notices a removed FIFO by itself (no SIGHUP), creating it again.
#[test]
fn a_fifo_path_replaced_or_removed_keeps_what_was_read_and_carries_on() {
    let dir = TempDir::new("fifo-replaced");
    let fifo = dir.join("in.pipe");
    let outage = Arc::new(AtomicBool::new(true));
    let server = {
        let outage = Arc::clone(&outage);
        FakeKinesis::with_behaviour("test-stream", false, move |_, _| {
            if outage.load(Ordering::SeqCst) {
                Reply::Error(500, r#"{"__type":"InternalFailure"}"#.into())
            } else {
                Reply::Accept
            }
        })
    };
    let mut daemon = start_daemon(&dir, &fifo, &server, &["--flush-interval", "50ms"]);
    let first = lines("read", 40);
    let mut w = open_writer(&fifo, LONG);
    write_lines_atomically(&mut w, &first);
    daemon.wait_lines_read(40, LONG);
    fs::remove_file(&fifo).unwrap();
    fs::write(&fifo, b"a regular file now").unwrap();
    drop(w);
    daemon.wait_log("is not a named pipe", LONG);
    outage.store(false, Ordering::SeqCst);
    wait_until(LONG, "the 40 lines read before", || {
        server.received_count() >= first.len()
    });
    fs::remove_file(&fifo).unwrap();
    wait_until(LONG, "the FIFO created again", || {
        fs::metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo())
    });
    let second = lines("after", 10);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &second);
    wait_until(LONG, "the new lines", || server.received_count() >= 50);
    // A removed FIFO is noticed without SIGHUP, while a writer still holds the old one.
    let mut old = open_writer(&fifo, LONG);
    fs::remove_file(&fifo).unwrap();
    write_lines_atomically(&mut old, &[b"last into the old pipe".to_vec()]);
    wait_until(LONG, "the FIFO created again", || {
        fs::metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo())
    });
    drop(old);
    let third = lines("recreated", 10);
    write_lines_atomically(&mut open_writer(&fifo, LONG), &third);
    wait_until(LONG, "the lines through the new FIFO", || {
        server.received_count() >= 61
    });
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(LONG);
    let log = daemon.stderr();
    assert!(status.success(), "{log}");
    let mut want = first;
    want.extend(second);
    want.push(b"last into the old pipe".to_vec());
    want.extend(third);
    assert_eq!(sorted(server.received()), sorted(want), "{log}");
}
