//! Data augmentation with Boomerang, with no network: a class-per-folder dataset of
//! procedural shapes, three Boomerang copies of each image at t drawn in [0.2, 0.5], and the
//! paper's epoch scheme (serve a copy with probability p).
//!
//! The model is the exact denoiser (`analytic::EmpiricalDenoiser`) of 800 shapes in two
//! colour schemes, as a model trained on one domain; the training images are new shapes in
//! the same schemes. (The exact denoiser of a finite dataset returns its members, so a
//! Boomerang copy is a nearby member: the same colours, another position, size or kind.)
//! The picture shows why t needs choosing per dataset: at the top of this range a copy can
//! leave its class (a disc becomes a triangle), which would mislabel it.
//!
//! Writes `out/augment/train/<class>/*.png` (originals), `out/augment/boom/<class>/*_boom<k>.png`
//! (copies, via `AugmentJob`), and `out/augment.png` (rows: an original and its three copies),
//! then prints which file each item is served as at epochs 0-2 with p = 0.5.
//!
//! Run: `cargo run --release --no-default-features --example augment [-- OUT_DIR]`

use boomerang::analytic::EmpiricalDenoiser;
use boomerang::apps::augment::{augmented_name, AugmentJob, EpochAugmenter, Existing, TimeChoice};
use boomerang::image_io::{grid, load_image, resize, save_image, ColorMode, ResizeFilter};
use boomerang::schedule::DiscreteSchedule;
use boomerang::shapes::{ShapeKind, ShapeParams, Shapes};
use boomerang::{Boomerang, DataRange, Spacing};
use ndarray::{concatenate, Axis};
use rand::SeedableRng;

const SIZE: usize = 32;

/// Two colour schemes (background, shape), RGB in [-1, 1].
const SCHEMES: [([f32; 3], [f32; 3]); 2] = [
    ([-0.8, -0.5, -0.2], [0.9, 0.7, 0.1]),
    ([-0.3, -0.7, -0.6], [0.3, 0.9, 0.8]),
];

/// A random shape in colour scheme `k`.
fn in_scheme<R: rand::Rng>(family: &Shapes, k: usize, rng: &mut R) -> ShapeParams {
    ShapeParams {
        background: SCHEMES[k].0,
        color: SCHEMES[k].1,
        ..family.sample_params(rng)
    }
}

/// `n` shapes, half in each scheme.
fn domain<R: rand::Rng>(family: &Shapes, n: usize, rng: &mut R) -> Result<ndarray::Array4<f32>, ndarray::ShapeError> {
    let items: Vec<_> = (0..n).map(|i| family.render(&in_scheme(family, i % 2, rng))).collect();
    ndarray::stack(Axis(0), &items.iter().map(|a| a.view()).collect::<Vec<_>>())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out".into()));
    let root = out_dir.join("augment");
    let _ = std::fs::remove_dir_all(&root);
    let train = root.join("train");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let family = Shapes::new(SIZE)?;

    // A small labelled training set: the class is the shape's kind.
    let mut rels = Vec::new();
    let mut counts = std::collections::HashMap::new();
    while rels.len() < 6 {
        let p = in_scheme(&family, rels.len() % 2, &mut rng);
        let class = match p.kind {
            ShapeKind::Disc => "disc",
            ShapeKind::Square => "square",
            _ => "triangle",
        };
        let n = counts.entry(class).or_insert(0usize);
        if *n >= 2 {
            continue;
        }
        *n += 1;
        let rel = format!("{class}/{class}{n}.png");
        std::fs::create_dir_all(train.join(class))?;
        save_image(train.join(&rel), family.render(&p).view(), DataRange::MinusOneToOne)?;
        rels.push(rel);
    }
    rels.sort();

    // The model: the exact denoiser of many more shapes.
    let runner = Boomerang::builder(
        EmpiricalDenoiser::new(domain(&family, 800, &mut rng)?, DataRange::MinusOneToOne)?,
        DiscreteSchedule::linear(1000, 1e-4, 0.02)?,
    )
    .spacing(Spacing::Uniform(250))
    .build()?;
    let mut job = AugmentJob::new(&train, root.join("boom"), TimeChoice::Uniform { low: 0.2, high: 0.5 });
    job.copies = 3;
    job.seed = 2;
    job.existing = Existing::Overwrite;
    let report = job.run(&runner, &mut |done, total| eprint!("\r{done}/{total} copies"))?;
    eprintln!();
    println!(
        "{} images, {} copies written to {}",
        report.images,
        report.written,
        root.join("boom").display()
    );

    let mut rows = Vec::new();
    for rel in &rels {
        let mut row = vec![load_image(train.join(rel), ColorMode::Rgb, DataRange::MinusOneToOne)?];
        for k in 0..3 {
            row.push(load_image(
                root.join("boom").join(augmented_name(rel, k)),
                ColorMode::Rgb,
                DataRange::MinusOneToOne,
            )?);
        }
        rows.extend(row);
    }
    let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
    let batch = concatenate(Axis(0), &views)?;
    let big = resize(batch.view(), SIZE * 3, SIZE * 3, ResizeFilter::Nearest)?;
    let picture = grid(big.view(), 4, 4, 1.0)?;
    let path = out_dir.join("augment.png");
    save_image(&path, picture.view(), DataRange::MinusOneToOne)?;
    println!(
        "wrote {} (rows: original, then its copies at t ~ U[0.2, 0.5])",
        path.display()
    );

    let scheme = EpochAugmenter::new(9, 0.5)?;
    for epoch in 0..3 {
        let served: Vec<String> = rels
            .iter()
            .map(|rel| {
                let p = scheme.path(epoch, rel, 3, &train, &root.join("boom"));
                p.strip_prefix(&root).unwrap_or(&p).display().to_string()
            })
            .collect();
        println!("epoch {epoch}: {}", served.join("  "));
    }
    Ok(())
}
