//! A fake Kinesis (and STS AssumeRole) endpoint on 127.0.0.1 that checks every request
//! (method, headers, SigV4 header shape, JSON, base64), records accepted lines, and answers as
//! a test's behaviour says: accept, fail chosen records, return an error, or send any status,
//! headers and body (a broken or hostile answer). It is a fake Firehose too: a request that
//! names Firehose's PutRecordBatch is checked and answered as Firehose does (no partition
//! keys, `DeliveryStreamName`, `FailedPutCount` and `RequestResponses`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde_json::Value;

use super::creds::{KeyStatus, Registry};
use super::http::{Request, Response, Server, TestCert};

pub const TEST_KEY_ID: &str = "AKIDTESTFIFO2KINESIS";
pub const TEST_SECRET: &str = "test-secret-must-never-be-logged";
/// What the fake STS hands out for AssumeRole.
pub const TEMP_KEY_ID: &str = "ASIATESTTEMPORARYKEY";
pub const TEMP_SECRET: &str = "temporary-secret-must-never-be-logged";
pub const TEMP_TOKEN: &str = "temporary-session-token-must-never-be-logged";

/// What the fake server answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Accept every record.
    Accept,
    /// Fail these record indices with this code; accept the others.
    FailRecords(Vec<usize>, &'static str),
    /// Answer with this status and JSON error body.
    Error(u16, String),
    /// Close the connection without answering; `processed`: after accepting the records (the
    /// client cannot know, so it sends them again: duplicates).
    HangUp { processed: bool },
    /// Answer only after this long (longer than the client waits), without processing.
    Slow(std::time::Duration),
    /// Answer with exactly this status, these headers and this body (a broken or hostile
    /// answer); the request's records count as received only if `received`.
    Raw {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        received: bool,
    },
}

impl Reply {
    /// [`Reply::Raw`] with no extra header, the records not received.
    pub fn raw(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Raw {
            status,
            headers: Vec::new(),
            body: body.into(),
            received: false,
        }
    }
}

/// One PutRecords request as the fake server saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub records: Vec<(Vec<u8>, String)>,
    pub headers: HashMap<String, String>,
}

impl SeenRequest {
    /// The records' data.
    pub fn data(&self) -> Vec<Vec<u8>> {
        self.records.iter().map(|(d, _)| d.clone()).collect()
    }
}

type Behaviour = dyn Fn(usize, &SeenRequest) -> Reply + Send + Sync;

#[derive(Default)]
struct State {
    sts_calls: Vec<String>,
    received: Vec<Vec<u8>>,
    requests: Vec<SeenRequest>,
    problems: Vec<String>,
}

/// A fake Kinesis endpoint on 127.0.0.1.
pub struct FakeKinesis {
    pub url: String,
    state: Arc<Mutex<State>>,
    /// Short-lived keys handed out by fake credential services, checked on every request.
    pub registry: Arc<Registry>,
    keep_requests: bool,
    _server: Server,
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
        FakeKinesis::new(stream, keep_requests, None, 0, behaviour)
    }

    /// Like [`FakeKinesis::with_behaviour`], on a chosen port (to come up after an outage).
    pub fn on_port(
        port: u16,
        stream: &str,
        behaviour: impl Fn(usize, &SeenRequest) -> Reply + Send + Sync + 'static,
    ) -> FakeKinesis {
        FakeKinesis::new(stream, false, None, port, behaviour)
    }

    /// A server that accepts everything, over TLS with `cert`.
    pub fn start_tls(stream: &str, cert: &TestCert) -> FakeKinesis {
        FakeKinesis::new(stream, true, Some(cert), 0, |_, _| Reply::Accept)
    }

    fn new(
        stream: &str,
        keep_requests: bool,
        tls: Option<&TestCert>,
        port: u16,
        behaviour: impl Fn(usize, &SeenRequest) -> Reply + Send + Sync + 'static,
    ) -> FakeKinesis {
        let state = Arc::new(Mutex::new(State::default()));
        let registry = Arc::new(Registry::default());
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let counter = Arc::new(AtomicUsize::new(0));
        let (st, reg, stream) = (
            Arc::clone(&state),
            Arc::clone(&registry),
            stream.to_string(),
        );
        let handler = move |req: &Request| {
            if req
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
            {
                let (status, body) = fake_sts(req, &st);
                return Response::new(status, JSON, body);
            }
            handle(
                req,
                &stream,
                &st,
                &reg,
                &*behaviour,
                &counter,
                keep_requests,
            )
        };
        let server = match (tls, port) {
            (None, 0) => Server::start(handler),
            (None, port) => Server::start_on(port, handler),
            (Some(cert), _) => Server::start_tls(cert, handler),
        };
        FakeKinesis {
            url: server.url.clone(),
            state,
            registry,
            keep_requests,
            _server: server,
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

fn handle(
    req: &Request,
    stream: &str,
    state: &Mutex<State>,
    registry: &Registry,
    behaviour: &Behaviour,
    counter: &AtomicUsize,
    keep: bool,
) -> Response {
    let (mut problems, expired) = check_headers(req, registry);
    if expired {
        registry.expired_rejections.fetch_add(1, Ordering::SeqCst);
        return Response::new(
            400,
            JSON,
            r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#,
        );
    }
    let firehose = req.header("x-amz-target") == Some(FIREHOSE_TARGET);
    let records = match parse_body(&req.body, stream, firehose) {
        Ok(r) => r,
        Err(p) => {
            problems.push(p);
            Vec::new()
        }
    };
    let seen = SeenRequest {
        method: req.method.clone(),
        records,
        headers: req.headers.clone(),
    };
    let n = counter.fetch_add(1, Ordering::SeqCst);
    let reply = behaviour(n, &seen);
    let mut st = state.lock().unwrap();
    st.problems.extend(problems);
    let answer = match &reply {
        Reply::Accept => {
            st.received
                .extend(seen.records.iter().map(|(d, _)| d.clone()));
            let results: Vec<Value> = (0..seen.records.len())
                .map(|i| accepted_entry(firehose, n, i))
                .collect();
            Response::new(200, JSON, answer(firehose, 0, results))
        }
        Reply::FailRecords(failed, code) => {
            let mut results = Vec::new();
            for (i, (d, _)) in seen.records.iter().enumerate() {
                if failed.contains(&i) {
                    results.push(serde_json::json!({"ErrorCode": code, "ErrorMessage": "Rate exceeded for shard shardId-000000000000"}));
                } else {
                    st.received.push(d.clone());
                    results.push(accepted_entry(firehose, n, i));
                }
            }
            let failed_count = results
                .iter()
                .filter(|r| r.get("ErrorCode").is_some())
                .count();
            Response::new(200, JSON, answer(firehose, failed_count, results))
        }
        Reply::Error(status, body) => Response::new(*status, JSON, body.clone()),
        Reply::HangUp { processed } => {
            if *processed {
                st.received
                    .extend(seen.records.iter().map(|(d, _)| d.clone()));
            }
            let mut resp = Response::new(500, JSON, "");
            resp.hang_up = true;
            resp
        }
        Reply::Slow(wait) => {
            drop(st);
            std::thread::sleep(*wait);
            return Response::new(
                500,
                JSON,
                r#"{"__type":"InternalFailure","message":"too slow"}"#,
            );
        }
        Reply::Raw {
            status,
            headers,
            body,
            received,
        } => {
            if *received {
                st.received
                    .extend(seen.records.iter().map(|(d, _)| d.clone()));
            }
            let mut resp = Response::new(*status, JSON, body.clone());
            resp.headers = headers.clone();
            resp
        }
    };
    if keep {
        st.requests.push(seen);
    }
    answer
}

/// The content type of Kinesis's answers.
const JSON: &str = "application/x-amz-json-1.1";

/// The operation header of Firehose's PutRecordBatch.
pub const FIREHOSE_TARGET: &str = "Firehose_20150804.PutRecordBatch";

/// An entry of a 200 answer for an accepted record: Kinesis's or Firehose's.
fn accepted_entry(firehose: bool, request: usize, i: usize) -> Value {
    if firehose {
        serde_json::json!({"RecordId": format!("{request}-{i}")})
    } else {
        serde_json::json!({"SequenceNumber": format!("{request}-{i}"), "ShardId": "shardId-000000000000"})
    }
}

/// A 200 answer's body: Kinesis's or Firehose's.
fn answer(firehose: bool, failed: usize, entries: Vec<Value>) -> String {
    if firehose {
        serde_json::json!({"Encrypted": false, "FailedPutCount": failed, "RequestResponses": entries})
    } else {
        serde_json::json!({"FailedRecordCount": failed, "Records": entries})
    }
    .to_string()
}

/// The web identity token the fake STS accepts.
pub const WEB_IDENTITY_TOKEN: &str = "eyJ-fake-web-identity-token-never-logged";

/// Answers STS AssumeRole (signed with the test keys) and AssumeRoleWithWebIdentity (unsigned,
/// with [`WEB_IDENTITY_TOKEN`]).
fn fake_sts(req: &Request, state: &Mutex<State>) -> (u16, String) {
    let form = String::from_utf8_lossy(&req.body).into_owned();
    let auth = req.header("authorization").unwrap_or_default().to_string();
    let mut st = state.lock().unwrap();
    st.sts_calls.push(form.clone());
    let action = if form.starts_with(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A",
    ) {
        if !auth.is_empty() {
            st.problems
                .push("AssumeRoleWithWebIdentity was signed".into());
        }
        if !form.ends_with(&format!("&WebIdentityToken={WEB_IDENTITY_TOKEN}")) {
            return (400, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code><Message>bad token</Message></Error></ErrorResponse>".into());
        }
        "AssumeRoleWithWebIdentity"
    } else if form.starts_with("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A")
    {
        if !auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={TEST_KEY_ID}/"))
            || !auth.contains("/us-east-1/sts/aws4_request")
        {
            st.problems
                .push(format!("STS authorization shape: {auth:?}"));
        }
        "AssumeRole"
    } else {
        st.problems.push(format!("STS form: {form}"));
        return (
            400,
            "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>".into(),
        );
    };
    (
        200,
        format!(
            "<{action}Response><{action}Result><Credentials><AccessKeyId>{TEMP_KEY_ID}</AccessKeyId>\
             <SecretAccessKey>{TEMP_SECRET}</SecretAccessKey><SessionToken>{TEMP_TOKEN}</SessionToken>\
             <Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></{action}Result></{action}Response>"
        ),
    )
}

/// Checks method, path and headers; returns the problems, and whether the key had expired.
fn check_headers(req: &Request, registry: &Registry) -> (Vec<String>, bool) {
    let mut p = Vec::new();
    if req.method != "POST" || req.path != "/" {
        p.push(format!("request {} {}", req.method, req.path));
    }
    let h = &req.headers;
    let expect = |p: &mut Vec<String>, name: &str, want: &str| {
        if h.get(name).map(String::as_str) != Some(want) {
            p.push(format!("{name}: {:?}, want {want:?}", h.get(name)));
        }
    };
    expect(&mut p, "content-type", "application/x-amz-json-1.1");
    let firehose = h.get("x-amz-target").map(String::as_str) == Some(FIREHOSE_TARGET);
    let service = if firehose { "firehose" } else { "kinesis" };
    if !firehose {
        expect(&mut p, "x-amz-target", "Kinesis_20131202.PutRecords");
    }
    if !h.contains_key("host") {
        p.push("no host header".into());
    }
    let date = h.get("x-amz-date").cloned().unwrap_or_default();
    let date_ok = date.len() == 16 && date.as_bytes()[8] == b'T' && date.ends_with('Z');
    if !date_ok {
        p.push(format!("x-amz-date {date:?}"));
    }
    let auth = h.get("authorization").cloned().unwrap_or_default();
    let key = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
        .to_string();
    // Temporary credentials must come with their session token.
    let want_token = match registry.status(&key) {
        KeyStatus::Expired => return (p, true),
        KeyStatus::Valid { token } => Some(token),
        KeyStatus::Unknown if key == TEMP_KEY_ID => Some(TEMP_TOKEN.to_string()),
        KeyStatus::Unknown if key == TEST_KEY_ID => None,
        KeyStatus::Unknown => {
            p.push(format!("unknown access key {key:?}"));
            None
        }
    };
    if h.get("x-amz-security-token") != want_token.as_ref() {
        p.push("wrong or missing x-amz-security-token".into());
    }
    let signed = if want_token.is_some() {
        "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
    } else {
        "content-type;host;x-amz-date;x-amz-target"
    };
    let prefix = format!(
        "AWS4-HMAC-SHA256 Credential={key}/{}/us-east-1/{service}/aws4_request, ",
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
    (p, false)
}

/// The records of a request body with their partition keys (empty for Firehose's).
fn parse_body(body: &[u8], stream: &str, firehose: bool) -> Result<Vec<(Vec<u8>, String)>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let name = if firehose {
        "DeliveryStreamName"
    } else {
        "StreamName"
    };
    if v[name] != stream || v.as_object().map(|o| o.len()) != Some(2) {
        return Err(format!("{name} {:?} in {v}", v[name]));
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
        if firehose {
            // Firehose takes Data alone, of 1,000 KiB at most.
            if r.as_object().map(|o| o.len()) != Some(1) || data.len() > 1000 * 1024 {
                return Err(format!("Firehose record of {} bytes: {r}", data.len()));
            }
            out.push((data, String::new()));
            continue;
        }
        let key = r["PartitionKey"]
            .as_str()
            .ok_or("PartitionKey is not a string")?;
        if key.is_empty() || key.chars().count() > 256 {
            return Err(format!("PartitionKey {key:?}"));
        }
        out.push((data, key.to_string()));
    }
    let total: usize = out.iter().map(|(d, _)| d.len()).sum();
    if firehose && total > 4 << 20 {
        return Err(format!("a Firehose request of {total} bytes"));
    }
    Ok(out)
}

/// The user records of a KPL aggregated record (magic, protobuf, MD5), each with its
/// partition key, read by a decoder of its own; `None` for anything else, a record whose
/// digest does not match or whose protobuf is malformed among them.
pub fn kpl_user_records(data: &[u8]) -> Option<Vec<(Vec<u8>, String)>> {
    use md5::{Digest, Md5};
    let body = data.strip_prefix(&[0xF3, 0x89, 0x9A, 0xC2][..])?;
    let (protobuf, digest) = body.split_at(body.len().checked_sub(16)?);
    if Md5::digest(protobuf)[..] != *digest {
        return None;
    }
    let mut keys = Vec::new();
    let mut records = Vec::new();
    for (field, value) in protobuf_fields(protobuf)? {
        match (field, value) {
            (1, Field::Bytes(k)) => keys.push(String::from_utf8(k.to_vec()).ok()?),
            (3, Field::Bytes(r)) => {
                let (mut index, mut line) = (None, None);
                for (f, v) in protobuf_fields(r)? {
                    match (f, v) {
                        (1, Field::Varint(i)) => index = Some(i as usize),
                        (3, Field::Bytes(d)) => line = Some(d.to_vec()),
                        _ => return None,
                    }
                }
                records.push((line?, index?));
            }
            _ => return None,
        }
    }
    records
        .into_iter()
        .map(|(line, i)| Some((line, keys.get(i)?.clone())))
        .collect()
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn protobuf_fields(mut b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        let value = match tag & 7 {
            0 => Field::Varint(varint(&mut b)?),
            2 => {
                let n = usize::try_from(varint(&mut b)?).ok()?;
                if n > b.len() {
                    return None;
                }
                let (v, rest) = b.split_at(n);
                b = rest;
                Field::Bytes(v)
            }
            _ => return None,
        };
        out.push((tag >> 3, value));
    }
    Some(out)
}
