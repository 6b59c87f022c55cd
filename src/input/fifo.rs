//! The input: a named pipe (created if missing) or standard input, read without blocking.
//!
//! A FIFO is opened read-only and nonblocking, so opening never waits for a writer. When the
//! last writer hangs up, reading returns end-of-file; the FIFO is then reopened, and the new
//! descriptor is opened *before* the old one is closed, so the pipe and anything a new writer
//! already put in it survive the swap. A freshly opened FIFO with no writer yet reads as
//! end-of-file too but reports no readiness, so an idle daemon sleeps in `poll` and uses no
//! CPU; such an end-of-file is not a hang-up ([`Input::read`] reports it as `WouldBlock`).
//!
//! The pipe's buffer is raised to [`PIPE_BYTES`] (the kernel's default limit for an
//! unprivileged process): writers that open the FIFO non-blocking (rsyslog's `ompipe`) are
//! refused with `EAGAIN` when it is full, and a larger buffer carries them through a restart of
//! the daemon or a slow moment. Writers that keep the FIFO open, as the syslog daemons do, keep
//! the buffer and what is in it while no daemon runs.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;

use crate::log;
use crate::options;

/// The input could not be opened.
#[derive(Debug)]
pub enum InputError {
    /// The path exists but is not a FIFO.
    NotFifo(PathBuf),
    /// Creating or opening failed.
    Io(PathBuf, io::Error),
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NotFifo(p) => write!(
                f,
                "--fifo-name: {} exists and is not a named pipe (FIFO)",
                p.display()
            ),
            InputError::Io(p, e) => write!(f, "--fifo-name: cannot open {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for InputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InputError::NotFifo(_) => None,
            InputError::Io(_, e) => Some(e),
        }
    }
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes.
    Data(usize),
    /// Nothing now; wait for readiness.
    WouldBlock,
    /// The last writer hung up (FIFO) or the input ended (standard input).
    Closed,
}

/// The daemon's input.
pub struct Input {
    path: Option<PathBuf>,
    file: File,
    /// Whether `poll` can watch it (a regular file on standard input cannot be).
    pollable: bool,
    /// Whether this descriptor has seen a writer (data or a hang-up), making end-of-file real.
    seen_writer: bool,
}

impl Input {
    /// Opens the configured input, creating a missing FIFO with mode 0600.
    pub fn open(input: &options::Input) -> Result<Input, InputError> {
        match input {
            options::Input::Stdin => {
                let err = |e| InputError::Io(PathBuf::from("-"), e);
                let fd = io::stdin().as_fd().try_clone_to_owned().map_err(err)?;
                set_nonblocking(&File::from(fd.try_clone().map_err(err)?)).map_err(err)?;
                Ok(Input {
                    path: None,
                    file: File::from(fd),
                    pollable: true,
                    seen_writer: true,
                })
            }
            options::Input::Fifo(path) => {
                ensure_fifo(path)?;
                let file = open_fifo(path)?;
                Ok(Input {
                    path: Some(path.clone()),
                    file,
                    pollable: true,
                    seen_writer: false,
                })
            }
        }
    }

    /// The FIFO's path, or `None` for standard input.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether `poll` watches the input; when not, the loop reads it whenever it wakes.
    pub fn pollable(&self) -> bool {
        self.pollable
    }

    /// Registers with the poll loop. Standard input that `poll` cannot watch (a regular file)
    /// is marked unpollable instead.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        match registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) && self.path.is_none() => {
                self.pollable = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<ReadOutcome> {
        loop {
            return match self.file.read(buf) {
                Ok(0) if self.seen_writer => Ok(ReadOutcome::Closed),
                Ok(0) => Ok(ReadOutcome::WouldBlock),
                Ok(n) => {
                    self.seen_writer = true;
                    Ok(ReadOutcome::Data(n))
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(ReadOutcome::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
        }
    }

    /// The descriptor, for moving its bytes with `splice(2)`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Notes that bytes were taken from the input other than by [`Input::read`].
    pub fn got_data(&mut self) {
        self.seen_writer = true;
    }

    /// What an end-of-file taken other than by [`Input::read`] means: a hang-up once a writer
    /// was seen, else no writer yet.
    pub fn end_of_input(&self) -> ReadOutcome {
        if self.seen_writer {
            ReadOutcome::Closed
        } else {
            ReadOutcome::WouldBlock
        }
    }

    /// Whether the path still names the pipe being read: false once it was removed, or
    /// replaced by another file (a new FIFO, a regular file, a symlink, a directory).
    pub fn path_is_current(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(path) = &self.path else {
            return true;
        };
        match (std::fs::metadata(path), self.file.metadata()) {
            (Ok(p), Ok(f)) => p.dev() == f.dev() && p.ino() == f.ino(),
            _ => false,
        }
    }

    /// Stops watching the current descriptor (its writers are gone and the path cannot be
    /// opened now); [`Input::reopen`] watches a new one.
    pub fn detach(&mut self, registry: &Registry) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        let _ = registry.deregister(&mut SourceFd(&fd));
    }

    /// Notes that `poll` reported the writer side closed.
    pub fn saw_hangup(&mut self) {
        self.seen_writer = true;
    }

    /// Opens the FIFO path afresh and swaps it in for the current descriptor, registering the
    /// new one under `token`. The old descriptor stays open until the new one is, so the pipe
    /// and its buffered data survive.
    pub fn reopen(&mut self, registry: &Registry, token: Token) -> Result<(), InputError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        ensure_fifo(&path)?;
        let new = open_fifo(&path)?;
        let old_fd = std::os::fd::AsRawFd::as_raw_fd(&self.file);
        let _ = registry.deregister(&mut SourceFd(&old_fd));
        self.file = new;
        self.seen_writer = false;
        self.register(registry, token)
            .map_err(|e| InputError::Io(path, e))
    }
}

fn set_nonblocking(f: &File) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(f, FcntlArg::F_GETFL)?);
    fcntl(f, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Makes sure `path` is a FIFO, creating it (mode 0600) if nothing is there.
fn ensure_fifo(path: &Path) -> Result<(), InputError> {
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(InputError::NotFifo(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR) {
                Ok(()) => {
                    log!(Info, "created named pipe {} (mode 0600)", path.display());
                    Ok(())
                }
                // Someone else created it meanwhile; check what it is.
                Err(nix::errno::Errno::EEXIST) => ensure_fifo(path),
                Err(e) => Err(InputError::Io(path.to_path_buf(), e.into())),
            }
        }
        Err(e) => Err(InputError::Io(path.to_path_buf(), e)),
    }
}

/// The pipe buffer the daemon asks for.
pub const PIPE_BYTES: i32 = 1024 * 1024;

/// Raises the FIFO's buffer to [`PIPE_BYTES`]; where the system allows less (a lower
/// `/proc/sys/fs/pipe-max-size`, or the user's pipe quota), the buffer stays as it is.
fn enlarge_pipe(file: &File) {
    match fcntl(file, FcntlArg::F_GETPIPE_SZ) {
        Ok(n) if n >= PIPE_BYTES => {}
        _ => {
            if let Err(e) = fcntl(file, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES)) {
                log!(
                    Debug,
                    "the FIFO keeps its buffer size: cannot raise it to {PIPE_BYTES} bytes ({e})"
                );
            }
        }
    }
}

fn open_fifo(path: &Path) -> Result<File, InputError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|e| InputError::Io(path.to_path_buf(), e))?;
    // The path may have been swapped between the check and the open.
    match file.metadata() {
        Ok(m) if m.file_type().is_fifo() => {
            enlarge_pipe(&file);
            Ok(file)
        }
        Ok(_) => Err(InputError::NotFifo(path.to_path_buf())),
        Err(e) => Err(InputError::Io(path.to_path_buf(), e)),
    }
}
