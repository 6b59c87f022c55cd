//! The spool file readers against the obvious definitions: a file's lines are its non-empty
//! `\n`-separated pieces, writing lines and reading them back gives them again, and a file cut
//! short yields only lines that were followed by a newline.
#![no_main]

use fifo2kinesis::spool::{recoverable_lines, split_lines};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|content: &[u8]| {
    let lines = split_lines(content);
    let naive: Vec<Vec<u8>> = content.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
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
});
