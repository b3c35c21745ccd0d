//! What every model family provides the [registry](super::registry): the [`Family`] names,
//! the [`Probe`] a detection rule looks at, the [`ModelOptions`] a loader honours, and the
//! [`LoadedModel`] it returns. Family modules depend on this file; the registry depends on
//! the families; nothing depends back on the registry.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::core::codec::LatentMode;
use crate::core::pipeline::Pipeline;
use crate::{Clip, Error, Result, Sampler, Spacing};

/// The model families the crate knows, runnable or only recognised.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Ho et al.'s DDPM UNet (pesser / FastDPM / DDIM key names, or diffusers'
    /// `UNet2DModel`), including models made by `boomerang train` and the built-in one.
    Ddpm,
    /// A Stable Diffusion 1.x/2.x diffusers pipeline folder (latent space).
    StableDiffusion,
    /// Patched Diffusion (Luhman & Luhman): a patched ADM UNet predicting `x0`.
    PatchedDiffusion,
    /// NCSN++ score models on the VE SDE (score_sde / DLSM).
    Ncsnpp,
    /// DLSM's time-conditional classifier (a guide for NCSN++, not runnable alone).
    NoisyClassifier,
    /// An exact denoiser (`gaussian:MEAN,STD`, `empirical:FOLDER`): no network.
    Analytic,
    /// Stable Diffusion's UNet alone (diffusers `UNet2DConditionModel`): load the pipeline.
    StableDiffusionUnet,
    /// An original-layout (LDM) Stable Diffusion single file (`model.diffusion_model.*`).
    StableDiffusionSingleFile,
    /// A VAE (`encoder.conv_in`, `decoder.conv_in`).
    Vae,
    /// A CLIP text encoder.
    ClipText,
    /// guided / improved diffusion (`input_blocks.*`, `time_embed.*`) without Patched
    /// Diffusion's heads.
    GuidedDiffusion,
    /// LPIPS linear layers (the crate's perceptual metric).
    Lpips,
    /// torchvision AlexNet.
    AlexNet,
    /// Nothing recognised.
    Unknown,
}

impl Family {
    /// A human description.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Ddpm => "DDPM UNet (Ho et al.; pesser / FastDPM / DDIM / diffusers UNet2DModel)",
            Family::StableDiffusion => "Stable Diffusion pipeline (diffusers folder)",
            Family::PatchedDiffusion => "Patched Diffusion UNet (Luhman & Luhman)",
            Family::Ncsnpp => "NCSN++ score model (score_sde / DLSM)",
            Family::NoisyClassifier => "time-conditional classifier (DLSM resnet_cond)",
            Family::Analytic => "analytic denoiser (no network)",
            Family::StableDiffusionUnet => "Stable Diffusion UNet (diffusers UNet2DConditionModel)",
            Family::StableDiffusionSingleFile => "Stable Diffusion single-file checkpoint (LDM layout)",
            Family::Vae => "VAE (autoencoder)",
            Family::ClipText => "CLIP text encoder",
            Family::GuidedDiffusion => "guided/improved-diffusion UNet",
            Family::Lpips => "LPIPS linear layers",
            Family::AlexNet => "AlexNet (torchvision)",
            Family::Unknown => "unrecognised model",
        }
    }

    /// A short stable name, for manifests and `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ddpm => "ddpm",
            Family::StableDiffusion => "stable-diffusion",
            Family::PatchedDiffusion => "patched-diffusion",
            Family::Ncsnpp => "ncsnpp",
            Family::NoisyClassifier => "noisy-classifier",
            Family::Analytic => "analytic",
            Family::StableDiffusionUnet => "stable-diffusion-unet",
            Family::StableDiffusionSingleFile => "stable-diffusion-single-file",
            Family::Vae => "vae",
            Family::ClipText => "clip-text",
            Family::GuidedDiffusion => "guided-diffusion",
            Family::Lpips => "lpips",
            Family::AlexNet => "alexnet",
            Family::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What a detection rule sees of a model path: its tensor key names (read from headers and
/// pickle structure only, never tensor data) and the config files next to it.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The path given.
    pub path: PathBuf,
    /// Whether it is a folder.
    pub is_dir: bool,
    /// Tensor key names of the weight file (or of the folder's weight file).
    pub keys: Vec<String>,
    /// The weight file the keys come from.
    pub weights: Option<PathBuf>,
    /// `config.json` next to the weights (or in the folder), parsed.
    pub config: Option<serde_json::Value>,
    /// Where that config is.
    pub config_path: Option<PathBuf>,
}

impl Probe {
    /// Whether a key equals `k`.
    pub fn has(&self, k: &str) -> bool {
        self.keys.iter().any(|x| x == k)
    }

    /// Whether any key starts with `prefix`.
    pub fn any_prefix(&self, prefix: &str) -> bool {
        self.keys.iter().any(|x| x.starts_with(prefix))
    }

    /// The keys as `&str`.
    pub fn key_strs(&self) -> Vec<&str> {
        self.keys.iter().map(String::as_str).collect()
    }

    /// The folder of the model (the path itself, or a weight file's folder).
    pub fn folder(&self) -> &Path {
        if self.is_dir {
            &self.path
        } else {
            self.path.parent().unwrap_or(Path::new("."))
        }
    }
}

/// Where the class labels of a class-conditional model (or of classifier guidance) come
/// from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClassLabels {
    /// No labels: unconditional models, no classifier guidance.
    #[default]
    None,
    /// Fixed labels: one for all images, or one per image of a batch.
    Fixed(Vec<i64>),
    /// A label per image given with each call ([`Pipeline::sample_conditioned`]),
    /// e.g. the class folder of each image of a dataset
    /// ([`FolderClasses`](crate::apps::classes::FolderClasses)).
    PerImage,
}

/// How to load and run a model. Every field is optional: `None` means the family's default,
/// and a setting the family cannot use is an error naming it (never silently ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// `auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:N`, `mps`.
    pub device: String,
    /// Compute dtype: `f32`, `f16`, `bf16`.
    pub dtype: String,
    /// Largest batch run through a network at once.
    pub max_batch: usize,
    /// The reverse sampler.
    pub sampler: Option<Sampler>,
    /// The reverse grid.
    pub spacing: Option<Spacing>,
    /// `x̂0` clipping.
    pub clip: Option<Clip>,
    /// A configuration file for a bare checkpoint (the family's own or the original code's).
    pub config: Option<PathBuf>,
    /// Text prompt (text-conditioned models).
    pub prompt: Option<String>,
    /// Negative prompt (text-conditioned models).
    pub negative_prompt: Option<String>,
    /// Guidance scale: classifier-free (text or class models) or the classifier's weight.
    pub guidance: Option<f64>,
    /// How a latent model encodes images.
    pub latent: Option<LatentMode>,
    /// Class labels (class-conditional models, or the target class of classifier guidance).
    pub classes: ClassLabels,
    /// A time-conditional classifier checkpoint for classifier guidance.
    pub classifier: Option<PathBuf>,
    /// Weight of the classifier's gradient (DLSM's `scaling_factor`; default 1).
    pub classifier_scale: Option<f64>,
    /// A second checkpoint (Patched Diffusion's low-SNR model of an SNR-split pair).
    pub second: Option<PathBuf>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            device: "auto".into(),
            dtype: "f32".into(),
            max_batch: 8,
            sampler: None,
            spacing: None,
            clip: None,
            config: None,
            prompt: None,
            negative_prompt: None,
            guidance: None,
            latent: None,
            classes: ClassLabels::None,
            classifier: None,
            classifier_scale: None,
            second: None,
        }
    }
}

impl ModelOptions {
    /// Refuse the options named in `unused` that are set: `family` cannot use them.
    pub fn refuse(&self, family: &str, unused: &[&str]) -> Result<()> {
        for &name in unused {
            let set = match name {
                "prompt" => self.prompt.is_some(),
                "negative_prompt" => self.negative_prompt.is_some(),
                "guidance" => self.guidance.is_some(),
                "latent" => self.latent.is_some(),
                "classes" => self.classes != ClassLabels::None,
                "classifier" => self.classifier.is_some() || self.classifier_scale.is_some(),
                "second" => self.second.is_some(),
                "config" => self.config.is_some(),
                "clip" => self.clip.is_some(),
                _ => false,
            };
            if set {
                let why = match name {
                    "prompt" | "negative_prompt" => "needs a text-conditioned model (Stable Diffusion)",
                    "guidance" => "needs a text- or class-conditional model (Stable Diffusion, Patched Diffusion)",
                    "latent" => "applies to latent models (Stable Diffusion)",
                    "classes" => "needs a class-conditional model or classifier guidance",
                    "classifier" => "applies to score models with classifier guidance (NCSN++)",
                    "second" => "applies to SNR-split pairs (Patched Diffusion)",
                    "clip" => "applies to pixel-space models",
                    _ => "is not used by this model",
                };
                return Err(Error::param(
                    option_name(name),
                    format!("{why}; the {family} model is not one it applies to"),
                ));
            }
        }
        Ok(())
    }

    /// Analytic models run on the CPU in f32.
    pub fn require_cpu_f32(&self, family: &str) -> Result<()> {
        if !matches!(self.device.as_str(), "auto" | "cpu") {
            return Err(Error::param(
                "device",
                format!(
                    "the {family} model runs on the CPU; `{}` is not available for it",
                    self.device
                ),
            ));
        }
        if self.dtype != "f32" {
            return Err(Error::param(
                "dtype",
                format!(
                    "the {family} model computes in f32; `{}` is not available for it",
                    self.dtype
                ),
            ));
        }
        Ok(())
    }
}

/// The name users know an option by (the command line's flags).
fn option_name(field: &str) -> &'static str {
    match field {
        "prompt" => "prompt",
        "negative_prompt" => "negative prompt",
        "guidance" => "guidance",
        "latent" => "latent",
        "classes" => "class",
        "classifier" => "classifier",
        "second" => "second model",
        "config" => "config",
        "clip" => "clip",
        _ => "option",
    }
}

/// What a loaded model is: its family, a name for manifests and logs, the settings it read
/// or was given, and the defaults it applied (so a user sees what ran).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelDescription {
    /// The family (`None` only for a default-constructed description).
    pub family: Option<Family>,
    /// A short name (e.g. `ddpm:path/to/model.ckpt`).
    pub name: String,
    /// Settings worth recording (sampler, steps, clip, prompt, ...), for manifests.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// The defaults it applied, in words (e.g. "schedule: Ho et al.'s linear 1e-4..0.02").
    pub defaults: Vec<String>,
}

impl ModelDescription {
    /// A description of `family` named `name`.
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Self {
            family: Some(family),
            name: name.into(),
            ..Self::default()
        }
    }

    /// Record a setting.
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.settings.insert(key.to_string(), value.into());
    }

    /// Record a default that was applied.
    pub fn default_applied(&mut self, what: impl Into<String>) {
        self.defaults.push(what.into());
    }
}

/// A model ready to run: a [`Pipeline`] the applications drive, and what it is.
pub struct LoadedModel {
    /// Boomerang on images.
    pub pipeline: Box<dyn Pipeline>,
    /// What was loaded and how it runs.
    pub description: ModelDescription,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// The sampling settings a family runs with unless told otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingDefaults {
    /// Sampler.
    pub sampler: Sampler,
    /// Grid.
    pub spacing: Spacing,
    /// `x̂0` clipping.
    pub clip: Clip,
}

impl SamplingDefaults {
    /// The options' choices where given, these defaults elsewhere; records both in `desc`.
    pub fn resolve(&self, options: &ModelOptions, desc: &mut ModelDescription) -> (Sampler, Spacing, Clip) {
        let sampler = options.sampler.unwrap_or_else(|| {
            desc.default_applied(format!("sampler: {}", self.sampler.name()));
            self.sampler
        });
        let spacing = options.spacing.clone().unwrap_or_else(|| {
            desc.default_applied(format!("grid: {}", spacing_name(&self.spacing)));
            self.spacing.clone()
        });
        let clip = options.clip.unwrap_or_else(|| {
            desc.default_applied(format!("clip: {}", clip_name(self.clip)));
            self.clip
        });
        desc.set("sampler", sampler.name());
        if let Sampler::Ddim { eta } = sampler {
            desc.set("eta", eta);
        }
        desc.set("steps", spacing_name(&spacing));
        desc.set("clip", clip_name(clip));
        (sampler, spacing, clip)
    }
}

/// A grid in words: `full`, `uniform:N`, `step-linear:S`, `var-quadratic:S`, `steps:[...]`.
pub fn spacing_name(s: &Spacing) -> String {
    use crate::sampler::FastDpmKind;
    let kind = |k: &FastDpmKind| match k {
        FastDpmKind::Linear => "linear",
        FastDpmKind::Quadratic => "quadratic",
    };
    match s {
        Spacing::Full => "full".into(),
        Spacing::Uniform(n) => format!("uniform:{n}"),
        Spacing::FastDpmStep { steps, kind: k } => format!("step-{}:{steps}", kind(k)),
        Spacing::FastDpmVar { steps, kind: k } => format!("var-{}:{steps}", kind(k)),
        Spacing::Steps(v) => format!("steps:{v:?}"),
    }
}

/// A clipping mode in words: `off`, `range`, `dynamic:Q`.
pub fn clip_name(c: Clip) -> String {
    match c {
        Clip::Off => "off".into(),
        Clip::Range => "range".into(),
        Clip::Dynamic { quantile, .. } => format!("dynamic:{quantile}"),
    }
}
