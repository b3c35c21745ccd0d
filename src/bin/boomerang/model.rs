//! `--model` and the options that build what the commands run. Every model family plugs in
//! at one place, [`load_runner`], and comes out as a [`Runner`], a [`LocalSampler`] that the
//! library's applications drive.

use std::path::{Path, PathBuf};

use boomerang::analytic::{EmpiricalDenoiser, GaussianDenoiser};
use boomerang::apps::dataset::{list_images, ModelInput};
use boomerang::core::local::LocalSampler;
use boomerang::image_io::{load_images, ColorMode};
use boomerang::schedule::DiscreteSchedule;
use boomerang::{Boomerang, DataRange, Denoiser, NoiseSchedule, NoiseStreams, Sampler, Spacing, TimeSpec};
use clap::{Args, ValueEnum};
use ndarray::{Array4, ArrayView4};

use crate::info::{detect, Family};
use crate::CliError;

/// Options shared by every command that runs a model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: a checkpoint file or folder (family detected from its contents: DDPM UNet
    /// checkpoints, Stable Diffusion diffusers folders), the embedded `builtin:shapes32`, or
    /// an analytic stand-in: `gaussian:MEAN,STD` (exact denoiser of Gaussian pixels) or
    /// `empirical:FOLDER` (exact denoiser of the images in FOLDER) [default:
    /// builtin:shapes32, a small DDPM UNet of 32×32 coloured shapes that ships with the crate].
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,

    /// Reverse sampler [default: ddpm; ddim for Stable Diffusion].
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerArg>,

    /// DDIM's η in [0, 1] (0: deterministic DDIM, 1: DDPM-like); only with the ddim sampler.
    #[arg(long)]
    pub eta: Option<f64>,

    /// Respace the reverse process to N evenly spaced steps over the whole range (a run from
    /// t uses its share) [default: every training step; 100 for Stable Diffusion].
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,

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

    /// Text prompt, one for all images (text-conditioned models: Stable Diffusion)
    /// [default: the empty prompt].
    #[arg(long)]
    pub prompt: Option<String>,

    /// Negative prompt (Stable Diffusion) [default: the empty prompt].
    #[arg(long)]
    pub negative_prompt: Option<String>,

    /// Classifier-free guidance scale (Stable Diffusion) [default: 7.5].
    #[arg(long)]
    pub guidance: Option<f64>,

    /// How Stable Diffusion encodes images: the VAE posterior's mode (as the Boomerang
    /// notebook) or a sample of it (as diffusers' img2img).
    #[arg(long, value_enum, default_value_t = LatentArg::Mode)]
    pub latent: LatentArg,
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

impl ModelArgs {
    fn sampler_for(&self, default: SamplerArg) -> Result<(SamplerArg, Sampler), CliError> {
        let which = self.sampler.unwrap_or(default);
        if self.eta.is_some() && which != SamplerArg::Ddim {
            return Err(CliError::usage(
                "--eta applies to the ddim sampler only (--sampler ddim)",
            ));
        }
        let sampler = match which {
            SamplerArg::Ddpm => Sampler::ddpm(),
            SamplerArg::Ddim => Sampler::ddim(self.eta.unwrap_or(0.0)),
            SamplerArg::Pc => Sampler::predictor_corrector(),
            SamplerArg::Pndm => Sampler::Pndm,
            SamplerArg::Euler => Sampler::Euler,
            SamplerArg::EulerA => Sampler::EulerAncestral,
            SamplerArg::Dpmpp2m => Sampler::DpmSolverPp2M,
        };
        Ok((which, sampler))
    }

    fn spacing_for(&self, default: Spacing) -> Result<Spacing, CliError> {
        match self.steps {
            None => Ok(default),
            Some(0) => Err(CliError::usage("--steps must be at least 1")),
            Some(n) => Ok(Spacing::Uniform(n)),
        }
    }
}

/// What `--model` names.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// `gaussian:MEAN,STD`.
    Gaussian {
        /// Pixel mean (data range [-1, 1]).
        mean: f64,
        /// Pixel standard deviation.
        std: f64,
    },
    /// `empirical:FOLDER`.
    Empirical(PathBuf),
    /// `builtin:shapes32`, the embedded default model.
    Builtin,
    /// A checkpoint file or folder.
    Path(PathBuf),
}

impl ModelSpec {
    /// Parse the `--model` value.
    pub fn parse(s: &str) -> Result<Self, CliError> {
        if let Some(rest) = s.strip_prefix("builtin:") {
            return match rest {
                "shapes32" => Ok(ModelSpec::Builtin),
                _ => Err(CliError::usage(format!(
                    "--model {s}: the built-in model is builtin:shapes32"
                ))),
            };
        }
        if let Some(rest) = s.strip_prefix("gaussian:") {
            let parts: Vec<&str> = rest.split(',').collect();
            let nums: Option<Vec<f64>> = parts.iter().map(|p| p.trim().parse::<f64>().ok()).collect();
            return match nums.as_deref() {
                Some([mean, std]) => Ok(ModelSpec::Gaussian { mean: *mean, std: *std }),
                _ => Err(CliError::usage(format!(
                    "--model gaussian:MEAN,STD takes two numbers, e.g. gaussian:0,0.5; got `{s}`"
                ))),
            };
        }
        if let Some(rest) = s.strip_prefix("empirical:") {
            if rest.is_empty() {
                return Err(CliError::usage("--model empirical:FOLDER needs a folder of images"));
            }
            return Ok(ModelSpec::Empirical(PathBuf::from(rest)));
        }
        let p = PathBuf::from(s);
        if !p.exists() {
            return Err(CliError::usage(format!(
                "--model {s}: no such file or folder (and not gaussian:MEAN,STD or empirical:FOLDER)"
            )));
        }
        Ok(ModelSpec::Path(p))
    }
}

/// What the commands run: a pixel-space Boomerang runner, or Stable Diffusion.
pub enum Runner {
    /// Any pixel-space denoiser with its schedule, sampler and grid.
    Pixel(Boomerang<Box<dyn Denoiser>>),
    /// Stable Diffusion with its prompts, guidance, sampler and grid.
    #[cfg(feature = "tch")]
    StableDiffusion(
        Box<boomerang::models::stable_diffusion::StableDiffusion>,
        boomerang::models::stable_diffusion::SdBoomerangParams,
    ),
}

impl LocalSampler for Runner {
    fn input(&self) -> ModelInput {
        match self {
            Runner::Pixel(r) => r.input(),
            #[cfg(feature = "tch")]
            Runner::StableDiffusion(sd, p) => sd_sampler(sd, p).map(|s| s.input()).unwrap_or_else(|_| ModelInput {
                channels: 3,
                size: None,
                multiple: 8,
                range: DataRange::MinusOneToOne,
            }),
        }
    }

    fn start_time(&self, t: TimeSpec) -> boomerang::Result<f64> {
        match self {
            Runner::Pixel(r) => r.start_time(t),
            #[cfg(feature = "tch")]
            Runner::StableDiffusion(sd, p) => sd_sampler(sd, p)?.start_time(t),
        }
    }

    fn sample(
        &self,
        images: ArrayView4<'_, f32>,
        t: TimeSpec,
        noise: &mut NoiseStreams,
    ) -> boomerang::Result<Array4<f32>> {
        match self {
            Runner::Pixel(r) => r.sample(images, t, noise),
            #[cfg(feature = "tch")]
            Runner::StableDiffusion(sd, p) => sd_sampler(sd, p)?.sample(images, t, noise),
        }
    }
}

#[cfg(feature = "tch")]
fn sd_sampler<'a>(
    sd: &'a boomerang::models::stable_diffusion::StableDiffusion,
    params: &boomerang::models::stable_diffusion::SdBoomerangParams,
) -> boomerang::Result<boomerang::core::local::StableDiffusionSampler<'a>> {
    boomerang::core::local::StableDiffusionSampler::new(sd, params.clone())
}

/// A loaded runner, its name for manifests and logs, and the settings worth recording.
pub struct Loaded {
    /// What the commands run.
    pub runner: Runner,
    /// A short name of the model.
    pub name: String,
    /// Sampler settings and the like, for manifests.
    pub settings: Vec<(&'static str, serde_json::Value)>,
}

/// Ho et al.'s DDPM schedule (linear β from 1e-4 to 0.02, T = 1000): the analytic models'
/// and the default for DDPM checkpoints without a `scheduler_config.json`.
pub fn ddpm_schedule() -> Result<DiscreteSchedule, CliError> {
    Ok(DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
}

fn check_cpu_f32(args: &ModelArgs, what: &str) -> Result<(), CliError> {
    if !matches!(args.device.as_str(), "auto" | "cpu") {
        return Err(CliError::usage(format!(
            "the {what} model runs on the CPU; --device {} is not available for it",
            args.device
        )));
    }
    if args.dtype != "f32" {
        return Err(CliError::usage(format!(
            "the {what} model computes in f32; --dtype {} is not available for it",
            args.dtype
        )));
    }
    Ok(())
}

fn check_common(args: &ModelArgs) -> Result<(), CliError> {
    let d = args.device.as_str();
    let ok = matches!(d, "auto" | "cpu" | "cuda" | "mps")
        || d.strip_prefix("cuda:").is_some_and(|n| n.parse::<usize>().is_ok());
    if !ok {
        return Err(CliError::usage(format!(
            "--device {d}: use auto, cpu, cuda, cuda:N or mps"
        )));
    }
    if !matches!(args.dtype.as_str(), "f32" | "f16" | "bf16") {
        return Err(CliError::usage(format!("--dtype {}: use f32, f16 or bf16", args.dtype)));
    }
    if args.batch_size == 0 {
        return Err(CliError::usage("--batch-size must be at least 1"));
    }
    Ok(())
}

fn refuse_text_options(args: &ModelArgs, what: &str) -> Result<(), CliError> {
    if args.prompt.is_some() || args.negative_prompt.is_some() || args.guidance.is_some() {
        return Err(CliError::usage(format!(
            "--prompt, --negative-prompt and --guidance need a text-conditioned model (Stable \
             Diffusion); the {what} model is not one"
        )));
    }
    if args.latent != LatentArg::Mode {
        return Err(CliError::usage(format!(
            "--latent applies to Stable Diffusion, not to the {what} model"
        )));
    }
    Ok(())
}

/// A pixel-space runner from a denoiser and its schedule, with the sampler options.
fn pixel_runner(
    denoiser: Box<dyn Denoiser>,
    schedule: NoiseSchedule,
    name: String,
    args: &ModelArgs,
    clip_by_default: bool,
) -> Result<Loaded, CliError> {
    let (which, sampler) = args.sampler_for(SamplerArg::Ddpm)?;
    let spacing = args.spacing_for(Spacing::Full)?;
    let runner = Boomerang::builder(denoiser, schedule)
        .sampler(sampler)
        .spacing(spacing.clone())
        .clip_denoised(args.clip_denoised.unwrap_or(clip_by_default))
        .build()?;
    let mut settings = settings(which, args, spacing);
    settings.push((
        "clip_denoised",
        serde_json::json!(args.clip_denoised.unwrap_or(clip_by_default)),
    ));
    Ok(Loaded {
        runner: Runner::Pixel(runner),
        name,
        settings,
    })
}

fn settings(which: SamplerArg, args: &ModelArgs, spacing: Spacing) -> Vec<(&'static str, serde_json::Value)> {
    let name = which
        .to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default();
    let mut v = vec![("sampler", serde_json::Value::String(name))];
    if which == SamplerArg::Ddim {
        v.push(("eta", serde_json::json!(args.eta.unwrap_or(0.0))));
    }
    v.push((
        "steps",
        match spacing {
            Spacing::Uniform(n) => serde_json::json!(n),
            _ => serde_json::Value::String("full".into()),
        },
    ));
    v
}

/// Load whatever `--model` names. New families plug in here.
pub fn load_runner(args: &ModelArgs) -> Result<Loaded, CliError> {
    check_common(args)?;
    let spec = match &args.model {
        Some(m) => ModelSpec::parse(m)?,
        None => ModelSpec::Builtin,
    };
    match spec {
        ModelSpec::Builtin => {
            refuse_text_options(args, "shapes32")?;
            load_builtin(args)
        }
        ModelSpec::Gaussian { mean, std } => {
            check_cpu_f32(args, "gaussian")?;
            refuse_text_options(args, "gaussian")?;
            let denoiser = Box::new(GaussianDenoiser::new(mean, std)?);
            pixel_runner(
                denoiser,
                ddpm_schedule()?.into(),
                format!("gaussian:{mean},{std}"),
                args,
                false,
            )
        }
        ModelSpec::Empirical(dir) => {
            check_cpu_f32(args, "empirical")?;
            refuse_text_options(args, "empirical")?;
            let list = list_images(&dir)?;
            if list.images.is_empty() {
                return Err(CliError::usage(format!(
                    "--model empirical:{}: the folder holds no PNG or JPEG images",
                    dir.display()
                )));
            }
            let paths: Vec<PathBuf> = list.images.iter().map(|r| dir.join(r)).collect();
            let data = load_images(&paths, ColorMode::Rgb, DataRange::MinusOneToOne)?;
            let denoiser = Box::new(EmpiricalDenoiser::new(data, DataRange::MinusOneToOne)?);
            pixel_runner(
                denoiser,
                ddpm_schedule()?.into(),
                format!("empirical:{}", dir.display()),
                args,
                false,
            )
        }
        ModelSpec::Path(path) => load_checkpoint_model(&path, args),
    }
}

/// The family of a model folder from its config files alone (no weights read).
fn family_from_configs(path: &Path) -> Option<Family> {
    if !path.is_dir() {
        return None;
    }
    if path.join("model_index.json").is_file() && path.join("unet").is_dir() && path.join("vae").is_dir() {
        return Some(Family::StableDiffusionPipeline);
    }
    let text = std::fs::read_to_string(path.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    match v.get("_class_name")?.as_str()? {
        "UNet2DModel" => Some(Family::DiffusersDdpm),
        _ => None,
    }
}

/// A checkpoint file or folder: find its family (from config files when there are some, else
/// from the weights' names), then hand it to that family's loader.
fn load_checkpoint_model(path: &Path, args: &ModelArgs) -> Result<Loaded, CliError> {
    let family = match family_from_configs(path) {
        Some(f) => f,
        None => detect(path)?.family,
    };
    match family {
        Family::Ddpm | Family::DiffusersDdpm => {
            refuse_text_options(args, "DDPM")?;
            load_ddpm(path, args)
        }
        Family::StableDiffusionPipeline => load_sd(path, args),
        other => Err(CliError::unsupported(format!(
            "{} holds a {} checkpoint, which the sampling commands cannot run; `boomerang info {}` \
             lists what it holds (runnable: DDPM UNet checkpoints and Stable Diffusion diffusers \
             folders)",
            path.display(),
            other.describe(),
            path.display()
        ))),
    }
}

#[cfg(feature = "tch")]
/// Where a model's `scheduler_config.json` may be: beside the weights or the folder's
/// `scheduler/` subfolder (diffusers layouts).
fn schedule_dirs(path: &Path) -> Vec<PathBuf> {
    let base = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let mut dirs = vec![base.join("scheduler"), base.clone()];
    if let Some(parent) = base.parent() {
        // `<pipeline>/unet/` given directly: the scheduler is a sibling folder.
        dirs.push(parent.join("scheduler"));
    }
    dirs
}

/// The DDPM UNet of Ho et al. (original, pesser, FastDPM, DDIM or diffusers naming). Its
/// schedule comes from `scheduler_config.json` when the model has one, else it is Ho et al.'s
/// (linear β from 1e-4 to 0.02 over 1000 steps, used by every released DDPM checkpoint).
#[cfg(feature = "tch")]
fn load_ddpm(path: &Path, args: &ModelArgs) -> Result<Loaded, CliError> {
    use boomerang::models::{parse_device, parse_kind, DdpmUNet, TchDenoiser};
    let device = parse_device(&args.device)?;
    let kind = parse_kind(&args.dtype)?;
    let unet = DdpmUNet::load(path, device, kind)?;
    let mut schedule = None;
    // Ho et al.'s sampler clips x̂0, and so does diffusers' DDPMScheduler unless its config
    // says `"clip_sample": false`.
    let mut clip = true;
    for dir in schedule_dirs(path) {
        let file = dir.join("scheduler_config.json");
        if file.is_file() {
            schedule = Some(boomerang::schedule::BetaSchedule::read(&dir)?.build()?);
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let config: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            clip = config.get("clip_sample").and_then(|v| v.as_bool()).unwrap_or(true);
            break;
        }
    }
    let schedule = match schedule {
        Some(s) => s,
        None => ddpm_schedule()?,
    };
    let denoiser = TchDenoiser::new(unet).with_max_batch(args.batch_size)?;
    pixel_runner(
        Box::new(denoiser),
        schedule.into(),
        format!("ddpm:{}", path.display()),
        args,
        clip,
    )
}

/// Stable Diffusion 1.x/2.x from a diffusers folder: latent-space Boomerang with the prompt,
/// guidance, sampler (default DDIM, η = 0) and grid (default 100 steps over the whole range,
/// the notebook's setting).
#[cfg(feature = "tch")]
fn load_sd(path: &Path, args: &ModelArgs) -> Result<Loaded, CliError> {
    use boomerang::models::stable_diffusion::{LatentMode, SdBoomerangParams, SdOptions, StableDiffusion};
    use boomerang::models::{parse_device, parse_kind};
    if args.clip_denoised.is_some() {
        return Err(CliError::usage(
            "--clip-denoised applies to pixel-space models, not to Stable Diffusion",
        ));
    }
    let options = SdOptions {
        device: parse_device(&args.device)?,
        kind: parse_kind(&args.dtype)?,
        max_batch: args.batch_size,
        ..SdOptions::default()
    };
    let sd = StableDiffusion::load(path, &options)?;
    let (which, sampler) = args.sampler_for(SamplerArg::Ddim)?;
    let spacing = args.spacing_for(Spacing::Uniform(100))?;
    let prompt = args.prompt.clone().unwrap_or_default();
    let mut params = SdBoomerangParams::new(TimeSpec::Fraction(1.0), prompt.clone());
    params.negative_prompts = args.negative_prompt.iter().cloned().collect();
    params.guidance_scale = args.guidance.unwrap_or(7.5);
    params.latent_mode = match args.latent {
        LatentArg::Mode => LatentMode::Mode,
        LatentArg::Sample => LatentMode::Sample,
    };
    params.sampler = sampler;
    params.spacing = spacing;
    // Surface a bad sampler/grid combination now rather than on the first image.
    sd_sampler(&sd, &params)?.start_time(TimeSpec::Fraction(1.0))?;
    let mut s = settings(which, args, spacing);
    s.push(("prompt", serde_json::Value::String(prompt)));
    if let Some(n) = &args.negative_prompt {
        s.push(("negative_prompt", serde_json::Value::String(n.clone())));
    }
    s.push(("guidance", serde_json::json!(params.guidance_scale)));
    s.push((
        "latent",
        serde_json::Value::String(
            if args.latent == LatentArg::Mode {
                "mode"
            } else {
                "sample"
            }
            .into(),
        ),
    ));
    Ok(Loaded {
        runner: Runner::StableDiffusion(Box::new(sd), params),
        name: format!("stable-diffusion:{}", path.display()),
        settings: s,
    })
}

/// The embedded default model: DDPM's sampler over every training step unless asked
/// otherwise, like any DDPM checkpoint.
#[cfg(feature = "tch")]
fn load_builtin(args: &ModelArgs) -> Result<Loaded, CliError> {
    use boomerang::models::{parse_device, parse_kind, pretrained, TchDenoiser};
    let unet = pretrained::shapes32(parse_device(&args.device)?, parse_kind(&args.dtype)?)?;
    let denoiser = TchDenoiser::new(unet).with_max_batch(args.batch_size)?;
    pixel_runner(
        Box::new(denoiser),
        pretrained::shapes32_schedule()?.into(),
        format!("builtin:{}", pretrained::SHAPES32),
        args,
        true,
    )
}

#[cfg(not(feature = "tch"))]
fn load_builtin(_args: &ModelArgs) -> Result<Loaded, CliError> {
    Err(CliError::unsupported(
        "the built-in model (the default --model) runs on libtorch, and this boomerang was built \
         without the `tch` feature: pass --model gaussian:MEAN,STD or empirical:FOLDER, or build with \
         default features",
    ))
}

#[cfg(not(feature = "tch"))]
fn load_ddpm(path: &Path, _args: &ModelArgs) -> Result<Loaded, CliError> {
    Err(needs_tch(path, "a DDPM checkpoint"))
}

#[cfg(not(feature = "tch"))]
fn load_sd(path: &Path, _args: &ModelArgs) -> Result<Loaded, CliError> {
    Err(needs_tch(path, "a Stable Diffusion pipeline"))
}

#[cfg(not(feature = "tch"))]
fn needs_tch(path: &Path, what: &str) -> CliError {
    CliError::unsupported(format!(
        "{} holds {what}; running it needs libtorch, and this boomerang was built without the \
         `tch` feature (build with default features)",
        path.display()
    ))
}
