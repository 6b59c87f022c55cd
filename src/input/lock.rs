//! One daemon per FIFO and per failed-attempts directory: an exclusive `flock(2)` on a lock
//! file, held for the whole run.
//!
//! Two daemons on one FIFO would split its lines between them, and two on one failed-attempts
//! directory would race to replay and remove the same files; the second to start is refused.
//! The lock is on a file of its own, not on the FIFO: a flock belongs to an open file, and the
//! daemon closes and reopens its FIFO (the last writer left, SIGHUP, the FIFO was replaced by a
//! new one at the same path), which would drop a lock taken on it. The lock file holds the pid
//! of its holder, for the refusal message. The kernel releases a flock when its holder dies, so
//! a lock file left by a killed daemon does not stop the next one; it is never removed, as
//! removing it could let a third daemon lock a new file while the second holds the old one.
//! A lock file that cannot be created for want of permission is the caller's to judge
//! ([`LockError::is_not_permitted`]): a FIFO made beforehand in a directory the daemon may not
//! write to, or a read-only failed-attempts directory, is used unguarded, as before.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

/// The lock file kept in the failed-attempts directory. Spool files start with
/// `fifo2kinesis-`, so it is never replayed.
pub const DIR_LOCK_NAME: &str = ".lock";

/// The lock file beside a FIFO at `fifo`: `<fifo>.lock`.
pub fn fifo_lock_path(fifo: &Path) -> PathBuf {
    let mut name = fifo.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A held lock; it is released when this is dropped or the process dies.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
}

/// The lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid as it wrote it, if it has yet.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Held {
                path,
                pid: Some(pid),
            } => write!(
                f,
                "{} is locked by another fifo2kinesis (pid {pid})",
                path.display()
            ),
            LockError::Held { path, pid: None } => write!(
                f,
                "{} is locked by another fifo2kinesis (pid not written yet)",
                path.display()
            ),
            LockError::Io { path, source } => {
                write!(f, "cannot lock {}: {source}", path.display())
            }
        }
    }
}

impl LockError {
    /// Whether the lock file could not be created for want of permission (a directory this
    /// user may not write to, a read-only file system).
    pub fn is_not_permitted(&self) -> bool {
        match self {
            LockError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ),
            LockError::Held { .. } => false,
        }
    }
}

impl std::error::Error for LockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LockError::Held { .. } => None,
            LockError::Io { source, .. } => Some(source),
        }
    }
}

/// Takes the lock at `path` without waiting: creates the file (0600, not through a symlink)
/// if missing, locks it, and writes this process's pid into it.
pub fn acquire(path: &Path) -> Result<Lock, LockError> {
    let io_err = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(io_err)?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            return Err(LockError::Held {
                path: path.to_path_buf(),
                pid: read_pid(&mut file),
            })
        }
        Err((_, errno)) => return Err(io_err(errno.into())),
    };
    write_pid(&mut file, std::process::id()).map_err(io_err)?;
    Ok(Lock { _file: file })
}

fn write_pid(file: &mut File, pid: u32) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{pid}")
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("f2k-lock-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = temp("twice");
        let path = dir.join(DIR_LOCK_NAME);
        fs::write(&path, "999999\n").unwrap(); // left by a process that died
        let first = acquire(&path).unwrap();
        let me = std::process::id();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        match acquire(&path) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(me)),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        acquire(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_fifo_lock_sits_beside_the_fifo() {
        assert_eq!(
            fifo_lock_path(Path::new("/run/f2k/in.pipe")),
            Path::new("/run/f2k/in.pipe.lock")
        );
    }
}
