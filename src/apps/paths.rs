//! Where the applications read and write: relative paths built from path components, output
//! trees that are written without ever following a symbolic link, output plans checked for
//! collisions before anything is written, and the input/output separation every job checks.
//!
//! The guarantees, for every job ([`crate::apps::anonymize`], [`crate::apps::augment`],
//! [`crate::apps::sample`], [`crate::apps::enhance`]):
//!
//! - **Names are components.** A [`RelPath`] is a list of file-name components taken from
//!   [`Path::components`], kept as [`OsString`]s (non-UTF-8 names survive unchanged). It never
//!   holds `..`, a root or a prefix, and nothing re-splits its text: on Linux
//!   `sub\..\..\victim.png` is one legal file name and stays one (its output is a file of that
//!   name inside the output folder).
//! - **Outputs stay inside the output tree.** [`OutputTree`] joins a `RelPath` onto its root,
//!   refuses a path whose existing part holds a symbolic link (so the path cannot resolve
//!   outside the tree, or into the input), creates folders one component at a time without
//!   following links, and writes every file under a fresh temporary name (`O_EXCL`, which never
//!   follows a link) renamed into place (a rename replaces a name, it never writes through a
//!   link or a hard link).
//! - **No output is planned twice.** [`OutputPlan`] collects every output name of a job before
//!   anything is written and refuses the job when two of them are the same (`a.png` and `a.jpg`
//!   both giving `a_boom0.png`, a `t` given twice, ...).
//! - **Outputs never land in the input.** [`check_separate`] refuses an output folder inside an
//!   input folder or containing it, and [`collect_inputs`](crate::apps::dataset::collect_inputs) refuses input files inside the
//!   output folder; both compare paths with symbolic links resolved.
//!
//! What is not covered: another process that swaps a folder of the output tree for a symbolic
//! link *while* a job runs (between the check of a folder and the creation of a file in it).
//! Keep output trees writable by their owner only.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// The bytes of an OS string: exact on Unix; elsewhere its text (unpaired UTF-16 surrogates
/// replaced).
pub fn os_bytes(s: &OsStr) -> Cow<'_, [u8]> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Cow::Borrowed(s.as_bytes())
    }
    #[cfg(not(unix))]
    {
        match s.to_string_lossy() {
            Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
            Cow::Owned(t) => Cow::Owned(t.into_bytes()),
        }
    }
}

/// The OS string of some bytes ([`os_bytes`] read back): exact on Unix; elsewhere the bytes
/// are read as UTF-8 (invalid sequences replaced).
pub fn os_from_bytes(bytes: Vec<u8>) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        OsString::from_vec(bytes)
    }
    #[cfg(not(unix))]
    {
        OsString::from(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Text for messages: UTF-8 as is, every other byte as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A path relative to a dataset or output root, made of file-name components only: never
/// `..`, `.`, a root or a prefix, never empty. Built from [`Path::components`], so a separator
/// is whatever the platform splits on (`/` on Unix; `/` and `\` on Windows) and each component
/// is kept as an [`OsString`], non-UTF-8 bytes included.
///
/// Ordered, compared and hashed by its [`RelPath::joined`] bytes (components joined by `/`),
/// which for UTF-8 names is the `a/b/c.png` text.
///
/// ```
/// use boomerang::apps::paths::RelPath;
/// let p = RelPath::new("cats/./001.png")?;
/// assert_eq!(p.to_string(), "cats/001.png");
/// assert!(RelPath::new("cats/../../etc/passwd").is_err());
/// assert!(RelPath::new("/etc/passwd").is_err());
/// // On Unix a backslash is an ordinary character of a file name.
/// # #[cfg(unix)]
/// assert_eq!(RelPath::new("sub\\..\\..\\victim.png")?.len(), 1);
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RelPath {
    path: PathBuf,
    joined: Vec<u8>,
}

impl PartialEq for RelPath {
    fn eq(&self, other: &Self) -> bool {
        self.joined == other.joined
    }
}

impl Eq for RelPath {}

impl std::hash::Hash for RelPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.joined.hash(state);
    }
}

impl PartialOrd for RelPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RelPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.joined.cmp(&other.joined)
    }
}

impl AsRef<Path> for RelPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Display for RelPath {
    /// The components joined by `/`; bytes that are not UTF-8 appear as `\xNN` (for messages:
    /// use [`RelPath::joined`] or the components for the exact name).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape_bytes(&self.joined))
    }
}

impl RelPath {
    /// From a relative path: `.` components are dropped; `..`, a root, a prefix (`C:`) or no
    /// component at all are refused.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_os_string()),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(Error::InvalidInput(format!(
                        "{}: a relative path inside a folder cannot hold `..`",
                        path.display()
                    )))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(Error::InvalidInput(format!(
                        "{}: expected a path relative to a folder, got an absolute one",
                        path.display()
                    )))
                }
            }
        }
        Self::from_components(parts)
    }

    /// From file-name components, each of which must be one [`Component::Normal`] (no
    /// separator, not `.` or `..`, not empty).
    pub fn from_components<I, S>(parts: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut path = PathBuf::new();
        let mut joined = Vec::new();
        let mut n = 0;
        for part in parts {
            let part: OsString = part.into();
            check_component(&part)?;
            if n > 0 {
                joined.push(b'/');
            }
            joined.extend_from_slice(&os_bytes(&part));
            path.push(&part);
            n += 1;
        }
        if n == 0 {
            return Err(Error::InvalidInput("an empty relative path names no file".into()));
        }
        Ok(Self { path, joined })
    }

    /// The components joined by `/`, as bytes (exact on Unix, where no component holds `/`).
    /// This is what [`crate::apps::keys::path_key`] hashes.
    pub fn joined(&self) -> &[u8] {
        &self.joined
    }

    /// The path (for joining onto a root).
    pub fn as_path(&self) -> &Path {
        &self.path
    }

    /// The components.
    pub fn components(&self) -> impl Iterator<Item = &OsStr> {
        self.path.components().map(|c| c.as_os_str())
    }

    /// Number of components.
    pub fn len(&self) -> usize {
        self.path.components().count()
    }

    /// Always false (a `RelPath` has at least one component); for symmetry with [`Self::len`].
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The last component.
    pub fn file_name(&self) -> &OsStr {
        self.path.file_name().unwrap_or_default()
    }

    /// The folder part, if there is one.
    pub fn parent(&self) -> Option<RelPath> {
        let parts: Vec<&OsStr> = self.components().collect();
        (parts.len() > 1).then(|| Self::from_components(parts[..parts.len() - 1].iter().copied()).ok())?
    }

    /// The text of the path when every component is UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.joined).ok()
    }

    /// The same folder with another last component (a single file name).
    pub fn with_file_name(&self, name: impl Into<OsString>) -> Result<RelPath> {
        let mut parts: Vec<OsString> = self.components().map(OsStr::to_os_string).collect();
        parts.pop();
        parts.push(name.into());
        Self::from_components(parts)
    }

    /// The last component's stem (the name without its final extension) followed by `suffix`
    /// (`dir/a.jpg` with `"_t0.3_s0.png"` gives `dir/a_t0.3_s0.png`). Built from the
    /// component's bytes, so non-UTF-8 stems are kept.
    pub fn with_stem_suffix(&self, suffix: &str) -> Result<RelPath> {
        let file = Path::new(self.file_name());
        let stem = file.file_stem().unwrap_or_default();
        let mut name = stem.to_os_string();
        name.push(suffix);
        self.with_file_name(name)
    }

    /// The same path with its extension replaced (`a.jpg` -> `a.png`).
    pub fn with_extension(&self, ext: &str) -> Result<RelPath> {
        let file = Path::new(self.file_name()).with_extension(ext);
        self.with_file_name(file.into_os_string())
    }

    /// The form stored in manifests: the text (non-UTF-8 bytes as `\xNN`), and the exact bytes
    /// of [`Self::joined`] only when they are not UTF-8 (so reading back is lossless).
    pub fn to_manifest(&self) -> (String, Option<Vec<u8>>) {
        match self.to_str() {
            Some(s) => (s.to_string(), None),
            None => (self.to_string(), Some(self.joined.clone())),
        }
    }

    /// Read back [`Self::to_manifest`]: the bytes when present, else the text (whose `/` are
    /// separators).
    pub fn from_manifest(text: &str, bytes: Option<&[u8]>) -> Result<RelPath> {
        match bytes {
            Some(b) => Self::from_components(b.split(|&c| c == b'/').map(|p| os_from_bytes(p.to_vec()))),
            None => Self::from_components(text.split('/').map(OsString::from)),
        }
    }
}

fn check_component(part: &OsStr) -> Result<()> {
    let mut comps = Path::new(part).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(s)), None) if s == part => Ok(()),
        _ => Err(Error::InvalidInput(format!(
            "`{}` is not a single file name (it is empty, `.`, `..`, or holds a separator)",
            escape_bytes(&os_bytes(part))
        ))),
    }
}

/// `path` made absolute with `.`/`..` resolved and symbolic links followed as far as the
/// path exists (the rest, not yet created, is appended as written).
pub fn resolve_path(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Error::io(path, e))?.join(path)
    };
    let mut existing = abs.clone();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        if let Ok(canon) = existing.canonicalize() {
            let mut out = canon;
            for part in rest.iter().rev() {
                let p = Path::new(part);
                match p.components().next() {
                    Some(Component::ParentDir) => {
                        out.pop();
                    }
                    Some(Component::CurDir) | None => {}
                    _ => out.push(part),
                }
            }
            return Ok(out);
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => {
                // `..` at the end, or the root: let the OS report it.
                return Err(Error::InvalidInput(format!("cannot resolve {}", path.display())));
            }
        }
    }
}

/// Refuse an output folder that is the input folder, lies inside it, or contains it (then an
/// output path could land on an input file). Both are resolved through symbolic links.
pub fn check_separate(input: &Path, output: &Path) -> Result<()> {
    let i = resolve_path(input)?;
    let o = resolve_path(output)?;
    if o.starts_with(&i) {
        return Err(Error::InvalidInput(format!(
            "the output folder {} is inside the input folder {}; choose a folder outside it \
             (input files are never modified)",
            output.display(),
            input.display()
        )));
    }
    if i.starts_with(&o) {
        return Err(Error::InvalidInput(format!(
            "the input folder {} is inside the output folder {}; choose an output folder that \
             does not contain the input",
            input.display(),
            output.display()
        )));
    }
    Ok(())
}

/// The error for a FIFO, device, socket or folder given where an image file is read.
pub(crate) fn not_regular(path: &Path) -> Error {
    Error::InvalidInput(format!(
        "{} is not a regular file (a folder, FIFO, device or socket); only image files are read",
        path.display()
    ))
}

/// Every output name of a job, each with the input it comes from, checked for collisions
/// before anything is written.
#[derive(Debug, Default, Clone)]
pub struct OutputPlan {
    owners: HashMap<RelPath, String>,
    order: Vec<RelPath>,
}

impl OutputPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plan `output` for `owner` (a description, e.g. the input's name); a name planned
    /// already is an error that names both owners.
    pub fn add(&mut self, output: RelPath, owner: impl std::fmt::Display) -> Result<()> {
        let owner = owner.to_string();
        if let Some(prev) = self.owners.get(&output) {
            return Err(Error::InvalidInput(if *prev == owner {
                format!("{owner} would write {output} twice; nothing was written")
            } else {
                format!(
                    "{prev} and {owner} would both be written to {output}; rename one of them (nothing was written)"
                )
            }));
        }
        self.owners.insert(output.clone(), owner);
        self.order.push(output);
        Ok(())
    }

    /// Whether `output` is planned.
    pub fn contains(&self, output: &RelPath) -> bool {
        self.owners.contains_key(output)
    }

    /// The planned names, in the order they were added.
    pub fn outputs(&self) -> &[RelPath] {
        &self.order
    }

    /// Number of planned names.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is planned.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// What is at an output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputState {
    /// Nothing yet.
    Missing,
    /// A regular file.
    File,
}

/// An output folder that is written without following symbolic links; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTree {
    root: PathBuf,
}

impl OutputTree {
    /// The tree rooted at `root` (the root itself may be a symbolic link to a folder: it is
    /// the folder the caller named).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `root/rel`.
    pub fn path(&self, rel: &RelPath) -> PathBuf {
        self.root.join(rel)
    }

    /// Create the root folder (and its parents) if missing.
    pub fn create_root(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        if !self.root.is_dir() {
            return Err(Error::io(
                &self.root,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
            ));
        }
        Ok(())
    }

    /// What is at `root/rel` now, after checking every existing component of it: a symbolic
    /// link anywhere below the root is refused (it could lead outside the tree), so is a
    /// folder or special file where the output file goes. A regular file where a folder is
    /// needed is left for the write to report.
    pub fn state(&self, rel: &RelPath) -> Result<OutputState> {
        let mut at = self.root.clone();
        let n = rel.len();
        for (i, part) in rel.components().enumerate() {
            at.push(part);
            let meta = match std::fs::symlink_metadata(&at) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OutputState::Missing),
                // ENOTDIR: a file where a folder should be; the write reports it.
                Err(_) => return Ok(OutputState::Missing),
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                return Err(Error::InvalidInput(format!(
                    "{} is a symbolic link inside the output folder {}; outputs are never written through \
                     links (remove it or choose another output folder)",
                    at.display(),
                    self.root.display()
                )));
            }
            if i + 1 == n {
                return if ft.is_file() {
                    Ok(OutputState::File)
                } else {
                    Err(Error::InvalidInput(format!(
                        "{} exists and is not a regular file; an output image cannot replace it",
                        at.display()
                    )))
                };
            }
            if !ft.is_dir() {
                return Ok(OutputState::Missing);
            }
        }
        Ok(OutputState::Missing)
    }

    /// Create the folders of `rel` below the root, one component at a time, refusing any
    /// symbolic link on the way; returns `root/rel`.
    pub fn prepare(&self, rel: &RelPath) -> Result<PathBuf> {
        let mut at = self.root.clone();
        let parts: Vec<&OsStr> = rel.components().collect();
        for part in &parts[..parts.len() - 1] {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(Error::InvalidInput(format!(
                        "{} is a symbolic link inside the output folder {}; outputs are never written \
                         through links",
                        at.display(),
                        self.root.display()
                    )))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::io(
                        &at,
                        std::io::Error::new(
                            std::io::ErrorKind::NotADirectory,
                            "a file is in the way of an output folder",
                        ),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&at) {
                    Ok(()) => {}
                    // Made by a concurrent writer (a parallel item or shard): check it again.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let m = std::fs::symlink_metadata(&at).map_err(|e| Error::io(&at, e))?;
                        if !m.is_dir() {
                            return Err(Error::io(&at, e));
                        }
                    }
                    Err(e) => return Err(Error::io(&at, e)),
                },
                Err(e) => return Err(Error::io(&at, e)),
            }
        }
        Ok(self.root.join(rel))
    }

    /// Write `bytes` to `root/rel` atomically (temporary file, then rename), creating its
    /// folders; never follows a symbolic link.
    pub fn write(&self, rel: &RelPath, bytes: &[u8]) -> Result<()> {
        let path = self.prepare(rel)?;
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if m.file_type().is_symlink() || m.is_dir() {
                return Err(Error::InvalidInput(format!(
                    "{} is a symbolic link or a folder; an output image cannot replace it",
                    path.display()
                )));
            }
        }
        write_atomic(&path, bytes)
    }
}

/// `name.ext` -> `.name.ext.<pid>.tmp.ext` in the same folder (same file system, so the final
/// rename is atomic). The name is built from the file name's bytes.
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.tmp.", std::process::id()));
    name.push(path.extension().unwrap_or_default());
    path.with_file_name(name)
}

/// Write `bytes` to `path` through a fresh temporary file beside it (created with `O_EXCL`,
/// which never follows a link; a stale one of a killed run with the same process id is
/// removed first), then rename it over `path` (which replaces the name: a link or hard link
/// at `path` is replaced, never written through).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let open = || std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp);
    let mut file: File = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(|e| Error::io(&tmp, e))?;
            open().map_err(|e| Error::io(&tmp, e))?
        }
        Err(e) => return Err(Error::io(&tmp, e)),
    };
    let res = file.write_all(bytes).and_then(|_| file.flush());
    drop(file);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Open an append-only log (a manifest) in an output folder: refused when it is a symbolic
/// link, not a regular file, or has other hard links (appending would write through them);
/// the file opened is checked to be the one looked at.
pub(crate) fn open_log(path: &Path) -> Result<File> {
    let refuse = |why: &str| {
        Error::InvalidInput(format!(
            "{} {why}; a manifest is never written through links (remove it or choose another output folder)",
            path.display()
        ))
    };
    let before = match std::fs::symlink_metadata(path) {
        Ok(m) => {
            if m.file_type().is_symlink() {
                return Err(refuse("is a symbolic link"));
            }
            if !m.is_file() {
                return Err(refuse("is not a regular file"));
            }
            Some(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(path, e)),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let now = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        if now.file_type().is_symlink() || (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            return Err(refuse("changed while it was opened"));
        }
        if meta.nlink() > 1 {
            return Err(refuse("has other hard links"));
        }
        if let Some(b) = before {
            if (b.dev(), b.ino()) != (meta.dev(), meta.ino()) {
                return Err(refuse("changed while it was opened"));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = before;
    if !meta.is_file() {
        return Err(refuse("is not a regular file"));
    }
    Ok(file)
}

/// An append-only JSON-lines log in an output folder (a manifest), opened with
/// [`open_log`]'s checks; a line cut by a kill is closed with a newline first.
pub(crate) struct JsonLog {
    path: PathBuf,
    file: std::io::BufWriter<File>,
}

impl JsonLog {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = open_log(path)?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(|e| Error::io(path, e))?;
            file.read_exact(&mut last).map_err(|e| Error::io(path, e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(|e| Error::io(path, e))?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    pub(crate) fn append<T: serde::Serialize>(&mut self, entry: &T) -> Result<()> {
        let line = serde_json::to_string(entry)
            .map_err(|e| Error::InvalidInput(format!("cannot serialise a manifest line: {e}")))?;
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.write_all(b"\n"))
            .map_err(|e| Error::io(&self.path, e))
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// The longest line [`visit_lines`] reads (longer ones are skipped, like cut ones).
const MAX_LINE_BYTES: u64 = 1 << 20;

/// Call `visit` on every line (without its newline) of a log such as a manifest, streaming,
/// with lines longer than 1 MiB skipped. A missing file has no lines; a symbolic link or a
/// special file is refused (never read through).
pub(crate) fn visit_lines(path: &Path, visit: &mut dyn FnMut(&[u8])) -> Result<()> {
    use std::io::{BufRead, Read};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() || !m.is_file() => {
            return Err(Error::InvalidInput(format!(
                "{} is a symbolic link or not a regular file; manifests are never read or written through links",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    }
    let mut reader = std::io::BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(());
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if n as u64 > MAX_LINE_BYTES {
            // Too long: skip to the end of the line.
            loop {
                line.clear();
                let m = (&mut reader)
                    .take(MAX_LINE_BYTES)
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Error::io(path, e))?;
                if m == 0 || line.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        visit(&line);
    }
}

/// If `name` is a temporary file of [`write_atomic`] (`.NAME.PID.tmp.EXT`), the name of the
/// file it was to become.
pub(crate) fn temp_target(name: &OsStr) -> Option<OsString> {
    let bytes = os_bytes(name);
    let inner = bytes.strip_prefix(b".")?;
    let tmp = find_last(inner, b".tmp.")?;
    let before = &inner[..tmp];
    let dot = before.iter().rposition(|&b| b == b'.')?;
    let pid = &before[dot + 1..];
    if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let target = &before[..dot];
    (!target.is_empty()).then(|| os_from_bytes(target.to_vec()))
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    (0..=hay.len().checked_sub(needle.len())?)
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Open a regular file for reading; special files (FIFOs, devices, sockets, folders) are
/// refused before they are opened (opening a FIFO blocks, reading a device never ends), and
/// the file opened is checked again.
pub fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    if !file.metadata().map_err(|e| Error::io(path, e))?.is_file() {
        return Err(not_regular(path));
    }
    Ok(file)
}

/// Read a whole regular file that is at most `max_bytes` long (an input image, an output
/// to compare with); special files are refused before they are opened.
pub(crate) fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::InvalidInput(format!(
            "{} is larger than {max_bytes} bytes, the most read for one image",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_not_strings() {
        assert_eq!(RelPath::new("a/./b/c.png").unwrap().to_string(), "a/b/c.png");
        assert!(RelPath::new("a/../b").is_err());
        assert!(RelPath::new("").is_err());
        assert!(RelPath::new(".").is_err());
        assert!(RelPath::from_components(["a/b"]).is_err());
        assert!(RelPath::from_components([".."]).is_err());
        #[cfg(unix)]
        {
            let p = RelPath::new("sub\\..\\..\\victim.png").unwrap();
            assert_eq!(p.len(), 1);
            assert_eq!(
                p.with_stem_suffix("_up.png").unwrap().to_string(),
                "sub\\..\\..\\victim_up.png"
            );
        }
        let p = RelPath::new("d/a.jpg").unwrap();
        assert_eq!(p.with_stem_suffix("_boom0.png").unwrap().to_string(), "d/a_boom0.png");
        assert_eq!(p.with_extension("png").unwrap().to_string(), "d/a.png");
        assert_eq!(p.parent().unwrap().to_string(), "d");
        assert!(RelPath::new("a.png").unwrap().parent().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_names_round_trip_through_the_manifest_form() {
        let name = os_from_bytes(b"caf\xe9.png".to_vec());
        let p = RelPath::from_components([OsString::from("d"), name]).unwrap();
        let (text, bytes) = p.to_manifest();
        assert_eq!(text, "d/caf\\xe9.png");
        assert_eq!(bytes.as_deref(), Some(&b"d/caf\xe9.png"[..]));
        assert_eq!(RelPath::from_manifest(&text, bytes.as_deref()).unwrap(), p);
        let q = RelPath::new("d/x.png").unwrap();
        let (text, bytes) = q.to_manifest();
        assert!(bytes.is_none());
        assert_eq!(RelPath::from_manifest(&text, None).unwrap(), q);
    }

    #[test]
    fn temp_names() {
        let t = |s: &str| temp_target(OsStr::new(s)).map(|o| o.to_string_lossy().into_owned());
        assert_eq!(t(".a.png.123.tmp.png").as_deref(), Some("a.png"));
        assert_eq!(t(".a.b.jpg.9.tmp.jpg").as_deref(), Some("a.b.jpg"));
        assert_eq!(t("a.png"), None);
        assert_eq!(t(".a.png.x1.tmp.png"), None);
        let p = temp_path(Path::new("d/a.png"));
        assert_eq!(
            temp_target(p.file_name().unwrap()).as_deref(),
            Some(OsStr::new("a.png"))
        );
    }

    #[test]
    fn plans_refuse_collisions() {
        let mut plan = OutputPlan::new();
        plan.add(RelPath::new("a_boom0.png").unwrap(), "a.png").unwrap();
        let e = plan.add(RelPath::new("a_boom0.png").unwrap(), "a.jpg").unwrap_err();
        assert!(e.to_string().contains("a.png and a.jpg"), "{e}");
    }
}
