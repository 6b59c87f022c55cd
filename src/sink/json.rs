//! The pieces of a request body shared by the destinations: JSON strings, and base64 written
//! straight into the body, whole or from pieces.

/// Appends `data` in base64, with the CPU's vector instructions where it has them (AVX2,
/// SSE4.1, NEON), chosen at the first call.
pub fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    // Room first, as a Vec grows (the encoder reserves exactly what it writes, which would
    // reallocate at every record of a body that outgrows its estimate).
    out.reserve(data.len().div_ceil(3) * 4);
    base64_simd::STANDARD.encode_append(data, out);
}

/// Base64 of data given in pieces (lines and their newlines), written into a body as it comes
/// without joining the pieces first: whole groups of three bytes are encoded where they are,
/// and at most two bytes wait for the next piece.
#[derive(Clone, Debug, Default)]
pub struct Base64Pieces {
    carry: [u8; 3],
    carried: usize,
}

impl Base64Pieces {
    /// Appends the base64 of `piece`, following the pieces before it, to `out`.
    pub fn push(&mut self, out: &mut Vec<u8>, mut piece: &[u8]) {
        if self.carried > 0 {
            let take = (3 - self.carried).min(piece.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&piece[..take]);
            self.carried += take;
            piece = &piece[take..];
            if self.carried < 3 {
                return;
            }
            let carry = self.carry;
            write_base64(out, &carry);
            self.carried = 0;
        }
        let whole = piece.len() / 3 * 3;
        // A multiple of three bytes encodes without padding, so the next piece follows on.
        write_base64(out, &piece[..whole]);
        let rest = &piece[whole..];
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    /// Ends the data: writes the bytes still waiting, padded.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let carry = self.carry;
        write_base64(out, &carry[..self.carried]);
        self.carried = 0;
    }
}

/// The bytes a JSON string holds as they are, without escaping (those of random keys and
/// stream names among them).
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
        b += 1;
    }
    t
};

/// Writes `s` as a JSON string. Keys and stream names are UTF-8 by construction; anything else
/// is written lossily rather than producing invalid JSON.
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8]) {
    let plain = s.iter().all(|&b| PLAIN[usize::from(b)]);
    if plain {
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    } else {
        let text = String::from_utf8_lossy(s);
        serde_json::to_writer(&mut *out, &text).expect("writing to a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_standard_alphabet_padded_appended_at_every_length() {
        use base64::Engine as _;
        // Lengths across the vector code's block sizes and their tails, every byte value.
        let data: Vec<u8> = (0..700u32).map(|i| (i * 97 % 256) as u8).collect();
        for n in 0..data.len() {
            let mut out = b"prefix:".to_vec();
            write_base64(&mut out, &data[..n]);
            let want = base64::engine::general_purpose::STANDARD.encode(&data[..n]);
            assert_eq!(&out[..7], b"prefix:");
            assert_eq!(std::str::from_utf8(&out[7..]).unwrap(), want, "{n} bytes");
        }
    }

    #[test]
    fn base64_of_pieces_is_base64_of_the_whole_at_every_split() {
        let data: Vec<u8> = (0..=40u8).map(|b| b.wrapping_mul(37)).collect();
        let whole_of = |d: &[u8]| {
            let mut out = Vec::new();
            write_base64(&mut out, d);
            out
        };
        for len in 0..data.len() {
            let d = &data[..len];
            // Every way of cutting d into up to three pieces, empty pieces included.
            for a in 0..=len {
                for b in a..=len {
                    let mut out = b"x".to_vec();
                    let mut pieces = Base64Pieces::default();
                    for piece in [&d[..a], &d[a..b], &d[b..]] {
                        pieces.push(&mut out, piece);
                    }
                    pieces.finish(&mut out);
                    assert_eq!(out[1..], whole_of(d)[..], "{len} cut at {a}, {b}");
                }
            }
        }
    }

    #[test]
    fn json_strings_are_plain_or_escaped() {
        let mut out = Vec::new();
        write_json_str(&mut out, b"my.stream-1");
        write_json_str(&mut out, b"key \"q\"\n");
        assert_eq!(out, br#""my.stream-1""key \"q\"\n""#);
    }
}
