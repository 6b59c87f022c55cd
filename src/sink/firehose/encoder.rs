//! The PutRecordBatch request body: a batch's records as JSON, each line with its newline.
//!
//! Firehose has no partition keys and writes records into its destination (S3 objects, and
//! the rest) joined as they are, so every line keeps the newline that ended it in the FIFO:
//! one line per line at the other end. With `--aggregate`, a record joins many whole lines,
//! each newline-terminated, up to the aggregate limit; a line is never split across records.
//! Base64 is written from the lines and their newlines where they are, without joining them
//! first ([`Base64Pieces`]).

use crate::batch::{Batch, Packing, Prepared};
use crate::sink::json::{write_json_str, Base64Pieces};
use crate::sink::signed::{measure_body, BodyAt, BodyEncoder};
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

impl BodyEncoder for FirehoseEncoder {
    /// Appends the part of the PutRecordBatch JSON for `batch` that starts `at`: records, each
    /// of its lines followed by a newline, until `min` bytes are written or the body ends.
    fn write_part(&mut self, batch: &Batch, at: BodyAt, out: &mut Vec<u8>, min: usize) -> BodyAt {
        let start = out.len();
        let records = batch.record_count();
        let mut r = match at {
            BodyAt::Head => {
                out.extend_from_slice(b"{\"DeliveryStreamName\":");
                write_json_str(out, self.delivery_stream.as_bytes());
                out.extend_from_slice(b",\"Records\":[");
                0
            }
            BodyAt::Record(r) => r,
            BodyAt::Done => return BodyAt::Done,
        };
        while r < records && out.len() - start < min {
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
            r += 1;
        }
        if r < records {
            return BodyAt::Record(r);
        }
        out.extend_from_slice(b"]}");
        BodyAt::Done
    }

    /// The size Firehose counts for record `r` of `batch`: its lines and their newlines.
    fn record_bytes(&self, batch: &Batch, r: usize) -> usize {
        batch.record(r).map(|l| with_newline(l.len())).sum()
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

    fn prepare(&mut self, batch: &mut Batch, buffer: Vec<u8>) -> Prepared {
        if let Some(p) = &self.packing {
            // Lines the batcher did not pack (a replayed file's): packed as it would have.
            batch.pack(p);
        }
        measure_body(self, batch, buffer)
    }

    fn boxed_clone(&self) -> Box<dyn Encoder> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::signed::{encoded, PART_BYTES};
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
    fn bodies_of_many_parts_are_written_alike_twice_joined_or_not() {
        let mut b = Batch::new();
        // 500 lines of up to 2 KiB, every byte value: a body of about ten parts.
        for i in 0..500usize {
            let line: Vec<u8> = (0..(i * 37) % 2048).map(|j| (i + j * 11) as u8).collect();
            b.push(&line);
        }
        let want: Vec<u8> = b.lines().flat_map(|l| [l, b"\n"].concat()).collect();
        for mut e in [
            FirehoseEncoder::new("d"),
            FirehoseEncoder::joining("d", 64 * 1024),
        ] {
            let mut batch = b.clone();
            let body = encoded(&mut e, &mut batch);
            assert!(body.len() > 8 * PART_BYTES, "{} bytes", body.len());
            let records = records_of(&body);
            assert_eq!(records.len(), batch.record_count());
            assert_eq!(records.concat(), want);
        }
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
        let body = encoded(&mut e, &mut b);
        let records = records_of(&body);
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
        let mut other = e.clone();
        let resend = encoded(&mut other, &mut b.subset(&[1]));
        assert_eq!(records_of(&resend), [records[1].clone()]);
    }

    #[test]
    fn a_line_longer_than_the_join_limit_is_a_record_of_its_own() {
        let mut e = FirehoseEncoder::joining("d", 1024);
        let mut b = Batch::new();
        let long = vec![b'L'; 3000];
        b.push(b"a");
        b.push(&long);
        b.push(b"b");
        let body = encoded(&mut e, &mut b);
        let records = records_of(&body);
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
