//! What the applications drive: a [`LocalSampler`] maps a batch of images to Boomerang
//! samples at `t`, drawing all its randomness from per-item [`NoiseStreams`].
//!
//! - Every [`Boomerang`] runner is one (pixel-space models: DDPM, the analytic denoisers, any
//!   [`Denoiser`]);
//! - with the `tch` feature, `StableDiffusionSampler` is one too (Boomerang in Stable
//!   Diffusion's latent space: VAE encode, noise at `t`, guided reverse process, decode).
//!
//! [`crate::apps::enhance`], [`crate::apps::augment`] and [`crate::apps::anonymize`] take any `LocalSampler`
//! (also as `&dyn LocalSampler`), so a new model family plugs into all of them at once.

use ndarray::{Array4, ArrayView4};

use crate::apps::dataset::ModelInput;
use crate::core::noise::NoiseStreams;
use crate::schedule::TimeSpec;
use crate::{Boomerang, Denoiser, Result};

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

impl<D: Denoiser> LocalSampler for Boomerang<D> {
    fn input(&self) -> ModelInput {
        ModelInput::from_spec(self.denoiser().spec())
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

#[cfg(feature = "tch")]
pub use sd::StableDiffusionSampler;

#[cfg(feature = "tch")]
mod sd {
    use ndarray::{Array4, ArrayView4};

    use super::LocalSampler;
    use crate::apps::dataset::ModelInput;
    use crate::core::noise::NoiseStreams;
    use crate::models::stable_diffusion::{SdBoomerangParams, StableDiffusion};
    use crate::schedule::{NoiseSchedule, TimeSpec};
    use crate::{DataRange, Result};

    /// Stable Diffusion as a [`LocalSampler`]: [`StableDiffusion::boomerang_images`] with fixed
    /// prompts, guidance, sampler and grid; `t` comes from each call. Images are RGB in
    /// `[-1, 1]` with sides that are multiples of the VAE's factor (8 for SD).
    pub struct StableDiffusionSampler<'a> {
        sd: &'a StableDiffusion,
        params: SdBoomerangParams,
    }

    impl<'a> StableDiffusionSampler<'a> {
        /// Wrap a loaded pipeline with the settings of every run (`params.t` is ignored:
        /// each call gives its own). One prompt applies to every image.
        pub fn new(sd: &'a StableDiffusion, params: SdBoomerangParams) -> Result<Self> {
            if params.prompts.len() != 1 {
                return Err(crate::Error::param(
                    "prompts",
                    "a StableDiffusionSampler uses one prompt for every image",
                ));
            }
            Ok(Self { sd, params })
        }

        /// The settings.
        pub fn params(&self) -> &SdBoomerangParams {
            &self.params
        }
    }

    impl LocalSampler for StableDiffusionSampler<'_> {
        fn input(&self) -> ModelInput {
            ModelInput {
                channels: 3,
                size: None,
                multiple: self.sd.latent_factor(),
                range: DataRange::MinusOneToOne,
            }
        }

        fn start_time(&self, t: TimeSpec) -> Result<f64> {
            let schedule = NoiseSchedule::from(self.sd.schedule());
            let start = schedule.start(t)?;
            self.params.spacing.grid(&schedule, start)?;
            Ok(start.time)
        }

        fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
            let params = SdBoomerangParams {
                t,
                ..self.params.clone()
            };
            Ok(self.sd.boomerang_images(images, &params, noise, None)?.images)
        }
    }
}
