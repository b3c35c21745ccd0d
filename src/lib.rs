//! # boomerang
//!
//! Local sampling on image manifolds with pretrained diffusion models: Boomerang (Luzi,
//! Mayer, Siahkoohi, Baraniuk et al.) takes an image `x0`, diffuses it forward to step `t` in
//! one draw, `x_t = α_t·x0 + σ_t·z`, and runs a pretrained model's *unmodified* reverse
//! process from exactly `t` back to the data. `t` alone sets how close the result stays to
//! `x0`: small `t` gives a near copy, `t = T` a global sample. Uses: anonymizing datasets,
//! augmenting them, and perceptual resolution enhancement.
//!
//! ```
//! use boomerang::{analytic::GaussianDenoiser, schedule::DiscreteSchedule, Boomerang, TimeSpec};
//! use boomerang::{ndarray::Array4, rand::SeedableRng, rand_chacha::ChaCha8Rng};
//!
//! // An exact denoiser of Gaussian data stands in for a network here.
//! let runner = Boomerang::builder(GaussianDenoiser::new(0.0, 0.5)?, DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
//!     .build()?;
//! let x0 = Array4::<f32>::from_elem((4, 3, 16, 16), 0.25);
//! let mut rng = ChaCha8Rng::seed_from_u64(42);
//! let near = runner.run(x0.view(), TimeSpec::fraction(0.1), &mut rng)?;
//! let far = runner.run(x0.view(), TimeSpec::fraction(0.9), &mut rng)?;
//! let dist = |a: &Array4<f32>| (a - &x0).mapv(|v| v * v).mean().unwrap();
//! assert!(dist(&near) < dist(&far));
//! # Ok::<(), boomerang::Error>(())
//! ```
//!
//! ## Architecture
//! - [`schedule`]: noise schedules ([`NoiseSchedule`]: discrete VP, VE and VP SDEs) and the
//!   conversions between ε, x0, v and score predictions ([`schedule::NoiseLevel`]);
//! - [`Denoiser`]: the seam every network implements (batched NCHW `f32` ndarrays);
//! - [`sampler`]: reverse step rules ([`Sampler`]) and grids ([`Spacing`]), blind to the
//!   network;
//! - [`Boomerang`]: the core, parameters validated into a runner; [`boomerang()`] for one call;
//! - [`NoiseStreams`]: one ChaCha8 stream per batch item, so results never depend on batch
//!   size, order or thread count;
//! - [`analytic`]: exact denoisers (Gaussian data, empirical datasets) as test oracles;
//! - [`image_io`]: images <-> arrays, resizing; [`labels`]: text on pictures (a built-in
//!   bitmap font, grids with row labels and column captions);
//! - [`shapes`]: a procedural image family (the default model's data) with a membership test;
//! - [`checkpoint`]: safetensors and PyTorch checkpoints read in pure Rust, never executing
//!   pickled code;
//! - applications on one [`core::pipeline::Pipeline`] trait: [`apps::enhance`], [`apps::augment`],
//!   [`apps::anonymize`], with [`apps::metrics`];
//! - with `tch`: `models` (the DDPM UNet, Stable Diffusion, and `models::pretrained`, a
//!   small model of the [`shapes`] family embedded in the crate, so everything runs offline)
//!   and `train` (train a DDPM UNet on your own images).
//!
//! ## Features
//! - `tch` (default): libtorch-backed networks, the embedded default model and training.
//!   Without it (`--no-default-features`) the pure-Rust core builds and runs with no
//!   libtorch.
//! - `cli` (default): the `boomerang` command-line tool (clap, indicatif); a library that
//!   does not need it builds with `default-features = false`.
//!
//! ## The crates in the API
//! Arrays are [`ndarray`]'s and random number generators [`rand`]'s, at the versions
//! re-exported here: write `boomerang::ndarray::Array4` and
//! `boomerang::rand_chacha::ChaCha8Rng` (or depend on exactly these versions) so that a
//! newer `cargo add ndarray` can never give you types of another version.
//!
//! ## Reproducibility
//! Randomness comes only from the caller: `run(x0, t, &mut rng)` draws one seed from `rng`
//! and gives item `i` stream `i`; [`NoiseStreams::keyed`] ties an item's noise to a key of
//! your choice (e.g. a file path hash). Same seed, same bits, on any batch size and thread
//! count.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The `ndarray` version of this crate's arrays.
pub use ndarray;
/// The `rand` version of this crate's random number generator traits.
pub use rand;
/// The `rand_chacha` version of the ChaCha8 generators behind [`NoiseStreams`].
pub use rand_chacha;

pub mod analytic;
pub mod apps;
pub mod checkpoint;
pub mod core;
mod error;
pub mod image_io;
pub mod labels;
pub mod models;
pub mod sampler;
pub mod schedule;
pub mod shapes;
#[cfg(feature = "tch")]
pub mod train;

pub use crate::core::boomerang::{boomerang, Boomerang, BoomerangBuilder, BoomerangOutput};
pub use crate::core::denoiser::{
    Condition, DataRange, Denoiser, DenoiserSpec, FnDenoiser, Parameterization, RawPrediction, TimeInput,
};
pub use crate::core::guidance::{Guidance, Guide};
pub use crate::core::noise::NoiseStreams;
pub use crate::core::prediction::{Clip, Prediction, Quantile};
pub use error::{Error, Result};
pub use sampler::{Sampler, SamplerState, Spacing, StepInfo, StepOutput, Variance};
pub use schedule::{GridPoint, NoiseSchedule, TimeSpec};

// The README's examples, compiled and run as doctests (they use the `tch` models).
#[cfg(all(doctest, feature = "tch"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
