//! Images <-> the space a denoiser works in.
//!
//! Pixel-space models (DDPM, Patched Diffusion, NCSN++, the analytic denoisers) use
//! [`Identity`]; latent models plug a [`Codec`] into the same [`Boomerang`](crate::Boomerang)
//! runner (Stable Diffusion's VAE: `models::stable_diffusion::LatentCodec`), which then
//! encodes the images, noises the latents exactly at `t`, runs the reverse process and
//! decodes.

use ndarray::{Array4, ArrayView4};

use crate::core::denoiser::{DenoiserSpec, ModelInput};
use crate::core::noise::NoiseStreams;
use crate::Result;

/// How a latent model's encoder turns an image into a latent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatentMode {
    /// The posterior mean (what the Boomerang notebook uses): deterministic.
    #[default]
    Mode,
    /// A posterior sample `mean + std·z`, `z` drawn from the image's own noise stream
    /// (diffusers' img2img default).
    Sample,
}

/// Maps images to model space and back.
///
/// `encode` may draw random numbers (a VAE posterior sample), always from the item's own
/// stream in `noise` (one stream per image), so an image's result never depends on its batch.
pub trait Codec {
    /// The images it takes, given the denoiser's spec (pixel models: the spec's own).
    fn input(&self, model: &DenoiserSpec) -> ModelInput;

    /// Check a batch of images before anything runs (shape, range, finite values).
    fn check_images(&self, images: &ArrayView4<'_, f32>, model: &DenoiserSpec) -> Result<()>;

    /// Images -> model space.
    fn encode(&self, images: ArrayView4<'_, f32>, noise: &mut NoiseStreams) -> Result<Array4<f32>>;

    /// Model space -> images.
    fn decode(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>>;
}

/// The identity: the denoiser works on the images themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Identity;

impl Codec for Identity {
    fn input(&self, model: &DenoiserSpec) -> ModelInput {
        ModelInput::from_spec(model)
    }

    fn check_images(&self, images: &ArrayView4<'_, f32>, model: &DenoiserSpec) -> Result<()> {
        model.check_batch(images, "x0")
    }

    fn encode(&self, images: ArrayView4<'_, f32>, _noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        Ok(images.to_owned())
    }

    fn decode(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        Ok(x.to_owned())
    }
}

impl<C: Codec + ?Sized> Codec for &C {
    fn input(&self, model: &DenoiserSpec) -> ModelInput {
        (**self).input(model)
    }
    fn check_images(&self, images: &ArrayView4<'_, f32>, model: &DenoiserSpec) -> Result<()> {
        (**self).check_images(images, model)
    }
    fn encode(&self, images: ArrayView4<'_, f32>, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        (**self).encode(images, noise)
    }
    fn decode(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>> {
        (**self).decode(x)
    }
}
