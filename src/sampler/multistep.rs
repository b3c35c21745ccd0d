//! Multistep samplers: PNDM's PLMS and DPM-Solver++(2M).

use ndarray::{Array4, ArrayView4, Zip};

use super::{Model, SamplerState, StepOutput};
use crate::core::prediction::Prediction;
use crate::schedule::GridPoint;
use crate::Result;

/// PNDM's transfer `φ(x, ε, a_cur → a_next)` (diffusers' `_get_prev_sample`):
/// `√(a_n/a_c)·x − (a_n − a_c)·ε / (a_c·√(1−a_n) + √(a_c(1−a_c)a_n))`; at `a_n = 1` it is `x̂0`.
fn transfer(x: ArrayView4<'_, f32>, eps: &Array4<f32>, a_cur: f64, a_next: f64) -> Array4<f32> {
    let cx = (a_next / a_cur).sqrt() as f32;
    let denom = a_cur * (1.0 - a_next).sqrt() + (a_cur * (1.0 - a_cur) * a_next).sqrt();
    let ce = (-(a_next - a_cur) / denom) as f32;
    let mut out = eps.clone();
    Zip::from(&mut out).and(&x).par_for_each(|o, &x| *o = cx * x + ce * *o);
    out
}

/// Linear combination `Σ w_i·e_i`.
fn combine(terms: &[(f32, &Array4<f32>)]) -> Array4<f32> {
    let mut out = terms[0].1.mapv(|v| v * terms[0].0);
    for (w, e) in &terms[1..] {
        Zip::from(&mut out).and(*e).par_for_each(|o, &v| *o += w * v);
    }
    out
}

/// One PLMS step. `history` holds the `ε̂` of earlier steps (at most the last 3 are used).
pub(super) fn pndm(
    model: &mut Model<'_>,
    x: ArrayView4<'_, f32>,
    from: &GridPoint,
    to: Option<&GridPoint>,
    history: &mut Vec<Array4<f32>>,
) -> Result<StepOutput> {
    let a_cur = from.level.alpha_bar();
    let a_next = to.map_or(1.0, |p| p.level.alpha_bar());
    let pred = model(x, from)?;
    let eps = match (history.len(), to) {
        (0, Some(to)) => {
            // diffusers repeats the second timestep: predict the end point, evaluate there,
            // and average the two slopes (a second-order start).
            let x_end = transfer(x, &pred.eps, a_cur, a_next);
            let end = model(x_end.view(), to)?;
            combine(&[(0.5, &pred.eps), (0.5, &end.eps)])
        }
        (0, None) => pred.eps.clone(),
        (1, _) => combine(&[(1.5, &pred.eps), (-0.5, &history[0])]),
        (2, _) => combine(&[
            (23.0 / 12.0, &pred.eps),
            (-16.0 / 12.0, &history[1]),
            (5.0 / 12.0, &history[0]),
        ]),
        (n, _) => combine(&[
            (55.0 / 24.0, &pred.eps),
            (-59.0 / 24.0, &history[n - 1]),
            (37.0 / 24.0, &history[n - 2]),
            (-9.0 / 24.0, &history[n - 3]),
        ]),
    };
    let prev_sample = transfer(x, &eps, a_cur, a_next);
    history.push(pred.eps);
    if history.len() > 3 {
        history.remove(0);
    }
    Ok(StepOutput {
        prev_sample,
        pred_x0: pred.x0,
    })
}

/// One DPM-Solver++(2M) step (midpoint form), with `λ = log(α/σ)`, `h = λ_next − λ_cur`:
/// first order `x_next = (σ_n/σ_c)·x − α_n(e^{−h} − 1)·D0`; second order adds
/// `−½·α_n(e^{−h} − 1)·D1`, `D1 = (x̂0_cur − x̂0_prev)·h/h_prev`. Into the clean data it
/// returns `x̂0` (first order with `σ_next = 0`).
pub(super) fn dpm_solver_pp_2m(
    x: ArrayView4<'_, f32>,
    pred: Prediction,
    from: &GridPoint,
    to: Option<&GridPoint>,
    state: &mut SamplerState,
) -> Result<StepOutput> {
    let lambda = |p: &GridPoint| (p.level.alpha / p.level.sigma).ln();
    let l_cur = lambda(from);
    let Some(to) = to else {
        return Ok(StepOutput {
            prev_sample: pred.x0.clone(),
            pred_x0: pred.x0,
        });
    };
    let (a_n, s_n) = (to.level.alpha, to.level.sigma);
    let h = lambda(to) - l_cur;
    let phi = (-h).exp_m1(); // e^{−h} − 1
    let cx = (s_n / from.level.sigma) as f32;
    let c0 = (-a_n * phi) as f32;
    let mut out = pred.x0.clone();
    match (state.history.last(), state.last_lambda) {
        (Some(prev_x0), Some(l_prev)) => {
            let r = (l_cur - l_prev) / h;
            let c1 = (-0.5 * a_n * phi / r) as f32;
            Zip::from(&mut out)
                .and(&x)
                .and(prev_x0)
                .par_for_each(|o, &x, &p| *o = cx * x + c0 * *o + c1 * (*o - p));
        }
        _ => Zip::from(&mut out).and(&x).par_for_each(|o, &x| *o = cx * x + c0 * *o),
    }
    state.history.clear();
    state.history.push(pred.x0.clone());
    state.last_lambda = Some(l_cur);
    Ok(StepOutput {
        prev_sample: out,
        pred_x0: pred.x0,
    })
}
