//! Multistep samplers: PNDM's PLMS and DPM-Solver++(2M).

use ndarray::{Array4, Zip};

use super::kernel::check_like;
use super::{Model, SamplerState};
use crate::core::prediction::Prediction;
use crate::schedule::GridPoint;
use crate::Result;

/// The coefficients of PNDM's transfer `φ(x, ε, a_cur → a_next) = c_x·x + c_ε·ε`
/// (diffusers' `_get_prev_sample`):
/// `√(a_n/a_c)·x − (a_n − a_c)·ε / (a_c·√(1−a_n) + √(a_c(1−a_c)a_n))`; at `a_n = 1` it is `x̂0`.
fn transfer_coefs(a_cur: f64, a_next: f64) -> (f32, f32) {
    let cx = (a_next / a_cur).sqrt() as f32;
    let denom = a_cur * (1.0 - a_next).sqrt() + (a_cur * (1.0 - a_cur) * a_next).sqrt();
    let ce = (-(a_next - a_cur) / denom) as f32;
    (cx, ce)
}

/// One PLMS step. `state.history` holds the `ε̂` of earlier steps (at most the last 3 are
/// used). The Adams–Bashforth combination `Σ w_i·ε_i` and the transfer are one pass that
/// overwrites `x`; the first step's predicted end point goes to a buffer kept in `state`.
pub(super) fn pndm(
    model: &mut Model<'_>,
    x: &mut Array4<f32>,
    from: &GridPoint,
    to: Option<&GridPoint>,
    state: &mut SamplerState,
) -> Result<Array4<f32>> {
    let a_cur = from.level.alpha_bar();
    let a_next = to.map_or(1.0, |p| p.level.alpha_bar());
    let (cx, ce) = transfer_coefs(a_cur, a_next);
    let pred = model(x.view(), from)?;
    check_like(&pred.eps, x, "the predicted noise")?;
    let history = &state.history;
    for h in history {
        check_like(h, x, "an earlier predicted noise")?;
    }
    // Each arm: x ← c_x·x + c_ε·ε with ε = e0·w0 + w1·e1 + ... (the sum in this order).
    match (history.len(), to) {
        (0, Some(to)) => {
            // diffusers repeats the second timestep: predict the end point, evaluate there,
            // and average the two slopes (a second-order start).
            let end = {
                let x_end = state.scratch.get_or_insert_with(|| Array4::zeros(x.raw_dim()));
                if x_end.dim() != x.dim() {
                    *x_end = Array4::zeros(x.raw_dim());
                }
                Zip::from(&mut *x_end)
                    .and(&*x)
                    .and(&pred.eps)
                    .par_for_each(|o, &x, &e| *o = cx * x + ce * e);
                model(x_end.view(), to)?
            };
            check_like(&end.eps, x, "the predicted noise")?;
            Zip::from(&mut *x)
                .and(&pred.eps)
                .and(&end.eps)
                .par_for_each(|x, &e0, &e1| {
                    let e = e0 * 0.5 + 0.5 * e1;
                    *x = cx * *x + ce * e;
                });
        }
        (0, None) => Zip::from(&mut *x)
            .and(&pred.eps)
            .par_for_each(|x, &e| *x = cx * *x + ce * e),
        (1, _) => Zip::from(&mut *x)
            .and(&pred.eps)
            .and(&history[0])
            .par_for_each(|x, &e0, &h0| {
                let e = e0 * 1.5 + -0.5 * h0;
                *x = cx * *x + ce * e;
            }),
        (2, _) => {
            const W: [f32; 3] = [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0];
            Zip::from(&mut *x)
                .and(&pred.eps)
                .and(&history[1])
                .and(&history[0])
                .par_for_each(|x, &e0, &h1, &h0| {
                    let e = e0 * W[0] + W[1] * h1 + W[2] * h0;
                    *x = cx * *x + ce * e;
                })
        }
        (n, _) => {
            const W: [f32; 4] = [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0];
            Zip::from(&mut *x)
                .and(&pred.eps)
                .and(&history[n - 1])
                .and(&history[n - 2])
                .and(&history[n - 3])
                .par_for_each(|x, &e0, &h1, &h2, &h3| {
                    let e = e0 * W[0] + W[1] * h1 + W[2] * h2 + W[3] * h3;
                    *x = cx * *x + ce * e;
                })
        }
    }
    let Prediction { x0, eps, .. } = pred;
    state.history.push(eps);
    if state.history.len() > 3 {
        state.history.remove(0);
    }
    Ok(x0)
}

/// One DPM-Solver++(2M) step (midpoint form), with `λ = log(α/σ)`, `h = λ_next − λ_cur`:
/// first order `x_next = (σ_n/σ_c)·x − α_n(e^{−h} − 1)·D0`; second order adds
/// `−½·α_n(e^{−h} − 1)·D1`, `D1 = (x̂0_cur − x̂0_prev)·h/h_prev`. Into the clean data it
/// returns `x̂0` (first order with `σ_next = 0`). One pass overwrites `x` and, in the same
/// pass, replaces the remembered `x̂0` by this step's.
pub(super) fn dpm_solver_pp_2m(
    x: &mut Array4<f32>,
    pred: Prediction,
    from: &GridPoint,
    to: Option<&GridPoint>,
    state: &mut SamplerState,
) -> Result<Array4<f32>> {
    check_like(&pred.x0, x, "the predicted x0")?;
    let lambda = |p: &GridPoint| (p.level.alpha / p.level.sigma).ln();
    let l_cur = lambda(from);
    let Some(to) = to else {
        x.assign(&pred.x0);
        return Ok(pred.x0);
    };
    let (a_n, s_n) = (to.level.alpha, to.level.sigma);
    let h = lambda(to) - l_cur;
    let phi = (-h).exp_m1(); // e^{−h} − 1
    let cx = (s_n / from.level.sigma) as f32;
    let c0 = (-a_n * phi) as f32;
    let x0 = &pred.x0;
    match (state.history.last_mut(), state.last_lambda) {
        (Some(prev_x0), Some(l_prev)) => {
            check_like(prev_x0, x, "the previous predicted x0")?;
            let r = (l_cur - l_prev) / h;
            let c1 = (-0.5 * a_n * phi / r) as f32;
            Zip::from(&mut *x).and(x0).and(prev_x0).par_for_each(|x, &o, p| {
                let prev = *p;
                *x = cx * *x + c0 * o + c1 * (o - prev);
                *p = o;
            });
        }
        _ => {
            Zip::from(&mut *x).and(x0).par_for_each(|x, &o| *x = cx * *x + c0 * o);
            // The first step of a run keeps a copy of x̂0 for the next; later steps reuse it.
            state.history.clear();
            state.history.push(x0.clone());
        }
    }
    state.last_lambda = Some(l_cur);
    Ok(pred.x0)
}
