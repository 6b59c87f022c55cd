//! The PutRecordBatch request body: a batch's records as JSON, each line with its newline.
//!
//! Firehose has no partition keys and writes records into its destination (S3 objects, and
//! the rest) joined as they are, so every line keeps the newline that ended it in the FIFO:
//! one line per line at the other end. With `--aggregate`, a record joins many whole lines,
//! each newline-terminated, up to the aggregate limit; a line is never split across records.
//! Base64 is written from the lines and their newlines where they are, without joining them
//! first ([`Base64Pieces`]).

use crate::aws::sha256_hex;
use crate::batch::{Batch, Packing, Prepared, Unpack};
use crate::sink::json::{decode_data, write_json_str, Base64Pieces};
use crate::sink::signed::BodyEncoder;
use crate::sink::Encoder;

/// Builds PutRecordBatch bodies for one delivery stream: a record per line, or per group of
/// whole lines.
#[derive(Clone, Debug)]
pub struct FirehoseEncoder {
    delivery_stream: String,
    /// How lines are joined into records, with `--aggregate`.
    packing: Option<Packing>,
    base64: Base64Pieces,
}

/// The bytes a line of `n` bytes takes in a record: itself and its newline.
fn with_newline(n: usize) -> usize {
    n + 1
}

impl FirehoseEncoder {
    /// An encoder for `delivery_stream`, one line a record.
    pub fn new(delivery_stream: &str) -> Self {
        FirehoseEncoder {
            delivery_stream: delivery_stream.to_string(),
            packing: None,
            base64: Base64Pieces::default(),
        }
    }

    /// An encoder whose records join whole lines, each with its newline, up to `max_bytes`
    /// unless one line alone needs more.
    pub fn joining(delivery_stream: &str, max_bytes: usize) -> Self {
        let mut e = FirehoseEncoder::new(delivery_stream);
        e.packing = Some(Packing {
            record_overhead: 0,
            line_cost: with_newline,
            max_line_framing: 1,
            max_record_bytes: max_bytes,
        });
        e
    }
}

/// Finds the lines of a batch in the PutRecordBatch body made from it: each record's data is
/// its lines, each followed by a newline, which is taken out again.
fn unpack_lines(body: &[u8], batch: &Batch, lines: &mut Vec<u8>) -> Result<(), String> {
    let mut r = 0;
    decode_data(body, lines, |out, start| {
        if r >= batch.record_count() {
            return Err(format!("more than {r} records in the body"));
        }
        let (mut from, mut to) = (start, start);
        for len in batch.record_line_lens(r) {
            if out.get(from + len) != Some(&b'\n') {
                return Err(format!("record {r} of the body is not the batch's lines"));
            }
            out.copy_within(from..from + len, to);
            from += len + 1;
            to += len;
        }
        if from != out.len() {
            return Err(format!("record {r} of the body is longer than its lines"));
        }
        out.truncate(to);
        r += 1;
        Ok(())
    })?;
    if r != batch.record_count() {
        return Err(format!(
            "{r} records in the body, {} in the batch",
            batch.record_count()
        ));
    }
    Ok(())
}

impl BodyEncoder for FirehoseEncoder {
    /// Writes the PutRecordBatch JSON for `batch` into `out` (cleared first): each record's
    /// lines, each followed by a newline.
    fn body(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        out.clear();
        let records = batch.record_count();
        out.reserve(
            (batch.size() + batch.len()) * 4 / 3 + records * 16 + self.delivery_stream.len() + 48,
        );
        out.extend_from_slice(b"{\"DeliveryStreamName\":");
        write_json_str(out, self.delivery_stream.as_bytes());
        out.extend_from_slice(b",\"Records\":[");
        for r in 0..records {
            if r > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"Data\":\"");
            for line in batch.record(r) {
                self.base64.push(out, line);
                self.base64.push(out, b"\n");
            }
            self.base64.finish(out);
            out.extend_from_slice(b"\"}");
        }
        out.extend_from_slice(b"]}");
    }

    /// The size Firehose counts for record `r` of `batch`: its lines and their newlines.
    fn record_bytes(&self, batch: &Batch, r: usize) -> usize {
        batch.record_line_lens(r).map(with_newline).sum()
    }

    fn destination(&self) -> String {
        format!("delivery stream {}", self.delivery_stream)
    }
}

impl Encoder for FirehoseEncoder {
    fn line_overhead(&self) -> usize {
        // The newline: a record of one line is one byte longer than the line.
        1
    }

    fn packing(&self) -> Option<Packing> {
        self.packing
    }

    fn unpack(&self) -> Option<Unpack> {
        Some(Unpack(unpack_lines))
    }

    fn encode(&mut self, batch: &mut Batch, mut body: Vec<u8>) -> Prepared {
        if let Some(p) = &self.packing {
            // Lines the batcher did not pack (a replayed file's): packed as it would have.
            batch.pack(p);
        }
        self.body(batch, &mut body);
        let sha256_hex = sha256_hex(&body);
        Prepared { body, sha256_hex }
    }

    fn boxed_clone(&self) -> Box<dyn Encoder> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::Value;

    /// The records of a body, decoded.
    fn records_of(body: &[u8]) -> Vec<Vec<u8>> {
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            v.as_object().unwrap().len(),
            2,
            "DeliveryStreamName and Records"
        );
        v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r.as_object().unwrap().len(), 1, "Data alone: {r}");
                base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn body_bytes_are_exact_and_every_line_keeps_its_newline() {
        let mut out = b"old".to_vec();
        let mut b = Batch::new();
        b.push(b"hi");
        b.push(b"");
        b.push(b"\0\xff");
        let mut e = FirehoseEncoder::new("my.delivery-1");
        e.body(&b, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"DeliveryStreamName":"my.delivery-1","Records":[{"Data":"aGkK"},{"Data":"Cg=="},{"Data":"AP8K"}]}"#
        );
        for r in 0..3 {
            assert_eq!(e.record_bytes(&b, r), b.line(r).len() + 1);
        }
        assert_eq!(e.line_overhead(), 1);
        assert_eq!(e.destination(), "delivery stream my.delivery-1");
    }

    #[test]
    fn lines_let_go_after_encoding_are_found_again_in_the_body() {
        for mut e in [
            FirehoseEncoder::new("d"),
            FirehoseEncoder::joining("d", 1024),
        ] {
            let mut b = Batch::new();
            // Every length from 0 to 399, of every byte value, newlines inside lines too.
            for len in 0..400usize {
                let line: Vec<u8> = (0..len).map(|i| (i * 13 + len) as u8).collect();
                b.push(&line);
            }
            let want: Vec<Vec<u8>> = b.lines().map(<[u8]>::to_vec).collect();
            let p = e.encode(&mut b, Vec::new());
            b.set_prepared(p);
            let records = b.record_count();
            b.drop_lines(e.unpack().expect("firehose bodies can be unpacked"));
            assert!(b.lines_in_body());
            assert_eq!(b.record_count(), records);
            b.restore_lines();
            let got: Vec<Vec<u8>> = b.lines().map(<[u8]>::to_vec).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_body_whose_records_are_not_the_batchs_lines_is_refused() {
        let mut e = FirehoseEncoder::new("d");
        let mut b = Batch::new();
        b.push(b"one");
        b.push(b"two");
        let p = e.encode(&mut b, Vec::new());
        let unpack = e.unpack().unwrap().0;
        let mut out = Vec::new();
        assert!(unpack(&p.body, &b, &mut out).is_ok());
        assert_eq!(out, b"onetwo");
        let mut shorter = Batch::new();
        shorter.push(b"one");
        shorter.push(b"tw");
        let mut fewer = Batch::new();
        fewer.push(b"one");
        let mut more = b.clone();
        more.push(b"three");
        for other in [shorter, fewer, more] {
            out.clear();
            assert!(unpack(&p.body, &other, &mut out).is_err(), "{other:?}");
        }
        // A record's data without its newline.
        let no_newline = br#"{"DeliveryStreamName":"d","Records":[{"Data":"b25l"}]}"#;
        let mut one = Batch::new();
        one.push(b"one");
        out.clear();
        assert!(unpack(no_newline, &one, &mut out).is_err());
    }

    #[test]
    fn joined_records_hold_whole_lines_up_to_the_limit() {
        let mut e = FirehoseEncoder::joining("d", 1024);
        let mut b = Batch::new();
        let lines: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("line {i:03} {}", "x".repeat(i % 7)).into_bytes())
            .collect();
        for l in &lines {
            b.push(l);
        }
        let p = e.encode(&mut b, Vec::new());
        let records = records_of(&p.body);
        assert_eq!(records.len(), b.record_count());
        assert!(records.len() > 1 && records.len() < 10, "{}", records.len());
        let mut joined = Vec::new();
        for (r, data) in records.iter().enumerate() {
            assert!(data.len() <= 1024, "record {r}: {}", data.len());
            assert_eq!(e.record_bytes(&b, r), data.len());
            assert_eq!(data.last(), Some(&b'\n'));
            joined.extend_from_slice(data);
        }
        let expected: Vec<u8> = lines
            .iter()
            .flat_map(|l| [&l[..], b"\n"].concat())
            .collect();
        assert_eq!(joined, expected);
        // A resend of some records is byte for byte the same records.
        let mut other = e.boxed_clone();
        let resend = other.encode(&mut b.subset(&[1]), Vec::new());
        assert_eq!(records_of(&resend.body), [records[1].clone()]);
    }

    #[test]
    fn a_line_longer_than_the_join_limit_is_a_record_of_its_own() {
        let mut e = FirehoseEncoder::joining("d", 1024);
        let mut b = Batch::new();
        let long = vec![b'L'; 3000];
        b.push(b"a");
        b.push(&long);
        b.push(b"b");
        let p = e.encode(&mut b, Vec::new());
        let records = records_of(&p.body);
        assert_eq!(
            records,
            [
                b"a\n".to_vec(),
                [&long[..], b"\n"].concat(),
                b"b\n".to_vec()
            ]
        );
    }
}
