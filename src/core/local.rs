//! What the applications drive: a [`LocalSampler`] maps a batch of images to Boomerang
//! samples at `t`, drawing all its randomness from per-item [`NoiseStreams`].
//!
//! Every [`Boomerang`] runner is one, pixel-space (DDPM, Patched Diffusion, NCSN++, the
//! analytic denoisers, any [`Denoiser`]) or latent (Stable Diffusion: a runner with a VAE
//! [`Codec`]); the model registry (`models::registry`) loads any checkpoint as one.
//!
//! [`crate::apps::enhance`], [`crate::apps::augment`] and [`crate::apps::anonymize`] take any `LocalSampler`
//! (also as `&dyn LocalSampler`), so a new model family plugs into all of them at once.

use ndarray::{Array4, ArrayView4};

use crate::core::codec::Codec;
use crate::core::denoiser::DenoiserSpec;
use crate::core::noise::NoiseStreams;
use crate::schedule::TimeSpec;
use crate::DataRange;
use crate::{Boomerang, Denoiser, Result};

/// What a model takes, for [`load_for_model`](crate::apps::dataset::load_for_model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInput {
    /// Channels (1 or 3).
    pub channels: usize,
    /// Fixed `(height, width)`, if any.
    pub size: Option<(usize, usize)>,
    /// Without a fixed size, sides must be multiples of this (1: any size; 8 for Stable
    /// Diffusion's VAE).
    pub multiple: usize,
    /// The model's data range.
    pub range: DataRange,
}

impl ModelInput {
    /// From a denoiser's spec; a model with no fixed channel count gets RGB.
    pub fn from_spec(spec: &DenoiserSpec) -> Self {
        Self {
            channels: spec.channels.unwrap_or(3),
            size: spec.image_size,
            multiple: 1,
            range: spec.data_range,
        }
    }
}

/// Boomerang on images: noise to `t`, run back, with per-item noise streams.
pub trait LocalSampler {
    /// The images it takes: channels, fixed size (if any), side multiple, data range.
    fn input(&self) -> ModelInput;

    /// Check `t` and resolve it to the schedule's own time where the noise is added (the
    /// training step for discrete schedules). Errors for a `t` out of range.
    fn start_time(&self, t: TimeSpec) -> Result<f64>;

    /// Boomerang samples of `images` (`N×C×H×W` in [`ModelInput::range`]) at `t`; item `i`
    /// draws every random number from `noise` stream `i`.
    fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>>;
}

impl<D: Denoiser, C: Codec> LocalSampler for Boomerang<D, C> {
    fn input(&self) -> ModelInput {
        self.codec().input(self.denoiser().spec())
    }

    fn start_time(&self, t: TimeSpec) -> Result<f64> {
        let grid = self.plan(t)?;
        Ok(grid.first().map_or(0.0, |p| p.time))
    }

    fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        Ok(self.run_with(images, t, noise, None)?.sample)
    }
}

impl<S: LocalSampler + ?Sized> LocalSampler for &S {
    fn input(&self) -> ModelInput {
        (**self).input()
    }
    fn start_time(&self, t: TimeSpec) -> Result<f64> {
        (**self).start_time(t)
    }
    fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        (**self).sample(images, t, noise)
    }
}

impl<S: LocalSampler + ?Sized> LocalSampler for Box<S> {
    fn input(&self) -> ModelInput {
        (**self).input()
    }
    fn start_time(&self, t: TimeSpec) -> Result<f64> {
        (**self).start_time(t)
    }
    fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        (**self).sample(images, t, noise)
    }
}
