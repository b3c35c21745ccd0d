//! Stable Diffusion 1.x / 2.x from a diffusers-format folder, and Boomerang in its latent
//! space.
//!
//! A folder as `save_pretrained` writes it (and as the Hub hosts it):
//!
//! ```text
//! model_index.json
//! unet/          config.json  diffusion_pytorch_model[.fp16].safetensors
//! vae/           config.json  diffusion_pytorch_model[.fp16].safetensors
//! text_encoder/  config.json  model[.fp16].safetensors
//! tokenizer/     vocab.json  merges.txt  tokenizer_config.json  [special_tokens_map.json]
//! scheduler/     scheduler_config.json
//! ```
//!
//! (`.bin` PyTorch pickles are read too, with the crate's non-executing reader.) Every
//! architectural setting comes from the folder's configs ([`config`]); the components are
//! [`UNet2DConditionModel`], [`AutoencoderKL`], [`ClipTextModel`] and [`ClipTokenizer`], each
//! checked against HF diffusers/transformers on tiny random configurations (`tests/sd_*.rs`).
//!
//! [`StableDiffusion`] is a [`Denoiser`] of latents: it predicts what the scheduler config's
//! `prediction_type` says (ε for SD1.x and SD2-base, v for SD2 768-v), takes the float
//! training step ([`ContinuousStep`](crate::TimeInput::ContinuousStep)) and text
//! embeddings as [`Condition::Text`]. Boomerang on images is the core's runner with the VAE
//! as its codec ([`LatentCodec`]): [`StableDiffusion::boomerang`] sets it up (image → VAE
//! latent → noise exactly at `t` → guided reverse process → VAE decode).
//!
//! ```no_run
//! use boomerang::models::stable_diffusion::{LatentMode, SdOptions, StableDiffusion, TextPrompt};
//! use boomerang::{image_io, DataRange, NoiseStreams, TimeSpec};
//!
//! let sd = StableDiffusion::load("stable-diffusion-v1-5", &SdOptions::default())?;
//! let runner = StableDiffusion::boomerang(&sd, &TextPrompt::new("a photo of a cat"), LatentMode::Mode)?.build()?;
//! let x0 = image_io::load_image("cat.png", image_io::ColorMode::Rgb, DataRange::MinusOneToOne)?;
//! let mut noise = NoiseStreams::keyed(42, &[0]);
//! let out = runner.run_with(x0.view(), TimeSpec::fraction(0.5), &mut noise, None)?;
//! image_io::save_image("cat_boomerang.png", out.sample.index_axis(ndarray::Axis(0), 0), DataRange::MinusOneToOne)?;
//! # Ok::<(), boomerang::Error>(())
//! ```

mod attention;
pub mod clip;
pub mod config;
pub mod embeddings;
mod loader;
mod resnet;
pub mod tokenizer;
pub mod unet;
mod unet_blocks;
pub mod vae;

use std::ops::Deref;
use std::path::{Path, PathBuf};

use ndarray::{s, Array3, Array4, ArrayView2, ArrayView4, Axis, Zip};
use tch::{Device, Kind, Tensor};

pub use clip::ClipTextModel;
pub use config::{ClipTextConfig, ModelIndex, TokenizerConfig, UNetConfig, VaeConfig};
pub(crate) use loader::load_pipeline;
pub use tokenizer::ClipTokenizer;
pub use unet::UNet2DConditionModel;
pub use vae::AutoencoderKL;

use crate::checkpoint::diffusers::find_weights;
use crate::checkpoint::LazyStateDict;
use crate::core::codec::Codec;
use crate::core::pipeline::ModelInput;
use crate::models::crossing;
use crate::models::{check_device, check_kind, guard_panics, TchDenoiser, DEFAULT_MAX_BATCH};
use crate::schedule::{DiscreteSchedule, SchedulerConfig};
use crate::BoomerangBuilder;
use crate::{Boomerang, Condition, DataRange, Denoiser, DenoiserSpec, Error, NoiseStreams, Result, Sampler, Spacing};

pub use crate::checkpoint::diffusers::WeightsVariant;

/// How to load a Stable Diffusion folder.
#[derive(Debug, Clone, PartialEq)]
pub struct SdOptions {
    /// Where the networks run (default: CPU).
    pub device: Device,
    /// Compute kind: `Kind::Float` (default; use it on the CPU), `Kind::Half` or
    /// `Kind::BFloat16` on a GPU. The VAE stays in f32 when its config says `force_upcast`.
    pub kind: Kind,
    /// Which weight files to read.
    pub weights: WeightsVariant,
    /// Condition on the output of text-encoder layer `num_hidden_layers − clip_skip`
    /// (after the final norm) instead of the last layer; 0 (default) is what SD1 and SD2
    /// were trained with.
    pub clip_skip: usize,
    /// Largest batch run through a network at once (default
    /// [`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
}

impl Default for SdOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            kind: Kind::Float,
            weights: WeightsVariant::Auto,
            clip_skip: 0,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

pub use crate::core::codec::LatentMode;

/// The VAE posterior of a batch, in the VAE's own (unscaled) latent space.
#[derive(Debug, Clone, PartialEq)]
pub struct LatentPosterior {
    /// Mean.
    pub mean: Array4<f32>,
    /// Standard deviation, `exp(½·clamp(logvar, −30, 20))`.
    pub std: Array4<f32>,
}

impl LatentPosterior {
    /// The mode (the mean).
    pub fn mode(&self) -> Array4<f32> {
        self.mean.clone()
    }

    /// `mean + std·z` for a given standard normal `z` of the same shape.
    pub fn sample_with(&self, z: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        if z.dim() != self.mean.dim() {
            return Err(Error::Shape(format!(
                "posterior noise of shape {:?} for latents of shape {:?}",
                z.shape(),
                self.mean.shape()
            )));
        }
        let mut out = self.mean.clone();
        Zip::from(&mut out)
            .and(&self.std)
            .and(&z)
            .for_each(|o, &s, &z| *o += s * z);
        Ok(out)
    }
}

/// Classifier-free guided text conditioning of a Stable Diffusion run.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPrompt {
    /// One prompt for all images or one per image.
    pub prompts: Vec<String>,
    /// Negative prompts (one, or one per image); empty means the empty prompt, the usual
    /// unconditional embedding.
    pub negative_prompts: Vec<String>,
    /// Classifier-free guidance scale (default 7.5; 1 runs the conditional model only).
    pub guidance_scale: f64,
}

impl TextPrompt {
    /// One prompt, the empty negative prompt, guidance 7.5.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompts: vec![prompt.into()],
            negative_prompts: Vec::new(),
            guidance_scale: 7.5,
        }
    }
}

/// Stable Diffusion's VAE as the Boomerang runner's [`Codec`]: images in `[-1, 1]` (sides
/// multiples of [`StableDiffusion::latent_factor`]) become scaled latents, by the posterior
/// mode or a posterior sample drawn from each image's own noise stream.
#[derive(Debug, Clone)]
pub struct LatentCodec<S> {
    sd: S,
    mode: LatentMode,
}

impl<S: Deref<Target = StableDiffusion>> LatentCodec<S> {
    /// The VAE of `sd`, encoding by `mode`.
    pub fn new(sd: S, mode: LatentMode) -> Self {
        Self { sd, mode }
    }

    /// How images become latents.
    pub fn mode(&self) -> LatentMode {
        self.mode
    }
}

impl<S: Deref<Target = StableDiffusion>> Codec for LatentCodec<S> {
    fn input(&self, _model: &DenoiserSpec) -> ModelInput {
        ModelInput {
            channels: self.sd.vae.config().in_channels,
            size: None,
            multiple: self.sd.latent_factor(),
            range: DataRange::MinusOneToOne,
        }
    }

    fn check_images(&self, images: &ArrayView4<'_, f32>, _model: &DenoiserSpec) -> Result<()> {
        self.sd.check_images(images)
    }

    fn encode(&self, images: ArrayView4<'_, f32>, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        self.sd.encode_image(images, self.mode, Some(noise))
    }

    fn decode(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        self.sd.decode(x)
    }
}

/// A Stable Diffusion pipeline: tokenizer, text encoder, UNet, VAE and training schedule.
///
/// It is a [`Denoiser`] of (scaled) latents, so it plugs into [`Boomerang`] directly:
///
/// ```no_run
/// use boomerang::models::stable_diffusion::{SdOptions, StableDiffusion};
/// use boomerang::{Boomerang, Condition, Guidance, Sampler, Spacing, TimeSpec};
/// use rand::SeedableRng;
///
/// let sd = StableDiffusion::load("stable-diffusion-v1-5", &SdOptions::default())?;
/// let cond = sd.encode_prompt(&["a photo of a cat"])?;
/// let uncond = sd.encode_prompt(&[""])?;
/// let runner = Boomerang::builder(&sd, sd.schedule())
///     .sampler(Sampler::ddim(0.0))
///     .spacing(Spacing::Uniform(50))
///     .condition(Condition::Text(cond))
///     .guidance(Guidance::classifier_free(7.5, Condition::Text(uncond)))
///     .build()?;
/// let latents = ndarray::Array4::<f32>::zeros((1, 4, 64, 64));
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let out = runner.run(latents.view(), TimeSpec::fraction(0.5), &mut rng)?;
/// let images = sd.decode(out.view())?;
/// # Ok::<(), boomerang::Error>(())
/// ```
pub struct StableDiffusion {
    folder: PathBuf,
    options: SdOptions,
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextModel,
    unet: TchDenoiser<UNet2DConditionModel>,
    vae: AutoencoderKL,
    scheduler: SchedulerConfig,
    schedule: DiscreteSchedule,
}

impl std::fmt::Debug for StableDiffusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableDiffusion")
            .field("folder", &self.folder)
            .field("options", &self.options)
            .field("unet", self.unet.model())
            .field("vae", &self.vae)
            .field("text_encoder", &self.text_encoder)
            .finish_non_exhaustive()
    }
}

fn component(folder: &Path, name: &str) -> Result<PathBuf> {
    let dir = folder.join(name);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(Error::checkpoint(
            &dir,
            "missing component folder of a diffusers Stable Diffusion pipeline \
             (expected unet/, vae/, text_encoder/, tokenizer/ and scheduler/)",
        ))
    }
}

/// A component's weights file, opened to be read one tensor at a time: the load never
/// holds a second copy of a network's weights.
fn open_weights(dir: &Path, stem: &str, bin_stem: &str, options: &SdOptions) -> Result<LazyStateDict> {
    let path = find_weights(dir, stem, bin_stem, options.weights, options.kind == Kind::Half)?;
    LazyStateDict::open(&path)
}

fn check_finite(x: &ArrayView4<'_, f32>, what: &str) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!("{what} contain NaN or infinite values")));
    }
    Ok(())
}

impl StableDiffusion {
    /// Load a diffusers-format Stable Diffusion folder.
    ///
    /// Reads every component's config and weights (strictly: a missing, unexpected or
    /// misshaped tensor is an error naming it; each weights file is read one tensor at a
    /// time, so loading holds the weights once, plus one tensor), builds the training schedule from
    /// `scheduler/scheduler_config.json` and moves the networks to `options.device` in
    /// `options.kind`.
    pub fn load(folder: impl AsRef<Path>, options: &SdOptions) -> Result<Self> {
        let folder = folder.as_ref();
        check_kind(options.kind)?;
        check_device(options.device)?;
        if options.max_batch == 0 {
            return Err(Error::param("max_batch", "must be at least 1"));
        }
        if !folder.is_dir() {
            return Err(Error::checkpoint(folder, "not a directory"));
        }
        let index = folder.join("model_index.json");
        if index.exists() {
            ModelIndex::load(&index)?
                .validate()
                .map_err(|e| Error::checkpoint(&index, e.to_string()))?;
        }

        let sched_dir = component(folder, "scheduler")?;
        let scheduler = SchedulerConfig::read(sched_dir.join("scheduler_config.json"))?;
        let schedule = scheduler
            .schedule()
            .map_err(|e| Error::checkpoint(sched_dir.join("scheduler_config.json"), e.to_string()))?;
        let parameterization = scheduler
            .parameterization()
            .map_err(|e| Error::checkpoint(sched_dir.join("scheduler_config.json"), e.to_string()))?;

        let tokenizer = ClipTokenizer::from_folder(component(folder, "tokenizer")?)?;

        let te_dir = component(folder, "text_encoder")?;
        let te_config = ClipTextConfig::load(&te_dir.join("config.json"))?;
        if tokenizer.max_length() > te_config.max_position_embeddings {
            return Err(Error::Incompatible(format!(
                "the tokenizer makes {} tokens but the text encoder has {} positions",
                tokenizer.max_length(),
                te_config.max_position_embeddings
            )));
        }
        let mut text_encoder = ClipTextModel::new(te_config, options.device, options.kind)?;
        text_encoder.load_weights(open_weights(&te_dir, "model", "pytorch_model", options)?)?;
        if options.clip_skip >= text_encoder.config().num_hidden_layers {
            return Err(Error::param(
                "clip_skip",
                format!(
                    "must be below the text encoder's {} layers",
                    text_encoder.config().num_hidden_layers
                ),
            ));
        }

        let unet_dir = component(folder, "unet")?;
        let unet_config = UNetConfig::load(&unet_dir.join("config.json"))?;
        if unet_config.context_dim() != text_encoder.config().hidden_size {
            return Err(Error::Incompatible(format!(
                "the UNet's cross_attention_dim {} differs from the text encoder's width {}",
                unet_config.context_dim(),
                text_encoder.config().hidden_size
            )));
        }
        let mut unet = UNet2DConditionModel::new(unet_config, parameterization, options.device, options.kind)?;
        unet.load_weights(open_weights(
            &unet_dir,
            "diffusion_pytorch_model",
            "diffusion_pytorch_model",
            options,
        )?)?;

        let vae_dir = component(folder, "vae")?;
        let vae_config = VaeConfig::load(&vae_dir.join("config.json"))?;
        if vae_config.latent_channels != unet.config().in_channels {
            return Err(Error::Incompatible(format!(
                "the VAE has {} latent channels, the UNet takes {}",
                vae_config.latent_channels,
                unet.config().in_channels
            )));
        }
        let vae_kind = if options.kind != Kind::Float && vae_config.force_upcast {
            Kind::Float
        } else {
            options.kind
        };
        let mut vae = AutoencoderKL::new(vae_config, options.device, vae_kind)?;
        vae.load_weights(open_weights(
            &vae_dir,
            "diffusion_pytorch_model",
            "diffusion_pytorch_model",
            options,
        )?)?;

        Ok(Self {
            folder: folder.to_path_buf(),
            options: options.clone(),
            tokenizer,
            text_encoder,
            unet: TchDenoiser::new(unet).with_max_batch(options.max_batch)?,
            vae,
            scheduler,
            schedule,
        })
    }

    /// The folder this was loaded from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &SdOptions {
        &self.options
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    /// The text encoder.
    pub fn text_encoder(&self) -> &ClipTextModel {
        &self.text_encoder
    }

    /// The UNet behind the [`Denoiser`] seam.
    pub fn unet(&self) -> &TchDenoiser<UNet2DConditionModel> {
        &self.unet
    }

    /// The VAE.
    pub fn vae(&self) -> &AutoencoderKL {
        &self.vae
    }

    /// The scheduler configuration.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler
    }

    /// The training noise schedule (SD: scaled-linear 0.00085..0.012 over 1000 steps, as the
    /// scheduler config says).
    pub fn schedule(&self) -> DiscreteSchedule {
        self.schedule.clone()
    }

    /// How much the VAE shrinks each side (8 for SD): image sides must be multiples of it.
    pub fn latent_factor(&self) -> usize {
        self.vae.config().downsample_factor()
    }

    /// `(scaling_factor, shift_factor)` of the latents (SD: 0.18215 and 0).
    pub fn latent_scaling(&self) -> (f64, f64) {
        let c = self.vae.config();
        (c.scaling_factor, c.shift_factor.unwrap_or(0.0))
    }

    /// Text embeddings `(prompts.len(), 77, width)` as the pipelines compute them: each
    /// prompt tokenized, padded and truncated to 77 tokens, run through the text encoder.
    /// The empty prompt `""` gives the unconditional embedding.
    pub fn encode_prompt(&self, prompts: &[&str]) -> Result<Array3<f32>> {
        if prompts.is_empty() {
            return Err(Error::InvalidInput("no prompt given".into()));
        }
        let ids = self.tokenizer.encode_batch(prompts)?;
        self.encode_tokens(ids.view())
    }

    /// Text embeddings for token ids `(batch, tokens)` (e.g. from
    /// [`ClipTokenizer::encode_batch`]).
    pub fn encode_tokens(&self, ids: ArrayView2<'_, i64>) -> Result<Array3<f32>> {
        let (b, l) = ids.dim();
        let vocab = self.text_encoder.config().vocab_size as i64;
        if b == 0 || l == 0 {
            return Err(Error::Shape(format!("token ids of shape {:?}", ids.shape())));
        }
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= vocab) {
            return Err(Error::InvalidInput(format!(
                "token id {bad} is outside the text encoder's vocabulary of {vocab}"
            )));
        }
        let d = self.text_encoder.config().hidden_size;
        guard_panics(|| {
            let _g = tch::no_grad_guard();
            let t = crossing::array_to_tensor(ids, self.text_encoder.device(), Kind::Int64)?;
            let h = crossing::tensor_to_array::<ndarray::Ix3>(&self.text_encoder.forward(&t, self.options.clip_skip)?)?;
            if h.dim() != (b, l, d) {
                return Err(Error::Model(format!(
                    "the text encoder returned shape {:?} for {b}×{l} tokens of width {d}",
                    h.shape()
                )));
            }
            Ok(h)
        })
    }

    fn check_images(&self, x: &ArrayView4<'_, f32>) -> Result<()> {
        let (n, c, h, w) = x.dim();
        let want = self.vae.config().in_channels;
        let f = self.latent_factor();
        if n == 0 {
            return Err(Error::InvalidInput("the image batch is empty".into()));
        }
        if c != want {
            return Err(Error::Shape(format!(
                "the VAE takes {want}-channel images, got {c} channels"
            )));
        }
        if h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(Error::Shape(format!(
                "image size {h}×{w}: both sides must be positive multiples of {f} (the VAE's \
                 downsampling factor); resize or crop first (see image_io::resize)"
            )));
        }
        check_finite(x, "images")
    }

    /// Run `f` on chunks of at most `max_batch` items of `x` (as a tensor on the VAE's device
    /// in its kind), concatenating the host results along axis 0.
    fn vae_chunks<const K: usize>(
        &self,
        x: ArrayView4<'_, f32>,
        f: impl Fn(&Tensor) -> Result<[Tensor; K]>,
    ) -> Result<[Array4<f32>; K]> {
        let n = x.dim().0;
        let mut parts: Vec<[Array4<f32>; K]> = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + self.options.max_batch).min(n);
            let chunk = x.slice(s![start..end, .., .., ..]);
            let outs = guard_panics(|| {
                let _g = tch::no_grad_guard();
                let t = crossing::array_to_tensor(chunk, self.vae.device(), self.vae.kind())?;
                let ys = f(&t)?;
                let mut arrays: Vec<Array4<f32>> = Vec::with_capacity(K);
                for y in &ys {
                    arrays.push(crossing::tensor_to_array4(y)?);
                }
                arrays
                    .try_into()
                    .map_err(|_| Error::Model("internal: wrong number of VAE outputs".into()))
            })?;
            parts.push(outs);
            start = end;
        }
        let mut result: Vec<Array4<f32>> = Vec::with_capacity(K);
        for k in 0..K {
            let views: Vec<_> = parts.iter().map(|p| p[k].view()).collect();
            result.push(ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Shape(e.to_string()))?);
        }
        result
            .try_into()
            .map_err(|_| Error::Model("internal: wrong number of VAE outputs".into()))
    }

    /// The VAE posterior of images `(n, 3, H, W)` in `[-1, 1]`, unscaled. `H` and `W` must be
    /// multiples of [`latent_factor`](Self::latent_factor).
    pub fn encode_posterior(&self, images: ArrayView4<'_, f32>) -> Result<LatentPosterior> {
        self.check_images(&images)?;
        let [mean, std] = self.vae_chunks(images, |t| {
            let (m, s) = self.vae.encode(t)?;
            Ok([m, s])
        })?;
        Ok(LatentPosterior { mean, std })
    }

    /// Latents as the UNet sees them, `(z − shift_factor)·scaling_factor`, with `z` the
    /// posterior mode or a sample (noise from `noise`, one stream per image, required for
    /// [`LatentMode::Sample`]).
    pub fn encode_image(
        &self,
        images: ArrayView4<'_, f32>,
        mode: LatentMode,
        noise: Option<&mut NoiseStreams>,
    ) -> Result<Array4<f32>> {
        let post = self.encode_posterior(images)?;
        let z = match (mode, noise) {
            (LatentMode::Mode, _) => post.mean,
            (LatentMode::Sample, Some(noise)) => {
                if noise.len() != images.dim().0 {
                    return Err(Error::Shape(format!(
                        "{} noise streams for {} images",
                        noise.len(),
                        images.dim().0
                    )));
                }
                let (_, c, h, w) = post.mean.dim();
                let eps = noise.normal((c, h, w))?;
                post.sample_with(eps.view())?
            }
            (LatentMode::Sample, None) => {
                return Err(Error::param(
                    "noise",
                    "LatentMode::Sample needs noise streams to draw the posterior sample",
                ))
            }
        };
        let (scale, shift) = self.latent_scaling();
        let (scale, shift) = (scale as f32, shift as f32);
        Ok(z.mapv_into(|v| (v - shift) * scale))
    }

    /// Decode latents (scaled, as the UNet sees them) into images, nominally in `[-1, 1]`
    /// (not clamped; [`image_io::save_image`](crate::image_io::save_image) clamps).
    pub fn decode(&self, latents: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        let (n, c, h, w) = latents.dim();
        let want = self.vae.config().latent_channels;
        if n == 0 || h == 0 || w == 0 || c != want {
            return Err(Error::Shape(format!(
                "latents of shape {:?}; the VAE decodes ({want}, h, w) latents",
                latents.shape()
            )));
        }
        check_finite(&latents, "latents")?;
        let (scale, shift) = self.latent_scaling();
        let (inv, shift) = ((1.0 / scale) as f32, shift as f32);
        let z = latents.mapv(|v| v * inv + shift);
        let [images] = self.vae_chunks(z.view(), |t| Ok([self.vae.decode(t)?]))?;
        Ok(images)
    }

    /// A Boomerang runner on images for this pipeline: the VAE as codec (latents by `mode`),
    /// the prompts as text condition, classifier-free guidance against the negative prompts
    /// (one batched UNet call per step), the training schedule, and the notebook's defaults
    /// (DDIM with η = 0 over a 100-step grid), all of which the returned builder can change.
    /// `sd` is any handle to the pipeline: `&StableDiffusion`, `Rc` or `Arc`.
    ///
    /// Each image's noise stream supplies, in order, the posterior sample (with
    /// [`LatentMode::Sample`]), the forward noise at `t` and any sampler noise, so an image's
    /// result depends only on its own stream.
    pub fn boomerang<S>(sd: S, prompt: &TextPrompt, mode: LatentMode) -> Result<BoomerangBuilder<S, LatentCodec<S>>>
    where
        S: Deref<Target = StableDiffusion> + Clone + Denoiser,
    {
        if prompt.prompts.is_empty() {
            return Err(Error::param("prompts", "give one prompt, or one per image"));
        }
        if !prompt.guidance_scale.is_finite() {
            return Err(Error::param(
                "guidance_scale",
                format!("must be finite, got {}", prompt.guidance_scale),
            ));
        }
        let prompts: Vec<&str> = prompt.prompts.iter().map(String::as_str).collect();
        let cond = sd.encode_prompt(&prompts)?;
        let schedule = sd.schedule();
        let mut builder = Boomerang::builder(sd.clone(), schedule)
            .codec(LatentCodec::new(sd.clone(), mode))
            .sampler(Sampler::ddim(0.0))
            .spacing(Spacing::Uniform(100))
            .condition(Condition::Text(cond));
        if prompt.guidance_scale != 1.0 {
            let negative: Vec<&str> = if prompt.negative_prompts.is_empty() {
                vec![""]
            } else {
                prompt.negative_prompts.iter().map(String::as_str).collect()
            };
            builder = builder.guidance(crate::Guidance::classifier_free(
                prompt.guidance_scale,
                Condition::Text(sd.encode_prompt(&negative)?),
            ));
        }
        Ok(builder)
    }
}

impl Denoiser for StableDiffusion {
    fn spec(&self) -> &DenoiserSpec {
        self.unet.spec()
    }

    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        self.unet.predict(x, times, condition)
    }
}
