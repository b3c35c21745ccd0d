//! Stable Diffusion parity with HF diffusers 0.42.1 + transformers 5.24 on two tiny random
//! pipelines, and the guided latent Boomerang run end to end.
//!
//! Fixtures: `tests/fixtures/sd/{sd1,sd2}` (diffusers-format folders) and
//! `tests/fixtures/sd/reference/*.safetensors`, written by `tools/make_sd_fixtures.py`, which
//! computes every reference from the SAVED folders reloaded by `StableDiffusionPipeline`.
//! - sd1: conv `proj_in`/`proj_out`, one head count for all blocks, ε-prediction, CLIP with
//!   `quick_gelu`, VAE stored with the legacy attention names, f32 files;
//! - sd2: `use_linear_projection`, per-block head counts (head sizes 8, 16 and 4),
//!   `upcast_attention`, v-prediction, CLIP with `gelu` and 3 layers, UNet and text encoder
//!   stored only as `.fp16.safetensors` (weights rounded to fp16 before the references were
//!   computed in f32, so the f32 model loaded from them is the reference model).
//!
//! Error measure: `max|a − b| / max|b|` over the whole tensor, `a` from Rust, `b` the Python
//! reference, both f32 on the CPU; tolerance 1e-4.

use std::path::{Path, PathBuf};

use boomerang::checkpoint::{load_state_dict, save_safetensors, StateDict, TensorData};
use boomerang::models::stable_diffusion::{LatentMode, SdOptions, StableDiffusion, TextPrompt, WeightsVariant};
use boomerang::sampler::StepCallback;
use boomerang::{
    Boomerang, Condition, Denoiser, Error, GridPoint, Guidance, NoiseStreams, Parameterization, Prediction, Sampler,
    Spacing, TimeSpec,
};
use ndarray::{Array, Array3, Array4, ArrayView4, Dimension, IxDyn, Zip};

const TOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd")
}

fn load(which: &str) -> StableDiffusion {
    StableDiffusion::load(fixtures().join(which), &SdOptions::default()).unwrap()
}

struct Ref(StateDict);

impl Ref {
    fn open(which: &str) -> Self {
        Ref(load_state_dict(fixtures().join("reference").join(format!("{which}.safetensors"))).unwrap())
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
    fn a3(&self, key: &str) -> Array3<f32> {
        self.arr(key).into_dimensionality().unwrap()
    }
    fn f64s(&self, key: &str) -> Vec<f64> {
        let t = self.get(key);
        t.data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn i64s(&self, key: &str) -> Vec<i64> {
        let t = self.get(key);
        t.data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
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

fn assert_close<D: Dimension>(what: &str, a: &Array<f32, D>, b: &Array<f32, D>) {
    let e = rel_err(a, b);
    eprintln!("{what}: relative error {e:.2e}");
    assert!(e <= TOL, "{what}: relative error {e:e} > {TOL:e}");
}

fn check_text_encoder(which: &str) {
    let r = Ref::open(which);
    let ids = r.i64s("tokenizer.ids");
    let shape = &r.get("tokenizer.ids").shape;
    let ids = ndarray::Array2::from_shape_vec((shape[0], shape[1]), ids).unwrap();
    let want = r.a3("text.hidden");
    let n = want.dim().0;
    let sd = load(which);
    let got = sd.encode_tokens(ids.slice(ndarray::s![..n, ..])).unwrap();
    assert_close(&format!("{which} text encoder"), &got, &want);
    // diffusers' clip_skip = 1: the penultimate layer, then the final norm.
    let skip = StableDiffusion::load(
        fixtures().join(which),
        &SdOptions {
            clip_skip: 1,
            ..SdOptions::default()
        },
    )
    .unwrap();
    let got = skip.encode_tokens(ids.slice(ndarray::s![..n, ..])).unwrap();
    assert_close(
        &format!("{which} text encoder, clip_skip 1"),
        &got,
        &r.a3("text.hidden_skip1"),
    );
}

#[test]
fn sd1_text_encoder_matches_transformers() {
    check_text_encoder("sd1");
}

#[test]
fn sd2_text_encoder_matches_transformers() {
    check_text_encoder("sd2");
}

fn check_prompts(which: &str) {
    let r = Ref::open(which);
    let sd = load(which);
    let got = sd
        .encode_prompt(&["a photo of a cat", "a dog's life, highly detailed"])
        .unwrap();
    assert_close(&format!("{which} prompt embeddings"), &got, &r.a3("prompt.embeds"));
    let got = sd.encode_prompt(&["blurry", "blurry"]).unwrap();
    assert_close(
        &format!("{which} negative embeddings"),
        &got,
        &r.a3("prompt.negative_embeds"),
    );
    let got = sd.encode_prompt(&[""]).unwrap();
    assert_close(
        &format!("{which} empty-prompt embeddings"),
        &got,
        &r.a3("prompt.empty_embeds"),
    );
}

#[test]
fn sd1_prompt_embeddings_match_pipeline() {
    check_prompts("sd1");
}

#[test]
fn sd2_prompt_embeddings_match_pipeline() {
    check_prompts("sd2");
}

fn check_unet(which: &str, parameterization: Parameterization) {
    let r = Ref::open(which);
    let sd = load(which);
    assert_eq!(sd.spec().parameterization, parameterization);
    let x = r.a4("unet.x");
    let ctx = Condition::Text(r.a3("unet.context"));
    for (k, t) in r.f64s("unet.times").into_iter().enumerate() {
        let got = sd.predict(x.view(), &[t], &ctx).unwrap();
        assert_close(
            &format!("{which} UNet at t = {t}"),
            &got,
            &r.a4(&format!("unet.out.{k}")),
        );
    }
    // Odd latent sizes take diffusers' `upsample_size` path.
    let x = r.a4("unet.x_odd");
    let one = Condition::Text(r.a3("unet.context").slice(ndarray::s![..1, .., ..]).to_owned());
    let got = sd.predict(x.view(), &[250.0], &one).unwrap();
    assert_close(&format!("{which} UNet, odd latent size"), &got, &r.a4("unet.out_odd"));
}

#[test]
fn sd1_unet_matches_diffusers() {
    check_unet("sd1", Parameterization::Epsilon);
}

#[test]
fn sd2_unet_matches_diffusers() {
    check_unet("sd2", Parameterization::VPrediction);
}

fn check_vae(which: &str) {
    let r = Ref::open(which);
    let sd = load(which);
    let image = r.a4("vae.image");
    let post = sd.encode_posterior(image.view()).unwrap();
    assert_close(&format!("{which} VAE posterior mean"), &post.mean, &r.a4("vae.mean"));
    assert_close(&format!("{which} VAE posterior std"), &post.std, &r.a4("vae.std"));
    let sf = r.f64s("vae.scaling_factor")[0];
    assert_eq!(sd.latent_scaling(), (sf, 0.0));
    let z = r.a4("vae.latents");
    let scaled = z.mapv(|v| v * sf as f32);
    let got = sd.decode(scaled.view()).unwrap();
    assert_close(&format!("{which} VAE decoder"), &got, &r.a4("vae.decoded"));
    // The scaled mode is what encode_image returns.
    let lat = sd.encode_image(image.view(), LatentMode::Mode, None).unwrap();
    assert_close(
        &format!("{which} scaled latents"),
        &lat,
        &r.a4("vae.mean").mapv(|v| v * sf as f32),
    );
}

#[test]
fn sd1_vae_with_legacy_names_matches_diffusers() {
    // The fixture really uses the legacy names.
    let sd = load_state_dict(fixtures().join("sd1/vae/diffusion_pytorch_model.safetensors")).unwrap();
    assert!(sd
        .keys()
        .any(|k| k.ends_with("mid_block.attentions.0.proj_attn.weight")));
    assert!(!sd.keys().any(|k| k.contains(".to_q.")));
    check_vae("sd1");
}

#[test]
fn sd2_vae_matches_diffusers() {
    check_vae("sd2");
}

/// The reverse run the core performs, spelt out: classifier-free guidance on the raw outputs,
/// conversion to (x̂0, ε̂) at each grid level, the sampler's steps. Used to run from a GIVEN
/// x_t (the core draws its own forward noise).
#[allow(clippy::too_many_arguments)]
fn reverse_from(
    sd: &StableDiffusion,
    x_t: Array4<f32>,
    grid: &[GridPoint],
    cond: &Condition,
    uncond: &Condition,
    scale: f32,
    sampler: Sampler,
    callback: Option<StepCallback<'_>>,
) -> Array4<f32> {
    let p = sd.spec().parameterization;
    let mut model = |x: ArrayView4<'_, f32>, g: &GridPoint| -> boomerang::Result<Prediction> {
        let c = sd.predict(x, &[g.time], cond)?;
        let u = sd.predict(x, &[g.time], uncond)?;
        let mut out = c;
        Zip::from(&mut out).and(&u).for_each(|c, &u| *c = u + scale * (*c - u));
        let mut x0 = Array4::<f32>::zeros(out.raw_dim());
        let mut eps = Array4::<f32>::zeros(out.raw_dim());
        let l = g.level;
        Zip::from(&mut x0)
            .and(&mut eps)
            .and(&x)
            .and(&out)
            .for_each(|x0, eps, &x, &o| {
                let (x, o) = (x as f64, o as f64);
                let (a, b) = match p {
                    Parameterization::Epsilon => (l.x0_from_eps(x, o), o),
                    Parameterization::VPrediction => (l.x0_from_v(x, o), l.eps_from_v(x, o)),
                    _ => unreachable!(),
                };
                *x0 = a as f32;
                *eps = b as f32;
            });
        Ok(Prediction {
            x0,
            eps,
            variance_frac: None,
        })
    };
    let mut noise = NoiseStreams::keyed(0, &vec![0; x_t.dim().0]);
    sampler
        .run(&mut model, x_t, grid, &mut noise, callback)
        .unwrap()
        .prev_sample
}

fn check_boomerang(which: &str) {
    let r = Ref::open(which);
    let sd = load(which);
    let params = r.f64s("run.params");
    let (t_start, n_steps, g) = (params[0] as usize, params[1] as usize, params[2]);
    let image = r.a4("run.image");
    let cond = Condition::Text(
        sd.encode_prompt(&["a photo of a cat", "a dog's life, highly detailed"])
            .unwrap(),
    );
    let uncond = Condition::Text(sd.encode_prompt(&["blurry"]).unwrap());
    let runner = Boomerang::builder(&sd, sd.schedule())
        .sampler(Sampler::ddim(0.0))
        .spacing(Spacing::Uniform(n_steps))
        .condition(cond.clone())
        .guidance(Guidance::classifier_free(g, uncond.clone()))
        .build()
        .unwrap();

    // 1. The crate's grid is the one the reference walked.
    let grid = runner.plan(TimeSpec::Step(t_start)).unwrap();
    let steps: Vec<i64> = grid.iter().map(|p| p.time as i64).collect();
    assert_eq!(steps, r.i64s("run.grid"));
    assert!(grid.iter().all(|p| p.time.fract() == 0.0));

    // 2. Forward noise exactly at t, from the reference's fixed z.
    let z0 = sd.encode_image(image.view(), LatentMode::Mode, None).unwrap();
    let z = r.a4("run.noise");
    let level = grid[0].level;
    let (a, s) = (level.alpha as f32, level.sigma as f32);
    let mut x_t = z0.clone();
    Zip::from(&mut x_t).and(&z).for_each(|x, &z| *x = a * *x + s * z);
    assert_close(&format!("{which} x_t"), &x_t, &r.a4("run.x_t"));

    // 3. The guided reverse run and the decoded images.
    let uncond2 = Condition::Text(sd.encode_prompt(&["blurry", "blurry"]).unwrap());
    let mut calls = 0usize;
    let mut cb = |_: &boomerang::StepInfo<'_>| calls += 1;
    let latents = reverse_from(
        &sd,
        x_t,
        &grid,
        &cond,
        &uncond2,
        g as f32,
        Sampler::ddim(0.0),
        Some(&mut cb),
    );
    assert_eq!(calls, grid.len());
    assert_close(&format!("{which} Boomerang latents"), &latents, &r.a4("run.latents"));
    let images = sd.decode(latents.view()).unwrap();
    assert_close(&format!("{which} Boomerang images"), &images, &r.a4("run.decoded"));

    // 4. The core's own runner (its own forward noise) does exactly this reverse run.
    let mut noise = NoiseStreams::keyed(7, &[0, 1]);
    let out = runner
        .run_with(z0.view(), TimeSpec::Step(t_start), &mut noise, None)
        .unwrap();
    assert_eq!(out.steps, grid.len());
    let again = reverse_from(
        &sd,
        out.x_t.clone(),
        &grid,
        &cond,
        &uncond2,
        g as f32,
        Sampler::ddim(0.0),
        None,
    );
    // The runner evaluates [cond; uncond] as ONE batch of 2n where the spelt-out run makes two
    // calls of n: libtorch blocks its convolutions by batch size, so the two differ by f32
    // reassociation only (measured 4.3e-6 for sd1, 8.6e-6 for sd2 over the whole run).
    let e = rel_err(&out.sample, &again);
    assert!(
        e <= 2e-5,
        "{which}: the core's run differs from the spelt-out run by {e:e}"
    );

    // 5. The same runner with the VAE as its codec is the whole pipeline: image -> latent ->
    //    core -> decode.
    let prompt = TextPrompt {
        prompts: vec!["a photo of a cat".into(), "a dog's life, highly detailed".into()],
        negative_prompts: vec!["blurry".into()],
        guidance_scale: g,
    };
    let images_runner = StableDiffusion::boomerang(&sd, &prompt, LatentMode::Mode)
        .unwrap()
        .spacing(Spacing::Uniform(n_steps))
        .build()
        .unwrap();
    let mut noise = NoiseStreams::keyed(7, &[0, 1]);
    let conv = images_runner
        .run_with(image.view(), TimeSpec::Step(t_start), &mut noise, None)
        .unwrap();
    assert_eq!(conv.x_t, out.x_t);
    assert_eq!(conv.encoded.as_ref(), Some(&z0));
    assert!(rel_err(&conv.model_sample, &out.sample) <= 1e-6);
    let decoded = sd.decode(out.sample.view()).unwrap();
    assert!(rel_err(&conv.sample, &decoded) <= 1e-6);
}

#[test]
fn sd1_guided_boomerang_matches_reference() {
    check_boomerang("sd1");
}

#[test]
fn sd2_guided_boomerang_matches_reference() {
    check_boomerang("sd2");
}

#[test]
fn boomerang_images_is_per_item_deterministic() {
    let sd = load("sd1");
    let r = Ref::open("sd1");
    let images = r.a4("run.image");
    let runner = StableDiffusion::boomerang(&sd, &TextPrompt::new("a photo of a cat"), LatentMode::Sample)
        .unwrap()
        .sampler(Sampler::ddim(0.5))
        .spacing(Spacing::Uniform(10))
        .build()
        .unwrap();
    let t = TimeSpec::fraction(0.3);
    let both = runner
        .run_with(images.view(), t, &mut NoiseStreams::keyed(3, &[10, 11]), None)
        .unwrap();
    let again = runner
        .run_with(images.view(), t, &mut NoiseStreams::keyed(3, &[10, 11]), None)
        .unwrap();
    assert_eq!(both.sample, again.sample);
    let second = images.slice(ndarray::s![1..2, .., .., ..]);
    let alone = runner
        .run_with(second, t, &mut NoiseStreams::keyed(3, &[11]), None)
        .unwrap();
    let from_batch = both.sample.slice(ndarray::s![1..2, .., .., ..]).to_owned();
    let e = rel_err(&alone.sample, &from_batch);
    assert!(e <= 1e-5, "item 1 alone vs in a batch: {e:e}");
    assert_eq!(both.sample.dim(), images.dim());
    // The forward noise is added exactly at t: x_t = α_t·z0 + σ_t·z.
    let start = sd.schedule().alpha_bar(both.start.time as usize).unwrap();
    assert!((both.start.level.alpha_bar() - start).abs() < 1e-12);
}

#[test]
fn weight_variants_are_chosen_and_missing_ones_named() {
    // sd2 has only `.fp16` files for the UNet and the text encoder.
    let err = StableDiffusion::load(
        fixtures().join("sd2"),
        &SdOptions {
            weights: WeightsVariant::Full,
            ..SdOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    StableDiffusion::load(
        fixtures().join("sd2"),
        &SdOptions {
            weights: WeightsVariant::Fp16,
            ..SdOptions::default()
        },
    )
    .map(|_| ())
    .expect_err("sd2's VAE has no fp16 file");
}

/// A scratch copy of a fixture folder.
fn scratch_copy(which: &str, tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("boomerang-sd-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    fn copy(src: &Path, dst: &Path) {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            let to = dst.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), to).unwrap();
            }
        }
    }
    copy(&fixtures().join(which), &dst);
    dst
}

#[test]
fn broken_folders_give_errors_that_name_the_problem() {
    // A missing tensor.
    let dir = scratch_copy("sd1", "missing-key");
    let file = dir.join("unet/diffusion_pytorch_model.safetensors");
    let mut sd = load_state_dict(&file).unwrap();
    sd.remove("mid_block.attentions.0.proj_in.weight").unwrap();
    std::fs::remove_file(&file).unwrap();
    save_safetensors(&sd, &file).unwrap();
    let err = StableDiffusion::load(&dir, &SdOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    assert!(
        err.to_string().contains("mid_block.attentions.0.proj_in.weight"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // An unsupported setting.
    let dir = scratch_copy("sd1", "bad-config");
    let cfg = dir.join("unet/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "\"addition_embed_type\": null",
            "\"addition_embed_type\": \"text_time\"",
        ),
    )
    .unwrap();
    let err = StableDiffusion::load(&dir, &SdOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("addition_embed_type"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A missing component.
    let dir = scratch_copy("sd1", "no-vae");
    std::fs::remove_dir_all(dir.join("vae")).unwrap();
    let err = StableDiffusion::load(&dir, &SdOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("vae"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let sd = load("sd1");
    // Image sides must be multiples of the VAE factor (2 for this tiny VAE, 8 for SD).
    assert_eq!(sd.latent_factor(), 2);
    let odd = Array4::<f32>::zeros((1, 3, 15, 16));
    let err = sd.encode_posterior(odd.view()).unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("multiples of 2"),
        "{err}"
    );
    let runner = StableDiffusion::boomerang(&sd, &TextPrompt::new("x"), LatentMode::Mode)
        .unwrap()
        .build()
        .unwrap();
    let err = runner
        .run_with(
            odd.view(),
            TimeSpec::fraction(0.5),
            &mut NoiseStreams::keyed(0, &[0]),
            None,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
    // The UNet needs text embeddings of the right width.
    let x = Array4::<f32>::zeros((1, 4, 8, 8));
    assert!(sd.predict(x.view(), &[10.0], &Condition::None).is_err());
    let wrong = Condition::Text(Array3::zeros((1, 77, 7)));
    assert!(matches!(sd.predict(x.view(), &[10.0], &wrong), Err(Error::Shape(_))));
    assert!(sd.predict(x.view(), &[10.0], &Condition::Class(vec![1])).is_err());
    // Wrong channel counts, NaN, empty prompts, bad token ids.
    assert!(sd.decode(Array4::<f32>::zeros((1, 3, 8, 8)).view()).is_err());
    let mut nan = Array4::<f32>::zeros((1, 3, 16, 16));
    nan[[0, 0, 0, 0]] = f32::NAN;
    assert!(sd.encode_posterior(nan.view()).is_err());
    assert!(sd.encode_prompt(&[]).is_err());
    let bad_ids = ndarray::Array2::<i64>::from_elem((1, 77), 100_000);
    assert!(sd.encode_tokens(bad_ids.view()).is_err());
    // Sampling the posterior needs noise; noise streams must match the batch.
    let img = Array4::<f32>::zeros((2, 3, 16, 16));
    assert!(sd.encode_image(img.view(), LatentMode::Sample, None).is_err());
    assert!(sd
        .encode_image(img.view(), LatentMode::Sample, Some(&mut NoiseStreams::keyed(0, &[0])))
        .is_err());
    // Prompt counts must be one or one per image.
    let mut p = TextPrompt::new("a");
    p.prompts = vec!["a".into(), "b".into(), "c".into()];
    let three = StableDiffusion::boomerang(&sd, &p, LatentMode::Mode)
        .unwrap()
        .build()
        .unwrap();
    assert!(three
        .run_with(
            img.view(),
            TimeSpec::fraction(0.5),
            &mut NoiseStreams::keyed(0, &[0, 1]),
            None
        )
        .is_err());
    // t = 0 is refused by the core.
    let one = StableDiffusion::boomerang(&sd, &TextPrompt::new("a"), LatentMode::Mode)
        .unwrap()
        .build()
        .unwrap();
    assert!(one
        .run_with(
            img.view(),
            TimeSpec::Step(0),
            &mut NoiseStreams::keyed(0, &[0, 1]),
            None
        )
        .is_err());
    // clip_skip beyond the encoder's depth.
    assert!(StableDiffusion::load(
        fixtures().join("sd1"),
        &SdOptions {
            clip_skip: 5,
            ..SdOptions::default()
        }
    )
    .is_err());
}

/// f16 and bf16 run the same code paths as on a GPU (casts of the time embedding and text,
/// SD2's upcast attention, the VAE kept in f32 by `force_upcast`); on the CPU they are only
/// checked to stay close to the f32 reference (bf16 keeps 8 bits of mantissa).
#[test]
fn reduced_precision_stays_close_to_f32() {
    use boomerang::models::Kind;
    let r = Ref::open("sd2");
    for (kind, tol) in [(Kind::BFloat16, 0.1f32), (Kind::Half, 0.02)] {
        let opts = SdOptions {
            kind,
            ..SdOptions::default()
        };
        let sd = StableDiffusion::load(fixtures().join("sd2"), &opts).unwrap();
        assert_eq!(sd.vae().kind(), Kind::Float, "force_upcast keeps the VAE in f32");
        let x = r.a4("unet.x");
        let ctx = Condition::Text(r.a3("unet.context"));
        let got = sd.predict(x.view(), &[500.5], &ctx).unwrap();
        let e = rel_err(&got, &r.a4("unet.out.2"));
        eprintln!("{kind:?} UNet: relative error {e:.2e}");
        assert!(e < tol, "{kind:?}: {e}");
        let emb = sd
            .encode_prompt(&["a photo of a cat", "a dog's life, highly detailed"])
            .unwrap();
        let e = rel_err(&emb, &r.a3("prompt.embeds"));
        eprintln!("{kind:?} text encoder: relative error {e:.2e}");
        assert!(e < tol, "{kind:?}: {e}");
    }
}
