//! Side-by-side benchmark, Rust half: the crate's DDPM UNet and Boomerang runner, and its
//! Stable Diffusion pipeline, on the same random-weight model folders that
//! `tools/bench_side_by_side.py make DIR` / `make-sd DIR` write with diffusers (the Python half
//! times the same workloads in PyTorch).
//!
//! ```text
//! cargo build --release --example bench_side_by_side
//! target/release/examples/bench_side_by_side check DIR
//! target/release/examples/bench_side_by_side time DIR --threads 1 --what forward1 [--iters 5]
//! target/release/examples/bench_side_by_side check SD_DIR
//! target/release/examples/bench_side_by_side time SD_DIR --threads 1 --what sd-step [--iters 5]
//! ```
//!
//! Both modes tell the folders apart by `model_index.json`: a folder with one is a `make-sd`
//! Stable Diffusion pipeline, one without a `make` DDPM UNet.
//!
//! `check DIR` on a DDPM folder loads it through the crate (`DdpmUNet::load`, the scheduler
//! from `scheduler_config.json`) and compares with diffusers' outputs in `DIR/reference/`:
//! the UNet on the 16-item reference batch, and a DDIM (η = 0) Boomerang run from t = 0.3
//! with the reference forward noise. It prints the relative differences (max |a − b| /
//! max |b|) as JSON and exits with status 1 when the UNet's exceeds 1e-4.
//!
//! `time DIR --threads T --what W` sets `tch::set_num_threads(T)` and a global rayon pool of
//! T threads, runs workload W `--iters` times (default 5) after one warm-up and prints the
//! median seconds per iteration as JSON:
//! - `forward1`, `forward16`: one UNet forward (on tensors, under `no_grad`) on the first
//!   1 / all 16 reference items;
//! - `boomerang:F`: `Boomerang::run_with_noise` on the reference image (batch 1) from
//!   t = F with DDIM (η = 0) on `Spacing::Uniform(100)`, `x̂0` clipped as the scheduler
//!   config says; `calls` in the output is `Boomerang::plan(t).len()`.
//!
//! `check SD_DIR` loads the pipeline through the crate (`StableDiffusion::load`) and compares
//! with diffusers' outputs in `SD_DIR/reference_sd/`. It prints the relative difference of
//! each quantity below as JSON and exits with status 1 when one exceeds 1e-4 or the img2img
//! run visits other steps than diffusers':
//! - the prompt embeddings of "a photo of a cat" and "" (`encode_prompt`);
//! - the guided step: `Boomerang::reverse_from` on the reference latents at step 500 with
//!   the crate's embeddings as `Condition::Text` and
//!   `Guidance::classifier_free(7.5, Condition::Text(uncond))` (ONE UNet call on a batch of
//!   2), `Sampler::ddim(0.0)`, a grid of the start step alone (`Spacing::Steps` with no step
//!   below 500) and `final_alpha_bar` ᾱ_450, which is diffusers' DDIM step from 500 on its
//!   20-step grid (`prev_timestep = 500 − 1000 / 20`): its `x̂0` (`BoomerangOutput::pred_x0`),
//!   the guided `ε̂` recovered from it, `(x_t − √ᾱ_500·x̂0) / √(1 − ᾱ_500)`, and the step's
//!   result;
//! - img2img: `StableDiffusion::boomerang` (prompt "a photo of a cat", negative prompt "",
//!   guidance 7.5, `LatentMode::Mode`) with DDIM (η = 0), the scheduler config's 20-step grid
//!   (`SchedulerConfig::spacing`) and final `ᾱ_0` (`final_alpha_bar`), no clipping, run by
//!   `run_with_noise` from diffusers' start step (`start_timestep` in meta.json, 451 at
//!   strength 0.5) with diffusers' forward noise; the steps run must be diffusers' (10 steps,
//!   451 … 1). Compared: the encoded latents, the final latents (`model_sample`) and the
//!   decoded image (`sample`, not clamped).
//!
//! `time SD_DIR --threads T --what W` (same threads and output as above; `calls` counts UNet
//! calls, each on a batch of 2):
//! - `sd-step`: the guided step above (`reverse_from` from 500), the embeddings computed once
//!   before the timing, as the Python side does;
//! - `sd-img2img`: the whole img2img run above per iteration, building the runner inside the
//!   timed closure (`StableDiffusion::boomerang` encodes both prompts, as diffusers' pipeline
//!   does on every call), then `run_with_noise` on `image.f32` with `noise.f32`: VAE encoding
//!   (posterior mode; a posterior sample costs the same), 10 guided UNet calls, VAE decoding.

#[cfg(feature = "tch")]
fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(not(feature = "tch"))]
fn main() {
    eprintln!("this example needs the `tch` feature");
}

#[cfg(feature = "tch")]
mod side {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use boomerang::models::{DdpmUNet, Device, Kind, TchDenoiser};
    use boomerang::schedule::SchedulerConfig;
    use boomerang::{Boomerang, Clip, NoiseStreams, Sampler, Spacing, TimeSpec};
    use ndarray::{Array1, Array4, ArrayView, ArrayView4, Dimension};
    use tch::Tensor;

    pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

    /// Tolerance of the UNet agreement check (max |a − b| / max |b|).
    pub const TOL: f64 = 1e-4;
    /// Items in the reference batch.
    pub const BATCH: usize = 16;
    /// The `t` of the reference Boomerang run.
    pub const CHECK_T: f64 = 0.3;

    /// Raw little-endian f32 values.
    pub fn read_f32(path: &Path) -> Res<Vec<f32>> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.len() % 4 != 0 {
            return Err(format!("{}: {} bytes is not a whole number of f32", path.display(), bytes.len()).into());
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    pub fn read4(path: &Path, n: usize) -> Res<Array4<f32>> {
        Ok(Array4::from_shape_vec((n, 3, 32, 32), read_f32(path)?)?)
    }

    /// max |a − b| / max |b|.
    pub fn rel_diff<D: Dimension>(a: ArrayView<'_, f32, D>, b: ArrayView<'_, f32, D>) -> f64 {
        assert_eq!(a.shape(), b.shape(), "compared arrays differ in shape");
        let num = a
            .iter()
            .zip(b.iter())
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .fold(0.0, f64::max);
        let den = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
        num / den
    }

    pub fn tensor(a: ArrayView4<'_, f32>) -> Tensor {
        let (n, c, h, w) = a.dim();
        let data: Vec<f32> = a.iter().copied().collect();
        Tensor::from_slice(&data).view([n as i64, c as i64, h as i64, w as i64])
    }

    pub fn array(t: &Tensor) -> Res<Array4<f32>> {
        let (n, c, h, w) = t.size4()?;
        let flat = t.contiguous().view([-1]);
        let v: Vec<f32> = Vec::<f32>::try_from(&flat)?;
        Ok(Array4::from_shape_vec(
            (n as usize, c as usize, h as usize, w as usize),
            v,
        )?)
    }

    pub struct Inputs {
        pub dir: PathBuf,
        pub x: Array4<f32>,
        pub t: Array1<f32>,
        pub x0: Array4<f32>,
        pub z: Array4<f32>,
    }

    impl Inputs {
        pub fn read(dir: &Path) -> Res<Self> {
            let r = dir.join("reference");
            let t = read_f32(&r.join("t.f32"))?;
            if t.len() != BATCH {
                return Err(format!("t.f32 holds {} values, expected {BATCH}", t.len()).into());
            }
            Ok(Self {
                dir: dir.to_path_buf(),
                x: read4(&r.join("x.f32"), BATCH)?,
                t: Array1::from(t),
                x0: read4(&r.join("x0.f32"), 1)?,
                z: read4(&r.join("z.f32"), 1)?,
            })
        }
    }

    pub fn unet(dir: &Path) -> Res<DdpmUNet> {
        Ok(DdpmUNet::load(dir, Device::Cpu, Kind::Float)?)
    }

    /// The runner the Python side mirrors: DDIM η = 0 on `Uniform(100)`, the folder's
    /// schedule and clipping.
    pub fn runner(dir: &Path) -> Res<Boomerang<TchDenoiser<DdpmUNet>>> {
        let file = SchedulerConfig::find(dir).ok_or("no scheduler_config.json")?;
        let cfg = SchedulerConfig::read(&file)?;
        let clip = if cfg.clip_sample { Clip::Range } else { Clip::Off };
        Ok(Boomerang::builder(unet(dir)?.into_denoiser(), cfg.schedule()?)
            .sampler(Sampler::ddim(0.0))
            .spacing(Spacing::Uniform(100))
            .clip(clip)
            .build()?)
    }

    pub fn forward(net: &DdpmUNet, x: &Tensor, t: &Tensor) -> Res<Tensor> {
        Ok(tch::no_grad(|| net.forward(x, t))?)
    }

    pub fn boomerang(runner: &Boomerang<TchDenoiser<DdpmUNet>>, inp: &Inputs, f: f64) -> Res<Array4<f32>> {
        let mut noise = NoiseStreams::keyed(0, &[0]);
        let out = runner.run_with_noise(inp.x0.view(), TimeSpec::fraction(f), inp.z.view(), &mut noise, None)?;
        Ok(out.sample)
    }

    pub fn check(inp: &Inputs) -> Res<bool> {
        let r = inp.dir.join("reference");
        let net = unet(&inp.dir)?;
        let eps = forward(
            &net,
            &tensor(inp.x.view()),
            &Tensor::from_slice(inp.t.as_slice().unwrap()),
        )?;
        let want = read4(&r.join("eps.f32"), BATCH)?;
        let unet_rel = rel_diff(array(&eps)?.view(), want.view());
        let runner = runner(&inp.dir)?;
        let got = boomerang(&runner, inp, CHECK_T)?;
        let want_b = read4(&r.join(format!("boomerang_{CHECK_T}.f32")), 1)?;
        let boom_rel = rel_diff(got.view(), want_b.view());
        let calls = runner.plan(TimeSpec::fraction(CHECK_T))?.len();
        let ok = unet_rel <= TOL;
        println!(
            "{{\"side\": \"rust\", \"check\": \"agreement\", \"unet_rel_diff\": {unet_rel:e}, \
             \"unet_tol\": {TOL:e}, \"boomerang_t\": {CHECK_T}, \"boomerang_calls\": {calls}, \
             \"boomerang_rel_diff\": {boom_rel:e}, \"ok\": {ok}}}"
        );
        Ok(ok)
    }

    pub fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    pub fn timed(iters: usize, mut f: impl FnMut() -> Res<()>) -> Res<Vec<f64>> {
        f()?; // warm-up
        let mut times = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = Instant::now();
            f()?;
            times.push(start.elapsed().as_secs_f64());
        }
        Ok(times)
    }

    pub fn time(inp: &Inputs, threads: usize, what: &str, iters: usize) -> Res<()> {
        let (times, calls) = if let Some(n) = match what {
            "forward1" => Some(1),
            "forward16" => Some(BATCH),
            _ => None,
        } {
            let net = unet(&inp.dir)?;
            let x = tensor(inp.x.slice(ndarray::s![..n, .., .., ..]));
            let t = Tensor::from_slice(&inp.t.as_slice().unwrap()[..n]);
            let times = timed(iters, || {
                let _eps = forward(&net, &x, &t)?;
                Ok(())
            })?;
            (times, 1)
        } else if let Some(f) = what.strip_prefix("boomerang:") {
            let f: f64 = f.parse()?;
            let runner = runner(&inp.dir)?;
            let calls = runner.plan(TimeSpec::fraction(f))?.len();
            let times = timed(iters, || {
                boomerang(&runner, inp, f)?;
                Ok(())
            })?;
            (times, calls)
        } else {
            return Err(format!("unknown workload `{what}` (forward1, forward16, boomerang:F)").into());
        };
        report(what, threads, iters, calls, "", times);
        Ok(())
    }

    /// The JSON line of a timing; `extra` is inserted after `calls` (`""` or `, "k": v`).
    pub fn report(what: &str, threads: usize, iters: usize, calls: usize, extra: &str, times: Vec<f64>) {
        let list: Vec<String> = times.iter().map(|t| format!("{t:.6}")).collect();
        println!(
            "{{\"side\": \"rust\", \"what\": \"{what}\", \"threads\": {threads}, \"iters\": {iters}, \
             \"calls\": {calls}{extra}, \"median_s\": {:.6}, \"times_s\": [{}]}}",
            median(times),
            list.join(", ")
        );
    }
}

#[cfg(feature = "tch")]
mod sd {
    use std::path::Path;

    use boomerang::models::stable_diffusion::{LatentCodec, LatentMode, SdOptions, StableDiffusion, TextPrompt};
    use boomerang::{Boomerang, Clip, Condition, Guidance, NoiseStreams, Sampler, Spacing, TimeSpec};
    use ndarray::{Array3, Array4, ArrayD, IxDyn};
    use serde_json::Value;

    use crate::side::{read_f32, rel_diff, report, timed, Res};

    /// Tolerance of every compared quantity (max |a − b| / max |b|): the DDPM check's 1e-4.
    /// Guidance multiplies the difference of two UNet outputs by 7.5, which amplifies f32
    /// rounding; the crate's guided `ε̂` and final img2img latents and image stay around
    /// 1e-5 of diffusers' on the `make-sd` folder, so 1e-4 keeps a margin of about 10
    /// while a real mismatch (a step to the wrong `ᾱ`, a wrong grid) is far larger.
    pub const TOL: f64 = 1e-4;
    pub const PROMPT: &str = "a photo of a cat";
    pub const NEGATIVE: &str = "";
    pub const GUIDANCE: f64 = 7.5;
    /// diffusers' `num_inference_steps` of the img2img run (and the grid of the guided step).
    pub const STEPS: usize = 20;

    type StepRunner<'a> = Boomerang<&'a StableDiffusion>;
    type Img2ImgRunner<'a> = Boomerang<&'a StableDiffusion, LatentCodec<&'a StableDiffusion>>;

    /// The reference folder: meta.json and the raw f32 files it gives shapes for.
    pub struct Reference {
        dir: std::path::PathBuf,
        meta: Value,
    }

    impl Reference {
        pub fn open(dir: &Path) -> Res<Self> {
            let dir = dir.join("reference_sd");
            let file = dir.join("meta.json");
            let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            Ok(Self {
                dir,
                meta: serde_json::from_str(&text)?,
            })
        }

        fn usize(&self, key: &str) -> Res<usize> {
            let v = self.meta[key]
                .as_u64()
                .ok_or_else(|| format!("meta.json lacks the integer `{key}`"))?;
            Ok(v as usize)
        }

        fn steps(&self, key: &str) -> Res<Vec<usize>> {
            let list = self.meta[key]
                .as_array()
                .ok_or_else(|| format!("meta.json lacks the list `{key}`"))?;
            list.iter()
                .map(|v| {
                    v.as_u64()
                        .map(|k| k as usize)
                        .ok_or_else(|| format!("`{key}` holds a non-integer").into())
                })
                .collect()
        }

        fn array(&self, name: &str) -> Res<ArrayD<f32>> {
            let shape: Vec<usize> = self.steps(name)?;
            Ok(ArrayD::from_shape_vec(
                IxDyn(&shape),
                read_f32(&self.dir.join(format!("{name}.f32")))?,
            )?)
        }

        pub fn a3(&self, name: &str) -> Res<Array3<f32>> {
            Ok(self.array(name)?.into_dimensionality()?)
        }

        pub fn a4(&self, name: &str) -> Res<Array4<f32>> {
            Ok(self.array(name)?.into_dimensionality()?)
        }
    }

    pub fn load(dir: &Path) -> Res<StableDiffusion> {
        Ok(StableDiffusion::load(dir, &SdOptions::default())?)
    }

    /// The guided step from `from` to `to` (diffusers' DDIM step on its 20-step grid): a grid
    /// of the start step alone and the one DDIM step landing at ᾱ_to.
    pub fn step_runner<'a>(
        sd: &'a StableDiffusion,
        cond: Array3<f32>,
        uncond: Array3<f32>,
        from: usize,
        to: usize,
    ) -> Res<StepRunner<'a>> {
        let runner = Boomerang::builder(sd, sd.schedule())
            .condition(Condition::Text(cond))
            .guidance(Guidance::classifier_free(GUIDANCE, Condition::Text(uncond)))
            .sampler(Sampler::ddim(0.0))
            .spacing(Spacing::Steps(Vec::new()))
            .final_alpha_bar(Some(sd.schedule().alpha_bar(to)?))
            .clip(Clip::Off)
            .build()?;
        let plan = runner.plan(TimeSpec::Step(from))?;
        if plan.len() != 1 {
            return Err(format!("the guided step's grid has {} points, expected 1", plan.len()).into());
        }
        Ok(runner)
    }

    /// diffusers' img2img with DDIM (η = 0) on the folder's scheduler config.
    pub fn img2img_runner(sd: &StableDiffusion) -> Res<Img2ImgRunner<'_>> {
        let config = sd.scheduler_config();
        if config.clip_range().is_some() {
            return Err("the make-sd folder's DDIM config should say clip_sample false".into());
        }
        let prompt = TextPrompt {
            prompts: vec![PROMPT.to_string()],
            negative_prompts: vec![NEGATIVE.to_string()],
            guidance_scale: GUIDANCE,
        };
        Ok(StableDiffusion::boomerang(sd, &prompt, LatentMode::Mode)?
            .sampler(Sampler::ddim(0.0))
            .spacing(config.spacing(STEPS)?)
            .final_alpha_bar(config.final_alpha_bar()?)
            .clip(Clip::Off)
            .build()?)
    }

    pub fn check(dir: &Path) -> Res<bool> {
        let r = Reference::open(dir)?;
        let sd = load(dir)?;
        let (from, to) = (r.usize("guided_step_from")?, r.usize("guided_step_to")?);

        let cond = sd.encode_prompt(&[PROMPT])?;
        let uncond = sd.encode_prompt(&[NEGATIVE])?;
        let cond_rel = rel_diff(cond.view(), r.a3("cond")?.view());
        let uncond_rel = rel_diff(uncond.view(), r.a3("uncond")?.view());

        let lat = r.a4("lat")?;
        let runner = step_runner(&sd, cond, uncond, from, to)?;
        let out = runner.reverse_from(
            lat.view(),
            TimeSpec::Step(from),
            &mut NoiseStreams::keyed(0, &[0]),
            None,
        )?;
        let ab = sd.schedule().alpha_bar(from)?;
        let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
        let mut eps = lat.clone();
        ndarray::Zip::from(&mut eps)
            .and(&out.pred_x0)
            .for_each(|e, &x0| *e = ((*e as f64 - a * x0 as f64) / s) as f32);
        let x0_rel = rel_diff(out.pred_x0.view(), r.a4("guided_pred_x0")?.view());
        let eps_rel = rel_diff(eps.view(), r.a4("guided_eps")?.view());
        let step_rel = rel_diff(out.model_sample.view(), r.a4("guided_step")?.view());

        let runner = img2img_runner(&sd)?;
        let start = r.usize("start_timestep")?;
        let t = TimeSpec::Step(start);
        let plan: Vec<usize> = runner.plan(t)?.iter().map(|p| p.time as usize).collect();
        let same_steps = plan == r.steps("run_timesteps")?;
        let image = r.a4("image")?;
        let noise = r.a4("noise")?;
        let out = runner.run_with_noise(image.view(), t, noise.view(), &mut NoiseStreams::keyed(0, &[0]), None)?;
        let enc = out.encoded.as_ref().ok_or("the run started from an image")?;
        let enc_rel = rel_diff(enc.view(), r.a4("img2img_encoded")?.view());
        let lat_rel = rel_diff(out.model_sample.view(), r.a4("img2img_latents")?.view());
        let img_rel = rel_diff(out.sample.view(), r.a4("img2img_image")?.view());

        let gated = [
            cond_rel, uncond_rel, x0_rel, eps_rel, step_rel, enc_rel, lat_rel, img_rel,
        ];
        let ok = same_steps && gated.iter().all(|&e| e <= TOL);
        let list: Vec<String> = plan.iter().map(usize::to_string).collect();
        println!(
            "{{\"side\": \"rust\", \"check\": \"agreement-sd\", \"cond_rel_diff\": {cond_rel:e}, \
             \"uncond_rel_diff\": {uncond_rel:e}, \"step_from\": {from}, \"step_to\": {to}, \
             \"guided_pred_x0_rel_diff\": {x0_rel:e}, \"guided_eps_rel_diff\": {eps_rel:e}, \
             \"guided_step_rel_diff\": {step_rel:e}, \"img2img_steps\": [{}], \"img2img_same_steps\": {same_steps}, \
             \"img2img_encoded_rel_diff\": {enc_rel:e}, \"img2img_latents_rel_diff\": {lat_rel:e}, \
             \"img2img_image_rel_diff\": {img_rel:e}, \"tol\": {TOL:e}, \"ok\": {ok}}}",
            list.join(", ")
        );
        Ok(ok)
    }

    pub fn time(dir: &Path, threads: usize, what: &str, iters: usize) -> Res<()> {
        let r = Reference::open(dir)?;
        let sd = load(dir)?;
        let (times, calls) = match what {
            "sd-step" => {
                let (from, to) = (r.usize("guided_step_from")?, r.usize("guided_step_to")?);
                let cond = sd.encode_prompt(&[PROMPT])?;
                let uncond = sd.encode_prompt(&[NEGATIVE])?;
                let runner = step_runner(&sd, cond, uncond, from, to)?;
                let lat = r.a4("lat")?;
                let times = timed(iters, || {
                    runner.reverse_from(
                        lat.view(),
                        TimeSpec::Step(from),
                        &mut NoiseStreams::keyed(0, &[0]),
                        None,
                    )?;
                    Ok(())
                })?;
                (times, 1)
            }
            "sd-img2img" => {
                let t = TimeSpec::Step(r.usize("start_timestep")?);
                let image = r.a4("image")?;
                let noise = r.a4("noise")?;
                let calls = img2img_runner(&sd)?.plan(t)?.len();
                let times = timed(iters, || {
                    let runner = img2img_runner(&sd)?;
                    runner.run_with_noise(image.view(), t, noise.view(), &mut NoiseStreams::keyed(0, &[0]), None)?;
                    Ok(())
                })?;
                (times, calls)
            }
            _ => {
                return Err(
                    format!("unknown workload `{what}` for a Stable Diffusion folder (sd-step, sd-img2img)").into(),
                )
            }
        };
        report(what, threads, iters, calls, ", \"unet_batch\": 2", times);
        Ok(())
    }
}

#[cfg(feature = "tch")]
fn run() -> side::Res<bool> {
    use std::path::PathBuf;

    let usage = "usage: bench_side_by_side check DIR | time DIR [--threads T] [--what W] [--iters N]";
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(usage)?;
    let dir = PathBuf::from(args.next().ok_or(usage)?);
    let (mut threads, mut what, mut iters) = (1usize, None, 5usize);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--threads" => threads = value()?.parse()?,
            "--what" => what = Some(value()?),
            "--iters" => iters = value()?.parse()?,
            _ => return Err(format!("unknown argument `{a}`; {usage}").into()),
        }
    }
    tch::set_num_threads(threads as i32);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    // A `make-sd` folder is a diffusers pipeline (model_index.json); a `make` folder a UNet.
    let is_sd = dir.join("model_index.json").is_file();
    match (mode.as_str(), is_sd) {
        ("check", false) => side::check(&side::Inputs::read(&dir)?),
        ("check", true) => sd::check(&dir),
        ("time", false) => {
            let what = what.as_deref().unwrap_or("forward1");
            side::time(&side::Inputs::read(&dir)?, threads, what, iters).map(|()| true)
        }
        ("time", true) => {
            let what = what.as_deref().unwrap_or("sd-step");
            sd::time(&dir, threads, what, iters).map(|()| true)
        }
        _ => Err(usage.into()),
    }
}
