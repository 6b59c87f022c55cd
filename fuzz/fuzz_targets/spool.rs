//! The spool file readers against the obvious definitions: a file's lines are its non-empty
//! `\n`-separated pieces, writing lines and reading them back gives them again, a file cut
//! short yields only lines that were followed by a newline, and the streaming replay reader
//! gives the same lines in any read size, passing lines over its limit on in pieces, with
//! offsets that end lines. Leading bytes choose the read size, the reader's buffer chunk and
//! the line limit. The same bytes as the journal's state slot are never trusted unless well
//! formed.
#![no_main]

use std::io::{self, Read};

use fifo2kinesis::parsers::{parse_state_slot, recoverable_lines, split_lines};
use fifo2kinesis::parsers::{FileLines, Item};
use libfuzzer_sys::fuzz_target;

struct Trickle<'a>(&'a [u8], usize);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&[chunk, buffer, limit], content)) = input.split_first_chunk::<3>() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let buffer = usize::from(buffer).max(1);
    let max_line = usize::from(limit).max(1);
    let lines = split_lines(content);
    let naive: Vec<Vec<u8>> = content
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(lines, naive);
    assert!(lines.iter().all(|l| !l.is_empty() && !l.contains(&b'\n')));
    // The write format (lines joined by '\n') reads back as the same lines.
    assert_eq!(split_lines(&lines.join(&b'\n')), lines);
    // Recovery keeps exactly the lines before the last newline.
    let recovered = recoverable_lines(content);
    let cut = content.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    assert_eq!(recovered, split_lines(&content[..cut]));
    assert!(recovered.len() <= lines.len());
    assert_eq!(&lines[..recovered.len()], &recovered[..]);

    // The streaming reader: every line, in order, short ones whole and long ones in pieces.
    let mut reader = FileLines::with_chunk(Trickle(content, chunk), 0, max_line, buffer);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut long: Option<Vec<u8>> = None;
    loop {
        match reader.next_if(usize::MAX).unwrap().unwrap() {
            Item::Line { line, end } => {
                assert!(long.is_none());
                assert!(line.len() <= max_line);
                let end = end as usize;
                assert!(
                    end == content.len() || content[end - 1] == b'\n',
                    "offsets end lines"
                );
                got.push(line.to_vec());
            }
            Item::LongPiece(p) => long.get_or_insert_with(Vec::new).extend_from_slice(p),
            Item::LongEnd { len, end } => {
                let l = long.take().unwrap();
                assert_eq!(l.len() as u64, len);
                assert!(l.len() > max_line);
                let end = end as usize;
                assert!(end == content.len() || content[end - 1] == b'\n');
                got.push(l);
            }
            Item::End => break,
        }
    }
    assert_eq!(got, naive);

    // The journal's state file is a file in the directory too: what the parser accepts has its
    // done ranges sorted, apart, and above the watermark.
    if let Some(state) = parse_state_slot(input) {
        let mut last = state.watermark;
        for (a, b) in state.done {
            assert!(a > last && b > a, "{a}..{b} after {last}");
            last = b;
        }
    }
});
