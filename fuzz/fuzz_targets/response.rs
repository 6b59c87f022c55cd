//! The PutRecords answer readers on any bytes: no panic, and what they report is consistent —
//! failed indices ascending and inside the request, a classification for every error.
#![no_main]

use fifo2kinesis::kinesis::{classify, classify_record, parse_error, parse_put_records_output, sanitize_code};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&sent, rest)) = input.split_first() else { return };
    let sent = usize::from(sent);
    let (header, body) = rest.split_at(rest.len().min(usize::from(rest.first().copied().unwrap_or(0)) % 32));
    if let Ok(out) = parse_put_records_output(body, sent) {
        assert!(out.failed.len() <= sent);
        assert!(out.failed.windows(2).all(|w| w[0].index < w[1].index));
        assert!(out.failed.iter().all(|f| f.index < sent && !f.code.is_empty()));
        for f in &out.failed {
            let _ = classify_record(&f.code);
        }
    }
    let header = std::str::from_utf8(header).ok();
    for status in [400u16, 403, 413, 429, 500, 503] {
        let e = parse_error(status, header, body);
        assert!(!e.code.is_empty());
        assert!(!e.code.contains(':'), "sanitized: {:?}", e.code);
        assert!(!e.message.contains(['\n', '\r']), "one line");
        let _ = classify(&e);
    }
    if let Some(h) = header {
        // What is before the first ':', then after the first '#'.
        let before = h.split(':').next().unwrap_or("");
        let want = before.split_once('#').map_or(before, |(_, c)| c).trim();
        assert_eq!(sanitize_code(h), want);
    }
});
