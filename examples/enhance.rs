//! Perceptual resolution enhancement with Boomerang, vanilla and cascaded, with no network.
//!
//! The "model" is the exact denoiser (`analytic::EmpiricalDenoiser`) of a dataset of 600
//! procedural 32×32 shapes (`shapes::Shapes`) of one "domain": drawn in the colours of the
//! image to enhance, as a model trained on one domain would be. (The exact denoiser of a
//! finite dataset returns mixtures of its members, so with random colours the nearest member
//! would differ in colour more than in shape.) A new shape is shrunk to 10×10 and upsampled
//! back by 3.2 with bicubic interpolation (blurry: off the data manifold), then
//! Boomerang-ed: once at t = 0.5 (vanilla) and four times at t = 0.15 (cascaded), three
//! candidates each.
//!
//! Writes `out/enhance.png`. Row 1: the 10×10 input (pixels enlarged), the bicubic upsample,
//! the true 32×32 image, three vanilla candidates. Row 2: the cascade of candidate 0 after
//! passes 1-4, then candidates 1 and 2 after the last pass. Prints, for each result, its
//! distance to the truth and how well the shape family explains it (fit RMSE: near 0 on the
//! manifold).
//!
//! Run: `cargo run --release --no-default-features --example enhance [-- OUT_DIR]`

use boomerang::analytic::EmpiricalDenoiser;
use boomerang::apps::enhance::{enhance, EnhanceOptions};
use boomerang::apps::metrics::distances;
use boomerang::image_io::{grid, resize, save_image, ResizeFilter};
use boomerang::schedule::DiscreteSchedule;
use boomerang::shapes::{ShapeParams, Shapes};
use boomerang::{Boomerang, DataRange, Spacing, TimeSpec};
use ndarray::{stack, Array3, ArrayView3, Axis};
use rand::SeedableRng;

const SIZE: usize = 32;
const LOW: usize = 10;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out".into()));
    std::fs::create_dir_all(&out_dir)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    let family = Shapes::new(SIZE)?;
    let truth_params = family.sample_params(&mut rng);
    let truth = family.render(&truth_params).insert_axis(Axis(0));
    let members: Vec<Array3<f32>> = (0..600)
        .map(|_| {
            let p = ShapeParams {
                color: truth_params.color,
                background: truth_params.background,
                ..family.sample_params(&mut rng)
            };
            family.render(&p)
        })
        .collect();
    let dataset = stack(Axis(0), &members.iter().map(|m| m.view()).collect::<Vec<_>>())?;
    let low = resize(truth.view(), LOW, LOW, ResizeFilter::Bicubic)?;

    let runner = Boomerang::builder(
        EmpiricalDenoiser::new(dataset, DataRange::MinusOneToOne)?,
        DiscreteSchedule::linear(1000, 1e-4, 0.02)?,
    )
    .spacing(Spacing::Uniform(100))
    .build()?;

    let vanilla = EnhanceOptions {
        candidates: 3,
        seed: 1,
        ..EnhanceOptions::new(TimeSpec::fraction(0.5))
    };
    let cascaded = EnhanceOptions {
        passes: 4,
        candidates: 3,
        seed: 1,
        ..EnhanceOptions::new(TimeSpec::fraction(0.15))
    };
    let v = enhance(&runner, low.view(), &[0], (SIZE, SIZE), &vanilla)?;
    let c = enhance(&runner, low.view(), &[0], (SIZE, SIZE), &cascaded)?;

    let truth3 = truth.index_axis(Axis(0), 0);
    let report = |name: &str, x: ArrayView3<'_, f32>| -> Result<(), Box<dyn std::error::Error>> {
        let d = distances(x, truth3, DataRange::MinusOneToOne)?;
        let fit = family.fit(x)?;
        println!(
            "{name:<24} PSNR to truth {:>6.2} dB   shape-fit RMSE {:.4}",
            d.psnr, fit.rmse
        );
        Ok(())
    };
    report("bicubic upsample", v.upsampled.index_axis(Axis(0), 0))?;
    for j in 0..3 {
        report(
            &format!("vanilla t=0.5 cand {j}"),
            v.candidate(0, 0, j).ok_or("candidate")?,
        )?;
    }
    for p in 0..4 {
        report(
            &format!("cascade pass {} cand 0", p + 1),
            c.candidate(p, 0, 0).ok_or("candidate")?,
        )?;
    }

    let low_big = resize(low.view(), SIZE, SIZE, ResizeFilter::Nearest)?;
    let mut tiles: Vec<Array3<f32>> = vec![
        low_big.index_axis(Axis(0), 0).to_owned(),
        v.upsampled.index_axis(Axis(0), 0).to_owned(),
        truth3.to_owned(),
    ];
    for j in 0..3 {
        tiles.push(v.candidate(0, 0, j).ok_or("candidate")?.to_owned());
    }
    for p in 0..4 {
        tiles.push(c.candidate(p, 0, 0).ok_or("candidate")?.to_owned());
    }
    for j in 1..3 {
        tiles.push(c.candidate(3, 0, j).ok_or("candidate")?.to_owned());
    }
    let views: Vec<_> = tiles.iter().map(|t| t.view()).collect();
    let batch = stack(Axis(0), &views)?;
    let big = resize(batch.view(), SIZE * 3, SIZE * 3, ResizeFilter::Nearest)?;
    let picture = grid(big.view(), 6, 4, 1.0)?;
    let path = out_dir.join("enhance.png");
    save_image(&path, picture.view(), DataRange::MinusOneToOne)?;
    println!("wrote {}", path.display());
    Ok(())
}
