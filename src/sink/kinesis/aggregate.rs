//! KPL aggregated records (`--aggregate`): many lines in one Kinesis record.
//!
//! The record's data is the 4 magic bytes `F3 89 9A C2`, a protobuf `AggregatedRecord`, and
//! the MD5 of the protobuf bytes. The message written here has one partition key in its table,
//! the record's own, which every user record points at (index 0), so each user record hashes to
//! the shard the record is read from: KCL drops user records that do not. Fields:
//!
//! ```text
//! AggregatedRecord { repeated string partition_key_table = 1;   // 0x0A, one entry
//!                    repeated Record records = 3; }             // 0x1A, one per line
//! Record { required uint64 partition_key_index = 1;             // 0x08 0x00
//!          required bytes data = 3; }                           // 0x1A
//! ```
//!
//! Sizes are known before writing ([`line_cost`], [`aggregate_overhead`]), so the batcher packs
//! records exactly to their limit. Records are written side by side ([`append`]) and their
//! digests made together ([`seal`], [`super::multi_md5`]).

use std::ops::Range;

use super::multi_md5;

/// The first bytes of every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
/// The length of the MD5 digest that ends an aggregated record.
pub const DIGEST_LEN: usize = 16;
/// The most [`line_cost`] adds to a line of up to 10 MiB: two tags, two lengths of up to four
/// bytes, and the key index.
pub const MAX_LINE_FRAMING: usize = 12;

/// The bytes `v` takes as a protobuf varint.
fn varint_len(v: usize) -> usize {
    let bits = usize::BITS - (v | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bytes of one user record's `Record` message for a line of `n` bytes.
fn record_message_len(n: usize) -> usize {
    // partition_key_index (tag, 0), then data (tag, length, bytes).
    2 + 1 + varint_len(n) + n
}

/// The bytes a line of `n` bytes takes in an aggregated record.
pub fn line_cost(n: usize) -> usize {
    let m = record_message_len(n);
    1 + varint_len(m) + m
}

/// The bytes of an aggregated record besides its lines', for a partition key of `key_len`
/// bytes: magic, the key table, and the digest.
pub fn aggregate_overhead(key_len: usize) -> usize {
    MAGIC.len() + 1 + varint_len(key_len) + key_len + DIGEST_LEN
}

/// The most an aggregated record of one line adds to the line, its partition key of
/// `key_len` bytes included: the longest line a record of `n` bytes holds is `n` less this.
pub fn lone_line_overhead(key_len: usize) -> usize {
    aggregate_overhead(key_len) + key_len + MAX_LINE_FRAMING
}

/// Appends the aggregated record of `lines` under partition key `key` to `out`, its digest
/// left zero for [`seal`]: exactly `aggregate_overhead(key.len())` plus the [`line_cost`] of
/// each line. Returns where it lies in `out`.
pub fn append<'a>(
    out: &mut Vec<u8>,
    key: &[u8],
    lines: impl Iterator<Item = &'a [u8]>,
) -> Range<usize> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(0x0A);
    put_varint(out, key.len());
    out.extend_from_slice(key);
    for line in lines {
        out.push(0x1A);
        put_varint(out, record_message_len(line.len()));
        out.extend_from_slice(&[0x08, 0x00, 0x1A]);
        put_varint(out, line.len());
        out.extend_from_slice(line);
    }
    out.extend_from_slice(&[0; DIGEST_LEN]);
    start..out.len()
}

/// Writes the digests of up to [`multi_md5::LANES`] records [`append`] left in `out`,
/// computed together.
pub fn seal(out: &mut [u8], records: &[Range<usize>]) {
    let mut messages: [&[u8]; multi_md5::LANES] = [&[]; multi_md5::LANES];
    for (m, r) in messages.iter_mut().zip(records) {
        *m = &out[r.start + MAGIC.len()..r.end - DIGEST_LEN];
    }
    let digests = multi_md5::digests(&messages[..records.len()]);
    for (r, d) in records.iter().zip(digests) {
        out[r.end - DIGEST_LEN..r.end].copy_from_slice(&d);
    }
}

/// Writes the aggregated record of `lines` under partition key `key` into `out` (cleared
/// first), digest included.
pub fn write<'a>(out: &mut Vec<u8>, key: &[u8], lines: impl Iterator<Item = &'a [u8]>) {
    out.clear();
    let r = append(out, key, lines);
    seal(out, &[r]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_seven_bits_a_byte() {
        let mut out = Vec::new();
        for (v, bytes) in [
            (0usize, &[0x00u8][..]),
            (1, &[0x01]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (300, &[0xAC, 0x02]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
        ] {
            out.clear();
            put_varint(&mut out, v);
            assert_eq!(out, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len(), "{v}");
        }
        assert_eq!(varint_len(10 << 20), 4);
        assert!(line_cost(10 << 20) - (10 << 20) <= MAX_LINE_FRAMING);
    }

    #[test]
    fn a_record_of_two_lines_is_byte_exact() {
        let mut out = Vec::new();
        write(&mut out, b"pk", [&b"ab"[..], &b""[..]].into_iter());
        let protobuf = [
            0x0A, 0x02, b'p', b'k', // partition_key_table: "pk"
            0x1A, 0x06, 0x08, 0x00, 0x1A, 0x02, b'a', b'b', // Record 0: index 0, "ab"
            0x1A, 0x04, 0x08, 0x00, 0x1A, 0x00, // Record 1: index 0, ""
        ];
        assert_eq!(out[..4], MAGIC);
        assert_eq!(out[4..out.len() - DIGEST_LEN], protobuf);
        // MD5 of the protobuf bytes alone, as computed by `md5sum`.
        assert_eq!(
            out[out.len() - DIGEST_LEN..],
            [
                0xdf, 0xcb, 0xd2, 0x7d, 0xc6, 0x62, 0x6f, 0x12, 0x19, 0x75, 0x29, 0xeb, 0x07, 0xac,
                0x5c, 0xcd
            ],
        );
        assert_eq!(
            out.len(),
            aggregate_overhead(2) + line_cost(2) + line_cost(0)
        );
    }

    #[test]
    fn sizes_are_known_before_writing() {
        let mut out = Vec::new();
        for n in [0, 1, 100, 124, 125, 126, 127, 128, 16_380, 16_384, 100_000] {
            let line = vec![b'x'; n];
            write(&mut out, b"key", std::iter::once(&line[..]));
            assert_eq!(out.len(), aggregate_overhead(3) + line_cost(n), "{n}");
        }
    }
}
