//! Training a DDPM UNet (ε-prediction) on your own images, with libtorch.
//!
//! Ho et al.'s recipe: `t ~ U{0..T−1}`, `ε ~ N(0, I)`, loss `‖ε − ε̂(√ᾱ_t·x0 + √(1−ᾱ_t)·ε, t)‖²`,
//! Adam with linear warm-up, gradient clipping at global norm 1, EMA of the weights for
//! sampling, random horizontal flips (no dropout: a configuration asking for it is refused),
//! any beta schedule, f32 or mixed precision on CUDA. Everything random is drawn on the host from
//! `(seed, step)`, and Adam's moments are the crate's own tensors, so a run resumed from a
//! checkpoint continues bit for bit as if it had never stopped (on the same device).
//!
//! The result ([`Trainer::export`]) is a folder with `config.json` (diffusers' UNet2DModel
//! form), `scheduler_config.json` and `diffusion_pytorch_model.safetensors` (EMA weights in
//! the original naming), which [`DdpmUNet::load`] reads like any released model.

use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{s, Array4, Axis};
use ndarray_rand::rand_distr::StandardNormal;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{load_state_dict, save_safetensors, StateDict};
use crate::models::crossing;
use crate::models::ddpm::{DdpmConfig, DdpmUNet};
use crate::schedule::BetaSchedule;
use crate::shapes::Shapes;
use crate::{Error, Result};

/// Hyper-parameters of a training run (serialised into every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Number of optimisation steps in all.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate (DDPM: 2e-4).
    pub lr: f64,
    /// Linear warm-up steps (DDPM: 5000).
    pub warmup: u64,
    /// Global gradient-norm clip (DDPM: 1).
    pub grad_clip: f64,
    /// EMA decay of the sampling weights (DDPM: 0.9999).
    pub ema_decay: f64,
    /// Random horizontal flips.
    pub random_flip: bool,
    /// Seed of every random draw.
    pub seed: u64,
    /// Save a resumable checkpoint every this many steps.
    pub checkpoint_every: u64,
    /// The noise schedule (DDPM: linear 1e-4..0.02 over 1000 steps).
    pub schedule: BetaSchedule,
    /// f32, or mixed precision (f16 autocast with dynamic loss scaling) on CUDA.
    pub precision: Precision,
}

/// Arithmetic of a training run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// f16 autocast on CUDA for the forward pass, f32 master weights and Adam moments, and
    /// a dynamic loss scale (PyTorch's `GradScaler` rule: start at 2¹⁶, halve and skip the
    /// update on non-finite gradients, double after 2000 clean steps).
    Mixed,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 10_000,
            batch_size: 32,
            lr: 2e-4,
            warmup: 500,
            grad_clip: 1.0,
            ema_decay: 0.999,
            random_flip: true,
            seed: 0,
            checkpoint_every: 1000,
            schedule: BetaSchedule::ddpm(),
            precision: Precision::F32,
        }
    }
}

/// The most optimisation steps of a run (also the bound of the warm-up and checkpoint period).
pub const MAX_TRAIN_STEPS: u64 = 1_000_000_000;

/// The most images per training step.
pub const MAX_TRAIN_BATCH: usize = 4096;

/// The largest learning rate accepted (Adam's steps are about this large per weight).
pub const MAX_LR: f64 = 1.0;

impl TrainConfig {
    /// Check every setting, before anything is allocated: steps in `1..=`[`MAX_TRAIN_STEPS`],
    /// batch size in `1..=`[`MAX_TRAIN_BATCH`], a finite learning rate in `(0, `[`MAX_LR`]`]`,
    /// a warm-up of at most [`MAX_TRAIN_STEPS`], a finite positive gradient clip (NaN would
    /// silently disable clipping, a negative one flip the gradient), an EMA decay in `[0, 1)`,
    /// a checkpoint period in `1..=`[`MAX_TRAIN_STEPS`], and a schedule that builds. Errors
    /// name the setting and its range.
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_TRAIN_STEPS).contains(&self.steps) {
            return Err(Error::param(
                "steps",
                format!("must lie in 1..={MAX_TRAIN_STEPS}, got {}", self.steps),
            ));
        }
        if !(1..=MAX_TRAIN_BATCH).contains(&self.batch_size) {
            return Err(Error::param(
                "batch_size",
                format!("must lie in 1..={MAX_TRAIN_BATCH}, got {}", self.batch_size),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= MAX_LR) {
            return Err(Error::param(
                "lr",
                format!("must be a finite number in (0, {MAX_LR}], got {}", self.lr),
            ));
        }
        if self.warmup > MAX_TRAIN_STEPS {
            return Err(Error::param(
                "warmup",
                format!("must be at most {MAX_TRAIN_STEPS} steps, got {}", self.warmup),
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return Err(Error::param(
                "grad_clip",
                format!(
                    "must be a finite positive gradient norm, got {} (to clip less, give a large number)",
                    self.grad_clip
                ),
            ));
        }
        if !(self.ema_decay.is_finite() && (0.0..1.0).contains(&self.ema_decay)) {
            return Err(Error::param(
                "ema_decay",
                format!("must lie in [0, 1), got {}", self.ema_decay),
            ));
        }
        if !(1..=MAX_TRAIN_STEPS).contains(&self.checkpoint_every) {
            return Err(Error::param(
                "checkpoint_every",
                format!("must lie in 1..={MAX_TRAIN_STEPS}, got {}", self.checkpoint_every),
            ));
        }
        self.schedule.build()?;
        Ok(())
    }

    /// Mixed precision runs on CUDA only (`tch::autocast` is a no-op elsewhere).
    fn check_device(&self, device: Device) -> Result<()> {
        if self.precision == Precision::Mixed && !device.is_cuda() {
            return Err(Error::param(
                "precision",
                format!(
                    "mixed precision (f16 autocast) needs a CUDA device, got {device:?}; train in f32 on this device"
                ),
            ));
        }
        Ok(())
    }
}

/// The largest side of training images ([`TrainData::from_folder`]).
pub const MAX_TRAIN_SIZE: usize = 4096;

/// Where training images come from.
#[derive(Debug, Clone)]
pub enum TrainData {
    /// A fixed set of images (NCHW in `[-1, 1]`, at the model's resolution).
    Images(Array4<f32>),
    /// Fresh members of the procedural [`Shapes`] family at every step.
    Shapes(Shapes),
}

impl TrainData {
    /// Every PNG/JPEG under `folder` (recursively, hidden files and links to folders left
    /// out), resized to `size × size` (bicubic, `size` at most [`MAX_TRAIN_SIZE`]), in
    /// `[-1, 1]`. Unreadable files, special files and images above the limits of
    /// [`crate::image_io::ImageLimits::from_env`] are an error that names them.
    pub fn from_folder(folder: impl AsRef<Path>, size: usize) -> Result<Self> {
        if !(1..=MAX_TRAIN_SIZE).contains(&size) {
            return Err(Error::param(
                "size",
                format!("training images must be 1..={MAX_TRAIN_SIZE} pixels on a side, got {size}"),
            ));
        }
        // Listed without following links to folders (no cycles), special files never opened.
        let folder_path = folder.as_ref();
        let files: Vec<PathBuf> = crate::apps::dataset::list_images(folder_path)?
            .images
            .iter()
            .map(|rel| folder_path.join(rel))
            .collect();
        if files.is_empty() {
            return Err(Error::InvalidInput(format!(
                "no .png/.jpg/.jpeg images under {}",
                folder.as_ref().display()
            )));
        }
        let mut items = Vec::with_capacity(files.len());
        for f in &files {
            let x = crate::image_io::load_image(f, crate::image_io::ColorMode::Rgb, crate::DataRange::MinusOneToOne)?;
            items.push(crate::image_io::resize(
                x.view(),
                size,
                size,
                crate::image_io::ResizeFilter::Bicubic,
            )?);
        }
        let views: Vec<_> = items.iter().map(|a| a.view()).collect();
        Ok(TrainData::Images(
            ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Shape(e.to_string()))?,
        ))
    }

    fn batch(&self, n: usize, rng: &mut ChaCha8Rng) -> Array4<f32> {
        match self {
            TrainData::Images(all) => {
                let (len, c, h, w) = all.dim();
                let mut out = Array4::zeros((n, c, h, w));
                for mut item in out.axis_iter_mut(Axis(0)) {
                    item.assign(&all.index_axis(Axis(0), rng.gen_range(0..len)));
                }
                out
            }
            TrainData::Shapes(f) => f.sample(n, rng),
        }
    }
}

/// A training run: the network, its EMA copy, Adam's moments and the step counter.
pub struct Trainer {
    config: TrainConfig,
    model_config: DdpmConfig,
    net: DdpmUNet,
    ema: DdpmUNet,
    /// Trainable variables, sorted by name, with Adam's first and second moments.
    params: Vec<(String, Tensor, Tensor, Tensor)>,
    alphas_cumprod: Vec<f64>,
    step: u64,
    /// The dynamic loss scale of a mixed-precision run.
    scaler: Option<LossScale>,
}

/// Dynamic loss scaling for f16 gradients, with PyTorch's `GradScaler` defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct LossScale {
    scale: f64,
    clean_steps: u32,
}

impl LossScale {
    const GROWTH_INTERVAL: u32 = 2000;

    fn new() -> Self {
        Self {
            scale: 65536.0,
            clean_steps: 0,
        }
    }

    /// After a step: halve on overflow (that step's update was skipped), double after
    /// `GROWTH_INTERVAL` clean steps in a row.
    fn update(&mut self, overflow: bool) {
        if overflow {
            self.scale = (self.scale * 0.5).max(1.0);
            self.clean_steps = 0;
        } else {
            self.clean_steps += 1;
            if self.clean_steps == Self::GROWTH_INTERVAL {
                self.scale = (self.scale * 2.0).min(f64::from(f32::MAX));
                self.clean_steps = 0;
            }
        }
    }
}

impl Trainer {
    /// A fresh run from a random initialisation drawn from `config.seed`.
    pub fn new(model_config: DdpmConfig, config: TrainConfig, device: Device) -> Result<Self> {
        config.validate()?;
        config.check_device(device)?;
        if model_config.dropout != 0.0 {
            return Err(Error::param(
                "dropout",
                format!(
                    "the trainer has no dropout; got {} (the released DDPM configurations use 0.1): set it to 0",
                    model_config.dropout
                ),
            ));
        }
        let net = DdpmUNet::random(model_config.clone(), device, Kind::Float, config.seed)?;
        let ema = DdpmUNet::from_state_dict(
            model_config.clone(),
            net.state_dict()?,
            device,
            Kind::Float,
            Path::new("<ema init>"),
        )?;
        let scaler = (config.precision == Precision::Mixed).then(LossScale::new);
        Self::assemble(model_config, config, net, ema, None, 0, scaler)
    }

    fn assemble(
        model_config: DdpmConfig,
        config: TrainConfig,
        mut net: DdpmUNet,
        ema: DdpmUNet,
        moments: Option<&StateDict>,
        step: u64,
        scaler: Option<LossScale>,
    ) -> Result<Self> {
        let sched = config.schedule.build()?;
        net.var_store_mut().unfreeze();
        let vars = net.var_store().variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let mut params = Vec::with_capacity(names.len());
        for name in names {
            let p = vars[name].shallow_clone();
            let (m, v) = match moments {
                Some(sd) => (
                    tensor_from(sd, &format!("adam_m.{name}"), p.device())?,
                    tensor_from(sd, &format!("adam_v.{name}"), p.device())?,
                ),
                None => (p.f_zeros_like()?, p.f_zeros_like()?),
            };
            params.push((name.clone(), p, m, v));
        }
        Ok(Self {
            config,
            model_config,
            net,
            ema,
            params,
            alphas_cumprod: sched.alphas_cumprod().to_vec(),
            step,
            scaler,
        })
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The run's settings.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The network's architecture.
    pub fn model_config(&self) -> &DdpmConfig {
        &self.model_config
    }

    /// One optimisation step; returns the loss.
    pub fn train_step(&mut self, data: &TrainData) -> Result<f64> {
        let cfg = &self.config;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(self.step + 1);
        let mut x0 = data.batch(cfg.batch_size, &mut rng);
        let (n, c, h, w) = x0.dim();
        if (c, h, w)
            != (
                self.model_config.in_channels,
                self.model_config.resolution,
                self.model_config.resolution,
            )
        {
            return Err(Error::Shape(format!(
                "training images are {c}×{h}×{w}, the model takes {}×{r}×{r}",
                self.model_config.in_channels,
                r = self.model_config.resolution
            )));
        }
        if cfg.random_flip {
            for mut item in x0.axis_iter_mut(Axis(0)) {
                if rng.gen_bool(0.5) {
                    let flipped = item.slice(s![.., .., ..;-1]).to_owned();
                    item.assign(&flipped);
                }
            }
        }
        let t_total = self.alphas_cumprod.len();
        let ts: Vec<usize> = (0..n).map(|_| rng.gen_range(0..t_total)).collect();
        let eps = Array4::<f32>::from_shape_simple_fn((n, c, h, w), || rng.sample(StandardNormal));
        let mut xt = eps.clone();
        for (i, &t) in ts.iter().enumerate() {
            let a = self.alphas_cumprod[t];
            let (sa, sb) = (a.sqrt() as f32, (1.0 - a).sqrt() as f32);
            let src = x0.slice(s![i, .., .., ..]);
            xt.slice_mut(s![i, .., .., ..])
                .zip_mut_with(&src, |e, &x| *e = sa * x + sb * *e);
        }
        let device = self.params[0].1.device();
        let to_t = |a: &Array4<f32>| crossing::array_to_tensor(a.view(), device, Kind::Float);
        let (xt_t, eps_t) = (to_t(&xt)?, to_t(&eps)?);
        let ts: Vec<f32> = ts.iter().map(|&t| t as f32).collect();
        let t_t = crossing::slice_to_tensor(&ts, &[ts.len()], device, Kind::Float)?;

        for (_, p, _, _) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.f_zero_()?;
            }
        }
        let pred = match self.scaler {
            Some(_) => tch::autocast(true, || self.net.forward(&xt_t, &t_t))?,
            None => self.net.forward(&xt_t, &t_t)?,
        };
        let loss = pred
            .f_to_kind(Kind::Float)?
            .f_sub(&eps_t)?
            .f_square()?
            .f_mean(Kind::Float)?;
        let scale = self.scaler.map_or(1.0, |s| s.scale);
        loss.f_mul_scalar(scale)?.f_backward()?;
        let loss_value = loss.f_double_value(&[])?;
        if !loss_value.is_finite() && self.scaler.is_none() {
            return Err(Error::Model(format!(
                "the loss became {loss_value} at step {}; lower the learning rate",
                self.step
            )));
        }
        let applied = self.apply_adam(scale)?;
        if let Some(scaler) = &mut self.scaler {
            scaler.update(!applied);
        }
        self.update_ema()?;
        self.step += 1;
        Ok(loss_value)
    }

    /// Adam on the gradients of `scale × loss`; returns false (and changes nothing) when a
    /// mixed-precision step overflowed.
    fn apply_adam(&mut self, scale: f64) -> Result<bool> {
        let cfg = &self.config;
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let step = (self.step + 1) as f64;
        let lr = cfg.lr * (step / cfg.warmup.max(1) as f64).min(1.0);
        let _guard = tch::no_grad_guard();
        // Global gradient norm for clipping.
        let mut sq = 0f64;
        for (_, p, _, _) in &self.params {
            let g = p.grad();
            if g.defined() {
                sq += g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
            }
        }
        let norm = sq.sqrt() / scale;
        if !norm.is_finite() {
            if self.scaler.is_some() {
                return Ok(false);
            }
            return Err(Error::Model(format!(
                "the gradients became {norm} at step {}; lower the learning rate",
                self.step
            )));
        }
        // Unscale and clip in one factor.
        let clip = if norm > cfg.grad_clip {
            cfg.grad_clip / (norm + 1e-6)
        } else {
            1.0
        } / scale;
        let (bc1, bc2) = (1.0 - b1.powf(step), 1.0 - b2.powf(step));
        for (_, p, m, v) in &mut self.params {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let g = g.f_mul_scalar(clip)?;
            let _ = m.f_mul_scalar_(b1)?;
            let _ = m.f_add_(&g.f_mul_scalar(1.0 - b1)?)?;
            let _ = v.f_mul_scalar_(b2)?;
            let _ = v.f_add_(&g.f_square()?.f_mul_scalar(1.0 - b2)?)?;
            let denom = v.f_div_scalar(bc2)?.f_sqrt()?.f_add_scalar(eps)?;
            let update = m.f_div_scalar(bc1)?.f_div(&denom)?.f_mul_scalar(lr)?;
            let _ = p.f_sub_(&update)?;
        }
        Ok(true)
    }

    fn update_ema(&mut self) -> Result<()> {
        let d = self.config.ema_decay;
        let _guard = tch::no_grad_guard();
        let ema_vars = self.ema.var_store().variables();
        for (name, p, _, _) in &self.params {
            let mut e = ema_vars
                .get(name)
                .ok_or_else(|| Error::Model(format!("EMA copy lacks {name}")))?
                .shallow_clone();
            let _ = e.f_mul_scalar_(d)?;
            let _ = e.f_add_(&p.f_mul_scalar(1.0 - d)?)?;
        }
        Ok(())
    }

    /// Train until `config.steps`, writing a resumable checkpoint to `dir` every
    /// `checkpoint_every` steps and at the end, and appending `step,loss` lines to
    /// `dir/loss.csv`. `progress(step, loss)` is called after every step.
    pub fn train(&mut self, data: &TrainData, dir: impl AsRef<Path>, mut progress: impl FnMut(u64, f64)) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let csv_path = dir.join("loss.csv");
        // A run stopped between checkpoints logged steps it will now take again: keep the
        // curve up to the checkpoint only, so every step appears once.
        if let Ok(text) = std::fs::read_to_string(&csv_path) {
            let kept: String = text
                .lines()
                .filter(|l| {
                    l.split(',')
                        .next()
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_none_or(|n| n <= self.step)
                })
                .map(|l| format!("{l}\n"))
                .collect();
            if kept.len() != text.len() {
                replace_with(&csv_path, |tmp| {
                    std::fs::write(tmp, &kept).map_err(|e| Error::io(tmp, e))
                })?;
            }
        }
        let mut csv = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&csv_path)
            .map_err(|e| Error::io(&csv_path, e))?;
        if csv.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
            writeln!(csv, "step,loss").map_err(|e| Error::io(&csv_path, e))?;
        }
        while self.step < self.config.steps {
            let loss = self.train_step(data)?;
            writeln!(csv, "{},{loss}", self.step).map_err(|e| Error::io(&csv_path, e))?;
            progress(self.step, loss);
            if self.step.is_multiple_of(self.config.checkpoint_every) || self.step == self.config.steps {
                csv.flush().map_err(|e| Error::io(&csv_path, e))?;
                self.save_checkpoint(dir)?;
            }
        }
        Ok(())
    }

    /// Write `dir/checkpoint.safetensors` (weights, EMA, Adam moments) and
    /// `dir/checkpoint.json` (settings and step), each atomically.
    pub fn save_checkpoint(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let mut sd = StateDict::new();
        for (name, data) in self.net.state_dict()?.into_entries() {
            sd.insert(format!("model.{name}"), data);
        }
        for (name, data) in self.ema.state_dict()?.into_entries() {
            sd.insert(format!("ema.{name}"), data);
        }
        for (name, _, m, v) in &self.params {
            sd.insert(format!("adam_m.{name}"), crossing::tensor_to_data(m)?);
            sd.insert(format!("adam_v.{name}"), crossing::tensor_to_data(v)?);
        }
        let st = dir.join("checkpoint.safetensors");
        replace_with(&st, |tmp| save_safetensors(&sd, tmp))?;
        let meta = CheckpointMeta {
            step: self.step,
            train: self.config.clone(),
            model: self.model_config.clone(),
            loss_scale: self.scaler,
        };
        let json = serde_json::to_string_pretty(&meta).map_err(|e| Error::Model(e.to_string()))?;
        replace_with(&dir.join("checkpoint.json"), |tmp| {
            std::fs::write(tmp, &json).map_err(|e| Error::io(tmp, e))
        })
    }

    /// Continue a run from `dir` (as written by [`save_checkpoint`](Trainer::save_checkpoint)),
    /// optionally with a new total number of steps.
    pub fn resume(dir: impl AsRef<Path>, device: Device, steps: Option<u64>) -> Result<Self> {
        let dir = dir.as_ref();
        let meta_path = dir.join("checkpoint.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let mut meta: CheckpointMeta =
            serde_json::from_str(&text).map_err(|e| Error::checkpoint(&meta_path, e.to_string()))?;
        if let Some(s) = steps {
            meta.train.steps = s;
        }
        meta.train.validate()?;
        meta.train.check_device(device)?;
        let sd = load_state_dict(dir.join("checkpoint.safetensors"))?;
        let part = |prefix: &str| -> StateDict {
            let mut out = StateDict::new();
            for (k, v) in sd.iter() {
                if let Some(rest) = k.strip_prefix(prefix) {
                    out.insert(rest.to_string(), v.clone());
                }
            }
            out
        };
        let src = dir.join("checkpoint.safetensors");
        let net = DdpmUNet::from_state_dict(meta.model.clone(), part("model."), device, Kind::Float, &src)?;
        let ema = DdpmUNet::from_state_dict(meta.model.clone(), part("ema."), device, Kind::Float, &src)?;
        let scaler = match meta.train.precision {
            Precision::Mixed => Some(meta.loss_scale.unwrap_or_else(LossScale::new)),
            Precision::F32 => None,
        };
        Self::assemble(meta.model, meta.train, net, ema, Some(&sd), meta.step, scaler)
    }

    /// Write the EMA weights as a model folder that [`DdpmUNet::load`] reads:
    /// `config.json`, `scheduler_config.json`, `diffusion_pytorch_model.safetensors`.
    /// Refuses to overwrite an existing weights file.
    pub fn export(&self, dir: impl AsRef<Path>) -> Result<()> {
        export_model(&self.ema, &self.config, dir.as_ref())
    }

    /// The EMA network (what sampling uses).
    pub fn ema(&self) -> &DdpmUNet {
        &self.ema
    }
}

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    step: u64,
    train: TrainConfig,
    model: DdpmConfig,
    #[serde(default)]
    loss_scale: Option<LossScale>,
}

fn tensor_from(sd: &StateDict, key: &str, device: Device) -> Result<Tensor> {
    let data = sd
        .get(key)
        .ok_or_else(|| Error::checkpoint("checkpoint.safetensors", format!("missing `{key}`")))?;
    Ok(crate::models::loading::tensor_from_data(data)?
        .f_to_kind(Kind::Float)?
        .f_to_device(device)?)
}

/// Write through a temporary file in the same folder, then rename over `path`.
fn replace_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Save a DDPM UNet and its training schedule as a loadable model folder.
pub fn export_model(net: &DdpmUNet, train: &TrainConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights = dir.join("diffusion_pytorch_model.safetensors");
    if weights.exists() {
        return Err(Error::InvalidInput(format!(
            "{} exists; remove it or export to another folder",
            weights.display()
        )));
    }
    let cfg = net.config().to_diffusers_json()?;
    std::fs::write(dir.join("config.json"), cfg).map_err(|e| Error::io(dir.join("config.json"), e))?;
    let sched_path = dir.join("scheduler_config.json");
    std::fs::write(&sched_path, train.schedule.to_scheduler_config()).map_err(|e| Error::io(&sched_path, e))?;
    save_safetensors(&net.state_dict()?, &weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_scale_backs_off_and_grows_like_grad_scaler() {
        let mut s = LossScale::new();
        s.update(true);
        assert_eq!(s.scale, 32768.0);
        for _ in 0..LossScale::GROWTH_INTERVAL - 1 {
            s.update(false);
        }
        assert_eq!(s.scale, 32768.0);
        s.update(false);
        assert_eq!((s.scale, s.clean_steps), (65536.0, 0));
        // An overflow resets the run of clean steps.
        for _ in 0..10 {
            s.update(false);
        }
        s.update(true);
        assert_eq!((s.scale, s.clean_steps), (32768.0, 0));
        for _ in 0..40 {
            s.update(true);
        }
        assert_eq!(s.scale, 1.0, "the scale never drops below 1");
    }

    #[test]
    fn dropout_is_refused_not_ignored() {
        let e = Trainer::new(DdpmConfig::cifar10(), TrainConfig::default(), Device::Cpu)
            .err()
            .expect("dropout 0.1 must be refused");
        assert!(e.to_string().contains("dropout"), "{e}");
    }

    #[test]
    fn every_numeric_setting_is_validated() {
        let ok = TrainConfig::default();
        ok.validate().unwrap();
        let cases: Vec<(TrainConfig, &str)> = vec![
            (
                TrainConfig {
                    grad_clip: f64::NAN,
                    ..ok.clone()
                },
                "grad_clip",
            ),
            (
                TrainConfig {
                    grad_clip: -1.0,
                    ..ok.clone()
                },
                "grad_clip",
            ),
            (
                TrainConfig {
                    grad_clip: 0.0,
                    ..ok.clone()
                },
                "grad_clip",
            ),
            (
                TrainConfig {
                    grad_clip: f64::INFINITY,
                    ..ok.clone()
                },
                "grad_clip",
            ),
            (
                TrainConfig {
                    lr: f64::NAN,
                    ..ok.clone()
                },
                "lr",
            ),
            (
                TrainConfig {
                    lr: -1e-3,
                    ..ok.clone()
                },
                "lr",
            ),
            (TrainConfig { lr: 1e9, ..ok.clone() }, "lr"),
            (
                TrainConfig {
                    ema_decay: f64::NAN,
                    ..ok.clone()
                },
                "ema_decay",
            ),
            (
                TrainConfig {
                    ema_decay: 1.0,
                    ..ok.clone()
                },
                "ema_decay",
            ),
            (
                TrainConfig {
                    ema_decay: -0.1,
                    ..ok.clone()
                },
                "ema_decay",
            ),
            (TrainConfig { steps: 0, ..ok.clone() }, "steps"),
            (
                TrainConfig {
                    steps: u64::MAX,
                    ..ok.clone()
                },
                "steps",
            ),
            (
                TrainConfig {
                    warmup: u64::MAX,
                    ..ok.clone()
                },
                "warmup",
            ),
            (
                TrainConfig {
                    batch_size: 0,
                    ..ok.clone()
                },
                "batch_size",
            ),
            (
                TrainConfig {
                    batch_size: 1 << 40,
                    ..ok.clone()
                },
                "batch_size",
            ),
            (
                TrainConfig {
                    checkpoint_every: 0,
                    ..ok.clone()
                },
                "checkpoint_every",
            ),
        ];
        for (config, name) in cases {
            let e = config.validate().expect_err(name);
            assert!(e.to_string().contains(name), "{name}: {e}");
            // The trainer refuses it too, before building a network.
            let e = Trainer::new(DdpmConfig::tiny(), config, Device::Cpu).err().expect(name);
            assert!(e.to_string().contains(name), "{name}: {e}");
        }
        assert!(TrainData::from_folder(std::env::temp_dir(), 1 << 20).is_err());
    }

    #[test]
    fn mixed_precision_needs_cuda() {
        let config = TrainConfig {
            precision: Precision::Mixed,
            ..TrainConfig::default()
        };
        let e = Trainer::new(DdpmConfig::tiny(), config, Device::Cpu)
            .err()
            .expect("CPU mixed precision must be refused");
        assert!(e.to_string().contains("CUDA"), "{e}");
    }
}
