//! Reading model checkpoints without Python, and writing safetensors.
//!
//! Supported inputs, recognised by their first bytes (never by the file name):
//!
//! * **safetensors**;
//! * **PyTorch zip archives**, what `torch.save` writes by default since PyTorch 1.6;
//! * **legacy `torch.save` files** (`_use_new_zipfile_serialization=False`, or PyTorch < 1.6);
//! * bare pickles (protocols 2-5) without tensors.
//!
//! # Safety of pickles
//!
//! A pickle is a program: loading one with Python's `pickle` (or `torch.load` with
//! `weights_only=False`) can run any code. This module implements the pickle machine itself
//! and resolves the globals a pickle names only against a short allow-list of what a state
//! dict needs (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage` and the other storage
//! types, `collections.OrderedDict`, ...), emulated in Rust. Anything else (`os.system`,
//! `builtins.eval`, `numpy` arrays, whole pickled `nn.Module`s) is refused with an
//! [`Error::Checkpoint`] naming the global. Sizes read from the file
//! are checked against the file's length before anything is allocated, and malformed input
//! gives an error, never a panic.
//!
//! # Picking the weights
//!
//! Checkpoints nest their state dicts in different ways; [`Select`] says where to look, and
//! [`Select::Auto`] handles the common layouts (see its documentation). Key order is kept as
//! stored: PyTorch's `state_dict()` order is the order modules registered their parameters,
//! which [`Select::EmaShadow`] relies on.
//!
//! ```no_run
//! use boomerang::checkpoint::{self, Select};
//! # fn main() -> boomerang::Result<()> {
//! // pesser's DDPM conversion: a plain state dict.
//! let sd = checkpoint::load_state_dict("diffusion_cifar10_model/model-790000.ckpt")?;
//! // DLSM: EMA weights stored as an unnamed list next to the named model dict.
//! let ckpt = checkpoint::Checkpoint::open("Cifar10/score/checkpoint.pth")?;
//! let ema = ckpt.state_dict(&Select::EmaShadow {
//!     model: &["model"],
//!     shadow: &["ema", "shadow_params"],
//!     exclude: &["sigmas", "all_modules.0.W"],
//! })?;
//! checkpoint::save_safetensors(&ema, "dlsm_cifar10_ema.safetensors")?;
//! # Ok(()) }
//! ```
//!
//! # Hostile files
//!
//! Files are read by position, never memory-mapped, so a checkpoint truncated while it is
//! read (a training script re-saving it) is an error, not a crash; only regular files are
//! opened (a FIFO, a device or a folder is refused). Every size read from a file is checked
//! against the file's length before anything is allocated, and large buffers are allocated
//! fallibly. The unpickler never recurses on the pickle's nesting beyond a fixed depth, and
//! its work and memory are bounded by budgets proportional to the pickle's size, so pickle
//! bombs (deep nesting, exponentially shared tuples, repeated copies) end in an error that
//! names the limit. Names quoted in error messages pass through [`printable`].
//!
//! # Reading tensor by tensor
//!
//! [`LazyStateDict`] holds a selected state dict's metadata and reads each tensor's bytes
//! when asked for, so a model loads its weights without a second copy of the file in memory
//! (the Stable Diffusion loader reads its UNet, VAE and text encoder this way).
//!
//! # Inspecting without loading
//!
//! [`inspect`] lists every tensor's key path, dtype and shape, and the values around them,
//! from the file's metadata alone (the safetensors header, a zip's `data.pkl`, a legacy
//! file's pickles); [`Inventory::select`] says what a [`Select`] would pick.
//
// Module graph, acyclic: each module uses only modules listed after it.
//   mod.rs (the facade) > lazy > inventory > reader > torch_format > safetensors_io > parsed
//   > pickle > zip_index > source > select > value > tensor > format > text > limits
// `reader` alone knows every format; the format modules share `parsed` (what a parse yields)
// and `source` (how bytes are read) instead of importing each other.

pub mod diffusers;
mod format;
mod inventory;
mod lazy;
mod limits;
mod parsed;
mod pickle;
mod reader;
mod safetensors_io;
mod select;
mod source;
mod tensor;
mod text;
mod torch_format;
mod value;
mod zip_index;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use format::Format;
pub use inventory::{inspect, Entry, EntryKind, Inventory, TensorInfo};
pub use lazy::LazyStateDict;
pub use safetensors_io::save_safetensors;
pub use select::Select;
pub use tensor::{DType, StateDict, TensorData};
pub use text::printable;
pub use value::Value;

use parsed::{Mode, Parsed};
use source::{Source, MEMORY};
use text::checkpoint_error;

/// A checkpoint file, parsed, with all its tensors in memory.
///
/// For only the weights, [`load_state_dict`] and [`load_state_dict_with`] are cheaper: they
/// copy out only the selected tensors (not, say, the optimizer state next to them).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    format: Format,
    root: Value,
}

fn parse_path(path: &Path) -> Result<Parsed> {
    let src = Source::open(path)?;
    reader::parse(src, Mode::Load).map_err(|m| checkpoint_error(path, m))
}

impl Checkpoint {
    /// Reads a checkpoint of any supported [`Format`], chosen from the file's first bytes.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let parsed = parse_path(path)?;
        let format = parsed.format;
        let root = parsed.into_value().map_err(|m| checkpoint_error(path, m))?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            format,
            root,
        })
    }

    /// Parses a checkpoint held in memory (downloaded, embedded, ...). Its [`path`] and the
    /// path in its errors read `<memory>`.
    ///
    /// [`path`]: Checkpoint::path
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Checkpoint> {
        let path = Path::new(MEMORY);
        let parsed = reader::parse(Source::from_bytes(bytes), Mode::Load).map_err(|m| checkpoint_error(path, m))?;
        let format = parsed.format;
        let root = parsed.into_value().map_err(|m| checkpoint_error(path, m))?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            format,
            root,
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

    /// The object tree (for safetensors, one flat dict of tensors).
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Consumes the checkpoint, returning its object tree.
    pub fn into_root(self) -> Value {
        self.root
    }

    /// The state dict that `select` picks (tensors are copied).
    pub fn state_dict(&self, select: &Select<'_>) -> Result<StateDict> {
        let picked = select::select(&self.root, select).map_err(|m| checkpoint_error(&self.path, m))?;
        Ok(picked.into_iter().map(|(k, t)| (k, t.clone())).collect())
    }
}

/// Reads the state dict of a checkpoint with [`Select::Auto`].
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<StateDict> {
    load_state_dict_with(path, &Select::Auto)
}

/// Reads the state dict that `select` picks, materializing only its tensors (for one tensor
/// at a time, see [`LazyStateDict`]).
pub fn load_state_dict_with(path: impl AsRef<Path>, select: &Select<'_>) -> Result<StateDict> {
    LazyStateDict::open_with(path, select)?.into_state_dict()
}

/// Reads the state dict `select` picks from `input` and writes it to `output` as safetensors
/// (which must not exist yet). Returns what it wrote.
pub fn convert_to_safetensors(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    select: &Select<'_>,
) -> Result<StateDict> {
    let output = output.as_ref();
    if output.exists() {
        return Err(Error::checkpoint(
            output,
            "refusing to overwrite an existing file; delete it or choose another output path",
        ));
    }
    let sd = load_state_dict_with(input, select)?;
    save_safetensors(&sd, output)?;
    Ok(sd)
}
