//! The fused sampler steps and the noise draw on a 16×3×256×256 batch, each next to its
//! baseline in the same group:
//!
//! - `ddim_step`: a deterministic DDIM (η = 0) step in place, against a memory copy of the
//!   same batch (`copy`: one thread, `copy_par`: all threads of the rayon pool);
//! - `ddpm_step`: an ancestral (noisy) step in place, against drawing the same normals on
//!   all cores (`normals`, one item per thread at a time) and the copies;
//!   `ddim_pass_alone` is the same arithmetic on persistent arrays and `free_prediction`
//!   the cost of freeing the ε̂ array a step consumes;
//! - `noise`: `NoiseStreams::fill_normal` and the allocating `normal`, against the copies.
//!
//! The prediction handed to the step is made outside the timed region (a network allocates
//! its own output; that is not the sampler's cost). Throughput is in elements of the batch.
//! Thread count: `RAYON_NUM_THREADS`.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --no-default-features --bench sampler_step`

use std::time::Duration;

use boomerang::schedule::{DiscreteSchedule, NoiseSchedule, TimeSpec};
use boomerang::{GridPoint, NoiseStreams, Prediction, Sampler, SamplerState, Spacing};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ndarray::{Array4, ArrayView4, Zip};
use rayon::prelude::*;

const SHAPE: (usize, usize, usize, usize) = (16, 3, 256, 256);

fn batch(offset: usize) -> Array4<f32> {
    Array4::from_shape_fn(SHAPE, |(a, b, c, d)| ((a + b + c + d + offset) % 7) as f32 / 7.0 - 0.4)
}

/// The two copy baselines of the group: `dst ← src`, one thread and all threads.
fn copies(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let src = batch(0);
    let mut dst = Array4::<f32>::zeros(SHAPE);
    group.bench_function("copy", |b| {
        b.iter(|| {
            dst.as_slice_mut().unwrap().copy_from_slice(src.as_slice().unwrap());
            black_box(&dst);
        })
    });
    group.bench_function("copy_par", |b| {
        b.iter(|| {
            dst.as_slice_mut()
                .unwrap()
                .par_chunks_mut(1 << 16)
                .zip(src.as_slice().unwrap().par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s));
            black_box(&dst);
        })
    });
}

/// One step of `sampler` in place on a persistent sample, the prediction made in setup.
fn step(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, name: &str, sampler: Sampler) {
    let schedule: NoiseSchedule = DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap().into();
    let start = schedule.start(TimeSpec::fraction(0.5)).unwrap();
    let grid = Spacing::Full.grid(&schedule, start).unwrap();
    let (x0, eps) = (batch(1), batch(2));
    let mut x = batch(0);
    let mut noise = NoiseStreams::keyed(0, &(0..SHAPE.0 as u64).collect::<Vec<_>>());
    let mut state = SamplerState::default();
    group.bench_function(name, |b| {
        b.iter_batched(
            || Prediction {
                x0: x0.clone(),
                eps: eps.clone(),
                variance_frac: None,
            },
            |pred| {
                let mut pred = Some(pred);
                let mut model = |_: ArrayView4<'_, f32>, _: &GridPoint| Ok(pred.take().unwrap());
                sampler
                    .step_in_place(&mut model, &mut x, &grid[0], grid.get(1), &mut noise, &mut state)
                    .unwrap()
            },
            BatchSize::LargeInput,
        )
    });
}

fn bench(c: &mut Criterion) {
    let n = SHAPE.0 * SHAPE.1 * SHAPE.2 * SHAPE.3;
    let keys: Vec<u64> = (0..SHAPE.0 as u64).collect();

    let mut group = c.benchmark_group("ddim_step");
    group.throughput(Throughput::Elements(n as u64));
    copies(&mut group);
    step(&mut group, "ddim_eta0", Sampler::ddim(0.0));
    // The same arithmetic on persistent arrays: the step without the model's side (handing
    // over a prediction, freeing its ε̂ inside the step).
    let (x0, eps, mut x) = (batch(1), batch(2), batch(0));
    let (c0, ce) = (0.7f32, 0.6f32);
    group.bench_function("ddim_pass_alone", |b| {
        b.iter(|| {
            Zip::from(&mut x)
                .and(&x0)
                .and(&eps)
                .par_for_each(|x, &a, &e| *x = c0 * a + ce * e);
            black_box(&x);
        })
    });
    group.bench_function("free_prediction", |b| {
        b.iter_batched(|| eps.clone(), drop, BatchSize::LargeInput)
    });
    group.finish();

    let mut group = c.benchmark_group("ddpm_step");
    group.throughput(Throughput::Elements(n as u64));
    copies(&mut group);
    let mut noise = NoiseStreams::keyed(1, &keys);
    let mut z = Array4::<f32>::zeros(SHAPE);
    group.bench_function("normals", |b| b.iter(|| noise.fill_normal(z.view_mut()).unwrap()));
    step(&mut group, "ddpm", Sampler::ddpm());
    group.finish();

    let mut group = c.benchmark_group("noise");
    group.throughput(Throughput::Elements(n as u64));
    copies(&mut group);
    group.bench_function("fill_normal", |b| b.iter(|| noise.fill_normal(z.view_mut()).unwrap()));
    group.bench_function("normal", |b| {
        b.iter(|| black_box(noise.normal((SHAPE.1, SHAPE.2, SHAPE.3)).unwrap()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
