//! The model families and the registry that detects and loads them.
//!
//! Every network here is a [`TchModule`]: a forward pass on `tch` tensors. [`TchDenoiser`]
//! turns any of them into a [`Denoiser`], the ndarray seam the samplers and the Boomerang
//! core talk to; it is the ONE place where host arrays become tensors and back:
//!
//! - the batch is moved to the model's [`Device`] and compute [`Kind`] once per call
//!   (a contiguous input is copied straight from its slice, with no intermediate buffer);
//! - large batches run in chunks of [`TchDenoiser::max_batch`] items;
//! - every call runs under `no_grad`, and the result comes back as `f32` whatever the
//!   compute kind;
//! - no noise is drawn here (the core draws it on the host), so results do not depend on
//!   libtorch's global RNG;
//! - no panic crosses the API: the tch calls use the fallible `f_*` forms, and the forward
//!   pass runs inside [`std::panic::catch_unwind`] (see [`TchDenoiser`]), where any panic
//!   left in libtorch's Rust bindings becomes [`Error::Model`].
//!
//! Families: [`ddpm`] (the DDPM UNet of Ho et al., as used by FastDPM and the
//! `google/ddpm-*` diffusers checkpoints), [`stable_diffusion`] (SD 1.x/2.x from diffusers
//! folders), and [`pretrained`], the crate's embedded default model. [`loading`] copies state dicts read by
//! [`crate::checkpoint`] into a `VarStore`, naming missing, unexpected and misshaped keys.
//!
//! ```no_run
//! use boomerang::models::{ddpm::DdpmUNet, Device, Kind, TchDenoiser};
//! use boomerang::{schedule::DiscreteSchedule, Boomerang, Sampler, Spacing, TimeSpec};
//! use rand::SeedableRng;
//!
//! // pesser's conversion of Ho et al.'s CIFAR-10 EMA weights (or an HF diffusers folder).
//! let unet = DdpmUNet::load("ema_diffusion_cifar10_model/model-790000.ckpt", Device::Cpu, Kind::Float)?;
//! let runner = Boomerang::builder(TchDenoiser::new(unet), DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
//!     .sampler(Sampler::ddim(0.0))
//!     .spacing(Spacing::Uniform(100))
//!     .build()?;
//! let x0 = ndarray::Array4::<f32>::zeros((4, 3, 32, 32));
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let x = runner.run(x0.view(), TimeSpec::fraction(0.2), &mut rng)?;
//! # Ok::<(), boomerang::Error>(())
//! ```

pub mod ddpm;
pub mod family;
#[cfg(feature = "tch")]
pub mod loading;
#[cfg(feature = "tch")]
pub mod ncsnpp;
#[cfg(feature = "tch")]
pub(crate) mod nn;
#[cfg(feature = "tch")]
pub mod patched;
#[cfg(feature = "tch")]
pub mod pretrained;
pub mod registry;
#[cfg(feature = "tch")]
pub mod stable_diffusion;
#[cfg(feature = "tch")]
mod torch;

pub use ddpm::DdpmConfig;
#[cfg(feature = "tch")]
pub use ddpm::DdpmUNet;
pub use family::{Family, LoadedModel, ModelDescription, ModelOptions, Probe};
#[cfg(feature = "tch")]
pub use loading::{load_state_dict_into, LoadOptions};
#[cfg(feature = "tch")]
pub use torch::*;
