//! The line splitter against the obvious definition: any input, fed in chunks whose sizes come
//! from the leading bytes, gives the same pieces as splitting the whole input at once, and never
//! holds more than `max_line + 1` bytes.
#![no_main]

use fifo2kinesis::parsers::{LineSplitter, Piece};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Want {
    Line(Vec<u8>),
    Empty,
    Oversized(u64),
}

fn naive(data: &[u8], max_line: usize) -> Vec<Want> {
    let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let tail = parts.pop().unwrap_or(&[]);
    if !tail.is_empty() {
        parts.push(tail);
    }
    parts
        .into_iter()
        .map(|raw| {
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.is_empty() {
                Want::Empty
            } else if line.len() > max_line {
                Want::Oversized(line.len() as u64)
            } else {
                Want::Line(line.to_vec())
            }
        })
        .collect()
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let max_line = 1 + input[0] as usize % 64;
    let chunk_seed = input[1] as usize;
    let sizes = [1 + chunk_seed % 7, 1 + input[2] as usize, 4096];
    let data = &input[3..];
    let mut got = Vec::new();
    let mut long: Option<Vec<u8>> = None;
    let mut longs = Vec::new();
    let mut splitter = LineSplitter::new(max_line);
    let mut collect = |p: Piece<'_>| match p {
        Piece::Line(l) => got.push(Want::Line(l.to_vec())),
        Piece::Empty => got.push(Want::Empty),
        Piece::LongStart(b) => {
            assert!(long.is_none());
            long = Some(b.to_vec());
        }
        Piece::LongMore(b) => long
            .as_mut()
            .expect("LongMore after LongStart")
            .extend_from_slice(b),
        Piece::Oversized { len } => {
            let whole = long.take().expect("Oversized after LongStart");
            assert_eq!(whole.len() as u64, len);
            longs.push(whole);
            got.push(Want::Oversized(len));
        }
    };
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        splitter.feed(&rest[..n], &mut collect);
        assert!(splitter.pending_len() <= max_line + 1);
        rest = &rest[n..];
        i += 1;
    }
    splitter.finish(&mut collect);
    let want = naive(data, max_line);
    assert_eq!(got, want);
    // The pieces of each long line are exactly its bytes.
    let full: Vec<Want> = naive(data, usize::MAX);
    let expected_longs: Vec<Vec<u8>> = want
        .iter()
        .zip(full)
        .filter_map(|(w, f)| match (w, f) {
            (Want::Oversized(_), Want::Line(bytes)) => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(longs, expected_longs);
});
