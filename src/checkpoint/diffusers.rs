//! THE weights finder for diffusers-format model folders (`save_pretrained` layouts): which
//! file of a component folder holds its weights, by precision variant and format.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Which weight files to read from a component folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsVariant {
    /// The file matching the compute precision (`.fp16` when computing in f16, the full
    /// file otherwise), falling back to the other one.
    #[default]
    Auto,
    /// Only the full-precision files (`diffusion_pytorch_model.safetensors`, ...).
    Full,
    /// Only the `.fp16` variant files.
    Fp16,
}

/// The weight file of a component folder `dir`: `{stem}[.fp16].safetensors`, else
/// `{bin_stem}[.fp16].bin` (PyTorch pickles, read without running code), in the order
/// `variant` (and, for [`WeightsVariant::Auto`], `half`: whether the model computes in f16)
/// asks for. diffusers' UNets and VAEs use `diffusion_pytorch_model` for both stems;
/// transformers' text encoders use `model` and `pytorch_model`.
///
/// Sharded checkpoints (`*.safetensors.index.json`) are refused with a message saying so.
pub fn find_weights(dir: &Path, stem: &str, bin_stem: &str, variant: WeightsVariant, half: bool) -> Result<PathBuf> {
    let full = [format!("{stem}.safetensors"), format!("{bin_stem}.bin")];
    let fp16 = [format!("{stem}.fp16.safetensors"), format!("{bin_stem}.fp16.bin")];
    let order: Vec<&String> = match variant {
        WeightsVariant::Full => full.iter().collect(),
        WeightsVariant::Fp16 => fp16.iter().collect(),
        WeightsVariant::Auto if half => fp16.iter().chain(full.iter()).collect(),
        WeightsVariant::Auto => full.iter().chain(fp16.iter()).collect(),
    };
    if let Some(p) = order.iter().map(|name| dir.join(name)).find(|p| p.is_file()) {
        return Ok(p);
    }
    let sharded = dir.join(format!("{stem}.safetensors.index.json")).exists();
    Err(Error::checkpoint(
        dir,
        format!(
            "no weights file: looked for {}{}",
            order.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            if sharded {
                " (sharded checkpoints are not supported)"
            } else {
                ""
            }
        ),
    ))
}

/// Weight-file extensions looked for in model folders.
pub const WEIGHT_EXTENSIONS: &[&str] = &["safetensors", "pt", "pth", "ckpt", "bin"];

/// The files of `dir` with a weight extension, sorted.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for e in entries.flatten() {
        let p = e.path();
        let is_weights = p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| WEIGHT_EXTENSIONS.iter().any(|w| w.eq_ignore_ascii_case(x)));
        if is_weights && p.is_file() {
            found.push(p);
        }
    }
    found.sort();
    Ok(found)
}

/// The one weight file of a model folder: diffusers' `diffusion_pytorch_model[.fp16]`
/// names first (also under `unet/`), else the folder's only file with a weight extension
/// (`model.ckpt`, `model-790000.ckpt`, `ckpt.pth`, ...). `None` when there is none; several
/// candidates are an error naming them.
pub fn model_weights(dir: &Path) -> Result<Option<PathBuf>> {
    let stem = "diffusion_pytorch_model";
    for d in [dir.to_path_buf(), dir.join("unet")] {
        if let Ok(p) = find_weights(&d, stem, stem, WeightsVariant::Auto, false) {
            return Ok(Some(p));
        }
    }
    let mut found = weight_files(dir)?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(Error::checkpoint(
            dir,
            format!(
                "{} weight files ({}); give the file to use",
                found.len(),
                found
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| super::printable(&n.to_string_lossy()).into_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_the_variant_asked_for_and_names_what_it_looked_for() {
        let dir = std::env::temp_dir().join(format!("boomerang-find-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stem = "diffusion_pytorch_model";
        let e = find_weights(&dir, stem, stem, WeightsVariant::Auto, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("diffusion_pytorch_model.safetensors"), "{e}");
        std::fs::write(dir.join(format!("{stem}.fp16.safetensors")), b"x").unwrap();
        std::fs::write(dir.join(format!("{stem}.bin")), b"x").unwrap();
        let pick = |v, half| find_weights(&dir, stem, stem, v, half).unwrap();
        assert!(pick(WeightsVariant::Auto, false).ends_with(format!("{stem}.bin")));
        assert!(pick(WeightsVariant::Auto, true).ends_with(format!("{stem}.fp16.safetensors")));
        assert!(pick(WeightsVariant::Full, true).ends_with(format!("{stem}.bin")));
        assert!(pick(WeightsVariant::Fp16, false).ends_with(format!("{stem}.fp16.safetensors")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
