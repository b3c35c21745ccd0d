//! `make demo`: Boomerang with the crate's embedded default model (`shapes32`, a DDPM UNet
//! trained on the procedural shapes family), offline.
//!
//! Writes `out/demo.png`, every row labelled on its left and the columns captioned above:
//! - rows 1–5: t = 0.1, 0.3, 0.5, 0.7, 0.9; columns: the input, x_t, four Boomerang samples;
//! - row 6: cascaded resolution enhancement of the input downsampled to 8×8: the 8×8 image
//!   (pixels enlarged), its bicubic upsampling, three passes at t = 0.2, the original;
//! - row 7: six samples from pure noise (t = 1).
//!
//! and `out/distances.csv` with its plot `out/distances.svg` (RMSE and SSIM to the input
//! against t), and prints a table against t: distance to the input (RMSE, SSIM), how often a
//! sample keeps the input's shape kind, and how well the samples are explained by the
//! family's own generator (`Shapes::fit`).
//!
//! Run: `cargo run --release --example demo [-- OUT_DIR]`

use boomerang::apps::enhance::{enhance, EnhanceOptions};
use boomerang::apps::metrics::{ssim, SsimConfig};
use boomerang::image_io::{resize, save_image, ResizeFilter};
use boomerang::labels::{labelled_grid, Caption, GridLabels};
use boomerang::models::{pretrained, Device};
use boomerang::shapes::{FitReport, Shapes};
use boomerang::{Boomerang, DataRange, NoiseStreams, Sampler, Spacing, TimeSpec};
use ndarray::{concatenate, s, Array4, ArrayView3, Axis};
use rand::SeedableRng;

/// One point of the distance plot: (t, mean RMSE, mean SSIM) of the samples to the input.
type Point = (f64, f64, f64);

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
    let mut points: Vec<Point> = Vec::new();
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
        points.push((t, d[0], d[1]));
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
    // Black text on the white background: a label per row, captions above the first row,
    // the enhancement row and the noise row.
    let mut row_labels: Vec<String> = points.iter().map(|p| format!("t={}", p.0)).collect();
    row_labels.extend(["enhance".to_string(), "noise".to_string()]);
    let labels = GridLabels::rows(row_labels, -1.0)
        .with_scale(2)
        .with_header(
            0,
            vec![
                Caption::new("input", 1),
                Caption::new("x_t", 1),
                Caption::new("samples", K),
            ],
        )
        .with_header(
            points.len(),
            ["8x8", "bicubic", "pass 1", "pass 2", "pass 3", "original"]
                .iter()
                .map(|c| Caption::new(*c, 1))
                .collect(),
        )
        .with_header(
            points.len() + 1,
            vec![Caption::new("samples from pure noise (t=1)", K + 2)],
        );
    let picture = labelled_grid(big.view(), K + 2, 4, 1.0, &labels)?;
    let path = out_dir.join("demo.png");
    save_image(&path, picture.view(), DataRange::MinusOneToOne)?;
    std::fs::write(out_dir.join("distances.csv"), csv)?;
    std::fs::write(out_dir.join("distances.svg"), distances_svg(&points))?;
    println!(
        "\nwrote {}, distances.csv and distances.svg in {:.1} s (rows: t = 0.1 … 0.9 as input, x_t, \
         samples; cascaded enhancement; samples from pure noise)",
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

/// A line plot of the mean RMSE (left axis) and SSIM (right axis) of the samples to their
/// input against t, as a standalone SVG document.
fn distances_svg(points: &[Point]) -> String {
    let (width, height) = (640.0, 420.0);
    let (left, right, top, bottom) = (70.0, 570.0, 80.0, 360.0);
    // Five intervals on both axes, so that their grid lines coincide.
    let rmse_max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let step = nice_step(rmse_max / 5.0);
    let x = |t: f64| left + (right - left) * t;
    let y_rmse = |v: f64| bottom - (bottom - top) * v / (5.0 * step);
    let y_ssim = |v: f64| bottom - (bottom - top) * v.clamp(0.0, 1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">Distance of Boomerang samples \
         to their input against t</text>\n\
         <text x=\"{}\" y=\"46\" text-anchor=\"middle\" fill=\"#555\">shapes32 default model, DDPM \
         over 250 of 1000 steps, mean of {K} samples per t</text>\n",
        width / 2.0,
        width / 2.0
    );
    // Grid lines and ticks.
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let (gx, gy) = (x(v), y_ssim(v));
        svg += &format!(
            "<line x1=\"{left}\" y1=\"{gy:.1}\" x2=\"{right}\" y2=\"{gy:.1}\" stroke=\"#ddd\"/>\n\
             <line x1=\"{gx:.1}\" y1=\"{top}\" x2=\"{gx:.1}\" y2=\"{bottom}\" stroke=\"#eee\"/>\n\
             <line x1=\"{gx:.1}\" y1=\"{bottom}\" x2=\"{gx:.1}\" y2=\"{}\" stroke=\"black\"/>\n\
             <text x=\"{gx:.1}\" y=\"{}\" text-anchor=\"middle\">{v:.1}</text>\n\
             <line x1=\"{}\" y1=\"{gy:.1}\" x2=\"{left}\" y2=\"{gy:.1}\" stroke=\"black\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#1f5fa8\">{}</text>\n\
             <line x1=\"{right}\" y1=\"{gy:.1}\" x2=\"{}\" y2=\"{gy:.1}\" stroke=\"black\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" fill=\"#c0392b\">{v:.1}</text>\n",
            bottom + 5.0,
            bottom + 20.0,
            left - 5.0,
            left - 8.0,
            gy + 4.0,
            tick_label(i as f64 * step, step),
            right + 5.0,
            right + 8.0,
            gy + 4.0,
        );
    }
    // Axes and their names.
    svg += &format!(
        "<rect x=\"{left}\" y=\"{top}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">t (fraction of the T diffusion steps)</text>\n\
         <text transform=\"translate(20 {mid:.1}) rotate(-90)\" text-anchor=\"middle\" fill=\"#1f5fa8\">RMSE \
         to the input (data in [-1, 1])</text>\n\
         <text transform=\"translate({} {mid:.1}) rotate(90)\" text-anchor=\"middle\" fill=\"#c0392b\">SSIM \
         to the input</text>\n",
        right - left,
        bottom - top,
        (left + right) / 2.0,
        bottom + 42.0,
        right + 45.0,
        mid = (top + bottom) / 2.0,
    );
    // The two series: RMSE (solid, circles), SSIM (dashed, squares).
    let line = |f: &dyn Fn(&Point) -> (f64, f64)| {
        points
            .iter()
            .map(|p| {
                let (px, py) = f(p);
                format!("{px:.1},{py:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rmse_xy = |p: &Point| (x(p.0), y_rmse(p.1));
    let ssim_xy = |p: &Point| (x(p.0), y_ssim(p.2));
    svg += &format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"2\"/>\n\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\" \
         stroke-dasharray=\"6 4\"/>\n",
        line(&rmse_xy),
        line(&ssim_xy)
    );
    for p in points {
        let ((rx, ry), (sx, sy)) = (rmse_xy(p), ssim_xy(p));
        svg += &format!(
            "<circle cx=\"{rx:.1}\" cy=\"{ry:.1}\" r=\"4\" fill=\"#1f5fa8\"><title>t={} RMSE {:.3}</title></circle>\n\
             <rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"#c0392b\"><title>t={} SSIM \
             {:.3}</title></rect>\n",
            p.0,
            p.1,
            sx - 4.0,
            sy - 4.0,
            p.0,
            p.2
        );
    }
    // Legend, in one line between the title and the plot.
    let ly = top - 14.0;
    svg += &format!(
        "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"#1f5fa8\" stroke-width=\"2\"/>\n\
         <circle cx=\"{}\" cy=\"{ly}\" r=\"4\" fill=\"#1f5fa8\"/>\n\
         <text x=\"{}\" y=\"{}\">RMSE (left axis)</text>\n\
         <line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"#c0392b\" stroke-width=\"2\" \
         stroke-dasharray=\"6 4\"/>\n\
         <rect x=\"{}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"#c0392b\"/>\n\
         <text x=\"{}\" y=\"{}\">SSIM (right axis)</text>\n</svg>\n",
        left + 120.0,
        left + 150.0,
        left + 135.0,
        left + 158.0,
        ly + 4.0,
        left + 290.0,
        left + 320.0,
        left + 301.0,
        ly - 4.0,
        left + 328.0,
        ly + 4.0,
    );
    svg
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten at least `v` (0.1 for `v ≤ 0`).
fn nice_step(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return 0.1;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// A tick value with as many decimals as multiples of `step` need.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (0..6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d);
            (scaled - scaled.round()).abs() < 1e-6
        })
        .unwrap_or(6) as usize;
    format!("{v:.decimals$}")
}
