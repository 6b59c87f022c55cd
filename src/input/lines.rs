//! The line splitter: turns a stream of byte chunks into lines, with a hard size bound.
//!
//! Definition of a line, as Go's `bufio.ScanLines` had it:
//! - a line ends at `\n`, which is not part of it; one `\r` right before the `\n` is removed;
//! - bytes are not validated as UTF-8 and NUL bytes pass through;
//! - an unterminated tail is a line when the input ends ([`LineSplitter::finish`], called when
//!   the last writer hangs up), with one trailing `\r` removed likewise;
//! - an empty line (after removing `\r`) is reported as [`Piece::Empty`], not as a line;
//! - a line longer than `max_line` bytes (after removing `\r`) is passed on in pieces as it
//!   arrives — [`Piece::LongStart`], any number of [`Piece::LongMore`], then
//!   [`Piece::Oversized`] with its full length — so it can be streamed to disk; its bytes are
//!   never held: the splitter keeps at most `max_line + 1` bytes of any unfinished line,
//!   whatever the input.
//!
//! The splitter does no I/O; it is fed chunks exactly as `read` returned them.

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A non-empty line of at most `max_line` bytes, without its terminator.
    Line(&'a [u8]),
    /// An empty line, skipped.
    Empty,
    /// The first bytes of a line longer than `max_line`.
    LongStart(&'a [u8]),
    /// More bytes of that long line.
    LongMore(&'a [u8]),
    /// The long line ended; `len` is its length without terminator (the sum of its pieces).
    Oversized {
        /// The long line's length in bytes (without `\n` and a final `\r`).
        len: u64,
    },
}

/// A long line being passed on in pieces.
#[derive(Debug)]
struct Long {
    /// Bytes passed on so far.
    len: u64,
    /// A `\r` seen last and not passed on yet: it is dropped if the line ends right after it.
    held_cr: bool,
}

/// Splits chunks of bytes into lines; see the module documentation for the rules.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    /// The start of an unfinished line, at most `max_line + 1` bytes (room for a final `\r`).
    pending: Vec<u8>,
    /// The unfinished line is too long and being passed on in pieces; `pending` is empty then.
    long: Option<Long>,
}

impl LineSplitter {
    /// A splitter that passes lines of up to `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            max_line,
            pending: Vec::new(),
            long: None,
        }
    }

    /// The longest line passed on.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Bytes of an unfinished line held in memory (at most `max_line + 1`).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Whether part of a line is waiting for its end.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty() || self.long.is_some()
    }

    /// Feeds one chunk, calling `out` for every piece it completes, in order.
    #[inline]
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        self.feed_at(chunk, &mut |p, _| out(p));
    }

    /// Like [`LineSplitter::feed`], telling `out` with each piece how many bytes of the chunk
    /// it has consumed: past the piece's `\n` for a line, an empty line or the end of a long
    /// one; the whole chunk for the pieces of a long line that has not ended yet.
    pub fn feed_at(&mut self, chunk: &[u8], out: &mut impl FnMut(Piece<'_>, usize)) {
        let total = chunk.len();
        let mut rest = chunk;
        while let Some(nl) = find_newline(rest) {
            let (head, after) = (&rest[..nl], &rest[nl + 1..]);
            rest = after;
            let at = total - rest.len();
            let out = &mut |p: Piece<'_>| out(p, at);
            if self.long.is_none()
                && !self.pending.is_empty()
                && self.pending.len() + head.len() > self.max_line + 1
            {
                self.start_long(out);
            }
            if self.long.is_some() {
                self.long_more(head, out);
                self.end_long(out);
            } else if self.pending.is_empty() {
                self.complete(head, out);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                self.complete(&line, out);
                line.clear();
                self.pending = line;
            }
        }
        self.hold(rest, &mut |p| out(p, total));
    }

    /// Ends the input: an unterminated tail becomes a line.
    pub fn finish(&mut self, out: &mut impl FnMut(Piece<'_>)) {
        if self.long.is_some() {
            self.end_long(out);
        } else if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.complete(&line, out);
            self.pending = line;
            self.pending.clear();
        }
        self.shrink();
    }

    /// Keeps an unterminated tail, or passes it on once the line is too long.
    fn hold(&mut self, tail: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        if tail.is_empty() {
            return;
        }
        if self.long.is_none() && self.pending.len() + tail.len() > self.max_line + 1 {
            self.start_long(out);
        }
        if self.long.is_some() {
            self.long_more(tail, out);
        } else {
            self.pending.extend_from_slice(tail);
        }
    }

    /// A whole line (terminator removed, `\r` not yet).
    fn complete(&self, raw: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        let line = strip_cr(raw);
        if line.is_empty() {
            out(Piece::Empty);
        } else if line.len() > self.max_line {
            out(Piece::LongStart(line));
            out(Piece::Oversized {
                len: line.len() as u64,
            });
        } else {
            out(Piece::Line(line));
        }
    }

    /// Turns the pending start of a line into the first piece of a long line.
    fn start_long(&mut self, out: &mut impl FnMut(Piece<'_>)) {
        let held_cr = self.pending.last() == Some(&b'\r');
        let first = &self.pending[..self.pending.len() - usize::from(held_cr)];
        out(Piece::LongStart(first));
        self.long = Some(Long {
            len: first.len() as u64,
            held_cr,
        });
        self.pending.clear();
        self.shrink();
    }

    /// Passes on more of the long line, holding back a final `\r`.
    fn long_more(&mut self, bytes: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        let long = self.long.as_mut().expect("in a long line");
        if bytes.is_empty() {
            return;
        }
        if long.held_cr {
            out(Piece::LongMore(b"\r"));
            long.len += 1;
        }
        long.held_cr = bytes.last() == Some(&b'\r');
        let body = &bytes[..bytes.len() - usize::from(long.held_cr)];
        if !body.is_empty() {
            out(Piece::LongMore(body));
            long.len += body.len() as u64;
        }
    }

    /// The long line ended: a held `\r` was its final one and is dropped.
    fn end_long(&mut self, out: &mut impl FnMut(Piece<'_>)) {
        let long = self.long.take().expect("in a long line");
        out(Piece::Oversized { len: long.len });
    }

    /// Gives back memory held for a long unfinished line.
    fn shrink(&mut self) {
        if self.pending.capacity() > 64 * 1024 && self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The position of the first `\n` in `hay`.
#[inline]
pub fn find_newline(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the rules say, computed the obvious way over the whole input at once.
    fn naive(data: &[u8], max_line: usize) -> Vec<Result<Vec<u8>, u64>> {
        let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        // After the last '\n' comes the unterminated tail, a line only if non-empty.
        let tail = parts.pop().unwrap();
        let mut out = Vec::new();
        let push = |raw: &[u8], out: &mut Vec<Result<Vec<u8>, u64>>| {
            let line = raw.strip_suffix(b"\r").unwrap_or(raw);
            if line.is_empty() {
                out.push(Ok(Vec::new()));
            } else if line.len() > max_line {
                out.push(Err(line.len() as u64));
            } else {
                out.push(Ok(line.to_vec()));
            }
        };
        for p in parts {
            push(p, &mut out);
        }
        if !tail.is_empty() {
            push(tail, &mut out);
        }
        out
    }

    fn split(data: &[u8], max_line: usize, chunk: usize) -> (Vec<Result<Vec<u8>, u64>>, usize) {
        // Every line's bytes, to check the pieces of long ones against.
        let full_lines = naive(data, usize::MAX)
            .into_iter()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>();
        let mut s = LineSplitter::new(max_line);
        let mut out = Vec::new();
        let mut peak = 0;
        let mut long: Option<Vec<u8>> = None;
        let mut collect = |p: Piece<'_>| match p {
            Piece::Line(l) => out.push(Ok(l.to_vec())),
            Piece::Empty => out.push(Ok(Vec::new())),
            Piece::LongStart(b) => {
                assert!(long.is_none(), "a long line started inside another");
                long = Some(b.to_vec());
            }
            Piece::LongMore(b) => long
                .as_mut()
                .expect("LongMore without LongStart")
                .extend_from_slice(b),
            Piece::Oversized { len } => {
                let whole = long.take().expect("Oversized without LongStart");
                assert_eq!(whole.len() as u64, len, "pieces add up to the length");
                assert_eq!(
                    Some(&whole),
                    full_lines.get(out.len()),
                    "pieces are the line's bytes"
                );
                out.push(Err(len));
            }
        };
        for c in data.chunks(chunk.max(1)) {
            s.feed(c, &mut collect);
            peak = peak.max(s.pending_len());
        }
        s.finish(&mut collect);
        assert!(!s.has_partial());
        (out, peak)
    }

    fn check(data: &[u8], max_line: usize) {
        let want = naive(data, max_line);
        for chunk in 1..=data.len().max(1) {
            let (got, peak) = split(data, max_line, chunk);
            assert_eq!(
                got,
                want,
                "chunk size {chunk}, max_line {max_line}, data {:?}",
                String::from_utf8_lossy(data)
            );
            assert!(
                peak <= max_line + 1,
                "held {peak} bytes with max_line {max_line}"
            );
        }
    }

    #[test]
    fn matches_naive_reference_on_edge_cases() {
        let cases: &[&[u8]] = &[
            b"",
            b"\n",
            b"\n\n\n",
            b"a",
            b"a\n",
            b"a\r\n",
            b"\r\n",
            b"\r",
            b"a\r",
            b"a\r\r\n",
            b"abc\ndef",
            b"abc\r\ndef\r",
            b".flush\n.stop\n",
            b"\0\0\n\0",
            b"12345\n123456\n1234567\n",
            b"12345\r\n123456\r\n1234567\r\n12345\r",
            b"xxxxxxxxxxxxxxxxxxxxxxxxxxxx\nshort\nyyyyyyyyyyyyyyyyyyy",
            b"\xff\xfe\n\xc3\x28\r\n",
        ];
        for data in cases {
            for max_line in [1, 2, 5, 6, 7, 100] {
                check(data, max_line);
            }
        }
    }

    #[test]
    fn matches_naive_reference_on_pseudo_random_input() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let len = (round * 7) % 97;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 8 {
                        0 => b'\n',
                        1 => b'\r',
                        2 => 0,
                        _ => b'a' + (x % 26) as u8,
                    }
                })
                .collect();
            for max_line in [1, 3, 8, 40] {
                check(&data, max_line);
            }
        }
    }

    #[test]
    fn huge_line_without_newline_holds_bounded_memory() {
        let mut s = LineSplitter::new(1000);
        let chunk = vec![b'x'; 64 * 1024];
        let mut pieces = Vec::new();
        let mut streamed = 0u64;
        let mut record = |p: Piece<'_>| match p {
            Piece::LongStart(b) | Piece::LongMore(b) => streamed += b.len() as u64,
            other => pieces.push(format!("{other:?}")),
        };
        for _ in 0..100 {
            s.feed(&chunk, &mut record);
            assert!(s.pending_len() <= 1001);
        }
        s.feed(b"\nnext\n", &mut record);
        assert_eq!(streamed, 6_553_600);
        assert_eq!(
            pieces,
            vec![
                format!("Oversized {{ len: {} }}", 6_553_600),
                "Line([110, 101, 120, 116])".to_string()
            ]
        );
    }

    #[test]
    fn line_of_exactly_max_with_crlf_passes() {
        let (got, _) = split(b"abcde\r\n", 5, 3);
        assert_eq!(got, vec![Ok(b"abcde".to_vec())]);
    }
}
