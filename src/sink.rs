//! Flush handlers: where a batch goes, one attempt at a time.
//!
//! A [`Sink`] makes one attempt to deliver a batch and says what happened ([`PutResult`]);
//! retrying, backoff and keeping failed lines are the sender's business. Two sinks exist:
//! [`KinesisSink`] (signed PutRecords over one kept-alive HTTPS connection) and [`LoggerSink`]
//! (each record on standard output, one per line).

use std::io::{self, Read, Write};
use std::time::{Duration, Instant, SystemTime};

use ureq::Agent;

use crate::aws::{self, Provider};
use crate::batch::Batch;
use crate::kinesis::{self, ErrorKind, FailedRecord};

/// The outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum PutResult {
    /// Every record was accepted.
    Accepted,
    /// These records failed (ascending indices); the others were accepted.
    Partial {
        /// The failed records, in request order.
        failed: Vec<FailedRecord>,
        /// How long the service asked us to wait (`x-amz-retry-after`), uncapped.
        retry_after: Option<Duration>,
    },
    /// The whole attempt failed.
    Failed(Failure),
}

/// Why a whole attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    /// What the failure means for the data.
    pub kind: ErrorKind,
    /// The error code (`ResourceNotFoundException`, `connection`, …), for logs and grouping.
    pub code: String,
    /// A one-line description with no secret in it.
    pub message: String,
    /// How long the service asked us to wait, if it did.
    pub retry_after: Option<Duration>,
}

/// Somewhere batches can be delivered.
pub trait Sink: Send {
    /// Makes one attempt to deliver `batch`, giving up at `deadline` if one is set.
    fn put(&mut self, batch: &Batch, deadline: Option<Instant>) -> PutResult;
    /// What the destination is called in log lines.
    fn describe(&self) -> String;
    /// Called when the service said the credentials expired.
    fn credentials_expired(&mut self) {}
}

/// Timeouts for Kinesis requests.
#[derive(Clone, Copy, Debug)]
pub struct HttpTimeouts {
    /// Connecting (TCP and TLS).
    pub connect: Duration,
    /// A whole request, from sending to the last byte of the answer.
    pub request: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// The most of an answer body that is read.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// Signed PutRecords requests to one stream.
pub struct KinesisSink {
    agent: Agent,
    url: String,
    region: String,
    stream: String,
    credentials: Box<dyn Provider>,
    timeouts: HttpTimeouts,
    body: Vec<u8>,
    /// The last answer's body, reused.
    answer: Vec<u8>,
}

impl KinesisSink {
    /// A sink for `stream` at `endpoint` in `region`, sending with `agent` (which must answer
    /// 4xx/5xx as responses; see [`crate::aws::HttpSettings`]).
    pub fn new(
        agent: Agent,
        endpoint: &str,
        region: &str,
        stream: &str,
        credentials: Box<dyn Provider>,
        timeouts: HttpTimeouts,
    ) -> Self {
        KinesisSink {
            agent,
            url: format!("{}/", endpoint.trim_end_matches('/')),
            region: region.to_string(),
            stream: stream.to_string(),
            credentials,
            timeouts,
            body: Vec::new(),
            answer: Vec::new(),
        }
    }

    fn attempt(&mut self, batch: &Batch, deadline: Option<Instant>) -> Result<PutResult, Failure> {
        let creds = self
            .credentials
            .credentials(SystemTime::now())
            .map_err(|e| Failure {
                kind: ErrorKind::Transient,
                code: "credentials".into(),
                message: e.to_string(),
                retry_after: None,
            })?;
        let headers = [
            ("content-type", kinesis::CONTENT_TYPE),
            ("x-amz-target", kinesis::PUT_RECORDS_TARGET),
        ];
        let now = SystemTime::now();
        // A body prepared by the reading thread is sent as it is; otherwise (a resend of some
        // records, a replayed file) it is made here.
        let made_here;
        let (body, body_sha256) = match batch.prepared() {
            Some(p) => (&p.body[..], p.sha256_hex.as_str()),
            None => {
                kinesis::put_records_body(&self.stream, batch, &mut self.body);
                made_here = kinesis::sha256_hex(&self.body);
                (&self.body[..], made_here.as_str())
            }
        };
        let signed = aws::sign_hashed(
            &creds,
            &self.region,
            kinesis::SIGNING_SERVICE,
            &self.url,
            &headers,
            body_sha256,
            now,
        );
        let signed = signed.map_err(|e| Failure {
            kind: ErrorKind::Permanent,
            code: "signing".into(),
            message: e.to_string(),
            retry_after: None,
        })?;

        let mut request = self.agent.post(&self.url);
        for (name, value) in headers
            .iter()
            .copied()
            .chain(signed.iter().map(|(n, v)| (*n, v.as_str())))
        {
            request = request.header(name, value);
        }
        let timeout = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(self.timeouts.request),
            None => self.timeouts.request,
        };
        let response = request
            .config()
            .timeout_global(Some(timeout.max(Duration::from_millis(1))))
            .build()
            .send(body)
            .map_err(|e| network_failure(&e))?;

        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).map(|v| v.as_bytes());
        let errortype = header("x-amzn-errortype").map(|v| String::from_utf8_lossy(v).into_owned());
        let location = header("location").map(|v| String::from_utf8_lossy(v).into_owned());
        // Asked for on any answer: a 200 with throttled records may carry it too.
        let retry_after = header("x-amz-retry-after").and_then(kinesis::parse_retry_after);
        let mut answer = response.into_body();
        self.answer.clear();
        answer
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .reader()
            .read_to_end(&mut self.answer)
            .map_err(|e| network_failure(&ureq::Error::from(e)))?;
        let body = &self.answer[..];

        if status == 200 {
            return match kinesis::parse_put_records_output(body, batch.len()) {
                Ok(out) if out.failed.is_empty() => Ok(PutResult::Accepted),
                Ok(out) => Ok(PutResult::Partial {
                    failed: out.failed,
                    retry_after,
                }),
                // Nothing in it proves a delivery: the whole request is sent again.
                Err(e) => Err(Failure {
                    kind: ErrorKind::Transient,
                    code: "MalformedResponse".into(),
                    message: e.to_string(),
                    retry_after,
                }),
            };
        }
        let mut err = kinesis::parse_error(status, errortype.as_deref(), body);
        if (300..400).contains(&status) {
            // The agent follows no redirect: a signed POST must not become an unsigned GET
            // whose answer is read as this one's. The target's query may hold someone's token.
            let target = location.as_deref().unwrap_or("nowhere");
            let target = target.split(['?', '#']).next().unwrap_or_default();
            err.message = format!(
                "redirect to {} not followed",
                kinesis::one_line(target, 200)
            );
        }
        let beyond_limits = kinesis::beyond_default_limits(batch);
        Err(Failure {
            kind: kinesis::classify(&err, beyond_limits),
            message: err.to_string(),
            code: err.code,
            retry_after,
        })
    }
}

fn network_failure(e: &ureq::Error) -> Failure {
    let text = e.to_string();
    // rustls errors reach us wrapped in I/O errors; name them for what they are.
    let tls = matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_))
        || text.contains("peer certificate")
        || text.contains("handshake");
    let code = match e {
        _ if tls => "tls",
        ureq::Error::Timeout(_) => "timeout",
        ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            "connection"
        }
        _ => "http",
    };
    let hint = if tls && text.contains("UnknownIssuer") {
        " (is the endpoint's CA in --ca-bundle?)"
    } else {
        ""
    };
    Failure {
        kind: ErrorKind::Transient,
        code: code.into(),
        message: format!("{}{hint}", kinesis::one_line(&text, 300)),
        retry_after: None,
    }
}

impl Sink for KinesisSink {
    fn put(&mut self, batch: &Batch, deadline: Option<Instant>) -> PutResult {
        self.attempt(batch, deadline)
            .unwrap_or_else(PutResult::Failed)
    }

    fn describe(&self) -> String {
        format!("stream {} at {}", self.stream, self.url)
    }

    fn credentials_expired(&mut self) {
        self.credentials.invalidate();
    }
}

/// Writes each record's data to a writer (standard output), one per line.
pub struct LoggerSink<W: Write + Send> {
    out: W,
    buf: Vec<u8>,
}

impl LoggerSink<io::Stdout> {
    /// A sink writing to standard output.
    pub fn stdout() -> Self {
        LoggerSink::new(io::stdout())
    }
}

impl<W: Write + Send> LoggerSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        LoggerSink {
            out,
            buf: Vec::new(),
        }
    }
}

impl<W: Write + Send> Sink for LoggerSink<W> {
    fn put(&mut self, batch: &Batch, _deadline: Option<Instant>) -> PutResult {
        self.buf.clear();
        for (data, _) in batch.records() {
            self.buf.extend_from_slice(data);
            self.buf.push(b'\n');
        }
        match self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush())
        {
            Ok(()) => PutResult::Accepted,
            Err(e) => PutResult::Failed(Failure {
                kind: ErrorKind::Permanent,
                code: "stdout".into(),
                message: format!("writing to standard output failed: {e}"),
                retry_after: None,
            }),
        }
    }

    fn describe(&self) -> String {
        "standard output".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_writes_one_record_per_line() {
        let mut b = Batch::new();
        b.push(b".flush", b"");
        b.push(b"x\0y", b"");
        let mut sink = LoggerSink::new(Vec::new());
        assert_eq!(sink.put(&b, None), PutResult::Accepted);
        assert_eq!(sink.out, b".flush\nx\0y\n");
    }
}
