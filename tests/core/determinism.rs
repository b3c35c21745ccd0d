//! Same seed, same bits: across batch sizes, item order, thread counts and repeated runs.

use boomerang::analytic::{EmpiricalDenoiser, GaussianDenoiser};
use boomerang::schedule::{DiscreteSchedule, VeSde};
use boomerang::{Boomerang, DataRange, Denoiser, NoiseStreams, Sampler, Spacing, TimeSpec};
use ndarray::{s, Array4, Axis};
use rand::SeedableRng;

fn images(n: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 3, 16, 16), |(i, c, h, w)| {
        (((i * 7 + c * 3 + h * 5 + w) % 23) as f32 / 11.5) - 1.0
    })
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

type Runner = Box<dyn Fn(&Array4<f32>, &mut NoiseStreams) -> Array4<f32> + Sync>;

fn runners() -> Vec<(&'static str, Runner)> {
    let vp = DiscreteSchedule::linear(200, 1e-4, 0.1).unwrap();
    let data = EmpiricalDenoiser::new(images(5), DataRange::MinusOneToOne).unwrap();
    let mk = |d: Box<dyn Denoiser + Sync>, sampler: Sampler, spacing: Spacing, ve: bool| {
        let builder = if ve {
            Boomerang::builder(d, VeSde::new(0.01, 50.0, 200, 1e-5).unwrap())
        } else {
            Boomerang::builder(d, vp.clone())
        };
        let r = builder.sampler(sampler).spacing(spacing).build().unwrap();
        Box::new(move |x: &Array4<f32>, n: &mut NoiseStreams| {
            r.run_with(x.view(), TimeSpec::fraction(0.6), n, None).unwrap().sample
        }) as Box<dyn Fn(&Array4<f32>, &mut NoiseStreams) -> Array4<f32> + Sync>
    };
    vec![
        (
            "ddpm",
            mk(
                Box::new(GaussianDenoiser::new(0.0, 0.5).unwrap()),
                Sampler::ddpm(),
                Spacing::Full,
                false,
            ),
        ),
        (
            "ddim-eta1",
            mk(Box::new(data.clone()), Sampler::ddim(1.0), Spacing::Uniform(50), false),
        ),
        (
            "pc",
            mk(Box::new(data), Sampler::predictor_corrector(), Spacing::Full, true),
        ),
    ]
}

#[test]
fn identical_across_batch_size_order_and_threads() {
    let x = images(6);
    let keys: Vec<u64> = (100..106).collect();
    for (name, run) in runners() {
        let full = in_pool(2, || run(&x, &mut NoiseStreams::keyed(42, &keys)));
        // Again: bit-identical.
        assert_eq!(
            full,
            in_pool(2, || run(&x, &mut NoiseStreams::keyed(42, &keys))),
            "{name}: rerun"
        );
        // One thread.
        assert_eq!(
            full,
            in_pool(1, || run(&x, &mut NoiseStreams::keyed(42, &keys))),
            "{name}: 1 thread"
        );
        // Batches of 1, 2 and 3, each item with its own key.
        for chunk in [1, 2, 3] {
            for start in (0..6).step_by(chunk) {
                let part = x.slice(s![start..start + chunk, .., .., ..]).to_owned();
                let out = run(&part, &mut NoiseStreams::keyed(42, &keys[start..start + chunk]));
                assert_eq!(
                    out,
                    full.slice(s![start..start + chunk, .., .., ..]),
                    "{name}: batch {chunk} at {start}"
                );
            }
        }
        // Reversed order.
        let mut rev = x.clone();
        rev.invert_axis(Axis(0));
        let rkeys: Vec<u64> = keys.iter().rev().copied().collect();
        let mut out = in_pool(2, || run(&rev, &mut NoiseStreams::keyed(42, &rkeys)));
        out.invert_axis(Axis(0));
        assert_eq!(out, full, "{name}: reversed order");
    }
}

#[test]
fn run_with_rng_is_batch_prefix_stable_and_seeded() {
    let runner = Boomerang::builder(
        GaussianDenoiser::new(0.0, 0.5).unwrap(),
        DiscreteSchedule::linear(100, 1e-4, 0.2).unwrap(),
    )
    .build()
    .unwrap();
    let x = images(4);
    let go = |x: &Array4<f32>, seed| {
        runner
            .run(
                x.view(),
                TimeSpec::fraction(0.5),
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            )
            .unwrap()
    };
    let a = go(&x, 1);
    assert_eq!(a, go(&x, 1));
    let prefix = go(&x.slice(s![..2, .., .., ..]).to_owned(), 1);
    assert_eq!(prefix, a.slice(s![..2, .., .., ..]));
    assert_ne!(a, go(&x, 2));
    // `&mut dyn RngCore` works too.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let dynrng: &mut dyn rand::RngCore = &mut rng;
    assert_eq!(runner.run(x.view(), TimeSpec::fraction(0.5), dynrng).unwrap(), a);
}

#[test]
fn run_with_is_forward_noise_then_reverse_from() {
    let runner = Boomerang::builder(
        GaussianDenoiser::new(0.0, 0.5).unwrap(),
        DiscreteSchedule::linear(100, 1e-4, 0.2).unwrap(),
    )
    .sampler(Sampler::ddim(1.0))
    .build()
    .unwrap();
    let x = images(3);
    let keys = [4, 5, 6];
    let full = runner
        .run_with(
            x.view(),
            TimeSpec::fraction(0.4),
            &mut NoiseStreams::keyed(9, &keys),
            None,
        )
        .unwrap();
    // Same streams: the forward draw consumes the first item-sized block of each stream.
    let mut noise = NoiseStreams::keyed(9, &keys);
    let z = noise.normal((3, 16, 16)).unwrap();
    let a = full.start.level;
    let x_t = ndarray::Zip::from(&x)
        .and(&z)
        .map_collect(|&x, &z| a.alpha as f32 * x + a.sigma as f32 * z);
    assert_eq!(x_t, full.x_t);
    let rev = runner
        .reverse_from(x_t.view(), TimeSpec::fraction(0.4), &mut noise, None)
        .unwrap();
    assert_eq!(rev.sample, full.sample);
}
