//! The bytes of a checkpoint: a regular file read by position, or a buffer in memory.
//!
//! Files are never memory-mapped: a mapped file that another process truncates (a training
//! script re-saving its checkpoint) kills the reader with `SIGBUS` on the next access.
//! Positional reads (`pread`) into owned buffers instead turn a file that shrinks into an
//! ordinary error. Every read is checked against the length the file had when it was opened
//! before anything is allocated, and a short read is reported as the file having changed.
//!
//! Only regular files are read: a directory, a device (`/dev/zero`), a FIFO or a socket is
//! refused up front, before it is opened for reading (opening a FIFO would block, reading
//! `/dev/zero` would never end).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::Path;

use super::limits::{alloc_bytes, R};
use crate::error::{Error, Result};

/// The path reported for checkpoints parsed from memory.
pub(crate) const MEMORY: &str = "<memory>";

/// Where a checkpoint's bytes come from.
#[derive(Debug)]
pub(crate) struct Source {
    inner: Inner,
    /// The length when opened; every read must end within it.
    len: u64,
}

#[derive(Debug)]
enum Inner {
    File(File),
    Memory(Vec<u8>),
}

/// `O_NONBLOCK`, so that a file swapped for a FIFO between the check and the open cannot
/// block the open (regular files ignore the flag); 0 where its value is not known here.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NONBLOCK: i32 = if cfg!(any(
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "mips32r6"
)) {
    0x80
} else if cfg!(any(target_arch = "sparc", target_arch = "sparc64")) {
    0x4000
} else {
    0o4000
};
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
const NONBLOCK: i32 = 0x0004;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
#[allow(dead_code)]
const NONBLOCK: i32 = 0;

/// Refuses anything but a regular file, with a message that says what it is.
fn check_kind(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if meta.is_file() {
        return Ok(());
    }
    let what = if meta.is_dir() {
        "a folder, not a checkpoint file (name one of the weight files inside it)"
    } else {
        "not a regular file (a device, pipe or socket); refusing to read it as a checkpoint"
    };
    Err(Error::checkpoint(path, format!("this is {what}")))
}

fn open_file(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if NONBLOCK != 0 {
            opts.custom_flags(NONBLOCK);
        }
    }
    opts.open(path)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, at)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, at)
}

#[cfg(not(any(unix, windows)))]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = file;
    f.seek(SeekFrom::Start(at))?;
    f.read(buf)
}

impl Source {
    /// Opens the regular file at `path` (anything else is refused before it is read).
    pub(crate) fn open(path: &Path) -> Result<Source> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        check_kind(path, &meta)?;
        let file = open_file(path).map_err(|e| Error::io(path, e))?;
        // The path may have been replaced between the check and the open: check what was
        // opened.
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        check_kind(path, &meta)?;
        Ok(Source {
            inner: Inner::File(file),
            len: meta.len(),
        })
    }

    /// Bytes already in memory.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Source {
        Source {
            len: bytes.len() as u64,
            inner: Inner::Memory(bytes),
        }
    }

    /// The length when opened.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Fails unless `at..at + n` lies within the file.
    fn check(&self, at: u64, n: usize) -> R<u64> {
        let end = at.checked_add(n as u64).filter(|&e| e <= self.len).ok_or_else(|| {
            format!(
                "a record at byte {at} of {n} bytes runs past the end of the {}-byte file \
                 (truncated download?)",
                self.len
            )
        })?;
        Ok(end)
    }

    /// Fills `buf` from byte `at`; an error if the file is (or has become) too short.
    pub(crate) fn read_into(&self, at: u64, buf: &mut [u8]) -> R<()> {
        self.check(at, buf.len())?;
        match &self.inner {
            Inner::Memory(v) => {
                let start = usize::try_from(at).map_err(|_| "offset out of range".to_string())?;
                let src = v
                    .get(start..start + buf.len())
                    .ok_or("internal error: memory source bounds")?;
                buf.copy_from_slice(src);
                Ok(())
            }
            Inner::File(f) => {
                let mut done = 0usize;
                while done < buf.len() {
                    match read_at(f, &mut buf[done..], at + done as u64) {
                        Ok(0) => {
                            let now = f.metadata().map(|m| m.len().to_string()).unwrap_or_else(|_| "?".into());
                            return Err(format!(
                                "the file changed while it was being read: it was {} bytes when \
                                 opened and is {now} bytes now (is another process re-saving it?)",
                                self.len
                            ));
                        }
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("reading the file failed: {e}")),
                    }
                }
                Ok(())
            }
        }
    }

    /// The `n` bytes from byte `at`, in a new buffer.
    pub(crate) fn read(&self, at: u64, n: usize) -> R<Vec<u8>> {
        self.check(at, n)?;
        let mut buf = alloc_bytes(n)?;
        self.read_into(at, &mut buf)?;
        Ok(buf)
    }

    /// The bytes of `range`, in a new buffer.
    pub(crate) fn read_range(&self, range: Range<u64>) -> R<Vec<u8>> {
        let n = range
            .end
            .checked_sub(range.start)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or("internal error: bad byte range")?;
        self.read(range.start, n)
    }

    /// The first `n` bytes, or the whole file if it is shorter.
    pub(crate) fn head(&self, n: usize) -> R<Vec<u8>> {
        let n = n.min(usize::try_from(self.len).unwrap_or(usize::MAX));
        self.read(0, n)
    }

    /// A reader of `range` (for the inflater).
    pub(crate) fn reader(&self, range: Range<u64>) -> SourceReader<'_> {
        SourceReader {
            source: self,
            pos: range.start,
            end: range.end,
        }
    }
}

/// [`std::io::Read`] over a byte range of a [`Source`].
pub(crate) struct SourceReader<'s> {
    source: &'s Source,
    pos: u64,
    end: u64,
}

impl io::Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)).min(1 << 20);
        if n == 0 {
            return Ok(0);
        }
        self.source
            .read_into(self.pos, &mut buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::UnexpectedEof, e))?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn reads_are_bounded_and_positional() {
        let s = Source::from_bytes((0u8..100).collect());
        assert_eq!(s.read(10, 3).unwrap(), vec![10, 11, 12]);
        assert!(s.read(98, 3).unwrap_err().contains("runs past the end"));
        assert!(s.read(u64::MAX, 2).is_err());
        assert_eq!(s.head(1000).unwrap().len(), 100);
        let mut r = s.reader(95..100);
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        assert_eq!(v, vec![95, 96, 97, 98, 99]);
    }

    #[test]
    fn a_file_that_shrinks_is_an_error() {
        let dir = std::env::temp_dir().join(format!("boomerang-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("shrinks.bin");
        std::fs::write(&p, vec![7u8; 1 << 16]).unwrap();
        let s = Source::open(&p).unwrap();
        assert_eq!(s.read(0, 4).unwrap(), vec![7; 4]);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(100)
            .unwrap();
        let e = s.read(1000, 4000).unwrap_err();
        assert!(e.contains("changed while it was being read"), "{e}");
        assert!(e.contains("100 bytes now"), "{e}");
        let e = Source::open(&dir).unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
