//! The failed-attempts directory: lines that could not be delivered, kept on disk.
//!
//! One file per batch, named `fifo2kinesis-YYYYMMDDhhmmss-<seq>` (UTC, so names sort by
//! time), holding the batch's lines joined by `\n` — the Go tool's format. Every file is
//! written under a temporary `.tmp` name, created 0600 without following symlinks, fsynced,
//! linked into place without replacing anything, and the directory is fsynced, so a file that
//! exists under its final name is complete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::batch::Batch;
use crate::clock::UtcDateTime;

/// Prefix of every failed-attempt file name.
pub const FILE_PREFIX: &str = "fifo2kinesis-";
/// Suffix of a file still being written.
pub const TMP_SUFFIX: &str = ".tmp";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Makes sure `dir` exists (creating it 0700) and is a directory.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// Writes `batch`'s lines to a new file in `dir` and returns its path.
pub fn write_batch(dir: &Path, batch: &Batch) -> io::Result<PathBuf> {
    write_file(dir, &batch.joined_lines())
}

/// Writes `content` atomically and durably to a new failed-attempt file in `dir`.
pub fn write_file(dir: &Path, content: &[u8]) -> io::Result<PathBuf> {
    let stamp = UtcDateTime::from_system(SystemTime::now()).compact();
    loop {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{FILE_PREFIX}{stamp}-{:06}-{}", seq, std::process::id());
        let final_path = dir.join(&name);
        let tmp_path = dir.join(format!("{name}{TMP_SUFFIX}"));
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_flags())
            .open(&tmp_path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let written = f.write_all(content).and_then(|()| f.sync_all());
        drop(f);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp_path);
            return Err(e);
        }
        // A hard link never replaces an existing file, unlike rename.
        let linked = fs::hard_link(&tmp_path, &final_path);
        let _ = fs::remove_file(&tmp_path);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        File::open(dir)?.sync_all()?;
        return Ok(final_path);
    }
}

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_0600_complete_and_sort_by_time() {
        let dir = std::env::temp_dir().join(format!("f2k-spool-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        prepare_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut b = Batch::new();
        b.push(b"one", b"k");
        b.push(b"two\0", b"k");
        let p1 = write_batch(&dir, &b).unwrap();
        let p2 = write_batch(&dir, &b).unwrap();
        assert_ne!(p1, p2);
        assert!(p1
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(FILE_PREFIX));
        assert_eq!(fs::read(&p1).unwrap(), b"one\ntwo\0");
        assert_eq!(
            fs::metadata(&p1).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
