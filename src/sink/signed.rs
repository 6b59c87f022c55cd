//! One attempt of a signed AWS JSON 1.1 request that puts records: Kinesis PutRecords and
//! Firehose PutRecordBatch are the same exchange under other names.
//!
//! [`SignedSink`] sends a batch's body (made by the reading thread, or here for a resend) over
//! one kept-alive HTTPS connection, signed with SigV4, and reads the answer: a 200 strictly,
//! record by record ([`super::output`]), anything else by its error code
//! ([`super::errors`]). What differs between the services is an [`Api`] (the operation, the
//! signing name, the answer's field names, the default limits) and the [`BodyEncoder`]. Every
//! answer is hostile input: one that does not prove success is a failure to retry, never a
//! delivery.

use std::io::Read;
use std::time::{Duration, Instant, SystemTime};

use ureq::Agent;

use super::errors::DefaultLimits;
use super::errors::{beyond_default_limits, classify, parse_error, parse_retry_after};
use super::output::{parse_answer, AnswerShape};
use crate::aws::{self, sha256_hex, Provider};
use crate::batch::Batch;
use crate::log::one_line;
use crate::sink::{Encoder, ErrorKind, Failure, PutResult, Sink};

/// The JSON protocol version both services speak.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// What one service's put operation is called and takes.
#[derive(Debug)]
pub struct Api {
    /// The `X-Amz-Target` header: `Kinesis_20131202.PutRecords`.
    pub target: &'static str,
    /// The SigV4 service name: `kinesis`.
    pub signing_name: &'static str,
    /// The names in a 200 answer.
    pub answer: &'static AnswerShape,
    /// What every stream takes: only a request beyond these can be refused for its size.
    pub limits: DefaultLimits,
    /// The size the service bills records by, rounded up: the `payload_units` counter's.
    pub payload_unit: usize,
}

/// An encoder whose bodies a [`SignedSink`] sends.
pub trait BodyEncoder: Encoder {
    /// Writes the request body for `batch` into `out` (cleared first), with what was attached
    /// to its records when it was first encoded.
    fn body(&mut self, batch: &Batch, out: &mut Vec<u8>);
    /// The size the service counts for record `r` of `batch`.
    fn record_bytes(&self, batch: &Batch, r: usize) -> usize;
    /// What the destination is called in log lines: `stream NAME`.
    fn destination(&self) -> String;
}

/// Timeouts for the service's requests.
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

/// Signed requests of one [`Api`] to one destination. The encoder is boxed: one copy of the
/// request code serves both services (the static binary has a size budget).
pub struct SignedSink {
    api: &'static Api,
    agent: Agent,
    url: String,
    region: String,
    encoder: Box<dyn BodyEncoder>,
    credentials: Box<dyn Provider>,
    timeouts: HttpTimeouts,
    body: Vec<u8>,
    /// The last answer's body, reused.
    answer: Vec<u8>,
}

impl SignedSink {
    /// A sink speaking `api` at `endpoint` in `region` with bodies from `encoder`, sending
    /// with `agent` (which must answer 4xx/5xx as responses; see
    /// [`crate::aws::HttpSettings`]).
    pub fn new(
        api: &'static Api,
        agent: Agent,
        endpoint: &str,
        region: &str,
        encoder: Box<dyn BodyEncoder>,
        credentials: Box<dyn Provider>,
        timeouts: HttpTimeouts,
    ) -> Self {
        SignedSink {
            api,
            agent,
            url: format!("{}/", endpoint.trim_end_matches('/')),
            region: region.to_string(),
            encoder,
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
            ("content-type", CONTENT_TYPE),
            ("x-amz-target", self.api.target),
        ];
        let now = SystemTime::now();
        // A body prepared by the reading thread is sent as it is; otherwise (a resend of some
        // records, a replayed file) it is made here.
        let made_here;
        let (body, body_sha256) = match batch.prepared() {
            Some(p) => (&p.body[..], p.sha256_hex.as_str()),
            None => {
                self.encoder.body(batch, &mut self.body);
                made_here = sha256_hex(&self.body);
                (&self.body[..], made_here.as_str())
            }
        };
        let signed = aws::sign_hashed(
            &creds,
            &self.region,
            self.api.signing_name,
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
        let retry_after = header("x-amz-retry-after").and_then(parse_retry_after);
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
            return match parse_answer(self.api.answer, body, batch.record_count()) {
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
        let mut err = parse_error(status, errortype.as_deref(), body);
        if (300..400).contains(&status) {
            // The agent follows no redirect: a signed POST must not become an unsigned GET
            // whose answer is read as this one's. The target's query may hold someone's token.
            let target = location.as_deref().unwrap_or("nowhere");
            let target = target.split(['?', '#']).next().unwrap_or_default();
            err.message = format!("redirect to {} not followed", one_line(target, 200));
        }
        let encoder = &self.encoder;
        let beyond_limits =
            beyond_default_limits(batch, self.api.limits, |r| encoder.record_bytes(batch, r));
        Err(Failure {
            kind: classify(&err, beyond_limits),
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
        message: format!("{}{hint}", one_line(&text, 300)),
        retry_after: None,
    }
}

impl Sink for SignedSink {
    fn put(&mut self, batch: &Batch, deadline: Option<Instant>) -> PutResult {
        self.attempt(batch, deadline)
            .unwrap_or_else(PutResult::Failed)
    }

    fn describe(&self) -> String {
        format!(
            "{} at {}",
            self.encoder.destination(),
            aws::loggable_url(&self.url)
        )
    }

    fn credentials_expired(&mut self) {
        self.credentials.invalidate();
    }

    fn encoder(&self) -> Option<Box<dyn Encoder>> {
        Some(self.encoder.boxed_clone())
    }

    fn payload_units(&self, batch: &Batch, r: usize) -> Option<u64> {
        let bytes = self.encoder.record_bytes(batch, r);
        Some(bytes.div_ceil(self.api.payload_unit).max(1) as u64)
    }
}
