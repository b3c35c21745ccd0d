//! The containers `torch.save` writes, format detection, and tensor materialization.
//!
//! * zip (the default since PyTorch 1.6): `<prefix>/data.pkl` holds the pickled object, whose
//!   persistent ids `('storage', StorageType, key, location, numel)` name the records
//!   `<prefix>/data/<key>`; `<prefix>/byteorder` says `little` or `big`.
//! * legacy (`_use_new_zipfile_serialization=False`): a pickled magic number, the protocol
//!   version 1001, a pickled `sys_info` dict, the main pickle (persistent ids
//!   `('storage', StorageType, key, location, numel, view_metadata)`), a pickled list of
//!   storage keys, then for each key its element count (8 bytes, little-endian) and raw
//!   little-endian bytes.
//! * a bare pickle (protocol 2-5) without tensors, and safetensors (see `safetensors_io`).
//!
//! Every format is first parsed into a [`Parsed`]: the object tree with tensors as
//! placeholders, plus where each tensor's bytes are. Tensors are then materialized on demand,
//! so that selecting the EMA weights of a checkpoint that also holds optimizer state copies
//! only the EMA weights.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::path::Path;
use std::rc::Rc;

use super::pickle::{self, Budget, Persistent, StorageDecl, TensorRef, Vm, R};
use super::tensor::{checked_numel, DType, TensorData};
use super::value::Value;
use super::zip_index::{crc32, ZipIndex};
use super::Format;
use crate::error::{Error, Result};

/// The whole file, memory-mapped when possible.
pub(crate) enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl FileBytes {
    /// Maps `path` read-only (reads it into memory where mapping is not possible).
    pub(crate) fn open(path: &Path) -> Result<FileBytes> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and private to this reader. As with every mmap-based
        // reader (safetensors, numpy), a file truncated by another process while mapped is
        // undefined behaviour; checkpoints are not written while being read.
        match unsafe { memmap2::Mmap::map(&file) } {
            Ok(m) => Ok(FileBytes::Mapped(m)),
            Err(_) => std::fs::read(path)
                .map(FileBytes::Owned)
                .map_err(|e| Error::io(path, e)),
        }
    }
}

/// Where one storage's bytes are.
pub(crate) struct StorageSlot {
    source: SlotSource,
    dtype: DType,
    /// CRC-32 to check on first use (zip entries).
    crc: Option<u32>,
    checked: Cell<bool>,
    name: String,
}

enum SlotSource {
    File(Range<usize>),
    Owned(Vec<u8>),
}

/// A parsed checkpoint whose tensors are not yet materialized.
pub(crate) struct Parsed {
    pub(crate) format: Format,
    file: FileBytes,
    /// The object tree; each `Value::Tensor` is a placeholder with empty `data`.
    pub(crate) skeleton: Value,
    /// The placeholders' sources, in depth-first order.
    tensors: Vec<Rc<TensorRef>>,
    storages: HashMap<String, StorageSlot>,
    big_endian: bool,
    pub(crate) budget: Budget,
}

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Identifies the format from the first bytes (never from the file name).
pub(crate) fn detect(d: &[u8]) -> R<Format> {
    if d.is_empty() {
        return Err("the file is empty (an interrupted download or save?)".into());
    }
    if d.starts_with(b"PK\x03\x04") || d.starts_with(b"PK\x05\x06") {
        return Ok(Format::TorchZip);
    }
    if d.len() >= 15 && d[0] == 0x80 && d[2] == 0x8a && d[3] == 0x0a && d[4..14] == LEGACY_MAGIC {
        return Ok(Format::TorchLegacy);
    }
    if d.len() >= 9 {
        let n = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        if d[8] == b'{' && n >= 2 && n <= (d.len() - 8) as u64 {
            return Ok(Format::SafeTensors);
        }
    }
    if d[0] == 0x80 && d.len() >= 2 && (2..=5).contains(&d[1]) {
        return Ok(Format::Pickle);
    }
    if d.len() > 262 && &d[257..262] == b"ustar" {
        return Err(
            "this is a tar archive: the pre-1.0 torch.save format, which this reader \
                    does not support; load it with an old PyTorch and re-save it"
                .into(),
        );
    }
    if d.starts_with(b"version https://git-lfs") {
        return Err(
            "this is a Git LFS pointer file, not the checkpoint itself; fetch the real \
                    file with `git lfs pull`"
                .into(),
        );
    }
    let head: String = String::from_utf8_lossy(&d[..d.len().min(64)]).to_ascii_lowercase();
    if head.trim_start().starts_with("<!doctype html") || head.trim_start().starts_with("<html") {
        return Err("this is an HTML page, not a checkpoint (a failed or login-walled \
                    download?)"
            .into());
    }
    let shown: String = d
        .iter()
        .take(16)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect();
    Err(format!(
        "not a recognised checkpoint: it starts with \"{shown}\"; expected a safetensors file, \
         a PyTorch zip archive (torch.save), a legacy torch.save file or a pickle"
    ))
}

/// Parses a file of any supported format.
pub(crate) fn parse(file: FileBytes) -> R<Parsed> {
    let format = detect(&file)?;
    let budget = Budget::for_file(file.len());
    match format {
        Format::TorchZip => parse_zip(file, budget),
        Format::TorchLegacy => parse_legacy(file, budget),
        Format::Pickle => parse_bare_pickle(file, budget),
        Format::SafeTensors => super::safetensors_io::parse(file, budget),
    }
}

fn parse_zip(file: FileBytes, mut budget: Budget) -> R<Parsed> {
    let idx = ZipIndex::parse(&file)?;
    let pkls: Vec<&str> = idx
        .entries()
        .iter()
        .map(|e| e.name.as_str())
        .filter(|n| *n == "data.pkl" || (n.ends_with("/data.pkl") && n.matches('/').count() == 1))
        .collect();
    let pkl_name = match pkls.as_slice() {
        [one] => one.to_string(),
        [] => return Err("this zip archive is not a torch.save checkpoint (it has no data.pkl)".into()),
        _ => {
            return Err(format!(
                "this zip archive holds several checkpoints ({})",
                pkls.join(", ")
            ))
        }
    };
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or("").to_string();
    if idx.get(&format!("{prefix}constants.pkl")).is_some()
        || idx
            .entries()
            .iter()
            .any(|e| e.name.starts_with(&format!("{prefix}code/")))
    {
        return Err(
            "this is a TorchScript archive (torch.jit.save), not a state dict; load it in \
                    Python with torch.jit.load and save model.state_dict()"
                .into(),
        );
    }
    let big_endian = match idx.get(&format!("{prefix}byteorder")) {
        None => false,
        Some(e) => {
            let e = e.clone();
            match &*idx.read(&file, &e, &mut budget)? {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(format!(
                        "unknown byte order {:?} in the archive",
                        String::from_utf8_lossy(other)
                    ))
                }
            }
        }
    };
    let pkl_entry = idx.get(&pkl_name).cloned().ok_or("data.pkl vanished")?;
    let pkl = idx.read(&file, &pkl_entry, &mut budget)?;
    let mut vm = Vm::new(&pkl, Persistent::TorchStorages);
    let root = vm.run()?;
    let mut tensors = Vec::new();
    let skeleton = vm.to_value(&root, &mut budget, &mut tensors)?;
    let mut storages = HashMap::new();
    for (key, decl) in vm.storages() {
        let name = format!("{prefix}data/{key}");
        let e = idx
            .get(&name)
            .cloned()
            .ok_or_else(|| format!("the archive lacks the storage record {name} (truncated or incomplete file?)"))?;
        let source = match idx.stored_range(&file, &e)? {
            Some(r) => SlotSource::File(r),
            None => SlotSource::Owned(idx.read(&file, &e, &mut budget)?.into_owned()),
        };
        storages.insert(
            key.clone(),
            StorageSlot {
                source,
                dtype: decl.dtype,
                crc: Some(e.crc),
                checked: Cell::new(false),
                name,
            },
        );
    }
    drop(root);
    drop(vm);
    drop(pkl);
    Ok(Parsed {
        format: Format::TorchZip,
        file,
        skeleton,
        tensors,
        storages,
        big_endian,
        budget,
    })
}

fn parse_legacy(file: FileBytes, mut budget: Budget) -> R<Parsed> {
    let d: &[u8] = &file;
    let mut pos = 0usize;
    let rest = |pos: usize| d.get(pos..).unwrap_or(&[]);
    let (magic, n) = pickle::load_plain(rest(pos), &mut budget)?;
    pos += n;
    if magic != Value::BigInt(LEGACY_MAGIC.to_vec()) {
        return Err("invalid magic number in a legacy torch.save file".into());
    }
    let (version, n) = pickle::load_plain(rest(pos), &mut budget)?;
    pos += n;
    if version != Value::Int(1001) {
        return Err(format!(
            "unsupported legacy torch.save protocol version {} (expected 1001)",
            version.summary()
        ));
    }
    // sys_info records the writer's byte order, but torch writes legacy storages
    // little-endian on every machine (it swaps on big-endian hosts), so it is only skipped.
    let (_sys_info, n) = pickle::load_plain(rest(pos), &mut budget)?;
    pos += n;

    let mut vm = Vm::new(rest(pos), Persistent::TorchStorages);
    let root = vm.run()?;
    pos += vm.end();
    let mut tensors = Vec::new();
    let skeleton = vm.to_value(&root, &mut budget, &mut tensors)?;
    let decls: HashMap<String, StorageDecl> = vm.storages().iter().cloned().collect();
    drop(root);
    drop(vm);

    let (keys, n) = pickle::load_plain(rest(pos), &mut budget)
        .map_err(|e| format!("reading the storage list after the main pickle: {e}"))?;
    pos += n;
    let keys = match keys {
        Value::List(k) => k,
        other => return Err(format!("the storage list is a {}", other.type_name())),
    };
    let mut storages = HashMap::new();
    for k in keys {
        let key = match k {
            Value::Str(s) => s,
            Value::Int(i) => i.to_string(),
            other => return Err(format!("a storage key is a {}", other.type_name())),
        };
        let decl = decls
            .get(&key)
            .ok_or_else(|| format!("storage {key} is listed but no tensor uses it"))?;
        let count = d
            .get(pos..pos.saturating_add(8))
            .ok_or("the file ends inside the storage data (truncated download?)")?;
        let count = u64::from_le_bytes([
            count[0], count[1], count[2], count[3], count[4], count[5], count[6], count[7],
        ]);
        let nbytes = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(decl.dtype.size_in_bytes()))
            .ok_or("a storage size field is impossibly large (corrupt file)")?;
        let start = pos + 8;
        let end = start
            .checked_add(nbytes)
            .filter(|&e| e <= d.len())
            .ok_or("the file ends inside the storage data (truncated download?)")?;
        storages.insert(
            key.clone(),
            StorageSlot {
                source: SlotSource::File(start..end),
                dtype: decl.dtype,
                crc: None,
                checked: Cell::new(true),
                name: format!("storage {key}"),
            },
        );
        pos = end;
    }
    Ok(Parsed {
        format: Format::TorchLegacy,
        file,
        skeleton,
        tensors,
        storages,
        big_endian: false,
        budget,
    })
}

fn parse_bare_pickle(file: FileBytes, mut budget: Budget) -> R<Parsed> {
    let (skeleton, _) = pickle::load_plain(&file, &mut budget)?;
    Ok(Parsed {
        format: Format::Pickle,
        file,
        skeleton,
        tensors: Vec::new(),
        storages: HashMap::new(),
        big_endian: false,
        budget,
    })
}

impl Parsed {
    /// A parsed file whose tensors are contiguous byte ranges of the file (safetensors).
    pub(crate) fn from_ranges(
        format: Format,
        file: FileBytes,
        entries: Vec<(String, DType, Vec<usize>, Range<usize>)>,
        budget: Budget,
    ) -> Parsed {
        let mut dict = Vec::with_capacity(entries.len());
        let mut tensors = Vec::with_capacity(entries.len());
        let mut storages = HashMap::with_capacity(entries.len());
        for (name, dtype, shape, range) in entries {
            let mut stride = vec![1usize; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                stride[i] = stride[i + 1].saturating_mul(shape[i + 1]);
            }
            let storage = Rc::new(pickle::StorageRef {
                key: name.clone(),
                dtype,
                view: None,
                type_name: dtype.safetensors_name().to_string(),
            });
            tensors.push(Rc::new(TensorRef {
                storage,
                offset: 0,
                shape: shape.clone(),
                stride,
            }));
            storages.insert(
                name.clone(),
                StorageSlot {
                    source: SlotSource::File(range),
                    dtype,
                    crc: None,
                    checked: Cell::new(true),
                    name: format!("tensor {name}"),
                },
            );
            dict.push((
                Value::Str(name),
                Value::Tensor(TensorData {
                    dtype,
                    shape,
                    data: Vec::new(),
                }),
            ));
        }
        Parsed {
            format,
            file,
            skeleton: Value::Dict(dict),
            tensors,
            storages,
            big_endian: false,
            budget,
        }
    }

    /// The addresses of the skeleton's tensor placeholders, mapped to their index in
    /// depth-first order (the order [`Parsed::tensors`] was filled in).
    pub(crate) fn placeholder_index(&self) -> HashMap<usize, usize> {
        let mut map = HashMap::with_capacity(self.tensors.len());
        let mut n = 0usize;
        visit(&self.skeleton, &mut |t: &TensorData| {
            map.insert(t as *const TensorData as usize, n);
            n += 1;
        });
        map
    }

    /// Materializes tensor number `i` (depth-first order).
    pub(crate) fn materialize(&mut self, i: usize) -> R<TensorData> {
        let t = self
            .tensors
            .get(i)
            .cloned()
            .ok_or("internal error: tensor index out of range")?;
        materialize(&t, &self.file, &self.storages, self.big_endian, &mut self.budget)
    }

    /// Materializes every tensor in place and returns the complete tree.
    pub(crate) fn into_value(mut self) -> R<Value> {
        let mut root = std::mem::replace(&mut self.skeleton, Value::None);
        let mut n = 0usize;
        let mut err = None;
        visit_mut(&mut root, &mut |t: &mut TensorData| {
            if err.is_some() {
                return;
            }
            match self.materialize(n) {
                Ok(m) => *t = m,
                Err(e) => err = Some(e),
            }
            n += 1;
        });
        match err {
            Some(e) => Err(e),
            None => Ok(root),
        }
    }
}

/// Calls `f` on every tensor of `v`, depth-first, dict keys before values.
pub(crate) fn visit(v: &Value, f: &mut dyn FnMut(&TensorData)) {
    match v {
        Value::Tensor(t) => f(t),
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(|x| visit(x, f)),
        Value::Dict(e) => e.iter().for_each(|(k, x)| {
            visit(k, f);
            visit(x, f);
        }),
        Value::Object { args, .. } => args.iter().for_each(|x| visit(x, f)),
        _ => {}
    }
}

fn visit_mut(v: &mut Value, f: &mut dyn FnMut(&mut TensorData)) {
    match v {
        Value::Tensor(t) => f(t),
        Value::List(items) | Value::Tuple(items) => items.iter_mut().for_each(|x| visit_mut(x, f)),
        Value::Dict(e) => e.iter_mut().for_each(|(k, x)| {
            visit_mut(k, f);
            visit_mut(x, f);
        }),
        Value::Object { args, .. } => args.iter_mut().for_each(|x| visit_mut(x, f)),
        _ => {}
    }
}

/// Copies a (possibly strided) view of a storage into a contiguous little-endian tensor.
fn materialize(
    t: &TensorRef,
    file: &[u8],
    storages: &HashMap<String, StorageSlot>,
    big_endian: bool,
    budget: &mut Budget,
) -> R<TensorData> {
    let key = &t.storage.key;
    let slot = storages
        .get(key)
        .ok_or_else(|| format!("storage {key} is missing from the file (truncated or incomplete?)"))?;
    let bytes: &[u8] = match &slot.source {
        SlotSource::File(r) => file.get(r.clone()).ok_or("internal error: storage range")?,
        SlotSource::Owned(v) => v,
    };
    if !slot.checked.get() {
        if let Some(crc) = slot.crc {
            if crc32(bytes) != crc {
                return Err(format!(
                    "{} is corrupt (CRC-32 mismatch); re-download the checkpoint",
                    slot.name
                ));
            }
        }
        slot.checked.set(true);
    }
    let dtype = t.storage.dtype;
    if slot.dtype != dtype {
        return Err(format!("storage {key} is used both as {} and as {dtype}", slot.dtype));
    }
    let e = dtype.size_in_bytes();
    let total = bytes.len() / e;
    let (base, avail) = match t.storage.view {
        None => (0usize, total),
        Some((off, size)) => {
            let off = usize::try_from(off).map_err(|_| "storage view offset too large")?;
            let size = usize::try_from(size).map_err(|_| "storage view size too large")?;
            if off.checked_add(size).map_or(true, |end| end > total) {
                return Err(format!("a view of storage {key} runs past its end"));
            }
            (off, size)
        }
    };
    let numel = checked_numel(&t.shape).ok_or("a tensor shape overflows")?;
    let nbytes = numel.checked_mul(e).ok_or("a tensor shape overflows")?;
    let shape_desc = || {
        format!(
            "a tensor of shape {:?} (stride {:?}, offset {})",
            t.shape, t.stride, t.offset
        )
    };
    if numel == 0 {
        return Ok(TensorData {
            dtype,
            shape: t.shape.clone(),
            data: Vec::new(),
        });
    }
    // The largest element index the view touches, with overflow checks.
    let mut max = t.offset;
    for (&d, &s) in t.shape.iter().zip(&t.stride) {
        let span = (d - 1).checked_mul(s).ok_or("a tensor stride overflows")?;
        max = max.checked_add(span).ok_or("a tensor stride overflows")?;
    }
    if max >= avail {
        return Err(format!(
            "{} reads element {max} of storage {key}, which has only {avail} (truncated or corrupt file)",
            shape_desc()
        ));
    }
    budget.bytes(nbytes)?;
    let src = bytes.get(base * e..).ok_or("internal error: storage base")?;
    let mut out = Vec::with_capacity(nbytes);
    let contiguous = {
        let mut expect = 1usize;
        let mut ok = true;
        for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
            if d != 1 && s != expect {
                ok = false;
                break;
            }
            expect = expect.saturating_mul(d);
        }
        ok
    };
    let bad = || "internal error: tensor bounds".to_string();
    if contiguous {
        let a = t.offset * e;
        out.extend_from_slice(src.get(a..a + nbytes).ok_or_else(bad)?);
    } else {
        let nd = t.shape.len();
        let last = nd - 1; // nd >= 1: a 0-dim tensor is always contiguous
        let (inner_n, inner_s) = (t.shape[last], t.stride[last]);
        let mut idx = vec![0usize; last];
        'outer: loop {
            let mut start = t.offset;
            for (i, &k) in idx.iter().enumerate() {
                start += k * t.stride[i];
            }
            if inner_s == 1 {
                out.extend_from_slice(src.get(start * e..(start + inner_n) * e).ok_or_else(bad)?);
            } else {
                for j in 0..inner_n {
                    let a = (start + j * inner_s) * e;
                    out.extend_from_slice(src.get(a..a + e).ok_or_else(bad)?);
                }
            }
            let mut d = last;
            loop {
                if d == 0 {
                    break 'outer;
                }
                d -= 1;
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
    }
    if big_endian && e > 1 {
        for c in out.chunks_exact_mut(e) {
            c.reverse();
        }
    }
    Ok(TensorData {
        dtype,
        shape: t.shape.clone(),
        data: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_errors_are_helpful() {
        assert!(detect(b"").unwrap_err().contains("empty"));
        assert!(detect(b"version https://git-lfs.github.com/spec/v1\noid sha256:")
            .unwrap_err()
            .contains("git lfs pull"));
        assert!(detect(b"<!DOCTYPE html><html>").unwrap_err().contains("HTML"));
        assert!(detect(b"hello world, this is text")
            .unwrap_err()
            .contains("hello world"));
        assert_eq!(detect(b"\x80\x04K\x01.").unwrap(), Format::Pickle);
        assert_eq!(detect(b"PK\x03\x04rest").unwrap(), Format::TorchZip);
    }

    fn storage(bytes: Vec<u8>) -> (HashMap<String, StorageSlot>, Rc<pickle::StorageRef>) {
        let mut m = HashMap::new();
        m.insert(
            "0".to_string(),
            StorageSlot {
                source: SlotSource::Owned(bytes),
                dtype: DType::U8,
                crc: None,
                checked: Cell::new(true),
                name: "s".into(),
            },
        );
        let s = Rc::new(pickle::StorageRef {
            key: "0".into(),
            dtype: DType::U8,
            view: None,
            type_name: "torch.ByteStorage".into(),
        });
        (m, s)
    }

    #[test]
    fn strided_views_materialize_row_major() {
        let (m, s) = storage((0u8..12).collect());
        let mut b = Budget::for_file(0);
        let mk = |offset, shape: Vec<usize>, stride: Vec<usize>| TensorRef {
            storage: s.clone(),
            offset,
            shape,
            stride,
        };
        // transpose of a 3x4 matrix
        let t = materialize(&mk(0, vec![4, 3], vec![1, 4]), &[], &m, false, &mut b).unwrap();
        assert_eq!(t.data, vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
        // rows 1..3, every other column
        let t = materialize(&mk(4, vec![2, 2], vec![4, 2]), &[], &m, false, &mut b).unwrap();
        assert_eq!(t.data, vec![4, 6, 8, 10]);
        // expanded (stride 0) and 0-dim
        let t = materialize(&mk(5, vec![2, 3], vec![0, 1]), &[], &m, false, &mut b).unwrap();
        assert_eq!(t.data, vec![5, 6, 7, 5, 6, 7]);
        let t = materialize(&mk(11, vec![], vec![]), &[], &m, false, &mut b).unwrap();
        assert_eq!(t.data, vec![11]);
        // out of bounds and overflowing views are errors
        assert!(materialize(&mk(1, vec![3, 4], vec![4, 1]), &[], &m, false, &mut b).is_err());
        assert!(materialize(&mk(0, vec![usize::MAX, 2], vec![1, 1]), &[], &m, false, &mut b).is_err());
        assert!(materialize(&mk(0, vec![3, 3], vec![usize::MAX, 1]), &[], &m, false, &mut b).is_err());
        // a huge expanded view of a tiny storage exhausts the budget instead of allocating
        let e = materialize(&mk(0, vec![1 << 40, 1], vec![0, 1]), &[], &m, false, &mut b).unwrap_err();
        assert!(e.contains("expands"), "{e}");
    }
}
