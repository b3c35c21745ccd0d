//! The model families and the [`registry`] that detects and loads them.
//!
//! - [`registry::detect`] tells a checkpoint's [`Family`] from its config files and tensor
//!   key names (header only); [`registry::load`] returns any family as a
//!   [`Pipeline`](crate::core::pipeline::Pipeline) with its [`ModelDescription`];
//! - one folder per family: `ddpm` (Ho et al.'s UNet, FastDPM, `google/ddpm-*`),
//!   `stable_diffusion` (SD 1.x/2.x diffusers folders, latent space), `patched` (Patched
//!   Diffusion), `ncsnpp` (DLSM's score models and time-conditional classifier), and
//!   `pretrained`, the embedded default model;
//! - with the `tch` feature, every network is a `TchModule` (a forward pass on `tch`
//!   tensors) behind the `Denoiser` seam as `TchDenoiser` (chunking, `no_grad`, the panic
//!   boundary); `crossing` is the ONE place where host arrays become tensors and back
//!   (device and dtype moves, `f32` on the host); `loading` copies state dicts read by
//!   [`crate::checkpoint`] into a `VarStore`, naming missing, unexpected and misshaped
//!   keys.
//!
//! ```no_run
//! # #[cfg(feature = "tch")]
//! # fn main() -> boomerang::Result<()> {
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
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "tch"))]
//! # fn main() {}
//! ```

pub(crate) mod config_json;
#[cfg(feature = "tch")]
pub(crate) mod crossing;
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
pub use family::{ClassLabels, Family, LoadedModel, ModelDescription, ModelOptions, Probe};
#[cfg(feature = "tch")]
pub use loading::{load_lazy_into, load_state_dict_into, LoadOptions};
#[cfg(feature = "tch")]
pub use torch::*;
