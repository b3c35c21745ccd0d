//! [`PatchedDenoiser`]: one Patched Diffusion network behind the crate's [`Denoiser`] seam,
//! with its variance head mapped to the crate's convention.

use ndarray::{s, Array4, ArrayView4, Zip};

use super::config::PatchedConfig;
use super::network::PatchedUNet;
use crate::core::denoiser::item_times;
use crate::models::TchDenoiser;
use crate::{Condition, Denoiser, DenoiserSpec, Error, RawPrediction, Result};

/// One Patched Diffusion network as a [`Denoiser`].
///
/// - what it predicts: the config's `model_mean_type` (`x0` for every release:
///   [`Parameterization::Sample`](crate::Parameterization::Sample));
/// - time: the ORIGINAL integer training step ([`TimeInput::Step`](crate::TimeInput::Step);
///   `rescale_timesteps = False`), checked to lie in `0..T`;
/// - data in `[-1, 1]`; conditioning by [`Condition::Class`] for class-conditional models
///   (labels `0..num_classes`, and the null label `num_classes` where classifier-free
///   guidance's unconditional branch needs it), [`Condition::None`] otherwise;
/// - [`predict_variance`](Denoiser::predict_variance) returns the variance head mapped to
///   the crate's convention: the network's sigmoid `v` means
///   `log σ² = v·log β̃ + (1 − v)·log β` (the reverse of ADM's), the crate's
///   [`RawPrediction::variance_frac`] `f` means `log σ² = f·log β + (1 − f)·log β̃`, so
///   `f = 1 − v` ([`variance_frac_from_v`]).
///
/// All host <-> tensor traffic goes through [`TchDenoiser`] (chunks of
/// [`max_batch`](PatchedDenoiser::with_max_batch), `no_grad`, panics turned into errors).
#[derive(Debug)]
pub struct PatchedDenoiser {
    inner: TchDenoiser<PatchedUNet>,
    spec: DenoiserSpec,
}

/// The crate's variance fraction for the network's `v`: `f = 1 − v`.
///
/// ```
/// assert_eq!(boomerang::models::patched::variance_frac_from_v(0.25), 0.75);
/// ```
pub fn variance_frac_from_v(v: f32) -> f32 {
    1.0 - v
}

impl PatchedDenoiser {
    /// Wrap a network.
    pub fn new(unet: PatchedUNet) -> Self {
        let spec = unet.config().spec();
        Self {
            inner: TchDenoiser::new(unet),
            spec,
        }
    }

    /// Run at most `max_batch` items through the network at once (default
    /// [`DEFAULT_MAX_BATCH`](crate::models::DEFAULT_MAX_BATCH)).
    pub fn with_max_batch(mut self, max_batch: usize) -> Result<Self> {
        self.inner = self.inner.with_max_batch(max_batch)?;
        Ok(self)
    }

    /// The network.
    pub fn unet(&self) -> &PatchedUNet {
        self.inner.model()
    }

    /// The configuration.
    pub fn config(&self) -> &PatchedConfig {
        self.inner.model().config()
    }

    /// The raw network output for the batch `x` at integer steps `times` (one for all
    /// items or one per item): `[N, 2C, H, W]`, the mean head then the variance head's `v`
    /// (or `[N, C, H, W]` without `learn_sigma`).
    pub fn forward_raw(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        let n = x.dim().0;
        let t = item_times(times, n)?;
        let steps = self.config().diffusion_steps;
        if let Some(bad) = t.iter().find(|&&t| t.fract() != 0.0 || t < 0.0 || t >= steps as f64) {
            return Err(Error::param(
                "time",
                format!("Patched Diffusion takes integer training steps in 0..{steps}, got {bad}"),
            ));
        }
        let condition = condition.repeat_to(n)?;
        self.inner.forward_array(x, &t, &condition)
    }
}

impl Denoiser for PatchedDenoiser {
    fn spec(&self) -> &DenoiserSpec {
        &self.spec
    }

    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        let raw = self.forward_raw(x, times, condition)?;
        let c = mean_channels(&raw, x.dim().1)?;
        Ok(raw.slice(s![.., ..c, .., ..]).to_owned())
    }

    fn predict_variance(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        let raw = self.forward_raw(x, times, condition)?;
        let c = mean_channels(&raw, x.dim().1)?;
        let output = raw.slice(s![.., ..c, .., ..]).to_owned();
        if !self.spec.learned_variance {
            return Ok(RawPrediction {
                output,
                variance_frac: None,
            });
        }
        if raw.dim().1 != 2 * c {
            return Err(Error::Model(format!(
                "the network returned {} channels, expected {} (mean and variance heads)",
                raw.dim().1,
                2 * c
            )));
        }
        let mut frac = Array4::<f32>::zeros(output.raw_dim());
        Zip::from(&mut frac)
            .and(raw.slice(s![.., c.., .., ..]))
            .for_each(|f, &v| *f = variance_frac_from_v(v));
        Ok(RawPrediction {
            output,
            variance_frac: Some(frac),
        })
    }
}

/// The input's channel count `c`, checked to be at most the output's.
fn mean_channels(raw: &Array4<f32>, c: usize) -> Result<usize> {
    if raw.dim().1 < c {
        return Err(Error::Model(format!(
            "the network returned {} channels for a {c}-channel input",
            raw.dim().1
        )));
    }
    Ok(c)
}
