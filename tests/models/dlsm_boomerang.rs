//! Boomerang with DLSM's family: the default sampler keeps small `t` local (checked on the
//! analytic Gaussian against its closed form), and guided runs with the tiny fixture
//! networks are reproducible, move further from the input as `t` grows, and raise the
//! classifier's probability of the target class.

use std::path::{Path, PathBuf};

use boomerang::analytic::GaussianDenoiser;
use boomerang::checkpoint;
use boomerang::models::ncsnpp::{self, ClassifierGuide, ClassifierLoadOptions, DlsmLoadOptions};
use boomerang::schedule::VeSde;
use boomerang::{Boomerang, Condition, Guidance, NoiseStreams, Spacing, TimeSpec};
use ndarray::{Array4, Axis};
use ndarray_rand::rand_distr::Normal;
use ndarray_rand::RandomExt;
use rand::SeedableRng;
use std::sync::Arc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dlsm")
        .join(name)
}

fn rmse(a: &Array4<f32>, b: &Array4<f32>) -> f64 {
    (a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

#[test]
fn the_default_sampler_keeps_small_t_local_on_the_gaussian() {
    // x0 ~ N(μ, s²) per pixel, the exact σ-conditioned denoiser, DLSM's SDE. The exact
    // reverse process gives E‖x̂ − x0‖²/d = ((1−a)/D)²s² + s²(1−a)(1−a+2as²)/D² with
    // a = 1/(1+σ²), D = 1 − a + a·s² (design.md §3, x0 averaged over the data). DLSM's
    // sampler ends at σ(1e-5) ≈ σ_min with a noise-free step to the posterior mean
    // (`noise_removal`), so its result is a little closer to x0 than an exact sample:
    // the bound is that closed form plus 5% (the predictor's Euler–Maruyama bias is ~1%,
    // the sampling error of 32768 pixels ~1%). Measured: t = 0.02 RMSE 0.0135 (exact
    // process 0.0168), t = 0.05 0.0191 (0.0216), t = 0.1 0.0313 (0.0331). A fresh sample is
    // √2·s = 0.566 away: small t stays two orders of magnitude below that.
    const MU: f64 = 0.1;
    const S: f64 = 0.4;
    let runner = Boomerang::builder(GaussianDenoiser::new(MU, S).unwrap(), VeSde::dlsm_cifar())
        .sampler(ncsnpp::default_sampler())
        .spacing(Spacing::Full)
        .build()
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let x0 = Array4::random_using((8, 1, 64, 64), Normal::new(MU as f32, S as f32).unwrap(), &mut rng);
    let fresh = 2f64.sqrt() * S;
    for t in [0.02, 0.05, 0.1] {
        let keys: Vec<u64> = (0..8).collect();
        let out = runner
            .run_with(
                x0.view(),
                TimeSpec::fraction(t),
                &mut NoiseStreams::keyed(4, &keys),
                None,
            )
            .unwrap();
        let sigma = out.start.level.sigma;
        let a = 1.0 / (1.0 + sigma * sigma);
        let d = 1.0 - a + a * S * S;
        let want = (((1.0 - a) / d).powi(2) * S * S + S * S * (1.0 - a) * (1.0 - a + 2.0 * a * S * S) / (d * d)).sqrt();
        let got = rmse(&out.sample, &x0);
        eprintln!("default sampler, t = {t} (σ = {sigma:.4}): RMSE {got:.4}, exact reverse process {want:.4}");
        assert!(
            got < 1.05 * want && got > 0.6 * want,
            "t = {t}: RMSE {got} vs closed form {want}"
        );
        assert!(got < 0.1 * fresh, "t = {t}: not a near copy ({got} vs fresh {fresh})");
    }
}

struct Tiny {
    guide: Arc<ClassifierGuide>,
    x0: Array4<f32>,
}

fn tiny() -> Tiny {
    tch::set_num_threads(1);
    let guide =
        Arc::new(ncsnpp::load_classifier_guide(fixture("tiny_clf"), &ClassifierLoadOptions::default()).unwrap());
    let io = checkpoint::load_state_dict(fixture("tiny_a/io.safetensors")).unwrap();
    let t = io.get("x").unwrap();
    let x = Array4::from_shape_vec((2, 3, 16, 16), t.to_f32_vec().unwrap()).unwrap();
    // Four images in [0, 1]: the fixture's two and their mirror images.
    let flipped = x.slice(ndarray::s![.., .., .., ..;-1]).to_owned();
    let x0 = ndarray::concatenate(Axis(0), &[x.view(), flipped.view()]).unwrap();
    Tiny { guide, x0 }
}

type Runner = Boomerang<boomerang::models::TchDenoiser<ncsnpp::NcsnppNet>>;

/// The family's default runner on a 100-step grid (a tenth of DLSM's 1000, to keep the
/// test short), guided towards `labels` when a guide is given.
fn runner(guide: Option<(Arc<ClassifierGuide>, f64)>, labels: &[i64]) -> Runner {
    let model = ncsnpp::load(fixture("tiny_a"), &DlsmLoadOptions::default()).unwrap();
    let mut b = model.into_builder().spacing(Spacing::Uniform(100));
    if let Some((g, scale)) = guide {
        let g: Arc<dyn boomerang::Guide> = g;
        b = b
            .guidance(Guidance::classifier(scale, g))
            .condition(Condition::Class(labels.to_vec()));
    }
    b.build().unwrap()
}

#[test]
fn guided_boomerang_with_the_tiny_networks() {
    let Tiny { guide, x0 } = tiny();
    let labels = [3i64, 3, 3, 3];
    let keys: Vec<u64> = (0..4).collect();
    let guided = runner(Some((guide.clone(), 1.0)), &labels);
    let run = |r: &Runner, t: f64, seed: u64| {
        r.run_with(
            x0.view(),
            TimeSpec::fraction(t),
            &mut NoiseStreams::keyed(seed, &keys),
            None,
        )
        .unwrap()
        .sample
    };

    // Reproducible for a seed, different for another.
    let a = run(&guided, 0.2, 1);
    let b = run(&guided, 0.2, 1);
    assert_eq!(a, b, "same seed, same bits");
    let c = run(&guided, 0.2, 2);
    assert!(rmse(&a, &c) > 1e-3);

    // DLSM's own sampler (one guided Langevin corrector step per level) runs too, and is
    // reproducible.
    let model = ncsnpp::load(fixture("tiny_a"), &DlsmLoadOptions::default()).unwrap();
    let pc = model.dlsm_sampler().unwrap();
    assert_eq!(pc, boomerang::Sampler::predictor_corrector());
    let dlsm = model
        .into_builder()
        .sampler(pc)
        .spacing(Spacing::Uniform(100))
        .guidance(Guidance::classifier(1.0, guide.clone()))
        .condition(Condition::Class(labels.to_vec()))
        .build()
        .unwrap();
    let (p, q) = (run(&dlsm, 0.1, 1), run(&dlsm, 0.1, 1));
    assert_eq!(p, q);
    assert!(p.iter().all(|v| v.is_finite()));

    // Distance to the input grows with t.
    let dists: Vec<f64> = [0.05, 0.2, 0.5]
        .iter()
        .map(|&t| rmse(&run(&guided, t, 1), &x0))
        .collect();
    eprintln!("guided tiny Boomerang: RMSE to the input at t = 0.05, 0.2, 0.5: {dists:?}");
    assert!(dists[0] < dists[1] && dists[1] < dists[2], "{dists:?}");

    // Guidance raises the classifier's probability of the target class, measured on the
    // result at the smallest noise level against the unguided run with the SAME noise
    // (so the difference is the guidance alone). To first order the guided score moves
    // the sample by scale·Σ_k Δ_k·∇x log p ≈ scale·σ(t)²·∇x log p, which raises log p by
    // ≈ scale·σ(t)²·‖∇x log p‖² > 0. The tiny random classifier is far from decisive
    // (‖∇x log p‖_rms ≈ 0.003 per pixel at σ_min), so the effect only shows at large
    // scales: measured at t = 0.5, mean p(y = 3) 0.0651 unguided, 0.0670 at scale 100,
    // 0.0886 at scale 1000.
    let p_of = |x: &Array4<f32>| -> f64 {
        let p = guide.probabilities(x.view(), &[0.01]).unwrap();
        p.rows()
            .into_iter()
            .zip(&labels)
            .map(|(r, &y)| r[y as usize] as f64)
            .sum::<f64>()
            / labels.len() as f64
    };
    let t = 0.5;
    let p: Vec<f64> = [None, Some(100.0), Some(1000.0)]
        .into_iter()
        .map(|scale| {
            let r = match scale {
                None => runner(None, &labels),
                Some(s) => runner(Some((guide.clone(), s)), &labels),
            };
            p_of(&run(&r, t, 3))
        })
        .collect();
    eprintln!(
        "t = {t}: mean p(y = 3) unguided {:.4}, scale 100 {:.4}, scale 1000 {:.4}",
        p[0], p[1], p[2]
    );
    assert!(p[1] > p[0] + 1e-3 && p[2] > p[1] + 1e-2, "{p:?}");
}
