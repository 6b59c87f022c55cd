//! The `logger` flush handler: each line on standard output, one per line. It needs no AWS
//! account, so the daemon can be tried (and piped into other tools) without one.

use std::io::{self, Write};
use std::time::Instant;

use crate::batch::Batch;
use crate::sink::{ErrorKind, Failure, PutResult, Sink};

/// Writes each line to a writer (standard output).
pub struct LoggerSink<W: Write + Send> {
    out: W,
    buf: Vec<u8>,
}

impl LoggerSink<io::Stdout> {
    /// A sink writing to standard output.
    pub fn stdout() -> Self {
        LoggerSink::new(io::stdout())
    }
}

impl<W: Write + Send> LoggerSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        LoggerSink {
            out,
            buf: Vec::new(),
        }
    }
}

impl<W: Write + Send> Sink for LoggerSink<W> {
    fn put(&mut self, batch: &mut Batch, _deadline: Option<Instant>) -> PutResult {
        self.buf.clear();
        for data in batch.lines() {
            self.buf.extend_from_slice(data);
            self.buf.push(b'\n');
        }
        match self
            .out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush())
        {
            Ok(()) => PutResult::Accepted,
            Err(e) => PutResult::Failed(Failure {
                kind: ErrorKind::Permanent,
                code: "stdout".into(),
                message: format!("writing to standard output failed: {e}"),
                retry_after: None,
            }),
        }
    }

    fn describe(&self) -> String {
        "standard output".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_writes_one_record_per_line() {
        let mut b = Batch::new();
        b.push(b".flush");
        b.push(b"x\0y");
        let mut sink = LoggerSink::new(Vec::new());
        assert_eq!(sink.put(&mut b, None), PutResult::Accepted);
        assert_eq!(sink.out, b".flush\nx\0y\n");
    }
}
