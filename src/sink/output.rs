//! Reading a 200 answer to PutRecords (Kinesis) or PutRecordBatch (Firehose), strictly: it
//! proves delivery record by record or not at all. The two answers have one shape under other
//! names ([`AnswerShape`]): a failed count, and one entry per record sent, in request order,
//! holding an ID for an accepted record or an error code for a failed one.
//!
//! An answer from the network is hostile input. A 200 whose body does not account for every
//! record sent (cut short, empty, a proxy's page, a list too short, a count that disagrees with
//! the list) is a [`MalformedResponse`], which the sink turns into a failure to retry: records
//! are counted as delivered only where the answer shows a sequence number for them.
//!
//! It runs on every request, so nothing is built for the common answer (every record accepted):
//! a scanner of compact JSON proves that answer as AWS writes it, and anything else goes to a
//! serde visitor over the borrowed body, which allocates only for failed records. The scanner
//! never rejects: what it cannot prove, the visitor decides. Tests check that the scanner
//! proves nothing the visitor would not accept, and the fuzz target checks every answer
//! against a plain `serde_json::Value` reading.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::log::one_line;

/// One record that a 200 answer reported as failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRecord {
    /// Its position in the request.
    pub index: usize,
    /// The per-record error code, e.g. `ProvisionedThroughputExceededException`; never empty.
    pub code: String,
    /// The per-record message, possibly empty.
    pub message: String,
}

/// The names one operation's answer gives its fields.
#[derive(Debug)]
pub struct AnswerShape {
    /// The operation, for messages.
    pub operation: &'static str,
    /// The top-level fields read: the failed count, then the array of entries.
    answer_fields: [&'static str; 2],
    /// An entry's fields read: the ID that proves a record accepted, the error code, the error
    /// message.
    entry_fields: [&'static str; 3],
}

/// Kinesis PutRecords: `FailedRecordCount`, `Records` of `SequenceNumber` or `ErrorCode`.
pub const PUT_RECORDS: AnswerShape = AnswerShape {
    operation: "PutRecords",
    answer_fields: ["FailedRecordCount", "Records"],
    entry_fields: ["SequenceNumber", "ErrorCode", "ErrorMessage"],
};

/// Firehose PutRecordBatch: `FailedPutCount`, `RequestResponses` of `RecordId` or
/// `ErrorCode`.
pub const PUT_RECORD_BATCH: AnswerShape = AnswerShape {
    operation: "PutRecordBatch",
    answer_fields: ["FailedPutCount", "RequestResponses"],
    entry_fields: ["RecordId", "ErrorCode", "ErrorMessage"],
};

/// What a 200 answer says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRecordsOutput {
    /// The records that failed, in request order; empty when all were accepted.
    pub failed: Vec<FailedRecord>,
}

/// A 200 answer that does not prove what happened to every record sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedResponse(pub &'static str, pub String);

impl fmt::Display for MalformedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {} response: {}", self.0, self.1)
    }
}

impl std::error::Error for MalformedResponse {}

/// Reads a 200 PutRecords answer for a request of `sent` records.
///
/// The answer is read only when it is exactly one JSON object (whitespace around it) where:
///
/// - `Records` is an array with one entry per record sent, in request order;
/// - each entry is an object with a non-empty string `SequenceNumber` (the record was
///   accepted) or a non-empty string `ErrorCode` (it failed; `ErrorMessage`, if present, is a
///   string). An entry with both counts as failed: sending it again costs at most a duplicate;
/// - `FailedRecordCount` equals the number of failed entries. A missing one counts as 0, as
///   AWS's SDKs read it, so it is accepted only beside a `Records` without failures;
/// - no field read here appears twice.
///
/// `null` reads as an absent field, as in AWS's JSON deserializers. Other fields (`ShardId`,
/// `EncryptionType`, …) are skipped whatever they hold. Anything else is a
/// [`MalformedResponse`].
pub fn parse_put_records_output(
    body: &[u8],
    sent: usize,
) -> Result<PutRecordsOutput, MalformedResponse> {
    parse_answer(&PUT_RECORDS, body, sent)
}

/// Reads a 200 PutRecordBatch answer for a request of `sent` records, by the rules of
/// [`parse_put_records_output`] under Firehose's names: `RequestResponses` entries of
/// `RecordId` or `ErrorCode`, counted by `FailedPutCount` (`Encrypted` and other fields are
/// skipped).
pub fn parse_put_record_batch_output(
    body: &[u8],
    sent: usize,
) -> Result<PutRecordsOutput, MalformedResponse> {
    parse_answer(&PUT_RECORD_BATCH, body, sent)
}

/// Reads a 200 answer of `shape` for a request of `sent` records.
pub fn parse_answer(
    shape: &'static AnswerShape,
    body: &[u8],
    sent: usize,
) -> Result<PutRecordsOutput, MalformedResponse> {
    if Compact::new(body, shape).all_accepted(sent).is_some() {
        return Ok(PutRecordsOutput::default());
    }
    read_any_layout(shape, body, sent)
}

/// The general reader: any JSON layout, partial failures, and the reason an answer is malformed.
fn read_any_layout(
    shape: &'static AnswerShape,
    body: &[u8],
    sent: usize,
) -> Result<PutRecordsOutput, MalformedResponse> {
    let malformed = |reason: String| MalformedResponse(shape.operation, reason);
    // JSON is UTF-8 throughout, skipped strings included.
    let text = std::str::from_utf8(body).map_err(|e| malformed(format!("not UTF-8 text: {e}")))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let failed = Answer { sent, shape }
        .deserialize(&mut de)
        .and_then(|failed| de.end().map(|()| failed))
        .map_err(|e| malformed(one_line(&e.to_string(), 300)))?;
    Ok(PutRecordsOutput { failed })
}

/// A scanner for the all-accepted answer in compact JSON, as AWS writes it, in any key order:
///
/// `{"FailedRecordCount":0,"Records":[{"SequenceNumber":"…","ShardId":"…"},…],…}`
///
/// or Firehose's `{"Encrypted":false,"FailedPutCount":0,"RequestResponses":[{"RecordId":"…"},…]}`.
///
/// It proves the general reader's rules on a narrower grammar: no whitespace, strings of
/// printable ASCII without escapes, every value a string, `true` or `false`, except the count
/// (`0`) and the entries (exactly `sent` objects, each with one non-empty ID and no
/// `ErrorCode` or `ErrorMessage`); no known key twice, nothing after the object. Each step
/// answers `None` for "not proven", and the general reader decides.
struct Compact<'a> {
    rest: &'a [u8],
    shape: &'static AnswerShape,
}

impl<'a> Compact<'a> {
    fn new(body: &'a [u8], shape: &'static AnswerShape) -> Self {
        Compact { rest: body, shape }
    }

    /// The whole body is an answer accepting all `sent` records.
    fn all_accepted(&mut self, sent: usize) -> Option<()> {
        // Then no string holds an escape, a control character or anything but ASCII, and
        // each ends at the next `"`.
        printable_ascii(self.rest).then_some(())?;
        let [count_name, records_name] = self.shape.answer_fields.map(str::as_bytes);
        let (mut count, mut records) = (false, false);
        self.object(|s, key| {
            if key == count_name {
                (!count).then_some(())?;
                count = true;
                s.byte(b'0')
            } else if key == records_name {
                (!records).then_some(())?;
                records = true;
                s.records(sent)
            } else {
                s.scalar()
            }
        })?;
        (records && self.rest.is_empty()).then_some(())
    }

    /// `[`, exactly `sent` accepted entries, `]`.
    fn records(&mut self, sent: usize) -> Option<()> {
        self.byte(b'[')?;
        if sent == 0 {
            return self.byte(b']');
        }
        for i in 0..sent {
            if i > 0 {
                self.byte(b',')?;
            }
            self.accepted_entry()?;
        }
        self.byte(b']')
    }

    /// An object with one non-empty ID (`SequenceNumber`, `RecordId`), no error fields, only
    /// string values.
    fn accepted_entry(&mut self) -> Option<()> {
        let [id_name, code_name, message_name] = self.shape.entry_fields.map(str::as_bytes);
        let mut id = false;
        self.object(|s, key| {
            let value = s.string()?;
            if key == id_name && !id && !value.is_empty() {
                id = true;
                Some(())
            } else if key == id_name || key == code_name || key == message_name {
                None
            } else {
                Some(())
            }
        })?;
        id.then_some(())
    }

    /// A string, `true` or `false`: the value of a field not read.
    fn scalar(&mut self) -> Option<()> {
        for literal in [&b"true"[..], b"false"] {
            if let Some(rest) = self.rest.strip_prefix(literal) {
                self.rest = rest;
                return Some(());
            }
        }
        self.string().map(drop)
    }

    /// `{`, members read by `member` after their key and colon, `}`.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.byte(b'{')?;
        if self.byte(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.byte(b':')?;
            member(self, key)?;
            if self.byte(b',').is_none() {
                return self.byte(b'}');
            }
        }
    }

    /// A string (of printable ASCII without escapes: see [`printable_ascii`]); its content.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.byte(b'"')?;
        let end = find_quote(self.rest)?;
        let text = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Some(text)
    }

    /// Consumes the next byte if it is `b`.
    fn byte(&mut self, b: u8) -> Option<()> {
        match self.rest.split_first() {
            Some((&first, rest)) if first == b => {
                self.rest = rest;
                Some(())
            }
            _ => None,
        }
    }
}

/// The position of the first `"` in `bytes`, looked for eight bytes at a time: strings here are
/// short, too short for `memchr`'s set-up to pay off.
fn find_quote(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        // A byte of `x` is zero where `word` holds a quote; the lowest flagged byte is the
        // first zero (a borrow can only flag bytes above a zero one).
        let x = u64::from_le_bytes(word.try_into().expect("8 bytes")) ^ QUOTES;
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(at + zeros.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == b'"').map(|p| at + p)
}

/// Whether `bytes` are all printable ASCII (space to `~`) other than the backslash.
fn printable_ascii(bytes: &[u8]) -> bool {
    // Branch-free within a chunk, so the compiler checks many bytes at a time.
    bytes.chunks(64).all(|chunk| {
        chunk.iter().fold(true, |plain, &b| {
            plain & (b' '..=b'~').contains(&b) & (b != b'\\')
        })
    })
}

/// The top-level object of an answer to `sent` records; yields the failed records.
struct Answer {
    sent: usize,
    shape: &'static AnswerShape,
}

impl<'de> DeserializeSeed<'de> for Answer {
    type Value = Vec<FailedRecord>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Answer {
    type Value = Vec<FailedRecord>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} output object", self.shape.operation)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let names = &self.shape.answer_fields;
        let mut count: Option<Option<u64>> = None;
        let mut records: Option<Vec<FailedRecord>> = None;
        while let Some(field) = map.next_key_seed(FieldIn(names))? {
            match field {
                Some(0) => once(&mut map, &mut count, names[0])?,
                Some(_) => {
                    if records.is_some() {
                        return Err(de::Error::duplicate_field(names[1]));
                    }
                    records = Some(map.next_value_seed(Records {
                        sent: self.sent,
                        shape: self.shape,
                    })?);
                }
                None => {
                    map.next_value::<AnyValue>()?;
                }
            }
        }
        let failed = records.ok_or_else(|| de::Error::missing_field(names[1]))?;
        let count = count.flatten().unwrap_or(0);
        if count != failed.len() as u64 {
            return Err(de::Error::custom(format_args!(
                "{} {count} but {} entries carry an ErrorCode",
                names[0],
                failed.len()
            )));
        }
        Ok(failed)
    }
}

/// The `Records` array: exactly `sent` entries; yields the failed ones.
struct Records {
    sent: usize,
    shape: &'static AnswerShape,
}

impl<'de> DeserializeSeed<'de> for Records {
    type Value = Vec<FailedRecord>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Records {
    type Value = Vec<FailedRecord>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} array of {} entries",
            self.shape.answer_fields[1], self.sent
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut failed = Vec::new();
        let mut index = 0;
        while let Some(entry) = seq.next_element_seed(EntryIn(self.shape))? {
            if index == self.sent {
                return Err(de::Error::custom(format_args!(
                    "more {} entries than the {} records sent",
                    self.shape.answer_fields[1], self.sent
                )));
            }
            if let Entry::Failed { code, message } = entry {
                failed.push(FailedRecord {
                    index,
                    code,
                    message,
                });
            }
            index += 1;
        }
        if index != self.sent {
            return Err(de::Error::invalid_length(index, &self));
        }
        Ok(failed)
    }
}

/// One entry of the array.
enum Entry {
    Accepted,
    Failed { code: String, message: String },
}

/// Reads one entry of an answer of this shape.
struct EntryIn(&'static AnswerShape);

impl<'de> DeserializeSeed<'de> for EntryIn {
    type Value = Entry;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entry, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntryIn {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} entry object", self.0.answer_fields[1])
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
        let names = &self.0.entry_fields;
        let mut id: Option<Option<NonEmptyString>> = None;
        let mut code: Option<Option<String>> = None;
        let mut message: Option<Option<String>> = None;
        while let Some(field) = map.next_key_seed(FieldIn(names))? {
            match field {
                Some(0) => once(&mut map, &mut id, names[0])?,
                Some(1) => once(&mut map, &mut code, names[1])?,
                Some(_) => once(&mut map, &mut message, names[2])?,
                None => {
                    map.next_value::<AnyValue>()?;
                }
            }
        }
        match (code.flatten(), id.flatten()) {
            (Some(code), _) if code.is_empty() => Err(de::Error::custom("an empty ErrorCode")),
            (Some(code), _) => Ok(Entry::Failed {
                code,
                message: message.flatten().unwrap_or_default(),
            }),
            (None, Some(NonEmptyString)) => Ok(Entry::Accepted),
            (None, None) => Err(de::Error::custom(format_args!(
                "an entry with neither {} nor ErrorCode",
                names[0]
            ))),
        }
    }
}

/// Reads the value of a field into `slot` (`Some(None)` for `null`); a second one is an error.
fn once<'de, A, T>(
    map: &mut A,
    slot: &mut Option<Option<T>>,
    name: &'static str,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// An object key, read as its position among the names the reader knows (`None`: another).
struct FieldIn(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldIn {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldIn {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|&known| known == name))
    }
}

/// Any JSON value, read in full and dropped: strings are unescaped and numbers parsed as a
/// `serde_json::Value` would be, and nesting stops at serde_json's depth limit (128).
struct AnyValue;

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyValue)
    }
}

impl<'de> Visitor<'de> for AnyValue {
    type Value = AnyValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(AnyValue)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<AnyValue>()?.is_some() {}
        Ok(AnyValue)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<AnyValue, AnyValue>()?.is_some() {}
        Ok(AnyValue)
    }
}

/// A non-empty JSON string, not kept (a sequence number: only its presence matters).
struct NonEmptyString;

impl<'de> Deserialize<'de> for NonEmptyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(NonEmptyString)
    }
}

impl<'de> Visitor<'de> for NonEmptyString {
    type Value = NonEmptyString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-empty string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        if s.is_empty() {
            return Err(E::invalid_length(0, &self));
        }
        Ok(NonEmptyString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer like AWS's accepting `n` records.
    fn all_accepted(n: usize) -> String {
        let entries: Vec<String> = (0..n)
            .map(|i| {
                format!(r#"{{"SequenceNumber":"4954698668313554428650745793632167567570019247115678{i:04}","ShardId":"shardId-000000000000"}}"#)
            })
            .collect();
        format!(
            r#"{{"FailedRecordCount":0,"Records":[{}],"EncryptionType":"NONE"}}"#,
            entries.join(",")
        )
    }

    /// No failed record.
    const NONE: [usize; 0] = [];

    fn parse(body: &str, sent: usize) -> Result<PutRecordsOutput, MalformedResponse> {
        parse_put_records_output(body.as_bytes(), sent)
    }

    fn failed_indices(body: &str, sent: usize) -> Vec<usize> {
        let out = parse(body, sent).unwrap_or_else(|e| panic!("{e}: {body}"));
        out.failed.iter().map(|f| f.index).collect()
    }

    /// Whether the compact scanner proves `body` alone.
    fn proven_compact(body: &str, sent: usize) -> bool {
        Compact::new(body.as_bytes(), &PUT_RECORDS)
            .all_accepted(sent)
            .is_some()
    }

    #[test]
    fn an_answer_like_aws_accepts_every_record() {
        assert_eq!(failed_indices(&all_accepted(500), 500), NONE);
        assert_eq!(failed_indices(&all_accepted(1), 1), NONE);
    }

    #[test]
    fn the_compact_scanner_proves_the_common_answers_in_any_key_order() {
        let proven = [
            (all_accepted(500), 500),
            (all_accepted(1), 1),
            (r#"{"Records":[{"ShardId":"s","SequenceNumber":"1","Future":""}],"FailedRecordCount":0}"#.into(), 1),
            (r#"{"EncryptionType":"KMS","Records":[{"SequenceNumber":"1"},{"SequenceNumber":"2"}]}"#.into(), 2),
            (r#"{"Records":[]}"#.into(), 0),
        ];
        for (body, sent) in &proven {
            assert!(proven_compact(body, *sent), "{body}");
            assert_eq!(
                read_any_layout(&PUT_RECORDS, body.as_bytes(), *sent),
                Ok(PutRecordsOutput::default())
            );
        }
        // Left to the general reader, which accepts these...
        let general = [
            r#" {"Records":[{"SequenceNumber":"1"}]}"#,
            r#"{"Records": [{"SequenceNumber":"1"}]}"#,
            r#"{"Records":[{"SequenceNumber":"\u0031"}]}"#,
            r#"{"Records":[{"SequenceNumber":"1","ShardId":"é"}]}"#,
            r#"{"Records":[{"SequenceNumber":"1","ShardId":7}]}"#,
            r#"{"Records":[{"SequenceNumber":"1","ErrorCode":null}]}"#,
            r#"{"Records":[{"SequenceNumber":"1"}],"EncryptionType":null}"#,
            r#"{"FailedRecordCount":null,"Records":[{"SequenceNumber":"1"}]}"#,
        ];
        for body in general {
            assert!(!proven_compact(body, 1), "{body}");
            assert_eq!(failed_indices(body, 1), NONE, "{body}");
        }
        // ...and rejects these.
        let malformed = [
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}]}"#,
                2,
            ),
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"},{"SequenceNumber":"2"}]}"#,
                1,
            ),
            (
                r#"{"FailedRecordCount":00,"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":""}]}"#,
                1,
            ),
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}],"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                r#"{"FailedRecordCount":0,"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}]}x"#,
                1,
            ),
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}]"#,
                1,
            ),
            ("{\"Records\":[{\"SequenceNumber\":\"1\u{1}\"}]}", 1),
        ];
        for (body, sent) in malformed {
            assert!(!proven_compact(body, sent), "{body}");
            assert!(parse(body, sent).is_err(), "{body}");
        }
    }

    /// Every answer one edit away from a compact one: what the scanner proves, the general
    /// reader reads the same way.
    #[test]
    fn the_scanner_proves_nothing_the_general_reader_would_refuse() {
        let answers = [
            (&PUT_RECORDS, all_accepted(3), 3),
            (&PUT_RECORDS, r#"{"Records":[{"SequenceNumber":"1"},{"ShardId":"s","SequenceNumber":"2"}],"FailedRecordCount":0}"#.to_string(), 2),
            (&PUT_RECORD_BATCH, firehose_all_accepted(2), 2),
            (&PUT_RECORD_BATCH, r#"{"RequestResponses":[{"RecordId":"a"}],"Encrypted":true,"FailedPutCount":0}"#.to_string(), 1),
        ];
        // Letters and digits too, so that `true` and `false` become other words.
        let edits = b"\"\\ ,:{}[]0x\n\x01\xfftefu";
        let mut proven = 0;
        for (shape, answer, sent) in &answers {
            let answer = answer.as_bytes();
            for at in 0..=answer.len() {
                let mut variants = Vec::new();
                if at < answer.len() {
                    variants.push([&answer[..at], &answer[at + 1..]].concat());
                }
                for &b in edits {
                    variants.push([&answer[..at], &[b], &answer[at..]].concat());
                    if at < answer.len() {
                        variants.push([&answer[..at], &[b], &answer[at + 1..]].concat());
                    }
                }
                for body in &variants {
                    for n in [sent - 1, *sent, sent + 1] {
                        if Compact::new(body, shape).all_accepted(n).is_some() {
                            proven += 1;
                            let general = read_any_layout(shape, body, n);
                            assert_eq!(
                                general,
                                Ok(PutRecordsOutput::default()),
                                "{}",
                                String::from_utf8_lossy(body)
                            );
                        }
                    }
                }
            }
        }
        assert!(proven > 200, "{proven}");
    }

    #[test]
    fn partial_failure_lists_the_failed_records_in_order() {
        let body = r#"{"FailedRecordCount":2,"Records":[
            {"SequenceNumber":"1","ShardId":"s"},
            {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"},
            {"SequenceNumber":"2","ShardId":"s"},
            {"ErrorCode":"InternalFailure","ErrorMessage":"Internal service failure."}]}"#;
        let out = parse(body, 4).unwrap();
        assert_eq!(
            out.failed,
            [
                FailedRecord {
                    index: 1,
                    code: "ProvisionedThroughputExceededException".into(),
                    message: "Rate exceeded for shard".into(),
                },
                FailedRecord {
                    index: 3,
                    code: "InternalFailure".into(),
                    message: "Internal service failure.".into(),
                },
            ]
        );
        // Every record failed; a message is optional.
        let body = r#"{"FailedRecordCount":2,"Records":[{"ErrorCode":"A"},{"ErrorCode":"B","ErrorMessage":null}]}"#;
        assert_eq!(failed_indices(body, 2), [0, 1]);
        assert_eq!(parse(body, 2).unwrap().failed[1].message, "");
    }

    #[test]
    fn extra_fields_whitespace_key_order_and_escapes_are_read() {
        let body = " \n{ \"EncryptionType\" : \"KMS\",\r\n\t\"Records\" : [ { \"ShardId\" : \"s\" , \"SequenceNumber\" : \"1\" , \"Extra\" : { \"a\" : [ 1 , { } , null , true ] } } ,\n {\"ErrorMessage\":\"m\",\"ErrorCode\":\"X\",\"ShardId\":7} ] ,\n\"FailedRecordCount\" : 1 , \"Future\" : [[[]]] } \n\t";
        assert_eq!(failed_indices(body, 2), [1]);
        // Escaped keys and values mean what they spell.
        let body = r#"{"Failed\u0052ecordCount":1,"Rec\u006frds":[{"Sequence\u004eumber":"4\u00e9\"\\"},{"ErrorCode":"Provisioned\u0054hroughputExceededException","ErrorMessage":"Rate \"exceeded\"\n\u00e9 \ud83d\ude00"}]}"#;
        let out = parse(body, 2).unwrap();
        assert_eq!(out.failed[0].index, 1);
        assert_eq!(out.failed[0].code, "ProvisionedThroughputExceededException");
        assert_eq!(out.failed[0].message, "Rate \"exceeded\"\n\u{e9} \u{1f600}");
    }

    /// Unread fields are read in full, as far as serde_json's depth limit.
    #[test]
    fn nested_extra_fields_are_read_to_serde_jsons_depth_limit() {
        let nested = |depth: usize| {
            let value = format!("{}0{}", "[{\"a\":".repeat(depth), "}]".repeat(depth));
            format!(r#"{{"x":{value},"Records":[{{"y":{value},"SequenceNumber":"1"}}]}}"#)
        };
        assert_eq!(failed_indices(&nested(60), 1), NONE);
        // Deeper is refused, and costs no stack.
        assert!(parse(&nested(20_000), 1).is_err());
        // Skipped strings are checked as any other.
        assert!(parse(r#"{"x":"\ud800","Records":[{"SequenceNumber":"1"}]}"#, 1).is_err());
        assert!(parse(r#"{"x":"\q","Records":[{"SequenceNumber":"1"}]}"#, 1).is_err());
        assert!(parse(r#"{"x":1e400,"Records":[{"SequenceNumber":"1"}]}"#, 1).is_err());
        let not_utf8 = b"{\"Records\":[{\"SequenceNumber\":\"1\",\"ShardId\":\"\xccs\"}]}";
        assert!(parse_put_records_output(not_utf8, 1).is_err());
    }

    #[test]
    fn a_missing_or_null_count_is_zero_and_must_agree() {
        let body = r#"{"Records":[{"SequenceNumber":"1","ShardId":"s"}]}"#;
        assert_eq!(failed_indices(body, 1), NONE);
        let body = r#"{"FailedRecordCount":null,"Records":[{"SequenceNumber":"1"}]}"#;
        assert_eq!(failed_indices(body, 1), NONE);
        // With failed entries, a missing count disagrees with them.
        let body = r#"{"Records":[{"SequenceNumber":"1"},{"ErrorCode":"InternalFailure"}]}"#;
        assert!(parse(body, 2).is_err());
    }

    #[test]
    fn null_reads_as_absent_and_an_error_code_beats_a_sequence_number() {
        let body = r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1","ErrorCode":null,"ErrorMessage":null}]}"#;
        assert_eq!(failed_indices(body, 1), NONE);
        // Both: the record counts as failed (sending it again costs at most a duplicate).
        let body = r#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"1","ErrorCode":"InternalFailure"}]}"#;
        assert_eq!(failed_indices(body, 1), [0]);
    }

    /// Each of these was once read as "every record accepted".
    #[test]
    fn answers_that_do_not_account_for_every_record_are_malformed() {
        let short = all_accepted(490);
        let cases: &[(&str, &str, usize)] = &[
            ("an empty object", "{}", 3),
            ("null", "null", 3),
            ("an empty array", "[]", 3),
            ("a count alone", r#"{"FailedRecordCount":0}"#, 3),
            ("cut after the count", r#"{"FailedRecordCount":0"#, 3),
            (
                "cut after the count's comma",
                r#"{"FailedRecordCount":0,"#,
                3,
            ),
            (
                "cut inside Records",
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}"#,
                1,
            ),
            ("Records 10 short", &short, 500),
            (
                "a count of 0 beside 3 ErrorCodes",
                r#"{"FailedRecordCount":0,"Records":[{"ErrorCode":"A"},{"ErrorCode":"B"},{"ErrorCode":"C"}]}"#,
                3,
            ),
            (
                "an empty Records",
                r#"{"FailedRecordCount":0,"Records":[]}"#,
                3,
            ),
        ];
        for (what, body, sent) in cases {
            let err = parse(body, *sent).expect_err(what);
            assert!(err
                .to_string()
                .starts_with("malformed PutRecords response: "));
        }
    }

    #[test]
    fn anything_else_off_the_shape_is_malformed() {
        let cases: &[(&str, &str, usize)] = &[
            ("empty", "", 1),
            ("html", "<html><body>OK</body></html>", 1),
            ("a string", r#""FailedRecordCount":0"#, 1),
            (
                "Records null",
                r#"{"FailedRecordCount":0,"Records":null}"#,
                1,
            ),
            (
                "Records an object",
                r#"{"Records":{"0":{"SequenceNumber":"1"}}}"#,
                1,
            ),
            (
                "one result too many",
                r#"{"Records":[{"SequenceNumber":"1"},{"SequenceNumber":"2"}]}"#,
                1,
            ),
            ("an empty entry", r#"{"Records":[{}]}"#, 1),
            (
                "an entry that is a string",
                r#"{"Records":["SequenceNumber"]}"#,
                1,
            ),
            ("an entry that is null", r#"{"Records":[null]}"#, 1),
            (
                "a numeric SequenceNumber",
                r#"{"Records":[{"SequenceNumber":1}]}"#,
                1,
            ),
            (
                "a null SequenceNumber",
                r#"{"Records":[{"SequenceNumber":null}]}"#,
                1,
            ),
            (
                "an empty ErrorCode",
                r#"{"FailedRecordCount":1,"Records":[{"ErrorCode":""}]}"#,
                1,
            ),
            (
                "an empty ErrorCode beside a sequence number",
                r#"{"Records":[{"SequenceNumber":"1","ErrorCode":""}]}"#,
                1,
            ),
            (
                "a numeric ErrorCode",
                r#"{"FailedRecordCount":1,"Records":[{"ErrorCode":5}]}"#,
                1,
            ),
            (
                "a numeric ErrorMessage",
                r#"{"FailedRecordCount":1,"Records":[{"ErrorCode":"A","ErrorMessage":5}]}"#,
                1,
            ),
            (
                "a count too high",
                r#"{"FailedRecordCount":1,"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                "a count as a string",
                r#"{"FailedRecordCount":"0","Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                "a negative count",
                r#"{"FailedRecordCount":-1,"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                "a fractional count",
                r#"{"FailedRecordCount":0.0,"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                "Records twice",
                r#"{"Records":[{"ErrorCode":"A"}],"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                "the count twice",
                r#"{"FailedRecordCount":1,"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                "SequenceNumber twice",
                r#"{"Records":[{"SequenceNumber":"1","SequenceNumber":"2"}]}"#,
                1,
            ),
            (
                "ErrorCode twice",
                r#"{"FailedRecordCount":0,"Records":[{"ErrorCode":"A","ErrorCode":null,"SequenceNumber":"1"}]}"#,
                1,
            ),
            (
                "something after the object",
                r#"{"Records":[{"SequenceNumber":"1"}]} {}"#,
                1,
            ),
            (
                "a trailing comma",
                r#"{"Records":[{"SequenceNumber":"1"},]}"#,
                1,
            ),
            (
                "invalid UTF-8 in a sequence number",
                "{\"Records\":[{\"SequenceNumber\":\"\u{0}\"}]}",
                1,
            ),
            (
                "keys differ in case",
                r#"{"records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
        ];
        for (what, body, sent) in cases {
            assert!(parse(body, *sent).is_err(), "{what}: {body}");
        }
        assert!(
            parse_put_records_output(b"{\"Records\":[{\"SequenceNumber\":\"\xff\"}]}", 1).is_err()
        );
    }

    #[test]
    fn messages_are_one_short_line() {
        let body = format!(r#"{{"Records":"{}\n{}"}}"#, "x".repeat(10_000), "y");
        let err = parse(&body, 1).unwrap_err();
        assert!(err.1.chars().count() <= 301, "{}", err.1.len());
        assert!(!err.1.contains('\n'));
    }

    /// An answer like Firehose's accepting `n` records.
    fn firehose_all_accepted(n: usize) -> String {
        let entries: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"RecordId":"sTy6ZJ0Y1uVx3xk0P7fLr4bV0pZc9JQ2{i:04}"}}"#))
            .collect();
        format!(
            r#"{{"Encrypted":false,"FailedPutCount":0,"RequestResponses":[{}]}}"#,
            entries.join(",")
        )
    }

    #[test]
    fn a_firehose_answer_accepting_every_record_is_proven_by_the_scanner() {
        for n in [0, 1, 500] {
            let body = firehose_all_accepted(n);
            assert!(
                Compact::new(body.as_bytes(), &PUT_RECORD_BATCH)
                    .all_accepted(n)
                    .is_some(),
                "{body}"
            );
            assert_eq!(
                parse_put_record_batch_output(body.as_bytes(), n),
                Ok(PutRecordsOutput::default())
            );
        }
        let encrypted = r#"{"RequestResponses":[{"RecordId":"a"}],"Encrypted":true}"#;
        assert!(Compact::new(encrypted.as_bytes(), &PUT_RECORD_BATCH)
            .all_accepted(1)
            .is_some());
    }

    #[test]
    fn a_firehose_partial_failure_names_the_failed_records_in_order() {
        let body = r#"{"Encrypted":false,"FailedPutCount":2,"RequestResponses":[{"ErrorCode":"ServiceUnavailableException","ErrorMessage":"Slow down."},{"RecordId":"b"},{"ErrorCode":"InternalFailure"}]}"#;
        let out = parse_put_record_batch_output(body.as_bytes(), 3).unwrap();
        let got: Vec<(usize, &str, &str)> = out
            .failed
            .iter()
            .map(|f| (f.index, f.code.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "ServiceUnavailableException", "Slow down."),
                (2, "InternalFailure", "")
            ]
        );
    }

    #[test]
    fn a_firehose_answer_that_proves_nothing_is_malformed() {
        let malformed = [
            // Kinesis's names prove nothing for Firehose, and the other way round.
            (
                r#"{"FailedRecordCount":0,"Records":[{"SequenceNumber":"1"}]}"#,
                1,
            ),
            // A count that disagrees with the entries.
            (
                r#"{"FailedPutCount":0,"RequestResponses":[{"ErrorCode":"InternalFailure"}]}"#,
                1,
            ),
            (
                r#"{"FailedPutCount":1,"RequestResponses":[{"RecordId":"a"}]}"#,
                1,
            ),
            // Too few or too many entries; an entry with neither field; an empty ID.
            (
                r#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a"}]}"#,
                2,
            ),
            (
                r#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":"a"},{"RecordId":"b"}]}"#,
                1,
            ),
            (
                r#"{"FailedPutCount":0,"RequestResponses":[{"Encrypted":true}]}"#,
                1,
            ),
            (
                r#"{"FailedPutCount":0,"RequestResponses":[{"RecordId":""}]}"#,
                1,
            ),
            // A second list.
            (
                r#"{"RequestResponses":[{"RecordId":"a"}],"RequestResponses":[{"RecordId":"a"}]}"#,
                1,
            ),
        ];
        for (body, sent) in malformed {
            let e = parse_put_record_batch_output(body.as_bytes(), sent).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("malformed PutRecordBatch response: "),
                "{e}"
            );
        }
        let firehose = firehose_all_accepted(1);
        assert!(parse_put_records_output(firehose.as_bytes(), 1).is_err());
    }
}
