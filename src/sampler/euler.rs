//! Euler and Euler-ancestral steps in the VE variable `y = x/α`, `σ = σ_VP/α`.

use ndarray::{ArrayView4, Zip};

use super::{draw, StepOutput};
use crate::core::noise::NoiseStreams;
use crate::core::prediction::Prediction;
use crate::schedule::GridPoint;
use crate::Result;

/// Euler: `y_next = y + (σ_next − σ)·d`, `d = (y − x̂0)/σ = ε̂`. Ancestral: step to
/// `σ_down = √(σ_next² − σ_up²)`, then add `σ_up·z` with `σ_up² = σ_next²(σ² − σ_next²)/σ²`.
/// The result is mapped back to `x = α_next·y`.
pub(super) fn step(
    ancestral: bool,
    x: ArrayView4<'_, f32>,
    pred: Prediction,
    from: &GridPoint,
    to: Option<&GridPoint>,
    noise: &mut NoiseStreams,
) -> Result<StepOutput> {
    let Some(to) = to else {
        return Ok(StepOutput {
            prev_sample: pred.x0.clone(),
            pred_x0: pred.x0,
        });
    };
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
    let mut out = pred.eps.clone();
    if s_up > 0.0 {
        let z = draw(noise, &out)?;
        let cz = (a_next * s_up) as f32;
        Zip::from(&mut out)
            .and(&x)
            .and(&z)
            .par_for_each(|o, &x, &z| *o = cx * x + ce * *o + cz * z);
    } else {
        Zip::from(&mut out).and(&x).par_for_each(|o, &x| *o = cx * x + ce * *o);
    }
    Ok(StepOutput {
        prev_sample: out,
        pred_x0: pred.x0,
    })
}
