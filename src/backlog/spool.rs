//! The failed-attempts directory (the spool): lines that could not be delivered yet, on disk.
//!
//! One file per batch, named `fifo2kinesis-YYYYMMDDhhmmss-<seq>-<pid>` (UTC, so names sort by
//! time), holding the lines joined by `\n` — the Go tool's format, so files it left behind
//! (`fifo2kinesis-YYYYMMDDhhmmss-<random>`) are replayed too. Lines too long for a record go to
//! `oversized/`, one file per line. How far a file's replay got is kept beside it in
//! `<name>.progress` (a byte offset), so a file is never rewritten.
//!
//! Durability: every file is written under a `.tmp` name, created 0600 without following
//! symlinks, fsynced, linked into place without replacing anything, and the directory is
//! fsynced; so a file under its final name is complete. At start-up a leftover `.tmp` file (a
//! crash mid-write) is turned into a normal file holding its complete lines, then removed; a
//! file that cannot be read is renamed aside with `.bad` and reported, never deleted.
//!
//! Hostile contents: every entry is opened without following symlinks and without blocking
//! (`O_NOFOLLOW | O_NONBLOCK`), then checked with `fstat`; anything but a regular file (a FIFO,
//! a device, a directory) is skipped and reported, never read.
//!
//! Size: the spool holds at most `max_bytes`. Room is reserved before anything is written
//! ([`Spool::reserve`]), so the cap holds at every moment, also while an over-long line streams
//! in; a write that does not fit is refused ([`SpoolError::Full`]). Spooled data is never
//! deleted to make room.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write};
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

/// Suffix of the file that records how far a spool file's replay got.
pub const PROGRESS_SUFFIX: &str = ".progress";
/// Suffix of the part of an over-long line kept when the cap stopped it.
pub const PARTIAL_SUFFIX: &str = ".partial";

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
        let spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            used: AtomicU64::new(0),
        };
        spool.ensure_dirs()?;
        spool.recover()?;
        let journal = dir.join(super::journal::JOURNAL_DIR);
        let journal_bytes = if journal.is_dir() {
            dir_bytes(&journal)?
        } else {
            0
        };
        let used = dir_bytes(dir)? + dir_bytes(&dir.join(OVERSIZED_DIR))? + journal_bytes;
        spool.used.store(used, Ordering::Relaxed);
        Ok(spool)
    }

    /// Creates the directory and `oversized/` if they are missing (someone removed them).
    pub fn ensure_dirs(&self) -> io::Result<()> {
        prepare_dir(&self.dir)?;
        prepare_dir(&self.dir.join(OVERSIZED_DIR))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the spool holds (and has reserved for writes under way).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap, `--failed-attempts-max-bytes`.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Reserves room for as much of `bytes` as the cap allows; returns how much (0: full).
    pub fn reserve_up_to(&self, bytes: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                granted = bytes.min(self.max_bytes.saturating_sub(u));
                Some(u + granted)
            });
        granted
    }

    /// Reserves room for `bytes` more, if the cap allows: the only way the count grows.
    pub fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                u.checked_add(bytes).filter(|n| *n <= self.max_bytes)
            })
            .is_ok()
    }

    /// Counts `bytes` that move within the spool (a line moved from a spool file to
    /// `oversized/`): they are already held, so they need no room, and are released with the
    /// file they came from.
    pub(super) fn add_held(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Gives back reserved or freed room.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }

    /// Writes `batch`'s lines to a new file and returns its path.
    pub fn write_batch(&self, batch: &Batch) -> Result<PathBuf, SpoolError> {
        self.write_lines(batch.lines())
    }

    /// Writes lines to a new file (joined by `\n`) and returns its path. Room is reserved
    /// first and given back if the write fails.
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
        let n = content.len() as u64;
        if !self.reserve(n) {
            return Err(SpoolError::Full);
        }
        let written = NewFile::create(&self.dir).and_then(|mut f| {
            f.write(&content)?;
            f.commit()
        });
        written.map_err(|e| {
            self.release(n);
            SpoolError::Io(e)
        })
    }

    /// Starts a file in `oversized/` for one long line, written as it arrives. Each write
    /// reserves its room first ([`Spool::write_reserved`]).
    pub fn begin_oversized(&self) -> Result<NewFile, SpoolError> {
        Ok(NewFile::create(&self.dir.join(OVERSIZED_DIR))?)
    }

    /// Appends to a file of this spool, if the cap has room for the bytes.
    pub fn write_reserved(&self, file: &mut NewFile, bytes: &[u8]) -> Result<(), SpoolError> {
        let n = bytes.len() as u64;
        if !self.reserve(n) {
            return Err(SpoolError::Full);
        }
        file.write(bytes).map_err(|e| {
            self.release(n);
            SpoolError::Io(e)
        })
    }

    /// Appends bytes that move from a spool file into `file`: they are already counted in the
    /// spool, so they need no room, and are released with the file they came from.
    pub fn write_moved(&self, file: &mut NewFile, bytes: &[u8]) -> io::Result<()> {
        file.write(bytes)?;
        self.add_held(bytes.len() as u64);
        Ok(())
    }

    /// Finishes an oversized line's file.
    pub fn commit_oversized(&self, file: NewFile) -> Result<PathBuf, SpoolError> {
        let n = file.written;
        file.commit().map_err(|e| {
            self.release(n);
            SpoolError::Io(e)
        })
    }

    /// Keeps what an over-long line wrote before the cap stopped it, as `<name>.partial`.
    pub fn keep_partial(&self, file: NewFile) -> io::Result<PathBuf> {
        let path = file.dir.join(format!("{}{PARTIAL_SUFFIX}", file.name));
        let mut file = file;
        file.sync()?;
        fs::rename(&file.tmp, &path)?;
        file.committed = true;
        sync_dir(&file.dir)?;
        Ok(path)
    }

    /// Gives up an oversized line's file: it is removed and its room given back.
    pub fn abandon(&self, file: NewFile) {
        self.release(file.written);
        file.abandon();
    }

    /// Files waiting to be replayed, oldest first.
    pub fn pending_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_replayable_name(n))
            .collect();
        names.sort();
        Ok(names.into_iter().map(|n| self.dir.join(n)).collect())
    }

    /// Removes a file whose lines were all delivered, and its progress record.
    pub fn remove(&self, path: &Path) -> io::Result<()> {
        let size = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(path)?;
        self.release(size);
        match fs::remove_file(progress_path(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_dir(&self.dir)
    }

    /// Renames a file that cannot be read aside, with `.bad`.
    pub fn set_aside_unreadable(&self, path: &Path) -> io::Result<PathBuf> {
        let bad = PathBuf::from(format!("{}{BAD_SUFFIX}", path.display()));
        fs::rename(path, &bad)?;
        let _ = fs::remove_file(progress_path(path));
        Ok(bad)
    }

    /// How far the replay of `path` got: a byte offset at a line boundary (0 if unknown).
    pub fn progress(&self, path: &Path) -> u64 {
        read_progress(&progress_path(path)).unwrap_or(0)
    }

    /// Records that the lines of `path` before `offset` were delivered (atomically, fsynced).
    pub fn set_progress(&self, path: &Path, offset: u64) -> io::Result<()> {
        let target = progress_path(path);
        let mut f = NewFile::create(&self.dir)?;
        f.write(offset.to_string().as_bytes())?;
        f.sync()?;
        fs::rename(&f.tmp, &target)?;
        f.committed = true;
        sync_dir(&self.dir)
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
            let content = match open_regular(&path).and_then(|mut f| {
                let mut v = Vec::new();
                io::Read::read_to_end(&mut f, &mut v).map(|_| v)
            }) {
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
            let lines = recoverable_lines(&content);
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
                let aside = PathBuf::from(format!("{}{PARTIAL_SUFFIX}", path.display()));
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

/// Whether a name in the directory is a file to replay: ours or the Go tool's, not being
/// written, not set aside, not a progress record.
pub fn is_replayable_name(name: &str) -> bool {
    name.starts_with(FILE_PREFIX)
        && ![TMP_SUFFIX, BAD_SUFFIX, PROGRESS_SUFFIX, PARTIAL_SUFFIX]
            .iter()
            .any(|s| name.ends_with(s))
}

fn progress_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}{PROGRESS_SUFFIX}", path.display()))
}

fn read_progress(path: &Path) -> Option<u64> {
    let mut f = open_regular(path).ok()?;
    let mut text = String::new();
    io::Read::take(&mut f, 32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Opens a file for reading without following a symlink and without blocking (a FIFO put in
/// its place would otherwise hang the daemon), and refuses anything but a regular file.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
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

/// Forces a directory's entries to the disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
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
        b.push(b"one");
        b.push(b"two\0");
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
        spool.set_progress(&p1, 4).unwrap();
        assert_eq!(spool.progress(&p1), 4);
        assert_eq!(
            fs::metadata(progress_path(&p1))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            spool.pending_files().unwrap().len(),
            2,
            "progress is not replayed"
        );
        spool.remove(&p1).unwrap();
        assert!(!progress_path(&p1).exists(), "progress goes with its file");
        assert_eq!(spool.used(), 8);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cap_refuses_writes_and_keeps_what_is_there() {
        let dir = temp("cap");
        let spool = Spool::open(&dir, 10).unwrap();
        let mut b = Batch::new();
        b.push(b"123456");
        spool.write_batch(&b).unwrap();
        assert!(matches!(spool.write_batch(&b), Err(SpoolError::Full)));
        assert_eq!(spool.pending_files().unwrap().len(), 1);
        assert_eq!(spool.used(), 6, "a refused write reserves nothing");
        // Reopening counts what is on disk.
        assert_eq!(Spool::open(&dir, 10).unwrap().used(), 6);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cap_holds_while_a_long_line_streams_in() {
        let dir = temp("cap-long");
        let spool = Spool::open(&dir, 10).unwrap();
        let mut f = spool.begin_oversized().unwrap();
        spool.write_reserved(&mut f, b"abcdef").unwrap();
        assert!(matches!(
            spool.write_reserved(&mut f, b"ghijk"),
            Err(SpoolError::Full)
        ));
        assert_eq!(spool.used(), 6);
        let kept = spool.keep_partial(f).unwrap();
        assert!(kept.to_string_lossy().ends_with(PARTIAL_SUFFIX));
        assert_eq!(fs::read(&kept).unwrap(), b"abcdef");
        assert!(spool.pending_files().unwrap().is_empty());
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
        assert_eq!(fs::read(&files[1]).unwrap(), b"a\nb");
        assert!(!dir
            .join("fifo2kinesis-20200101000000-000001-1.tmp")
            .exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A FIFO (or a directory) where a spool file should be is never opened for reading as
    /// one: opening would block the daemon for good.
    #[test]
    fn only_regular_files_are_opened_and_never_blocking() {
        let dir = temp("fifo");
        prepare_dir(&dir).unwrap();
        let fifo = dir.join("fifo2kinesis-20200101000000-000001-1.tmp");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        assert!(fifo.exists(), "left in place, reported");
        let replayable = dir.join("fifo2kinesis-20200101000000-x");
        nix::unistd::mkfifo(&replayable, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = open_regular(&replayable).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        fs::create_dir(dir.join("fifo2kinesis-20200101000000-d")).unwrap();
        assert!(open_regular(&dir.join("fifo2kinesis-20200101000000-d")).is_err());
        drop(spool);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn oversized_lines_stream_into_their_own_files() {
        let dir = temp("oversized");
        let spool = Spool::open(&dir, 1 << 20).unwrap();
        let mut f = spool.begin_oversized().unwrap();
        spool.write_reserved(&mut f, b"abc").unwrap();
        spool.write_reserved(&mut f, b"def").unwrap();
        let p = spool.commit_oversized(f).unwrap();
        assert!(p.starts_with(dir.join(OVERSIZED_DIR)));
        assert_eq!(fs::read(&p).unwrap(), b"abcdef");
        assert_eq!(spool.used(), 6);
        assert!(
            spool.pending_files().unwrap().is_empty(),
            "oversized lines are not replayed"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
