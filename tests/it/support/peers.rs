//! The independently written peers (kinesalite, moto) as child processes on 127.0.0.1, and a
//! small signed AWS client to set them up and read back what the daemon wrote.
//!
//! The peers are installed under target/peers by `scripts/peers`; a test that needs one fails
//! with a message saying so when it is missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use fifo2kinesis::aws;
use fifo2kinesis::aws::Credentials;
use serde_json::{json, Value};

use super::{TEST_KEY_ID, TEST_SECRET};

/// Where `scripts/peers` installs the peers.
pub fn peers_dir() -> PathBuf {
    std::env::var_os("FIFO2KINESIS_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/peers"))
}

/// The Python of the peers' virtualenv, which has `prometheus_client` (the independent parser
/// of the metrics file).
pub fn python() -> PathBuf {
    venv_python("prometheus_client")
}

/// The Python of the peers' virtualenv, checked to import `module`.
fn venv_python(module: &str) -> PathBuf {
    let python = peers_dir().join("moto/venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{module} is not installed in {}: run scripts/peers (scripts/test does it)",
        python.display()
    );
    python
}

/// Runs one of the tests' Python scripts (tests/peers/SCRIPT) with the virtualenv's Python and
/// these AWS keys, and reads the one JSON value it prints.
fn run_script(script: &str, args: &[&str], module: &str, keys: (&str, &str)) -> Value {
    let python = venv_python(module);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let out = Command::new(&python)
        .arg(&script)
        .args(args)
        .env("AWS_ACCESS_KEY_ID", keys.0)
        .env("AWS_SECRET_ACCESS_KEY", keys.1)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run a tests/peers script");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

/// Creates `bucket` in moto at `url`, and a Direct PUT delivery stream writing into it
/// (tests/peers/firehose_s3.py, with boto3), with `keys`.
pub fn create_delivery_stream(url: &str, delivery_stream: &str, bucket: &str, keys: (&str, &str)) {
    run_script(
        "firehose_s3.py",
        &[url, "create", delivery_stream, bucket],
        "boto3",
        keys,
    );
}

/// Every object in moto's `bucket` at `url`, in key order, read with boto3 and `keys`.
pub fn s3_objects(url: &str, bucket: &str, keys: (&str, &str)) -> Vec<Vec<u8>> {
    let out = run_script("firehose_s3.py", &[url, "read", bucket], "boto3", keys);
    out["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| {
            base64::engine::general_purpose::STANDARD
                .decode(o.as_str().expect("base64 text"))
                .expect("base64")
        })
        .collect()
}

/// Every record of `stream` at `url` read back and deaggregated by AWS's own deaggregator,
/// aws-kinesis-agg (tests/peers/deaggregate.py): the number of shards, of Kinesis records and
/// of aggregated ones, the user records (`shard`, base64 `data`, `partition_key`) in shard
/// then read order, and how many hash outside the range of the shard they were read from.
pub fn deaggregate(url: &str, stream: &str) -> Value {
    run_script(
        "deaggregate.py",
        &[url, stream],
        "aws_kinesis_agg.deaggregator",
        (TEST_KEY_ID, TEST_SECRET),
    )
}

/// A peer process; killed when dropped.
pub struct Peer {
    child: Child,
    pub url: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// kinesalite, via node, on a port it picks and prints.
    pub fn kinesalite() -> Peer {
        let module = peers_dir().join("kinesalite/node_modules/kinesalite");
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
        Peer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// moto's server with signature checking, the first five requests unchecked (for setup).
    pub fn moto() -> Peer {
        let bin = peers_dir().join("moto/venv/bin/moto_server");
        assert!(
            bin.exists(),
            "moto is not installed at {}: run scripts/peers (scripts/test does it)",
            bin.display()
        );
        let port = super::free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "5")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let peer = Peer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let deadline = Instant::now() + Duration::from_secs(60);
        while agent
            .get(format!("{}/moto-api/", peer.url))
            .call()
            .map(|r| r.status().as_u16())
            .ok()
            != Some(200)
        {
            assert!(
                Instant::now() < deadline,
                "moto did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        peer
    }
}

/// Signed requests to a peer with some credentials.
pub struct AwsClient {
    pub url: String,
    pub creds: Credentials,
    agent: ureq::Agent,
}

impl AwsClient {
    pub fn new(url: &str, creds: Credentials) -> AwsClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        AwsClient {
            url: format!("{}/", url.trim_end_matches('/')),
            creds,
            agent,
        }
    }

    /// A client with the test keys (for peers that do not check them).
    pub fn test_keys(url: &str) -> AwsClient {
        AwsClient::new(
            url,
            Credentials::new(TEST_KEY_ID, TEST_SECRET, None, None, "test"),
        )
    }

    fn post(&self, service: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let signed = aws::sign(
            &self.creds,
            "us-east-1",
            service,
            &self.url,
            headers,
            body,
            SystemTime::now(),
        )
        .unwrap();
        let mut req = self.agent.post(&self.url);
        for (k, v) in headers
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .chain(signed)
        {
            req = req.header(k, v);
        }
        let mut resp = req.send(body).unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    /// A Kinesis JSON action; panics unless it answers 200.
    pub fn kinesis(&self, action: &str, body: Value) -> Value {
        let target = format!("Kinesis_20131202.{action}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let (status, text) = self.post("kinesis", &headers, body.to_string().as_bytes());
        assert_eq!(status, 200, "{action}: {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// A query-protocol action (IAM, STS); panics unless it answers 200. Returns the XML.
    pub fn query(&self, service: &str, params: &[(&str, &str)]) -> String {
        let body = params
            .iter()
            .map(|(k, v)| format!("{k}={}", aws::percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let headers = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let (status, text) = self.post(service, &headers, body.as_bytes());
        assert_eq!(status, 200, "{service} {params:?}: {text}");
        text
    }

    /// Creates a one-shard stream and waits until it is ACTIVE.
    pub fn create_stream(&self, stream: &str) {
        self.create_stream_of(stream, 1);
    }

    /// Creates a stream of `shards` shards and waits until it is ACTIVE.
    pub fn create_stream_of(&self, stream: &str, shards: u32) {
        self.kinesis(
            "CreateStream",
            json!({"StreamName": stream, "ShardCount": shards}),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.kinesis("DescribeStream", json!({"StreamName": stream}))["StreamDescription"]
            ["StreamStatus"]
            != "ACTIVE"
        {
            assert!(Instant::now() < deadline, "stream never became ACTIVE");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every record in the stream, in order.
    pub fn read_all(&self, stream: &str) -> Vec<Vec<u8>> {
        let shards = self.kinesis("ListShards", json!({"StreamName": stream}));
        let mut out = Vec::new();
        for shard in shards["Shards"].as_array().unwrap() {
            let it = self.kinesis(
                "GetShardIterator",
                json!({"StreamName": stream, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON"}),
            );
            let mut iterator = it["ShardIterator"].clone();
            loop {
                let page = self.kinesis(
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

/// The text of the first `<tag>…</tag>`.
pub fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>")).unwrap();
    xml[start..end].trim().to_string()
}
