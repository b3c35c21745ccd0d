//! Patched Diffusion: configurations, respacing, key recognition, Boomerang end to end with
//! an SNR split of two tiny models (guidance + dynamic thresholding), and bad input.

use std::path::{Path, PathBuf};

use boomerang::checkpoint::load_state_dict;
use boomerang::models::patched::{
    self, load_split, matches_keys, respaced_steps, ConfigSource, PatchedConfig, PatchedOptions, PatchedSplit,
    SamplingDefaults,
};
use boomerang::models::{Device, Kind};
use boomerang::schedule::DiscreteSchedule;
use boomerang::{
    Boomerang, Clip, Condition, DataRange, Denoiser, DenoiserSpec, Error, GridPoint, Guidance, NoiseSchedule,
    Parameterization, Quantile, RawPrediction, Sampler, Spacing, TimeInput, TimeSpec, Variance,
};
use ndarray::{Array4, ArrayView4};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn single_thread() {
    tch::set_num_threads(1);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/patched")
        .join(name)
}

fn read_keys(path: &Path) -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, shape) = l.split_once(' ').unwrap();
            let dims = shape
                .trim()
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .filter(|d| !d.trim().is_empty())
                .map(|d| d.trim().parse().unwrap())
                .collect();
            (k.to_string(), dims)
        })
        .collect()
}

#[test]
fn patched_presets_have_the_released_skeletons() {
    // reference/patchdiff_keys.txt (read off the original code): (tensors, parameters).
    let cases = [
        (PatchedConfig::imagenet256(), 451, 202.15e6),
        (PatchedConfig::ffhq1024(), 394, 162.65e6),
        (PatchedConfig::lsun256_p2(), 344, 122.92e6),
        (PatchedConfig::lsun256_p4(), 294, 121.42e6),
        (PatchedConfig::lsun256_p8(), 322, 121.01e6),
    ];
    for (cfg, tensors, params) in cases {
        cfg.validate().unwrap();
        assert_eq!(cfg.parameter_shapes().unwrap().len(), tensors, "{cfg:?}");
        let n = cfg.num_parameters().unwrap() as f64;
        assert!((n - params).abs() < 0.005e6, "{n} vs {params}");
    }
    // ImageNet: every key and shape, in the original's state_dict() order.
    let want = read_keys(&fixture("imagenet256_keys.txt"));
    assert_eq!(PatchedConfig::imagenet256().parameter_shapes().unwrap(), want);
    for name in PatchedConfig::PRESETS {
        PatchedConfig::preset(name).unwrap();
    }
    assert!(PatchedConfig::preset("cifar10").is_err());
}

#[test]
fn patched_network_declares_exactly_the_skeleton() {
    single_thread();
    for name in ["p2", "pair", "unc"] {
        let cfg = PatchedConfig::from_json(&std::fs::read_to_string(fixture(&format!("{name}/config.json"))).unwrap())
            .unwrap();
        let net = patched::PatchedUNet::zeros(cfg.clone(), Device::Cpu, Kind::Float).unwrap();
        let mut got: Vec<(String, Vec<usize>)> = net
            .var_store()
            .variables()
            .into_iter()
            .map(|(k, t)| (k, t.size().iter().map(|&d| d as usize).collect()))
            .collect();
        got.sort();
        let mut want = cfg.parameter_shapes().unwrap();
        want.sort();
        assert_eq!(got, want, "{name}");
        assert_eq!(net.num_parameters() as u64, cfg.num_parameters().unwrap());
    }
}

#[test]
fn patched_config_reads_the_original_kwargs_and_its_own_form() {
    let text = r#"{"snr_splits": "0.25", "channel_mult": "1,2,2,2", "class_cond": "True",
        "patch_size": 4, "image_size": 256, "learn_sigma": true, "noise_schedule": "linear",
        "num_channels": 256, "num_head_channels": 64, "num_res_blocks": 3, "use_fp16": true,
        "use_scale_shift_norm": true, "use_new_attention_order": true, "timestep_respacing": "250",
        "model_path": "ignored.pt", "batch_size": 4}"#;
    assert_eq!(PatchedConfig::from_json(text).unwrap(), PatchedConfig::imagenet256());
    for cfg in [PatchedConfig::ffhq1024(), PatchedConfig::lsun256_p8()] {
        assert_eq!(PatchedConfig::from_json(&cfg.to_json().unwrap()).unwrap(), cfg);
    }
    // linear0.025 (FFHQ): betas from 1e-4 to 0.025.
    let betas = PatchedConfig::ffhq1024().betas().unwrap();
    assert!((betas[999] - 0.025).abs() < 1e-15 && (betas[0] - 1e-4).abs() < 1e-18);
    assert_eq!(PatchedConfig::lsun256_p8().level_channels(1), 384);
    assert_eq!(PatchedConfig::imagenet256().time_embed_dim(), 512);
    // An empty channel_mult takes create_model's default for the post-patch resolution.
    let c = PatchedConfig::from_json(r#"{"image_size": 256, "patch_size": 4, "channel_mult": ""}"#).unwrap();
    assert_eq!(c.channel_mult, vec![1.0, 2.0, 3.0, 4.0]);
    // ImageNet's defaults: learned variance, 250 of 1000 steps, guidance 1.5 vs label 1000,
    // dynamic thresholding at 0.995.
    let d = SamplingDefaults::of(&PatchedConfig::imagenet256()).unwrap();
    assert_eq!(
        d.sampler,
        Sampler::Ddpm {
            variance: Variance::Learned
        }
    );
    assert_eq!(d.steps.len(), 250);
    assert_eq!(
        d.clip,
        Clip::Dynamic {
            quantile: 0.995,
            interpolation: Quantile::Nearest
        }
    );
    match d.guidance {
        Some(Guidance::ClassifierFree { scale, unconditional }) => {
            assert_eq!(scale, 1.5);
            assert_eq!(unconditional, Condition::Class(vec![1000]));
        }
        other => panic!("{other:?}"),
    }
    let d = SamplingDefaults::of(&PatchedConfig::lsun256_p2()).unwrap();
    assert_eq!((d.clip, d.guidance.is_none()), (Clip::Range, true));
}

#[test]
fn patched_bad_configs_are_refused_naming_the_field() {
    let field = |c: PatchedConfig| match c.validate() {
        Err(Error::InvalidParameter { name, reason }) => {
            assert!(!reason.is_empty());
            name
        }
        other => panic!("expected an InvalidParameter error, got {other:?}"),
    };
    let with = |f: &dyn Fn(&mut PatchedConfig)| {
        let mut c = PatchedConfig::lsun256_p4();
        f(&mut c);
        c
    };
    assert_eq!(field(with(&|c| c.patch_size = 3)), "patch_size");
    assert_eq!(field(with(&|c| c.patch_size = 0)), "patch_size");
    // 60000 channels on four levels: about 2e11 parameters, refused before allocating.
    assert_eq!(
        field(with(&|c| {
            c.model_channels = 60_000;
            c.channel_mult = vec![1.0; 4];
            c.num_head_channels = None;
        })),
        "PatchedConfig"
    );
    assert_eq!(field(with(&|c| c.num_res_blocks = usize::MAX)), "num_res_blocks");
    assert_eq!(field(with(&|c| c.image_size = usize::MAX)), "image_size");
    assert_eq!(field(with(&|c| c.channel_mult = vec![1.0, 2.0, 1.0])), "channel_mult");
    assert_eq!(field(with(&|c| c.channel_mult = vec![2.0, 2.0])), "channel_mult");
    assert_eq!(field(with(&|c| c.channel_mult = vec![1.0; 8])), "channel_mult");
    assert_eq!(field(with(&|c| c.num_head_channels = Some(48))), "num_head_channels");
    assert_eq!(field(with(&|c| c.norm_groups = 24)), "norm_groups");
    assert_eq!(field(with(&|c| c.use_scale_shift_norm = false)), "use_scale_shift_norm");
    assert_eq!(field(with(&|c| c.resblock_updown = true)), "resblock_updown");
    assert_eq!(
        field(with(&|c| c.noise_schedule = "quadratic".into())),
        "noise_schedule"
    );
    assert_eq!(field(with(&|c| c.noise_schedule = "linear2".into())), "noise_schedule");
    assert_eq!(
        field(with(&|c| c.timestep_respacing = "2000".into())),
        "timestep_respacing"
    );
    assert_eq!(field(with(&|c| c.snr_splits = vec![0.1, 0.5])), "snr_splits");
    // The original kwargs: the error names the key.
    let err = PatchedConfig::from_json(r#"{"image_size": 250, "patch_size": 4, "channel_mult": "1,2"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("patch_size") && err.contains("250"), "{err}");
    let err = PatchedConfig::from_json(r#"{"num_channels": "many"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("num_channels"), "{err}");
    assert!(PatchedConfig::from_json("[1, 2]").is_err());
}

#[test]
fn patched_respacing_reproduces_space_timesteps() {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("steps.json")).unwrap()).unwrap();
    for case in v.as_array().unwrap() {
        let t = case["num_train"].as_u64().unwrap() as usize;
        let spec = case["spec"].as_str().unwrap();
        let want: Vec<usize> = case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(respaced_steps(t, spec).unwrap(), want, "{t} {spec:?}");
    }
    assert!(respaced_steps(10, "11").is_err());
    assert!(respaced_steps(10, "a").is_err());
    assert!(respaced_steps(10, "-3").is_err());
    assert!(respaced_steps(1000, "ddim999").is_err());
}

#[test]
fn patched_uniform_spacing_versus_the_respaced_grid() {
    // Until the grid takes an explicit step list: Spacing::Uniform(250) from the last step
    // IS the original's respaced grid (250 of 1000); from other starts it re-spreads the
    // steps below t and in general differs (here from 502, the respaced step 125).
    let schedule: NoiseSchedule = DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap().into();
    let steps = respaced_steps(1000, "250").unwrap();
    let grid = |t: usize| -> Vec<usize> {
        let start = schedule.start(TimeSpec::step(t)).unwrap();
        Spacing::Uniform(250)
            .grid(&schedule, start)
            .unwrap()
            .iter()
            .map(|p: &GridPoint| p.time as usize)
            .collect()
    };
    let mut full: Vec<usize> = steps.clone();
    full.reverse();
    assert_eq!(grid(999), full);
    let below: Vec<usize> = steps.iter().rev().copied().filter(|&s| s <= 502).collect();
    assert_ne!(grid(502), below);
    let agree = (1..steps.len())
        .filter(|&k| grid(steps[k])[..2] == [steps[k], steps[k - 1]])
        .count();
    eprintln!("patched: Uniform(250)'s first step is the respaced one for {agree} of 249 starts");
    assert!(agree > 240);
}

#[test]
fn patched_matches_keys_recognises_the_family_only() {
    let imagenet: Vec<String> = read_keys(&fixture("imagenet256_keys.txt"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let refs: Vec<&str> = imagenet.iter().map(String::as_str).collect();
    assert!(matches_keys(&refs));
    let prefixed: Vec<String> = imagenet.iter().map(|k| format!("module.{k}")).collect();
    assert!(matches_keys(&prefixed.iter().map(String::as_str).collect::<Vec<_>>()));
    for name in [
        "p2/model.safetensors",
        "pair/model_1.safetensors",
        "unc/model.safetensors",
    ] {
        let sd = load_state_dict(fixture(name)).unwrap();
        assert!(matches_keys(&sd.keys().collect::<Vec<_>>()), "{name}");
    }
    // guided-diffusion's ADM UNet has the same block names with emb_layers.1/out_layers.3.
    let adm: Vec<String> = imagenet
        .iter()
        .map(|k| {
            k.replace("emb_layers.", "emb_layers.1.")
                .replace("out_layers.2", "out_layers.3")
        })
        .collect();
    assert!(!matches_keys(&adm.iter().map(String::as_str).collect::<Vec<_>>()));
    // The DDPM UNet (CIFAR-10 key list and the tiny3 fixture).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ddpm");
    let cifar: Vec<String> = read_keys(&root.join("cifar10_keys.txt"))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(!matches_keys(&cifar.iter().map(String::as_str).collect::<Vec<_>>()));
    let tiny3 = load_state_dict(root.join("tiny3.safetensors")).unwrap();
    assert!(!matches_keys(&tiny3.keys().collect::<Vec<_>>()));
    assert!(!matches_keys(&["sigmas", "all_modules.0.W", "all_modules.1.weight"]));
    assert!(!matches_keys(&[]));
}

fn pair_runner() -> Boomerang<Box<dyn Denoiser + Send>> {
    let model = patched::load(fixture("pair"), &PatchedOptions::default()).unwrap();
    let d = model.defaults;
    Boomerang::builder(model.denoiser, model.schedule)
        .sampler(d.sampler)
        .spacing(Spacing::Uniform(d.steps.len()))
        .clip(Clip::Dynamic {
            quantile: 0.995,
            interpolation: Quantile::Nearest,
        })
        .condition(Condition::Class(vec![4]))
        .guidance(Guidance::classifier_free(1.5, Condition::Class(vec![10])))
        .build()
        .unwrap()
}

/// One image: guided batches of several items hit a core bug (see the parity tests).
fn image() -> Array4<f32> {
    Array4::from_shape_fn((1, 3, 16, 16), |(n, c, h, w)| {
        (0.3 * n as f32 + 0.7 * c as f32 + 0.4 * h as f32 - 0.25 * w as f32).sin() * 0.8
    })
}

#[test]
fn patched_boomerang_with_a_split_guidance_and_thresholding_is_reproducible_and_in_range() {
    single_thread();
    let runner = pair_runner();
    let x0 = image();
    // t = 0.5 starts in model 1's range and ends in model 0's.
    for t in [TimeSpec::step(8), TimeSpec::fraction(0.5)] {
        let run = |seed: u64| runner.run(x0.view(), t, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        let (a, b, c) = (run(3), run(3), run(4));
        assert_eq!(a, b, "{t:?}: same seed, different bytes");
        assert_ne!(a, c, "{t:?}: another seed gives the same sample");
        // The last step returns the thresholded x̂0 (|x̂0| ≤ 1 after dividing by s ≥ 1).
        assert!(a.iter().all(|v| v.is_finite() && (-1.0..=1.0).contains(v)), "{t:?}");
        assert!(a.iter().any(|v| v.abs() > 0.05), "{t:?}: a degenerate sample");
    }
}

/// An exact Patched-style stand-in for Gaussian data `N(μ, s²)` per pixel: it predicts
/// `E[x0 | x_t]` (x0-parameterization, integer steps, learned variance) and the fraction
/// `f = 0` (β̃, the posterior variance given x0).
struct GaussianX0 {
    spec: DenoiserSpec,
    alphas_cumprod: Vec<f64>,
    mu: f64,
    s2: f64,
}

impl Denoiser for GaussianX0 {
    fn spec(&self) -> &DenoiserSpec {
        &self.spec
    }
    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], _c: &Condition) -> boomerang::Result<Array4<f32>> {
        let a = self.alphas_cumprod[times[0] as usize];
        let d = 1.0 - a + a * self.s2;
        Ok(x.mapv(|v| (self.mu + a.sqrt() * self.s2 * (v as f64 - a.sqrt() * self.mu) / d) as f32))
    }
    fn predict_variance(&self, x: ArrayView4<'_, f32>, t: &[f64], c: &Condition) -> boomerang::Result<RawPrediction> {
        let output = self.predict(x, t, c)?;
        Ok(RawPrediction {
            variance_frac: Some(Array4::zeros(output.raw_dim())),
            output,
        })
    }
}

#[test]
fn patched_boomerang_distance_to_the_input_grows_with_t() {
    // With the exact x0-denoiser of Gaussian data and the family's sampler (ancestral,
    // learned variance, 250 respaced steps), E‖x̂ − x0‖² per pixel is, for the exact reverse
    // process, ((1−a)/D)²·(x0 − μ)² + s²(1−a)(1−a+2as²)/D² with D = 1−a+as² (design.md §3),
    // increasing as ᾱ = a falls. The steps below are chosen so that consecutive exact values
    // grow by ≥ 75%, far beyond the Monte-Carlo error of 16 items × 3×16×16 independent
    // pixels (about 1.3% of each mean), so each measured distance must exceed the previous
    // one by 20%. The sampler is not the exact process (a few coarse steps at small t: 3 grid
    // points from t = 10; β̃ as the variance), which biases the measured values low, by up to
    // about 40%: they must lie within a factor 2 of the exact process.
    let schedule = PatchedConfig::imagenet256().schedule().unwrap();
    let (mu, s2) = (0.1f64, 0.09f64);
    let mut spec = DenoiserSpec::new(Parameterization::Sample, TimeInput::Step, DataRange::MinusOneToOne);
    spec.learned_variance = true;
    let d = GaussianX0 {
        spec,
        alphas_cumprod: schedule.alphas_cumprod().to_vec(),
        mu,
        s2,
    };
    let runner = Boomerang::builder(d, schedule.clone())
        .sampler(Sampler::Ddpm {
            variance: Variance::Learned,
        })
        .spacing(Spacing::Uniform(250))
        .build()
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x0 = Array4::from_shape_fn((16, 3, 16, 16), |(n, c, h, w)| {
        (((n * 7 + c * 3 + h * 5 + w) % 11) as f32 / 10.0 - 0.5) * 0.6 + mu as f32
    });
    let mut last = 0.0;
    for t in [10usize, 30, 60, 120] {
        let out = runner.run(x0.view(), TimeSpec::step(t), &mut rng).unwrap();
        let dist = (&out - &x0).mapv(|v| (v as f64).powi(2)).mean().unwrap();
        let a = schedule.alpha_bar(t).unwrap();
        let dd = 1.0 - a + a * s2;
        let dev = x0.mapv(|v| (v as f64 - mu).powi(2)).mean().unwrap();
        let exact = ((1.0 - a) / dd).powi(2) * dev + s2 * (1.0 - a) * (1.0 - a + 2.0 * a * s2) / (dd * dd);
        eprintln!("patched: t = {t}: E|x̂ − x0|² = {dist:.5} (exact process: {exact:.5})");
        assert!(dist > 1.2 * last, "t = {t}: {dist} is not 20% above {last}");
        assert!(dist / exact > 0.5 && dist / exact < 2.0, "t = {t}: {dist} vs {exact}");
        last = dist;
    }
}

#[test]
fn patched_bad_input_gives_clear_errors() {
    single_thread();
    let ddpm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ddpm/tiny3.safetensors");
    // A checkpoint of another family names what it found.
    let err = patched::load(&ddpm, &PatchedOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("not a Patched Diffusion state dict") && msg.contains("DDPM"),
        "{msg}"
    );
    // Missing files and folders without weights.
    assert!(patched::load(fixture("nope.pt"), &PatchedOptions::default()).is_err());
    let err = patched::load(fixture("."), &PatchedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.<ext>"), "{err}");
    // Weights with a configuration they do not fit: the loader names the keys.
    let err = patched::load(
        fixture("unc"),
        &PatchedOptions {
            config: ConfigSource::Preset("lsun256_p4".into()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("mismatched") || err.contains("missing"), "{err}");
    // No config.json and no matching preset.
    let tmp = std::env::temp_dir().join(format!("boomerang-patched-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(fixture("unc/model.safetensors"), tmp.join("w.safetensors")).unwrap();
    let err = patched::load(tmp.join("w.safetensors"), &PatchedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("match no released configuration"), "{err}");
    // A config whose patch size does not divide the image.
    std::fs::write(
        tmp.join("config.json"),
        r#"{"image_size": 8, "patch_size": 3, "num_channels": 5, "channel_mult": "1.2,1.6"}"#,
    )
    .unwrap();
    let err = patched::load(tmp.join("w.safetensors"), &PatchedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("patch_size") && err.contains("divide"), "{err}");
    std::fs::remove_dir_all(&tmp).ok();
    // A split configuration with one file.
    let err = patched::load(fixture("pair/model_1.safetensors"), &PatchedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 models") && err.contains("load_split"), "{err}");

    // Labels: out of range, negative, missing, given to an unconditional model.
    let model = patched::load(fixture("p2"), &PatchedOptions::default()).unwrap();
    let x = Array4::<f32>::zeros((2, 3, 8, 8));
    for bad in [vec![3, 11], vec![-1, 0]] {
        let err = model
            .denoiser
            .predict(x.view(), &[10.0], &Condition::Class(bad))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { name: "class", .. }), "{err:?}");
        assert!(err.to_string().contains("null label 10"), "{err}");
    }
    assert!(model
        .denoiser
        .predict(x.view(), &[10.0], &Condition::Class(vec![10, 0]))
        .is_ok());
    let err = model.denoiser.predict(x.view(), &[10.0], &Condition::None).unwrap_err();
    assert!(err.to_string().contains("class-conditional"), "{err}");
    let unc = patched::load(fixture("unc"), &PatchedOptions::default()).unwrap();
    let err = unc
        .denoiser
        .predict(x.view(), &[10.0], &Condition::Class(vec![1, 2]))
        .unwrap_err();
    assert!(
        matches!(err, Error::Incompatible(_)) && err.to_string().contains("unconditional"),
        "{err}"
    );
    // Times: non-integer or out of the schedule.
    assert!(unc.denoiser.predict(x.view(), &[10.5], &Condition::None).is_err());
    assert!(unc.denoiser.predict(x.view(), &[1000.0], &Condition::None).is_err());
    // Wrong image size.
    let big = Array4::<f32>::zeros((1, 3, 16, 16));
    assert!(unc.denoiser.predict(big.view(), &[10.0], &Condition::None).is_err());

    // A split whose models disagree.
    let p2 = patched::PatchedDenoiser::new(
        patched::load_unet(
            fixture("p2/model.safetensors"),
            model.config.clone(),
            Device::Cpu,
            Kind::Float,
        )
        .unwrap(),
    );
    let mut pair_cfg =
        PatchedConfig::from_json(&std::fs::read_to_string(fixture("pair/config.json")).unwrap()).unwrap();
    pair_cfg.snr_splits.clear();
    let other = patched::PatchedDenoiser::new(
        patched::load_unet(fixture("pair/model_1.safetensors"), pair_cfg, Device::Cpu, Kind::Float).unwrap(),
    );
    let err = PatchedSplit::pair(p2, other, 0.25).unwrap_err().to_string();
    assert!(
        err.contains("differs") && err.contains("patch_size") && err.contains("model_channels"),
        "{err}"
    );
    // load_split with the wrong number of files.
    let err = load_split(&[fixture("pair/model_0.pt")], &PatchedOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 models"), "{err}");
}
