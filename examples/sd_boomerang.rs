//! Boomerang with Stable Diffusion: one image, several `t`, one strip.
//!
//! ```text
//! cargo run --release --example sd_boomerang -- <SD folder> <input image> <prompt> <output.png>
//!     [--t 0.2,0.4,0.6,0.8] [--steps 100] [--guidance 7.5] [--negative ""] [--seed 0]
//!     [--sample-latent] [--size 512] [--device cpu|cuda|auto] [--dtype f32|f16|bf16]
//! ```
//!
//! The SD folder is a diffusers-format pipeline (e.g. a local copy of
//! `stable-diffusion-v1-5/stable-diffusion-v1-5`). The image is resized so that its sides are
//! multiples of 8 (or to `--size`×`--size`); the strip shows the input, then the Boomerang
//! results for each `t` (fractions of the 1000 training steps), left to right. Deterministic
//! DDIM (η = 0) on a `Uniform(steps)` grid, classifier-free guidance, latent = posterior mode
//! unless `--sample-latent`.

#[cfg(feature = "tch")]
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "tch"))]
fn main() {
    eprintln!("this example needs the `tch` feature");
}

#[cfg(feature = "tch")]
fn run() -> Result<(), Box<dyn std::error::Error>> {
    use boomerang::image_io::{self, ColorMode, ResizeFilter};
    use boomerang::models::stable_diffusion::{LatentMode, SdOptions, StableDiffusion, TextPrompt};
    use boomerang::models::{parse_device, parse_kind};
    use boomerang::{DataRange, NoiseStreams, Sampler, Spacing, TimeSpec};
    use ndarray::{concatenate, Axis};

    let mut positional = Vec::new();
    let mut ts = vec![0.2, 0.4, 0.6, 0.8];
    let (mut steps, mut guidance, mut seed) = (100usize, 7.5f64, 0u64);
    let mut negative = String::new();
    let mut sample_latent = false;
    let mut size: Option<usize> = None;
    let mut options = SdOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--t" => {
                ts = value()?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--steps" => steps = value()?.parse()?,
            "--guidance" => guidance = value()?.parse()?,
            "--negative" => negative = value()?,
            "--seed" => seed = value()?.parse()?,
            "--size" => size = Some(value()?.parse()?),
            "--device" => options.device = parse_device(&value()?)?,
            "--dtype" => options.kind = parse_kind(&value()?)?,
            "--sample-latent" => sample_latent = true,
            "-h" | "--help" => {
                println!(
                    "usage: sd_boomerang <SD folder> <input image> <prompt> <output.png> [--t 0.2,0.4] \
                     [--steps 100] [--guidance 7.5] [--negative TEXT] [--seed 0] [--sample-latent] \
                     [--size 512] [--device cpu|cuda|auto] [--dtype f32|f16|bf16]"
                );
                return Ok(());
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}").into()),
            _ => positional.push(a),
        }
    }
    let [folder, input, prompt, output] = <[String; 4]>::try_from(positional)
        .map_err(|_| "expected <SD folder> <input image> <prompt> <output.png> (see --help)")?;

    let t0 = std::time::Instant::now();
    let sd = StableDiffusion::load(&folder, &options)?;
    eprintln!("loaded {folder} in {:.1} s", t0.elapsed().as_secs_f64());

    let image = image_io::load_image(&input, ColorMode::Rgb, DataRange::MinusOneToOne)?;
    let (_, _, h, w) = image.dim();
    let f = sd.latent_factor();
    let (th, tw) = match size {
        Some(s) => (s, s),
        None => ((h / f).max(1) * f, (w / f).max(1) * f),
    };
    let image = if (th, tw) != (h, w) {
        image_io::resize(image.view(), th, tw, ResizeFilter::Bicubic)?
    } else {
        image
    };

    let text = TextPrompt {
        prompts: vec![prompt.clone()],
        negative_prompts: vec![negative.clone()],
        guidance_scale: guidance,
    };
    let mode = if sample_latent {
        LatentMode::Sample
    } else {
        LatentMode::Mode
    };
    let runner = StableDiffusion::boomerang(&sd, &text, mode)?
        .sampler(Sampler::ddim(0.0))
        .spacing(Spacing::Uniform(steps))
        .build()?;
    let mut tiles = vec![image.clone()];
    for &t in &ts {
        let mut noise = NoiseStreams::keyed(seed, &[0]);
        let started = std::time::Instant::now();
        let mut cb = |info: &boomerang::StepInfo<'_>| {
            if info.index + 1 == info.total || info.index.is_multiple_of(10) {
                eprint!("\r  t = {t}: step {}/{}", info.index + 1, info.total);
            }
        };
        let out = runner.run_with(image.view(), TimeSpec::fraction(t), &mut noise, Some(&mut cb))?;
        eprintln!(
            "\r  t = {t}: {} steps from step {} in {:.1} s",
            out.steps,
            out.start.time,
            started.elapsed().as_secs_f64()
        );
        tiles.push(out.sample);
    }
    let views: Vec<_> = tiles.iter().map(|a| a.view()).collect();
    let batch = concatenate(Axis(0), &views)?;
    let strip = image_io::grid(batch.view(), tiles.len(), 4, 1.0)?;
    image_io::save_image(&output, strip.view(), DataRange::MinusOneToOne)?;
    eprintln!("wrote {output}: input, then t = {ts:?}");
    Ok(())
}
