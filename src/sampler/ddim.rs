//! DDIM step with `η` (= FastDPM's generalized step with `κ`).

use ndarray::Zip;

use super::{draw, StepOutput};
use crate::core::noise::NoiseStreams;
use crate::core::prediction::Prediction;
use crate::schedule::GridPoint;
use crate::Result;

/// `x_next = √a_next·x̂0 + √(1 − a_next − σ²)·ε̂ + σ·z`, with
/// `σ = η·√((1 − a_next)/(1 − a_cur)·(1 − a_cur/a_next))`. Without clipping this is exactly
/// FastDPM's `√(a_next/a_cur)·x + [√(1−a_next−σ²) − √(a_next/a_cur)·√(1−a_cur)]·ε + σz`.
pub(super) fn step(
    eta: f64,
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
    let a_cur = from.level.alpha_bar();
    let a_next = to.level.alpha_bar();
    let sigma = eta * ((1.0 - a_next) / (1.0 - a_cur) * (1.0 - a_cur / a_next)).sqrt();
    let c0 = a_next.sqrt() as f32;
    let ce = (1.0 - a_next - sigma * sigma).max(0.0).sqrt() as f32;
    let mut out = pred.x0.clone();
    if sigma > 0.0 {
        let z = draw(noise, &out)?;
        let s = sigma as f32;
        Zip::from(&mut out)
            .and(&pred.eps)
            .and(&z)
            .par_for_each(|o, &e, &z| *o = c0 * *o + ce * e + s * z);
    } else {
        Zip::from(&mut out)
            .and(&pred.eps)
            .par_for_each(|o, &e| *o = c0 * *o + ce * e);
    }
    Ok(StepOutput {
        prev_sample: out,
        pred_x0: pred.x0,
    })
}
