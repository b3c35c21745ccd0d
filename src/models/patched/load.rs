//! Finding, recognising and loading Patched Diffusion checkpoints, and the sampling
//! defaults of the original script.

use std::path::{Path, PathBuf};

use tch::{Device, Kind};

use super::config::PatchedConfig;
use super::denoiser::PatchedDenoiser;
use super::network::PatchedUNet;
use super::pair::PatchedSplit;
use crate::checkpoint::StateDict;
use crate::core::prediction::Clip;
use crate::models::{loading, DEFAULT_MAX_BATCH};
use crate::schedule::DiscreteSchedule;
use crate::{Condition, Denoiser, Error, Guidance, Result, Sampler, Variance};

/// Where [`load`] takes the configuration from.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum ConfigSource {
    /// A `config.json` beside the weights (the sampling script's keyword arguments or the
    /// crate's own form); without one, the released configuration whose state-dict skeleton
    /// the weights match exactly.
    #[default]
    Auto,
    /// A preset by name ([`PatchedConfig::preset`]).
    Preset(String),
    /// This configuration.
    Explicit(Box<PatchedConfig>),
}

/// How [`load`] builds the networks.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchedOptions {
    /// Where the configuration comes from.
    pub config: ConfigSource,
    /// Device of the weights.
    pub device: Device,
    /// Compute kind (f32, f16 or bf16).
    pub kind: Kind,
    /// Largest number of items per network call.
    pub max_batch: usize,
}

impl Default for PatchedOptions {
    fn default() -> Self {
        Self {
            config: ConfigSource::Auto,
            device: Device::Cpu,
            kind: Kind::Float,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// How the original sampling script (`scripts/image_sample.py`) samples a configuration.
#[derive(Debug, Clone)]
pub struct SamplingDefaults {
    /// Ancestral sampling with the learned variance (`LEARNED_RANGE`), or fixed large
    /// without `learn_sigma`.
    pub sampler: Sampler,
    /// The respaced grid of `timestep_respacing` (ascending training steps; 250 of 1000 for
    /// every release): use them as the reverse grid's steps.
    pub steps: Vec<usize>,
    /// Dynamic thresholding at 0.995 where the script guides (class-conditional,
    /// classifier-free, scale ≠ 1), else clamping to `[-1, 1]` (`clip_denoised`) or none.
    pub clip: Clip,
    /// Classifier-free guidance against the null label, where the script guides. The run
    /// then needs class labels ([`Condition::Class`]).
    pub guidance: Option<Guidance>,
}

impl SamplingDefaults {
    /// The defaults for `config`.
    pub fn of(config: &PatchedConfig) -> Result<Self> {
        let guided = config.num_classes.is_some() && config.classifier_free && config.guidance_scale != 1.0;
        let guidance = match (guided, config.null_label()) {
            (true, Some(null)) => Some(Guidance::classifier_free(
                config.guidance_scale,
                Condition::Class(vec![null]),
            )),
            _ => None,
        };
        Ok(Self {
            sampler: Sampler::Ddpm {
                variance: if config.learn_sigma {
                    Variance::Learned
                } else {
                    Variance::FixedLarge
                },
            },
            steps: config.respaced_steps()?,
            clip: if guided {
                Clip::Dynamic {
                    quantile: 0.995,
                    interpolation: crate::core::prediction::Quantile::Nearest,
                }
            } else if config.clip_denoised {
                Clip::Range
            } else {
                Clip::Off
            },
            guidance,
        })
    }
}

/// A loaded Patched Diffusion model: one network or an SNR split, ready for
/// [`Boomerang::builder`](crate::Boomerang::builder).
pub struct PatchedModel {
    /// The denoiser ([`PatchedDenoiser`] or [`PatchedSplit`]).
    pub denoiser: Box<dyn Denoiser + Send>,
    /// The configuration (shared by all models of a split).
    pub config: PatchedConfig,
    /// The training schedule.
    pub schedule: DiscreteSchedule,
    /// How the original samples it.
    pub defaults: SamplingDefaults,
}

impl std::fmt::Debug for PatchedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchedModel")
            .field("config", &self.config)
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

/// Weight file names of a model folder, in order of preference.
const WEIGHT_EXTENSIONS: [&str; 5] = ["safetensors", "pt", "pth", "bin", "ckpt"];

/// Load a Patched Diffusion model from `path`:
///
/// - a weights file (`torch.save` state dict, `module.` prefix allowed, or safetensors);
/// - a folder with `model.<ext>`, or `model_0.<ext>`, `model_1.<ext>`, ... for an SNR split
///   (`ext` one of safetensors, pt, pth, bin, ckpt), and usually a `config.json`.
///
/// The configuration comes from `options.config`: with [`ConfigSource::Auto`] a
/// `config.json` in the folder (or beside the file), else the released configuration the
/// weights' keys and shapes match. A configuration with `snr_splits` needs as many files as
/// models (see [`load_split`]). A checkpoint of another family is refused naming what it
/// looks like.
pub fn load(path: impl AsRef<Path>, options: &PatchedOptions) -> Result<PatchedModel> {
    let path = path.as_ref();
    if path.is_dir() {
        if let Some(single) = find_weights(path, "model") {
            return load_files(&[single], Some(path.join("config.json")), options);
        }
        let mut parts = Vec::new();
        while let Some(p) = find_weights(path, &format!("model_{}", parts.len())) {
            parts.push(p);
        }
        if parts.is_empty() {
            return Err(Error::checkpoint(
                path,
                "a folder without Patched Diffusion weights: expected model.<ext> or model_0.<ext>, \
                 model_1.<ext>, ... (ext: safetensors, pt, pth, bin, ckpt)",
            ));
        }
        return load_files(&parts, Some(path.join("config.json")), options);
    }
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    let beside = path.parent().map(|d| d.join("config.json"));
    load_files(&[path.to_path_buf()], beside, options)
}

/// Load the models of an SNR split from one weights file each, highest SNR first (ImageNet:
/// `imagenet_weights_0.pt`, `imagenet_weights_1.pt`). The configuration is resolved as in
/// [`load`] (from beside the first file with [`ConfigSource::Auto`]) and must have
/// `paths.len() − 1` thresholds.
pub fn load_split<P: AsRef<Path>>(paths: &[P], options: &PatchedOptions) -> Result<PatchedModel> {
    let files: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
    let beside = files.first().and_then(|p| p.parent()).map(|d| d.join("config.json"));
    load_files(&files, beside, options)
}

/// Load one network from a weights file with a known configuration.
pub fn load_unet(path: impl AsRef<Path>, config: PatchedConfig, device: Device, kind: Kind) -> Result<PatchedUNet> {
    let path = path.as_ref();
    config.validate()?;
    let sd = read_patched_state_dict(path)?;
    PatchedUNet::from_state_dict(config, &sd, device, kind, path)
}

fn load_files(files: &[PathBuf], config_json: Option<PathBuf>, options: &PatchedOptions) -> Result<PatchedModel> {
    // An explicit configuration is validated before any weights are read.
    let mut config = match &options.config {
        ConfigSource::Auto => None,
        ConfigSource::Preset(name) => Some(PatchedConfig::preset(name)?),
        ConfigSource::Explicit(c) => {
            c.validate()?;
            Some(c.as_ref().clone())
        }
    };
    if config.is_none() {
        if let Some(cj) = config_json.filter(|c| c.is_file()) {
            let text = std::fs::read_to_string(&cj).map_err(|e| Error::io(&cj, e))?;
            if looks_like_patched_config(&text) {
                config = Some(PatchedConfig::from_json(&text).map_err(|e| Error::checkpoint(&cj, e.to_string()))?);
            }
        }
    }
    let mut dicts = Vec::with_capacity(files.len());
    for f in files {
        dicts.push((f, read_patched_state_dict(f)?));
    }
    let config = match config {
        Some(c) => c,
        None => infer_config(dicts[0].0, &dicts[0].1)?,
    };
    if config.num_models() != files.len() {
        let what = if config.snr_splits.is_empty() {
            "one model".to_string()
        } else {
            format!(
                "{} models (snr_splits {:?}; give one file per model with load_split, or a folder with \
                 model_0, model_1, ...)",
                config.num_models(),
                config.snr_splits
            )
        };
        return Err(Error::Incompatible(format!(
            "the configuration describes {what}, but {} weight file(s) were given{}",
            files.len(),
            if config.snr_splits.is_empty() {
                ""
            } else {
                "; to use a single model of a split alone, pass a configuration with empty snr_splits"
            }
        )));
    }
    let mut models = Vec::with_capacity(files.len());
    for (f, sd) in &dicts {
        let unet = PatchedUNet::from_state_dict(config.clone(), sd, options.device, options.kind, f)?;
        models.push(PatchedDenoiser::new(unet).with_max_batch(options.max_batch)?);
    }
    let denoiser: Box<dyn Denoiser + Send> = if models.len() == 1 {
        Box::new(models.remove(0))
    } else {
        Box::new(PatchedSplit::new(models, config.snr_splits.clone())?)
    };
    Ok(PatchedModel {
        denoiser,
        schedule: config.schedule()?,
        defaults: SamplingDefaults::of(&config)?,
        config,
    })
}

fn find_weights(dir: &Path, stem: &str) -> Option<PathBuf> {
    WEIGHT_EXTENSIONS
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

/// Only a JSON object naming a key of the original scripts' (or this crate's) configuration
/// counts as this family's config (a diffusers `config.json` beside the weights is not one).
fn looks_like_patched_config(text: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .is_some_and(|o| {
            [
                "patch_size",
                "model_channels",
                "num_channels",
                "class_cond",
                "learn_sigma",
                "channel_mult",
            ]
            .iter()
            .any(|k| o.contains_key(*k))
        })
}

/// Read a state dict (removing a DataParallel `module.` prefix) and check that it is a
/// Patched Diffusion one.
fn read_patched_state_dict(path: &Path) -> Result<StateDict> {
    let sd = loading::read_state_dict(path)?;
    let keys: Vec<&str> = sd.keys().collect();
    if !matches_keys(&keys) {
        return Err(Error::checkpoint(
            path,
            format!(
                "not a Patched Diffusion state dict (no `time_embed.0.weight` / `input_blocks.0.0.weight` \
                 with bare `emb_layers` and `out_layers.2`): it looks like {}",
                describe_keys(&keys)
            ),
        ));
    }
    Ok(sd)
}

fn infer_config(path: &Path, sd: &StateDict) -> Result<PatchedConfig> {
    for name in PatchedConfig::PRESETS {
        let preset = PatchedConfig::preset(name)?;
        let shapes = preset.parameter_shapes()?;
        if shapes.len() == sd.len() && shapes.iter().all(|(k, s)| sd.get(k).is_some_and(|t| t.shape == *s)) {
            return Ok(preset);
        }
    }
    let width = sd
        .get("time_embed.0.weight")
        .map(|t| t.shape.get(1).copied().unwrap_or(0))
        .unwrap_or(0);
    Err(Error::checkpoint(
        path,
        format!(
            "these Patched Diffusion weights ({} tensors, model_channels {width}) match no released \
             configuration, and the image size and patch size are not stored in them: put the sampling \
             script's flags in a config.json beside them, or pass ConfigSource::Preset / Explicit",
            sd.len()
        ),
    ))
}

/// Whether the keys (no tensor data needed) are those of a Patched Diffusion state dict.
///
/// It recognises the family's skeleton: `time_embed.0.weight`, `input_blocks.0.0.weight`,
/// `out.2.weight`, ResBlocks with a bare `emb_layers` Linear and `out_layers.2` convolution.
/// guided-diffusion's ADM UNet (same block names but `emb_layers.1`, `out_layers.3`), the DDPM
/// UNet (`temb.dense`, `down.N.block`), diffusers and NCSN++ state dicts are rejected. A
/// `module.` prefix on every key is allowed.
///
/// ```
/// use boomerang::models::patched::matches_keys;
/// assert!(matches_keys(&[
///     "time_embed.0.weight", "input_blocks.0.0.weight", "input_blocks.1.0.emb_layers.weight",
///     "input_blocks.1.0.out_layers.2.weight", "out.2.weight",
/// ]));
/// assert!(!matches_keys(&["temb.dense.0.weight", "down.0.block.0.conv1.weight"]));
/// ```
pub fn matches_keys(keys: &[&str]) -> bool {
    let all_prefixed = !keys.is_empty() && keys.iter().all(|k| k.starts_with("module."));
    let strip = |k: &&str| -> String {
        if all_prefixed {
            k["module.".len()..].to_string()
        } else {
            k.to_string()
        }
    };
    let keys: Vec<String> = keys.iter().map(strip).collect();
    let has = |f: &dyn Fn(&str) -> bool| keys.iter().any(|k| f(k));
    has(&|k| k == "time_embed.0.weight")
        && has(&|k| k == "input_blocks.0.0.weight")
        && has(&|k| k == "out.2.weight")
        && has(&|k| k.ends_with(".emb_layers.weight"))
        && has(&|k| k.ends_with(".out_layers.2.weight"))
        && !has(&|k| k.ends_with(".emb_layers.1.weight") || k.ends_with(".out_layers.3.weight"))
}

/// A short description of what family a state dict's keys look like.
pub(crate) fn describe_keys(keys: &[&str]) -> String {
    let has = |p: &str| keys.iter().any(|k| k.contains(p));
    let family = if has("temb.dense.") || has("down.0.block.") {
        "a DDPM UNet of Ho et al. (original naming: temb.dense, down.N.block)"
    } else if has("time_embedding.linear_1") || has("down_blocks.") {
        "a diffusers UNet (time_embedding, down_blocks)"
    } else if has("emb_layers.1.") || has("out_layers.3.") {
        "a guided-diffusion / ADM UNet (emb_layers.1, out_layers.3)"
    } else if has("all_modules.") {
        "an NCSN++ score network (all_modules.N)"
    } else if has("text_model.") || has("encoder.down.") {
        "a Stable Diffusion text encoder or VAE"
    } else {
        "no known family"
    };
    let first: Vec<&str> = keys.iter().take(4).copied().collect();
    format!("{family}; its {} keys start with {first:?}", keys.len())
}

/// The registry's loader: a Patched Diffusion checkpoint (file or folder; a second file for
/// an SNR split) as a Boomerang sampler with the original script's defaults: ancestral
/// sampling with the learned variance over the respaced grid (250 of 1000 steps), and for
/// class-conditional models classifier-free guidance (1.5) against the null label with
/// dynamic thresholding (0.995). Class-conditional models need the class labels.
pub(crate) fn load_pipeline(
    probe: &crate::models::Probe,
    options: &crate::models::ModelOptions,
) -> Result<crate::models::LoadedModel> {
    use crate::models::family::{clip_name, spacing_name, ClassLabels, Family, LoadedModel, ModelDescription};
    use crate::Spacing;
    options.refuse(
        "Patched Diffusion",
        &["prompt", "negative_prompt", "latent", "classifier"],
    )?;
    let config = match &options.config {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
            ConfigSource::Explicit(Box::new(
                PatchedConfig::from_json(&text).map_err(|e| Error::checkpoint(file, e.to_string()))?,
            ))
        }
        None => ConfigSource::Auto,
    };
    let popts = PatchedOptions {
        config,
        device: crate::models::parse_device(&options.device)?,
        kind: crate::models::parse_kind(&options.dtype)?,
        max_batch: options.max_batch,
    };
    let model = match &options.second {
        Some(second) => load_split(&[probe.path.clone(), second.clone()], &popts)?,
        None => load(&probe.path, &popts)?,
    };
    let mut description = ModelDescription::new(Family::PatchedDiffusion, format!("patched:{}", probe.path.display()));
    let d = &model.defaults;
    let sampler = options.sampler.unwrap_or(d.sampler);
    let spacing = options.spacing.clone().unwrap_or_else(|| {
        description.default_applied(format!("grid: the original respacing, {} steps", d.steps.len()));
        Spacing::Steps(d.steps.clone())
    });
    let clip = options.clip.unwrap_or(d.clip);
    description.set("sampler", sampler.name());
    description.set("steps", spacing_name(&spacing));
    description.set("clip", clip_name(clip));
    let null = model.config.null_label();
    let mut builder = crate::Boomerang::builder(model.denoiser, model.schedule)
        .sampler(sampler)
        .spacing(spacing)
        .clip(clip);
    match (&options.classes, model.config.num_classes) {
        (labels @ (ClassLabels::Fixed(_) | ClassLabels::PerImage), Some(_)) => {
            match labels {
                ClassLabels::Fixed(classes) => {
                    description.set("class", serde_json::json!(classes));
                    builder = builder.condition(Condition::Class(classes.clone()));
                }
                _ => description.set("class", "per image"),
            }
            let guidance = match (options.guidance, &d.guidance, null) {
                (Some(g), _, Some(null)) if g != 1.0 => {
                    Some(Guidance::classifier_free(g, Condition::Class(vec![null])))
                }
                (Some(_), _, _) => None,
                (None, Some(g), _) => Some(g.clone()),
                (None, None, _) => None,
            };
            if let Some(g) = guidance {
                description.set("guidance", g.scale());
                builder = builder.guidance(g);
            }
        }
        (ClassLabels::None, Some(n)) => {
            return Err(Error::param(
                "class",
                format!(
                    "this Patched Diffusion model is class-conditional: give the class label(s), 0..{}, \
                     or take them from the dataset's class folders",
                    n - 1
                ),
            ))
        }
        (_, None) if options.classes != ClassLabels::None => {
            return Err(Error::param(
                "class",
                "this Patched Diffusion model is unconditional; it takes no class labels",
            ))
        }
        (_, None) if options.guidance.is_some() => {
            return Err(Error::param(
                "guidance",
                "this Patched Diffusion model is unconditional; classifier-free guidance needs a class-conditional one",
            ))
        }
        (_, None) => {}
    }
    Ok(LoadedModel {
        pipeline: Box::new(builder.build()?),
        description,
    })
}
