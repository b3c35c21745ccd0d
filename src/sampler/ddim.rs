//! DDIM step with `η` (= FastDPM's generalized step with `κ`).

use ndarray::{Array4, Zip};

use super::kernel::{check_like, noisy_pass};
use crate::core::noise::NoiseStreams;
use crate::core::prediction::Prediction;
use crate::schedule::GridPoint;
use crate::Result;

/// `x_next = √a_next·x̂0 + √(1 − a_next − σ²)·ε̂ + σ·z`, with
/// `σ = η·√((1 − a_next)/(1 − a_cur)·(1 − a_cur/a_next))`. Without clipping this is exactly
/// FastDPM's `√(a_next/a_cur)·x + [√(1−a_next−σ²) − √(a_next/a_cur)·√(1−a_cur)]·ε + σz`.
/// Replaces `x` by `x_next`, computed in one pass over the prediction's `ε̂` buffer, and
/// returns `x̂0`.
pub(super) fn step(
    eta: f64,
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
    let a_cur = from.level.alpha_bar();
    let a_next = to.level.alpha_bar();
    let sigma = eta * ((1.0 - a_next) / (1.0 - a_cur) * (1.0 - a_cur / a_next)).sqrt();
    let c0 = a_next.sqrt() as f32;
    let ce = (1.0 - a_next - sigma * sigma).max(0.0).sqrt() as f32;
    // The new sample does not read x: write it over ε̂ (read in the same pass anyway) and
    // let that buffer become the sample, instead of writing into x, whose old values the
    // memory system would have to fetch before overwriting them.
    let Prediction { x0, mut eps, .. } = pred;
    if sigma > 0.0 {
        let s = sigma as f32;
        noisy_pass(noise, &mut eps, x0.view(), x0.view(), |e, x0, _, z| {
            c0 * x0 + ce * e + s * z
        })?;
    } else {
        Zip::from(&mut eps)
            .and(&x0)
            .par_for_each(|e, &x0| *e = c0 * x0 + ce * *e);
    }
    *x = eps;
    Ok(x0)
}
