//! Shared test support: temporary directories, the daemon as a child process, FIFO writers,
//! and a fake Kinesis server on 127.0.0.1 that checks requests, records lines and injects
//! faults. Every wait has a deadline.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

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

/// Environment for a daemon talking to a local endpoint with test credentials.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), TEST_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), TEST_SECRET.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL_KINESIS".into(), endpoint.into()),
    ]
}

/// Variables every daemon in the tests gets: no instance metadata (it would leave loopback)
/// and no shared files from the machine's home directory.
pub const HERMETIC_ENV: &[(&str, &str)] = &[
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("HOME", "/nonexistent-fifo2kinesis-home"),
];

pub const TEST_KEY_ID: &str = "AKIDTESTFIFO2KINESIS";
pub const TEST_SECRET: &str = "test-secret-must-never-be-logged";
/// What the fake server's STS hands out for AssumeRole.
pub const TEMP_KEY_ID: &str = "ASIATESTTEMPORARYKEY";
pub const TEMP_SECRET: &str = "temporary-secret-must-never-be-logged";
pub const TEMP_TOKEN: &str = "temporary-session-token-must-never-be-logged";

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
        let child = Command::new(BIN)
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

/// Runs the binary to completion with `args` and `env` and returns (status, stdout, stderr).
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
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

/// Opens the FIFO for writing once the daemon has it open for reading.
pub fn open_writer(fifo: &Path, timeout: Duration) -> File {
    let deadline = Instant::now() + timeout;
    loop {
        // Nonblocking open fails with ENXIO while no reader has the FIFO open.
        match OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => {
                // Writes should block when the pipe is full, as a normal writer's would.
                let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL).unwrap();
                let flags =
                    nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
                nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
                return f;
            }
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.raw_os_error(),
                        Some(nix::libc::ENXIO) | Some(nix::libc::ENOENT)
                    ) =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("cannot open {} for writing: {e}", fifo.display()),
        }
    }
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

/// What the fake server answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Accept every record.
    Accept,
    /// Fail these record indices with this code; accept the others.
    FailRecords(Vec<usize>, &'static str),
    /// Answer with this status and JSON error body.
    Error(u16, String),
}

/// One PutRecords request as the fake server saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub records: Vec<(Vec<u8>, String)>,
    pub headers: HashMap<String, String>,
}

type Behaviour = dyn Fn(usize, &SeenRequest) -> Reply + Send + Sync;

#[derive(Default)]
struct ServerState {
    /// AssumeRole form bodies received.
    sts_calls: Vec<String>,
    received: Vec<Vec<u8>>,
    requests: Vec<SeenRequest>,
    problems: Vec<String>,
}

/// A fake Kinesis endpoint on 127.0.0.1.
pub struct FakeKinesis {
    pub url: String,
    state: Arc<Mutex<ServerState>>,
    stop: Arc<AtomicBool>,
    keep_requests: bool,
}

impl FakeKinesis {
    /// A server that accepts everything.
    pub fn start(stream: &str) -> FakeKinesis {
        FakeKinesis::with_behaviour(stream, true, |_, _| Reply::Accept)
    }

    /// A server whose answers `behaviour` picks from the request number and content.
    /// `keep_requests` keeps every request's records for inspection (memory!).
    pub fn with_behaviour(
        stream: &str,
        keep_requests: bool,
        behaviour: impl Fn(usize, &SeenRequest) -> Reply + Send + Sync + 'static,
    ) -> FakeKinesis {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ServerState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let counter = Arc::new(AtomicUsize::new(0));
        {
            let (state, stop, stream) = (Arc::clone(&state), Arc::clone(&stop), stream.to_string());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, behaviour, counter, stream) = (
                        Arc::clone(&state),
                        Arc::clone(&behaviour),
                        Arc::clone(&counter),
                        stream.clone(),
                    );
                    thread::spawn(move || {
                        serve(conn, &stream, &state, &*behaviour, &counter, keep_requests)
                    });
                }
            });
        }
        FakeKinesis {
            url,
            state,
            stop,
            keep_requests,
        }
    }

    /// Lines accepted so far, in order of acceptance.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn received_count(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    /// Requests seen so far (only with `keep_requests`).
    pub fn requests(&self) -> Vec<SeenRequest> {
        assert!(self.keep_requests);
        self.state.lock().unwrap().requests.clone()
    }

    /// AssumeRole requests received (their form bodies).
    pub fn sts_calls(&self) -> Vec<String> {
        self.state.lock().unwrap().sts_calls.clone()
    }

    /// Anything a request did wrong.
    pub fn problems(&self) -> Vec<String> {
        self.state.lock().unwrap().problems.clone()
    }
}

impl Drop for FakeKinesis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(
    conn: TcpStream,
    stream: &str,
    state: &Mutex<ServerState>,
    behaviour: &Behaviour,
    counter: &AtomicUsize,
    keep: bool,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, answer) = handle(
            &request_line,
            headers,
            &body,
            stream,
            state,
            behaviour,
            counter,
            keep,
        );
        let reason = if status == 200 { "OK" } else { "Error" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handle(
    request_line: &str,
    headers: HashMap<String, String>,
    body: &[u8],
    stream: &str,
    state: &Mutex<ServerState>,
    behaviour: &Behaviour,
    counter: &AtomicUsize,
    keep: bool,
) -> (u16, String) {
    if headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return fake_sts(&headers, body, state);
    }
    let mut problems = check_headers(request_line, &headers);
    let records = match parse_body(body, stream) {
        Ok(r) => r,
        Err(p) => {
            problems.push(p);
            Vec::new()
        }
    };
    let seen = SeenRequest { records, headers };
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let reply = behaviour(n, &seen);
    let mut st = state.lock().unwrap();
    st.problems.extend(problems);
    let answer = match &reply {
        Reply::Accept => {
            st.received
                .extend(seen.records.iter().map(|(d, _)| d.clone()));
            let results: Vec<Value> = (0..seen.records.len())
                .map(|i| serde_json::json!({"SequenceNumber": format!("{n}-{i}"), "ShardId": "shardId-000000000000"}))
                .collect();
            (
                200,
                serde_json::json!({"FailedRecordCount": 0, "Records": results}).to_string(),
            )
        }
        Reply::FailRecords(failed, code) => {
            let mut results = Vec::new();
            for (i, (d, _)) in seen.records.iter().enumerate() {
                if failed.contains(&i) {
                    results.push(serde_json::json!({"ErrorCode": code, "ErrorMessage": "Rate exceeded for shard shardId-000000000000"}));
                } else {
                    st.received.push(d.clone());
                    results.push(serde_json::json!({"SequenceNumber": format!("{n}-{i}"), "ShardId": "shardId-000000000000"}));
                }
            }
            let failed_count = results
                .iter()
                .filter(|r| r.get("ErrorCode").is_some())
                .count();
            (
                200,
                serde_json::json!({"FailedRecordCount": failed_count, "Records": results})
                    .to_string(),
            )
        }
        Reply::Error(status, body) => (*status, body.clone()),
    };
    if keep {
        st.requests.push(seen);
    }
    answer
}

/// Answers an STS AssumeRole signed with the test keys.
fn fake_sts(h: &HashMap<String, String>, body: &[u8], state: &Mutex<ServerState>) -> (u16, String) {
    let form = String::from_utf8_lossy(body).into_owned();
    let auth = h.get("authorization").cloned().unwrap_or_default();
    let mut st = state.lock().unwrap();
    st.sts_calls.push(form.clone());
    if !auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={TEST_KEY_ID}/"))
        || !auth.contains("/us-east-1/sts/aws4_request")
    {
        st.problems
            .push(format!("STS authorization shape: {auth:?}"));
    }
    if !form.starts_with("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A") {
        st.problems.push(format!("STS form: {form}"));
    }
    let expiration = "2099-01-01T00:00:00Z";
    (
        200,
        format!(
            "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>{TEMP_KEY_ID}</AccessKeyId>\
             <SecretAccessKey>{TEMP_SECRET}</SecretAccessKey><SessionToken>{TEMP_TOKEN}</SessionToken>\
             <Expiration>{expiration}</Expiration></Credentials></AssumeRoleResult></AssumeRoleResponse>"
        ),
    )
}

fn check_headers(request_line: &str, h: &HashMap<String, String>) -> Vec<String> {
    let mut p = Vec::new();
    if !request_line.starts_with("POST / HTTP/1.1") {
        p.push(format!("request line {request_line:?}"));
    }
    let expect = |p: &mut Vec<String>, name: &str, want: &str| {
        if h.get(name).map(String::as_str) != Some(want) {
            p.push(format!("{name}: {:?}, want {want:?}", h.get(name)));
        }
    };
    expect(&mut p, "content-type", "application/x-amz-json-1.1");
    expect(&mut p, "x-amz-target", "Kinesis_20131202.PutRecords");
    if !h.contains_key("host") {
        p.push("no host header".into());
    }
    let date = h.get("x-amz-date").cloned().unwrap_or_default();
    let date_ok = date.len() == 16 && date.as_bytes()[8] == b'T' && date.ends_with('Z');
    if !date_ok {
        p.push(format!("x-amz-date {date:?}"));
    }
    let auth = h.get("authorization").cloned().unwrap_or_default();
    // Temporary credentials (from the fake STS) must come with their session token.
    let temporary = auth.contains(TEMP_KEY_ID);
    let key = if temporary { TEMP_KEY_ID } else { TEST_KEY_ID };
    let signed = if temporary {
        "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
    } else {
        "content-type;host;x-amz-date;x-amz-target"
    };
    if temporary && h.get("x-amz-security-token").map(String::as_str) != Some(TEMP_TOKEN) {
        p.push("temporary credentials without their session token".into());
    }
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential={key}/{}/us-east-1/kinesis/aws4_request, SignedHeaders=",
        &date[..date.len().min(8)]
    );
    let shape_ok = auth.starts_with(&prefix)
        && auth.contains(&format!("SignedHeaders={signed}, "))
        && auth
            .rsplit_once("Signature=")
            .is_some_and(|(_, s)| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    if !shape_ok {
        p.push(format!("authorization shape: {auth:?}"));
    }
    p
}

fn parse_body(body: &[u8], stream: &str) -> Result<Vec<(Vec<u8>, String)>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if v["StreamName"] != stream {
        return Err(format!("StreamName {:?}", v["StreamName"]));
    }
    let records = v["Records"].as_array().ok_or("no Records")?;
    if records.is_empty() || records.len() > 500 {
        return Err(format!("{} records", records.len()));
    }
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let data = r["Data"].as_str().ok_or("Data is not a string")?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("Data is not base64: {e}"))?;
        let key = r["PartitionKey"]
            .as_str()
            .ok_or("PartitionKey is not a string")?;
        if key.is_empty() || key.chars().count() > 256 {
            return Err(format!("PartitionKey {key:?}"));
        }
        out.push((data, key.to_string()));
    }
    Ok(out)
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
    let daemon = Daemon::start(
        dir,
        &kinesis_args(fifo.to_str().unwrap(), extra),
        &aws_env(&server.url),
    );
    wait_until(Duration::from_secs(60), "the FIFO", || fifo.exists());
    daemon
}

pub fn kinesis_args<'a>(fifo: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["--fifo-name", fifo, "--stream-name", "test-stream"];
    a.extend_from_slice(extra);
    a
}

pub fn io_err_is_enxio(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::libc::ENXIO)
}
