//! Reading and writing safetensors files.
//!
//! Layout: an 8-byte little-endian header length `N`, `N` bytes of JSON mapping each tensor
//! name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the data
//! that follows the header, plus an optional `"__metadata__"` map of strings), then the raw
//! little-endian tensor bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use super::pickle::{Budget, R};
use super::tensor::{checked_numel, DType};
use super::torch_format::{FileBytes, Parsed};
use super::{Format, StateDict};
use crate::error::{Error, Result};

/// Headers larger than this are refused (the reference implementation's limit).
const MAX_HEADER: u64 = 100 << 20;

#[derive(Deserialize)]
struct Info {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// Parses a safetensors file; tensors are ordered by where their data lies in the file (the
/// order they were written in).
pub(crate) fn parse(file: FileBytes, budget: Budget) -> R<Parsed> {
    let d: &[u8] = &file;
    let head = d
        .get(..8)
        .ok_or("safetensors file shorter than its 8-byte header length")?;
    let n = u64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
    if n > MAX_HEADER {
        return Err(format!(
            "safetensors header of {n} bytes is larger than the 100 MiB limit"
        ));
    }
    let n = n as usize;
    let header = d
        .get(8..8 + n)
        .ok_or("the safetensors header runs past the end of the file (truncated download?)")?;
    let header = std::str::from_utf8(header).map_err(|_| "the safetensors header is not UTF-8")?;
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(header).map_err(|e| format!("the safetensors header is not valid JSON: {e}"))?;
    let data_start = 8 + n;
    let data_len = d.len() - data_start;
    let mut entries = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let info: Info =
            serde_json::from_value(v).map_err(|e| format!("safetensors entry `{name}` is malformed: {e}"))?;
        let dtype = DType::from_safetensors_name(&info.dtype).ok_or_else(|| {
            format!(
                "tensor `{name}` has dtype {} which this crate does not support (supported: F64, \
                 F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)",
                info.dtype
            )
        })?;
        let shape: Vec<usize> = info
            .shape
            .iter()
            .map(|&x| usize::try_from(x))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| format!("tensor `{name}` has an impossibly large shape"))?;
        let (begin, end) = info.data_offsets;
        let nbytes = checked_numel(&shape)
            .and_then(|x| x.checked_mul(dtype.size_in_bytes()))
            .ok_or_else(|| format!("tensor `{name}` has an impossibly large shape {shape:?}"))?;
        if begin > end || end > data_len as u64 {
            return Err(format!(
                "tensor `{name}` has data offsets [{begin}, {end}] outside the {data_len} data bytes \
                 (truncated file?)"
            ));
        }
        if (end - begin) as usize != nbytes {
            return Err(format!(
                "tensor `{name}` of dtype {} and shape {shape:?} needs {nbytes} bytes but its data \
                 offsets span {}",
                info.dtype,
                end - begin
            ));
        }
        let range = data_start + begin as usize..data_start + end as usize;
        entries.push((name, dtype, shape, range));
    }
    entries.sort_by(|a, b| a.3.start.cmp(&b.3.start).then_with(|| a.0.cmp(&b.0)));
    Ok(Parsed::from_ranges(Format::SafeTensors, file, entries, budget))
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
