//! Why DLSM's predictor-corrector sampler loses locality on broad data: a property of the
//! Langevin corrector's step rule, shown against its closed form (not a bug).
//!
//! Data `x0 ~ N(μ, s²)` per pixel, VE level σ, `v = s² + σ²`, `u = x − μ`. The exact score
//! is `−u/v`. The corrector's step is `ε = 2(snr·‖z‖/‖score‖)²`; with `d` pixels,
//! `‖z‖² ≈ d` and `‖score‖² ≈ d·q/v²` where `q` is the mean square of `u`, so
//! `ε = 2·snr²·v²/q` and one step is the linear map
//!
//! `u ← (1 − ε/v)·u + √(2ε)·z`.
//!
//! For `x` drawn from the marginal (`q = v`) that is `u ← (1 − 2snr²)·u + 2snr·√v·z`: a step
//! towards the whole of `p_σ` that keeps only `1 − 2snr² = 0.9488` (snr 0.16) of `x`'s
//! deviation, whatever σ is. A Boomerang run from `t` takes `≈ t·N` such steps. The
//! reverse-diffusion predictor, `u ← (1 − Δ/v)·u + √Δ·z` with `Δ = σ_k² − σ_{k+1}²`, only
//! contracts by `Δ/v`, which is tiny at small σ. Tracking the coefficient `c` of `u0` and
//! the variance `w` of the accumulated noise through a whole run gives the expected squared
//! distance to the input, `(c − 1)²s² + w`, which the sampler reproduces.

use boomerang::analytic::GaussianDenoiser;
use boomerang::schedule::{GridPoint, NoiseLevel, VeSde};
use boomerang::{
    Boomerang, Condition, Denoiser, Guidance, Guide, NoiseStreams, Prediction, Sampler, SamplerState, Spacing, TimeSpec,
};
use ndarray::{Array4, ArrayView4, Zip};
use ndarray_rand::rand_distr::Normal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const MU: f64 = 0.1;
const S: f64 = 0.4;
const SNR: f64 = 0.16;

fn data(n: usize, seed: u64) -> Array4<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Array4::random_using((n, 1, 64, 64), Normal::new(MU as f32, S as f32).unwrap(), &mut rng)
}

fn mse(a: &Array4<f32>, b: &Array4<f32>) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64
}

/// The mean-field closed form of a run: `(c − 1)²s² + w` after the grid's steps.
fn closed_form_mse(grid: &[GridPoint], corrector_steps: usize) -> f64 {
    let (mut c, mut w) = (1.0f64, grid[0].level.sigma.powi(2));
    for (k, p) in grid.iter().enumerate() {
        let sigma = p.level.sigma;
        let v = S * S + sigma * sigma;
        for _ in 0..corrector_steps {
            let q = c * c * S * S + w;
            let eps = 2.0 * SNR * SNR * v * v / q;
            let f = 1.0 - eps / v;
            c *= f;
            w = f * f * w + 2.0 * eps;
        }
        let next = grid.get(k + 1).map_or(0.0, |n| n.level.sigma);
        let delta = sigma * sigma - next * next;
        let f = 1.0 - delta / v;
        c *= f;
        w = f * f * w + if k + 1 < grid.len() { delta } else { 0.0 };
    }
    (c - 1.0).powi(2) * S * S + w
}

fn runner(corrector_steps: usize) -> Boomerang<GaussianDenoiser> {
    Boomerang::builder(GaussianDenoiser::new(MU, S).unwrap(), VeSde::dlsm_cifar())
        .sampler(Sampler::PredictorCorrector {
            snr: SNR,
            corrector_steps,
        })
        .spacing(Spacing::Full)
        .build()
        .unwrap()
}

#[test]
fn one_corrector_step_keeps_one_minus_two_snr_squared() {
    // x drawn from the marginal p_σ; one corrector step (to = from: the predictor adds
    // nothing). The regression coefficient of the new deviation on the old one is
    // 1 − 2snr² = 0.9488 at every σ. Tolerance: 0.004, about 4 standard errors of the
    // estimate from 32768 pixels plus the ~0.2% spread of ε between items.
    let d = GaussianDenoiser::new(MU, S).unwrap();
    let keys: Vec<u64> = (0..8).collect();
    for sigma in [0.02, 0.2, 2.0] {
        let x0 = data(8, 7);
        let mut noise = NoiseStreams::keyed(11, &keys);
        let z = noise.normal((1, 64, 64)).unwrap();
        let x = &x0 + &z.mapv(|v| v * sigma as f32);
        let point = GridPoint {
            time: 0.5,
            level: NoiseLevel::ve(sigma),
        };
        let mut model = |x: ArrayView4<'_, f32>, p: &GridPoint| -> boomerang::Result<Prediction> {
            let x0 = d.predict(x, &[p.level.sigma], &Condition::None)?;
            let mut eps = x.to_owned();
            Zip::from(&mut eps)
                .and(&x0)
                .for_each(|e, &x0| *e = (*e - x0) / p.level.sigma as f32);
            Ok(Prediction {
                x0,
                eps,
                variance_frac: None,
            })
        };
        let out = Sampler::PredictorCorrector {
            snr: SNR,
            corrector_steps: 1,
        }
        .step(
            &mut model,
            x.view(),
            &point,
            Some(&point),
            &mut noise,
            &mut SamplerState::default(),
        )
        .unwrap();
        let (mut num, mut den) = (0.0, 0.0);
        for (&a, &b) in out.prev_sample.iter().zip(&x) {
            let (u1, u0) = (a as f64 - MU, b as f64 - MU);
            num += u1 * u0;
            den += u0 * u0;
        }
        let k = num / den;
        let want = 1.0 - 2.0 * SNR * SNR;
        assert!(
            (k - want).abs() < 0.004,
            "σ = {sigma}: contraction {k}, closed form {want}"
        );
    }
}

#[test]
fn predictor_corrector_runs_follow_the_closed_form() {
    // Whole Boomerang runs from x0 ~ data: the squared distance to the input agrees with
    // the mean-field recursion. Measured (RMSE, closed form): t = 0.05 predictor only
    // 0.0191 / 0.0192, with the corrector 0.548 / 0.549; t = 0.1 0.0313 / 0.0315 and
    // 0.567 / 0.568; t = 0.3 predictor only 0.172 / 0.173. A fresh sample is √2·s = 0.566.
    // Tolerance 4% on the MSE: the recursion replaces per-item norms by their expectations
    // (4096 pixels per item: ~2% spread of ε per step, averaging out over the run), and the
    // estimate from 32768 pixels has ~1% relative standard error.
    let x0 = data(8, 3);
    let fresh = (2.0 * S * S).sqrt();
    for t in [0.05, 0.1, 0.3] {
        for steps in [0usize, 1] {
            let r = runner(steps);
            let grid = r.plan(TimeSpec::fraction(t)).unwrap();
            let keys: Vec<u64> = (0..8).collect();
            let out = r
                .run_with(
                    x0.view(),
                    TimeSpec::fraction(t),
                    &mut NoiseStreams::keyed(5, &keys),
                    None,
                )
                .unwrap();
            let got = mse(&out.sample, &x0);
            let want = closed_form_mse(&grid, steps);
            assert!(
                (got / want - 1.0).abs() < 0.04,
                "t = {t}, corrector steps {steps}: MSE {got}, closed form {want}"
            );
            let rmse = got.sqrt();
            eprintln!(
                "t = {t}, corrector steps {steps}: RMSE {rmse:.4}, closed form {:.4}",
                want.sqrt()
            );
            if steps == 0 {
                if t <= 0.1 {
                    assert!(rmse < 0.1 * fresh, "t = {t}: predictor-only RMSE {rmse} is not local");
                }
            } else if t >= 0.1 {
                // ≥ 100 corrector steps: the memory of x0 is (1 − 2snr²)^100 < 1%.
                assert!(rmse > 0.95 * fresh, "t = {t}: PC RMSE {rmse} vs fresh {fresh}");
            }
        }
    }
}

/// A guide that counts its calls and returns a zero gradient.
struct Counting(AtomicUsize);

impl Guide for Counting {
    fn num_classes(&self) -> Option<usize> {
        Some(10)
    }
    fn grad_log_prob(&self, x: ArrayView4<'_, f32>, _t: &[f64], _l: &[i64]) -> boomerang::Result<Array4<f32>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Array4::zeros(x.raw_dim()))
    }
}

#[test]
fn classifier_guidance_reaches_predictor_and_corrector() {
    // Every network call of the sampler goes through the one evaluator that applies
    // guidance: 1 + corrector_steps guide calls per grid point.
    for steps in [0usize, 1, 2] {
        let guide = Arc::new(Counting(AtomicUsize::new(0)));
        let r = Boomerang::builder(
            GaussianDenoiser::new(MU, S).unwrap(),
            VeSde::new(0.01, 50.0, 100, 1e-5).unwrap(),
        )
        .sampler(Sampler::PredictorCorrector {
            snr: SNR,
            corrector_steps: steps,
        })
        .spacing(Spacing::Full)
        .condition(Condition::Class(vec![3]))
        .guidance(Guidance::classifier(1.0, guide.clone()))
        .build()
        .unwrap();
        let n = r.plan(TimeSpec::fraction(0.5)).unwrap().len();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        r.run(data(2, 1).view(), TimeSpec::fraction(0.5), &mut rng).unwrap();
        assert_eq!(
            guide.0.load(Ordering::SeqCst),
            n * (1 + steps),
            "corrector steps {steps}"
        );
    }
}
