//! MD5 (RFC 1321) of several messages at once, for the digests that end KPL aggregated
//! records.
//!
//! MD5 is one long chain of dependent 32-bit operations: one message at a time, a core waits
//! on each step, and the digest alone would cost more than everything else `--aggregate` does.
//! A batch has many aggregated records of about the same size, so [`digests`] hashes up to
//! [`LANES`] of them side by side, each step done for every lane together. The lanes are plain
//! arrays, which the compiler turns into SIMD instructions on every target (SSE2 on x86_64,
//! NEON on aarch64): no `unsafe`, no per-CPU code. A lane whose message is shorter stops
//! changing once its last block is in.

/// How many messages are hashed together.
pub const LANES: usize = 8;

/// One 32-bit word of every lane.
type Lanes = [u32; LANES];

/// The per-step shift amounts, by round.
const SHIFTS: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

/// `floor(abs(sin(i + 1)) * 2^32)`.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

const INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/// The MD5 digest of one message.
pub fn digest(message: &[u8]) -> [u8; 16] {
    digests(&[message])[0]
}

/// The MD5 digests of up to [`LANES`] messages, in their order (the rest of the array is
/// unspecified).
pub fn digests(messages: &[&[u8]]) -> [[u8; 16]; LANES] {
    assert!(messages.len() <= LANES, "at most {LANES} messages at once");
    // Each message ends in one or two blocks of its last bytes and the padding.
    let mut tails = [[0u8; 128]; LANES];
    let mut full = [0usize; LANES];
    let mut blocks = [0usize; LANES];
    for (lane, m) in messages.iter().enumerate() {
        full[lane] = m.len() / 64;
        let rest = &m[full[lane] * 64..];
        let tail = &mut tails[lane];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_blocks = if rest.len() < 56 { 1 } else { 2 };
        let bits = (m.len() as u64).wrapping_mul(8);
        tail[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits.to_le_bytes());
        blocks[lane] = full[lane] + tail_blocks;
    }
    let mut state = INIT.map(|v| [v; LANES]);
    let most = blocks.iter().copied().max().unwrap_or(0);
    for b in 0..most {
        let mut words = [[0u32; LANES]; 16];
        let mut live = [0u32; LANES];
        for (lane, m) in messages.iter().enumerate() {
            if b >= blocks[lane] {
                continue;
            }
            let block = if b < full[lane] {
                &m[b * 64..b * 64 + 64]
            } else {
                &tails[lane][(b - full[lane]) * 64..][..64]
            };
            for (j, word) in words.iter_mut().enumerate() {
                let bytes = block[4 * j..4 * j + 4].try_into().expect("four bytes");
                word[lane] = u32::from_le_bytes(bytes);
            }
            live[lane] = u32::MAX;
        }
        let next = compress(&state, &words);
        for (s, n) in state.iter_mut().zip(next) {
            for lane in 0..LANES {
                s[lane] = (n[lane] & live[lane]) | (s[lane] & !live[lane]);
            }
        }
    }
    let mut out = [[0u8; 16]; LANES];
    for (lane, d) in out.iter_mut().enumerate() {
        for (i, s) in state.iter().enumerate() {
            d[4 * i..4 * i + 4].copy_from_slice(&s[lane].to_le_bytes());
        }
    }
    out
}

/// One block of every lane: the state after it.
#[inline(always)]
fn compress(state: &[Lanes; 4], m: &[Lanes; 16]) -> [Lanes; 4] {
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => (map3(&b, &c, &d, |b, c, d| (b & c) | (!b & d)), i),
            1 => (
                map3(&b, &c, &d, |b, c, d| (d & b) | (!d & c)),
                (5 * i + 1) % 16,
            ),
            2 => (map3(&b, &c, &d, |b, c, d| b ^ c ^ d), (3 * i + 5) % 16),
            _ => (map3(&b, &c, &d, |b, c, d| c ^ (b | !d)), (7 * i) % 16),
        };
        let shift = SHIFTS[i / 16][i % 4];
        let mut rotated = [0u32; LANES];
        for l in 0..LANES {
            let sum = f[l]
                .wrapping_add(a[l])
                .wrapping_add(K[i])
                .wrapping_add(m[g][l]);
            rotated[l] = b[l].wrapping_add(sum.rotate_left(shift));
        }
        a = d;
        d = c;
        c = b;
        b = rotated;
    }
    let mut out = *state;
    for (o, v) in out.iter_mut().zip([a, b, c, d]) {
        for l in 0..LANES {
            o[l] = o[l].wrapping_add(v[l]);
        }
    }
    out
}

#[inline(always)]
fn map3(b: &Lanes, c: &Lanes, d: &Lanes, f: impl Fn(u32, u32, u32) -> u32) -> Lanes {
    let mut out = [0u32; LANES];
    for l in 0..LANES {
        out[l] = f(b[l], c[l], d[l]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: [u8; 16]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_rfc_1321_test_suite() {
        for (input, want) in [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ] {
            assert_eq!(hex(digest(input.as_bytes())), want, "{input:?}");
        }
    }

    #[test]
    fn lanes_of_every_length_agree_with_one_at_a_time() {
        let data: Vec<u8> = (0..5100u32).map(|i| (i * 7 + i / 251) as u8).collect();
        // Lengths around the block and padding edges, in lanes of different lengths.
        let lengths = [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 4999];
        for start in 0..lengths.len() {
            let messages: Vec<&[u8]> = lengths
                .iter()
                .cycle()
                .skip(start)
                .take(LANES)
                .enumerate()
                .map(|(i, &n)| &data[i..i + n])
                .collect();
            let together = digests(&messages);
            for (i, m) in messages.iter().enumerate() {
                use md5::{Digest, Md5};
                assert_eq!(
                    together[i][..],
                    Md5::digest(m)[..],
                    "lane {i}, {} bytes",
                    m.len()
                );
            }
        }
    }
}
