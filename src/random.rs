//! Small, fast, non-cryptographic randomness: partition keys and retry jitter.
//!
//! Neither use needs secrecy, only spread: random partition keys spread records over shards,
//! jitter spreads retries over time. The generator is wyrand, seeded from `/dev/urandom` (with
//! the clock and process id mixed in, should that be unreadable).

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A wyrand generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator with a fixed seed, for tests and fuzz targets.
    pub fn with_seed(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded from the operating system.
    pub fn from_entropy() -> Self {
        let mut seed = [0u8; 8];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
        let mut s = u64::from_le_bytes(seed);
        if read.is_err() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            s = now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32);
        }
        Rng(s)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Appends `len` random characters from `[A-Za-z0-9]` to `out`.
    pub fn push_alphanumeric(&mut self, out: &mut Vec<u8>, len: usize) {
        let mut chunk = [0u8; 10];
        let mut left = len;
        while left > 0 {
            // Ten characters from each 64-bit draw, 6 bits each scaled onto the 62 characters
            // (two come up twice as often: keys need spread, not uniformity).
            let mut bits = self.next_u64();
            let n = left.min(chunk.len());
            for c in &mut chunk[..n] {
                *c = ALPHANUMERIC[(bits & 0x3f) as usize * ALPHANUMERIC.len() / 64];
                bits >>= 6;
            }
            out.extend_from_slice(&chunk[..n]);
            left -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphanumeric_keys_have_the_asked_length_and_charset() {
        let mut r = Rng::with_seed(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut k = Vec::new();
            r.push_alphanumeric(&mut k, 12);
            assert_eq!(k.len(), 12);
            assert!(k.iter().all(u8::is_ascii_alphanumeric));
            seen.insert(k);
        }
        assert_eq!(seen.len(), 1000, "keys repeat");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::with_seed(7);
        assert!((0..10_000).all(|_| r.below(13) < 13));
    }
}
