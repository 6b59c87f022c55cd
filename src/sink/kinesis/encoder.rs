//! The PutRecords request body: a batch's records with their partition keys, as JSON.
//!
//! [`KinesisEncoder`] is what the Kinesis sink hands to the poll loop: it builds each sealed
//! batch's body (and its SHA-256, which SigV4 signs) on the reading thread while the sender is
//! busy with the previous request. It also tells the batcher how Kinesis counts a record: a
//! line and its partition key, or, with `--aggregate`, a KPL aggregated record of many lines
//! ([`super::aggregate`]) and its key, whose [`Packing`] the batcher fills records by. The
//! sender keeps a copy for the bodies it makes itself (resends of some records).

use std::ops::Range;

use super::{aggregate, multi_md5};
use crate::aws::sha256_hex;
use crate::batch::{Batch, Packing, Prepared, Unpack};
use crate::options::{PartitionKey, RANDOM_KEY_LEN};
use crate::random::Rng;
use crate::sink::json::{decode_data, write_base64, write_json_str};
use crate::sink::signed::BodyEncoder;
use crate::sink::Encoder;

/// Where partition keys come from.
#[derive(Clone, Debug)]
pub enum Keys {
    /// The same key for every record.
    Fixed(Vec<u8>),
    /// A random alphanumeric key of [`RANDOM_KEY_LEN`] characters per record.
    Random(Rng),
}

impl Keys {
    /// The keys a configured policy gives; random keys come from `rng`.
    pub fn from_config(key: &PartitionKey, rng: Rng) -> Keys {
        match key {
            PartitionKey::Fixed(k) => Keys::Fixed(k.as_bytes().to_vec()),
            PartitionKey::Random => Keys::Random(rng),
        }
    }

    /// The length of every key these give.
    pub fn key_len(&self) -> usize {
        match self {
            Keys::Fixed(k) => k.len(),
            Keys::Random(_) => RANDOM_KEY_LEN,
        }
    }

    /// Appends the next record's key to `out`.
    fn fill(&mut self, out: &mut Vec<u8>) {
        match self {
            Keys::Fixed(k) => out.extend_from_slice(k),
            Keys::Random(rng) => rng.push_alphanumeric(out, RANDOM_KEY_LEN),
        }
    }
}

/// Builds PutRecords bodies for one stream: a record per line, or per aggregate of lines.
#[derive(Clone, Debug)]
pub struct KinesisEncoder {
    stream: String,
    keys: Keys,
    key: Vec<u8>,
    /// How lines are packed into aggregated records, with `--aggregate`.
    packing: Option<Packing>,
    /// The aggregated record being written, reused.
    aggregate: Vec<u8>,
}

impl KinesisEncoder {
    /// An encoder for `stream` whose records carry `keys`, one line each.
    pub fn new(stream: &str, keys: Keys) -> Self {
        KinesisEncoder {
            stream: stream.to_string(),
            keys,
            key: Vec::with_capacity(RANDOM_KEY_LEN),
            packing: None,
            aggregate: Vec::new(),
        }
    }

    /// An encoder whose records are KPL aggregates of lines, each at most `max_bytes` with
    /// its partition key unless one line alone needs more; one key per aggregate.
    pub fn aggregating(stream: &str, keys: Keys, max_bytes: usize) -> Self {
        let key_len = keys.key_len();
        let mut e = KinesisEncoder::new(stream, keys);
        e.packing = Some(Packing {
            record_overhead: aggregate::aggregate_overhead(key_len) + key_len,
            line_cost: aggregate::line_cost,
            max_line_framing: aggregate::MAX_LINE_FRAMING,
            max_record_bytes: max_bytes,
        });
        e
    }

    /// The size Kinesis counts for record `r` of `batch`: its data and partition key.
    fn record_size(&self, batch: &Batch, r: usize) -> usize {
        match &self.packing {
            Some(p) => p.record_bytes(batch.record_line_lens(r)),
            None => batch.line_len(r) + self.key_len(),
        }
    }

    /// The length of every record's partition key.
    pub fn key_len(&self) -> usize {
        self.keys.key_len()
    }

    /// Attaches a random key to every record of `batch` if it has none yet, so that the body
    /// and any resend of some of its records use the same keys. A fixed key needs no
    /// attaching.
    fn attach_keys(&mut self, batch: &mut Batch) {
        if let Keys::Random(rng) = &mut self.keys {
            if batch.attached(0).is_none() && !batch.is_empty() {
                let records = batch.record_count();
                let mut keys = Vec::with_capacity(records * RANDOM_KEY_LEN);
                for _ in 0..records {
                    rng.push_alphanumeric(&mut keys, RANDOM_KEY_LEN);
                }
                batch.attach(RANDOM_KEY_LEN, keys);
            }
        }
    }

    /// Writes the PutRecords JSON for `batch` into `out` (cleared first): each record with
    /// the key attached to it, or a fresh one. Aggregating, each record of the batch is an
    /// aggregate of its lines (a batch that does not pack its lines has one line a record).
    fn write_body(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        out.clear();
        let records = batch.record_count();
        let framing = match &self.packing {
            Some(p) => p.record_overhead + batch.len() * aggregate::MAX_LINE_FRAMING,
            None => 0,
        };
        out.reserve(
            (batch.size() + framing) * 4 / 3
                + records * (48 + self.key_len())
                + self.stream.len()
                + 32,
        );
        out.extend_from_slice(b"{\"StreamName\":");
        write_json_str(out, self.stream.as_bytes());
        out.extend_from_slice(b",\"Records\":[");
        if self.packing.is_some() {
            self.aggregates(batch, out);
        } else {
            for r in 0..records {
                if r > 0 {
                    out.push(b',');
                }
                let key = match batch.attached(r) {
                    Some(key) => key,
                    None => {
                        self.key.clear();
                        self.keys.fill(&mut self.key);
                        &self.key
                    }
                };
                write_record(out, batch.line(r), key);
            }
        }
        out.extend_from_slice(b"]}");
    }
}

impl KinesisEncoder {
    /// Writes the records of `batch` as aggregates, a group of records at a time: their
    /// aggregates side by side in one buffer, their digests made together.
    fn aggregates(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        let records = batch.record_count();
        let mut r = 0;
        while r < records {
            self.aggregate.clear();
            self.key.clear();
            let mut spans: [Range<usize>; multi_md5::LANES] = Default::default();
            let mut keys: [Range<usize>; multi_md5::LANES] = Default::default();
            let mut n = 0;
            while r < records
                && n < multi_md5::LANES
                && (n == 0 || self.aggregate.len() < GROUP_BYTES)
            {
                let at = self.key.len();
                match batch.attached(r) {
                    Some(key) => self.key.extend_from_slice(key),
                    None => self.keys.fill(&mut self.key),
                }
                keys[n] = at..self.key.len();
                let key = &self.key[at..];
                spans[n] = aggregate::append(&mut self.aggregate, key, batch.record(r));
                n += 1;
                r += 1;
            }
            aggregate::seal(&mut self.aggregate, &spans[..n]);
            for (i, (span, key)) in spans[..n].iter().zip(&keys[..n]).enumerate() {
                if r - n + i > 0 {
                    out.push(b',');
                }
                write_record(out, &self.aggregate[span.clone()], &self.key[key.clone()]);
            }
        }
        if self.aggregate.capacity() > 4 * GROUP_BYTES {
            // A group of very large records: their buffer is not kept.
            self.aggregate = Vec::new();
        }
    }
}

/// About how many bytes of aggregates are written before their digests are made together:
/// eight records of the default 50 KiB.
const GROUP_BYTES: usize = 400 * 1024;

/// Finds the lines of a batch, one a record, in the PutRecords body made from it: each
/// record's data is its line.
fn unpack_lines(body: &[u8], batch: &Batch, lines: &mut Vec<u8>) -> Result<(), String> {
    let mut r = 0;
    decode_data(body, lines, |out, start| {
        if batch.is_packed() || r >= batch.len() || out.len() - start != batch.line_len(r) {
            return Err(format!(
                "record {r} of the body is not line {r} of the batch"
            ));
        }
        r += 1;
        Ok(())
    })?;
    if r != batch.len() {
        return Err(format!("{r} records in the body, {} lines", batch.len()));
    }
    Ok(())
}

/// Appends one record's JSON object.
fn write_record(out: &mut Vec<u8>, data: &[u8], key: &[u8]) {
    out.extend_from_slice(b"{\"Data\":\"");
    write_base64(out, data);
    out.extend_from_slice(b"\",\"PartitionKey\":");
    write_json_str(out, key);
    out.push(b'}');
}

impl BodyEncoder for KinesisEncoder {
    fn body(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        self.write_body(batch, out);
    }

    fn record_bytes(&self, batch: &Batch, r: usize) -> usize {
        self.record_size(batch, r)
    }

    fn destination(&self) -> String {
        format!("stream {}", self.stream)
    }
}

impl Encoder for KinesisEncoder {
    fn line_overhead(&self) -> usize {
        match &self.packing {
            Some(_) => aggregate::lone_line_overhead(self.key_len()),
            None => self.key_len(),
        }
    }

    fn packing(&self) -> Option<Packing> {
        self.packing
    }

    fn unpack(&self) -> Option<Unpack> {
        // Aggregates are not taken apart again: their batches keep their lines.
        match self.packing {
            Some(_) => None,
            None => Some(Unpack(unpack_lines)),
        }
    }

    fn encode(&mut self, batch: &mut Batch, mut body: Vec<u8>) -> Prepared {
        if let Some(p) = &self.packing {
            // Lines the batcher did not pack (a replayed file's): packed as it would have.
            batch.pack(p);
        }
        self.attach_keys(batch);
        self.write_body(batch, &mut body);
        let sha256_hex = sha256_hex(&body);
        Prepared { body, sha256_hex }
    }

    fn boxed_clone(&self) -> Box<dyn Encoder> {
        let mut copy = self.clone();
        if let Keys::Random(_) = copy.keys {
            // Another thread's copy draws its own keys.
            copy.keys = Keys::Random(Rng::from_entropy());
        }
        Box::new(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::Value;

    fn batch(lines: &[&str]) -> Batch {
        let mut b = Batch::new();
        for d in lines {
            b.push(d.as_bytes());
        }
        b
    }

    fn fixed(stream: &str, key: &str) -> KinesisEncoder {
        KinesisEncoder::new(stream, Keys::Fixed(key.as_bytes().to_vec()))
    }

    #[test]
    fn body_bytes_are_exact() {
        let mut out = Vec::new();
        fixed("s", "k").body(&batch(&["hi"]), &mut out);
        assert_eq!(
            out,
            br#"{"StreamName":"s","Records":[{"Data":"aGk=","PartitionKey":"k"}]}"#
        );
        let mut b = Batch::new();
        b.push(b"\0\xff\n");
        b.push(b"");
        fixed("my.stream-1", "key \"q\"").body(&b, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"StreamName":"my.stream-1","Records":[{"Data":"AP8K","PartitionKey":"key \"q\""},{"Data":"","PartitionKey":"key \"q\""}]}"#
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Records"][0]["PartitionKey"], "key \"q\"");
    }

    /// Lines of every length from 0 to `n` - 1, of every byte value (newlines too).
    fn odd_lines(n: usize) -> Batch {
        let mut b = Batch::new();
        for len in 0..n {
            let line: Vec<u8> = (0..len).map(|i| (i * 31 + len * 7) as u8).collect();
            b.push(&line);
        }
        b
    }

    fn all_lines(b: &Batch) -> Vec<Vec<u8>> {
        b.lines().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn lines_let_go_after_encoding_are_found_again_in_the_body() {
        // A fixed key that holds what every record starts with, escaped in the body.
        for mut e in [
            fixed("s", "{\"Data\":\"AAAA\"}"),
            KinesisEncoder::new("s", Keys::Random(Rng::with_seed(5))),
        ] {
            let mut b = odd_lines(300);
            let want = all_lines(&b);
            let p = e.encode(&mut b, Vec::new());
            b.set_prepared(p.clone());
            let unpack = e.unpack().expect("records of one line can be unpacked");
            let buffer = b.drop_lines(unpack);
            assert_eq!(buffer.len(), want.iter().map(Vec::len).sum::<usize>());
            assert!(b.lines_in_body());
            assert_eq!((b.len(), b.size()), (want.len(), buffer.len()));
            assert_eq!(b.line_len(299), 299);
            assert_eq!(all_lines(&b.unpacked()), want, "a copy with the lines");
            assert!(b.lines_in_body(), "unpacked() leaves the batch as it was");
            b.restore_lines();
            assert!(!b.lines_in_body());
            assert_eq!(all_lines(&b), want);
            assert_eq!(b.prepared().map(|p| &p.body), Some(&p.body));
            // A resend of some of its records carries their keys as the first body did.
            let resend = e.encode(&mut b.subset(&[7, 250]), Vec::new());
            let records = |body: &[u8]| -> Vec<Value> {
                let v: Value = serde_json::from_slice(body).unwrap();
                v["Records"].as_array().unwrap().clone()
            };
            let (first, again) = (records(&p.body), records(&resend.body));
            assert_eq!(again, [first[7].clone(), first[250].clone()]);
        }
    }

    #[test]
    fn aggregated_batches_keep_their_lines() {
        let mut e = KinesisEncoder::aggregating("s", Keys::Fixed(b"k".to_vec()), 50 * 1024);
        assert!(e.unpack().is_none());
        let mut b = odd_lines(10);
        let p = e.encode(&mut b, Vec::new());
        b.set_prepared(p);
        assert_eq!(all_lines(&b), all_lines(&odd_lines(10)));
    }

    #[test]
    fn a_body_that_is_not_the_batchs_is_refused() {
        let mut e = fixed("s", "k");
        let mut b = batch(&["one", "two"]);
        let p = e.encode(&mut b, Vec::new());
        let unpack = e.unpack().unwrap().0;
        let mut out = Vec::new();
        assert!(unpack(&p.body, &b, &mut out).is_ok());
        assert_eq!(out, b"onetwo");
        for (body, other) in [
            (&p.body[..], batch(&["one"])),
            (&p.body[..], batch(&["one", "two", "three"])),
            (&p.body[..], batch(&["one", "tw"])),
            (&br#"{"Records":[{"Data":"b25l"#[..], batch(&["one"])),
            (
                &br#"{"Records":[{"Data":"b2!l","PartitionKey":"k"}]}"#[..],
                batch(&["one"]),
            ),
        ] {
            out.clear();
            assert!(unpack(body, &other, &mut out).is_err(), "{other:?}");
        }
    }

    #[test]
    fn prepared_bodies_carry_their_sha256() {
        let p = fixed("s", "k").encode(&mut batch(&["hi"]), b"old".to_vec());
        assert_eq!(
            p.body,
            br#"{"StreamName":"s","Records":[{"Data":"aGk=","PartitionKey":"k"}]}"#
        );
        assert_eq!(p.sha256_hex, sha256_hex(&p.body));
    }

    #[test]
    fn random_keys_are_twelve_alphanumerics_per_record_and_kept_for_resends() {
        let mut e = KinesisEncoder::new("s", Keys::Random(Rng::with_seed(3)));
        assert_eq!(e.line_overhead(), RANDOM_KEY_LEN);
        let mut b = batch(&["x", "y", "z"]);
        let p = e.encode(&mut b, Vec::new());
        let keys = |body: &[u8]| -> Vec<String> {
            let v: Value = serde_json::from_slice(body).unwrap();
            let records = v["Records"].as_array().unwrap().clone();
            records
                .iter()
                .map(|r| r["PartitionKey"].as_str().unwrap().to_string())
                .collect()
        };
        let first = keys(&p.body);
        assert_eq!(first.len(), 3);
        for k in &first {
            assert_eq!(k.len(), RANDOM_KEY_LEN);
            assert!(k.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        assert_ne!(first[0], first[1]);

        // A resend of some lines, encoded by another copy, keeps their keys.
        let mut other = e.boxed_clone();
        let resend = other.encode(&mut b.subset(&[0, 2]), Vec::new());
        assert_eq!(keys(&resend.body), [first[0].clone(), first[2].clone()]);
    }

    /// The records of a body: each one's decoded data and partition key.
    fn records_of(body: &[u8]) -> Vec<(Vec<u8>, String)> {
        let v: Value = serde_json::from_slice(body).unwrap();
        v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .unwrap();
                (data, r["PartitionKey"].as_str().unwrap().to_string())
            })
            .collect()
    }

    #[test]
    fn aggregating_makes_one_kpl_record_per_record_of_the_batch() {
        let mut e = KinesisEncoder::aggregating("s", Keys::Fixed(b"pk".to_vec()), 1024);
        let mut b = Batch::new();
        b.start_record();
        b.push(b"ab");
        b.push(b"");
        b.start_record();
        b.push(b"c");
        let p = e.encode(&mut b, Vec::new());
        let records = records_of(&p.body);
        assert_eq!(records.len(), 2);
        let mut expected = Vec::new();
        aggregate::write(&mut expected, b"pk", [&b"ab"[..], &b""[..]].into_iter());
        assert_eq!(records[0], (expected, "pk".to_string()));
        assert_eq!(&records[1].0[..4], aggregate::MAGIC);
        for (r, (data, key)) in records.iter().enumerate() {
            assert_eq!(e.record_bytes(&b, r), data.len() + key.len());
        }
    }

    #[test]
    fn aggregates_draw_one_random_key_each_kept_for_resends() {
        let mut e = KinesisEncoder::aggregating("s", Keys::Random(Rng::with_seed(5)), 1024);
        let mut b = Batch::new();
        for i in 0..30 {
            if i % 10 == 0 {
                b.start_record();
            }
            b.push(format!("line {i}").as_bytes());
        }
        let p = e.encode(&mut b, Vec::new());
        let records = records_of(&p.body);
        assert_eq!(records.len(), 3);
        let keys: Vec<&String> = records.iter().map(|(_, k)| k).collect();
        assert!(keys[0] != keys[1] && keys[1] != keys[2]);
        // Every user record's key is its aggregate's: the table holds that one key.
        for (data, key) in &records {
            assert_eq!(data[4], 0x0A);
            assert_eq!(usize::from(data[5]), key.len());
            assert_eq!(&data[6..6 + key.len()], key.as_bytes());
        }
        let mut other = e.boxed_clone();
        let resend = other.encode(&mut b.subset(&[1]), Vec::new());
        assert_eq!(records_of(&resend.body), [records[1].clone()]);
    }

    #[test]
    fn lines_not_packed_by_the_batcher_are_packed_when_encoded() {
        let mut e = KinesisEncoder::aggregating("s", Keys::Fixed(b"k".to_vec()), 1024);
        let packing = e.packing().unwrap();
        let mut b = Batch::new();
        for i in 0..100 {
            b.push(format!("a replayed line {i:03}").as_bytes());
        }
        assert_eq!(b.record_count(), 100);
        let p = e.encode(&mut b, Vec::new());
        let records = records_of(&p.body);
        assert_eq!(b.record_count(), records.len());
        assert_eq!(
            records.len(),
            3,
            "1024-byte aggregates of lines taking 25 bytes"
        );
        for (r, (data, key)) in records.iter().enumerate() {
            assert!(data.len() + key.len() <= 1024);
            assert_eq!(
                packing.record_bytes(b.record_line_lens(r)),
                data.len() + key.len()
            );
        }
    }

    #[test]
    fn every_digest_is_right_across_groups_of_records_hashed_together() {
        use md5::{Digest, Md5};
        let mut e = KinesisEncoder::aggregating("s", Keys::Random(Rng::with_seed(9)), 2048);
        let mut b = Batch::new();
        // 21 records of 1 to 40 lines: more than two groups, of records of unequal size.
        for r in 0..21 {
            b.start_record();
            for i in 0..1 + (r * 7) % 40 {
                b.push(format!("record {r} line {i}").as_bytes());
            }
        }
        let p = e.encode(&mut b, Vec::new());
        let records = records_of(&p.body);
        assert_eq!(records.len(), 21);
        for (r, (data, key)) in records.iter().enumerate() {
            let (message, digest) = data.split_at(data.len() - 16);
            assert_eq!(Md5::digest(&message[4..])[..], *digest, "record {r}");
            let mut alone = Vec::new();
            aggregate::write(&mut alone, key.as_bytes(), b.record(r));
            assert_eq!(data, &alone, "record {r}");
        }
    }
}
