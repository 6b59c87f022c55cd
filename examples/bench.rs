//! The throughput benchmark: the release daemon against a fake Kinesis server on 127.0.0.1,
//! over plain HTTP and TLS, for 100 B, 1 KiB and 4 KiB lines. Prints lines/s, MB/s, the
//! daemon's CPU seconds per 100 MB of input, its peak RSS, the request count, and the floor:
//! the CPU that the work no daemon can skip costs on this machine, measured in the same run
//! on the same bytes. The floor is the sum of `cat` draining the input through a FIFO, base64
//! of every line (base64-simd, as the daemon), SHA-256 of every request body the server received (the
//! sha2 crate, SHA-NI where the CPU has it), and, for TLS rows, rustls (on ring, as the
//! daemon) encrypting those bodies to a sink. "x floor" is the daemon's CPU over the floor's.
//!
//! Run it with `scripts/bench` (which builds the release binary first), or
//! `cargo run --release --example bench -- [LINES_OF_100B [FILTER]]`; FILTER keeps only the
//! runs whose label contains it, e.g. `"100 B lines, HTTP"` or `TLS`. Each run is made
//! `FIFO2KINESIS_BENCH_REPEAT` times (default 3); the row printed is the run of median
//! throughput, with the lowest and highest daemon CPU of all of them beside it.
//!
//! The 100 B and 4 KiB cases run a second time with `--durable` (the journal in the temporary
//! directory, fsynced every second), and the 100 B and 1 KiB cases with `--aggregate`, each
//! with their median CPU and median peak RSS beside the default mode's. The 100 B case also
//! runs against the same server answering as Firehose (`--delivery-stream`), plain and with
//! `--aggregate`. Every row gives the records and payload units per million lines: Kinesis's
//! PUT payload units (whole 25 KiB of data and key), or Firehose's 5 KiB steps.

#[path = "../tests/it/support/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../tests/it/support/process.rs"]
#[allow(dead_code)]
mod process;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use http::{Response, Server, TestCert};

/// What the fake server counted.
#[derive(Default)]
struct Counts {
    /// Kinesis records.
    records: AtomicU64,
    /// Lines: one a plain record, the user records of an aggregated one.
    lines: AtomicU64,
    /// PUT payload units: each record's data and key in whole 25 KiB.
    units: AtomicU64,
    requests: AtomicU64,
    /// Every request body, for the floor (SHA-256 and TLS of the same bytes).
    bodies: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Counts the records, lines and payload units of every PutRecords request and accepts them
/// all. It reads only what it counts (aggregated records are decoded to count their user
/// records), so that the server's share of the two cores stays small; the tests' fake server
/// is the one that checks every request in full.
fn fake_kinesis(cert: Option<&TestCert>, counts: Arc<Counts>) -> Server {
    let handler = move |req: &http::Request| {
        let bad = || {
            Response::new(
                400,
                "application/x-amz-json-1.1",
                r#"{"__type":"SerializationException"}"#,
            )
        };
        let firehose = req.body.starts_with(b"{\"DeliveryStreamName\":");
        if !(firehose || req.body.starts_with(b"{\"StreamName\":")) || !req.body.ends_with(b"]}") {
            return bad();
        }
        let counted = match firehose {
            true => count_firehose_records(&req.body),
            false => count_records(&req.body),
        };
        let Some((n, lines, units)) = counted else {
            return bad();
        };
        counts.records.fetch_add(n, Ordering::Relaxed);
        counts.lines.fetch_add(lines, Ordering::Relaxed);
        counts.units.fetch_add(units, Ordering::Relaxed);
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.bodies.lock().unwrap().push(req.body.clone());
        let mut body = String::with_capacity(60 + n as usize * 60);
        let (start, entry) = match firehose {
            true => (
                r#"{"Encrypted":false,"FailedPutCount":0,"RequestResponses":["#,
                r#"{"RecordId":"49654578316938016542906364530402305087718004452476485634"}"#,
            ),
            false => (
                r#"{"FailedRecordCount":0,"Records":["#,
                r#"{"SequenceNumber":"1","ShardId":"shardId-000000000000"}"#,
            ),
        };
        body.push_str(start);
        for i in 0..n {
            if i > 0 {
                body.push(',');
            }
            body.push_str(entry);
        }
        body.push_str("]}");
        Response::new(200, "application/x-amz-json-1.1", body)
    };
    match cert {
        None => Server::start(handler),
        Some(c) => Server::start_tls(c, handler),
    }
}

/// The records, lines and payload units of a PutRecords body.
fn count_records(body: &[u8]) -> Option<(u64, u64, u64)> {
    use base64::Engine as _;
    const DATA: &[u8] = b"{\"Data\":\"";
    const KEY: &[u8] = b"\",\"PartitionKey\":\"";
    let (mut records, mut lines, mut units) = (0, 0, 0);
    let mut rest = body;
    let mut decoded = Vec::new();
    while let Some(at) = memchr::memmem::find(rest, DATA) {
        rest = &rest[at + DATA.len()..];
        let end = memchr::memchr(b'"', rest)?;
        let data = &rest[..end];
        rest = rest[end..].strip_prefix(KEY)?;
        let key_len = memchr::memchr(b'"', rest)?;
        let padding = data.iter().rev().take_while(|&&b| b == b'=').count();
        let len = data.len() / 4 * 3 - padding;
        records += 1;
        units += (len + key_len).div_ceil(25 * 1024).max(1) as u64;
        if data.starts_with(b"84mawg") {
            // F3 89 9A C2: an aggregated record; its user records are field 3 of the message.
            decoded.clear();
            base64::engine::general_purpose::STANDARD
                .decode_vec(data, &mut decoded)
                .ok()?;
            lines += user_records(decoded.get(4..decoded.len().checked_sub(16)?)?)?;
        } else {
            lines += 1;
        }
    }
    Some((records, lines, units))
}

/// The records, lines (newlines) and 5 KiB units of a PutRecordBatch body.
fn count_firehose_records(body: &[u8]) -> Option<(u64, u64, u64)> {
    use base64::Engine as _;
    const DATA: &[u8] = b"{\"Data\":\"";
    let (mut records, mut lines, mut units) = (0, 0, 0);
    let mut rest = body;
    let mut decoded = Vec::new();
    while let Some(at) = memchr::memmem::find(rest, DATA) {
        rest = &rest[at + DATA.len()..];
        let end = memchr::memchr(b'"', rest)?;
        decoded.clear();
        base64::engine::general_purpose::STANDARD
            .decode_vec(&rest[..end], &mut decoded)
            .ok()?;
        rest = rest[end..].strip_prefix(b"\"}")?;
        if decoded.last() != Some(&b'\n') {
            return None;
        }
        records += 1;
        lines += memchr::memchr_iter(b'\n', &decoded).count() as u64;
        units += decoded.len().div_ceil(5 * 1024) as u64;
    }
    Some((records, lines, units))
}

/// The `records` fields (3) of an AggregatedRecord message.
fn user_records(mut b: &[u8]) -> Option<u64> {
    fn varint(b: &mut &[u8]) -> Option<usize> {
        let mut v = 0usize;
        for shift in (0..63).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= usize::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut n = 0;
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        if tag & 7 != 2 {
            return None;
        }
        let len = varint(&mut b)?;
        b = b.get(len..)?;
        n += u64::from(tag >> 3 == 3);
    }
    Some(n)
}

fn input(lines: usize, size: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(lines * (size + 1));
    for i in 0..lines {
        let start = data.len();
        data.extend_from_slice(format!("{i:010} ").as_bytes());
        data.resize(start + size, b'a' + (i % 26) as u8);
        data.push(b'\n');
    }
    data
}

/// The floor's parts, in CPU seconds.
#[derive(Clone, Copy, Debug, Default)]
struct Floor {
    cat: f64,
    base64: f64,
    sha256: f64,
    /// Zero for plain HTTP rows.
    tls: f64,
}

impl Floor {
    fn total(&self) -> f64 {
        self.cat + self.base64 + self.sha256 + self.tls
    }
}

/// This thread's CPU seconds so far.
fn thread_cpu() -> f64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
    t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9
}

/// The CPU seconds of the children reaped so far.
fn children_cpu() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

/// The floor for `data` sent as `bodies`: see the module's documentation.
fn floor(dir: &Path, data: &[u8], bodies: &[Vec<u8>], tls: Option<&TestCert>) -> Floor {
    use sha2::Digest as _;
    let cat = cat_cpu(dir, data);
    let mut encoded = Vec::with_capacity(64 * 1024);
    let t = thread_cpu();
    for line in data.split(|&b| b == b'\n') {
        encoded.clear();
        base64_simd::STANDARD.encode_append(line, &mut encoded);
        std::hint::black_box(&encoded);
    }
    let base64 = thread_cpu() - t;
    let t = thread_cpu();
    for body in bodies {
        std::hint::black_box(sha2::Sha256::digest(body));
    }
    let sha256 = thread_cpu() - t;
    let tls = tls.map_or(0.0, |cert| tls_cpu(cert, bodies));
    Floor {
        cat,
        base64,
        sha256,
        tls,
    }
}

/// The CPU `cat` spends draining `data` from a FIFO.
fn cat_cpu(dir: &Path, data: &[u8]) -> f64 {
    let fifo = dir.join("floor.pipe");
    let _ = fs::remove_file(&fifo);
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let mut reader = Command::new("cat")
        .arg(&fifo)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut w = process::open_writer(&fifo, Duration::from_secs(30));
        w.write_all(data).unwrap();
    }
    let before = children_cpu();
    reader.wait().unwrap();
    children_cpu() - before
}

/// The CPU rustls spends encrypting `bodies` on an established TLS connection, to a sink.
fn tls_cpu(cert: &TestCert, bodies: &[Vec<u8>]) -> f64 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert.cert_path).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = rustls::Connection::from(
        rustls::ClientConnection::new(Arc::new(config), "127.0.0.1".try_into().unwrap()).unwrap(),
    );
    let mut server =
        rustls::Connection::from(rustls::ServerConnection::new(cert.server_config()).unwrap());
    // The handshake, in memory.
    while client.is_handshaking() || server.is_handshaking() {
        pump(&mut client, &mut server);
        pump(&mut server, &mut client);
    }
    let t = thread_cpu();
    for body in bodies {
        for chunk in body.chunks(64 * 1024) {
            client.writer().write_all(chunk).unwrap();
            while client.wants_write() {
                client.write_tls(&mut std::io::sink()).unwrap();
            }
        }
    }
    thread_cpu() - t
}

/// Moves what `from` has to send into `to`, and lets `to` process it.
fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
    }
    to.process_new_packets().unwrap();
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64
}

struct Run {
    label: String,
    lines: usize,
    bytes: usize,
    seconds: f64,
    cpu: f64,
    rss_kib: u64,
    requests: u64,
    records: u64,
    units: u64,
    floor: Floor,
    /// CPU seconds of this process (the fake server and the writer) during the run.
    server_cpu: f64,
}

/// How the daemon runs besides the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Default,
    Durable,
    Aggregate,
    /// `--delivery-stream`: Firehose.
    Firehose,
    /// `--delivery-stream --aggregate`.
    FirehoseJoined,
}

struct Case<'a> {
    label: &'a str,
    tls: bool,
    lines: usize,
    size: usize,
    mode: Mode,
}

fn run(bin: &Path, dir: &Path, cert: &TestCert, case: &Case) -> Run {
    let &Case {
        label,
        tls,
        lines,
        size,
        mode,
    } = case;
    let counts = Arc::new(Counts::default());
    let server = fake_kinesis(tls.then_some(cert), Arc::clone(&counts));
    let fifo = dir.join("bench.pipe");
    let _ = fs::remove_file(&fifo);
    let mut cmd = Command::new(bin);
    let firehose = matches!(mode, Mode::Firehose | Mode::FirehoseJoined);
    cmd.args([
        "--fifo-name",
        fifo.to_str().unwrap(),
        if firehose {
            "--delivery-stream"
        } else {
            "--stream-name"
        },
        "bench",
        "--flush-interval",
        "100ms",
    ])
    .env_clear()
    .env("AWS_ACCESS_KEY_ID", "AKIDBENCH")
    .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
    .env("AWS_REGION", "us-east-1")
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .env("AWS_ENDPOINT_URL_KINESIS", &server.url)
    .env("AWS_ENDPOINT_URL_FIREHOSE", &server.url)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if tls {
        cmd.args(["--ca-bundle", cert.cert_path.to_str().unwrap()]);
    }
    let journal = dir.join("failed");
    let _ = fs::remove_dir_all(&journal);
    if matches!(mode, Mode::Aggregate | Mode::FirehoseJoined) {
        cmd.arg("--aggregate");
    }
    if mode == Mode::Durable {
        cmd.args([
            "--durable",
            "--failed-attempts-dir",
            journal.to_str().unwrap(),
        ]);
    }
    let mut daemon: Child = cmd.spawn().unwrap();
    let data = input(lines, size);
    let started = Instant::now();
    let own_cpu_before = own_cpu_seconds();
    {
        let mut w = process::open_writer(&fifo, Duration::from_secs(30));
        w.write_all(&data).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while counts.lines.load(Ordering::Relaxed) < lines as u64 {
        assert!(
            Instant::now() < deadline,
            "the benchmark stalled at {} lines",
            counts.lines.load(Ordering::Relaxed)
        );
        thread::sleep(Duration::from_micros(500));
    }
    let seconds = started.elapsed().as_secs_f64();
    let server_cpu = own_cpu_seconds() - own_cpu_before;
    let cpu = cpu_seconds(daemon.id());
    let rss_kib = process::peak_rss_kib(daemon.id() as i32);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    daemon.wait().unwrap();
    let _ = fs::remove_dir_all(&journal);
    let bodies = std::mem::take(&mut *counts.bodies.lock().unwrap());
    let floor = floor(dir, &data, &bodies, tls.then_some(cert));
    Run {
        label: label.to_string(),
        lines,
        bytes: data.len(),
        seconds,
        cpu,
        rss_kib,
        requests: counts.requests.load(Ordering::Relaxed),
        records: counts.records.load(Ordering::Relaxed),
        units: counts.units.load(Ordering::Relaxed),
        floor,
        server_cpu,
    }
}

/// This process's CPU seconds so far (all threads: the fake server and the writer).
fn own_cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(u.user_time()) + secs(u.system_time())
}

fn main() {
    let base_lines: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let filter = std::env::args().nth(2).unwrap_or_default();
    // FIFO2KINESIS_BENCH_BIN measures another build, e.g. the static musl one.
    let bin = std::env::var_os("FIFO2KINESIS_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/fifo2kinesis")
        });
    assert!(
        bin.exists(),
        "build the release binary first: cargo build --release"
    );
    let dir = std::env::temp_dir().join(format!("fifo2kinesis-bench-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let cert = TestCert::generate(&dir);
    println!(
        "{:<42} {:>10} {:>12} {:>9} {:>16} {:>13} {:>9} {:>14} {:>14} {:>12} {:>8} {:>24} {:>14} {:>18} {:>22}",
        "run",
        "lines",
        "lines/s",
        "MB/s",
        "CPU-s per 100MB",
        "peak RSS KiB",
        "requests",
        "records/1M ln",
        "units/1M ln",
        "floor /100MB",
        "x floor",
        "cat+b64+sha+tls /100MB",
        "server CPU-s",
        "CPU-s/100MB range",
        "CPU, RSS vs default"
    );
    let repeat: usize = std::env::var("FIFO2KINESIS_BENCH_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    // The default mode's median CPU per 100 MB and peak RSS, by line size and TLS.
    let mut default_mode: Vec<((usize, bool), (f64, u64))> = Vec::new();
    let cases = [
        (100, base_lines),
        (1024, base_lines / 10),
        (4096, base_lines / 40),
    ]
    .into_iter()
    .flat_map(|(size, lines)| {
        [false, true].into_iter().flat_map(move |tls| {
            [
                Mode::Default,
                Mode::Durable,
                Mode::Aggregate,
                Mode::Firehose,
                Mode::FirehoseJoined,
            ]
            .into_iter()
            .filter(move |&m| match m {
                Mode::Default => true,
                Mode::Durable => size != 1024,
                Mode::Aggregate => size != 4096,
                Mode::Firehose | Mode::FirehoseJoined => size == 100,
            })
            .map(move |mode| (size, lines, tls, mode))
        })
    });
    for (size, lines, tls, mode) in cases {
        {
            let label = format!(
                "{size:>5} B lines, {}{}",
                if tls { "TLS " } else { "HTTP" },
                match mode {
                    Mode::Default => "",
                    Mode::Durable => ", --durable",
                    Mode::Aggregate => ", --aggregate",
                    Mode::Firehose => ", Firehose",
                    Mode::FirehoseJoined => ", Firehose --aggregate",
                }
            );
            // A filter ending in `$` keeps only the labels that end with the rest of it.
            let wanted = match filter.strip_suffix('$') {
                Some(end) => label.trim_end().ends_with(end),
                None => label.contains(&filter),
            };
            if !wanted {
                continue;
            }
            let mut runs: Vec<Run> = (0..repeat)
                .map(|_| {
                    let case = Case {
                        label: &label,
                        tls,
                        lines,
                        size,
                        mode,
                    };
                    run(&bin, &dir, &cert, &case)
                })
                .collect();
            let per_100mb = |r: &Run| r.cpu / (r.bytes as f64 / 100e6);
            let lowest = runs.iter().map(per_100mb).fold(f64::INFINITY, f64::min);
            let highest = runs.iter().map(per_100mb).fold(0.0, f64::max);
            runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            let r = &runs[runs.len() / 2];
            // The comparison with the default mode takes the median CPU of the runs.
            let mut cpus: Vec<f64> = runs.iter().map(per_100mb).collect();
            cpus.sort_by(f64::total_cmp);
            let cpu = cpus[cpus.len() / 2];
            let mut rsses: Vec<u64> = runs.iter().map(|r| r.rss_kib).collect();
            rsses.sort_unstable();
            let rss = rsses[rsses.len() / 2];
            let versus = if mode != Mode::Default {
                default_mode.iter().find(|(k, _)| *k == (size, tls)).map_or(
                    String::from("-"),
                    |(_, (c, other))| {
                        format!(
                            "{:+.0}% CPU, {:+} KiB",
                            (cpu / c - 1.0) * 100.0,
                            rss as i64 - *other as i64
                        )
                    },
                )
            } else {
                default_mode.push(((size, tls), (cpu, rss)));
                String::from("-")
            };
            let scale = r.bytes as f64 / 100e6;
            println!(
                "{:<42} {:>10} {:>12.0} {:>9.1} {:>16.3} {:>13} {:>9} {:>14.0} {:>14.0} {:>12.3} {:>8.2} {:>24} {:>14.2} {:>18} {:>22}",
                r.label,
                r.lines,
                r.lines as f64 / r.seconds,
                r.bytes as f64 / r.seconds / 1e6,
                r.cpu / (r.bytes as f64 / 100e6),
                r.rss_kib,
                r.requests,
                r.records as f64 * 1e6 / r.lines as f64,
                r.units as f64 * 1e6 / r.lines as f64,
                r.floor.total() / scale,
                r.cpu / r.floor.total(),
                format!(
                    "{:.3}+{:.3}+{:.3}+{:.3}",
                    r.floor.cat / scale,
                    r.floor.base64 / scale,
                    r.floor.sha256 / scale,
                    r.floor.tls / scale
                ),
                r.server_cpu,
                format!("{lowest:.3}-{highest:.3}"),
                versus
            );
        }
    }
    fs::remove_dir_all(&dir).unwrap();
}
