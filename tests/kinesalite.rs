//! End to end against kinesalite, an independently written Kinesis server (installed under
//! target/peers by `scripts/peers`): create a stream, run the daemon, write lines into the
//! FIFO, stop the daemon, and read the lines back with GetRecords.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use fifo2kinesis::credentials::Credentials;
use fifo2kinesis::sigv4;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use support::*;

/// kinesalite as a child process on 127.0.0.1; it ends when dropped.
struct Kinesalite {
    child: Child,
    url: String,
}

impl Kinesalite {
    fn start() -> Kinesalite {
        let root = std::env::var_os("FIFO2KINESIS_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers"));
        let module = root.join("kinesalite/node_modules/kinesalite");
        assert!(
            module.join("package.json").exists(),
            "kinesalite is not installed at {}: run scripts/peers (scripts/test does it)",
            module.display()
        );
        let serve =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/kinesalite-serve.js");
        let mut child = Command::new("node")
            .arg(serve)
            .arg(&module)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed to run kinesalite");
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        let port: u16 = port
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("kinesalite printed {port:?}, not a port"));
        Kinesalite {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Calls a Kinesis action with a signed JSON request and returns the answer.
    fn call(&self, action: &str, body: Value) -> Value {
        let creds = Credentials::new(TEST_KEY_ID, TEST_SECRET, None, None, "test");
        let body = body.to_string();
        let url = format!("{}/", self.url);
        let target = format!("Kinesis_20131202.{action}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let signed = sigv4::sign(
            &creds,
            "us-east-1",
            "kinesis",
            &url,
            &headers,
            body.as_bytes(),
            SystemTime::now(),
        )
        .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.post(&url);
        for (k, v) in headers
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .chain(signed)
        {
            req = req.header(k, v);
        }
        let mut resp = req.send(body.as_bytes()).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "{action}: {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// Every record in the stream, in order.
    fn read_all(&self, stream: &str) -> Vec<Vec<u8>> {
        let shards = self.call("ListShards", json!({"StreamName": stream}));
        let mut out = Vec::new();
        for shard in shards["Shards"].as_array().unwrap() {
            let it = self.call(
                "GetShardIterator",
                json!({"StreamName": stream, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
            );
            let mut iterator = it["ShardIterator"].clone();
            loop {
                let page = self.call(
                    "GetRecords",
                    json!({"ShardIterator": iterator, "Limit": 10000}),
                );
                let records = page["Records"].as_array().unwrap();
                if records.is_empty() {
                    break;
                }
                for r in records {
                    out.push(
                        base64::engine::general_purpose::STANDARD
                            .decode(r["Data"].as_str().unwrap())
                            .unwrap(),
                    );
                }
                iterator = page["NextShardIterator"].clone();
            }
        }
        out
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lines_written_to_the_fifo_can_be_read_back_from_kinesalite() {
    let peer = Kinesalite::start();
    peer.call(
        "CreateStream",
        json!({"StreamName": "e2e", "ShardCount": 1}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while peer.call("DescribeStream", json!({"StreamName": "e2e"}))["StreamDescription"]
        ["StreamStatus"]
        != "ACTIVE"
    {
        assert!(Instant::now() < deadline, "stream never became ACTIVE");
        std::thread::sleep(Duration::from_millis(20));
    }

    let dir = TempDir::new("kinesalite");
    let fifo = dir.join("in.pipe");
    let fifo_arg = fifo.to_str().unwrap();
    let mut daemon = Daemon::start(
        &dir,
        &[
            "--fifo-name",
            fifo_arg,
            "--stream-name",
            "e2e",
            "--flush-interval",
            "200ms",
            "--debug",
        ],
        &aws_env(&peer.url),
    );
    wait_until(Duration::from_secs(30), "the FIFO", || fifo.exists());
    let mut lines: Vec<Vec<u8>> = (0..2000)
        .map(|i| format!("e2e line {i:05} {}", "x".repeat(i % 300)).into_bytes())
        .collect();
    lines.insert(10, b".flush".to_vec());
    lines.insert(20, b".stop".to_vec());
    lines.push(vec![0, 1, 2, 255, b'\t']);
    // Two writer sessions: the daemon reopens the FIFO in between.
    let (a, b) = lines.split_at(1000);
    write_lines_atomically(&mut open_writer(&fifo, Duration::from_secs(30)), a);
    write_lines_atomically(&mut open_writer(&fifo, Duration::from_secs(30)), b);
    daemon.wait_lines_read(lines.len() as u64, Duration::from_secs(60));
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.stderr());

    let got = peer.read_all("e2e");
    assert_eq!(got.len(), lines.len());
    assert_eq!(
        got, lines,
        "kinesalite holds the lines in the order written"
    );
    let log = daemon.stderr();
    assert!(!log.contains(TEST_SECRET), "the secret leaked into the log");
    assert!(
        log.contains(&format!("records_sent={} ", lines.len())),
        "{log}"
    );
}
