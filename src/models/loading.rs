//! Copying a [`StateDict`] into a `tch` [`VarStore`], name for name.
//!
//! Every model family declares its variables under the checkpoint's own key names, so
//! loading is a copy by name once the family has mapped foreign namings (e.g. diffusers')
//! onto its own. [`load_state_dict_into`] checks the whole state dict before touching any
//! variable and reports every problem at once: missing keys, unexpected keys, shape and
//! dtype mismatches, each with the first few names and a count.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::checkpoint::{DType, LazyStateDict, StateDict, TensorData};
use crate::{Error, Result};

/// How strict [`load_state_dict_into`] is. The default is fully strict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Leave variables that the state dict lacks at their current values instead of
    /// failing.
    pub allow_missing: bool,
    /// Ignore tensors of the state dict that the model does not have instead of failing.
    pub allow_unexpected: bool,
}

/// How many names of each kind of problem an error message lists.
const SHOW: usize = 5;

/// The libtorch kind of a checkpoint dtype, if libtorch has one.
pub fn kind_of(dtype: DType) -> Option<Kind> {
    Some(match dtype {
        DType::F64 => Kind::Double,
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

fn is_float_kind(kind: Kind) -> bool {
    matches!(kind, Kind::Double | Kind::Float | Kind::Half | Kind::BFloat16)
}

/// A host tensor from a checkpoint entry, in the entry's own dtype (one copy of the bytes).
pub fn tensor_from_data(t: &TensorData) -> Result<Tensor> {
    t.check_len()?;
    let kind = kind_of(t.dtype)
        .ok_or_else(|| Error::Model(format!("checkpoint dtype {} has no libtorch equivalent", t.dtype)))?;
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(&t.data, &shape, kind)?)
}

/// Copy every variable of `vs` from the tensor of the same name in `sd`, converting dtype
/// (e.g. an fp16 checkpoint into an f32 model) and moving it to the store's device.
///
/// Before anything is copied, the names and shapes are compared; if any variable is
/// missing from `sd` (unless [`LoadOptions::allow_missing`]), any tensor of `sd` has no
/// variable (unless [`LoadOptions::allow_unexpected`]), or a shape or dtype class (float
/// vs. integer) differs, the result is an [`Error::Checkpoint`] for `source` that names the
/// first few offending keys of each kind with their counts, and `vs` is unchanged.
pub fn load_state_dict_into(vs: &mut VarStore, sd: &StateDict, source: &Path, options: &LoadOptions) -> Result<()> {
    load_into(vs, &mut InMemory(sd), source, options)
}

/// [`load_state_dict_into`] from a [`LazyStateDict`]: each tensor is read from the file,
/// copied into its variable and dropped before the next is read, so the load holds the
/// model's weights plus one tensor (a whole state dict would hold the file's size again).
///
/// The names, shapes and dtypes are checked before anything is read, as by
/// [`load_state_dict_into`]; an error while reading (corrupt bytes, a file changed since it
/// was opened) can leave `vs` partly loaded, so callers load into a model they drop on error.
pub fn load_lazy_into(vs: &mut VarStore, sd: &mut LazyStateDict, options: &LoadOptions) -> Result<()> {
    let source = sd.path().to_path_buf();
    load_into(vs, sd, &source, options)
}

/// What [`load_into`] knows of a tensor before reading it.
struct Meta {
    dtype: DType,
    shape: Vec<usize>,
    /// Why its bytes do not fit its shape, if they do not.
    bad_len: Option<String>,
}

/// Where [`load_into`] takes tensors from.
trait Weights {
    fn names(&self) -> Vec<String>;
    fn meta(&self, key: &str) -> Option<Meta>;
    fn tensor(&mut self, key: &str) -> Result<Tensor>;
}

struct InMemory<'a>(&'a StateDict);

impl Weights for InMemory<'_> {
    fn names(&self) -> Vec<String> {
        self.0.keys().map(str::to_string).collect()
    }
    fn meta(&self, key: &str) -> Option<Meta> {
        self.0.get(key).map(|t| Meta {
            dtype: t.dtype,
            shape: t.shape.clone(),
            bad_len: t.check_len().err().map(|_| {
                format!(
                    "{} bytes of data for shape {:?} and dtype {}",
                    t.data.len(),
                    t.shape,
                    t.dtype
                )
            }),
        })
    }
    fn tensor(&mut self, key: &str) -> Result<Tensor> {
        let t = self
            .0
            .get(key)
            .ok_or_else(|| Error::Model(format!("internal error: `{key}` vanished")))?;
        tensor_from_data(t)
    }
}

impl Weights for LazyStateDict {
    fn names(&self) -> Vec<String> {
        self.keys().map(str::to_string).collect()
    }
    fn meta(&self, key: &str) -> Option<Meta> {
        self.info(key).map(|i| Meta {
            dtype: i.dtype,
            shape: i.shape.clone(),
            // The reader checks each tensor's extent when it reads it.
            bad_len: None,
        })
    }
    fn tensor(&mut self, key: &str) -> Result<Tensor> {
        tensor_from_data(&self.read(key)?)
    }
}

fn load_into(vs: &mut VarStore, sd: &mut dyn Weights, source: &Path, options: &LoadOptions) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    let mut plan = Vec::with_capacity(vars.len());
    for (name, var) in &vars {
        match sd.meta(name) {
            None => missing.push(name.clone()),
            Some(t) => {
                let want: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
                let var_kind = var.f_kind()?;
                let src_kind = kind_of(t.dtype);
                if want != t.shape {
                    mismatched.push(format!("{name}: model {want:?}, checkpoint {:?}", t.shape));
                } else if src_kind.map(is_float_kind) != Some(is_float_kind(var_kind)) {
                    mismatched.push(format!(
                        "{name}: model dtype {var_kind:?}, checkpoint dtype {}",
                        t.dtype
                    ));
                } else if let Some(why) = t.bad_len {
                    mismatched.push(format!("{name}: {why}"));
                } else {
                    plan.push((name, var));
                }
            }
        }
    }
    let unexpected: Vec<String> = sd.names().into_iter().filter(|k| !vars.contains_key(k)).collect();
    let fail_missing = !missing.is_empty() && !options.allow_missing;
    let fail_unexpected = !unexpected.is_empty() && !options.allow_unexpected;
    if fail_missing || fail_unexpected || !mismatched.is_empty() {
        let mut msg = String::from("the weights do not match the model");
        if fail_missing {
            let _ = write!(msg, "; {}", list("missing key", &missing));
        }
        if fail_unexpected {
            let _ = write!(msg, "; {}", list("unexpected key", &unexpected));
        }
        if !mismatched.is_empty() {
            let _ = write!(msg, "; {}", list("mismatched tensor", &mismatched));
        }
        if fail_missing && fail_unexpected {
            let _ = write!(
                msg,
                " (many missing and unexpected keys usually mean another naming scheme or \
                 architecture: check the configuration)"
            );
        }
        return Err(Error::checkpoint(source, msg));
    }
    super::guard_panics(|| {
        let _no_grad = tch::no_grad_guard();
        for (name, var) in plan {
            let src = sd.tensor(name)?;
            let mut dst = var.shallow_clone();
            dst.f_copy_(&src)
                .map_err(|e| Error::checkpoint(source, format!("copying `{name}`: {e}")))?;
        }
        Ok(())
    })
}

/// `"3 missing keys: a, b, c"`, at most [`SHOW`] names then `", ..."`.
pub(crate) fn list(what: &str, items: &[String]) -> String {
    let n = items.len();
    let mut s = format!("{n} {what}{}: ", if n == 1 { "" } else { "s" });
    s.push_str(&items.iter().take(SHOW).cloned().collect::<Vec<_>>().join(", "));
    if n > SHOW {
        s.push_str(", ...");
    }
    s
}

/// Read a checkpoint file (safetensors or PyTorch pickle) into a state dict with
/// [`crate::checkpoint::load_state_dict`], removing a `module.` prefix that
/// `nn.DataParallel` adds to every key.
pub fn read_state_dict(path: &Path) -> Result<StateDict> {
    let mut sd = crate::checkpoint::load_state_dict(path)?;
    sd.strip_prefix("module.");
    Ok(sd)
}

/// The variables of `vs` as `f32` host tensors sorted by name: what a network's
/// `state_dict()` returns (for saving with
/// [`save_safetensors`](crate::checkpoint::save_safetensors)).
pub fn var_store_state_dict(vs: &VarStore) -> Result<StateDict> {
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    crate::models::guard_panics(|| {
        let mut sd = StateDict::new();
        for name in names {
            sd.insert(name.clone(), crate::models::crossing::tensor_to_data(&vars[name])?);
        }
        Ok(sd)
    })
}
