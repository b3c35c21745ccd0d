//! A checkpoint parsed but not yet loaded: its object tree with tensor placeholders, and where
//! each tensor's bytes are; tensors are materialized on demand.
//!
//! Every container format (safetensors, zip, legacy) produces a [`Parsed`], so that selecting
//! the EMA weights of a checkpoint that also holds optimizer state reads only the EMA
//! weights. This module sits below the format modules; none of them depends on another.

use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

use super::format::Format;
use super::limits::{with_capacity, Budget, R};
use super::pickle::{StorageRef, TensorRef};
use super::source::Source;
use super::tensor::{checked_numel, DType, TensorData};
use super::text::printable;
use super::value::Value;
use super::zip_index::{crc32, inflate, ZipEntry};

/// How much of a file to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Everything needed to materialize tensors later.
    Load,
    /// The object tree alone (the safetensors header, a zip's `data.pkl`, a legacy file's
    /// pickles): tensors can be listed but not materialized.
    Inspect,
}

/// Where one storage's bytes are.
pub(crate) struct StorageSlot {
    pub(crate) source: SlotSource,
    pub(crate) dtype: DType,
    /// CRC-32 to check on every read (zip entries).
    pub(crate) crc: Option<u32>,
    /// How the storage is named in messages (`data/3`, `tensor foo`, ...), printable.
    pub(crate) name: String,
}

/// Where a storage's bytes come from.
pub(crate) enum SlotSource {
    /// A byte range of the file, read when needed.
    File(Range<u64>),
    /// A deflated zip entry, inflated when needed.
    Deflated(ZipEntry, Range<u64>),
}

/// A parsed checkpoint whose tensors are not yet materialized.
pub(crate) struct Parsed {
    pub(crate) format: Format,
    source: Source,
    /// The object tree; each `Value::Tensor` is a placeholder with empty `data`.
    pub(crate) skeleton: Value,
    /// The placeholders' sources, in depth-first order.
    tensors: Vec<Rc<TensorRef>>,
    storages: HashMap<String, StorageSlot>,
    /// How many tensors view each storage: a storage read for one of several views is kept
    /// for the next.
    uses: HashMap<String, usize>,
    big_endian: bool,
    budget: Budget,
    /// The last storage read that other tensors also view.
    cache: Option<(String, Rc<Vec<u8>>)>,
}

impl Parsed {
    /// Assembles a parsed file.
    pub(crate) fn new(
        format: Format,
        source: Source,
        skeleton: Value,
        tensors: Vec<Rc<TensorRef>>,
        storages: HashMap<String, StorageSlot>,
        big_endian: bool,
    ) -> Parsed {
        let mut uses: HashMap<String, usize> = HashMap::new();
        for t in &tensors {
            *uses.entry(t.storage.key.clone()).or_default() += 1;
        }
        let budget = Budget::for_file(source.len());
        Parsed {
            format,
            source,
            skeleton,
            tensors,
            storages,
            uses,
            big_endian,
            budget,
            cache: None,
        }
    }

    /// A parsed file whose tensors are contiguous byte ranges of the file (safetensors).
    pub(crate) fn from_ranges(source: Source, entries: Vec<(String, DType, Vec<usize>, Range<u64>)>) -> Parsed {
        let mut dict = Vec::with_capacity(entries.len());
        let mut tensors = Vec::with_capacity(entries.len());
        let mut storages = HashMap::with_capacity(entries.len());
        for (name, dtype, shape, range) in entries {
            let mut stride = vec![1usize; shape.len()];
            for i in (0..shape.len().saturating_sub(1)).rev() {
                stride[i] = stride[i + 1].saturating_mul(shape[i + 1]);
            }
            let storage = Rc::new(StorageRef {
                key: name.clone(),
                dtype,
                view: None,
                type_name: dtype.safetensors_name().to_string(),
                numel: checked_numel(&shape).map(|n| n as u64),
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
                    name: format!("tensor {}", printable(&name)),
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
        Parsed::new(Format::SafeTensors, source, Value::Dict(dict), tensors, storages, false)
    }

    /// The file's length.
    pub(crate) fn file_len(&self) -> u64 {
        self.source.len()
    }

    /// The addresses of the skeleton's tensor placeholders, mapped to their index in
    /// depth-first order (the order `tensors` was filled in).
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
        self.materialize_ref(&t)
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

    /// The bytes of the storage `key`, read from the file (and CRC-checked) or cached.
    fn storage_bytes(&mut self, key: &str) -> R<Rc<Vec<u8>>> {
        if let Some((k, b)) = &self.cache {
            if k == key {
                return Ok(b.clone());
            }
        }
        let slot = self.storages.get(key).ok_or_else(|| {
            format!(
                "storage {} is missing from the file (truncated or incomplete?)",
                printable(key)
            )
        })?;
        let bytes = match &slot.source {
            SlotSource::Deflated(entry, raw) => {
                let b = inflate(&self.source, raw.clone(), entry, &mut self.budget)?;
                if crc32(&b) != entry.crc {
                    return Err(format!(
                        "{} is corrupt (CRC-32 mismatch); re-download the checkpoint",
                        slot.name
                    ));
                }
                Rc::new(b)
            }
            SlotSource::File(r) => {
                let n = usize::try_from(r.end - r.start).map_err(|_| "a storage does not fit in memory")?;
                self.budget.read(n)?;
                let b = self
                    .source
                    .read_range(r.clone())
                    .map_err(|e| format!("{}: {e}", slot.name))?;
                // Checked on every read: the file may have changed since the last one.
                if let Some(crc) = slot.crc {
                    if crc32(&b) != crc {
                        return Err(format!(
                            "{} is corrupt (CRC-32 mismatch); re-download the checkpoint",
                            slot.name
                        ));
                    }
                }
                Rc::new(b)
            }
        };
        if self.uses.get(key).copied().unwrap_or(0) > 1 {
            self.cache = Some((key.to_string(), bytes.clone()));
        } else {
            self.cache = None;
        }
        Ok(bytes)
    }

    /// Copies a (possibly strided) view of a storage into a contiguous little-endian tensor.
    fn materialize_ref(&mut self, t: &TensorRef) -> R<TensorData> {
        let key = &t.storage.key;
        let shown = printable(key);
        let slot_dtype = self
            .storages
            .get(key)
            .map(|s| s.dtype)
            .ok_or_else(|| format!("storage {shown} is missing from the file (truncated or incomplete?)"))?;
        let dtype = t.storage.dtype;
        if slot_dtype != dtype {
            return Err(format!("storage {shown} is used both as {slot_dtype} and as {dtype}"));
        }
        let e = dtype.size_in_bytes();
        let (numel, nbytes) = tensor_size(t)?;
        if numel == 0 {
            return Ok(TensorData {
                dtype,
                shape: t.shape.clone(),
                data: Vec::new(),
            });
        }
        let bytes = self.storage_bytes(key)?;
        let mut total = (bytes.len() / e) as u64;
        if let Some(declared) = t.storage.numel {
            total = total.min(declared);
        }
        let (base, avail) = view_window(t, total)?;
        let extent = view_extent(t)?;
        if extent > avail {
            return Err(format!(
                "{} reads element {} of storage {shown}, which has only {avail} (truncated or corrupt file)",
                describe(t),
                extent - 1
            ));
        }
        self.budget.bytes(nbytes)?;
        let base = usize::try_from(base).map_err(|_| "storage view offset too large")?;
        let whole = t.offset == 0 && base == 0 && nbytes == bytes.len() && is_contiguous(t);
        let mut out = if whole {
            // The tensor is its whole storage: take the buffer instead of copying it.
            self.cache = self.cache.take().filter(|(k, _)| k != key);
            Rc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone())
        } else {
            let bad = || "internal error: tensor bounds".to_string();
            let src = bytes.get(base * e..).ok_or_else(bad)?;
            let mut out = with_capacity(nbytes)?;
            copy_view(t, src, e, &mut out).ok_or_else(bad)?;
            out
        };
        if self.big_endian && e > 1 {
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
}

/// `a tensor of shape [..] (stride [..], offset n)`, for messages.
fn describe(t: &TensorRef) -> String {
    format!(
        "a tensor of shape {:?} (stride {:?}, offset {})",
        t.shape, t.stride, t.offset
    )
}

/// The element count and byte size of a tensor, overflow-checked.
pub(crate) fn tensor_size(t: &TensorRef) -> R<(usize, usize)> {
    let numel = checked_numel(&t.shape).ok_or_else(|| format!("{} overflows", describe(t)))?;
    let nbytes = numel
        .checked_mul(t.storage.dtype.size_in_bytes())
        .ok_or_else(|| format!("{} overflows", describe(t)))?;
    Ok((numel, nbytes))
}

/// The first element and element count of the part of a storage of `total` elements that a
/// tensor may view (a legacy storage view narrows it).
pub(crate) fn view_window(t: &TensorRef, total: u64) -> R<(u64, u64)> {
    match t.storage.view {
        None => Ok((0, total)),
        Some((off, size)) => {
            if off.checked_add(size).is_none_or(|end| end > total) {
                return Err(format!(
                    "a view of storage {} runs past its end",
                    printable(&t.storage.key)
                ));
            }
            Ok((off, size))
        }
    }
}

/// One past the largest storage element a non-empty tensor reads (offset plus the span of
/// every dimension), overflow-checked; 0 for an empty tensor.
pub(crate) fn view_extent(t: &TensorRef) -> R<u64> {
    if t.shape.contains(&0) {
        return Ok(0);
    }
    let overflow = || format!("{} overflows", describe(t));
    let mut max = t.offset as u64;
    for (&d, &s) in t.shape.iter().zip(&t.stride) {
        let span = ((d - 1) as u64).checked_mul(s as u64).ok_or_else(overflow)?;
        max = max.checked_add(span).ok_or_else(overflow)?;
    }
    max.checked_add(1).ok_or_else(overflow)
}

/// Whether a view is row-major contiguous (dimensions of size 1 may have any stride).
fn is_contiguous(t: &TensorRef) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

/// Appends the elements of view `t` of `src` (elements of `e` bytes) to `out`, row-major;
/// `None` if an index falls outside `src` (the caller checked the extent first).
fn copy_view(t: &TensorRef, src: &[u8], e: usize, out: &mut Vec<u8>) -> Option<()> {
    if is_contiguous(t) {
        let a = t.offset.checked_mul(e)?;
        let n = checked_numel(&t.shape)?.checked_mul(e)?;
        out.extend_from_slice(src.get(a..a.checked_add(n)?)?);
        return Some(());
    }
    let nd = t.shape.len();
    let last = nd - 1; // nd >= 1: a 0-dim tensor is always contiguous
    let (inner_n, inner_s) = (t.shape[last], t.stride[last]);
    let mut idx = vec![0usize; last];
    loop {
        let mut start = t.offset;
        for (i, &k) in idx.iter().enumerate() {
            start += k * t.stride[i];
        }
        if inner_s == 1 {
            out.extend_from_slice(src.get(start * e..(start + inner_n) * e)?);
        } else {
            for j in 0..inner_n {
                let a = (start + j * inner_s) * e;
                out.extend_from_slice(src.get(a..a + e)?);
            }
        }
        let mut d = last;
        loop {
            if d == 0 {
                return Some(());
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

/// Calls `f` on every tensor of `v`, depth-first, dict keys before values. Iterative: the
/// tree's depth does not reach the call stack.
pub(crate) fn visit(v: &Value, f: &mut dyn FnMut(&TensorData)) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Tensor(t) => f(t),
            Value::List(items) | Value::Tuple(items) => stack.extend(items.iter().rev()),
            Value::Dict(e) => {
                for (k, x) in e.iter().rev() {
                    stack.push(x);
                    stack.push(k);
                }
            }
            Value::Object { args, .. } => stack.extend(args.iter().rev()),
            _ => {}
        }
    }
}

/// [`visit`] with mutable access, in the same order.
fn visit_mut(v: &mut Value, f: &mut dyn FnMut(&mut TensorData)) {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Tensor(t) => f(t),
            Value::List(items) | Value::Tuple(items) => stack.extend(items.iter_mut().rev()),
            Value::Dict(e) => {
                for (k, x) in e.iter_mut().rev() {
                    stack.push(x);
                    stack.push(k);
                }
            }
            Value::Object { args, .. } => stack.extend(args.iter_mut().rev()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed_over(bytes: Vec<u8>) -> (Parsed, Rc<StorageRef>) {
        let n = bytes.len() as u64;
        let mut m = HashMap::new();
        m.insert(
            "0".to_string(),
            StorageSlot {
                source: SlotSource::File(0..n),
                dtype: DType::U8,
                crc: None,
                name: "s".into(),
            },
        );
        let s = Rc::new(StorageRef {
            key: "0".into(),
            dtype: DType::U8,
            view: None,
            type_name: "torch.ByteStorage".into(),
            numel: None,
        });
        let p = Parsed::new(
            Format::TorchZip,
            Source::from_bytes(bytes),
            Value::None,
            Vec::new(),
            m,
            false,
        );
        (p, s)
    }

    #[test]
    fn strided_views_materialize_row_major() {
        let (mut p, s) = parsed_over((0u8..12).collect());
        let mk = |offset, shape: Vec<usize>, stride: Vec<usize>| TensorRef {
            storage: s.clone(),
            offset,
            shape,
            stride,
        };
        // transpose of a 3x4 matrix
        let t = p.materialize_ref(&mk(0, vec![4, 3], vec![1, 4])).unwrap();
        assert_eq!(t.data, vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
        // rows 1..3, every other column
        let t = p.materialize_ref(&mk(4, vec![2, 2], vec![4, 2])).unwrap();
        assert_eq!(t.data, vec![4, 6, 8, 10]);
        // expanded (stride 0) and 0-dim
        let t = p.materialize_ref(&mk(5, vec![2, 3], vec![0, 1])).unwrap();
        assert_eq!(t.data, vec![5, 6, 7, 5, 6, 7]);
        let t = p.materialize_ref(&mk(11, vec![], vec![])).unwrap();
        assert_eq!(t.data, vec![11]);
        // the whole storage
        let t = p.materialize_ref(&mk(0, vec![12], vec![1])).unwrap();
        assert_eq!(t.data, (0u8..12).collect::<Vec<_>>());
        // out of bounds and overflowing views are errors
        assert!(p.materialize_ref(&mk(1, vec![3, 4], vec![4, 1])).is_err());
        assert!(p.materialize_ref(&mk(0, vec![usize::MAX, 2], vec![1, 1])).is_err());
        assert!(p.materialize_ref(&mk(0, vec![3, 3], vec![usize::MAX, 1])).is_err());
        // a huge expanded view of a tiny storage exhausts the budget instead of allocating
        let e = p.materialize_ref(&mk(0, vec![1 << 40, 1], vec![0, 1])).unwrap_err();
        assert!(e.contains("limit"), "{e}");
    }

    #[test]
    fn visits_in_depth_first_order() {
        let t = |v: f32| Value::Tensor(TensorData::from_f32(vec![1], &[v]));
        let v = Value::Dict(vec![
            (Value::Str("a".into()), Value::List(vec![t(1.0), t(2.0)])),
            (Value::Str("b".into()), t(3.0)),
        ]);
        let mut seen = Vec::new();
        visit(&v, &mut |x| seen.push(x.to_f32_vec().unwrap()[0]));
        assert_eq!(seen, vec![1.0, 2.0, 3.0]);
    }
}
