//! What operators see: the periodic stats line and the Prometheus metrics file, read back with
//! an independently written parser (Python's `prometheus_client`, installed with the peers).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    out.append({"name": fam.name, "type": fam.type, "help": fam.documentation,
                "samples": [[s.name, s.labels, s.value] for s in fam.samples]})
print(json.dumps(out))
"#;

/// A metric family's name, type and HELP text.
type Head = (String, String, String);

/// The metrics file as `prometheus_client` reads it: each family's head and every sample as
/// `name{label="v"}` → value.
fn parse_metrics(path: &Path) -> (Vec<Head>, BTreeMap<String, f64>) {
    let out = Command::new(python())
        .args(["-c", PARSE])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the file: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(path).unwrap_or_default()
    );
    let families: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut heads = Vec::new();
    let mut samples = BTreeMap::new();
    for f in &families {
        heads.push((
            f["name"].as_str().unwrap().to_string(),
            f["type"].as_str().unwrap().to_string(),
            f["help"].as_str().unwrap().to_string(),
        ));
        for s in f["samples"].as_array().unwrap() {
            let labels: Vec<String> = s[1]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap()))
                .collect();
            let name = if labels.is_empty() {
                s[0].as_str().unwrap().to_string()
            } else {
                format!("{}{{{}}}", s[0].as_str().unwrap(), labels.join(","))
            };
            samples.insert(name, s[2].as_f64().unwrap());
        }
    }
    (heads, samples)
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// Acceptance: the metrics file parses with an independent Prometheus parser and its counters
/// match the test's own counts; the stats line comes every interval.
#[test]
fn the_metrics_file_parses_and_matches_what_happened() {
    let dir = TempDir::new("metrics");
    let fifo = dir.join("in.pipe");
    let metrics_dir = dir.join("metrics");
    fs::create_dir(&metrics_dir).unwrap();
    let metrics = metrics_dir.join("fifo2kinesis.prom");
    let spool = dir.join("spool");
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    // The first request fails with a 500, the second has two records throttled.
    let server = FakeKinesis::with_behaviour("test-stream", false, move |n, _| {
        seen.fetch_add(1, Ordering::SeqCst);
        match n {
            0 => Reply::Error(
                500,
                r#"{"__type":"InternalFailure","message":"boom"}"#.into(),
            ),
            1 => Reply::FailRecords(vec![0, 1], "ProvisionedThroughputExceededException"),
            _ => Reply::Accept,
        }
    });
    let mut daemon = start_daemon(
        &dir,
        &fifo,
        &server,
        &[
            "--stats-interval",
            "1s",
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--failed-attempts-dir",
            spool.to_str().unwrap(),
            "--max-record-bytes",
            "1KiB",
            "--buffer-queue-limit",
            "100",
            "--flush-interval",
            "0",
        ],
    );
    // 1,000 lines (ten full batches), 50 empty lines among them, one line too long for a
    // record (kept in the failed-attempts directory).
    let mut input = Vec::new();
    for i in 0..1000 {
        input.extend_from_slice(format!("metric line {i}\n").as_bytes());
        if i % 20 == 0 {
            input.push(b'\n');
        }
    }
    input.extend_from_slice(&[b'o'; 2000]);
    input.push(b'\n');
    {
        use std::io::Write;
        let mut w = open_writer(&fifo, LONG);
        w.write_all(&input).unwrap();
    }
    wait_until(LONG, "all 1,000 lines at the server", || {
        server.received_count() == 1000
    });
    // The file is rewritten every second: wait for one that has everything.
    wait_until(LONG, "a metrics file with every record", || {
        let text = fs::read_to_string(&metrics).unwrap_or_default();
        text.contains("\nfifo2kinesis_records_sent_total 1000\n")
            && text.contains("\nfifo2kinesis_fifo_reopens_total 1\n")
    });
    let (heads, samples) = parse_metrics(&metrics);

    let gauges = [
        "fifo2kinesis_buffered_bytes",
        "fifo2kinesis_spool_bytes",
        "fifo2kinesis_journal_bytes",
    ];
    assert_eq!(heads.len(), 21, "{heads:?}");
    for (name, kind, help) in &heads {
        assert!(name.starts_with("fifo2kinesis_"), "{name}");
        let want = if gauges.contains(&name.as_str()) {
            "gauge"
        } else {
            "counter"
        };
        assert_eq!(kind, want, "{name}");
        assert!(!help.is_empty(), "{name} has no HELP");
    }
    let spool_bytes = dir_bytes(&spool);
    assert!(spool_bytes >= 2000, "the long line is not on disk");
    let want: BTreeMap<String, f64> = [
        ("fifo2kinesis_lines_read_total", 1000),
        ("fifo2kinesis_bytes_read_total", input.len()),
        ("fifo2kinesis_empty_lines_total", 50),
        ("fifo2kinesis_oversized_lines_total", 1),
        ("fifo2kinesis_records_sent_total", 1000),
        ("fifo2kinesis_user_records_sent_total", 1000),
        ("fifo2kinesis_payload_units_total", 1000),
        ("fifo2kinesis_requests_total", calls.load(Ordering::SeqCst)),
        ("fifo2kinesis_retries_total", 2),
        ("fifo2kinesis_throttled_records_total", 2),
        ("fifo2kinesis_failed_records_total", 0),
        ("fifo2kinesis_lines_spooled_total", 1),
        ("fifo2kinesis_lines_replayed_total", 0),
        ("fifo2kinesis_lines_resent_total", 0),
        ("fifo2kinesis_lines_dropped_total", 0),
        ("fifo2kinesis_fifo_reopens_total", 1),
        ("fifo2kinesis_credential_refreshes_total", 0),
        ("fifo2kinesis_buffered_bytes", 0),
        ("fifo2kinesis_spool_bytes", spool_bytes as usize),
        ("fifo2kinesis_journal_bytes", 0),
        (
            "fifo2kinesis_failed_requests_total{code=\"InternalFailure\"}",
            1,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v as f64))
    .collect();
    assert_eq!(samples, want);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        12,
        "10 batches, 1 retry, 1 resend"
    );

    let mode = fs::metadata(&metrics).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let names: Vec<_> = fs::read_dir(&metrics_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");

    // The stats line comes by itself every second, and at once on SIGUSR1.
    wait_until(LONG, "two periodic stats lines", || {
        daemon.stderr().matches(" stats: lines_read=").count() >= 2
    });
    let before = daemon.stderr().matches(" stats: ").count();
    daemon.signal(Signal::SIGUSR1);
    wait_until(LONG, "a stats line on SIGUSR1", || {
        daemon.stderr().matches(" stats: ").count() > before
    });
    let log = daemon.stderr();
    assert!(log.contains("failed_requests=InternalFailure:1"), "{log}");
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(LONG).success(), "{}", daemon.stderr());
}
