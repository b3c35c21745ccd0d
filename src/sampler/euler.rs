//! Euler and Euler-ancestral steps in the VE variable `y = x/α`, `σ = σ_VP/α`.

use ndarray::{Array4, Zip};

use super::kernel::{check_like, noisy_pass};
use crate::core::noise::NoiseStreams;
use crate::core::prediction::Prediction;
use crate::schedule::GridPoint;
use crate::Result;

/// Euler: `y_next = y + (σ_next − σ)·d`, `d = (y − x̂0)/σ = ε̂`. Ancestral: step to
/// `σ_down = √(σ_next² − σ_up²)`, then add `σ_up·z` with `σ_up² = σ_next²(σ² − σ_next²)/σ²`.
/// The result is mapped back to `x = α_next·y`. Overwrites `x` in one pass, returns `x̂0`.
pub(super) fn step(
    ancestral: bool,
    x: &mut Array4<f32>,
    pred: Prediction,
    from: &GridPoint,
    to: Option<&GridPoint>,
    noise: &mut NoiseStreams,
) -> Result<Array4<f32>> {
    check_like(&pred.x0, x, "the predicted x0")?;
    let Some(to) = to else {
        x.assign(&pred.x0);
        return Ok(pred.x0);
    };
    check_like(&pred.eps, x, "the predicted noise")?;
    let (a_cur, s_cur) = (from.level.alpha, from.level.sigma_ve());
    let (a_next, s_next) = (to.level.alpha, to.level.sigma_ve());
    let (s_down, s_up) = if ancestral {
        let up = (s_next * s_next * (s_cur * s_cur - s_next * s_next) / (s_cur * s_cur))
            .max(0.0)
            .sqrt();
        ((s_next * s_next - up * up).max(0.0).sqrt(), up)
    } else {
        (s_next, 0.0)
    };
    // x_next = α_next·(x/α_cur + (σ_down − σ_cur)·ε̂) [+ α_next·σ_up·z]
    let cx = (a_next / a_cur) as f32;
    let ce = (a_next * (s_down - s_cur)) as f32;
    if s_up > 0.0 {
        let cz = (a_next * s_up) as f32;
        noisy_pass(noise, x, pred.eps.view(), pred.eps.view(), |x, e, _, z| {
            cx * x + ce * e + cz * z
        })?;
    } else {
        Zip::from(x).and(&pred.eps).par_for_each(|x, &e| *x = cx * *x + ce * e);
    }
    Ok(pred.x0)
}
