//! Predictor-corrector step for VE score models (score SDE / DLSM's sampler).

use ndarray::{ArrayView4, Axis, Zip};

use super::{draw, Model, StepOutput};
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
pub(super) fn step(
    snr: f64,
    corrector_steps: usize,
    model: &mut Model<'_>,
    x: ArrayView4<'_, f32>,
    from: &GridPoint,
    to: Option<&GridPoint>,
    noise: &mut NoiseStreams,
) -> Result<StepOutput> {
    let sigma = from.level.sigma;
    let score_scale = (-1.0 / sigma) as f32;
    let mut x = x.to_owned();
    for _ in 0..corrector_steps {
        let pred = model(x.view(), from)?;
        let z = draw(noise, &x)?;
        let steps: Vec<f32> = pred
            .eps
            .axis_iter(Axis(0))
            .zip(z.axis_iter(Axis(0)))
            .map(|(e, z)| {
                let g = (e.iter().map(|&v| (v * score_scale) as f64).map(|v| v * v).sum::<f64>()).sqrt();
                let n = (z.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).sqrt();
                if g > 0.0 {
                    (2.0 * (snr * n / g).powi(2)) as f32
                } else {
                    0.0
                }
            })
            .collect();
        for (((mut xi, ei), zi), &step) in x
            .axis_iter_mut(Axis(0))
            .zip(pred.eps.axis_iter(Axis(0)))
            .zip(z.axis_iter(Axis(0)))
            .zip(&steps)
        {
            let ns = (2.0 * step).sqrt();
            Zip::from(&mut xi)
                .and(&ei)
                .and(&zi)
                .par_for_each(|x, &e, &z| *x += step * score_scale * e + ns * z);
        }
    }
    let pred = model(x.view(), from)?;
    let sigma_next = to.map_or(0.0, |p| p.level.sigma);
    let g2 = (sigma * sigma - sigma_next * sigma_next) as f32;
    Zip::from(&mut x)
        .and(&pred.eps)
        .par_for_each(|x, &e| *x += g2 * score_scale * e);
    if to.is_some() {
        let z = draw(noise, &x)?;
        let g = g2.sqrt();
        Zip::from(&mut x).and(&z).par_for_each(|x, &z| *x += g * z);
    }
    Ok(StepOutput {
        prev_sample: x,
        pred_x0: pred.x0,
    })
}
