//! Reading the error answers of Kinesis and Firehose (both AWS JSON 1.1): the code and message
//! of a 4xx/5xx (sanitized as the AWS JSON protocols do), the wait an answer asks for, and what
//! each error means for the data ([`ErrorKind`]). Pure functions, unit-tested against canned
//! answers.
//!
//! Errors are classified by their code and the request's size, never by the words of a
//! message.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use crate::batch::Batch;
use crate::log::one_line;
use crate::options::{
    FIREHOSE_MAX_RECORD_BYTES, FIREHOSE_MAX_REQUEST_BYTES, MAX_RECORDS_PER_REQUEST,
};
use crate::sink::ErrorKind;

/// An error answer (HTTP 4xx/5xx) from the service or something in front of it.
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
    // Firehose's throttling, of a whole request or of a record. Kinesis documents no such
    // code (its 503 says ServiceUnavailable, a passing fault below); were it to send one, it
    // would be backed off the same, only counted as throttling.
    "ServiceUnavailableException",
];

const TRANSIENT_CODES: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalError",
    "ServiceUnavailable",
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

/// The record and request sizes a service takes from every stream (or delivery stream), as
/// the service counts them: data, and the partition key for Kinesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultLimits {
    /// The largest record.
    pub max_record_bytes: usize,
    /// The largest request, all its records together.
    pub max_request_bytes: usize,
}

/// Kinesis: 1 MiB records until a stream's limit is raised (up to 10 MiB), 5 MiB requests.
pub const KINESIS_LIMITS: DefaultLimits = DefaultLimits {
    max_record_bytes: 1024 * 1024,
    max_request_bytes: 5 * 1024 * 1024,
};

/// Firehose: 1,000 KiB records and 4 MiB requests, for every delivery stream.
pub const FIREHOSE_LIMITS: DefaultLimits = DefaultLimits {
    max_record_bytes: FIREHOSE_MAX_RECORD_BYTES,
    max_request_bytes: FIREHOSE_MAX_REQUEST_BYTES,
};

/// Whether `batch`, whose record `r` counts `record_bytes(r)`, is beyond what every stream
/// accepts: more than 500 records, a record over `limits.max_record_bytes`, or more than
/// `limits.max_request_bytes` in all. Only such a request can be refused for its size
/// (`--max-record-bytes` and `--max-request-bytes` go up to 10 MiB for Kinesis streams whose
/// limit was raised).
pub fn beyond_default_limits(
    batch: &Batch,
    limits: DefaultLimits,
    record_bytes: impl Fn(usize) -> usize,
) -> bool {
    let records = batch.record_count();
    if records > MAX_RECORDS_PER_REQUEST {
        return true;
    }
    let mut total = 0;
    for r in 0..records {
        let n = record_bytes(r);
        if n > limits.max_record_bytes {
            return true;
        }
        total += n;
    }
    total > limits.max_request_bytes
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
#[cfg(test)]
mod tests {
    use super::*;

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
        let of = |lines: &[Vec<u8>], key_len: usize| {
            let mut b = Batch::new();
            for d in lines {
                b.push(d);
            }
            beyond_default_limits(&b, KINESIS_LIMITS, |r| b.line(r).len() + key_len)
        };
        assert!(!of(&[record(10)], 1));
        // Data and key count together.
        assert!(!of(&[record(KINESIS_LIMITS.max_record_bytes - 2)], 2));
        assert!(of(&[record(KINESIS_LIMITS.max_record_bytes - 1)], 2));
        assert!(of(
            &[record(10), record(KINESIS_LIMITS.max_record_bytes + 1)],
            0
        ));
        let mib = || record(KINESIS_LIMITS.max_record_bytes);
        assert!(!of(&[mib(), mib(), mib(), mib(), mib()], 0));
        assert!(of(&[mib(), mib(), mib(), mib(), mib(), record(1)], 0));
        // Keys count in the request's total too.
        let full = || record(KINESIS_LIMITS.max_record_bytes - 1);
        assert!(!of(&[full(), full(), full(), full(), full()], 1));
        assert!(of(&[full(), full(), full(), full(), full(), record(0)], 1));
        let many: Vec<Vec<u8>> = (0..MAX_RECORDS_PER_REQUEST).map(|_| record(1)).collect();
        assert!(!of(&many, 1));
        let mut too_many = many.clone();
        too_many.push(record(1));
        assert!(of(&too_many, 1));
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

    #[test]
    fn firehose_throttling_and_limits() {
        let unavailable = parse_error(
            500,
            None,
            br#"{"__type":"ServiceUnavailableException","message":"Slow down."}"#,
        );
        assert_eq!(classify(&unavailable, false), ErrorKind::Throttled);
        assert_eq!(
            classify_record("ServiceUnavailableException"),
            ErrorKind::Throttled
        );
        for code in [
            "ResourceNotFoundException",
            "InvalidKMSResourceException",
            "InvalidSourceException",
            "AccessDeniedException",
        ] {
            let e = parse_error(400, Some(code), b"{}");
            assert_eq!(classify(&e, true), ErrorKind::Permanent, "{code}");
        }
        let invalid = parse_error(400, Some("InvalidArgumentException"), b"{}");
        assert_eq!(classify(&invalid, false), ErrorKind::Permanent);
        assert_eq!(classify(&invalid, true), ErrorKind::TooLarge);

        let record = |n: usize| vec![b'x'; n];
        let of = |lines: &[Vec<u8>]| {
            let mut b = Batch::new();
            for d in lines {
                b.push(d);
            }
            beyond_default_limits(&b, FIREHOSE_LIMITS, |r| b.line(r).len() + 1)
        };
        assert!(!of(&[record(1000 * 1024 - 1)]));
        assert!(of(&[record(1000 * 1024)]));
        // Four full records are 4,000 KiB; 96 KiB more (newlines included) is beyond 4 MiB.
        let full = || record(1000 * 1024 - 1);
        assert!(!of(&[
            full(),
            full(),
            full(),
            full(),
            record(96 * 1024 - 1)
        ]));
        assert!(of(&[full(), full(), full(), full(), record(96 * 1024)]));
    }
}
