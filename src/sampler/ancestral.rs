//! DDPM ancestral step: sample `q(x_next | x_cur, x̂0)` on any VP grid.

use ndarray::Array4;

use super::kernel::{check_like, noisy_pass};
use super::Variance;
use crate::core::noise::NoiseStreams;
use crate::core::prediction::Prediction;
use crate::schedule::{posterior_mean_coefs, GridPoint};
use crate::Result;

/// `x_next = c_x0·x̂0 + c_xt·x + σ·z`, where on a respaced grid `β' = 1 − a_cur/a_next` and
/// `σ² = β̃' = β'(1 − a_next)/(1 − a_cur)` (fixed small), `β'` (fixed large), or the learned
/// `exp(f·log β' + (1 − f)·log β̃')`. Overwrites `x` with `x_next` in one pass (drawing `z`
/// on the way) and returns `x̂0`.
pub(super) fn step(
    variance: Variance,
    x: &mut Array4<f32>,
    pred: Prediction,
    from: &GridPoint,
    to: Option<&GridPoint>,
    noise: &mut NoiseStreams,
) -> Result<Array4<f32>> {
    check_like(&pred.x0, x, "the predicted x0")?;
    if to.is_none() {
        // Last step: the posterior mean at a_next = 1 is x̂0 itself.
        x.assign(&pred.x0);
        return Ok(pred.x0);
    }
    let a_cur = from.level.alpha_bar();
    let a_next = to.map_or(1.0, |p| p.level.alpha_bar());
    let (c0, cx) = posterior_mean_coefs(a_cur, a_next);
    let (c0, cx) = (c0 as f32, cx as f32);
    let beta = 1.0 - a_cur / a_next;
    let small = beta * (1.0 - a_next) / (1.0 - a_cur);
    match (variance, pred.variance_frac.as_ref()) {
        (Variance::Learned, Some(frac)) => {
            check_like(frac, x, "the predicted variance")?;
            let (log_large, log_small) = (beta.ln() as f32, small.ln() as f32);
            noisy_pass(noise, x, pred.x0.view(), frac.view(), |x, x0, f, z| {
                let std = (0.5 * (f * log_large + (1.0 - f) * log_small)).exp();
                c0 * x0 + cx * x + std * z
            })?;
        }
        (Variance::Learned, None) => {
            return Err(crate::Error::Incompatible(
                "learned variance requested but the denoiser returned none".into(),
            ))
        }
        (v, _) => {
            let std = if v == Variance::FixedLarge { beta } else { small }.sqrt() as f32;
            noisy_pass(noise, x, pred.x0.view(), pred.x0.view(), |x, x0, _, z| {
                c0 * x0 + cx * x + std * z
            })?;
        }
    }
    Ok(pred.x0)
}
