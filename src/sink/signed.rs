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
use crate::aws::{self, Provider};
use crate::batch::{Batch, Prepared};
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

/// How far the writing of a body has got: [`BodyEncoder::write_part`] starts at the head and
/// says where to go on from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyAt {
    /// Nothing written yet.
    Head,
    /// Record `r` is the next to write.
    Record(usize),
    /// The body is written to its end.
    Done,
}

/// A part of a body is written to at least this many bytes (or to the body's end) before it
/// is hashed or sent: small enough to stay in the CPU's cache from being written to being
/// hashed or encrypted, large enough that a part costs nothing of its own. A part holds whole
/// records, so one record larger than this makes a larger part.
pub const PART_BYTES: usize = 64 * 1024;

/// An encoder whose bodies a [`SignedSink`] sends. A body is written in parts, twice: once to
/// learn its length and hash ([`Encoder::prepare`]), once as the connection takes it. Both
/// writings give the same bytes: what was chosen for a record (its random key) is attached to
/// the batch before the first.
pub trait BodyEncoder: Encoder {
    /// Appends the part of `batch`'s body that starts `at` to `out`, at least `min` bytes of
    /// it unless the body ends first, and says where the next part starts.
    fn write_part(&mut self, batch: &Batch, at: BodyAt, out: &mut Vec<u8>, min: usize) -> BodyAt;
    /// Writes the whole body for `batch` into `out` (cleared first).
    fn body(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        out.clear();
        let mut at = BodyAt::Head;
        while at != BodyAt::Done {
            at = self.write_part(batch, at, out, usize::MAX);
        }
    }
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

/// A body of at most this many bytes is kept from its measuring to its sending; a larger
/// one is written again as it is sent. A batch of 500 lines of 100 bytes makes a body of about
/// 90 KB, kept: written once, it costs less CPU. Lines of 1 KiB make 700 KB, not kept: the
/// lines alone are in memory, and writing them again costs about 4% more CPU.
pub const KEEP_BODY_BYTES: usize = 256 * 1024;

/// The length and SHA-256 of `batch`'s body, written a part at a time into `buffer` (cleared
/// first). The body is kept in it if it is at most [`KEEP_BODY_BYTES`]; otherwise the buffer
/// holds no body (only its capacity is left, for reuse).
pub fn measure_body(
    encoder: &mut (impl BodyEncoder + ?Sized),
    batch: &Batch,
    mut buffer: Vec<u8>,
) -> Prepared {
    buffer.clear();
    let mut hash = aws::BodyHash::default();
    let mut len = 0;
    // The lines' base64 alone is 4/3 of them: a body sure to be too large is not gathered.
    let mut keep = batch.size() / 3 * 4 <= KEEP_BODY_BYTES;
    let mut at = BodyAt::Head;
    while at != BodyAt::Done {
        let from = if keep { buffer.len() } else { 0 };
        buffer.truncate(from);
        at = encoder.write_part(batch, at, &mut buffer, PART_BYTES);
        hash.update(&buffer[from..]);
        len += (buffer.len() - from) as u64;
        keep = keep && buffer.len() <= KEEP_BODY_BYTES;
    }
    if !keep {
        buffer.clear();
    }
    Prepared {
        len,
        sha256_hex: hash.finish(),
        body: buffer,
        digests: Vec::new(),
    }
}

/// A body written a part at a time as the connection reads it.
struct BodyReader<'a> {
    encoder: &'a mut dyn BodyEncoder,
    batch: &'a Batch,
    at: BodyAt,
    part: &'a mut Vec<u8>,
    /// How much of `part` was read.
    read: usize,
    /// The length measured, and how much was written so far: a body that comes out otherwise
    /// is an error, never a request cut short or run over.
    len: u64,
    written: u64,
}

impl<'a> BodyReader<'a> {
    /// A reader of `batch`'s body from its start, writing parts into `part` (a reused buffer:
    /// what it holds is cleared, never sent).
    fn new(
        encoder: &'a mut dyn BodyEncoder,
        batch: &'a Batch,
        part: &'a mut Vec<u8>,
        len: u64,
    ) -> Self {
        part.clear();
        BodyReader {
            encoder,
            batch,
            at: BodyAt::Head,
            part,
            read: 0,
            len,
            written: 0,
        }
    }
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let differs =
            || std::io::Error::other("the body written differs in length from the body measured");
        while self.read == self.part.len() {
            if self.at == BodyAt::Done {
                return match self.written == self.len {
                    true => Ok(0),
                    false => Err(differs()),
                };
            }
            self.part.clear();
            self.read = 0;
            self.at = self
                .encoder
                .write_part(self.batch, self.at, self.part, PART_BYTES);
            self.written += self.part.len() as u64;
            if self.written > self.len {
                return Err(differs());
            }
        }
        let n = buf.len().min(self.part.len() - self.read);
        buf[..n].copy_from_slice(&self.part[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

/// Prepares `batch` as the reading thread does and writes its body as the sender does, read
/// a few hundred bytes at a time; checks that both writings, and the whole body written at
/// once, agree, and returns the body.
#[cfg(test)]
pub(crate) fn encoded(encoder: &mut dyn BodyEncoder, batch: &mut Batch) -> Vec<u8> {
    let prepared = encoder.prepare(batch, b"a spare buffer".to_vec());
    // Written at once before the batch carries what the first writing learnt.
    let mut fresh = Vec::new();
    encoder.body(batch, &mut fresh);
    batch.set_prepared(prepared.clone());
    if let Some(kept) = prepared.kept() {
        assert!(kept.len() <= KEEP_BODY_BYTES);
    } else {
        assert!(prepared.len as usize > KEEP_BODY_BYTES && prepared.body.is_empty());
    }
    let mut whole = Vec::new();
    encoder.body(batch, &mut whole);
    // The sender's buffer holds the last part of the body before.
    let mut part = b"the end of another body".to_vec();
    let mut reader = BodyReader::new(&mut *encoder, batch, &mut part, prepared.len);
    let mut body = Vec::new();
    let mut buf = [0; 333];
    loop {
        let n = reader.read(&mut buf).expect("writing a body cannot fail");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body.len() as u64, prepared.len, "the measured length");
    assert_eq!(
        aws::sha256_hex(&body),
        prepared.sha256_hex,
        "the measured hash"
    );
    assert_eq!(body, whole, "the body written at once");
    assert_eq!(body, fresh, "the body written with nothing learnt");
    if let Some(kept) = prepared.kept() {
        assert_eq!(kept, body, "the body kept");
    }
    body
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
    /// The part of a body being sent, reused.
    part: Vec<u8>,
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
            part: Vec::new(),
            answer: Vec::new(),
        }
    }

    fn attempt(
        &mut self,
        batch: &mut Batch,
        deadline: Option<Instant>,
    ) -> Result<PutResult, Failure> {
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
        // The reading thread measured the body; a resend of some records is measured here,
        // once for all its attempts.
        if batch.prepared().is_none() {
            let mut prepared = self.encoder.prepare(batch, Vec::new());
            if prepared.kept().is_none() {
                // Only its capacity is left: not held with the batch.
                prepared.body = Vec::new();
            }
            batch.set_prepared(prepared);
        }
        let batch = &*batch;
        let prepared = batch.prepared().expect("measured above");
        let signed = aws::sign_hashed(
            &creds,
            &self.region,
            self.api.signing_name,
            &self.url,
            &headers,
            &prepared.sha256_hex,
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
        // A kept body goes as it is; another is written again as it is sent. The length is
        // known either way, so neither goes in chunks.
        let mut body = BodyReader::new(&mut *self.encoder, batch, &mut self.part, prepared.len);
        let request = request
            .header("content-length", prepared.len)
            .config()
            .timeout_global(Some(timeout.max(Duration::from_millis(1))))
            .build();
        let sent = match prepared.kept() {
            Some(kept) => request.send(kept),
            None => request.send(ureq::SendBody::from_reader(&mut body)),
        };
        let response = sent.map_err(|e| network_failure(&e))?;
        if self.part.capacity() > 4 * PART_BYTES {
            // A part of very large records: its buffer is not kept.
            self.part = Vec::new();
        }

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
    fn put(&mut self, batch: &mut Batch, deadline: Option<Instant>) -> PutResult {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::kinesis::{Keys, KinesisEncoder};

    #[test]
    fn a_body_written_longer_or_shorter_than_measured_is_an_error_not_a_request() {
        let mut e = KinesisEncoder::new("s", Keys::Fixed(b"k".to_vec()));
        let mut b = Batch::new();
        b.push(b"line");
        let p = e.prepare(&mut b, Vec::new());
        let read_all = |e: &mut KinesisEncoder, len: u64| {
            let mut part = Vec::new();
            let mut reader = BodyReader::new(e, &b, &mut part, len);
            let mut out = Vec::new();
            reader.read_to_end(&mut out).map(|_| out)
        };
        assert_eq!(read_all(&mut e, p.len).unwrap().len() as u64, p.len);
        for len in [p.len - 1, p.len + 1] {
            let e = read_all(&mut e, len).unwrap_err();
            assert!(e.to_string().contains("differs in length"), "{e}");
        }
    }
}
