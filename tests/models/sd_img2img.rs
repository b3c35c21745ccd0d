//! A real HF diffusers `StableDiffusionImg2ImgPipeline` DDIM run, reproduced step for step
//! through the crate's public API: [`StableDiffusion::boomerang`] with the VAE as codec,
//! [`SchedulerConfig`]'s grid and final `ᾱ`, and `run_with_noise` with diffusers' forward noise.
//!
//! Fixture: `tests/fixtures/sd/reference/img2img.safetensors`, written by
//! `tools/make_img2img_fixture.py` (diffusers 0.42.1) on the tiny SD1 pipeline
//! `tests/fixtures/sd/sd1`: 10 DDIM steps (leading spacing, `steps_offset` 1,
//! `set_alpha_to_one` false, η = 0), strength 0.5 (diffusers runs 401, 301, 201, 101, 1 and
//! then steps to `ᾱ_0`), guidance 7.5 with a prompt and a negative prompt per image, the VAE
//! posterior mode as latent and a fixed forward noise. Two runs: `ddim` with `clip_sample`
//! false (as Stable Diffusion 1.5's published config), `ddim_clip` with the folder's config as
//! diffusers reads it (no `clip_sample` key: DDIM's default, clamping `x̂0` to [-1, 1], which
//! happens at every step of this run).
//!
//! Error measure: `max|a − b| / max|b|` over the whole tensor, `a` from Rust, `b` a reference,
//! all f32 on the CPU. The fixture also holds the same runs done by diffusers entirely in
//! float64, and diffusers' own f32 rounding (its f32 run against its float64 run, `e_ref`) is
//! the yardstick: every quantity (x_t, each step's latents and `x̂0`, the final latents, the
//! decoded image) must be within `3·e_ref + 2e-6` of both the f32 and the float64 run.
//! - `ddim`: `e_ref` is 2.4e-7 (x_t) to 4.4e-6 (each step: two UNet passes whose difference
//!   guidance multiplies by 7.5, then `x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ`), so the bound is 2.7e-6 to
//!   1.5e-5, the ~1e-5 of the other parity tests; the crate measures 2.4e-7 to 5.6e-6.
//! - `ddim_clip`: after the clamp the latents (~1) are small next to the guided `ε̂` and `x̂0`
//!   cancels large terms, so rounding grows ~3× per step: `e_ref` reaches 5.6e-4 and the crate
//!   (3.5e-4 at most) is closer to the float64 run than diffusers' f32 run is.
//!
//! A real mismatch is far above these bounds (diffusers' own run, changed): the last step to
//! `ᾱ = 1` instead of `ᾱ_0` moves the final latents by 2.3e-2 (`ddim`) and 0.33
//! (`ddim_clip`); every step one lower (`steps_offset` 0) by 0.7 and 1.8; `ε̂` recomputed
//! from the clipped `x̂0` (`use_clipped_model_output`) by 1.9.
//! - the encoded latents (one VAE encoder pass): 1e-5 against diffusers' f32 run.

use std::path::{Path, PathBuf};

use boomerang::checkpoint::{load_state_dict, StateDict, TensorData};
use boomerang::models::stable_diffusion::{LatentMode, SdOptions, StableDiffusion, TextPrompt};
use boomerang::schedule::SchedulerConfig;
use boomerang::{Clip, NoiseStreams, Sampler, Spacing, StepInfo, TimeSpec};
use ndarray::{Array, Array4, Array5, Axis, Dimension, IxDyn};

/// The prompts of the fixture run (also in the fixture's metadata).
const PROMPTS: [&str; 2] = ["a photo of a cat", "a dog's life, highly detailed"];
const NEGATIVE: [&str; 2] = ["blurry", "a painting of a house"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

struct Ref(StateDict);

impl Ref {
    fn open() -> Self {
        Ref(load_state_dict(fixtures().join("reference/img2img.safetensors")).unwrap())
    }
    fn get(&self, key: &str) -> &TensorData {
        self.0.get(key).unwrap_or_else(|| panic!("reference lacks {key}"))
    }
    fn arr(&self, key: &str) -> Array<f32, IxDyn> {
        let t = self.get(key);
        Array::from_shape_vec(IxDyn(&t.shape), t.to_f32_vec().unwrap()).unwrap()
    }
    fn a4(&self, key: &str) -> Array4<f32> {
        self.arr(key).into_dimensionality().unwrap()
    }
    fn a5(&self, key: &str) -> Array5<f32> {
        self.arr(key).into_dimensionality().unwrap()
    }
    fn f64s(&self, key: &str) -> Vec<f64> {
        let t = self.get(key);
        assert_eq!(t.data.len(), 8 * t.shape.iter().product::<usize>(), "{key} is not f64");
        t.data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn steps(&self, key: &str) -> Vec<usize> {
        let t = self.get(key);
        assert_eq!(t.data.len(), 8 * t.shape.iter().product::<usize>(), "{key} is not i64");
        t.data
            .chunks_exact(8)
            .map(|c| usize::try_from(i64::from_le_bytes(c.try_into().unwrap())).unwrap())
            .collect()
    }
}

fn rel_err<D: Dimension>(a: &Array<f32, D>, b: &Array<f32, D>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0f32, f32::max);
    assert!(scale > 0.0);
    diff / scale
}

fn assert_close<D: Dimension>(what: &str, a: &Array<f32, D>, b: &Array<f32, D>, tol: f32) {
    let e = rel_err(a, b);
    eprintln!("{what}: relative error {e:.2e}");
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

/// diffusers' `clip_sample` as the crate's clipping: `Clip::Range` clamps to the UNet's data
/// range, [-1, 1], which is diffusers' `clip_sample_range` 1.
fn clip_of(config: &SchedulerConfig) -> Clip {
    match config.clip_range() {
        None => Clip::Off,
        Some(r) => {
            assert_eq!(r, 1.0, "the crate clamps x̂0 to the data range [-1, 1]");
            Clip::Range
        }
    }
}

fn check_run(sd: &StableDiffusion, r: &Ref, run: &str, config: &SchedulerConfig, cap: f32) {
    let params = r.f64s("params");
    let (n_steps, guidance) = (params[0] as usize, params[2]);
    assert_eq!(params[3], 0.0, "the fixture runs deterministic DDIM");

    // The grid: diffusers' `set_timesteps(10)`, from the scheduler config.
    let grid = config.spacing(n_steps).unwrap();
    assert_eq!(grid, Spacing::Steps(r.steps("timesteps")));
    let final_alpha = config.final_alpha_bar().unwrap();
    let want = r.f64s("final_alpha_cumprod")[0];
    let got = final_alpha.expect("set_alpha_to_one is false");
    assert!(((got - want) / want).abs() < 1e-7, "ᾱ_0 {got} vs diffusers' f32 {want}");

    // diffusers' img2img start: the first timestep left after `timesteps[t_start:]`.
    let start = r.steps("start_timestep")[0];
    let t = TimeSpec::Step(start);

    let prompt = TextPrompt {
        prompts: PROMPTS.iter().map(|s| s.to_string()).collect(),
        negative_prompts: NEGATIVE.iter().map(|s| s.to_string()).collect(),
        guidance_scale: guidance,
    };
    let runner = StableDiffusion::boomerang(sd, &prompt, LatentMode::Mode)
        .unwrap()
        .sampler(Sampler::ddim(0.0))
        .spacing(grid)
        .final_alpha_bar(final_alpha)
        .clip(clip_of(config))
        .build()
        .unwrap();

    // The steps diffusers ran are the crate's grid from t, at diffusers' ᾱ.
    let plan = runner.plan(t).unwrap();
    let times: Vec<usize> = plan.iter().map(|p| p.time as usize).collect();
    assert_eq!(times, r.steps("run_timesteps"));
    assert!(plan.iter().all(|p| p.time.fract() == 0.0));
    for (p, a) in plan.iter().zip(r.f64s("alphas_cumprod_run")) {
        let e = ((p.level.alpha_bar() - a) / a).abs();
        assert!(
            e < 1e-6,
            "ᾱ at {}: {} vs diffusers' f32 {a}",
            p.time,
            p.level.alpha_bar()
        );
    }

    let image = r.a4("image");
    let z = r.a4("noise");
    let mut samples: Vec<Array4<f32>> = Vec::new();
    let mut preds: Vec<Array4<f32>> = Vec::new();
    let mut from: Vec<f64> = Vec::new();
    let mut cb = |s: &StepInfo<'_>| {
        samples.push(s.sample.to_owned());
        preds.push(s.pred_x0.to_owned());
        from.push(s.from.time);
    };
    let mut noise = NoiseStreams::keyed(0, &[0, 1]);
    let out = runner
        .run_with_noise(image.view(), t, z.view(), &mut noise, Some(&mut cb))
        .unwrap();

    assert_eq!(out.start.time, start as f64);
    // The posterior mode and η = 0 draw nothing from the streams: other streams, same run.
    let again = runner
        .run_with_noise(image.view(), t, z.view(), &mut NoiseStreams::keyed(9, &[3, 4]), None)
        .unwrap();
    assert_eq!(again.sample, out.sample);

    let enc = out.encoded.as_ref().expect("run from images");
    assert_close(&format!("{run} encoded latents"), enc, &r.a4("encoded"), 1e-5);
    let cmp = |what: &str, got: &Array4<f32>, key: &str| {
        let (d32, exact) = (r.a4(&format!("{run}.{key}")), r.a4(&format!("{run}.exact.{key}")));
        compare(&format!("{run} {what}"), got, &d32, &exact, cap)
    };
    cmp("x_t", &out.x_t, "x_t");
    let want_latents = r.a5(&format!("{run}.step_latents"));
    let want_preds = r.a5(&format!("{run}.step_pred_x0"));
    let exact_latents = r.a5(&format!("{run}.exact.step_latents"));
    let exact_preds = r.a5(&format!("{run}.exact.step_pred_x0"));
    assert_eq!(out.steps, plan.len());
    assert_eq!(samples.len(), want_latents.dim().0, "one callback per diffusers step");
    assert_eq!(from, times.iter().map(|&s| s as f64).collect::<Vec<_>>());
    for (i, (s, p)) in samples.iter().zip(&preds).enumerate() {
        let step = |a: &Array5<f32>| a.index_axis(Axis(0), i).to_owned();
        let t = times[i];
        let (want, exact) = (step(&want_latents), step(&exact_latents));
        compare(&format!("{run} step {i} (t = {t}) latents"), s, &want, &exact, cap);
        let (want, exact) = (step(&want_preds), step(&exact_preds));
        compare(&format!("{run} step {i} (t = {t}) x̂0"), p, &want, &exact, cap);
    }
    cmp("final latents", &out.model_sample, "latents");
    assert_eq!(&out.model_sample, samples.last().unwrap());
    cmp("decoded image", &out.sample, "decoded");
}

/// Check `got` against diffusers' f32 run (`d32`) and its float64 run (`exact`), with
/// diffusers' own f32 rounding, `e_ref = err(d32, exact)`, as the yardstick: the crate must be
/// within `3·e_ref + 2e-6` of both (the 2e-6 covers f32 storage and quantities diffusers
/// happens to round almost exactly). `e_ref` itself is bounded by `cap`, the run's conditioning.
fn compare(what: &str, got: &Array4<f32>, d32: &Array4<f32>, exact: &Array4<f32>, cap: f32) {
    let (e_d, e_x, e_ref) = (rel_err(got, d32), rel_err(got, exact), rel_err(d32, exact));
    eprintln!("{what}: vs diffusers f32 {e_d:.2e}, vs float64 {e_x:.2e} (diffusers f32 vs float64 {e_ref:.2e})");
    assert!(
        e_ref <= cap,
        "{what}: diffusers' f32 run is {e_ref:e} from its float64 run"
    );
    let tol = 3.0 * e_ref + 2e-6;
    assert!(e_d <= tol, "{what}: {e_d:e} from diffusers' f32 run > {tol:e}");
    assert!(e_x <= tol, "{what}: {e_x:e} from diffusers' float64 run > {tol:e}");
}

#[test]
fn img2img_ddim_matches_diffusers_pipeline_step_for_step() {
    let sd = StableDiffusion::load(fixtures().join("sd1"), &SdOptions::default()).unwrap();
    let r = Ref::open();
    let config = SchedulerConfig::read(fixtures().join("sd1/scheduler")).unwrap();
    assert_eq!(config.timestep_spacing, "leading");
    assert_eq!(config.steps_offset, 1);
    assert!(!config.set_alpha_to_one);

    // Stable Diffusion 1.5's own config says `clip_sample: false`.
    let no_clip = SchedulerConfig {
        clip_sample: false,
        ..config.clone()
    };
    check_run(&sd, &r, "ddim", &no_clip, 1e-5);

    // The folder's config as diffusers' `DDIMScheduler.from_config` reads it: no
    // `clip_sample` key, so both default to clipping x̂0 to [-1, 1].
    assert_eq!(config.clip_range(), Some(1.0));
    check_run(&sd, &r, "ddim_clip", &config, 1e-3);
}
