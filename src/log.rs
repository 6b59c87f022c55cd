//! Logging without a logging crate: one line per event on standard error.
//!
//! Every line is `<UTC timestamp> <LEVEL> <message>`. The level is a process-wide atomic set
//! once at start-up (`--debug` turns debug lines on). Writing never panics: a failed write to
//! standard error is ignored, because a daemon must not die because nobody reads its log.
//!
//! Secrets never reach this module. Callers log names, counts, codes and messages returned by
//! the service, never credentials, tokens, signatures or `Authorization` values.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

use crate::clock::UtcDateTime;

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Something failed; data may be affected.
    Error = 0,
    /// Something unusual that the daemon handled.
    Warn = 1,
    /// Normal operation: start, stop, reopen.
    Info = 2,
    /// Detail for troubleshooting, shown with `--debug`.
    Debug = 3,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the most detailed level that is written.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether lines at `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Writes one log line if `level` is enabled. Use the [`log!`](crate::log!) macro instead.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let now = UtcDateTime::from_system(SystemTime::now());
    let mut line = Vec::with_capacity(128);
    let _ = write!(line, "{} {} ", now.rfc3339_millis(), level.word());
    let _ = line.write_fmt(args);
    // One line per event, whatever the message held.
    for b in line.iter_mut() {
        if *b == b'\n' || *b == b'\r' {
            *b = b' ';
        }
    }
    line.push(b'\n');
    let _ = std::io::stderr().lock().write_all(&line);
}

/// Writes one log line: `log!(Info, "reopened {}", path.display())`.
#[macro_export]
macro_rules! log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::write($crate::log::Level::$level, format_args!($($arg)+))
    };
}

/// Shortens untrusted text to one line of at most `max` characters for the log.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}
