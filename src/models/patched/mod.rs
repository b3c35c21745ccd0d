//! Patched Diffusion (Luhman & Luhman 2022, "Improving Diffusion Model Efficiency Through
//! Patching", arXiv 2207.04316; code: PatchDiffusion-Pytorch, a guided-diffusion fork).
//!
//! The UNet runs on `P×P` patches folded into channels (`H×W×C → H/P×W/P×P²C`), so a
//! 256² model with `P = 4` costs what a 64² one does. Facts this port reproduces:
//!
//! - **Output**: `x0` (`model_mean_type = "xstart"`) and a variance head `v ∈ [0, 1]` with
//!   `log σ² = v·log β̃ + (1 − v)·log β` (the reverse of ADM's): [`PatchedDenoiser`] hands the
//!   crate `f = 1 − v`.
//! - **Time**: the ORIGINAL integer step (`rescale_timesteps = False`), also on respaced
//!   grids; β = linspace(1e-4, β_T, T), β_T = 0.02 (FFHQ: 0.025, `linear0.025`).
//! - **Network** ([`PatchedUNet`]): patchify with channel `(ph·P + pw)·C + c`; a `[sin, cos]`
//!   time embedding through `Linear → SiLU → Linear → SiLU` of width `mc·mult[-1]`; a 2-D
//!   sinusoidal positional embedding (ω = 64/res) added IN PLACE after the input
//!   convolution (so the first skip carries it too); scale-shift residual blocks with a bare
//!   `emb_layers` Linear, an affine-free group norm (eps 1e-3) and the class gate
//!   `h·sigmoid(classemb_proj(label_embs[y]) + 2)`; channel changes in the TF-"SAME"
//!   stride-2 Downsample and the nearest + conv Upsample; Conv1d-qkv attention with
//!   `C_h^−¼` on q and k and an f32 softmax; a mean head and a separate variance head fed
//!   `cat[x_in, h] + conv1×1(silu(t_emb))`.
//! - **Sampling** (`scripts/image_sample.py`, [`SamplingDefaults`]): ancestral steps with the
//!   learned variance on the respaced grid ([`respaced_steps`], 250 of 1000); ImageNet adds
//!   classifier-free guidance 1.5 against the null label 1000 (on the ε derived from `x0`,
//!   which equals guiding `x0` itself: ε is affine in `x0` with weights summing to one) and
//!   dynamic thresholding at the 0.995 quantile; its two models split the process at SNR
//!   0.25 ([`PatchedSplit`]).
//!
//! The released weights are lost (the authors' README, March 2024); the architecture is
//! checked against an independent PyTorch transcription of the original on tiny random
//! networks (`tools/make_patched_fixtures.py`, `tests/models/patched_parity.rs`).
//!
//! ```no_run
//! use boomerang::models::patched::{self, ConfigSource, PatchedOptions};
//! use boomerang::{Boomerang, Condition, TimeSpec};
//! use rand::SeedableRng;
//!
//! // imagenet_weights_0.pt and imagenet_weights_1.pt, with the ImageNet preset.
//! let options = PatchedOptions { config: ConfigSource::Preset("imagenet256".into()), ..Default::default() };
//! let model = patched::load_split(&["imagenet_weights_0.pt", "imagenet_weights_1.pt"], &options)?;
//! let d = model.defaults;
//! // d.steps is the original's respaced grid (250 of 1000). Spacing::Uniform(250) visits it
//! // exactly from the last step; below other starts it re-spreads the steps (its first step is
//! // still the respaced one from 246 of the 249 respaced steps).
//! let mut builder = Boomerang::builder(model.denoiser, model.schedule)
//!     .sampler(d.sampler)
//!     .spacing(boomerang::Spacing::Uniform(d.steps.len()))
//!     .clip(d.clip)
//!     .condition(Condition::Class(vec![207; 4])); // golden retriever
//! if let Some(g) = d.guidance {
//!     builder = builder.guidance(g);
//! }
//! let runner = builder.build()?;
//! let x0 = ndarray::Array4::<f32>::zeros((4, 3, 256, 256));
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let local = runner.run(x0.view(), TimeSpec::fraction(0.5), &mut rng)?;
//! # Ok::<(), boomerang::Error>(())
//! ```

mod config;
mod denoiser;
mod load;
mod network;
mod pair;
mod respace;

pub use config::{MeanType, PatchedConfig, MAX_PARAMETERS};
pub use denoiser::{variance_frac_from_v, PatchedDenoiser};
pub use load::{
    load, load_split, load_unet, matches_keys, ConfigSource, PatchedModel, PatchedOptions, SamplingDefaults,
};
pub use network::PatchedUNet;
pub use pair::PatchedSplit;
pub use respace::respaced_steps;

pub(crate) use load::load_pipeline;
