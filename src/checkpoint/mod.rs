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

pub mod diffusers;
mod pickle;
mod safetensors_io;
mod select;
mod tensor;
mod torch_format;
mod value;
mod zip_index;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use safetensors_io::save_safetensors;
pub use tensor::{DType, StateDict, TensorData};
pub use value::Value;

use torch_format::{FileBytes, Parsed};

/// The container format of a checkpoint file.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A safetensors file.
    SafeTensors,
    /// A PyTorch zip archive (`torch.save`'s default since PyTorch 1.6).
    TorchZip,
    /// The legacy `torch.save` stream of pickles followed by raw storages.
    TorchLegacy,
    /// A bare pickle, without tensor storages.
    Pickle,
}

/// Where the state dict lies inside a checkpoint's object tree.
///
/// Every variant removes a `module.` prefix from the names when all of them carry it (the
/// mark of `torch.nn.DataParallel`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Select<'a> {
    /// Guess from the layout:
    ///
    /// * a flat dict of tensors: itself;
    /// * a dict with an `"ema"` dict of tensors: that (sampling uses the EMA weights); else
    ///   `"state_dict"`, else `"model"`;
    /// * a dict whose `"ema"` is `{decay, num_updates, shadow_params: [...]}` (DLSM /
    ///   score_sde): an error that explains how to use [`Select::EmaShadow`], since the
    ///   model's non-trainable names cannot be guessed;
    /// * a list or tuple (DDIM's `[model, optimizer, epoch, step, ema]`): its last element
    ///   that is a dict of tensors;
    /// * anything else: an error that outlines the top-level structure.
    #[default]
    Auto,
    /// Follow dict keys and list indices given as strings, e.g. `&["ema"]`, `&["state_dict"]`
    /// or `&["4"]` (`"-1"` is the last item); the target must be a dict of tensors.
    Path(&'a [&'a str]),
    /// Name an unnamed list of EMA shadow parameters with a model dict's names: the names at
    /// `model`, in stored order and without those in `exclude` (matched after removing
    /// `module.`), are zipped with the tensors at `shadow`; the excluded names take their
    /// tensors from the model dict. Counts and shapes must agree; the error names the first
    /// mismatch.
    EmaShadow {
        /// Path to the named model dict, e.g. `&["model"]`.
        model: &'a [&'a str],
        /// Path to the list of shadow tensors, e.g. `&["ema", "shadow_params"]`.
        shadow: &'a [&'a str],
        /// The model's entries that have no shadow: buffers and parameters with
        /// `requires_grad=False`.
        exclude: &'a [&'a str],
    },
}

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

/// The path reported for checkpoints parsed from memory.
const MEMORY: &str = "<memory>";

fn parse_path(path: &Path) -> Result<Parsed> {
    let file = FileBytes::open(path)?;
    torch_format::parse(file).map_err(|m| Error::checkpoint(path, m))
}

impl Checkpoint {
    /// Reads a checkpoint of any supported [`Format`], chosen from the file's first bytes.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let parsed = parse_path(path)?;
        let format = parsed.format;
        let root = parsed.into_value().map_err(|m| Error::checkpoint(path, m))?;
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
        let parsed = torch_format::parse(FileBytes::Owned(bytes)).map_err(|m| Error::checkpoint(path, m))?;
        let format = parsed.format;
        let root = parsed.into_value().map_err(|m| Error::checkpoint(path, m))?;
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
        let picked = select::select(&self.root, select).map_err(|m| Error::checkpoint(&self.path, m))?;
        Ok(picked.into_iter().map(|(k, t)| (k, t.clone())).collect())
    }
}

/// Reads the state dict of a checkpoint with [`Select::Auto`].
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<StateDict> {
    load_state_dict_with(path, &Select::Auto)
}

/// Reads the state dict that `select` picks, materializing only its tensors.
pub fn load_state_dict_with(path: impl AsRef<Path>, select: &Select<'_>) -> Result<StateDict> {
    let path = path.as_ref();
    let mut parsed = parse_path(path)?;
    let ctx = |m: String| Error::checkpoint(path, m);
    let index = parsed.placeholder_index();
    let picked: Vec<(String, usize)> = select::select(&parsed.skeleton, select)
        .map_err(ctx)?
        .into_iter()
        .map(|(k, t)| {
            index
                .get(&(t as *const TensorData as usize))
                .map(|&i| (k, i))
                .ok_or_else(|| "internal error: unknown tensor".to_string())
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(ctx)?;
    let mut sd = StateDict::new();
    for (k, i) in picked {
        let t = parsed.materialize(i).map_err(ctx)?;
        sd.insert(k, t);
    }
    Ok(sd)
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

/// The tensor key names of a checkpoint file (the state dict [`Select::Auto`] picks).
///
/// Used by the model registry to tell families apart.
pub fn tensor_names(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let sd = load_state_dict(path)?;
    Ok(sd.keys().map(str::to_string).collect())
}

/// `s` with control characters escaped (`\u{1b}`), for printing names read from files.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().any(char::is_control) {
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        s.into()
    }
}
