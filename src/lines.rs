//! The line splitter: turns a stream of byte chunks into lines, with a hard size bound.
//!
//! Definition of a line, as Go's `bufio.ScanLines` had it:
//! - a line ends at `\n`, which is not part of it; one `\r` right before the `\n` is removed;
//! - bytes are not validated as UTF-8 and NUL bytes pass through;
//! - an unterminated tail is a line when the input ends ([`LineSplitter::finish`], called when
//!   the last writer hangs up), with one trailing `\r` removed likewise;
//! - an empty line (after removing `\r`) is reported as [`Piece::Empty`], not as a line;
//! - a line longer than `max_line` bytes (after removing `\r`) is reported as
//!   [`Piece::Oversized`] with its full length, and its bytes are never held: the splitter keeps
//!   at most `max_line + 1` bytes of any unfinished line, whatever the input.
//!
//! The splitter does no I/O; it is fed chunks exactly as `read` returned them.

/// What the splitter found.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A non-empty line of at most `max_line` bytes, without its terminator.
    Line(&'a [u8]),
    /// An empty line, skipped.
    Empty,
    /// A line longer than `max_line`; it was skipped. `len` is its length without terminator.
    Oversized {
        /// The skipped line's length in bytes (without `\n` and a final `\r`).
        len: u64,
    },
}

/// Splits chunks of bytes into lines; see the module documentation for the rules.
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    /// The start of an unfinished line, at most `max_line + 1` bytes (room for a final `\r`).
    pending: Vec<u8>,
    /// When the unfinished line is already too long: its length so far and whether its last
    /// byte so far is `\r`; `pending` is empty then.
    skipped: Option<(u64, bool)>,
}

impl LineSplitter {
    /// A splitter that passes lines of up to `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineSplitter {
            max_line,
            pending: Vec::new(),
            skipped: None,
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
        !self.pending.is_empty() || self.skipped.is_some()
    }

    /// Feeds one chunk, calling `out` for every line it completes, in order.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        while let Some(nl) = find_newline(chunk) {
            let (head, rest) = (&chunk[..nl], &chunk[nl + 1..]);
            chunk = rest;
            if let Some((so_far, last_cr)) = self.skipped.take() {
                let len = match head.last() {
                    Some(&last) => so_far + head.len() as u64 - u64::from(last == b'\r'),
                    None => so_far - u64::from(last_cr),
                };
                out(Piece::Oversized { len });
                continue;
            }
            if self.pending.is_empty() {
                self.emit(head, out);
            } else if self.pending.len() + head.len() > self.max_line + 1 {
                let len = strip_cr_len(
                    self.pending.len() + head.len(),
                    head.last().or(self.pending.last()),
                );
                self.pending.clear();
                self.emit_oversized(len as u64, out);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                self.emit(&line, out);
                line.clear();
                self.pending = line;
            }
        }
        self.hold(chunk);
    }

    /// Ends the input: an unterminated tail becomes a line.
    pub fn finish(&mut self, out: &mut impl FnMut(Piece<'_>)) {
        if let Some((so_far, last_cr)) = self.skipped.take() {
            out(Piece::Oversized {
                len: so_far - u64::from(last_cr),
            });
        } else if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line, out);
            self.pending = line;
            self.pending.clear();
        }
        self.shrink();
    }

    /// Keeps an unterminated tail, or only counts it once the line is too long.
    fn hold(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        let last_cr = tail.last() == Some(&b'\r');
        if let Some((so_far, cr)) = self.skipped.as_mut() {
            *so_far += tail.len() as u64;
            *cr = last_cr;
        } else if self.pending.len() + tail.len() > self.max_line + 1 {
            self.skipped = Some(((self.pending.len() + tail.len()) as u64, last_cr));
            self.pending.clear();
            self.shrink();
        } else {
            self.pending.extend_from_slice(tail);
        }
    }

    fn emit(&self, raw: &[u8], out: &mut impl FnMut(Piece<'_>)) {
        let line = strip_cr(raw);
        if line.is_empty() {
            out(Piece::Empty);
        } else if line.len() > self.max_line {
            out(Piece::Oversized {
                len: line.len() as u64,
            });
        } else {
            out(Piece::Line(line));
        }
    }

    fn emit_oversized(&mut self, len: u64, out: &mut impl FnMut(Piece<'_>)) {
        out(Piece::Oversized { len });
        self.shrink();
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

/// The length of a line of `len` bytes whose last byte is `last`, once a final `\r` is removed.
fn strip_cr_len(len: usize, last: Option<&u8>) -> usize {
    if last == Some(&b'\r') {
        len - 1
    } else {
        len
    }
}

/// The position of the first `\n` in `hay`.
#[inline]
pub fn find_newline(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'\n')
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
        let mut s = LineSplitter::new(max_line);
        let mut out = Vec::new();
        let mut peak = 0;
        let mut collect = |p: Piece<'_>| match p {
            Piece::Line(l) => out.push(Ok(l.to_vec())),
            Piece::Empty => out.push(Ok(Vec::new())),
            Piece::Oversized { len } => out.push(Err(len)),
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
        for _ in 0..100 {
            s.feed(&chunk, &mut |p| pieces.push(format!("{p:?}")));
            assert!(s.pending_len() <= 1001);
        }
        s.feed(b"\nnext\n", &mut |p| pieces.push(format!("{p:?}")));
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
