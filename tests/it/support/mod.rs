//! Shared test support: temporary directories, the daemon as a child process, FIFO writers,
//! and fakes on 127.0.0.1 (Kinesis, STS, instance metadata, container credentials). Every wait
//! has a deadline.

pub mod creds;
pub mod http;
pub mod kinesis;
pub mod peers;
pub mod process;
pub mod proxy;
pub mod syslog;

pub use creds::*;
pub use kinesis::*;
pub use peers::*;
pub use process::*;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// `n` distinct lines of at least `size` bytes: `tag-<number>-` padded with one letter.
pub fn numbered_lines(tag: &str, n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut l = format!("{tag}-{i:08}-").into_bytes();
            l.resize(size.max(l.len()), b'a' + (i % 26) as u8);
            l
        })
        .collect()
}

/// How many of `sent` are not among `got`. A wait for delivery asks for this to reach 0, not
/// for as many lines as were sent: after a kill, lines sent twice can make up that count
/// while others are still on their way.
pub fn missing(sent: &[Vec<u8>], got: &[Vec<u8>]) -> usize {
    let got: std::collections::HashSet<&[u8]> = got.iter().map(Vec::as_slice).collect();
    sent.iter().filter(|l| !got.contains(l.as_slice())).count()
}

/// Writes `lines` into the FIFO from another thread, `per_write` lines a write (the thread
/// blocks while the daemon pauses reading).
pub fn spawn_writer(
    fifo: &Path,
    lines: Vec<Vec<u8>>,
    per_write: usize,
    timeout: Duration,
) -> thread::JoinHandle<()> {
    let fifo = fifo.to_path_buf();
    thread::spawn(move || {
        let mut w = open_writer(&fifo, timeout);
        for chunk in lines.chunks(per_write) {
            write_lines_atomically(&mut w, chunk);
        }
    })
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fifo2kinesis-test-{}-{}-{}",
            name,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_fifo2kinesis");

/// The daemon's command: the binary built for these tests, or another build given as
/// `FIFO2KINESIS_TEST_BIN`, run by `FIFO2KINESIS_TEST_RUNNER` if set (an ARM build under
/// qemu-user: `scripts/check-static`).
pub fn daemon_command() -> Command {
    match std::env::var_os("FIFO2KINESIS_TEST_BIN") {
        Some(bin) => match std::env::var_os("FIFO2KINESIS_TEST_RUNNER") {
            Some(runner) => {
                let mut c = Command::new(runner);
                c.arg(bin);
                c
            }
            None => Command::new(bin),
        },
        None => Command::new(BIN),
    }
}

/// Environment for a daemon talking to a local endpoint with test credentials.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), TEST_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), TEST_SECRET.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL_KINESIS".into(), endpoint.into()),
        ("AWS_ENDPOINT_URL_FIREHOSE".into(), endpoint.into()),
    ]
}

/// Variables every daemon in the tests gets: no instance metadata (it would leave loopback)
/// and no shared files from the machine's home directory.
pub const HERMETIC_ENV: &[(&str, &str)] = &[
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("HOME", "/nonexistent-fifo2kinesis-home"),
];

/// Stops `daemon` with SIGTERM, asserts it exited 0 within a minute, and gives back its log.
pub fn stop_cleanly(mut daemon: Daemon) -> String {
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.stderr();
    assert!(status.success(), "{log}");
    log
}

/// The daemon binary running as a child process; killed when dropped.
pub struct Daemon {
    child: Child,
    stderr_path: PathBuf,
    pub stdout_path: PathBuf,
}

impl Daemon {
    /// Starts the binary with `args` and only `env` (plus PATH) in its environment.
    pub fn start(dir: &TempDir, args: &[&str], env: &[(String, String)]) -> Daemon {
        let stderr_path = dir.join("daemon.stderr");
        let stdout_path = dir.join("daemon.stdout");
        let child = daemon_command()
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(HERMETIC_ENV.iter().copied())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).unwrap())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        Daemon {
            child,
            stderr_path,
            stdout_path,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the log to contain `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return;
            }
            if Instant::now() >= deadline {
                panic!("timed out waiting for {needle:?} in the daemon's log:\n{log}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks for a stats line and returns the counter `name` from the newest one.
    pub fn stat(&self, name: &str) -> u64 {
        // A stats line printed after this asking, not the last one before it: a busy daemon
        // may take longer than any fixed pause to answer.
        // Only whole lines count: the log may be read while a line is being written.
        let whole = |log: String| match log.rfind('\n') {
            Some(end) => log[..=end].to_string(),
            None => String::new(),
        };
        let stats_lines = |log: &str| log.lines().filter(|l| l.contains(" lines_read=")).count();
        let before = stats_lines(&whole(self.stderr()));
        self.signal(nix::sys::signal::Signal::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = whole(self.stderr());
            if stats_lines(&log) > before {
                return stat_from(&log, name);
            }
            assert!(
                !self.has_exited(),
                "the daemon exited before printing its stats:\n{log}"
            );
            assert!(
                Instant::now() < deadline,
                "the daemon printed no stats line after SIGUSR1:\n{log}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Asks for a stats line and waits until it reports `lines_read=n`.
    pub fn wait_lines_read(&self, n: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let needle = format!("lines_read={n} ");
        loop {
            self.signal(nix::sys::signal::Signal::SIGUSR1);
            thread::sleep(Duration::from_millis(20));
            if self.stderr().contains(&needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not report {needle}:\n{}",
                self.stderr()
            );
        }
    }

    /// Whether the daemon has exited (without reaping it, so that `wait_exit` still can).
    pub fn has_exited(&self) -> bool {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(waitid(Id::Pid(pid), flags), Ok(WaitStatus::StillAlive))
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "daemon did not exit within {timeout:?}; log:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// CPU time used by all threads so far (from schedstat, nanosecond resolution).
    pub fn cpu_time(&self) -> Duration {
        let mut total = 0u64;
        for task in fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap() {
            let path = task.unwrap().path().join("schedstat");
            if let Ok(s) = fs::read_to_string(path) {
                total += s.split_whitespace().next().unwrap().parse::<u64>().unwrap();
            }
        }
        Duration::from_nanos(total)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counter `name` from the newest stats line in `log` (0 if there is none).
pub fn stat_from(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(" lines_read="))
        .unwrap_or("");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs the binary to completion with `args` and `env` and returns (status, stdout, stderr).
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = daemon_command()
        .args(args)
        .env_clear()
        .envs(HERMETIC_ENV.iter().copied())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes whole lines in writes of at most PIPE_BUF bytes, so concurrent writers never
/// interleave inside a line.
pub fn write_lines_atomically(f: &mut File, lines: &[Vec<u8>]) {
    let mut chunk = Vec::with_capacity(4096);
    for l in lines {
        if !chunk.is_empty() && chunk.len() + l.len() + 1 > 4096 {
            f.write_all(&chunk).unwrap();
            chunk.clear();
        }
        chunk.extend_from_slice(l);
        chunk.push(b'\n');
    }
    if !chunk.is_empty() {
        f.write_all(&chunk).unwrap();
    }
}

/// The spool files in a failed-attempts directory (complete ones only), oldest first.
pub fn spool_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        p.is_file() && name.starts_with("fifo2kinesis-") && !name.ends_with(".tmp")
    });
    files.sort();
    files
}

/// Reads a file that may not exist yet.
pub fn read_or_empty(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    if let Ok(mut f) = File::open(p) {
        let _ = f.read_to_end(&mut v);
    }
    v
}

/// Starts the daemon on `fifo` for `server`'s `test-stream` and waits for the FIFO to exist.
pub fn start_daemon(dir: &TempDir, fifo: &Path, server: &FakeKinesis, extra: &[&str]) -> Daemon {
    start_daemon_with_env(dir, fifo, extra, &aws_env(&server.url))
}

/// Starts the daemon on `fifo` for `test-stream` with only `env` (credentials, endpoints) and
/// waits for the FIFO to exist.
pub fn start_daemon_with_env(
    dir: &TempDir,
    fifo: &Path,
    extra: &[&str],
    env: &[(String, String)],
) -> Daemon {
    let daemon = Daemon::start(dir, &kinesis_args(fifo.to_str().unwrap(), extra), env);
    wait_until(Duration::from_secs(60), "the FIFO", || {
        assert!(
            !daemon.has_exited(),
            "the daemon exited:\n{}",
            daemon.stderr()
        );
        fifo.exists()
    });
    daemon
}

pub fn kinesis_args<'a>(fifo: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--fifo-name", fifo, "--stream-name", "test-stream"];
    a.extend_from_slice(extra);
    a
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
