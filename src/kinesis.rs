//! The Kinesis PutRecords wire format and the rules for reading its answers.
//!
//! Pure functions only: the request body from a [`Batch`], the per-record outcome of a 200
//! answer (strictly: see [`parse_put_records_output`]), the error code and message of a 4xx/5xx
//! answer (sanitized as the AWS JSON protocols do), the wait an answer asks for, and what each
//! error means for the sender ([`ErrorKind`]). No I/O happens here, so every rule is unit-tested
//! against canned answers.
//!
//! Every answer is hostile input: one that does not prove success is a failure to retry, never
//! a delivery. Errors are classified by their code and the request's size, never by the words
//! of a message.

mod output;

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use sha2::{Digest, Sha256};

use crate::batch::{Batch, Prepared};
use crate::config::MAX_RECORDS_PER_REQUEST;

pub use output::{parse_put_records_output, FailedRecord, MalformedResponse, PutRecordsOutput};

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

/// Reads an answer other than 200. For a 4xx/5xx, the code comes from the `X-Amzn-Errortype`
/// header, else the body's `__type`, else its `code`; the message from `message`, else
/// `Message`. Any other status (a redirect, another 2xx) is no AWS error whatever its body
/// says: its code is `HTTP <status>` and its message empty.
pub fn parse_error(status: u16, errortype_header: Option<&str>, body: &[u8]) -> ServiceError {
    if !is_error_status(status) {
        return ServiceError {
            status,
            code: format!("HTTP {status}"),
            message: String::new(),
        };
    }
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
    /// A request beyond the default limits was refused as invalid: split it, or set a single
    /// record aside.
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

/// The codes that mean "too large" when, and only when, the request is beyond the default
/// limits (see [`beyond_default_limits`]); within them they name another mistake.
const SIZE_CODES: &[&str] = &["ValidationException", "InvalidArgumentException"];

/// A stream's record size limit (data plus partition key) until it is raised per stream.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// The request size limit (data plus partition keys of all records) every stream accepts.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 5 * 1024 * 1024;

/// Whether `batch` is beyond what every stream accepts: more than 500 records, a record over
/// [`DEFAULT_MAX_RECORD_BYTES`], or more than [`DEFAULT_MAX_REQUEST_BYTES`] in all. Only such a
/// request can be refused for its size (`--max-record-bytes` and `--max-request-bytes` go up to
/// 10 MiB for streams whose limit was raised).
pub fn beyond_default_limits(batch: &Batch) -> bool {
    batch.len() > MAX_RECORDS_PER_REQUEST
        || batch.size() > DEFAULT_MAX_REQUEST_BYTES
        || batch
            .records()
            .any(|(data, key)| data.len() + key.len() > DEFAULT_MAX_RECORD_BYTES)
}

/// Whether `status` is an error answer (4xx or 5xx).
fn is_error_status(status: u16) -> bool {
    (400..600).contains(&status)
}

/// Classifies an answer other than 200. `beyond_limits`: whether the request was beyond the
/// default limits ([`beyond_default_limits`]).
///
/// By code, never by the words of a message: a 413 (from a proxy, say) is backed off and
/// retried; `ValidationException` or `InvalidArgumentException` means "too large" only for a
/// request beyond the limits, and within them a mistake retrying will not fix. A status that
/// is no error (a redirect, which is never followed) proves nothing: retried.
pub fn classify(err: &ServiceError, beyond_limits: bool) -> ErrorKind {
    let code = err.code.as_str();
    if !is_error_status(err.status) {
        ErrorKind::Transient
    } else if THROTTLING_CODES.contains(&code) || err.status == 429 {
        ErrorKind::Throttled
    } else if EXPIRED_CODES.contains(&code) {
        ErrorKind::ExpiredCredentials
    } else if code == "InvalidSignatureException" && is_clock_skew_message(&err.message) {
        ErrorKind::ClockSkew
    } else if SIZE_CODES.contains(&code) && beyond_limits {
        ErrorKind::TooLarge
    } else if TRANSIENT_CODES.contains(&code) || err.status >= 500 || err.status == 413 {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    }
}

/// Reads an `x-amz-retry-after` value: a wait in milliseconds, ASCII digits only (whitespace
/// around them allowed). A value too large for a `u64` saturates; the sender caps the wait.
pub fn parse_retry_after(value: &[u8]) -> Option<Duration> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = digits.iter().fold(0u64, |ms, &d| {
        ms.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Some(Duration::from_millis(ms))
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
        assert_eq!(classify(&e, false), ErrorKind::Permanent);
        let e = parse_error(502, None, b"<html>Bad Gateway</html>");
        assert_eq!(e.code, "HTTP 502");
        assert_eq!(e.to_string(), "HTTP 502 (HTTP 502)");
    }

    #[test]
    fn a_status_that_is_no_error_is_retried_whatever_its_body_says() {
        let body = br#"{"__type":"ResourceNotFoundException","message":"gone"}"#;
        for status in [301, 302, 307, 308, 201, 204] {
            let e = parse_error(status, Some("ValidationException"), body);
            assert_eq!(e.code, format!("HTTP {status}"));
            assert_eq!(e.message, "");
            assert_eq!(classify(&e, true), ErrorKind::Transient);
        }
    }

    #[test]
    fn classification_follows_the_table() {
        let k = |status, code: &str, msg: &str| {
            let err = ServiceError {
                status,
                code: code.into(),
                message: msg.into(),
            };
            let kind = classify(&err, false);
            if !SIZE_CODES.contains(&code) {
                assert_eq!(classify(&err, true), kind, "{code} does not depend on size");
            }
            kind
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
        assert!(ErrorKind::ClockSkew.is_retryable() && !ErrorKind::Permanent.is_retryable());
    }

    /// A proxy's 413 page was read as "too large" for its words, and batches were split down
    /// to single records set aside as oversized: the code decides, and the request's size.
    #[test]
    fn too_large_only_for_a_size_code_beyond_the_default_limits() {
        let e = |status, code: &str, message: &str| ServiceError {
            status,
            code: code.into(),
            message: message.into(),
        };
        let proxy_page = parse_error(
            413,
            None,
            b"<html><h1>413 Request Entity Too Large</h1>the size exceeds the limit</html>",
        );
        assert_eq!(proxy_page.code, "HTTP 413");
        for beyond in [false, true] {
            assert_eq!(classify(&proxy_page, beyond), ErrorKind::Transient);
            assert_eq!(
                classify(&e(400, "SerializationException", "size too large"), beyond),
                ErrorKind::Permanent
            );
        }
        let size = "1 validation error detected: Value at 'records.1.member.data' failed to satisfy constraint: Member must have length less than or equal to 1048576";
        for code in SIZE_CODES {
            assert_eq!(classify(&e(400, code, size), true), ErrorKind::TooLarge);
            assert_eq!(classify(&e(400, code, ""), true), ErrorKind::TooLarge);
            assert_eq!(classify(&e(413, code, ""), true), ErrorKind::TooLarge);
            assert_eq!(classify(&e(400, code, size), false), ErrorKind::Permanent);
        }
        assert_eq!(
            classify(
                &e(
                    400,
                    "ValidationException",
                    "Value 'a b' at 'streamName' failed"
                ),
                false
            ),
            ErrorKind::Permanent
        );
    }

    #[test]
    fn the_default_limits_are_500_records_1_mib_each_5_mib_in_all() {
        let record = |n: usize| vec![b'x'; n];
        let of = |records: &[(Vec<u8>, &[u8])]| {
            let mut b = Batch::new();
            for (d, k) in records {
                b.push(d, k);
            }
            beyond_default_limits(&b)
        };
        assert!(!of(&[(record(10), b"k")]));
        // Data and key count together.
        assert!(!of(&[(record(DEFAULT_MAX_RECORD_BYTES - 2), b"kk")]));
        assert!(of(&[(record(DEFAULT_MAX_RECORD_BYTES - 1), b"kk")]));
        assert!(of(&[
            (record(10), b"k"),
            (record(DEFAULT_MAX_RECORD_BYTES + 1), b"")
        ]));
        let mib = || (record(DEFAULT_MAX_RECORD_BYTES), &b""[..]);
        assert!(!of(&[mib(), mib(), mib(), mib(), mib()]));
        assert!(of(&[mib(), mib(), mib(), mib(), mib(), (record(1), b"")]));
        let many: Vec<(Vec<u8>, &[u8])> = (0..MAX_RECORDS_PER_REQUEST)
            .map(|_| (record(1), &b"k"[..]))
            .collect();
        assert!(!of(&many));
        let mut too_many = many.clone();
        too_many.push((record(1), b"k"));
        assert!(of(&too_many));
    }

    #[test]
    fn retry_after_is_milliseconds_in_digits_only() {
        let ms = |v: &str| parse_retry_after(v.as_bytes());
        assert_eq!(ms("0"), Some(Duration::ZERO));
        assert_eq!(ms("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(ms(" 250 "), Some(Duration::from_millis(250)));
        assert_eq!(ms("3600000"), Some(Duration::from_secs(3600)));
        assert_eq!(
            ms("18446744073709551615"),
            Some(Duration::from_millis(u64::MAX))
        );
        // Beyond u64: saturates instead of overflowing or being ignored.
        assert_eq!(ms(&"9".repeat(400)), Some(Duration::from_millis(u64::MAX)));
        for bad in [
            "",
            " ",
            "+5",
            "-5",
            "1.5",
            "1e3",
            "5s",
            "0x10",
            "1 000",
            "٣",
            "Fri, 31 Dec 1999 23:59:59 GMT",
        ] {
            assert_eq!(ms(bad), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after(b"12\xff"), None);
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
