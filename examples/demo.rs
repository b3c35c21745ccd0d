//! `make demo`: Boomerang with the crate's embedded default model (`shapes32`, a DDPM UNet
//! trained on the procedural shapes family), offline.
//!
//! Writes `out/demo.png`:
//! - rows 1–5: t = 0.1, 0.3, 0.5, 0.7, 0.9; columns: the input, x_t, four Boomerang samples;
//! - row 6: cascaded resolution enhancement of the input downsampled to 8×8: the 8×8 image
//!   (pixels enlarged), its bicubic upsampling, three passes at t = 0.2, the original;
//! - row 7: six samples from pure noise (t = 1).
//!
//! and `out/distances.csv`, and prints a table against t: distance to the input (RMSE,
//! SSIM), how often a sample keeps the input's shape kind, and how well the samples are
//! explained by the family's own generator (`Shapes::fit`).
//!
//! Run: `cargo run --release --example demo [-- OUT_DIR]`

use boomerang::apps::enhance::{enhance, EnhanceOptions};
use boomerang::apps::metrics::{ssim, SsimConfig};
use boomerang::image_io::{grid, resize, save_image, ResizeFilter};
use boomerang::models::{pretrained, Device};
use boomerang::shapes::{FitReport, Shapes};
use boomerang::{Boomerang, DataRange, NoiseStreams, Sampler, Spacing, TimeSpec};
use ndarray::{concatenate, s, Array4, ArrayView3, Axis};
use rand::SeedableRng;

const SIZE: usize = 32;
/// Samples per t.
const K: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "out".into()));
    std::fs::create_dir_all(&out_dir)?;
    let started = std::time::Instant::now();
    let family = pretrained::shapes32_family();
    let runner = Boomerang::builder(
        pretrained::shapes32_denoiser(Device::Cpu)?,
        pretrained::shapes32_schedule()?,
    )
    .sampler(Sampler::ddpm())
    .spacing(Spacing::Uniform(250))
    .clip_denoised(true)
    .build()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let input = family.sample(1, &mut rng);
    let input_fit = family.fit(input.index_axis(Axis(0), 0))?;
    let rmse = |a: ArrayView3<f32>, b: ArrayView3<f32>| ((&a - &b).mapv(|v| v * v).mean().unwrap_or(0.0)).sqrt();
    let ssim_cfg = SsimConfig::with_data_range(2.0);

    // Local samples against t.
    let batch = input.broadcast((K, 3, SIZE, SIZE)).ok_or("broadcast")?.to_owned();
    let mut rows = Vec::new();
    let mut csv = String::from("t,steps,rmse_to_input,ssim_to_input,same_kind,fit_rmse,members\n");
    println!("Boomerang with the default model (shapes32, DDPM sampler over 250 of 1000 steps), {K} samples per t:");
    println!(
        "{:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "t", "steps", "RMSE", "SSIM", "same kind", "fit RMSE", "members"
    );
    for (i, t) in [0.1, 0.3, 0.5, 0.7, 0.9].into_iter().enumerate() {
        let keys: Vec<u64> = (0..K as u64).map(|k| (i as u64) << 32 | k).collect();
        let out = runner.run_with(
            batch.view(),
            TimeSpec::fraction(t),
            &mut NoiseStreams::keyed(7, &keys),
            None,
        )?;
        let fits = family.fit_batch(out.sample.view())?;
        let x = input.index_axis(Axis(0), 0);
        let mut d = [0f64; 2];
        for y in out.sample.axis_iter(Axis(0)) {
            d[0] += rmse(y, x) as f64 / K as f64;
            d[1] += ssim(y, x, &ssim_cfg)? / K as f64;
        }
        let same_kind = fits.iter().filter(|f| f.params.kind == input_fit.params.kind).count();
        let (fit, members) = fit_summary(&family, &fits);
        println!(
            "{t:>5.1} {:>6} {:>10.3} {:>10.3} {:>8}/{K} {fit:>10.3} {members:>7}/{K}",
            out.steps, d[0], d[1], same_kind
        );
        csv += &format!("{t},{},{},{},{same_kind},{fit},{members}\n", out.steps, d[0], d[1]);
        rows.push(concatenate(
            Axis(0),
            &[input.view(), out.x_t.slice(s![0..1, .., .., ..]), out.sample.view()],
        )?);
    }

    // Cascaded enhancement of a 4× downsampled input.
    let low = resize(input.view(), SIZE / 4, SIZE / 4, ResizeFilter::Bilinear)?;
    let opts = EnhanceOptions {
        passes: 3,
        seed: 11,
        ..EnhanceOptions::new(TimeSpec::fraction(0.2))
    };
    let up = enhance(&runner, low.view(), &[1], (SIZE, SIZE), &opts)?;
    let blocky = resize(low.view(), SIZE, SIZE, ResizeFilter::Nearest)?;
    let mut cascade = vec![blocky.view(), up.upsampled.view()];
    cascade.extend(up.passes.iter().map(|p| p.view()));
    cascade.push(input.view());
    let x = input.index_axis(Axis(0), 0);
    println!("\nCascaded enhancement, 8×8 → 32×32, three passes at t = 0.2 (RMSE to the original):");
    println!("  bicubic {:.3}", rmse(up.upsampled.index_axis(Axis(0), 0), x));
    for (p, pass) in up.passes.iter().enumerate() {
        println!("  pass {}  {:.3}", p + 1, rmse(pass.index_axis(Axis(0), 0), x));
    }
    rows.push(concatenate(Axis(0), &cascade)?);

    // Pure noise: does the model generate members of the family?
    let noise_batch = Array4::<f32>::zeros((K + 2, 3, SIZE, SIZE));
    let keys: Vec<u64> = (0..(K + 2) as u64).map(|k| 99 << 32 | k).collect();
    let generated = runner.run_with(
        noise_batch.view(),
        TimeSpec::fraction(1.0),
        &mut NoiseStreams::keyed(7, &keys),
        None,
    )?;
    let (fit, members) = fit_summary(&family, &family.fit_batch(generated.sample.view())?);
    let fresh = family.sample(K + 2, &mut rng);
    let (member_fit, _) = fit_summary(&family, &family.fit_batch(fresh.view())?);
    println!(
        "\nFrom pure noise: mean fit RMSE {fit:.3}, {members}/{} members (fresh members of the family: {member_fit:.3})",
        K + 2
    );
    csv += &format!("1.0,{},,,,{fit},{members}\n", generated.steps);
    rows.push(generated.sample);

    let all = concatenate(Axis(0), &rows.iter().map(|r| r.view()).collect::<Vec<_>>())?;
    let big = resize(all.view(), SIZE * 3, SIZE * 3, ResizeFilter::Nearest)?;
    let picture = grid(big.view(), K + 2, 4, 1.0)?;
    let path = out_dir.join("demo.png");
    save_image(&path, picture.view(), DataRange::MinusOneToOne)?;
    std::fs::write(out_dir.join("distances.csv"), csv)?;
    println!(
        "\nwrote {} and distances.csv in {:.1} s (rows: t = 0.1 … 0.9 as input, x_t, samples; cascaded \
         enhancement; samples from pure noise)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Mean fit error and the number of members of the family among `fits`.
fn fit_summary(family: &Shapes, fits: &[FitReport]) -> (f32, usize) {
    let mean = fits.iter().map(|f| f.rmse).sum::<f32>() / fits.len().max(1) as f32;
    (mean, fits.iter().filter(|f| family.is_member(f)).count())
}
