//! DLSM's predictor-corrector sampler on a VE SDE, checked on Gaussian data `N(μ, s²)`.

use boomerang::analytic::GaussianDenoiser;
use boomerang::schedule::VeSde;
use boomerang::{Boomerang, NoiseStreams, Sampler, Spacing, TimeSpec};
use ndarray::Array4;
use ndarray_rand::rand_distr::Normal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;

const MU: f64 = 0.1;
const S: f64 = 0.4;

fn stats(x: &Array4<f32>) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    (m, x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (n - 1.0))
}

fn runner(corrector_steps: usize) -> Boomerang<GaussianDenoiser> {
    Boomerang::builder(GaussianDenoiser::new(MU, S).unwrap(), VeSde::dlsm_cifar())
        .sampler(Sampler::PredictorCorrector {
            snr: 0.16,
            corrector_steps,
        })
        .spacing(Spacing::Full)
        .build()
        .unwrap()
}

#[test]
fn predictor_follows_the_closed_form() {
    // A VE level σ is the VP level a = 1/(1+σ²), so design.md §3's closed form applies. The
    // reverse-diffusion predictor is Euler–Maruyama on the reverse SDE; with N = 1000 steps its
    // bias is about 1% of s (mean) and of the variance. Bounds: that bias allowance (1.5% of
    // s, 2% of the variance) plus 6 standard errors of the estimates from n = 32768 pixels.
    let r = runner(0);
    let x0v = 0.7f32;
    for t in [0.3, 0.5, 0.7] {
        let x0 = Array4::from_elem((8, 1, 64, 64), x0v);
        let keys: Vec<u64> = (0..8).collect();
        let out = r
            .run_with(
                x0.view(),
                TimeSpec::fraction(t),
                &mut NoiseStreams::keyed(3, &keys),
                None,
            )
            .unwrap();
        let sigma = out.start.level.sigma;
        assert_eq!(sigma, VeSde::dlsm_cifar().sigma(t), "noise is added exactly at σ(t)");
        let a = 1.0 / (1.0 + sigma * sigma);
        let d = 1.0 - a + a * S * S;
        let (cm, cv) = (
            ((1.0 - a) * MU + a * S * S * x0v as f64) / d,
            S * S * (1.0 - a) * (1.0 - a + 2.0 * a * S * S) / (d * d),
        );
        let (m, v) = stats(&out.sample);
        let n = out.sample.len() as f64;
        let (se_m, se_v) = ((cv / n).sqrt(), cv * (2.0 / n).sqrt());
        assert!((m - cm).abs() < 0.015 * S + 6.0 * se_m, "t={t}: mean {m} vs {cm}");
        assert!((v - cv).abs() < 0.02 * cv + 6.0 * se_v, "t={t}: var {v} vs {cv}");
    }
}

#[test]
fn predictor_corrector_preserves_the_data_distribution() {
    // The Langevin corrector targets the marginal p_t, so with x0 drawn from the data the
    // output is again N(μ, s²) (Eq. 7 of the paper). Measured: |mean − μ| < 0.003, variance
    // within 1.7–2.8% of s². Bounds: a bias allowance of 1% of s (mean) and 3% (variance)
    // plus 6 standard errors for n = 32768 pixels. (On this broad toy distribution the
    // corrector's step, 2(snr·‖z‖/‖s‖)², is large next to σ², so it mixes far from x0: a
    // property of DLSM's step rule, which on image data is ~0.05σ².)
    let r = runner(1);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let x0 = Array4::random_using((8, 1, 64, 64), Normal::new(MU as f32, S as f32).unwrap(), &mut rng);
    for t in [0.3, 0.7] {
        let x = r.run(x0.view(), TimeSpec::fraction(t), &mut rng).unwrap();
        let (m, v) = stats(&x);
        let n = x.len() as f64;
        let (se_m, se_v) = ((S * S / n).sqrt(), S * S * (2.0 / n).sqrt());
        assert!((m - MU).abs() < 0.01 * S + 6.0 * se_m, "t={t}: mean {m}");
        assert!((v - S * S).abs() < 0.03 * S * S + 6.0 * se_v, "t={t}: var {v}");
    }
}
