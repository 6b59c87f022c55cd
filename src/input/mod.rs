//! Where lines come from: the FIFO (or standard input), read without blocking and reopened
//! when its last writer hangs up ([`fifo`]); the splitter that turns its bytes into lines
//! ([`lines`]); and the lock that keeps a second daemon off the same FIFO ([`lock`]).
//!
//! Nothing here decides what happens to a line once it is split; that is the backlog's.

mod fifo;
pub mod lines;
pub mod lock;

pub use fifo::{Input, ReadOutcome};
