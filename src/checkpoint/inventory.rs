//! What a checkpoint holds, read without its tensor data.

use std::path::{Path, PathBuf};

use super::format::Format;
use super::limits::{Meter, R};
use super::parsed::{Mode, Parsed};
use super::reader;
use super::select::{self, Select};
use super::source::{Source, MEMORY};
use super::tensor::{checked_numel, DType};
use super::text::checkpoint_error;
use super::value::Value;
use crate::error::Result;

/// A tensor as a checkpoint describes it: element type and shape, without the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first; empty for a 0-dim (scalar) tensor.
    pub shape: Vec<usize>,
}

impl TensorInfo {
    /// Number of elements (1 for a 0-dim tensor); saturates at `usize::MAX` on overflow
    /// (which [`inspect`] has already refused).
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    /// Number of bytes of the data, `None` on overflow.
    pub fn nbytes(&self) -> Option<usize> {
        checked_numel(&self.shape)?.checked_mul(self.dtype.size_in_bytes())
    }
}

/// One leaf of a checkpoint's object tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The dotted path from the top: dict keys and list indices joined with `.`, e.g.
    /// `model.module.all_modules.0.weight`, `ema.shadow_params.3`, `step`, or `4.conv.bias` in
    /// a list checkpoint. Keys that are not strings are written as Python would show them
    /// (`0`, `True`, `None`, `1.5`; other types as `<tuple>`). Empty for a top level that is
    /// itself a leaf. Names are as stored: pass them through [`printable`](super::printable)
    /// before printing them.
    pub key: String,
    /// What is there.
    pub kind: EntryKind,
}

/// What an [`Entry`] is.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum EntryKind {
    /// A tensor (or `nn.Parameter`).
    Tensor(TensorInfo),
    /// Any other leaf: a number, string, bytes, `None`, an empty dict, list or tuple, or an
    /// opaque object such as `torch.device`.
    Value(Value),
}

/// The contents of a checkpoint, read without its tensor data: every tensor's key path,
/// dtype and shape, and the other values around them (see [`inspect`]).
#[derive(Debug, Clone)]
pub struct Inventory {
    path: PathBuf,
    format: Format,
    entries: Vec<Entry>,
    /// The object tree, tensors as placeholders (for [`Inventory::select`]).
    skeleton: Value,
}

/// Lists what the checkpoint at `path` holds without reading its tensor data: for
/// safetensors the header alone, for PyTorch zip archives the central directory and
/// `data.pkl`, for legacy `torch.save` files and bare pickles the pickles alone.
///
/// The metadata is checked as when loading (shapes that overflow, views past the element
/// count a storage declares, safetensors regions that overlap or leave gaps, hostile pickles
/// are errors), but the tensor data is not read: a file whose data is truncated or corrupt
/// is listed, and loading it then fails. A zip archive cut short, central directory
/// included, is still listed from its `data.pkl`, which `torch.save` writes first.
///
/// ```no_run
/// use boomerang::checkpoint::{self, printable, EntryKind};
/// # fn main() -> boomerang::Result<()> {
/// let inv = checkpoint::inspect("Cifar10/score/checkpoint.pth")?;
/// for e in inv.entries() {
///     match &e.kind {
///         EntryKind::Tensor(t) => println!("{} {} {:?}", printable(&e.key), t.dtype, t.shape),
///         EntryKind::Value(v) => println!("{} = {}", printable(&e.key), printable(&v.summary())),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub fn inspect(path: impl AsRef<Path>) -> Result<Inventory> {
    let path = path.as_ref();
    let src = Source::open(path)?;
    let parsed = reader::parse(src, Mode::Inspect).map_err(|m| checkpoint_error(path, m))?;
    Inventory::new(path, parsed).map_err(|m| checkpoint_error(path, m))
}

impl Inventory {
    /// Inspects a checkpoint held in memory; its [`path`](Inventory::path) reads `<memory>`.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Inventory> {
        let path = Path::new(MEMORY);
        let parsed = reader::parse(Source::from_bytes(bytes), Mode::Inspect).map_err(|m| checkpoint_error(path, m))?;
        Inventory::new(path, parsed).map_err(|m| checkpoint_error(path, m))
    }

    fn new(path: &Path, parsed: Parsed) -> R<Inventory> {
        let len = usize::try_from(parsed.file_len()).unwrap_or(usize::MAX);
        let entries = leaves(&parsed.skeleton, len)?;
        Ok(Inventory {
            path: path.to_path_buf(),
            format: parsed.format,
            entries,
            skeleton: parsed.skeleton,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Every leaf of the object tree, depth-first in stored order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The tensors, depth-first in stored order, with their key paths.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &TensorInfo)> + '_ {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::Tensor(t) => Some((e.key.as_str(), t)),
            _ => None,
        })
    }

    /// The entry at the dotted path `key` (the first, if several paths spell the same).
    pub fn get(&self, key: &str) -> Option<&EntryKind> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.kind)
    }

    /// The total element count of all tensors (saturating).
    pub fn numel(&self) -> usize {
        self.tensors().fold(0usize, |n, (_, t)| n.saturating_add(t.numel()))
    }

    /// The names, dtypes and shapes of the state dict `select` picks: what
    /// [`load_state_dict_with`](super::load_state_dict_with) would return, without the data;
    /// or its error.
    pub fn select(&self, select: &Select<'_>) -> Result<Vec<(String, TensorInfo)>> {
        let picked = select::select(&self.skeleton, select).map_err(|m| checkpoint_error(&self.path, m))?;
        Ok(picked
            .into_iter()
            .map(|(k, t)| {
                (
                    k,
                    TensorInfo {
                        dtype: t.dtype,
                        shape: t.shape.clone(),
                    },
                )
            })
            .collect())
    }
}

/// A dict key as one segment of a dotted path.
fn segment(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::None => "None".to_string(),
        Value::Float(f) => format!("{f:?}"),
        other => format!("<{}>", other.type_name()),
    }
}

/// `prefix.seg` (or `seg` at the top), its length charged to `meter` before it is built.
fn join(prefix: &str, seg: &str, meter: &mut Meter) -> R<String> {
    if prefix.is_empty() {
        meter.charge_usize(seg.len())?;
        return Ok(seg.to_string());
    }
    meter.charge_usize(prefix.len() + 1 + seg.len())?;
    Ok(format!("{prefix}.{seg}"))
}

/// The leaves of `root`, depth-first in stored order; iterative. Every leaf's key repeats
/// its ancestors' keys, so the keys' total length is charged (before each is built) to a
/// meter of 64 MiB plus four bytes per byte of the file (`file_len`): long keys repeated at
/// every level cannot multiply.
fn leaves(root: &Value, file_len: usize) -> R<Vec<Entry>> {
    let mut meter = Meter::linear(
        "bytes of key paths",
        64 << 20,
        4,
        file_len,
        "a file",
        "long keys repeated at many levels above many entries",
    );
    let mut out = Vec::new();
    let mut stack: Vec<(String, &Value)> = vec![(String::new(), root)];
    while let Some((key, v)) = stack.pop() {
        match v {
            Value::Dict(entries) if !entries.is_empty() => {
                for (k, x) in entries.iter().rev() {
                    stack.push((join(&key, &segment(k), &mut meter)?, x));
                }
            }
            Value::List(items) | Value::Tuple(items) if !items.is_empty() => {
                for (i, x) in items.iter().enumerate().rev() {
                    stack.push((join(&key, &i.to_string(), &mut meter)?, x));
                }
            }
            Value::Tensor(t) => out.push(Entry {
                key,
                kind: EntryKind::Tensor(TensorInfo {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                }),
            }),
            other => out.push(Entry {
                key,
                kind: EntryKind::Value(other.clone()),
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tensor::TensorData;
    use super::*;

    #[test]
    fn leaves_have_dotted_paths_in_stored_order() {
        let t = |n: usize| Value::Tensor(TensorData::from_f32(vec![n], &vec![0.0; n]));
        let root = Value::Dict(vec![
            (
                Value::Str("ema".into()),
                Value::Dict(vec![
                    (Value::Str("decay".into()), Value::Float(0.999)),
                    (Value::Str("shadow_params".into()), Value::List(vec![t(1), t(2)])),
                ]),
            ),
            (
                Value::Str("opt".into()),
                Value::Dict(vec![(Value::Int(0), Value::Dict(vec![]))]),
            ),
            (Value::Str("step".into()), Value::Int(5)),
        ]);
        let keys: Vec<String> = leaves(&root, 0).unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(
            keys,
            [
                "ema.decay",
                "ema.shadow_params.0",
                "ema.shadow_params.1",
                "opt.0",
                "step"
            ]
        );
        assert_eq!(leaves(&Value::Int(3), 0).unwrap()[0].key, "");
        // Long keys at every level above many leaves: refused, not multiplied.
        let mut v = Value::List((0..1000).map(Value::Int).collect());
        for _ in 0..90 {
            v = Value::Dict(vec![(Value::Str("k".repeat(10_000)), v)]);
        }
        let e = leaves(&v, 1000).unwrap_err();
        assert!(e.contains("bytes of key paths"), "{e}");
    }
}
