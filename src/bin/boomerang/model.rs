//! `--model` and the options that build what the commands run: argument parsing only. The
//! library's model registry detects the family and loads it as a `Pipeline`.

use std::path::PathBuf;

use boomerang::apps::classes::ClassFolders;
use boomerang::core::codec::LatentMode;
use boomerang::core::pipeline::Pipeline;
use boomerang::core::prediction::Quantile;
use boomerang::models::registry::{self, ModelSource};
use boomerang::models::{ClassLabels, ModelOptions};
use boomerang::sampler::FastDpmKind;
use boomerang::{Clip, Sampler, Spacing};
use clap::{Args, ValueEnum};

use crate::CliError;

/// Options shared by every command that runs a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: a checkpoint file or folder (family detected from its contents: DDPM UNet
    /// checkpoints, Stable Diffusion diffusers folders, Patched Diffusion, NCSN++), the
    /// embedded `builtin:shapes32`, or an analytic stand-in: `gaussian:MEAN,STD` (exact
    /// denoiser of Gaussian pixels) or `empirical:FOLDER` (exact denoiser of the images in
    /// FOLDER) [default: builtin:shapes32, a small DDPM UNet of 32×32 coloured shapes that
    /// ships with the crate].
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,

    /// The model's architecture, for a checkpoint without one beside it: diffusers'
    /// config.json or the original code's model config as JSON (DDPM: ch, out_ch, ch_mult,
    /// num_res_blocks, attn_resolutions, dropout, resamp_with_conv, in_channels, resolution).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Reverse sampler [default: the model family's: ddpm for pixel-space DDPM models, ddim
    /// for Stable Diffusion, pc for NCSN++].
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerArg>,

    /// DDIM's η in [0, 1] (0: deterministic DDIM, 1: DDPM-like); only with the ddim sampler.
    #[arg(long)]
    pub eta: Option<f64>,

    /// The reverse grid: N (N evenly spaced steps over the whole range, of which a run from t
    /// uses its share), `full` (every training step), FastDPM's `step-linear:S`,
    /// `step-quadratic:S`, `var-linear:S`, `var-quadratic:S`, or diffusers' `leading:N`,
    /// `trailing:N`, `linspace:N` [default: the family's: full for DDPM, 100 for Stable
    /// Diffusion].
    #[arg(long, value_name = "GRID", value_parser = parse_steps)]
    pub steps: Option<StepsArg>,

    /// Global seed; every image's noise derives from (seed, image key).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Images per model batch (results do not depend on it).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub batch_size: usize,

    /// Device: auto (CUDA if available), cpu, cuda, cuda:N or mps (analytic models run on
    /// the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,

    /// Compute dtype: f32, f16 or bf16 (analytic models use f32).
    #[arg(long, default_value = "f32")]
    pub dtype: String,

    /// Clip the predicted x0 to the data range at every step (pixel-space models)
    /// [default: the model's own setting: on for DDPM models, as in Ho et al.'s sampler and
    /// diffusers' `clip_sample`; off for the analytic ones].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub clip_denoised: Option<bool>,

    /// Dynamic thresholding of the predicted x0 at this quantile (Patched Diffusion: 0.995).
    #[arg(long, value_name = "Q", conflicts_with = "clip_denoised")]
    pub threshold: Option<f64>,

    /// Text prompt, one for all images (text-conditioned models: Stable Diffusion)
    /// [default: the empty prompt].
    #[arg(long)]
    pub prompt: Option<String>,

    /// Negative prompt (Stable Diffusion) [default: the empty prompt].
    #[arg(long)]
    pub negative_prompt: Option<String>,

    /// Classifier-free guidance scale (Stable Diffusion: 7.5; class-conditional Patched
    /// Diffusion: 1.5).
    #[arg(long)]
    pub guidance: Option<f64>,

    /// How Stable Diffusion encodes images: the VAE posterior's mode (as the Boomerang
    /// notebook) or a sample of it (as diffusers' img2img) [default: mode].
    #[arg(long, value_enum)]
    pub latent: Option<LatentArg>,

    /// Class label(s) for class-conditional models or classifier guidance: one for all
    /// images, a comma-separated list with one per image, or `folders` (anonymize, augment:
    /// each image gets its class folder's label; folders named 0, 1, ... keep their
    /// numbers, other names are numbered in sorted order as torchvision's ImageFolder does).
    #[arg(long = "class", value_name = "LABELS", value_parser = parse_class)]
    pub class: Option<ClassArg>,

    /// With `--class folders`: a JSON map from class folder to label, `{"cat": 3, ...}` or
    /// ImageNet's imagenet_class_index.json (for a dataset holding some of a model's classes).
    #[arg(long, value_name = "FILE")]
    pub class_map: Option<PathBuf>,

    /// A time-conditional classifier checkpoint for classifier guidance (NCSN++ / DLSM).
    #[arg(long, value_name = "CHECKPOINT")]
    pub classifier: Option<PathBuf>,

    /// Weight of the classifier gradient [default: 1, DLSM's].
    #[arg(long, value_name = "SCALE")]
    pub classifier_scale: Option<f64>,

    /// The second model of an SNR-split pair (Patched Diffusion ImageNet: the low-SNR model).
    #[arg(long, value_name = "CHECKPOINT")]
    pub second_model: Option<PathBuf>,
}

/// `--class`: labels, or the images' class folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassArg {
    /// One label for all images, or one per image.
    Labels(Vec<i64>),
    /// Each image's class folder.
    Folders,
}

fn parse_class(s: &str) -> Result<ClassArg, String> {
    if s == "folders" {
        return Ok(ClassArg::Folders);
    }
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<i64>()
                .map_err(|_| format!("`{x}` is not a class label: give labels (3 or 3,5,7) or `folders`"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(ClassArg::Labels)
}

/// The reverse samplers offered on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SamplerArg {
    /// Ancestral DDPM with the posterior variance (the paper's Algorithm 1).
    Ddpm,
    /// DDIM with `--eta` (default 0).
    Ddim,
    /// Predictor-corrector (VE score models).
    Pc,
    /// PNDM / PLMS (Stable Diffusion's default scheduler).
    Pndm,
    /// Euler (deterministic).
    Euler,
    /// Euler ancestral.
    EulerA,
    /// DPM-Solver++(2M).
    Dpmpp2m,
}

/// `--latent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LatentArg {
    /// The posterior mean: deterministic.
    Mode,
    /// A posterior sample, from the image's own noise stream.
    Sample,
}

/// A parsed `--steps`.
#[derive(Debug, Clone, PartialEq)]
pub enum StepsArg {
    /// A grid that needs nothing from the model.
    Grid(Spacing),
    /// diffusers' spacing, resolved against the model's number of training steps.
    Diffusers(String, usize),
}

fn parse_steps(s: &str) -> Result<StepsArg, String> {
    let bad = || {
        format!(
            "`{s}`: use N, full, step-linear:S, step-quadratic:S, var-linear:S, var-quadratic:S, \
             leading:N, trailing:N or linspace:N (N, S ≥ 1)"
        )
    };
    if s == "full" {
        return Ok(StepsArg::Grid(Spacing::Full));
    }
    let count = |v: &str| v.trim().parse::<usize>().ok().filter(|&n| n >= 1).ok_or_else(bad);
    let Some((kind, n)) = s.split_once(':') else {
        return Ok(StepsArg::Grid(Spacing::Uniform(count(s)?)));
    };
    let steps = count(n)?;
    Ok(match kind {
        "step-linear" => StepsArg::Grid(Spacing::FastDpmStep {
            steps,
            kind: FastDpmKind::Linear,
        }),
        "step-quadratic" => StepsArg::Grid(Spacing::FastDpmStep {
            steps,
            kind: FastDpmKind::Quadratic,
        }),
        "var-linear" => StepsArg::Grid(Spacing::FastDpmVar {
            steps,
            kind: FastDpmKind::Linear,
        }),
        "var-quadratic" => StepsArg::Grid(Spacing::FastDpmVar {
            steps,
            kind: FastDpmKind::Quadratic,
        }),
        "leading" | "trailing" | "linspace" => StepsArg::Diffusers(kind.to_string(), steps),
        _ => return Err(bad()),
    })
}

impl ModelArgs {
    fn sampler(&self) -> Result<Option<Sampler>, CliError> {
        if self.eta.is_some() && self.sampler != Some(SamplerArg::Ddim) {
            return Err(CliError::usage(
                "--eta applies to the ddim sampler only (--sampler ddim)",
            ));
        }
        Ok(self.sampler.map(|which| match which {
            SamplerArg::Ddpm => Sampler::ddpm(),
            SamplerArg::Ddim => Sampler::ddim(self.eta.unwrap_or(0.0)),
            SamplerArg::Pc => Sampler::predictor_corrector(),
            SamplerArg::Pndm => Sampler::Pndm,
            SamplerArg::Euler => Sampler::Euler,
            SamplerArg::EulerA => Sampler::EulerAncestral,
            SamplerArg::Dpmpp2m => Sampler::DpmSolverPp2M,
        }))
    }

    /// How class folders become labels (`--class folders`), for the dataset commands.
    pub fn class_folders(&self) -> Result<Option<ClassFolders>, CliError> {
        match (&self.class, &self.class_map) {
            (Some(ClassArg::Folders), Some(map)) => Ok(Some(ClassFolders::read_map(map)?)),
            (Some(ClassArg::Folders), None) => Ok(Some(ClassFolders::Auto)),
            (_, Some(_)) => Err(CliError::usage("--class-map needs --class folders")),
            _ => Ok(None),
        }
    }

    /// Refuse `--class folders` for commands that take no class-per-folder dataset.
    pub fn refuse_class_folders(&self, command: &str) -> Result<(), CliError> {
        if matches!(self.class, Some(ClassArg::Folders)) || self.class_map.is_some() {
            return Err(CliError::usage(format!(
                "--class folders labels the images of a class-per-folder dataset (anonymize, augment); \
                 `{command}` takes the label(s) themselves: --class 3 or --class 3,5"
            )));
        }
        Ok(())
    }

    /// The library's options.
    pub fn options(&self) -> Result<ModelOptions, CliError> {
        if self.batch_size == 0 {
            return Err(CliError::usage("--batch-size must be at least 1"));
        }
        let spacing = match &self.steps {
            None => None,
            Some(StepsArg::Grid(g)) => Some(g.clone()),
            // diffusers' spacings depend on T; every released model has 1000 steps, and a
            // model with another T is refused by the grid itself (steps past T).
            Some(StepsArg::Diffusers(kind, n)) => {
                let offset = if kind == "leading" { 1 } else { 0 };
                Some(Spacing::diffusers(1000, *n, kind, offset)?)
            }
        };
        let clip = match (self.clip_denoised, self.threshold) {
            (_, Some(q)) => Some(Clip::Dynamic {
                quantile: q,
                interpolation: Quantile::Nearest,
            }),
            (Some(true), None) => Some(Clip::Range),
            (Some(false), None) => Some(Clip::Off),
            (None, None) => None,
        };
        Ok(ModelOptions {
            device: self.device.clone(),
            dtype: self.dtype.clone(),
            max_batch: self.batch_size,
            sampler: self.sampler()?,
            spacing,
            clip,
            config: self.config.clone(),
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            guidance: self.guidance,
            latent: self.latent.map(|l| match l {
                LatentArg::Mode => LatentMode::Mode,
                LatentArg::Sample => LatentMode::Sample,
            }),
            classes: match &self.class {
                None => ClassLabels::None,
                Some(ClassArg::Labels(v)) => ClassLabels::Fixed(v.clone()),
                Some(ClassArg::Folders) => ClassLabels::PerImage,
            },
            classifier: self.classifier.clone(),
            classifier_scale: self.classifier_scale,
            second: self.second_model.clone(),
        })
    }
}

/// A loaded model, its name for manifests and logs, and the settings worth recording.
pub struct Loaded {
    /// What the commands run.
    pub runner: Box<dyn Pipeline>,
    /// A short name of the model.
    pub name: String,
    /// Sampler settings and the like, for manifests.
    pub settings: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Load whatever `--model` names, through the library's registry.
pub fn load_runner(args: &ModelArgs) -> Result<Loaded, CliError> {
    let source = match &args.model {
        Some(m) => ModelSource::parse(m)?,
        None => ModelSource::Builtin,
    };
    let loaded = registry::load(&source, &args.options()?)?;
    Ok(Loaded {
        runner: loaded.pipeline,
        name: loaded.description.name,
        settings: loaded.description.settings,
    })
}
