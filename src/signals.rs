//! Signals as poll events: the handled signals are blocked in every thread and read from a
//! signalfd that the poll loop watches.
//!
//! [`block`] must run before any thread is spawned, so every thread inherits the mask and no
//! handled signal is delivered the default way (which would kill the process).

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals the daemon handles: stop (TERM, INT), reopen the FIFO (HUP), report (USR1).
pub const HANDLED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
];

/// Blocks the handled signals in the calling thread (and the threads it spawns later) and
/// returns a nonblocking signalfd that receives them.
pub fn block() -> nix::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// Reads every pending signal.
pub fn drain(fd: &SignalFd) -> Vec<Signal> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
            out.push(sig);
        }
    }
    out
}
