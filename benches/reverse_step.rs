//! Throughput of one reverse step of each sampler, without a network, in elements per second.
//!
//! The "model" hands back a fixed prediction (cloned, as a network would allocate its
//! output); `copy` is a plain clone of the same batch, the bound for this memory-bound work
//! (a step reads x, x̂0, ε and writes the result and fresh noise). The step is
//! `Sampler::step`, which copies `x` into a new sample and steps that in place; the clones
//! and the copy are timed too. `benches/sampler_step.rs` times the in-place step alone.
//!
//! Run: `cargo bench --no-default-features --bench reverse_step`

use boomerang::schedule::{DiscreteSchedule, NoiseSchedule, TimeSpec, VeSde};
use boomerang::{NoiseStreams, Prediction, Sampler, Spacing, Variance};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array4;

fn bench(c: &mut Criterion) {
    let vp: NoiseSchedule = DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap().into();
    let ve: NoiseSchedule = VeSde::dlsm_cifar().into();
    let mut group = c.benchmark_group("reverse_step");
    for shape in [(1, 4, 64, 64), (16, 3, 256, 256)] {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        group.throughput(Throughput::Elements(n as u64));
        let x = Array4::<f32>::from_shape_fn(shape, |(a, b, c, d)| ((a + b + c + d) % 7) as f32 / 7.0);
        let label = format!("{}x{}x{}x{}", shape.0, shape.1, shape.2, shape.3);
        group.bench_function(BenchmarkId::new("copy", &label), |b| b.iter(|| black_box(x.clone())));
        let samplers = [
            (
                "ddpm",
                Sampler::Ddpm {
                    variance: Variance::FixedSmall,
                },
                &vp,
            ),
            ("ddim_eta0", Sampler::ddim(0.0), &vp),
            ("ddim_eta1", Sampler::ddim(1.0), &vp),
            ("pc", Sampler::predictor_corrector(), &ve),
        ];
        for (name, sampler, sched) in samplers {
            let start = sched.start(TimeSpec::fraction(0.5)).unwrap();
            let grid = Spacing::Full.grid(sched, start).unwrap();
            let pred = Prediction {
                x0: x.clone(),
                eps: x.clone(),
                variance_frac: None,
            };
            let mut noise = NoiseStreams::keyed(0, &(0..shape.0 as u64).collect::<Vec<_>>());
            group.bench_function(BenchmarkId::new(name, &label), |b| {
                b.iter(|| {
                    let mut model = |_x: ndarray::ArrayView4<'_, f32>, _p: &boomerang::GridPoint| Ok(pred.clone());
                    black_box(
                        sampler
                            .step(
                                &mut model,
                                x.view(),
                                &grid[0],
                                grid.get(1),
                                &mut noise,
                                &mut Default::default(),
                            )
                            .unwrap(),
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
