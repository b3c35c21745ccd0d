//! Anonymizing a dataset folder with Boomerang, with no network: a folder of procedural
//! shapes becomes a mirrored folder of local samples, with a manifest of distances. The run is
//! done in two shards, as two cluster jobs would, and then resumed to show that nothing is
//! redone.
//!
//! The model is the exact denoiser (`analytic::EmpiricalDenoiser`) of 800 shapes in two
//! colour schemes (one "domain"); the images to anonymize are new shapes in those schemes.
//! An anonymized image is a nearby member of the model's data: similar at small t, further
//! away as t grows.
//!
//! Writes `out/anonymize/{faces,anon}/`, `out/anonymize.png` (top row: originals; rows below:
//! anonymized at t = 0.2, 0.4, 0.6) and prints the mean MSE/PSNR/SSIM to the originals per t.
//!
//! Run: `cargo run --release --no-default-features --example anonymize [-- OUT_DIR]`

use boomerang::analytic::EmpiricalDenoiser;
use boomerang::apps::anonymize::{read_manifest, AnonymizeJob, EntryStatus, Shard};
use boomerang::image_io::{grid, load_image, resize, save_image, ColorMode, ResizeFilter};
use boomerang::schedule::DiscreteSchedule;
use boomerang::shapes::{ShapeParams, Shapes};
use boomerang::{Boomerang, DataRange, Spacing, TimeSpec};
use ndarray::{concatenate, Axis};
use rand::SeedableRng;

const SIZE: usize = 32;
const IMAGES: usize = 8;

/// Two colour schemes (background, shape), RGB in [-1, 1].
const SCHEMES: [([f32; 3], [f32; 3]); 2] = [
    ([-0.8, -0.5, -0.2], [0.9, 0.7, 0.1]),
    ([-0.3, -0.7, -0.6], [0.3, 0.9, 0.8]),
];

/// `n` random shapes, alternating between the schemes.
fn domain<R: rand::Rng>(family: &Shapes, n: usize, rng: &mut R) -> Result<ndarray::Array4<f32>, ndarray::ShapeError> {
    let items: Vec<_> = (0..n)
        .map(|i| {
            family.render(&ShapeParams {
                background: SCHEMES[i % 2].0,
                color: SCHEMES[i % 2].1,
                ..family.sample_params(rng)
            })
        })
        .collect();
    ndarray::stack(Axis(0), &items.iter().map(|a| a.view()).collect::<Vec<_>>())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out".into()));
    let root = out_dir.join("anonymize");
    let _ = std::fs::remove_dir_all(&root);
    let input = root.join("faces");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let family = Shapes::new(SIZE)?;
    let mut rels = Vec::new();
    for (i, img) in domain(&family, IMAGES, &mut rng)?.axis_iter(Axis(0)).enumerate() {
        let rel = format!("person{}/photo{}.png", i / 2, i % 2);
        std::fs::create_dir_all(input.join(format!("person{}", i / 2)))?;
        save_image(input.join(&rel), img, DataRange::MinusOneToOne)?;
        rels.push(rel);
    }

    let runner = Boomerang::builder(
        EmpiricalDenoiser::new(domain(&family, 800, &mut rng)?, DataRange::MinusOneToOne)?,
        DiscreteSchedule::linear(1000, 1e-4, 0.02)?,
    )
    .spacing(Spacing::Uniform(250))
    .build()?;

    let mut tiles = Vec::new();
    for rel in &rels {
        tiles.push(load_image(input.join(rel), ColorMode::Rgb, DataRange::MinusOneToOne)?);
    }
    println!("{:>4} {:>10} {:>10} {:>8}", "t", "MSE", "PSNR dB", "SSIM");
    for t in [0.2, 0.4, 0.6] {
        let output = root.join(format!("anon-t{t}"));
        let mut job = AnonymizeJob::new(&input, &output, TimeSpec::fraction(t));
        job.seed = 7;
        job.batch_size = 4;
        job.model_name = "empirical:shapes-800".into();
        // Two shards, as two cluster jobs would run them...
        for i in 0..2 {
            job.shard = Shard::new(i, 2)?;
            job.run(&runner, &mut |_| {})?;
        }
        // ... and a resumed run finds everything done.
        job.shard = Shard::whole();
        let again = job.run(&runner, &mut |_| {})?;
        assert_eq!(again.written, 0);
        let mut entries = read_manifest(&output.join("manifest.shard-0-of-2.jsonl"))?;
        entries.extend(read_manifest(&output.join("manifest.shard-1-of-2.jsonl"))?);
        let ok: Vec<_> = entries
            .iter()
            .filter(|e| e.status == EntryStatus::Ok)
            .filter_map(|e| e.distances)
            .collect();
        let n = ok.len() as f64;
        println!(
            "{t:>4} {:>10.5} {:>10.2} {:>8.4}",
            ok.iter().map(|d| d.mse).sum::<f64>() / n,
            ok.iter().map(|d| d.psnr).sum::<f64>() / n,
            ok.iter().filter_map(|d| d.ssim).sum::<f64>() / n
        );
        for rel in &rels {
            tiles.push(load_image(output.join(rel), ColorMode::Rgb, DataRange::MinusOneToOne)?);
        }
    }
    let views: Vec<_> = tiles.iter().map(|r| r.view()).collect();
    let batch = concatenate(Axis(0), &views)?;
    let big = resize(batch.view(), SIZE * 3, SIZE * 3, ResizeFilter::Nearest)?;
    let picture = grid(big.view(), IMAGES, 4, 1.0)?;
    let path = out_dir.join("anonymize.png");
    save_image(&path, picture.view(), DataRange::MinusOneToOne)?;
    println!("wrote {} (top row: originals; then t = 0.2, 0.4, 0.6)", path.display());
    Ok(())
}
