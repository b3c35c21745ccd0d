//! The fused, in-place sampler steps: the same bits for every thread count and batch split,
//! `step` and `step_in_place` agree, and the fused passes compute the step formulas exactly
//! as separate passes over a drawn noise buffer would (same operations, same order).

use boomerang::analytic::{EmpiricalDenoiser, GaussianDenoiser};
use boomerang::schedule::{DiscreteSchedule, NoiseSchedule, TimeSpec, VeSde};
use boomerang::{
    Boomerang, DataRange, Denoiser, GridPoint, NoiseStreams, Prediction, Sampler, SamplerState, Spacing, Variance,
};
use ndarray::{s, Array4, ArrayView4, Axis, ShapeBuilder, Zip};

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn images(n: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 3, 9, 11), |(i, c, h, w)| {
        (((i * 7 + c * 3 + h * 5 + w) % 23) as f32 / 11.5) - 1.0
    })
}

/// An item-wise "network" that depends on the level and on `x`.
fn fake(x: ArrayView4<'_, f32>, p: &GridPoint) -> boomerang::Result<Prediction> {
    let a = p.level.alpha as f32;
    Ok(Prediction {
        x0: x.mapv(|v| (v * a * 0.9).tanh()),
        eps: x.mapv(|v| 0.7 * v - 0.05),
        variance_frac: Some(x.mapv(|v| 0.5 + 0.4 * (3.0 * v).sin())),
    })
}

fn vp() -> NoiseSchedule {
    DiscreteSchedule::linear(200, 1e-4, 0.05).unwrap().into()
}

fn ve() -> NoiseSchedule {
    VeSde::new(0.01, 50.0, 200, 1e-5).unwrap().into()
}

fn samplers() -> Vec<(&'static str, Sampler, NoiseSchedule)> {
    vec![
        ("ddpm", Sampler::ddpm(), vp()),
        (
            "ddpm-large",
            Sampler::Ddpm {
                variance: Variance::FixedLarge,
            },
            vp(),
        ),
        (
            "ddpm-learned",
            Sampler::Ddpm {
                variance: Variance::Learned,
            },
            vp(),
        ),
        ("ddim0", Sampler::ddim(0.0), vp()),
        ("ddim0.5", Sampler::ddim(0.5), vp()),
        ("pc", Sampler::predictor_corrector(), ve()),
        (
            "pc2",
            Sampler::PredictorCorrector {
                snr: 0.1,
                corrector_steps: 2,
            },
            ve(),
        ),
        ("pndm", Sampler::Pndm, vp()),
        ("euler", Sampler::Euler, vp()),
        ("euler-a", Sampler::EulerAncestral, vp()),
        ("dpmpp2m", Sampler::DpmSolverPp2M, vp()),
    ]
}

fn grid(schedule: &NoiseSchedule) -> Vec<GridPoint> {
    let start = schedule.start(TimeSpec::fraction(0.5)).unwrap();
    Spacing::Uniform(7).grid(schedule, start).unwrap()
}

#[test]
fn sampler_runs_are_identical_across_threads_and_batches() {
    let x = images(5);
    let keys: Vec<u64> = (20..25).collect();
    for (name, sampler, schedule) in samplers() {
        let grid = grid(&schedule);
        let run = |x: Array4<f32>, keys: &[u64]| {
            let mut model = fake;
            let out = sampler
                .run(&mut model, x, &grid, &mut NoiseStreams::keyed(7, keys), None)
                .unwrap();
            (out.prev_sample, out.pred_x0)
        };
        let full = in_pool(1, || run(x.clone(), &keys));
        for threads in [2, 4] {
            assert_eq!(
                full,
                in_pool(threads, || run(x.clone(), &keys)),
                "{name}: {threads} threads"
            );
        }
        for (a, b) in [(0, 1), (1, 3), (3, 5)] {
            let part = in_pool(4, || run(x.slice(s![a..b, .., .., ..]).to_owned(), &keys[a..b]));
            assert_eq!(part.0, full.0.slice(s![a..b, .., .., ..]), "{name}: items {a}..{b}");
            assert_eq!(part.1, full.1.slice(s![a..b, .., .., ..]), "{name}: items {a}..{b}");
        }
    }
}

#[test]
fn step_and_step_in_place_agree_and_check_their_streams() {
    let x = images(3);
    for (name, sampler, schedule) in samplers() {
        let grid = grid(&schedule);
        let mut copy = x.clone();
        let (mut s1, mut s2) = (SamplerState::default(), SamplerState::default());
        let (mut n1, mut n2) = (NoiseStreams::keyed(1, &[1, 2, 3]), NoiseStreams::keyed(1, &[1, 2, 3]));
        for (i, from) in grid.iter().enumerate() {
            let to = grid.get(i + 1);
            let mut model = fake;
            let out = sampler
                .step(&mut model, copy.view(), from, to, &mut n1, &mut s1)
                .unwrap();
            let mut in_place = copy.clone();
            let x0 = sampler
                .step_in_place(&mut model, &mut in_place, from, to, &mut n2, &mut s2)
                .unwrap();
            assert_eq!(out.prev_sample, in_place, "{name}: step {i}");
            assert_eq!(out.pred_x0, x0, "{name}: step {i}");
            copy = in_place;
        }
        // Noise for 3 items from 2 streams is an error, not a panic (samplers that draw).
        let mut model = fake;
        let r = sampler.step(
            &mut model,
            x.view(),
            &grid[0],
            grid.get(1),
            &mut NoiseStreams::keyed(1, &[1, 2]),
            &mut SamplerState::default(),
        );
        let draws = !matches!(name, "ddim0" | "pndm" | "euler" | "dpmpp2m");
        assert_eq!(r.is_err(), draws, "{name}");
    }
}

/// The steps written as the separate passes they replaced: draw `z` into a buffer, then
/// combine. Fused, the bits must not change (same operations, same order, same draws).
#[test]
fn fused_steps_equal_the_separate_pass_formulas() {
    let x = images(4);
    let schedule = vp();
    let steps = grid(&schedule);
    let (from, to) = (steps[1], steps[2]);
    let keys = [3, 1, 4, 1];
    let pred = fake(x.view(), &from).unwrap();
    let z = NoiseStreams::keyed(5, &keys).normal((3, 9, 11)).unwrap();
    let (a_cur, a_next) = (from.level.alpha_bar(), to.level.alpha_bar());
    let run = |sampler: Sampler, x: Array4<f32>| {
        let mut x = x;
        let mut model = fake;
        let mut noise = NoiseStreams::keyed(5, &keys);
        sampler
            .step_in_place(
                &mut model,
                &mut x,
                &from,
                Some(&to),
                &mut noise,
                &mut SamplerState::default(),
            )
            .unwrap();
        x
    };
    // A sample stored in column-major order takes the fused passes' general path: its noise
    // must land on the same elements.
    let fortran = |x: &Array4<f32>| {
        let mut f = Array4::zeros(x.raw_dim().f());
        f.assign(x);
        f
    };

    // DDPM, fixed small: c0·x̂0 + cx·x + σ·z with the posterior-mean coefficients.
    let beta = 1.0 - a_cur / a_next;
    let c0 = (a_next.sqrt() * beta / (1.0 - a_cur)) as f32;
    let cx = ((1.0 - beta).sqrt() * (1.0 - a_next) / (1.0 - a_cur)) as f32;
    let small = beta * (1.0 - a_next) / (1.0 - a_cur);
    let std = small.sqrt() as f32;
    let mut want = pred.x0.clone();
    Zip::from(&mut want)
        .and(&x)
        .and(&z)
        .for_each(|o, &x, &z| *o = c0 * *o + cx * x + std * z);
    assert_eq!(run(Sampler::ddpm(), x.clone()), want, "ddpm: fused vs separate passes");
    assert_eq!(run(Sampler::ddpm(), fortran(&x)), want, "ddpm: column-major sample");

    // DDIM with η: √a_next·x̂0 + √(1−a_next−σ²)·ε̂ + σ·z, exact coefficients.
    let eta = 0.7;
    let sigma = eta * ((1.0 - a_next) / (1.0 - a_cur) * (1.0 - a_cur / a_next)).sqrt();
    let (c0, ce, s) = (
        a_next.sqrt() as f32,
        (1.0 - a_next - sigma * sigma).max(0.0).sqrt() as f32,
        sigma as f32,
    );
    let mut want = pred.x0.clone();
    Zip::from(&mut want)
        .and(&pred.eps)
        .and(&z)
        .for_each(|o, &e, &z| *o = c0 * *o + ce * e + s * z);
    let got = run(Sampler::ddim(eta), x.clone());
    assert_eq!(got, want, "ddim: fused vs separate passes");
    assert_eq!(run(Sampler::ddim(eta), fortran(&x)), want, "ddim: column-major sample");

    // Euler ancestral, exact coefficients.
    let (ac, sc) = (from.level.alpha, from.level.sigma_ve());
    let (an, sn) = (to.level.alpha, to.level.sigma_ve());
    let up = (sn * sn * (sc * sc - sn * sn) / (sc * sc)).max(0.0).sqrt();
    let down = (sn * sn - up * up).max(0.0).sqrt();
    let (cx, ce, cz) = ((an / ac) as f32, (an * (down - sc)) as f32, (an * up) as f32);
    let mut want = pred.eps.clone();
    Zip::from(&mut want)
        .and(&x)
        .and(&z)
        .for_each(|o, &x, &z| *o = cx * x + ce * *o + cz * z);
    assert_eq!(run(Sampler::EulerAncestral, x.clone()), want, "euler-a");
    assert_eq!(run(Sampler::EulerAncestral, fortran(&x)), want, "euler-a: column-major");

    // Every sampler: the layout of the sample does not change the result.
    for (name, sampler, schedule) in samplers() {
        let grid = grid(&schedule);
        let go = |x: Array4<f32>| {
            let mut model = fake;
            sampler
                .run(&mut model, x, &grid, &mut NoiseStreams::keyed(2, &keys), None)
                .unwrap()
                .prev_sample
        };
        assert_eq!(go(fortran(&x)), go(x.clone()), "{name}: column-major sample");
    }
}

/// Whole Boomerang runs with the analytic denoisers: the same bits in pools of 1, 2 and 4
/// threads and whatever batch an item is in.
#[test]
fn boomerang_runs_are_identical_across_threads_and_batches() {
    let x = Array4::from_shape_fn((4, 3, 12, 12), |(i, c, h, w)| {
        (((i * 5 + c * 7 + h * 3 + w) % 17) as f32 / 8.5) - 1.0
    });
    let keys: Vec<u64> = (300..304).collect();
    let data = EmpiricalDenoiser::new(x.slice(s![..3, .., .., ..]).to_owned(), DataRange::MinusOneToOne).unwrap();
    let gauss = || Box::new(GaussianDenoiser::new(0.1, 0.6).unwrap()) as Box<dyn Denoiser + Sync>;
    let runs: Vec<(&str, Boomerang<Box<dyn Denoiser + Sync>>)> = vec![
        ("ddpm", Boomerang::builder(gauss(), vp()).build().unwrap()),
        (
            "ddim0",
            Boomerang::builder(Box::new(data.clone()) as Box<dyn Denoiser + Sync>, vp())
                .sampler(Sampler::ddim(0.0))
                .spacing(Spacing::Uniform(20))
                .build()
                .unwrap(),
        ),
        (
            "euler-a",
            Boomerang::builder(gauss(), vp())
                .sampler(Sampler::EulerAncestral)
                .spacing(Spacing::Uniform(20))
                .build()
                .unwrap(),
        ),
        (
            "pndm",
            Boomerang::builder(gauss(), vp())
                .sampler(Sampler::Pndm)
                .spacing(Spacing::Uniform(20))
                .build()
                .unwrap(),
        ),
        (
            "pc",
            Boomerang::builder(Box::new(data) as Box<dyn Denoiser + Sync>, ve())
                .sampler(Sampler::predictor_corrector())
                .build()
                .unwrap(),
        ),
    ];
    for (name, runner) in &runs {
        let go = |x: ArrayView4<'_, f32>, keys: &[u64]| {
            runner
                .run_with(x, TimeSpec::fraction(0.5), &mut NoiseStreams::keyed(11, keys), None)
                .unwrap()
                .sample
        };
        let full = in_pool(1, || go(x.view(), &keys));
        for threads in [2, 4] {
            assert_eq!(
                full,
                in_pool(threads, || go(x.view(), &keys)),
                "{name}: {threads} threads"
            );
        }
        for item in 0..4 {
            let one = in_pool(2, || go(x.slice(s![item..item + 1, .., .., ..]), &keys[item..item + 1]));
            assert_eq!(
                one.index_axis(Axis(0), 0),
                full.index_axis(Axis(0), item),
                "{name}: item {item} alone"
            );
        }
    }
}
