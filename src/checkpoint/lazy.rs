//! A state dict whose tensors are read from the file one at a time, when asked for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::inventory::TensorInfo;
use super::parsed::{Mode, Parsed};
use super::reader;
use super::select::{self, Select};
use super::source::Source;
use super::tensor::{StateDict, TensorData};
use super::text::{checkpoint_error, printable};
use crate::error::{Error, Result};

/// One tensor of a [`LazyStateDict`]: its (possibly renamed) name and shape, and which of
/// the file's tensors it is.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    info: TensorInfo,
    index: usize,
}

/// The state dict a [`Select`] picks from a checkpoint, with only the metadata in memory:
/// each tensor's bytes are read from the file when [`read`](LazyStateDict::read) asks for
/// it. Loading a model from one holds the model's weights plus ONE tensor at a time, where
/// [`load_state_dict`](super::load_state_dict) holds the whole file next to the model.
///
/// Opening parses and checks what [`inspect`](super::inspect) checks plus that the data is
/// all there (a safetensors file ending where its header says); corrupt bytes (a CRC-32
/// mismatch in a zip archive) or a file changed since it was opened are errors of the
/// `read` that meets them. The reader keeps the file open and is not `Send`.
///
/// ```no_run
/// use boomerang::checkpoint::LazyStateDict;
/// # fn main() -> boomerang::Result<()> {
/// let mut weights = LazyStateDict::open("unet/diffusion_pytorch_model.safetensors")?;
/// let names: Vec<String> = weights.keys().map(str::to_string).collect();
/// for name in names {
///     let tensor = weights.read(&name)?; // this tensor's bytes only
///     println!("{name}: {:?}, {} bytes", tensor.shape, tensor.data.len());
/// }
/// # Ok(()) }
/// ```
pub struct LazyStateDict {
    path: PathBuf,
    parsed: Parsed,
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for LazyStateDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyStateDict")
            .field("path", &self.path)
            .field("format", &self.parsed.format)
            .field("tensors", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl LazyStateDict {
    /// Opens the state dict [`Select::Auto`] picks from the checkpoint at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &Select::Auto)
    }

    /// Opens the state dict `select` picks from the checkpoint at `path`.
    pub fn open_with(path: impl AsRef<Path>, select: &Select<'_>) -> Result<Self> {
        let path = path.as_ref();
        let src = Source::open(path)?;
        let parsed = reader::parse(src, Mode::Load).map_err(|m| checkpoint_error(path, m))?;
        let index = parsed.placeholder_index();
        let picked = select::select(&parsed.skeleton, select).map_err(|m| checkpoint_error(path, m))?;
        let mut slots: Vec<Slot> = Vec::with_capacity(picked.len());
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(picked.len());
        for (name, t) in picked {
            let i = index
                .get(&(t as *const TensorData as usize))
                .copied()
                .ok_or_else(|| checkpoint_error(path, "internal error: unknown tensor".to_string()))?;
            let slot = Slot {
                name,
                info: TensorInfo {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                },
                index: i,
            };
            // A name picked twice keeps its first position and its last tensor, as
            // `StateDict::insert` does.
            match seen.get(&slot.name) {
                Some(&at) => slots[at] = slot,
                None => {
                    seen.insert(slot.name.clone(), slots.len());
                    slots.push(slot);
                }
            }
        }
        let mut lazy = LazyStateDict {
            path: path.to_path_buf(),
            parsed,
            slots,
            by_name: HashMap::new(),
        };
        lazy.reindex()?;
        Ok(lazy)
    }

    /// The file this reads from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The names, in the file's order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// The dtype and shape of the tensor named `key`, without reading it.
    pub fn info(&self, key: &str) -> Option<&TensorInfo> {
        self.by_name.get(key).map(|&i| &self.slots[i].info)
    }

    /// `(name, dtype and shape)` pairs, in the file's order.
    pub fn infos(&self) -> impl Iterator<Item = (&str, &TensorInfo)> + '_ {
        self.slots.iter().map(|s| (s.name.as_str(), &s.info))
    }

    /// Reads the tensor named `key` from the file (in the shape [`info`](Self::info) gives).
    pub fn read(&mut self, key: &str) -> Result<TensorData> {
        let slot = match self.by_name.get(key) {
            Some(&i) => self.slots[i].clone(),
            None => {
                return Err(checkpoint_error(
                    &self.path,
                    format!("no tensor named `{}`", printable(key)),
                ))
            }
        };
        let mut t = self
            .parsed
            .materialize(slot.index)
            .map_err(|m| checkpoint_error(&self.path, m))?;
        t.shape = slot.info.shape;
        Ok(t)
    }

    /// Reads every tensor into a [`StateDict`].
    pub fn into_state_dict(mut self) -> Result<StateDict> {
        let names: Vec<String> = self.slots.iter().map(|s| s.name.clone()).collect();
        let mut sd = StateDict::new();
        for name in names {
            let t = self.read(&name)?;
            sd.insert(name, t);
        }
        Ok(sd)
    }

    /// Renames or drops tensors before they are read: `f` gets each name and its shape and
    /// returns the new name, or `None` to drop the tensor; it may change the shape to
    /// another of the same element count (e.g. a 1×1 convolution's `[o, i, 1, 1]` weight as
    /// a linear layer's `[o, i]`: the bytes are the same). Two tensors given the same name
    /// are an error naming it, as is a shape of another element count.
    pub fn rename(&mut self, mut f: impl FnMut(&str, &mut Vec<usize>) -> Option<String>) -> Result<()> {
        let mut kept = Vec::with_capacity(self.slots.len());
        for mut slot in std::mem::take(&mut self.slots) {
            let before = slot.info.numel();
            let mut shape = slot.info.shape.clone();
            let Some(name) = f(&slot.name, &mut shape) else {
                continue;
            };
            let after = TensorInfo {
                dtype: slot.info.dtype,
                shape,
            };
            if after.numel() != before {
                return Err(checkpoint_error(
                    &self.path,
                    format!(
                        "renaming `{}` changed its shape {:?} to {:?}, which has another element count",
                        printable(&slot.name),
                        slot.info.shape,
                        after.shape
                    ),
                ));
            }
            slot.name = name;
            slot.info = after;
            kept.push(slot);
        }
        self.slots = kept;
        self.reindex()
    }

    /// Removes `prefix` from every name, but only if ALL names start with it (as
    /// [`StateDict::strip_prefix`]). Returns whether it stripped.
    pub fn strip_prefix(&mut self, prefix: &str) -> Result<bool> {
        if prefix.is_empty() || self.slots.is_empty() || !self.slots.iter().all(|s| s.name.starts_with(prefix)) {
            return Ok(false);
        }
        self.rename(|name, _| Some(name[prefix.len()..].to_string()))?;
        Ok(true)
    }

    fn reindex(&mut self) -> Result<()> {
        let mut by_name = HashMap::with_capacity(self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            if by_name.insert(s.name.clone(), i).is_some() {
                return Err(Error::checkpoint(
                    &self.path,
                    format!("two tensors are named `{}`", printable(&s.name)),
                ));
            }
        }
        self.by_name = by_name;
        Ok(())
    }
}
