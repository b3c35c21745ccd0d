//! The model registry: ONE place that tells what a model path holds ([`detect`]) and loads
//! it as a [`Pipeline`](crate::core::pipeline::Pipeline) ([`load`]).
//!
//! Detection reads config files and tensor KEY NAMES only (the safetensors header, the
//! pickle structure of a PyTorch file), never tensor data. Each family's module owns its
//! detection rule and its loader; the registry lists them in [`FAMILIES`], in the order the
//! rules are tried. Adding a family is one folder under `models/` and one line here.
//!
//! ```
//! use boomerang::models::registry::{self, ModelSource};
//! use boomerang::models::{Family, ModelOptions};
//! use boomerang::{NoiseStreams, TimeSpec};
//!
//! // An analytic stand-in needs no file; checkpoint paths load the same way.
//! let model = registry::load(&ModelSource::parse("gaussian:0,0.5")?, &ModelOptions::default())?;
//! assert_eq!(model.description.family, Some(Family::Analytic));
//! let x0 = ndarray::Array4::<f32>::zeros((2, 3, 8, 8));
//! let x = model.pipeline.sample(x0.view(), TimeSpec::fraction(0.3), &mut NoiseStreams::keyed(0, &[1, 2]))?;
//! assert_eq!(x.dim(), (2, 3, 8, 8));
//! # Ok::<(), boomerang::Error>(())
//! ```

use std::path::{Path, PathBuf};

use super::family::{Family, LoadedModel, ModelDescription, ModelOptions, Probe, SamplingDefaults};
use crate::analytic::{EmpiricalDenoiser, GaussianDenoiser};
use crate::apps::dataset::list_images;
use crate::checkpoint;
use crate::checkpoint::diffusers::{model_weights, weight_files};
use crate::image_io::{load_images, ColorMode};
use crate::schedule::DiscreteSchedule;
use crate::{Boomerang, Clip, DataRange, Error, Result, Sampler, Spacing};

/// What a model is named by: a checkpoint path, the built-in model, or an analytic stand-in.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// `gaussian:MEAN,STD`: the exact denoiser of Gaussian pixels (data range `[-1, 1]`).
    Gaussian {
        /// Pixel mean.
        mean: f64,
        /// Pixel standard deviation.
        std: f64,
    },
    /// `empirical:FOLDER`: the exact denoiser of the images in a folder.
    Empirical(PathBuf),
    /// `builtin:shapes32`, the model embedded in the crate.
    Builtin,
    /// A checkpoint file or model folder.
    Path(PathBuf),
}

impl ModelSource {
    /// Parse a model name as the command line's `--model` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("builtin:") {
            return match rest {
                "shapes32" => Ok(ModelSource::Builtin),
                _ => Err(Error::param(
                    "model",
                    format!("`{s}`: the built-in model is builtin:shapes32"),
                )),
            };
        }
        if let Some(rest) = s.strip_prefix("gaussian:") {
            let nums: Option<Vec<f64>> = rest.split(',').map(|p| p.trim().parse::<f64>().ok()).collect();
            return match nums.as_deref() {
                Some([mean, std]) => Ok(ModelSource::Gaussian { mean: *mean, std: *std }),
                _ => Err(Error::param(
                    "model",
                    format!("gaussian:MEAN,STD takes two numbers, e.g. gaussian:0,0.5; got `{s}`"),
                )),
            };
        }
        if let Some(rest) = s.strip_prefix("empirical:") {
            if rest.is_empty() {
                return Err(Error::param("model", "empirical:FOLDER needs a folder of images"));
            }
            return Ok(ModelSource::Empirical(PathBuf::from(rest)));
        }
        let p = PathBuf::from(s);
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(Error::param(
                "model",
                format!("`{s}`: no such file or folder (and not builtin:NAME, gaussian:MEAN,STD or empirical:FOLDER)"),
            ));
        }
        Ok(ModelSource::Path(p))
    }
}

/// One family's entry: its detection rule and its loader.
pub struct FamilyEntry {
    /// The family.
    pub family: Family,
    /// Whether a probe shows this family.
    pub detect: fn(&Probe) -> bool,
    /// Its loader (`None`: recognised, not runnable, or not in this build).
    pub load: Option<fn(&Probe, &ModelOptions) -> Result<LoadedModel>>,
}

macro_rules! loader {
    ($path:path) => {{
        #[cfg(feature = "tch")]
        let f: Option<fn(&Probe, &ModelOptions) -> Result<LoadedModel>> = Some($path);
        #[cfg(not(feature = "tch"))]
        let f: Option<fn(&Probe, &ModelOptions) -> Result<LoadedModel>> = None;
        f
    }};
}

/// Every family, in the order their rules are tried (the more specific first).
pub const FAMILIES: &[fn() -> FamilyEntry] = &[
    || FamilyEntry {
        family: Family::StableDiffusion,
        detect: is_sd_pipeline,
        load: loader!(super::stable_diffusion::load_pipeline),
    },
    || FamilyEntry {
        family: Family::StableDiffusionSingleFile,
        detect: |p| p.any_prefix("model.diffusion_model."),
        load: None,
    },
    || FamilyEntry {
        family: Family::Lpips,
        detect: |p| p.any_prefix("lin0.model.1."),
        load: None,
    },
    || FamilyEntry {
        family: Family::Ddpm,
        detect: super::ddpm::naming::matches,
        load: loader!(super::ddpm::load_pipeline),
    },
    || FamilyEntry {
        family: Family::StableDiffusionUnet,
        detect: |p| p.has("time_embedding.linear_1.weight") && p.keys.iter().any(|k| k.contains(".attn2.")),
        load: None,
    },
    || FamilyEntry {
        family: Family::NoisyClassifier,
        detect: is_noisy_classifier,
        load: None,
    },
    || FamilyEntry {
        family: Family::Ncsnpp,
        detect: is_ncsnpp,
        load: loader!(super::ncsnpp::load_pipeline),
    },
    || FamilyEntry {
        family: Family::ClipText,
        detect: |p| {
            p.any_prefix("text_model.encoder.layers.")
                || (p.has("embeddings.token_embedding.weight") && p.any_prefix("encoder.layers."))
        },
        load: None,
    },
    || FamilyEntry {
        family: Family::Vae,
        detect: |p| p.any_prefix("encoder.conv_in.") && p.any_prefix("decoder.conv_in."),
        load: None,
    },
    || FamilyEntry {
        family: Family::PatchedDiffusion,
        detect: is_patched,
        load: loader!(super::patched::load_pipeline),
    },
    || FamilyEntry {
        family: Family::GuidedDiffusion,
        detect: |p| p.any_prefix("input_blocks.") && p.any_prefix("time_embed."),
        load: None,
    },
    || FamilyEntry {
        family: Family::AlexNet,
        detect: |p| p.has("features.0.weight"),
        load: None,
    },
];

fn is_ncsnpp(p: &Probe) -> bool {
    #[cfg(feature = "tch")]
    let keys = super::ncsnpp::matches_keys(&p.key_strs());
    #[cfg(not(feature = "tch"))]
    let keys = p.any_prefix("all_modules.");
    keys
}

fn is_noisy_classifier(p: &Probe) -> bool {
    #[cfg(feature = "tch")]
    let keys = super::ncsnpp::matches_classifier_keys(&p.key_strs());
    #[cfg(not(feature = "tch"))]
    let keys = p.any_prefix("classifier.classifier.") || p.any_prefix("classifier.condition_modules.");
    keys
}

fn is_patched(p: &Probe) -> bool {
    let config = p.config.as_ref().is_some_and(|c| c.get("patch_size").is_some());
    #[cfg(feature = "tch")]
    let keys = super::patched::matches_keys(&p.key_strs());
    #[cfg(not(feature = "tch"))]
    let keys = p.any_prefix("input_blocks.") && p.any_prefix("time_embed.") && p.any_prefix("variance_output");
    keys || (p.keys.is_empty() && config)
}

fn is_sd_pipeline(p: &Probe) -> bool {
    p.is_dir && p.path.join("model_index.json").is_file() && p.path.join("unet").is_dir() && p.path.join("vae").is_dir()
}

/// What [`detect`] found.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The family ([`Family::Unknown`] when no rule matched).
    pub family: Family,
    /// What was looked at (key names, weight file, config).
    pub probe: Probe,
}

/// The family of a checkpoint file or model folder, from config files and tensor key names
/// only (no tensor data is read).
pub fn detect(path: &Path) -> Result<Detection> {
    let probe = probe(path)?;
    let family = FAMILIES
        .iter()
        .map(|entry| entry())
        .find(|e| (e.detect)(&probe))
        .map_or(Family::Unknown, |e| e.family);
    Ok(Detection { family, probe })
}

/// The family that tensor key names alone point to (e.g. one file of a folder).
pub fn family_of_keys(keys: Vec<String>) -> Family {
    let probe = Probe {
        keys,
        ..Probe::default()
    };
    FAMILIES
        .iter()
        .map(|entry| entry())
        .find(|e| (e.detect)(&probe))
        .map_or(Family::Unknown, |e| e.family)
}

/// Look at a path: its weight file's key names and its config.
pub fn probe(path: &Path) -> Result<Probe> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let is_dir = meta.is_dir();
    let mut probe = Probe {
        path: path.to_path_buf(),
        is_dir,
        ..Probe::default()
    };
    if is_dir && path.join("model_index.json").is_file() {
        return Ok(probe);
    }
    let weights = if is_dir {
        // A folder of several weight files (an SNR split's model_0, model_1): the first one's
        // keys tell the family; its loader picks the files.
        match model_weights(path) {
            Ok(w) => w,
            Err(e) => Some(weight_files(path)?.into_iter().next().ok_or(e)?),
        }
    } else {
        Some(path.to_path_buf())
    };
    if let Some(w) = &weights {
        probe.keys = tensor_names(w)?;
    }
    probe.weights = weights;
    let config = probe.folder().join("config.json");
    if config.is_file() {
        probe.config = Some(read_json(&config)?);
        probe.config_path = Some(config);
    }
    Ok(probe)
}

/// The tensor key names of a weight file, from its header / pickle structure only (no tensor
/// data is read): the state dict [`Select::Auto`](checkpoint::Select::Auto) would pick, with
/// a `module.` prefix removed, else every tensor's key path.
pub fn tensor_names(path: &Path) -> Result<Vec<String>> {
    let inventory = checkpoint::inspect(path)?;
    // A training container (`{'model', 'ema', 'optimizer', 'step'}`, score_sde / DLSM): the
    // model's own state dict names it, whatever weights a loader later picks.
    let container = inventory.tensors().any(|(k, _)| k.starts_with("model."))
        && inventory.entries().iter().any(|e| e.key.starts_with("ema."));
    let picked = if container {
        inventory.select(&checkpoint::Select::Path(&["model"]))
    } else {
        inventory.select(&checkpoint::Select::Auto)
    };
    let keys: Vec<String> = match picked {
        Ok(picked) => picked.into_iter().map(|(k, _)| k).collect(),
        Err(_) => inventory.tensors().map(|(k, _)| k.to_string()).collect(),
    };
    let all_prefixed = !keys.is_empty() && keys.iter().all(|k| k.starts_with("module."));
    Ok(if all_prefixed {
        keys.into_iter().map(|k| k["module.".len()..].to_string()).collect()
    } else {
        keys
    })
}

/// Read a small JSON file (at most 16 MB).
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() || meta.len() > 16 << 20 {
        return Err(Error::checkpoint(path, "not a regular JSON file of at most 16 MB"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::checkpoint(path, format!("invalid JSON: {e}")))
}

/// Load what `source` names as a ready-to-run model.
pub fn load(source: &ModelSource, options: &ModelOptions) -> Result<LoadedModel> {
    if options.max_batch == 0 {
        return Err(Error::param("batch size", "must be at least 1"));
    }
    let d = options.device.as_str();
    let device_ok = matches!(d, "auto" | "cpu" | "cuda" | "gpu" | "mps")
        || d.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    if !device_ok {
        return Err(Error::param(
            "device",
            format!("`{d}` is not a device; use auto, cpu, cuda, cuda:N or mps"),
        ));
    }
    if !matches!(options.dtype.as_str(), "f32" | "f16" | "bf16") {
        return Err(Error::param(
            "dtype",
            format!("`{}` is not a compute dtype; use f32, f16 or bf16", options.dtype),
        ));
    }
    match source {
        ModelSource::Gaussian { mean, std } => {
            let name = format!("gaussian:{mean},{std}");
            analytic(GaussianDenoiser::new(*mean, *std)?, name, options)
        }
        ModelSource::Empirical(dir) => {
            let list = list_images(dir)?;
            if list.images.is_empty() {
                return Err(Error::param(
                    "model",
                    format!("empirical:{}: the folder holds no PNG or JPEG images", dir.display()),
                ));
            }
            let paths: Vec<PathBuf> = list.images.iter().map(|r| dir.join(r)).collect();
            let data = load_images(&paths, ColorMode::Rgb, DataRange::MinusOneToOne)?;
            let name = format!("empirical:{}", dir.display());
            analytic(EmpiricalDenoiser::new(data, DataRange::MinusOneToOne)?, name, options)
        }
        ModelSource::Builtin => builtin(options),
        ModelSource::Path(path) => {
            let found = detect(path)?;
            let entry = FAMILIES
                .iter()
                .map(|e| e())
                .find(|e| e.family == found.family && (e.detect)(&found.probe));
            let known = entry.is_some();
            match entry.and_then(|e| e.load) {
                Some(load) => load(&found.probe, options),
                None if known && cfg!(not(feature = "tch")) && runnable(found.family) => {
                    Err(Error::Unsupported(format!(
                        "{} holds a {}; running it needs libtorch, and this build has no `tch` feature \
                         (build with default features)",
                        path.display(),
                        found.family
                    )))
                }
                _ => Err(Error::Unsupported(format!(
                    "{} holds a {}, which the sampling commands cannot run{}",
                    path.display(),
                    found.family,
                    hint(found.family)
                ))),
            }
        }
    }
}

fn runnable(f: Family) -> bool {
    matches!(
        f,
        Family::Ddpm | Family::StableDiffusion | Family::PatchedDiffusion | Family::Ncsnpp
    )
}

fn hint(f: Family) -> &'static str {
    match f {
        Family::StableDiffusionUnet | Family::Vae | Family::ClipText => {
            " alone: give the whole diffusers pipeline folder (model_index.json, unet/, vae/, ...)"
        }
        Family::StableDiffusionSingleFile => ": convert it to a diffusers folder first",
        Family::NoisyClassifier => ": it guides a score model (pass it as the classifier)",
        Family::Unknown => ": no known family's key names were found (`boomerang info` lists them)",
        _ => "",
    }
}

fn analytic<D: crate::Denoiser + 'static>(denoiser: D, name: String, options: &ModelOptions) -> Result<LoadedModel> {
    options.require_cpu_f32("analytic")?;
    options.refuse(
        "analytic",
        &[
            "prompt",
            "negative_prompt",
            "guidance",
            "latent",
            "classes",
            "classifier",
            "second",
            "config",
        ],
    )?;
    let mut description = ModelDescription::new(Family::Analytic, name);
    let defaults = SamplingDefaults {
        sampler: Sampler::ddpm(),
        spacing: Spacing::Full,
        clip: Clip::Off,
    };
    let (sampler, spacing, clip) = defaults.resolve(options, &mut description);
    description.default_applied("schedule: Ho et al.'s linear β 1e-4..0.02 over 1000 steps");
    let runner = Boomerang::builder(denoiser, DiscreteSchedule::ddpm()?)
        .sampler(sampler)
        .spacing(spacing)
        .clip(clip)
        .build()?;
    Ok(LoadedModel {
        pipeline: Box::new(runner),
        description,
    })
}

#[cfg(feature = "tch")]
fn builtin(options: &ModelOptions) -> Result<LoadedModel> {
    super::pretrained::load_pipeline(options)
}

#[cfg(not(feature = "tch"))]
fn builtin(_options: &ModelOptions) -> Result<LoadedModel> {
    Err(Error::Unsupported(
        "the built-in model (the default --model) runs on libtorch, and this build has no `tch` \
         feature: pass --model gaussian:MEAN,STD or empirical:FOLDER, or build with default features"
            .into(),
    ))
}
