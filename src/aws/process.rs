//! `credential_process`: credentials printed by a command of the user's.
//!
//! The command runs with `sh -c`, standard input closed, in a process group of its own. It must
//! exit 0 and print JSON
//! `{"Version":1,"AccessKeyId":…,"SecretAccessKey":…,"SessionToken"?:…,"Expiration"?:…}`.
//! A failure is reported with the exit status and the first line of its standard error; its
//! standard output (which holds secrets) is never logged.
//!
//! Every wait is bounded. Output is read as it comes (a mio poll on the two pipes and on the
//! command's exit, no busy loop), and the run ends once the command has exited and its output
//! is complete: at end of file, or as soon as it has exited unsuccessfully or what it printed
//! is a whole JSON document, even if something it started still holds the pipes open. Whatever
//! is left of its process group is then killed; so is the whole group of a command that runs
//! over a minute.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use mio::unix::pipe;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::credentials::{parse_json_credentials, Credentials, Fetch};
use super::Error;
use crate::log::one_line;

/// How long the command may run.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// The most standard output read; more is an error.
const MAX_STDOUT: usize = 1024 * 1024;
/// The most standard error kept; more is read and dropped.
const MAX_STDERR: usize = 64 * 1024;

/// The process groups of the commands running now, for [`kill_running`].
static RUNNING: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

/// Kills the process group of every command still running: called as the daemon exits, so
/// that a command that hangs past the stop (whose fetch was given up at the deadline) does not
/// outlive the daemon.
pub fn kill_running() {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for &leader in running.iter() {
        let _ = killpg(leader, Signal::SIGKILL);
    }
}

const STDOUT: Token = Token(0);
const STDERR: Token = Token(1);
const EXITED: Token = Token(2);

/// Runs a configured `credential_process` at every fetch.
pub struct ProcessCredentials {
    command: String,
    timeout: Duration,
}

/// How reading the command's output ended.
enum Ended {
    /// It exited, and its output is complete.
    Exited,
    /// It ran over its time.
    TimedOut,
    /// It printed more than [`MAX_STDOUT`].
    TooMuchOutput,
}

/// One of the command's output pipes, read until end of file.
struct Output {
    /// `None` once at end of file.
    pipe: Option<pipe::Receiver>,
    data: Vec<u8>,
    limit: usize,
    /// More than `limit` bytes came.
    over: bool,
}

impl Output {
    fn new(
        mut pipe: pipe::Receiver,
        token: Token,
        registry: &Registry,
        limit: usize,
    ) -> io::Result<Output> {
        pipe.set_nonblocking(true)?;
        registry.register(&mut pipe, token, Interest::READABLE)?;
        Ok(Output {
            pipe: Some(pipe),
            data: Vec::new(),
            limit,
            over: false,
        })
    }

    /// Reads what is there, until it would block or the pipe ends.
    fn drain(&mut self, registry: &Registry) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while let Some(pipe) = &mut self.pipe {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    registry.deregister(pipe)?;
                    self.pipe = None;
                }
                Ok(n) => {
                    let room = self.limit - self.data.len();
                    self.data.extend_from_slice(&buf[..n.min(room)]);
                    self.over |= n > room;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// The command's process group. Dropping it kills what is left of the group (and the command
/// itself, should it have left the group), reaps the command, and joins the thread waiting for
/// it: nothing of a run outlives it.
struct Group {
    child: Child,
    leader: Pid,
    waiter: Option<thread::JoinHandle<()>>,
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = killpg(self.leader, Signal::SIGKILL);
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != self.leader);
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.join();
        }
    }
}

/// A running command: its group, its output, and word of its exit.
struct Running {
    /// Killed and reaped when the run is dropped; dropped first.
    _group: Group,
    poll: Poll,
    stdout: Output,
    stderr: Output,
    exits: mpsc::Receiver<nix::Result<WaitStatus>>,
    /// Kept here too: were the waiting thread to drop the last one, its file would close and
    /// take the wake-up with it.
    _waker: Arc<Waker>,
}

impl Running {
    fn start(command: &str) -> io::Result<Running> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let leader = Pid::from_raw(child.id() as i32);
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(leader);
        // From here on, an early return kills the command (Group's drop).
        let mut group = Group {
            child,
            leader,
            waiter: None,
        };
        let poll = Poll::new()?;
        let out = group.child.stdout.take().expect("stdout is piped");
        let err = group.child.stderr.take().expect("stderr is piped");
        let stdout = Output::new(out.into(), STDOUT, poll.registry(), MAX_STDOUT)?;
        let stderr = Output::new(err.into(), STDERR, poll.registry(), MAX_STDERR)?;
        let waker = Arc::new(Waker::new(poll.registry(), EXITED)?);
        let (tell, exits) = mpsc::channel();
        let wake = Arc::clone(&waker);
        // Waits without reaping, so that the group is killed while its leader's pid is held.
        group.waiter = Some(
            thread::Builder::new()
                .name("credential_process".into())
                .spawn(move || {
                    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
                    let status = loop {
                        match waitid(Id::Pid(leader), flags) {
                            Err(nix::errno::Errno::EINTR) => {}
                            other => break other,
                        }
                    };
                    let _ = tell.send(status);
                    let _ = wake.wake();
                })?,
        );
        Ok(Running {
            _group: group,
            poll,
            stdout,
            stderr,
            exits,
            _waker: waker,
        })
    }

    /// Reads output until the command has exited and its output is complete, or `deadline`.
    fn read_until(&mut self, deadline: Instant) -> io::Result<(Ended, Option<WaitStatus>)> {
        let mut events = Events::with_capacity(4);
        let mut exit: Option<WaitStatus> = None;
        loop {
            self.stdout.drain(self.poll.registry())?;
            self.stderr.drain(self.poll.registry())?;
            if self.stdout.over {
                return Ok((Ended::TooMuchOutput, exit));
            }
            if let Some(status) = exit {
                let success = matches!(status, WaitStatus::Exited(_, 0));
                if !success || self.stdout.pipe.is_none() || is_json(&self.stdout.data) {
                    return Ok((Ended::Exited, exit));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok((Ended::TimedOut, exit));
            }
            match self.poll.poll(&mut events, Some(left)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            if events.iter().any(|e| e.token() == EXITED) {
                if let Ok(status) = self.exits.try_recv() {
                    exit = Some(status.map_err(io::Error::from)?);
                }
            }
        }
    }

    /// Whether something still holds the command's output open.
    fn output_held(&self) -> bool {
        self.stdout.pipe.is_some() || self.stderr.pipe.is_some()
    }
}

/// Whether `data` is one whole JSON document (and so the command has said all it will).
fn is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

impl ProcessCredentials {
    /// A provider running `command`.
    pub fn new(command: impl Into<String>) -> Self {
        ProcessCredentials {
            command: command.into(),
            timeout: TIMEOUT,
        }
    }

    fn run(&self) -> Result<Credentials, Error> {
        let deadline = Instant::now() + self.timeout;
        let failed = |problem: &'static str| {
            move |e| Error::Process {
                problem: problem.into(),
                source: Some(e),
            }
        };
        let mut running = Running::start(&self.command).map_err(failed("could not be started"))?;
        let (ended, status) = running
            .read_until(deadline)
            .map_err(failed("could not be read"))?;
        let problem = match ended {
            Ended::TimedOut => Some(format!("ran over {:?} and was killed", self.timeout)),
            Ended::TooMuchOutput => Some(format!("printed over {MAX_STDOUT} bytes and was killed")),
            Ended::Exited => None,
        };
        if let Some(problem) = problem {
            return Err(Error::Process {
                problem,
                source: None,
            });
        }
        if running.output_held() {
            crate::log!(
                Warn,
                "credential_process exited, but something it started still held its output open; its process group was killed"
            );
        }
        let stdout = std::mem::take(&mut running.stdout.data);
        let stderr = std::mem::take(&mut running.stderr.data);
        drop(running);
        let code = match status {
            Some(WaitStatus::Exited(_, 0)) => return parse_output(&stdout),
            Some(WaitStatus::Exited(_, code)) => code.to_string(),
            _ => "on a signal".to_string(),
        };
        let first = String::from_utf8_lossy(&stderr)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| one_line(l, 200))
            .unwrap_or_default();
        Err(Error::Process {
            problem: format!("exited {code}: {first}"),
            source: None,
        })
    }
}

/// Reads the command's JSON output.
pub fn parse_output(stdout: &[u8]) -> Result<Credentials, Error> {
    let unusable = |problem: String| Error::Process {
        problem,
        source: None,
    };
    let v: serde_json::Value =
        serde_json::from_slice(stdout).map_err(|_| unusable("output is not JSON".into()))?;
    match v.get("Version").and_then(serde_json::Value::as_u64) {
        Some(1) => {}
        other => {
            return Err(unusable(format!(
                "output has Version {other:?}; only 1 is known"
            )))
        }
    }
    parse_json_credentials(stdout, "SessionToken", "credential_process")
        .map_err(|e| unusable(format!("output {e}")))
}

impl Fetch for ProcessCredentials {
    fn fetch(&mut self, _now: SystemTime) -> Result<Credentials, Error> {
        self.run()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_parsing() {
        let c = parse_output(br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!((c.access_key_id(), c.session_token()), ("A", Some("T")));
        assert_eq!(
            c.expiry(),
            crate::clock::parse_rfc3339("2030-01-01T00:00:00Z")
        );
        let c = parse_output(br#"{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S"}"#).unwrap();
        assert_eq!((c.session_token(), c.expiry()), (None, None));
        let e = |out: &[u8]| parse_output(out).unwrap_err().to_string();
        assert_eq!(
            e(br#"{"Version":2,"AccessKeyId":"A","SecretAccessKey":"S"}"#),
            "credential_process output has Version Some(2); only 1 is known"
        );
        assert_eq!(
            e(br#"{"Version":1,"AccessKeyId":"A"}"#),
            "credential_process output has no SecretAccessKey"
        );
        let e = e(b"AKIA SECRETVALUE");
        assert!(!e.contains("SECRETVALUE"), "{e}");
    }

    #[test]
    fn runs_the_command_and_reports_failures() {
        let mut p = ProcessCredentials::new(
            r#"printf '{"Version":1,"AccessKeyId":"PK","SecretAccessKey":"PS"}'"#,
        );
        assert_eq!(p.fetch(SystemTime::now()).unwrap().access_key_id(), "PK");
        let mut p =
            ProcessCredentials::new("echo 'no such profile' >&2; echo leaked-secret; exit 3");
        let e = p.fetch(SystemTime::now()).unwrap_err().to_string();
        assert_eq!(e, "credential_process exited 3: no such profile");
    }

    /// Whether process `pid` is gone (or a zombie, dead and waiting to be reaped).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        }
    }

    fn wait_gone(pid: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(pid) {
            assert!(Instant::now() < deadline, "process {pid} still runs");
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("f2k-process-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A command that printed its credentials and exited, leaving a background process with
    /// its standard output, blocked the fetch until that process ended (end of file never
    /// came), and the process lived on.
    #[test]
    fn a_child_left_holding_the_output_neither_blocks_the_fetch_nor_survives_it() {
        let dir = scratch("held");
        let pid_file = dir.join("pid");
        let mut p = ProcessCredentials::new(format!(
            r#"printf '{{"Version":1,"AccessKeyId":"PK","SecretAccessKey":"PS"}}'; sleep 1000 & echo $! > {}"#,
            pid_file.display()
        ));
        let t0 = Instant::now();
        let c = p.fetch(SystemTime::now()).unwrap();
        assert_eq!(c.access_key_id(), "PK");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        wait_gone(&std::fs::read_to_string(&pid_file).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_command_over_its_time_is_killed_with_its_whole_group() {
        let dir = scratch("slow");
        let pid_file = dir.join("pid");
        let mut p = ProcessCredentials::new(format!(
            "sleep 1000 & echo $! > {}; sleep 1000",
            pid_file.display()
        ));
        p.timeout = Duration::from_millis(500);
        let t0 = Instant::now();
        let e = p.fetch(SystemTime::now()).unwrap_err().to_string();
        assert!(e.ends_with("ran over 500ms and was killed"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        wait_gone(&std::fs::read_to_string(&pid_file).unwrap());
        // A failure does not wait for a child that holds the output either.
        let mut p = ProcessCredentials::new("echo 'no session' >&2; sleep 1000 & exit 4");
        let e = p.fetch(SystemTime::now()).unwrap_err().to_string();
        assert!(e.ends_with("exited 4: no session"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
