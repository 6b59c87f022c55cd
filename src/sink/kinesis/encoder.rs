//! The PutRecords request body: a batch's records with their partition keys, as JSON.
//!
//! [`KinesisEncoder`] is what the Kinesis sink hands to the poll loop: it builds each sealed
//! batch's body (and its SHA-256, which SigV4 signs) on the reading thread while the sender is
//! busy with the previous request. It also tells the batcher how Kinesis counts a record: a
//! line and its partition key, or, with `--aggregate`, a KPL aggregated record of many lines
//! ([`super::aggregate`]) and its key, whose [`Packing`] the batcher fills records by. The
//! sender keeps a copy for the bodies it makes itself (resends of some records).

use std::ops::Range;

use super::aggregate::{self, DIGEST_LEN};
use super::multi_md5;
use crate::batch::{Batch, Packing, Prepared};
use crate::options::{PartitionKey, RANDOM_KEY_LEN};
use crate::random::Rng;
use crate::sink::json::{write_base64, write_json_str};
use crate::sink::signed::{measure_body, BodyAt, BodyEncoder};
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
    /// The digests of the aggregates written since the body's head, in record order.
    digests: Vec<[u8; DIGEST_LEN]>,
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
            digests: Vec::new(),
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
            Some(p) => p.record_bytes(batch.record(r)),
            None => batch.line(r).len() + self.key_len(),
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

    /// Appends the part of the PutRecords JSON for `batch` that starts `at`, at least `min`
    /// bytes unless the body ends first: each record with the key attached to it, or the
    /// fixed key. Aggregating, each record of the batch is an aggregate of its lines (a batch
    /// that does not pack its lines has one line a record), written a group at a time.
    fn write_json(&mut self, batch: &Batch, at: BodyAt, out: &mut Vec<u8>, min: usize) -> BodyAt {
        let start = out.len();
        let records = batch.record_count();
        let mut r = match at {
            BodyAt::Head => {
                self.digests.clear();
                out.extend_from_slice(b"{\"StreamName\":");
                write_json_str(out, self.stream.as_bytes());
                out.extend_from_slice(b",\"Records\":[");
                0
            }
            BodyAt::Record(r) => r,
            BodyAt::Done => return BodyAt::Done,
        };
        while r < records && out.len() - start < min {
            if self.packing.is_some() {
                r = self.aggregate_group(batch, r, out);
                continue;
            }
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
            r += 1;
        }
        if r < records {
            return BodyAt::Record(r);
        }
        out.extend_from_slice(b"]}");
        BodyAt::Done
    }
}

impl KinesisEncoder {
    /// Writes the records of `batch` from `r` on as aggregates, one group of records: their
    /// aggregates side by side in one buffer, their digests made together. Returns the next
    /// record.
    fn aggregate_group(&mut self, batch: &Batch, mut r: usize, out: &mut Vec<u8>) -> usize {
        let records = batch.record_count();
        self.aggregate.clear();
        self.key.clear();
        let mut spans: [Range<usize>; multi_md5::LANES] = Default::default();
        let mut keys: [Range<usize>; multi_md5::LANES] = Default::default();
        let mut n = 0;
        while r < records && n < multi_md5::LANES && (n == 0 || self.aggregate.len() < GROUP_BYTES)
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
        // The digests the first writing computed, if this is the second.
        let known = batch
            .prepared()
            .map(|p| &p.digests[..])
            .filter(|d| d.len() == records);
        match known {
            Some(digests) => {
                for (span, digest) in spans[..n].iter().zip(&digests[r - n..r]) {
                    self.aggregate[span.end - DIGEST_LEN..span.end].copy_from_slice(digest);
                }
            }
            None => {
                aggregate::seal(&mut self.aggregate, &spans[..n]);
                for span in &spans[..n] {
                    let mut digest = [0; DIGEST_LEN];
                    digest.copy_from_slice(&self.aggregate[span.end - DIGEST_LEN..span.end]);
                    self.digests.push(digest);
                }
            }
        }
        for (i, (span, key)) in spans[..n].iter().zip(&keys[..n]).enumerate() {
            if r - n + i > 0 {
                out.push(b',');
            }
            write_record(out, &self.aggregate[span.clone()], &self.key[key.clone()]);
        }
        if self.aggregate.capacity() > 4 * GROUP_BYTES {
            // A group of very large records: their buffer is not kept.
            self.aggregate = Vec::new();
        }
        r
    }
}

/// About how many bytes of aggregates are written before their digests are made together:
/// eight records of the default 50 KiB.
const GROUP_BYTES: usize = 400 * 1024;

/// Appends one record's JSON object.
fn write_record(out: &mut Vec<u8>, data: &[u8], key: &[u8]) {
    out.extend_from_slice(b"{\"Data\":\"");
    write_base64(out, data);
    out.extend_from_slice(b"\",\"PartitionKey\":");
    write_json_str(out, key);
    out.push(b'}');
}

impl BodyEncoder for KinesisEncoder {
    fn write_part(&mut self, batch: &Batch, at: BodyAt, out: &mut Vec<u8>, min: usize) -> BodyAt {
        self.write_json(batch, at, out, min)
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

    fn prepare(&mut self, batch: &mut Batch, buffer: Vec<u8>) -> Prepared {
        if let Some(p) = &self.packing {
            // Lines the batcher did not pack (a replayed file's): packed as it would have.
            batch.pack(p);
        }
        self.attach_keys(batch);
        let mut prepared = measure_body(self, batch, buffer);
        if self.packing.is_some() {
            // The second writing copies the digests instead of computing them again.
            prepared.digests = std::mem::take(&mut self.digests);
        }
        prepared
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
    use crate::aws::sha256_hex;
    use crate::sink::signed::{encoded, PART_BYTES};
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

    #[test]
    fn prepared_bodies_carry_their_sha256() {
        let (mut e, mut b) = (fixed("s", "k"), batch(&["hi"]));
        let p = e.prepare(&mut b, Vec::new());
        let body = encoded(&mut e, &mut b);
        assert_eq!(
            body,
            br#"{"StreamName":"s","Records":[{"Data":"aGk=","PartitionKey":"k"}]}"#
        );
        assert_eq!(p.len, body.len() as u64);
        assert_eq!(p.sha256_hex, sha256_hex(&body));
    }

    #[test]
    fn bodies_of_many_parts_are_written_alike_twice_with_or_without_aggregation() {
        let mut b = Batch::new();
        // 500 lines of up to 2 KiB, every byte value: a body of about ten parts.
        for i in 0..500usize {
            let line: Vec<u8> = (0..(i * 37) % 2048).map(|j| (i + j * 11) as u8).collect();
            b.push(&line);
        }
        let encoders = [
            KinesisEncoder::new("s", Keys::Random(Rng::with_seed(1))),
            KinesisEncoder::aggregating("s", Keys::Random(Rng::with_seed(2)), 50 * 1024),
            KinesisEncoder::aggregating("s", Keys::Fixed(b"k".to_vec()), 1024 * 1024),
        ];
        for mut e in encoders {
            let mut batch = b.clone();
            let body = encoded(&mut e, &mut batch);
            assert!(body.len() > 8 * PART_BYTES, "{} bytes", body.len());
            let records = records_of(&body);
            assert_eq!(records.len(), batch.record_count());
            for (r, (data, key)) in records.iter().enumerate() {
                let mut want = Vec::new();
                match e.packing() {
                    None => want.extend_from_slice(b.line(r)),
                    Some(_) => aggregate::write(&mut want, key.as_bytes(), batch.record(r)),
                }
                assert_eq!(data, &want, "record {r}");
            }
            assert_eq!(batch.len(), 500);
        }
    }

    #[test]
    fn random_keys_are_twelve_alphanumerics_per_record_and_kept_for_resends() {
        let mut e = KinesisEncoder::new("s", Keys::Random(Rng::with_seed(3)));
        assert_eq!(e.line_overhead(), RANDOM_KEY_LEN);
        let mut b = batch(&["x", "y", "z"]);
        let body = encoded(&mut e, &mut b);
        let keys = |body: &[u8]| -> Vec<String> {
            let v: Value = serde_json::from_slice(body).unwrap();
            let records = v["Records"].as_array().unwrap().clone();
            records
                .iter()
                .map(|r| r["PartitionKey"].as_str().unwrap().to_string())
                .collect()
        };
        let first = keys(&body);
        assert_eq!(first.len(), 3);
        for k in &first {
            assert_eq!(k.len(), RANDOM_KEY_LEN);
            assert!(k.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        assert_ne!(first[0], first[1]);

        // A resend of some lines, encoded by another copy, keeps their keys.
        let mut other = e.clone();
        other.keys = Keys::Random(Rng::with_seed(4));
        let resend = encoded(&mut other, &mut b.subset(&[0, 2]));
        assert_eq!(keys(&resend), [first[0].clone(), first[2].clone()]);
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
        let body = encoded(&mut e, &mut b);
        let records = records_of(&body);
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
        let body = encoded(&mut e, &mut b);
        let records = records_of(&body);
        assert_eq!(records.len(), 3);
        let keys: Vec<&String> = records.iter().map(|(_, k)| k).collect();
        assert!(keys[0] != keys[1] && keys[1] != keys[2]);
        // Every user record's key is its aggregate's: the table holds that one key.
        for (data, key) in &records {
            assert_eq!(data[4], 0x0A);
            assert_eq!(usize::from(data[5]), key.len());
            assert_eq!(&data[6..6 + key.len()], key.as_bytes());
        }
        let mut other = e.clone();
        other.keys = Keys::Random(Rng::with_seed(4));
        let resend = encoded(&mut other, &mut b.subset(&[1]));
        assert_eq!(records_of(&resend), [records[1].clone()]);
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
        let body = encoded(&mut e, &mut b);
        let records = records_of(&body);
        assert_eq!(b.record_count(), records.len());
        assert_eq!(
            records.len(),
            3,
            "1024-byte aggregates of lines taking 25 bytes"
        );
        for (r, (data, key)) in records.iter().enumerate() {
            assert!(data.len() + key.len() <= 1024);
            assert_eq!(packing.record_bytes(b.record(r)), data.len() + key.len());
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
        let body = encoded(&mut e, &mut b);
        let records = records_of(&body);
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
