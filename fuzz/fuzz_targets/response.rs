//! The answer readers on any bytes, checked for what they claim, not only for panics.
//!
//! Input: one byte for the number of records sent (its value mod 16) and the operation (its
//! top bit: Firehose's), one for the length of a header value (mod 32), the header value, then
//! the answer body.
//!
//! - `parse_put_records_output` (Kinesis) and `parse_put_record_batch_output` (Firehose): on
//!   success, the failed indices ascend and stay below `sent`, and a plain `serde_json::Value`
//!   reading of the same body (the obviously correct reference) agrees record by record:
//!   `Records` (`RequestResponses`) is an array of `sent` entries; a failed entry holds the
//!   reported non-empty `ErrorCode` and message; every other entry holds a non-empty string
//!   `SequenceNumber` (`RecordId`) and no `ErrorCode`; `FailedRecordCount` (`FailedPutCount`),
//!   0 when absent, counts the failed.
//! - `parse_retry_after`: digits only, the value `str::parse` gives, saturating past `u64`.
//! - `parse_error`: a sanitized code and a one-line message for every error status, and a
//!   classification with or without the request beyond the limits.
#![no_main]

use std::time::Duration;

use fifo2kinesis::parsers::ErrorKind;
use fifo2kinesis::parsers::{
    classify, classify_record, parse_error, parse_put_record_batch_output,
    parse_put_records_output, parse_retry_after, sanitize_code, PutRecordsOutput,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|input: &[u8]| {
    let [first, header_len, rest @ ..] = input else {
        return;
    };
    let sent = usize::from(first % 16);
    let names = if first & 0x80 != 0 {
        &FIREHOSE
    } else {
        &KINESIS
    };
    let (header, body) = rest.split_at(rest.len().min(usize::from(header_len % 32)));

    let parsed = if first & 0x80 != 0 {
        parse_put_record_batch_output(body, sent)
    } else {
        parse_put_records_output(body, sent)
    };
    if let Ok(out) = parsed {
        assert!(out.failed.windows(2).all(|w| w[0].index < w[1].index));
        assert!(out.failed.iter().all(|f| f.index < sent));
        check_against_reference(body, sent, &out, names);
        for f in &out.failed {
            assert!(classify_record(&f.code).is_retryable());
        }
    }

    check_retry_after(header);

    let header = std::str::from_utf8(header).ok();
    for status in [301, 302, 400, 403, 413, 429, 500, 503] {
        let e = parse_error(status, header, body);
        assert!(!e.code.is_empty());
        assert!(!e.code.contains(':'), "sanitized: {:?}", e.code);
        assert!(!e.message.contains(['\n', '\r']), "one line");
        let within = classify(&e, false);
        let beyond = classify(&e, true);
        assert_ne!(
            within,
            ErrorKind::TooLarge,
            "too large only beyond the limits"
        );
        if status < 400 {
            assert_eq!(
                (within, beyond),
                (ErrorKind::Transient, ErrorKind::Transient)
            );
        }
    }
    if let Some(h) = header {
        // What is before the first ':', then after the first '#'.
        let before = h.split(':').next().unwrap_or("");
        let want = before.split_once('#').map_or(before, |(_, c)| c).trim();
        assert_eq!(sanitize_code(h), want);
    }
});

/// One operation's names: the failed count, the entries, an accepted entry's ID.
struct Names {
    count: &'static str,
    entries: &'static str,
    id: &'static str,
}

const KINESIS: Names = Names {
    count: "FailedRecordCount",
    entries: "Records",
    id: "SequenceNumber",
};

const FIREHOSE: Names = Names {
    count: "FailedPutCount",
    entries: "RequestResponses",
    id: "RecordId",
};

/// Reads `body` as a `serde_json::Value` and checks that it says what `out` says.
fn check_against_reference(body: &[u8], sent: usize, out: &PutRecordsOutput, names: &Names) {
    let answer: Value = serde_json::from_slice(body).expect("accepted, so one JSON value");
    // `null` is the same as absent.
    let field = |v: &'_ Value, name: &str| v.get(name).filter(|f| !f.is_null()).cloned();

    let records = answer[names.entries]
        .as_array()
        .expect("the entries are an array");
    assert_eq!(records.len(), sent, "one entry per record sent");
    let mut failed = out.failed.iter().peekable();
    for (i, entry) in records.iter().enumerate() {
        assert!(entry.is_object());
        let code = field(entry, "ErrorCode");
        match failed.next_if(|f| f.index == i) {
            Some(f) => {
                assert_eq!(code.as_ref().and_then(Value::as_str), Some(f.code.as_str()));
                assert!(!f.code.is_empty());
                let message = field(entry, "ErrorMessage");
                assert_eq!(
                    message.as_ref().map_or(Some(""), Value::as_str),
                    Some(f.message.as_str())
                );
            }
            None => {
                assert!(code.is_none(), "entry {i} is accepted, so has no ErrorCode");
                let sequence_number = field(entry, names.id);
                assert!(
                    sequence_number
                        .as_ref()
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty()),
                    "entry {i} is accepted, so has a SequenceNumber"
                );
            }
        }
    }
    assert!(failed.next().is_none());
    let count = field(&answer, names.count).map_or(Some(0), |c| c.as_u64());
    assert_eq!(count, Some(out.failed.len() as u64));
}

/// `parse_retry_after` against the standard library's parse of the trimmed digits.
fn check_retry_after(value: &[u8]) {
    let got = parse_retry_after(value);
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        assert_eq!(got, None);
        return;
    }
    let text = std::str::from_utf8(digits).expect("digits are ASCII");
    let ms = text.parse::<u64>().unwrap_or(u64::MAX); // only overflow fails here
    assert_eq!(got, Some(Duration::from_millis(ms)));
}
