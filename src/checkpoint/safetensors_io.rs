//! Reading and writing safetensors files.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON mapping each tensor
//! name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the data
//! that follows the header, plus an optional `"__metadata__"` map of strings), then the raw
//! little-endian tensor bytes.
//!
//! Validation follows the reference implementation (huggingface `safetensors`): the header
//! is at most 100 000 000 bytes and starts with `{`; each tensor's offsets span exactly its
//! shape's bytes; and the tensors' regions, in offset order, tile the data exactly: no
//! overlaps, no gaps, ending at the end of the file. Names must be unique.

use std::collections::HashSet;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::format::MAX_SAFETENSORS_HEADER;
use super::limits::{MAX_DIMS, R};
use super::parsed::{Mode, Parsed};
use super::source::Source;
use super::tensor::{checked_numel, DType, StateDict};
use super::text::printable;
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct Info {
    dtype: String,
    shape: Shape,
    data_offsets: (u64, u64),
}

/// A shape of at most [`MAX_DIMS`] dimensions (refused while parsing, before a longer one is
/// stored).
struct Shape(Vec<u64>);

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of dimensions")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Shape, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<u64>()? {
                    if v.len() == MAX_DIMS {
                        return Err(de::Error::custom(format!(
                            "a shape has more than {MAX_DIMS} dimensions"
                        )));
                    }
                    v.push(x);
                }
                Ok(Shape(v))
            }
        }
        d.deserialize_seq(V)
    }
}

/// The header's tensor entries in file order, `__metadata__` skipped, duplicate names refused.
struct Header(Vec<(String, Info)>);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Header;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of tensor entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Header, A::Error> {
                let mut out = Vec::new();
                let mut seen = HashSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    if name == "__metadata__" {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    if !seen.insert(name.clone()) {
                        return Err(de::Error::custom(format!(
                            "the header names tensor `{}` twice",
                            printable(&name)
                        )));
                    }
                    let info: Info = map.next_value().map_err(|e| {
                        de::Error::custom(format!("safetensors entry `{}` is malformed: {e}", printable(&name)))
                    })?;
                    out.push((name, info));
                }
                Ok(Header(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses a safetensors file; tensors are ordered by where their data lies in the file (the
/// order they were written in). [`Mode::Inspect`] reads and checks the header alone;
/// [`Mode::Load`] also requires the data to end where the file does.
pub(crate) fn parse(source: Source, mode: Mode) -> R<Parsed> {
    let head = source
        .read(0, 8)
        .map_err(|_| "safetensors file shorter than its 8-byte header length".to_string())?;
    let n = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    if n > MAX_SAFETENSORS_HEADER {
        return Err(format!(
            "safetensors header of {n} bytes is larger than the {MAX_SAFETENSORS_HEADER}-byte limit"
        ));
    }
    let data_start = 8 + n;
    if data_start > source.len() {
        return Err(format!(
            "the {n}-byte safetensors header runs past the end of the {}-byte file (truncated download?)",
            source.len()
        ));
    }
    let header = source.read(8, n as usize)?;
    let header = std::str::from_utf8(&header).map_err(|_| "the safetensors header is not UTF-8")?;
    if !header.starts_with('{') {
        return Err("the safetensors header does not start with `{`".into());
    }
    let Header(map) = serde_json::from_str(header)
        .map_err(|e| format!("the safetensors header is not valid: {}", printable(&e.to_string())))?;
    let mut entries = Vec::with_capacity(map.len());
    for (name, info) in map {
        let shown = printable(&name).into_owned();
        let dtype = DType::from_safetensors_name(&info.dtype).ok_or_else(|| {
            format!(
                "tensor `{shown}` has dtype {} which this crate does not support (supported: F64, \
                 F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)",
                printable(&info.dtype)
            )
        })?;
        let shape: Vec<usize> = info
            .shape
            .0
            .iter()
            .map(|&x| usize::try_from(x))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| format!("tensor `{shown}` has an impossibly large shape"))?;
        let (begin, end) = info.data_offsets;
        let nbytes = checked_numel(&shape)
            .and_then(|x| x.checked_mul(dtype.size_in_bytes()))
            .ok_or_else(|| format!("tensor `{shown}` has an impossibly large shape {shape:?}"))?;
        if begin > end {
            return Err(format!(
                "tensor `{shown}` has data offsets [{begin}, {end}] that end before they begin"
            ));
        }
        if end - begin != nbytes as u64 {
            return Err(format!(
                "tensor `{shown}` of dtype {} and shape {shape:?} needs {nbytes} bytes but its data \
                 offsets span {}",
                info.dtype,
                end - begin
            ));
        }
        entries.push((name, dtype, shape, begin..end));
    }
    entries.sort_by(|a, b| {
        (a.3.start, a.3.end)
            .cmp(&(b.3.start, b.3.end))
            .then_with(|| a.0.cmp(&b.0))
    });
    // The regions must tile the data: each starts where the previous one ended.
    let mut expect = 0u64;
    let mut prev: Option<&str> = None;
    for (name, _, _, r) in &entries {
        let shown = printable(name);
        if r.start < expect {
            return Err(format!(
                "tensor `{shown}` (data offsets [{}, {}]) overlaps tensor `{}`, which ends at {expect}; \
                 refusing the file as corrupt or hostile",
                r.start,
                r.end,
                printable(prev.unwrap_or("?"))
            ));
        }
        if r.start > expect {
            return Err(format!(
                "the data has a gap of {} bytes before tensor `{shown}` (data offsets [{}, {}]); \
                 safetensors tensors must tile the data exactly",
                r.start - expect,
                r.start,
                r.end
            ));
        }
        expect = r.end;
        prev = Some(name);
    }
    let data_len = source.len() - data_start;
    if mode == Mode::Load && expect != data_len {
        return Err(if expect > data_len {
            format!(
                "the header describes {expect} bytes of tensor data but the file holds only {data_len} \
                 after the header (truncated download?)"
            )
        } else {
            format!(
                "the file holds {} bytes after the {expect} bytes of tensor data its header describes; \
                 safetensors tensors must tile the data exactly",
                data_len - expect
            )
        });
    }
    let entries = entries
        .into_iter()
        .map(|(name, dtype, shape, r)| (name, dtype, shape, data_start + r.start..data_start + r.end))
        .collect();
    Ok(Parsed::from_ranges(source, entries))
}

/// Builds the JSON header, in state-dict order, padded with spaces to a multiple of 8 bytes.
fn header(state: &StateDict) -> Result<(Vec<u8>, usize)> {
    let mut h = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut offset = 0usize;
    for (name, t) in state.iter() {
        if name == "__metadata__" {
            return Err(Error::param(
                "state",
                "a tensor may not be called `__metadata__` in a safetensors file",
            ));
        }
        t.check_len()
            .map_err(|e| Error::Shape(format!("tensor `{name}`: {e}")))?;
        let end = offset
            .checked_add(t.data.len())
            .ok_or_else(|| Error::Shape("the tensors' total size overflows".into()))?;
        let key = serde_json::to_string(name).map_err(|e| Error::param("state", e.to_string()))?;
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        h.push_str(&format!(
            ",{key}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            t.dtype.safetensors_name(),
            shape.join(",")
        ));
        offset = end;
    }
    h.push('}');
    while h.len() % 8 != 0 {
        h.push(' ');
    }
    Ok((h.into_bytes(), offset))
}

fn refuse_existing(path: &Path) -> Error {
    Error::checkpoint(
        path,
        "refusing to overwrite an existing file; delete it or choose another output path",
    )
}

/// Writes `state` as a safetensors file at `path`, tensors in state-dict order.
///
/// Refuses to overwrite an existing file. The data is written to a temporary file in the same
/// folder, synced, and then linked (or renamed) into place, so a crash never leaves a
/// half-written file under `path`.
pub fn save_safetensors(state: &StateDict, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if path.exists() {
        return Err(refuse_existing(path));
    }
    let (head, _) = header(state)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::checkpoint(path, "the output path has no file name"))?
        .to_string_lossy()
        .into_owned();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}.{nanos}.{n}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        for (_, t) in state.iter() {
            w.write_all(&t.data)?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    // A hard link fails if `path` appeared meanwhile, so nothing is ever overwritten.
    let placed = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(refuse_existing(path)),
        Err(_) if path.exists() => Err(refuse_existing(path)),
        // Filesystems without hard links: fall back to a rename.
        Err(_) => match std::fs::rename(&tmp, path) {
            Ok(()) => return Ok(()),
            Err(e) => Err(Error::io(path, e)),
        },
    };
    let _ = std::fs::remove_file(&tmp);
    placed
}
