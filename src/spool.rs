//! The failed-attempts directory (the spool): lines that could not be delivered yet, on disk.
//!
//! One file per batch, named `fifo2kinesis-YYYYMMDDhhmmss-<seq>-<pid>` (UTC, so names sort by
//! time), holding the lines joined by `\n` — the Go tool's format, so files it left behind
//! (`fifo2kinesis-YYYYMMDDhhmmss-<random>`) are replayed too. Lines too long for a record go to
//! `oversized/`, one file per line.
//!
//! Durability: every file is written under a `.tmp` name, created 0600 without following
//! symlinks, fsynced, linked into place without replacing anything, and the directory is
//! fsynced; so a file under its final name is complete. At start-up a leftover `.tmp` file (a
//! crash mid-write) is turned into a normal file holding its complete lines, then removed; a
//! file that cannot be read is renamed aside with `.bad` and reported, never deleted.
//!
//! Size: the spool holds at most `max_bytes`; a write that would pass it is refused
//! ([`SpoolError::Full`]) — spooled data is never deleted to make room.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nix::fcntl::OFlag;

use crate::batch::Batch;
use crate::clock::UtcDateTime;
use crate::log;

/// Prefix of every spool file name.
pub const FILE_PREFIX: &str = "fifo2kinesis-";
/// Suffix of a file still being written.
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix given to a file that could not be read.
pub const BAD_SUFFIX: &str = ".bad";
/// The subdirectory for lines too long for a record.
pub const OVERSIZED_DIR: &str = "oversized";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A write was refused.
#[derive(Debug)]
pub enum SpoolError {
    /// The spool would pass `--failed-attempts-max-bytes`.
    Full,
    /// The file system failed.
    Io(io::Error),
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpoolError::Full => {
                f.write_str("the failed-attempts directory is full (--failed-attempts-max-bytes)")
            }
            SpoolError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SpoolError {}

impl From<io::Error> for SpoolError {
    fn from(e: io::Error) -> Self {
        SpoolError::Io(e)
    }
}

/// The failed-attempts directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
}

impl Spool {
    /// Opens `dir` (created 0700 with `oversized/` if missing), recovers leftover temporary
    /// files, and counts what it holds.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        prepare_dir(dir)?;
        prepare_dir(&dir.join(OVERSIZED_DIR))?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            used: AtomicU64::new(0),
        };
        spool.recover()?;
        let used = dir_bytes(dir)? + dir_bytes(&dir.join(OVERSIZED_DIR))?;
        spool.used.store(used, Ordering::Relaxed);
        Ok(spool)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the spool holds.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Whether `bytes` more would pass the cap.
    pub fn would_overflow(&self, bytes: u64) -> bool {
        self.used() + bytes > self.max_bytes
    }

    /// Writes `batch`'s lines to a new file and returns its path.
    pub fn write_batch(&self, batch: &Batch) -> Result<PathBuf, SpoolError> {
        self.write_lines(batch.records().map(|(d, _)| d))
    }

    /// Writes lines to a new file (joined by `\n`) and returns its path.
    pub fn write_lines<'a>(
        &self,
        lines: impl Iterator<Item = &'a [u8]>,
    ) -> Result<PathBuf, SpoolError> {
        let mut content = Vec::new();
        for (i, l) in lines.enumerate() {
            if i > 0 {
                content.push(b'\n');
            }
            content.extend_from_slice(l);
        }
        if self.would_overflow(content.len() as u64) {
            return Err(SpoolError::Full);
        }
        let mut f = NewFile::create(&self.dir)?;
        f.write(&content)?;
        let path = f.commit()?;
        self.used.fetch_add(content.len() as u64, Ordering::Relaxed);
        Ok(path)
    }

    /// Starts a file in `oversized/` for one long line, written as it arrives.
    pub fn begin_oversized(&self) -> Result<NewFile, SpoolError> {
        Ok(NewFile::create(&self.dir.join(OVERSIZED_DIR))?)
    }

    /// Finishes an oversized line's file, unless it would pass the cap (then it is removed).
    pub fn commit_oversized(&self, file: NewFile) -> Result<PathBuf, SpoolError> {
        if self.would_overflow(file.written) {
            file.abandon();
            return Err(SpoolError::Full);
        }
        let n = file.written;
        let path = file.commit()?;
        self.used.fetch_add(n, Ordering::Relaxed);
        Ok(path)
    }

    /// Files waiting to be replayed, oldest first.
    pub fn pending_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                n.starts_with(FILE_PREFIX) && !n.ends_with(TMP_SUFFIX) && !n.ends_with(BAD_SUFFIX)
            })
            .collect();
        names.sort();
        Ok(names.into_iter().map(|n| self.dir.join(n)).collect())
    }

    /// The lines of a spool file (empty ones skipped). A file that cannot be read is renamed
    /// aside with `.bad`, and `Ok(None)` is returned.
    pub fn read(&self, path: &Path) -> io::Result<Option<Vec<Vec<u8>>>> {
        match read_nofollow(path) {
            Ok(content) => Ok(Some(split_lines(&content))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                let bad = PathBuf::from(format!("{}{BAD_SUFFIX}", path.display()));
                log!(
                    Error,
                    "cannot read failed-attempts file {}: {e}; renamed it to {}",
                    path.display(),
                    bad.display()
                );
                fs::rename(path, &bad)?;
                Ok(None)
            }
        }
    }

    /// Removes a file whose lines were all delivered.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        let size = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(path)?;
        self.used
            .fetch_sub(size.min(self.used()), Ordering::Relaxed);
        sync_dir(&self.dir)
    }

    /// Replaces a file's content with the lines not yet delivered (atomically).
    pub fn rewrite(&self, path: &Path, lines: &[Vec<u8>]) -> io::Result<()> {
        let old = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
        let content = lines.join(&b'\n');
        let mut f = NewFile::create(&self.dir)?;
        f.write(&content)?;
        f.sync()?;
        fs::rename(&f.tmp, path)?;
        f.committed = true;
        sync_dir(&self.dir)?;
        self.used.fetch_sub(old.min(self.used()), Ordering::Relaxed);
        self.used.fetch_add(content.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Turns leftover `.tmp` files into normal files holding their complete lines.
    fn recover(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !(name.starts_with(FILE_PREFIX) && name.ends_with(TMP_SUFFIX)) {
                continue;
            }
            let path = entry.path();
            let content = match read_nofollow(&path) {
                Ok(c) => c,
                Err(e) => {
                    log!(
                        Error,
                        "cannot read leftover temporary file {}: {e}; left in place",
                        path.display()
                    );
                    continue;
                }
            };
            // Only lines known to be complete: those followed by a newline.
            let complete = content
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(&content[..0], |i| &content[..i]);
            let lines = split_lines(complete);
            if !lines.is_empty() {
                let mut f = NewFile::create(&self.dir)?;
                f.write(&lines.join(&b'\n'))?;
                let saved = f.commit()?;
                log!(
                    Info,
                    "recovered {} lines from {} into {}",
                    lines.len(),
                    path.display(),
                    saved.display()
                );
            }
            fs::remove_file(&path)?;
        }
        // A partial oversized line cannot be replayed; keep it for the operator.
        let oversized = self.dir.join(OVERSIZED_DIR);
        for entry in fs::read_dir(&oversized)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                let aside = PathBuf::from(format!("{}.partial", path.display()));
                log!(
                    Warn,
                    "an oversized line was cut short by a crash: kept as {}",
                    aside.display()
                );
                fs::rename(&path, &aside)?;
            }
        }
        sync_dir(&self.dir)
    }
}

/// The lines of a file cut short by a crash that are known to be complete: those followed by a
/// newline (empty ones skipped).
pub fn recoverable_lines(content: &[u8]) -> Vec<Vec<u8>> {
    let complete = content
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&content[..0], |i| &content[..i]);
    split_lines(complete)
}

/// Splits spool content into its non-empty lines.
pub fn split_lines(content: &[u8]) -> Vec<Vec<u8>> {
    content
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// A file being written under a temporary name in a spool directory.
#[derive(Debug)]
pub struct NewFile {
    dir: PathBuf,
    name: String,
    tmp: PathBuf,
    file: Option<File>,
    written: u64,
    committed: bool,
}

impl NewFile {
    fn create(dir: &Path) -> io::Result<NewFile> {
        let stamp = UtcDateTime::from_system(SystemTime::now()).compact();
        loop {
            let seq = SEQ.fetch_add(1, Ordering::Relaxed);
            let name = format!("{FILE_PREFIX}{stamp}-{seq:06}-{}", std::process::id());
            let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&tmp)
            {
                Ok(file) => {
                    return Ok(NewFile {
                        dir: dir.to_path_buf(),
                        name,
                        tmp,
                        file: Some(file),
                        written: 0,
                        committed: false,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file
            .as_mut()
            .expect("open until committed")
            .write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.take().expect("open until committed").sync_all()
    }

    /// Makes the file durable and visible under its final name.
    fn commit(mut self) -> io::Result<PathBuf> {
        self.sync()?;
        let mut name = self.name.clone();
        loop {
            let path = self.dir.join(&name);
            // A hard link never replaces an existing file, unlike rename.
            match fs::hard_link(&self.tmp, &path) {
                Ok(()) => {
                    fs::remove_file(&self.tmp)?;
                    self.committed = true;
                    sync_dir(&self.dir)?;
                    return Ok(path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    name = format!("{}-{}", self.name, SEQ.fetch_add(1, Ordering::Relaxed));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives up on the file and removes it.
    pub fn abandon(mut self) {
        self.file = None;
        let _ = fs::remove_file(&self.tmp);
        self.committed = true;
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

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

fn read_nofollow(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)?;
    let mut v = Vec::new();
    io::Read::read_to_end(&mut f, &mut v)?;
    Ok(v)
}

fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let m = e?.metadata()?;
        if m.is_file() {
            total += m.len();
        }
    }
    Ok(total)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("f2k-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn files_are_0600_complete_and_sort_by_time() {
        let dir = temp("write");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let mut b = Batch::new();
        b.push(b"one", b"k");
        b.push(b"two\0", b"k");
        let p1 = spool.write_batch(&b).unwrap();
        let p2 = spool.write_batch(&b).unwrap();
        assert!(p1 < p2, "names sort in write order");
        assert_eq!(fs::read(&p1).unwrap(), b"one\ntwo\0");
        assert_eq!(
            fs::metadata(&p1).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(spool.pending_files().unwrap(), vec![p1.clone(), p2]);
        assert_eq!(spool.used(), 16);
        assert_eq!(
            spool.read(&p1).unwrap(),
            Some(vec![b"one".to_vec(), b"two\0".to_vec()])
        );
        spool.rewrite(&p1, &[b"two\0".to_vec()]).unwrap();
        assert_eq!(fs::read(&p1).unwrap(), b"two\0");
        assert_eq!(
            fs::metadata(&p1).unwrap().permissions().mode() & 0o777,
            0o600
        );
        spool.remove(&p1).unwrap();
        assert_eq!(spool.used(), 8);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cap_refuses_writes_and_keeps_what_is_there() {
        let dir = temp("cap");
        let spool = Spool::open(&dir, 10).unwrap();
        let mut b = Batch::new();
        b.push(b"123456", b"");
        spool.write_batch(&b).unwrap();
        assert!(matches!(spool.write_batch(&b), Err(SpoolError::Full)));
        assert_eq!(spool.pending_files().unwrap().len(), 1);
        // Reopening counts what is on disk.
        assert_eq!(Spool::open(&dir, 10).unwrap().used(), 6);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leftovers_are_recovered_and_go_tool_files_are_replayed() {
        let dir = temp("recover");
        prepare_dir(&dir).unwrap();
        fs::write(
            dir.join("fifo2kinesis-20200101000000-000001-1.tmp"),
            b"a\nb\nparti",
        )
        .unwrap();
        fs::write(
            dir.join("fifo2kinesis-20190101000000-Ab3dEf9h"),
            b"go 1\ngo 2",
        )
        .unwrap();
        fs::write(dir.join("unrelated.txt"), b"x").unwrap();
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let files = spool.pending_files().unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(
            files[0].ends_with("fifo2kinesis-20190101000000-Ab3dEf9h"),
            "oldest first"
        );
        assert_eq!(
            spool.read(&files[0]).unwrap().unwrap(),
            vec![b"go 1".to_vec(), b"go 2".to_vec()]
        );
        assert_eq!(
            spool.read(&files[1]).unwrap().unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(!dir
            .join("fifo2kinesis-20200101000000-000001-1.tmp")
            .exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unreadable_files_are_renamed_aside() {
        let dir = temp("bad");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        // A directory where a file should be cannot be read as one.
        let bogus = dir.join("fifo2kinesis-20200101000000-x");
        fs::create_dir(&bogus).unwrap();
        assert_eq!(spool.read(&bogus).unwrap(), None);
        assert!(dir.join("fifo2kinesis-20200101000000-x.bad").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn oversized_lines_stream_into_their_own_files() {
        let dir = temp("oversized");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let mut f = spool.begin_oversized().unwrap();
        f.write(b"abc").unwrap();
        f.write(b"def").unwrap();
        let p = spool.commit_oversized(f).unwrap();
        assert!(p.starts_with(dir.join(OVERSIZED_DIR)));
        assert_eq!(fs::read(&p).unwrap(), b"abcdef");
        assert!(
            spool.pending_files().unwrap().is_empty(),
            "oversized lines are not replayed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
