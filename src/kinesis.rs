//! The Kinesis PutRecords wire format and the rules for reading its answers.
//!
//! Pure functions only: the request body from a [`Batch`], the per-record outcome of a 200
//! answer, the error code and message of a 4xx/5xx answer (sanitized as the AWS JSON protocols
//! do), and what each error means for the sender ([`ErrorKind`]). No I/O happens here, so every
//! rule is unit-tested against canned answers.

use std::fmt;

use base64::Engine as _;
use serde_json::Value;

use sha2::{Digest, Sha256};

use crate::batch::{Batch, Prepared};

/// The JSON protocol version Kinesis speaks.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The operation header for PutRecords.
pub const PUT_RECORDS_TARGET: &str = "Kinesis_20131202.PutRecords";
/// The SigV4 service name.
pub const SIGNING_SERVICE: &str = "kinesis";

/// Writes the PutRecords JSON for `batch` into `out` (cleared first).
pub fn put_records_body(stream: &str, batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(batch.size() * 4 / 3 + batch.len() * 48 + stream.len() + 32);
    out.extend_from_slice(b"{\"StreamName\":");
    write_json_str(out, stream.as_bytes());
    out.extend_from_slice(b",\"Records\":[");
    for (i, (data, key)) in batch.records().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"Data\":\"");
        let at = out.len();
        let n =
            base64::encoded_len(data.len(), true).expect("record sizes are far below usize::MAX");
        out.resize(at + n, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(data, &mut out[at..])
            .expect("the buffer was sized by encoded_len");
        debug_assert_eq!(written, n);
        out.extend_from_slice(b"\",\"PartitionKey\":");
        write_json_str(out, key);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// The request body for `batch` with its SHA-256, made ahead of sending (on the reading thread,
/// while the sender is busy with the previous request), in `body` (a reused buffer).
pub fn prepare(stream: &str, batch: &Batch, mut body: Vec<u8>) -> Prepared {
    put_records_body(stream, batch, &mut body);
    let sha256_hex = sha256_hex(&body);
    Prepared { body, sha256_hex }
}

/// SHA-256 of a request body, lowercase hex (what SigV4 signs).
pub fn sha256_hex(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// The bytes a JSON string holds as they are, without escaping (those of random keys and
/// stream names among them).
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
        b += 1;
    }
    t
};

/// Writes `s` as a JSON string. Keys and stream names are UTF-8 by construction; anything else
/// is written lossily rather than producing invalid JSON.
fn write_json_str(out: &mut Vec<u8>, s: &[u8]) {
    let plain = s.iter().all(|&b| PLAIN[usize::from(b)]);
    if plain {
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    } else {
        let text = String::from_utf8_lossy(s);
        serde_json::to_writer(&mut *out, &text).expect("writing to a Vec cannot fail");
    }
}

/// One record that a 200 answer reported as failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRecord {
    /// Its position in the request.
    pub index: usize,
    /// The per-record error code, e.g. `ProvisionedThroughputExceededException`.
    pub code: String,
    /// The per-record message.
    pub message: String,
}

/// What a 200 PutRecords answer says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRecordsOutput {
    /// The records that failed, in request order; empty when all were accepted.
    pub failed: Vec<FailedRecord>,
}

/// A 200 answer that does not read as PutRecords output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedResponse(pub String);

impl fmt::Display for MalformedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed PutRecords response: {}", self.0)
    }
}

impl std::error::Error for MalformedResponse {}

/// Reads a 200 PutRecords answer for a request of `sent` records.
pub fn parse_put_records_output(
    body: &[u8],
    sent: usize,
) -> Result<PutRecordsOutput, MalformedResponse> {
    // The common answer, everything accepted, needs no full parse: a JSON string cannot hold
    // an unescaped `"`, so this key can only be the top-level field.
    if failed_record_count_is_zero(body) {
        return Ok(PutRecordsOutput::default());
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| MalformedResponse(format!("not JSON: {e}")))?;
    let failed_count = match v.get("FailedRecordCount") {
        None | Some(Value::Null) => 0,
        Some(n) => n
            .as_u64()
            .ok_or_else(|| MalformedResponse("FailedRecordCount is not a count".into()))?,
    };
    let records = match v.get("Records") {
        Some(Value::Array(r)) => r,
        None if failed_count == 0 => return Ok(PutRecordsOutput::default()),
        _ => return Err(MalformedResponse("Records is missing or not a list".into())),
    };
    if records.len() != sent {
        return Err(MalformedResponse(format!(
            "{} results for {sent} records",
            records.len()
        )));
    }
    let mut failed = Vec::new();
    for (index, r) in records.iter().enumerate() {
        let code = r
            .get("ErrorCode")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty());
        if let Some(code) = code {
            let message = r
                .get("ErrorMessage")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            failed.push(FailedRecord {
                index,
                code: code.to_string(),
                message,
            });
        } else if r.get("SequenceNumber").is_none() {
            return Err(MalformedResponse(format!(
                "result {index} has neither SequenceNumber nor ErrorCode"
            )));
        }
    }
    if failed.len() as u64 != failed_count {
        return Err(MalformedResponse(format!(
            "FailedRecordCount {failed_count} but {} records carry an error",
            failed.len()
        )));
    }
    Ok(PutRecordsOutput { failed })
}

/// Whether the answer says `"FailedRecordCount": 0` (whitespace allowed around the colon).
fn failed_record_count_is_zero(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"FailedRecordCount\"";
    let Some(at) = body.windows(KEY.len()).position(|w| w == KEY) else {
        return false;
    };
    let rest = &body[at + KEY.len()..];
    let mut i = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    if rest.get(i) != Some(&b':') {
        return false;
    }
    i += 1;
    i += rest[i..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len() - i);
    rest.get(i) == Some(&b'0') && !rest.get(i + 1).is_some_and(u8::is_ascii_digit)
}

/// An error answer (HTTP 4xx/5xx) from Kinesis or something in front of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceError {
    /// The HTTP status.
    pub status: u16,
    /// The sanitized error code (`ResourceNotFoundException`), or `HTTP <status>` if none.
    pub code: String,
    /// The message, possibly empty.
    pub message: String,
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (HTTP {})", self.code, self.status)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// Reads an error answer. The code comes from the `X-Amzn-Errortype` header, else the body's
/// `__type`, else its `code`; the message from `message`, else `Message`.
pub fn parse_error(status: u16, errortype_header: Option<&str>, body: &[u8]) -> ServiceError {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| v.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str);
    // Some front ends (and emulators) answer in the XML of the query protocols.
    let text = String::from_utf8_lossy(body);
    let xml = |tag: &str| xml_element(&text, tag);
    let code = errortype_header
        .filter(|h| !h.trim().is_empty())
        .or_else(|| field("__type"))
        .or_else(|| field("code"))
        .or_else(|| xml("Code"))
        .map(sanitize_code)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| format!("HTTP {status}"));
    let message = field("message")
        .or_else(|| field("Message"))
        .or_else(|| xml("Message"))
        .unwrap_or("");
    ServiceError {
        status,
        code,
        message: one_line(message, 300),
    }
}

/// The text of the first `<tag>…</tag>` in `text`.
fn xml_element<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{tag}>"))?;
    Some(text[start..end].trim())
}

/// `aws.protocoltests#FooError:http://…` → `FooError`: what is before the first `:`, then what
/// is after the first `#`.
pub fn sanitize_code(raw: &str) -> String {
    let before_colon = raw.split(':').next().unwrap_or("");
    let after_hash = before_colon
        .split_once('#')
        .map_or(before_colon, |(_, c)| c);
    after_hash.trim().to_string()
}

/// Shortens untrusted text to one line of at most `max` characters for the log.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// What an error means for the data it concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling: retry with backoff.
    Throttled,
    /// A passing fault (5xx, internal failure, network): retry with backoff.
    Transient,
    /// The credentials expired: refresh them and retry.
    ExpiredCredentials,
    /// The request's signature time is too far from the service's clock: retry later.
    ClockSkew,
    /// A record or the request is too large for the stream: split, or set the record aside.
    TooLarge,
    /// Retrying now will not help (no such stream, access denied…): keep the data aside.
    Permanent,
}

impl ErrorKind {
    /// Whether the same request may succeed if sent again soon.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled
                | ErrorKind::Transient
                | ErrorKind::ExpiredCredentials
                | ErrorKind::ClockSkew
        )
    }
}

const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "LimitExceededException",
    "KMSThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
];

const TRANSIENT_CODES: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
];

const EXPIRED_CODES: &[&str] = &[
    "ExpiredTokenException",
    "ExpiredToken",
    "RequestExpired",
    "TokenRefreshRequired",
];

/// Classifies an error answer.
pub fn classify(err: &ServiceError) -> ErrorKind {
    let code = err.code.as_str();
    if THROTTLING_CODES.contains(&code) || err.status == 429 {
        ErrorKind::Throttled
    } else if EXPIRED_CODES.contains(&code) {
        ErrorKind::ExpiredCredentials
    } else if code == "InvalidSignatureException" && is_clock_skew_message(&err.message) {
        ErrorKind::ClockSkew
    } else if err.status == 413 || (code == "ValidationException" && is_size_message(&err.message))
    {
        ErrorKind::TooLarge
    } else if TRANSIENT_CODES.contains(&code) || err.status >= 500 {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    }
}

/// Classifies a per-record error code of a 200 answer: unknown codes are retryable.
pub fn classify_record(code: &str) -> ErrorKind {
    if THROTTLING_CODES.contains(&code) {
        ErrorKind::Throttled
    } else {
        ErrorKind::Transient
    }
}

fn is_clock_skew_message(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("signature expired") || m.contains("not yet current") || m.contains("clock skew")
}

fn is_size_message(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    (m.contains("length less than or equal")
        || m.contains("size")
        || m.contains("too large")
        || m.contains("exceed"))
        && !m.contains("streamname")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(&str, &str)]) -> Batch {
        let mut b = Batch::new();
        for (d, k) in records {
            b.push(d.as_bytes(), k.as_bytes());
        }
        b
    }

    #[test]
    fn body_bytes_are_exact() {
        let mut out = Vec::new();
        put_records_body("s", &batch(&[("hi", "k")]), &mut out);
        assert_eq!(
            out,
            br#"{"StreamName":"s","Records":[{"Data":"aGk=","PartitionKey":"k"}]}"#
        );
        let mut b = Batch::new();
        b.push(b"\0\xff\n", b"key \"q\"");
        b.push(b"", b"k2");
        put_records_body("my.stream-1", &b, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"StreamName":"my.stream-1","Records":[{"Data":"AP8K","PartitionKey":"key \"q\""},{"Data":"","PartitionKey":"k2"}]}"#
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Records"][0]["PartitionKey"], "key \"q\"");
    }

    #[test]
    fn prepared_bodies_carry_their_sha256() {
        let p = prepare("s", &batch(&[("hi", "k")]), b"old".to_vec());
        assert_eq!(
            p.body,
            br#"{"StreamName":"s","Records":[{"Data":"aGk=","PartitionKey":"k"}]}"#
        );
        // sha256 of the body above, as `sha256sum` prints it.
        assert_eq!(p.sha256_hex.len(), 64);
        assert_eq!(p.sha256_hex, hex(&Sha256::digest(&p.body)));
        assert_eq!(hex(&[0x00, 0x9f, 0xff]), "009fff");
    }

    #[test]
    fn all_accepted() {
        let body = br#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"4959","ShardId":"shardId-000000000000"},{"SequenceNumber":"4960","ShardId":"shardId-000000000000"}],"EncryptionType":"NONE"}"#;
        assert_eq!(
            parse_put_records_output(body, 2).unwrap(),
            PutRecordsOutput::default()
        );
        // A missing FailedRecordCount counts as 0.
        let body = br#"{"Records":[{"SequenceNumber":"1","ShardId":"s"}]}"#;
        assert_eq!(parse_put_records_output(body, 1).unwrap().failed, vec![]);
    }

    #[test]
    fn partial_failure_lists_the_failed_indices_in_order() {
        let body = br#"{"FailedRecordCount":2,"Records":[
            {"SequenceNumber":"1","ShardId":"s"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"},
            {"SequenceNumber":"2","ShardId":"s"},
            {"ErrorCode":"InternalFailure","ErrorMessage":"Internal service failure."}]}"#;
        let out = parse_put_records_output(body, 4).unwrap();
        assert_eq!(
            out.failed.iter().map(|f| f.index).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(out.failed[0].code, "ProvisionedThroughputExceededException");
        assert_eq!(out.failed[1].message, "Internal service failure.");
    }

    #[test]
    fn zero_failed_records_is_read_without_a_full_parse() {
        assert!(failed_record_count_is_zero(
            br#"{"FailedRecordCount" : 0 ,"Records":[]}"#
        ));
        assert!(!failed_record_count_is_zero(br#"{"FailedRecordCount":01}"#));
        assert!(!failed_record_count_is_zero(br#"{"FailedRecordCount":10}"#));
        assert!(!failed_record_count_is_zero(
            br#"{"Records":[{"ErrorMessage":"FailedRecordCount:0"}]}"#
        ));
        let two = br#"{"FailedRecordCount":2,"Records":[{"ErrorCode":"A"},{"ErrorCode":"B"}]}"#;
        assert_eq!(parse_put_records_output(two, 2).unwrap().failed.len(), 2);
    }

    #[test]
    fn malformed_outputs_are_errors() {
        assert!(parse_put_records_output(b"<html>", 1).is_err());
        assert!(parse_put_records_output(
            br#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"1"}]}"#,
            1
        )
        .is_err());
        assert!(parse_put_records_output(br#"{"FailedRecordCount":1}"#, 1).is_err());
        assert!(parse_put_records_output(br#"{"Records":[{}]}"#, 1).is_err());
    }

    #[test]
    fn error_codes_are_sanitized_from_header_type_or_code() {
        let e = parse_error(400, None, br#"{"__type":"com.amazonaws.kinesis.v20131202#ResourceNotFoundException","message":"Stream s under account 1 not found."}"#);
        assert_eq!(e.code, "ResourceNotFoundException");
        assert_eq!(e.message, "Stream s under account 1 not found.");
        let e = parse_error(
            400,
            Some("FooError:http://internal.amazon.com/coral/"),
            b"{}",
        );
        assert_eq!(e.code, "FooError");
        let e = parse_error(
            400,
            Some("aws.protocoltests.restjson#FooError:http://x"),
            b"",
        );
        assert_eq!(e.code, "FooError");
        let e = parse_error(
            400,
            None,
            br#"{"code":"AccessDeniedException","Message":"nope"}"#,
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("AccessDeniedException", "nope")
        );
        let e = parse_error(403, None, b"<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match</Message></Error></ErrorResponse>");
        assert_eq!(e.code, "SignatureDoesNotMatch");
        assert_eq!(classify(&e), ErrorKind::Permanent);
        let e = parse_error(502, None, b"<html>Bad Gateway</html>");
        assert_eq!(e.code, "HTTP 502");
        assert_eq!(e.to_string(), "HTTP 502 (HTTP 502)");
    }

    #[test]
    fn classification_follows_the_table() {
        let k = |status, code: &str, msg: &str| {
            classify(&ServiceError {
                status,
                code: code.into(),
                message: msg.into(),
            })
        };
        assert_eq!(
            k(400, "ProvisionedThroughputExceededException", ""),
            ErrorKind::Throttled
        );
        assert_eq!(k(400, "LimitExceededException", ""), ErrorKind::Throttled);
        assert_eq!(k(400, "KMSThrottlingException", ""), ErrorKind::Throttled);
        assert_eq!(k(429, "HTTP 429", ""), ErrorKind::Throttled);
        assert_eq!(k(500, "InternalFailure", ""), ErrorKind::Transient);
        assert_eq!(k(503, "HTTP 503", ""), ErrorKind::Transient);
        assert_eq!(
            k(400, "ExpiredTokenException", ""),
            ErrorKind::ExpiredCredentials
        );
        assert_eq!(k(400, "RequestExpired", ""), ErrorKind::ExpiredCredentials);
        assert_eq!(
            k(
                400,
                "InvalidSignatureException",
                "Signature expired: 20150830T123600Z is now earlier than ..."
            ),
            ErrorKind::ClockSkew
        );
        assert_eq!(
            k(
                400,
                "InvalidSignatureException",
                "The request signature we calculated does not match"
            ),
            ErrorKind::Permanent
        );
        assert_eq!(
            k(400, "ResourceNotFoundException", "Stream s not found"),
            ErrorKind::Permanent
        );
        assert_eq!(k(400, "AccessDeniedException", ""), ErrorKind::Permanent);
        assert_eq!(
            k(403, "UnrecognizedClientException", ""),
            ErrorKind::Permanent
        );
        assert_eq!(k(400, "KMSAccessDeniedException", ""), ErrorKind::Permanent);
        assert_eq!(k(413, "HTTP 413", ""), ErrorKind::TooLarge);
        assert_eq!(
            k(400, "ValidationException", "1 validation error detected: Value at 'records.1.member.data' failed to satisfy constraint: Member must have length less than or equal to 1048576"),
            ErrorKind::TooLarge
        );
        assert_eq!(
            k(
                400,
                "ValidationException",
                "Value 'a b' at 'streamName' failed to satisfy constraint"
            ),
            ErrorKind::Permanent
        );
        assert!(ErrorKind::ClockSkew.is_retryable() && !ErrorKind::Permanent.is_retryable());
    }

    #[test]
    fn unknown_record_codes_are_retryable() {
        assert_eq!(
            classify_record("ProvisionedThroughputExceededException"),
            ErrorKind::Throttled
        );
        assert_eq!(classify_record("InternalFailure"), ErrorKind::Transient);
        assert!(classify_record("SomethingNew").is_retryable());
    }
}
