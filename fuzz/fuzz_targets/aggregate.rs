//! KPL aggregation end to end: lines through the batcher and the encoder, read back by a
//! decoder of the target's own (hand-written protobuf, the `md5` crate's MD5) from the
//! PutRecords JSON. The leading bytes choose the keys (fixed, of any UTF-8, or random), the
//! aggregate, record and request size limits and the records a request may hold; the rest
//! are lines, some stretched long, so lines near and over every limit occur.
//!
//! Checked: the user records of every request, in order, are exactly the lines pushed; every
//! record is an aggregate (magic, protobuf, digest) whose key table holds its own partition
//! key once, which every user record points at; a record is at most the aggregate limit, or
//! holds one line and is at most the record limit; a request holds at most its records and
//! bytes; the sizes the encoder reports are the sizes sent; the body's SHA-256 is the one
//! given; and packing the same lines afterwards gives the same records.
//!
//! A bit of the first byte sends the lines to Firehose's encoder instead, one line a record or
//! (another bit) joined as `--aggregate` joins them. Checked: every record is whole lines, each
//! followed by its newline, exactly the lines pushed in order; a joined record is at most the
//! aggregate limit or one line within the record limit; the request and size limits as above.
#![no_main]

use base64::Engine as _;
use fifo2kinesis::parsers::{
    Batch, Batcher, BodyEncoder, Encoder, FirehoseEncoder, Keys, KinesisEncoder, Limits, Rng,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::{Digest, Sha256};

const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The limits and keys the leading bytes choose.
struct Setup {
    keys: Keys,
    fixed: Option<String>,
    aggregate_max: usize,
    record_max: usize,
    request_max: usize,
    records: usize,
}

fn setup(head: &[u8; 8], key_bytes: &[u8]) -> Setup {
    let [mode, key_len, a0, a1, r0, q0, q1, n] = *head;
    // Limits below the daemon's smallest (1 KiB) reach every edge with short lines, which
    // keeps runs quick; the varint edge at 128 bytes is within them.
    let aggregate_max = 64 + usize::from(u16::from_le_bytes([a0, a1]) % 1024);
    let record_max = aggregate_max + usize::from(r0) * 2;
    let request_max = record_max + usize::from(u16::from_le_bytes([q0, q1]) % 8192);
    let records = if n & 0x80 == 0 {
        usize::from(n % 8) + 1
    } else {
        usize::from(n) * 4 % 500 + 1
    };
    let (keys, fixed) = if mode & 1 == 0 {
        (Keys::Random(Rng::with_seed(u64::from(mode))), None)
    } else {
        // Any UTF-8: ASCII, two-byte and four-byte characters.
        let key: String = key_bytes
            .iter()
            .take(usize::from(key_len % 32) + 1)
            .map(|&b| match b {
                0xF0.. => '𝄞',
                0xC0.. => 'é',
                _ => char::from(0x20 + b % 95),
            })
            .collect();
        let key = if key.is_empty() { "k".to_string() } else { key };
        (Keys::Fixed(key.clone().into_bytes()), Some(key))
    };
    Setup {
        keys,
        fixed,
        aggregate_max,
        record_max,
        request_max,
        records,
    }
}

/// The lines of `rest`: `\n`-separated, non-empty; a line starting with 0xFF is stretched to
/// the length its next two bytes give (up to 2 KiB, past every record limit chosen).
fn lines(rest: &[u8]) -> Vec<Vec<u8>> {
    rest.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| match l {
            [0xFF, a, b, fill @ ..] => {
                let n = usize::from(u16::from_le_bytes([*a, *b]) % 2048) + 1;
                vec![fill.first().copied().unwrap_or(b'x'); n]
            }
            _ => l.to_vec(),
        })
        .collect()
}

fn varint(b: &mut &[u8]) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = b.split_first().expect("a varint cut short");
        *b = rest;
        v |= u64::from(byte & 0x7F) << shift;
        if byte < 0x80 {
            return v;
        }
    }
    panic!("a varint of more than ten bytes");
}

/// The fields of a protobuf message: (field number, varint value or bytes).
fn fields(mut b: &[u8]) -> Vec<(u64, Result<u64, &[u8]>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b);
        let value = match tag & 7 {
            0 => Ok(varint(&mut b)),
            2 => {
                let n = usize::try_from(varint(&mut b)).unwrap();
                assert!(n <= b.len(), "a length past the end");
                let (v, rest) = b.split_at(n);
                b = rest;
                Err(v)
            }
            t => panic!("wire type {t}"),
        };
        out.push((tag >> 3, value));
    }
    out
}

/// The user records of an aggregated record sent with partition key `key`.
fn decode(data: &[u8], key: &str) -> Vec<Vec<u8>> {
    let body = data.strip_prefix(&MAGIC).expect("the magic");
    assert!(body.len() >= 16);
    let (protobuf, digest) = body.split_at(body.len() - 16);
    assert_eq!(md5::compute(protobuf).0, digest, "the digest");
    let mut table = Vec::new();
    let mut users = Vec::new();
    for (field, value) in fields(protobuf) {
        match (field, value) {
            (1, Err(k)) => table.push(k.to_vec()),
            (3, Err(record)) => {
                let mut index = None;
                let mut line = None;
                for (f, v) in fields(record) {
                    match (f, v) {
                        (1, Ok(i)) => index = Some(i),
                        (3, Err(d)) => line = Some(d.to_vec()),
                        other => panic!("a user record field {other:?}"),
                    }
                }
                assert_eq!(index, Some(0), "every user record has the one key");
                users.push(line.expect("a user record's data"));
            }
            (f, _) => panic!("field {f} in an aggregated record"),
        }
    }
    assert_eq!(
        table,
        [key.as_bytes().to_vec()],
        "the key table holds the record's key"
    );
    users
}

fuzz_target!(|input: &[u8]| {
    let Some((head, rest)) = input.split_first_chunk::<8>() else {
        return;
    };
    let s = setup(head, rest);
    if head[0] & 2 != 0 {
        firehose(&s, rest, head[0] & 4 != 0);
        return;
    }
    let mut encoder = KinesisEncoder::aggregating("s", s.keys, s.aggregate_max);
    let packing = encoder.packing().expect("aggregating packs lines");
    // A record limit that leaves no room for a line next to the key: nothing to send.
    let Some(max_line) = s.record_max.checked_sub(encoder.line_overhead()) else {
        return;
    };
    let lines: Vec<Vec<u8>> = lines(rest)
        .into_iter()
        .filter(|l| l.len() <= max_line)
        .collect();
    let limits = Limits {
        max_records: s.records,
        max_bytes: s.request_max,
        interval: None,
    };
    let mut batcher = Batcher::packing(limits, packing);
    let mut batches = Vec::new();
    let now = std::time::Instant::now();
    for l in &lines {
        batcher.push(l, now, &mut |b| batches.push(b));
    }
    batches.extend(batcher.take());

    let mut got: Vec<Vec<u8>> = Vec::new();
    for mut batch in batches {
        let body = written_twice(&mut encoder, &mut batch);
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["StreamName"], "s");
        let records = v["Records"].as_array().expect("records");
        assert_eq!(records.len(), batch.record_count());
        assert!(records.len() <= s.records, "{} records", records.len());
        let mut request = 0;
        for (r, record) in records.iter().enumerate() {
            let data = base64::engine::general_purpose::STANDARD
                .decode(record["Data"].as_str().expect("Data"))
                .expect("base64");
            let key = record["PartitionKey"].as_str().expect("PartitionKey");
            if let Some(fixed) = &s.fixed {
                assert_eq!(key, fixed);
            }
            let users = decode(&data, key);
            let size = data.len() + key.len();
            assert_eq!(size, encoder.record_bytes(&batch, r), "the size reported");
            assert!(
                size <= s.aggregate_max || (users.len() == 1 && size <= s.record_max),
                "a record of {size} bytes and {} lines",
                users.len()
            );
            assert!(users.iter().eq(batch.record(r)), "the record's lines");
            request += size;
            got.extend(users);
        }
        assert!(request <= s.request_max, "a request of {request} bytes");
        // The same lines, packed afterwards, make the same records.
        let mut plain = Batch::new();
        for l in batch.lines() {
            plain.push(l);
        }
        plain.pack(&packing);
        let same =
            (0..batch.record_count()).all(|r| plain.record_lines(r) == batch.record_lines(r));
        assert!(
            same && plain.record_count() == batch.record_count(),
            "packing differs"
        );
    }
    assert!(got == lines, "the lines read back are not the lines pushed");
});

/// The body of `batch` as the sender writes it, after measuring it as the reading thread
/// does: its length and SHA-256 are what measuring said, and so is the body kept, if it was.
fn written_twice(encoder: &mut impl BodyEncoder, batch: &mut Batch) -> Vec<u8> {
    let p = encoder.prepare(batch, Vec::new());
    batch.set_prepared(p.clone());
    let mut body = Vec::new();
    encoder.body(batch, &mut body);
    assert_eq!(p.len, body.len() as u64, "the length measured");
    assert_eq!(p.sha256_hex, hex(&Sha256::digest(&body)), "the hash measured");
    if let Some(kept) = p.kept() {
        assert!(kept == &body[..], "the body kept");
    }
    body
}

/// The lines through the batcher and Firehose's encoder, read back from the PutRecordBatch
/// JSON.
fn firehose(s: &Setup, rest: &[u8], joined: bool) {
    let mut encoder = match joined {
        true => FirehoseEncoder::joining("s", s.aggregate_max),
        false => FirehoseEncoder::new("s"),
    };
    let max_line = s.record_max - encoder.line_overhead();
    let lines: Vec<Vec<u8>> = lines(rest)
        .into_iter()
        .filter(|l| l.len() <= max_line)
        .collect();
    let limits = Limits {
        max_records: s.records,
        max_bytes: s.request_max,
        interval: None,
    };
    let mut batcher = match encoder.packing() {
        Some(packing) => Batcher::packing(limits, packing),
        None => Batcher::new(limits, encoder.line_overhead()),
    };
    let mut batches = Vec::new();
    let now = std::time::Instant::now();
    for l in &lines {
        batcher.push(l, now, &mut |b| batches.push(b));
    }
    batches.extend(batcher.take());

    let mut got: Vec<Vec<u8>> = Vec::new();
    for mut batch in batches {
        let body = written_twice(&mut encoder, &mut batch);
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v.as_object().map(|o| o.len()), Some(2));
        assert_eq!(v["DeliveryStreamName"], "s");
        let records = v["Records"].as_array().expect("records");
        assert_eq!(records.len(), batch.record_count());
        assert!(records.len() <= s.records, "{} records", records.len());
        let mut request = 0;
        for (r, record) in records.iter().enumerate() {
            assert_eq!(record.as_object().map(|o| o.len()), Some(1), "Data alone");
            let data = base64::engine::general_purpose::STANDARD
                .decode(record["Data"].as_str().expect("Data"))
                .expect("base64");
            let (last, body) = data.split_last().expect("a record holds a line");
            assert_eq!(*last, b'\n', "a record ends in a newline");
            let users: Vec<Vec<u8>> = body.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            assert_eq!(
                data.len(),
                encoder.record_bytes(&batch, r),
                "the size reported"
            );
            let limit = if joined {
                s.aggregate_max
            } else {
                s.record_max
            };
            assert!(
                data.len() <= limit || (users.len() == 1 && data.len() <= s.record_max),
                "a record of {} bytes and {} lines",
                data.len(),
                users.len()
            );
            assert!(joined || users.len() == 1, "one line a record");
            assert!(users.iter().eq(batch.record(r)), "the record's lines");
            request += data.len();
            got.extend(users);
        }
        assert!(request <= s.request_max, "a request of {request} bytes");
    }
    assert!(got == lines, "the lines read back are not the lines pushed");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
