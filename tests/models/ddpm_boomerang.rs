//! Boomerang end to end with the tch DDPM UNet (the `tiny2` parity fixture's weights):
//! DDPM, DDIM, and FastDPM STEP / VAR grids with κ = η ∈ {0, 1}; plus one DDIM reverse step
//! against a float64 PyTorch reference.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use boomerang::checkpoint::load_state_dict;
use boomerang::models::{DdpmUNet, Device, Kind, TchDenoiser};
use boomerang::sampler::FastDpmKind;
use boomerang::schedule::DiscreteSchedule;
use boomerang::{
    Boomerang, Condition, Denoiser, FnDenoiser, GridPoint, NoiseSchedule, NoiseStreams, Prediction, Sampler,
    SamplerState, Spacing, TimeSpec,
};
use ndarray::{Array4, ArrayView4};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One libtorch intra-op thread per test: the harness already runs tests in parallel, and
/// OpenMP threads spin-waiting for busy cores slow small networks down by 10-100×.
fn single_thread() {
    tch::set_num_threads(1);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ddpm")
        .join(name)
}

fn denoiser() -> TchDenoiser<DdpmUNet> {
    DdpmUNet::load(fixture("tiny2_diffusers"), Device::Cpu, Kind::Float)
        .unwrap()
        .into_denoiser()
}

fn schedule() -> DiscreteSchedule {
    DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap()
}

/// A smooth test image in [-1, 1].
fn x0() -> Array4<f32> {
    Array4::from_shape_fn((2, 3, 16, 16), |(n, c, h, w)| {
        (0.3 * n as f32 + 0.7 * c as f32 + 0.4 * h as f32 - 0.25 * w as f32).sin() * 0.8
    })
}

/// (name, sampler, spacing, t) of every configuration exercised.
fn cases() -> Vec<(&'static str, Sampler, Spacing, TimeSpec)> {
    let step = |kind| Spacing::FastDpmStep { steps: 20, kind };
    let var = |kind| Spacing::FastDpmVar { steps: 20, kind };
    vec![
        ("ddpm full", Sampler::ddpm(), Spacing::Full, TimeSpec::fraction(0.04)),
        (
            "ddim(0) uniform 50",
            Sampler::ddim(0.0),
            Spacing::Uniform(50),
            TimeSpec::fraction(0.5),
        ),
        (
            "step quadratic κ=0",
            Sampler::ddim(0.0),
            step(FastDpmKind::Quadratic),
            TimeSpec::fraction(0.5),
        ),
        (
            "step quadratic κ=1",
            Sampler::ddim(1.0),
            step(FastDpmKind::Quadratic),
            TimeSpec::fraction(0.5),
        ),
        (
            "step linear κ=0",
            Sampler::ddim(0.0),
            step(FastDpmKind::Linear),
            TimeSpec::fraction(0.5),
        ),
        (
            "step linear κ=1",
            Sampler::ddim(1.0),
            step(FastDpmKind::Linear),
            TimeSpec::fraction(0.5),
        ),
        (
            "var linear κ=0",
            Sampler::ddim(0.0),
            var(FastDpmKind::Linear),
            TimeSpec::fraction(0.5),
        ),
        (
            "var linear κ=1",
            Sampler::ddim(1.0),
            var(FastDpmKind::Linear),
            TimeSpec::fraction(0.5),
        ),
        (
            "var quadratic κ=0",
            Sampler::ddim(0.0),
            var(FastDpmKind::Quadratic),
            TimeSpec::fraction(0.5),
        ),
        (
            "var quadratic κ=1",
            Sampler::ddim(1.0),
            var(FastDpmKind::Quadratic),
            TimeSpec::fraction(0.5),
        ),
    ]
}

#[test]
fn every_sampler_runs_finite_shaped_and_reproducible() {
    single_thread();
    let d = denoiser();
    let x0 = x0();
    for (name, sampler, spacing, t) in cases() {
        let runner = Boomerang::builder(&d, schedule())
            .sampler(sampler)
            .spacing(spacing)
            .build()
            .unwrap();
        let a = runner.run(x0.view(), t, &mut ChaCha8Rng::seed_from_u64(11)).unwrap();
        let b = runner.run(x0.view(), t, &mut ChaCha8Rng::seed_from_u64(11)).unwrap();
        assert_eq!(a.dim(), x0.dim(), "{name}");
        assert!(a.iter().all(|v| v.is_finite()), "{name}: non-finite output");
        // Bit-identical for the same seed.
        assert!(
            a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name}: two runs with the same seed differ"
        );
        let c = runner.run(x0.view(), t, &mut ChaCha8Rng::seed_from_u64(12)).unwrap();
        assert_ne!(a, c, "{name}: another seed gives the same sample");
        let steps = runner.plan(t).unwrap().len();
        eprintln!(
            "{name}: {steps} network calls, mean |x̂ − x0| = {:.3}",
            (&a - &x0).mapv(f32::abs).mean().unwrap()
        );
    }
}

/// The network as a sampler model: `(x̂0, ε̂)` from the ε prediction at a grid point.
fn predictor<'a>(
    d: &'a TchDenoiser<DdpmUNet>,
) -> impl FnMut(ArrayView4<'_, f32>, &GridPoint) -> boomerang::Result<Prediction> + 'a {
    move |x, p| {
        let eps = d.predict(x, &[p.time], &Condition::None)?;
        let (a, s) = (p.level.alpha as f32, p.level.sigma as f32);
        let x0 = ndarray::Zip::from(&x).and(&eps).map_collect(|&x, &e| (x - s * e) / a);
        Ok(Prediction {
            x0,
            eps,
            variance_frac: None,
        })
    }
}

#[test]
fn kappa_zero_reverse_runs_do_not_depend_on_the_seed() {
    single_thread();
    let d = denoiser();
    let sched: NoiseSchedule = schedule().into();
    let x_t = {
        let mut n = NoiseStreams::keyed(5, &[0, 1]);
        n.normal((3, 16, 16)).unwrap()
    };
    for spacing in [
        Spacing::FastDpmStep {
            steps: 10,
            kind: FastDpmKind::Quadratic,
        },
        Spacing::FastDpmVar {
            steps: 10,
            kind: FastDpmKind::Linear,
        },
    ] {
        let start = sched.start(TimeSpec::fraction(0.6)).unwrap();
        let grid = spacing.grid(&sched, start).unwrap();
        let run = |eta: f64, seed: u64| {
            let mut model = predictor(&d);
            let mut noise = NoiseStreams::keyed(seed, &[0, 1]);
            Sampler::ddim(eta)
                .run(&mut model, x_t.clone(), &grid, &mut noise, None)
                .unwrap()
                .prev_sample
        };
        let (a, b) = (run(0.0, 1), run(0.0, 2));
        assert!(
            a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{spacing:?}: κ = 0 depends on the seed"
        );
        assert!(a.iter().all(|v| v.is_finite()));
        assert_ne!(run(1.0, 1), run(1.0, 2), "{spacing:?}: κ = 1 should depend on the seed");
    }
}

#[test]
fn fastdpm_var_calls_the_network_at_non_integer_steps() {
    single_thread();
    let d = denoiser();
    let times = RefCell::new(Vec::new());
    let recording = FnDenoiser::new(d.spec().clone(), |x, t, c| {
        times.borrow_mut().push(t[0]);
        d.predict(x, t, c)
    });
    let runner = Boomerang::builder(&recording, schedule())
        .sampler(Sampler::ddim(0.0))
        .spacing(Spacing::FastDpmVar {
            steps: 20,
            kind: FastDpmKind::Linear,
        })
        .build()
        .unwrap();
    let x0 = x0();
    let out = runner
        .run(x0.view(), TimeSpec::fraction(0.7), &mut ChaCha8Rng::seed_from_u64(3))
        .unwrap();
    let planned = runner.plan(TimeSpec::fraction(0.7)).unwrap().len();
    assert!(out.iter().all(|v| v.is_finite()));
    let times = times.borrow().clone();
    assert_eq!(times.len(), planned);
    assert!(times.iter().any(|t| t.fract() != 0.0), "VAR times {times:?}");
    assert!(times.windows(2).all(|w| w[0] > w[1]), "times must decrease: {times:?}");
}

#[test]
fn one_ddim_step_matches_the_python_reference() {
    single_thread();
    // tools/make_ddpm_fixtures.py: x_t at train step 500, the reference network's ε, and one
    // DDIM step (η = 1) to step 480 in float64: mean + σ·z.
    let f = load_state_dict(fixture("ddim_step.safetensors")).unwrap();
    let get = |k: &str| {
        let t = f.get(k).unwrap();
        let s = &t.shape;
        Array4::from_shape_vec((s[0], s[1], s[2], s[3]), t.to_f32_vec().unwrap()).unwrap()
    };
    let meta = f.get("meta").unwrap().to_f32_vec().unwrap();
    let (t_cur, t_next, eta, sigma) = (meta[0] as f64, meta[1] as f64, meta[2] as f64, meta[3]);
    let (x_t, mean) = (get("x_t"), get("mean"));
    let d = denoiser();
    let sched: NoiseSchedule = schedule().into();
    let from = GridPoint {
        time: t_cur,
        level: sched.level(t_cur).unwrap(),
    };
    let to = GridPoint {
        time: t_next,
        level: sched.level(t_next).unwrap(),
    };
    // The network alone.
    let eps = d.predict(x_t.view(), &[t_cur], &Condition::None).unwrap();
    let rel = |a: &Array4<f32>, b: &Array4<f32>| {
        let diff = (a - b).mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v));
        diff / b.mapv(f32::abs).fold(0.0f32, |m, &v| m.max(v))
    };
    let e_eps = rel(&eps, &get("eps"));
    assert!(e_eps <= 1e-4, "ε: relative error {e_eps:e}");
    // The step, with the noise the core draws; the reference's mean plus σ times that noise.
    let mut model = predictor(&d);
    let out = Sampler::ddim(eta)
        .step(
            &mut model,
            x_t.view(),
            &from,
            Some(&to),
            &mut NoiseStreams::keyed(9, &[0, 1]),
            &mut SamplerState::default(),
        )
        .unwrap();
    let z = NoiseStreams::keyed(9, &[0, 1]).normal((3, 16, 16)).unwrap();
    let want = &mean + &z.mapv(|v| v * sigma);
    let e = rel(&out.prev_sample, &want);
    eprintln!("one DDIM step: relative error {e:e} (ε: {e_eps:e})");
    assert!(e <= 1e-4, "x_next: relative error {e:e}");
}
