//! The journal's state file: two 4 KiB slots written in turn, each with a sequence number and
//! a checksum, so that a write torn by a power cut leaves the other slot whole. Everything in
//! it is hostile input: a slot is used only when it is whole and consistent.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::MAX_OFFSET;

/// Size of each of the state file's two slots.
pub(super) const SLOT: usize = 4096;
/// The most done ranges above the watermark the state records; beyond them, the highest are
/// left out (they are sent again after a restart: duplicates, never a loss).
pub(super) const MAX_RANGES: usize = (SLOT - 48) / 16;
/// The state's first bytes.
const MAGIC: &[u8; 4] = b"F2KJ";

/// The journal's state as recorded in one slot of its state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Which write this was (the newer slot wins).
    pub seq: u64,
    /// Everything below this offset needs nothing more.
    pub watermark: u64,
    /// The highest offset handed to the sender.
    pub handed: u64,
    /// The watermark falls inside a line.
    pub mid_line: bool,
    /// Done ranges above the watermark, sorted and apart.
    pub done: Vec<(u64, u64)>,
}

/// One slot: magic, sequence, watermark, handed, mid-line flag, count, ranges, then an
/// FNV-1a checksum of all of it; little-endian.
pub(super) fn encode_state(s: &State) -> Vec<u8> {
    let mut v = Vec::with_capacity(SLOT);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&s.seq.to_le_bytes());
    v.extend_from_slice(&s.watermark.to_le_bytes());
    v.extend_from_slice(&s.handed.to_le_bytes());
    v.push(u8::from(s.mid_line));
    v.extend_from_slice(&(s.done.len() as u32).to_le_bytes());
    for (a, b) in &s.done {
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&b.to_le_bytes());
    }
    let sum = fnv1a(&v);
    v.extend_from_slice(&sum.to_le_bytes());
    v
}

/// Parses one slot of the journal's state file (a hostile file in the directory); `None`
/// unless it is whole and consistent.
pub fn parse_state_slot(slot: &[u8]) -> Option<State> {
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(slot.get(i..i + 8)?.try_into().ok()?))
    };
    if slot.get(..4)? != MAGIC {
        return None;
    }
    let seq = u64_at(4)?;
    let watermark = u64_at(12)?;
    let handed = u64_at(20)?;
    if watermark > MAX_OFFSET || handed > MAX_OFFSET {
        return None;
    }
    let mid_line = match *slot.get(28)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let n = u32::from_le_bytes(slot.get(29..33)?.try_into().ok()?) as usize;
    if n > MAX_RANGES {
        return None;
    }
    let end = 33 + n * 16;
    if u64_at(end)? != fnv1a(slot.get(..end)?) {
        return None;
    }
    let mut done = Vec::with_capacity(n);
    let mut last = watermark;
    for i in 0..n {
        let (a, b) = (u64_at(33 + i * 16)?, u64_at(41 + i * 16)?);
        // Sorted, above the watermark, not touching each other, not empty, in bounds.
        if a <= last || b <= a || b > MAX_OFFSET {
            return None;
        }
        last = b;
        done.push((a, b));
    }
    Some(State {
        seq,
        watermark,
        handed,
        mid_line,
        done,
    })
}

/// The newest whole slot of the state file.
pub(super) fn read_state(file: &File) -> Option<State> {
    let mut buf = vec![0u8; 2 * SLOT];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let a = parse_state_slot(&buf[..SLOT.min(got)]);
    let b = if got > SLOT {
        parse_state_slot(&buf[SLOT..got])
    } else {
        None
    };
    match (a, b) {
        (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// 64-bit FNV-1a: enough to tell a torn or foreign slot from a whole one.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
