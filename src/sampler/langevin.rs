//! Predictor-corrector step for VE score models (score SDE / DLSM's sampler).

use ndarray::parallel::prelude::*;
use ndarray::{Array4, Axis, Zip};

use super::kernel::{check_like, noisy_pass};
use super::{Model, SamplerState};
use crate::core::noise::NoiseStreams;
use crate::schedule::GridPoint;
use crate::Result;

/// Corrector (Langevin, `n` times) then reverse-diffusion predictor, at level `from`:
/// - corrector: `s = −ε̂/σ`, `ε_i = 2(snr·‖z_i‖/‖s_i‖)²` per item `i`,
///   `x ← x + ε_i·s + √(2ε_i)·z`;
/// - predictor: `G² = σ_cur² − σ_next²`, `x̄ = x + G²·s`, `x ← x̄ + G·z` (`x̄` at the last step).
///
/// score_sde averages the norms over the batch; here they are per item so an item's result
/// does not depend on its batch (identical for batch size 1). `σ_cur` is the continuous
/// `σ(t)` at the grid time, so the run starts exactly at Boomerang's `t` (DLSM's predictor
/// uses the discrete `σ_i`, `i = ⌊t(N−1)⌋`, and `σ_{i−1}` for `G²`, which differ from these
/// by less than one grid step).
///
/// Each corrector step is a Markov step towards the whole marginal `p_σ`: on data whose
/// score is small next to `1/σ` its step `ε` does not shrink with σ, and a run from `t`
/// forgets `x0` (see [`Sampler::PredictorCorrector`](super::Sampler::PredictorCorrector)).
///
/// Overwrites `x` and returns the last `x̂0`. The corrector's step size needs `‖z_i‖`
/// before `z_i` is used, so it draws an item's noise into a buffer kept in `state` (reused
/// across steps), then updates the item while it is still in cache; the predictor is one
/// pass.
#[allow(clippy::too_many_arguments)]
pub(super) fn step(
    snr: f64,
    corrector_steps: usize,
    model: &mut Model<'_>,
    x: &mut Array4<f32>,
    from: &GridPoint,
    to: Option<&GridPoint>,
    noise: &mut NoiseStreams,
    state: &mut SamplerState,
) -> Result<Array4<f32>> {
    let sigma = from.level.sigma;
    let score_scale = (-1.0 / sigma) as f32;
    for _ in 0..corrector_steps {
        let pred = model(x.view(), from)?;
        check_like(&pred.eps, x, "the predicted noise")?;
        let z = state.scratch_like(x);
        let items = x
            .axis_iter_mut(Axis(0))
            .into_par_iter()
            .zip(z.axis_iter_mut(Axis(0)).into_par_iter());
        noise.par_items(items, |i, (mut xi, mut zi), normals| {
            let ei = pred.eps.index_axis(Axis(0), i);
            let (mut g, mut n) = (0.0f64, 0.0f64);
            // Logical order, as `fill_normal` draws and as the norms were always summed.
            for (z, &e) in zi.iter_mut().zip(ei.iter()) {
                *z = normals.next();
                let s = (e * score_scale) as f64;
                g += s * s;
                n += (*z as f64) * (*z as f64);
            }
            let (g, n) = (g.sqrt(), n.sqrt());
            let step = if g > 0.0 {
                (2.0 * (snr * n / g).powi(2)) as f32
            } else {
                0.0
            };
            let ns = (2.0 * step).sqrt();
            for ((x, &e), &z) in xi.iter_mut().zip(ei.iter()).zip(zi.iter()) {
                *x += step * score_scale * e + ns * z;
            }
        })?;
    }
    let pred = model(x.view(), from)?;
    check_like(&pred.eps, x, "the predicted noise")?;
    let sigma_next = to.map_or(0.0, |p| p.level.sigma);
    let g2 = (sigma * sigma - sigma_next * sigma_next) as f32;
    if to.is_some() {
        let g = g2.sqrt();
        noisy_pass(noise, x, pred.eps.view(), pred.eps.view(), |x, e, _, z| {
            let mean = x + g2 * score_scale * e;
            mean + g * z
        })?;
    } else {
        Zip::from(x)
            .and(&pred.eps)
            .par_for_each(|x, &e| *x += g2 * score_scale * e);
    }
    Ok(pred.x0)
}
