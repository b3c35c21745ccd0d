//! `make demo`: Boomerang local samples at several t, with no network and no libtorch.
//!
//! The denoiser is the exact posterior mean of a small dataset drawn from `shapes::Shapes`
//! (`analytic::EmpiricalDenoiser`), so the picture shows what local sampling does: at small
//! t the result is a near copy of the input, at large t it becomes a dataset member.
//!
//! Writes `out/demo.png` (rows: t = 0.1 … 0.9; columns: input, x_t, four samples) and prints
//! the distance to the input against t.
//!
//! Run: `cargo run --release --no-default-features --example demo [-- OUT_DIR]`

use boomerang::analytic::EmpiricalDenoiser;
use boomerang::image_io::{grid, resize, save_image, ResizeFilter};
use boomerang::schedule::DiscreteSchedule;
use boomerang::shapes::Shapes;
use boomerang::{Boomerang, DataRange, NoiseStreams, Sampler, Spacing, TimeSpec};
use ndarray::{concatenate, s, Axis};
use rand::SeedableRng;

const SIZE: usize = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out".into()));
    std::fs::create_dir_all(&out_dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let family = Shapes::new(SIZE)?;
    let dataset = family.sample(400, &mut rng);
    let input = family.sample(1, &mut rng); // a new shape, not in the dataset

    let runner = Boomerang::builder(
        EmpiricalDenoiser::new(dataset.clone(), DataRange::MinusOneToOne)?,
        DiscreteSchedule::linear(1000, 1e-4, 0.02)?,
    )
    .sampler(Sampler::ddpm())
    .spacing(Spacing::Uniform(250))
    .build()?;

    let samples = 4;
    let batch = input.broadcast((samples, 3, SIZE, SIZE)).ok_or("broadcast")?.to_owned();
    let mut rows = Vec::new();
    println!("{:>5} {:>6} {:>16} {:>22}", "t", "steps", "RMSE to input", "RMSE to nearest data");
    for (i, t) in [0.1, 0.3, 0.5, 0.7, 0.9].into_iter().enumerate() {
        let keys: Vec<u64> = (0..samples as u64).map(|k| (i as u64) << 32 | k).collect();
        let out = runner.run_with(batch.view(), TimeSpec::fraction(t), &mut NoiseStreams::keyed(7, &keys), None)?;
        let rmse = |a: ndarray::ArrayView3<f32>, b: ndarray::ArrayView3<f32>| ((&a - &b).mapv(|v| v * v).mean().unwrap_or(0.0)).sqrt();
        let to_input: f32 = out.sample.axis_iter(Axis(0)).map(|x| rmse(x, input.index_axis(Axis(0), 0))).sum::<f32>() / samples as f32;
        let to_data: f32 = out
            .sample
            .axis_iter(Axis(0))
            .map(|x| dataset.axis_iter(Axis(0)).map(|d| rmse(x, d)).fold(f32::INFINITY, f32::min))
            .sum::<f32>()
            / samples as f32;
        println!("{t:>5.1} {:>6} {to_input:>16.4} {to_data:>22.4}", out.steps);
        rows.push(concatenate(Axis(0), &[input.view(), out.x_t.slice(s![0..1, .., .., ..]), out.sample.view()])?);
    }
    let all = concatenate(Axis(0), &rows.iter().map(|r| r.view()).collect::<Vec<_>>())?;
    let big = resize(all.view(), SIZE * 3, SIZE * 3, ResizeFilter::Nearest)?;
    let picture = grid(big.view(), samples + 2, 4, 1.0)?;
    let path = out_dir.join("demo.png");
    save_image(&path, picture.view(), DataRange::MinusOneToOne)?;
    println!("wrote {} (rows: t = 0.1 … 0.9; columns: input, x_t, {samples} Boomerang samples)", path.display());
    Ok(())
}
