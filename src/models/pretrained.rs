//! The crate's embedded default model, `shapes32`: a small DDPM UNet trained on the
//! procedural [`Shapes`] family at 32×32, so that Boomerang runs offline with a real network
//! and no download.
//!
//! The weights (f16, 2.2 MB) are compiled into the crate from `assets/shapes32/`,
//! which holds a model folder like any other (`config.json`, `scheduler_config.json`,
//! `diffusion_pytorch_model.safetensors`). They were made by the crate's own
//! [`train`](crate::train) module with
//!
//! ```text
//! cargo run --release --example train_default -- assets/shapes32 12000
//! ```
//!
//! (seed 0: 12000 Adam steps of 32 fresh members, lr 1e-3 with 200 warm-up steps, EMA
//! 0.995, DDPM's linear schedule over 1000 steps; the EMA weights, stored in f16).
//!
//! ```no_run
//! use boomerang::models::{pretrained, Device};
//! use boomerang::{Boomerang, Sampler, Spacing, TimeSpec};
//! use rand::SeedableRng;
//!
//! let runner = Boomerang::builder(pretrained::shapes32_denoiser(Device::Cpu)?, pretrained::shapes32_schedule()?)
//!     .sampler(Sampler::ddpm())
//!     .spacing(Spacing::Uniform(250))
//!     .build()?;
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let x0 = pretrained::shapes32_family().sample(4, &mut rng);
//! let similar = runner.run(x0.view(), TimeSpec::fraction(0.5), &mut rng)?;
//! # Ok::<(), boomerang::Error>(())
//! ```

use std::path::Path;

use tch::{Device, Kind};

use super::ddpm::{DdpmConfig, DdpmUNet};
use super::TchDenoiser;
use crate::checkpoint::{Checkpoint, Select};
use crate::schedule::{BetaSchedule, DiscreteSchedule};
use crate::shapes::Shapes;
use crate::Result;

const CONFIG: &str = include_str!("../../assets/shapes32/config.json");
const SCHEDULER: &str = include_str!("../../assets/shapes32/scheduler_config.json");
const WEIGHTS: &[u8] = include_bytes!("../../assets/shapes32/diffusion_pytorch_model.safetensors");

/// The name the command-line tool and logs use for the default model.
pub const SHAPES32: &str = "shapes32";

/// The architecture of `shapes32`: 3 levels (32, 16, 8), 32 base channels, one residual
/// block per level, attention at 8×8.
pub fn shapes32_config() -> Result<DdpmConfig> {
    DdpmConfig::from_diffusers_json(CONFIG)
}

/// The schedule `shapes32` was trained with (DDPM's linear β over 1000 steps).
pub fn shapes32_schedule() -> Result<DiscreteSchedule> {
    BetaSchedule::from_scheduler_config(SCHEDULER)?.build()
}

/// The image family `shapes32` learned.
pub fn shapes32_family() -> Shapes {
    Shapes::new(32).expect("32 ≥ 8")
}

/// The `shapes32` network on `device` in dtype `kind`.
pub fn shapes32(device: Device, kind: Kind) -> Result<DdpmUNet> {
    let weights = Checkpoint::from_bytes(WEIGHTS.to_vec())?.state_dict(&Select::Auto)?;
    DdpmUNet::from_state_dict(
        shapes32_config()?,
        weights,
        device,
        kind,
        Path::new("<embedded shapes32>"),
    )
}

/// The `shapes32` network as a Boomerang denoiser (f32).
pub fn shapes32_denoiser(device: Device) -> Result<TchDenoiser<DdpmUNet>> {
    Ok(TchDenoiser::new(shapes32(device, Kind::Float)?))
}

/// `builtin:shapes32` through the model registry: DDPM's sampler over every training step
/// with `x̂0` clipped, like any DDPM checkpoint.
pub(crate) fn load_pipeline(options: &crate::models::ModelOptions) -> Result<crate::models::LoadedModel> {
    use crate::models::family::{Family, ModelDescription, SamplingDefaults};
    options.refuse(
        "shapes32",
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
    let unet = shapes32(
        crate::models::parse_device(&options.device)?,
        crate::models::parse_kind(&options.dtype)?,
    )?;
    let mut description = ModelDescription::new(Family::Ddpm, format!("builtin:{SHAPES32}"));
    let defaults = SamplingDefaults {
        sampler: crate::Sampler::ddpm(),
        spacing: crate::Spacing::Full,
        clip: crate::Clip::Range,
    };
    let (sampler, spacing, clip) = defaults.resolve(options, &mut description);
    let runner = crate::Boomerang::builder(
        TchDenoiser::new(unet).with_max_batch(options.max_batch)?,
        shapes32_schedule()?,
    )
    .sampler(sampler)
    .spacing(spacing)
    .clip(clip)
    .build()?;
    Ok(crate::models::LoadedModel {
        pipeline: Box::new(runner),
        description,
    })
}
