//! The daemon seen from outside as a process: a writer on its FIFO and its memory from /proc.
//! Free of test-only build variables, so the benchmark uses it too.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Opens the FIFO for writing once the daemon has it open for reading.
pub fn open_writer(fifo: &Path, timeout: Duration) -> File {
    let deadline = Instant::now() + timeout;
    loop {
        // Nonblocking open fails with ENXIO while no reader has the FIFO open.
        match OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(fifo)
        {
            Ok(f) => {
                // Writes should block when the pipe is full, as a normal writer's would.
                let flags = nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL).unwrap();
                let flags =
                    nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
                nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
                return f;
            }
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.raw_os_error(),
                        Some(nix::libc::ENXIO) | Some(nix::libc::ENOENT)
                    ) =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("cannot open {} for writing: {e}", fifo.display()),
        }
    }
}

/// Resident memory of process `pid` now, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory process `pid` has had, in KiB.
pub fn peak_rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: i32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        })
        .unwrap()
}
