//! Parity of the tch DDPM UNet with independent PyTorch references, in every checkpoint
//! format it loads, and its error behaviour.
//!
//! Fixtures: `tests/fixtures/ddpm/`, written by `tools/make_ddpm_fixtures.py` (a direct
//! PyTorch transcription of FastDPM's `model.py`, checked there against diffusers'
//! `UNet2DModel` to 1e-6). Error measure: `max|a − b| / max|b|` over the whole output, `a`
//! from Rust, `b` the PyTorch reference, both f32 on the CPU; tolerance 1e-4.

use std::path::{Path, PathBuf};

use boomerang::checkpoint::{load_state_dict, StateDict, TensorData};
use boomerang::models::ddpm::{diffusers_to_original, DdpmUNet, DownsamplePadding, Naming};
use boomerang::models::{DdpmConfig, Device, Kind, TchDenoiser};
use boomerang::{Condition, Denoiser, Error};
use ndarray::{s, Array4};

const TOL: f32 = 1e-4;

/// One libtorch intra-op thread per test: the harness already runs tests in parallel, and
/// OpenMP threads spin-waiting for busy cores slow small networks down by 10-100×.
fn single_thread() {
    tch::set_num_threads(1);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ddpm")
        .join(name)
}

/// The `tiny3` fixture's architecture (GroupNorm(4) keeps it small).
fn tiny3() -> DdpmConfig {
    DdpmConfig {
        ch: 8,
        ch_mult: vec![1, 1, 2],
        num_res_blocks: 2,
        attn_resolutions: vec![16],
        dropout: 0.0,
        resolution: 16,
        norm_groups: 4,
        ..DdpmConfig::cifar10()
    }
}

fn to_array4(t: &TensorData) -> Array4<f32> {
    let s = &t.shape;
    Array4::from_shape_vec((s[0], s[1], s[2], s[3]), t.to_f32_vec().unwrap()).unwrap()
}

/// Inputs, times and reference outputs of a fixture network.
struct Io {
    x: Array4<f32>,
    times: Vec<f32>,
    eps: Vec<Array4<f32>>,
}

fn io(name: &str) -> Io {
    let sd = load_state_dict(fixture(&format!("{name}_io.safetensors"))).unwrap();
    let times = sd.get("times").unwrap().to_f32_vec().unwrap();
    let eps = (0..times.len())
        .map(|k| to_array4(sd.get(&format!("eps.{k}")).unwrap()))
        .collect();
    Io {
        x: to_array4(sd.get("x").unwrap()),
        times,
        eps,
    }
}

fn rel_err(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    let diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0f32, f32::max);
    diff / scale
}

/// Runs the denoiser at every fixture time and returns the worst relative error.
fn check(unet: DdpmUNet, name: &str, tol: f32) -> f32 {
    let io = io(name);
    let d = TchDenoiser::new(unet);
    let mut worst = 0.0f32;
    for (k, &t) in io.times.iter().enumerate() {
        let out = d.predict(io.x.view(), &[t as f64], &Condition::None).unwrap();
        let e = rel_err(&out, &io.eps[k]);
        assert!(e <= tol, "{name}: t = {t}: relative error {e:e} > {tol:e}");
        worst = worst.max(e);
    }
    worst
}

#[test]
fn original_safetensors_matches_reference() {
    single_thread();
    let unet = DdpmUNet::load_with_config(fixture("tiny3.safetensors"), tiny3(), Device::Cpu, Kind::Float).unwrap();
    let e = check(unet, "tiny3", TOL);
    eprintln!("tiny3.safetensors: max relative error {e:e}");
}

#[test]
fn pesser_ckpt_matches_reference() {
    single_thread();
    let unet = DdpmUNet::load_with_config(fixture("tiny3.ckpt"), tiny3(), Device::Cpu, Kind::Float).unwrap();
    check(unet, "tiny3", TOL);
}

#[test]
fn ddim_list_checkpoint_uses_the_ema_element() {
    single_thread();
    let unet = DdpmUNet::load_with_config(fixture("tiny3_ddim_list.ckpt"), tiny3(), Device::Cpu, Kind::Float).unwrap();
    check(unet, "tiny3", TOL);
}

#[test]
fn data_parallel_prefix_is_stripped() {
    single_thread();
    let unet = DdpmUNet::load_with_config(fixture("tiny3_module.pth"), tiny3(), Device::Cpu, Kind::Float).unwrap();
    check(unet, "tiny3", TOL);
}

#[test]
fn diffusers_folder_with_config_json() {
    single_thread();
    let unet = DdpmUNet::load(fixture("tiny3_diffusers"), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(
        unet.config(),
        &tiny3(),
        "config.json must give back the fixture's architecture"
    );
    let e = check(unet, "tiny3", TOL);
    eprintln!("tiny3_diffusers: max relative error {e:e}");
}

#[test]
fn diffusers_fp16_variant() {
    single_thread();
    // tiny2: two levels, attention at the second, fp16 weights on disk (HF "fp16" variant).
    let unet = DdpmUNet::load(fixture("tiny2_diffusers"), Device::Cpu, Kind::Float).unwrap();
    let cfg = unet.config().clone();
    assert_eq!(cfg.attn_resolutions, vec![8]);
    assert_eq!(cfg.downsample_padding, DownsamplePadding::Asymmetric);
    assert_eq!(cfg, DdpmConfig::tiny());
    let e = check(unet, "tiny2", TOL);
    eprintln!("tiny2_diffusers (fp16 weights): max relative error {e:e}");
}

#[test]
fn diffusers_weights_file_with_config_beside_it() {
    single_thread();
    let unet = DdpmUNet::load(
        fixture("tiny3_diffusers/diffusion_pytorch_model.safetensors"),
        Device::Cpu,
        Kind::Float,
    )
    .unwrap();
    check(unet, "tiny3", TOL);
}

/// Rename current diffusers attention names to the legacy ones of old HF checkpoints.
fn to_legacy_attention_names(sd: StateDict) -> StateDict {
    let mut out = StateDict::new();
    for (k, t) in sd.into_entries() {
        let k = k
            .replace(".to_q.", ".query.")
            .replace(".to_k.", ".key.")
            .replace(".to_v.", ".value.")
            .replace(".to_out.0.", ".proj_attn.");
        out.insert(k, t);
    }
    out
}

#[test]
fn diffusers_legacy_attention_names() {
    single_thread();
    let sd = load_state_dict(fixture("tiny3_diffusers/diffusion_pytorch_model.safetensors")).unwrap();
    let legacy = to_legacy_attention_names(sd);
    assert!(legacy.keys().any(|k| k.ends_with(".proj_attn.weight")));
    assert_eq!(Naming::detect(&legacy), Naming::Diffusers);
    let unet = DdpmUNet::from_state_dict(tiny3(), legacy, Device::Cpu, Kind::Float, Path::new("legacy")).unwrap();
    check(unet, "tiny3", TOL);
}

#[test]
fn diffusers_map_gives_the_original_keys_and_shapes() {
    single_thread();
    let dif = load_state_dict(fixture("tiny3_diffusers/diffusion_pytorch_model.safetensors")).unwrap();
    let orig = load_state_dict(fixture("tiny3.safetensors")).unwrap();
    let mapped = diffusers_to_original(dif, 3).unwrap();
    let mut a: Vec<(&str, &Vec<usize>)> = mapped.iter().map(|(k, t)| (k, &t.shape)).collect();
    let mut b: Vec<(&str, &Vec<usize>)> = orig.iter().map(|(k, t)| (k, &t.shape)).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    for (k, t) in orig.iter() {
        assert_eq!(mapped.get(k).unwrap().data, t.data, "{k}");
    }
}

#[test]
fn released_configs_have_the_reference_keys_and_counts() {
    single_thread();
    // tests/fixtures/ddpm/cifar10_keys.txt: the state-dict keys and shapes of the released
    // CIFAR-10 model, read off the original code with torch.
    let text = std::fs::read_to_string(fixture("cifar10_keys.txt")).unwrap();
    let mut want: Vec<(String, Vec<usize>)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, shape) = l.split_once(' ').unwrap();
            let dims = shape
                .trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .filter(|d| !d.trim().is_empty())
                .map(|d| d.trim().parse().unwrap())
                .collect();
            (k.to_string(), dims)
        })
        .collect();
    want.sort();
    let unet = DdpmUNet::zeros(DdpmConfig::cifar10(), Device::Cpu, Kind::Float).unwrap();
    let mut got: Vec<(String, Vec<usize>)> = unet
        .var_store()
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.size().iter().map(|&d| d as usize).collect()))
        .collect();
    got.sort();
    assert_eq!(got.len(), 328);
    assert_eq!(got, want);
    assert_eq!(unet.num_parameters(), 35_746_307);
    let celeba = DdpmUNet::zeros(DdpmConfig::celeba64(), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(celeba.var_store().variables().len(), 390);
    assert_eq!((celeba.num_parameters() as f64 / 1e4).round() / 100.0, 78.70);
    let lsun = DdpmUNet::zeros(DdpmConfig::lsun256(), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(lsun.var_store().variables().len(), 450);
    assert_eq!((lsun.num_parameters() as f64 / 1e4).round() / 100.0, 113.67);
}

#[test]
fn released_configs_are_recognised_from_original_weights() {
    single_thread();
    // Exported in original naming, a released architecture loads without a config.
    let unet = DdpmUNet::zeros(DdpmConfig::cifar10(), Device::Cpu, Kind::Float).unwrap();
    let sd = unet.state_dict().unwrap();
    assert_eq!(DdpmConfig::infer_from_state_dict(&sd).unwrap(), DdpmConfig::cifar10());
    // The tiny fixture matches no release: the error says what to do.
    let err = DdpmUNet::load(fixture("tiny3.safetensors"), Device::Cpu, Kind::Float).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("load_with_config"), "{msg}");
    assert!(msg.contains("ch 8") && msg.contains("[1, 1, 2]"), "{msg}");
}

fn tiny3_sd() -> StateDict {
    load_state_dict(fixture("tiny3.safetensors")).unwrap()
}

fn load_err(sd: StateDict) -> String {
    match DdpmUNet::from_state_dict(tiny3(), sd, Device::Cpu, Kind::Float, Path::new("test.ckpt")) {
        Ok(_) => panic!("loading should fail"),
        Err(e) => {
            assert!(matches!(e, Error::Checkpoint { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn missing_keys_are_named() {
    single_thread();
    let mut sd = tiny3_sd();
    sd.remove("mid.attn_1.q.weight").unwrap();
    sd.remove("up.2.block.1.conv2.bias").unwrap();
    let msg = load_err(sd);
    assert!(msg.contains("2 missing keys"), "{msg}");
    assert!(
        msg.contains("mid.attn_1.q.weight") && msg.contains("up.2.block.1.conv2.bias"),
        "{msg}"
    );
    assert!(msg.contains("test.ckpt"), "{msg}");
}

#[test]
fn unexpected_keys_are_named() {
    single_thread();
    let mut sd = tiny3_sd();
    sd.insert("mid.attn_2.q.weight".into(), TensorData::from_f32(vec![2], &[0.0, 1.0]));
    let msg = load_err(sd);
    assert!(msg.contains("1 unexpected key: mid.attn_2.q.weight"), "{msg}");
}

#[test]
fn misshaped_keys_are_named_with_both_shapes() {
    single_thread();
    let mut sd = tiny3_sd();
    sd.insert("conv_in.bias".into(), TensorData::from_f32(vec![7], &[0.0; 7]));
    let msg = load_err(sd);
    assert!(msg.contains("conv_in.bias: model [8], checkpoint [7]"), "{msg}");
}

#[test]
fn many_problems_are_counted_and_truncated() {
    single_thread();
    let mut sd = tiny3_sd();
    let keys: Vec<String> = sd.keys().filter(|k| k.starts_with("up.")).map(str::to_string).collect();
    for k in &keys {
        sd.remove(k);
    }
    let msg = load_err(sd);
    assert!(msg.contains(&format!("{} missing keys", keys.len())), "{msg}");
    assert!(msg.contains(", ..."), "{msg}");
}

#[test]
fn config_and_weights_mismatch_is_an_error() {
    single_thread();
    // The tiny2 weights (diffusers naming) into the tiny3 architecture.
    let err = DdpmUNet::load_with_config(fixture("tiny2_diffusers"), tiny3(), Device::Cpu, Kind::Float).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("mismatched tensor"), "{msg}");
    // A state dict that is no DDPM at all.
    let mut sd = StateDict::new();
    sd.insert("encoder.weight".into(), TensorData::from_f32(vec![1], &[0.0]));
    let msg = load_err(sd);
    assert!(msg.contains("1 unexpected key: encoder.weight"), "{msg}");
}

#[test]
fn bad_inputs_are_errors() {
    single_thread();
    let d = DdpmUNet::random(tiny3(), Device::Cpu, Kind::Float, 0)
        .unwrap()
        .into_denoiser();
    let one_channel = Array4::<f32>::zeros((2, 1, 16, 16));
    assert!(matches!(
        d.predict(one_channel.view(), &[5.0], &Condition::None),
        Err(Error::Shape(_))
    ));
    let wrong_size = Array4::<f32>::zeros((2, 3, 8, 8));
    assert!(matches!(
        d.predict(wrong_size.view(), &[5.0], &Condition::None),
        Err(Error::Shape(_))
    ));
    let x = Array4::<f32>::zeros((2, 3, 16, 16));
    assert!(d.predict(x.view(), &[f64::NAN], &Condition::None).is_err());
    assert!(matches!(
        d.predict(x.view(), &[5.0], &Condition::Class(vec![1, 2])),
        Err(Error::Incompatible(_))
    ));
    let mut nan = x.clone();
    nan[[1, 2, 3, 4]] = f32::NAN;
    assert!(matches!(
        d.predict(nan.view(), &[5.0], &Condition::None),
        Err(Error::InvalidInput(_))
    ));
    assert!(d
        .predict(x.slice(s![0..0, .., .., ..]), &[5.0], &Condition::None)
        .is_err());
    // Invalid configurations and compute kinds.
    let mut bad = tiny3();
    bad.norm_groups = 3;
    assert!(matches!(
        DdpmUNet::random(bad, Device::Cpu, Kind::Float, 0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(DdpmUNet::random(tiny3(), Device::Cpu, Kind::Int64, 0).is_err());
    assert!(DdpmUNet::load(fixture("does_not_exist.ckpt"), Device::Cpu, Kind::Float).is_err());
    assert!(
        TchDenoiser::new(DdpmUNet::random(tiny3(), Device::Cpu, Kind::Float, 0).unwrap())
            .with_max_batch(0)
            .is_err()
    );
}

#[test]
fn chunking_and_strided_inputs_give_the_same_result() {
    single_thread();
    let io = io("tiny3");
    let unet = DdpmUNet::load_with_config(fixture("tiny3.safetensors"), tiny3(), Device::Cpu, Kind::Float).unwrap();
    let d = TchDenoiser::new(unet).with_max_batch(1).unwrap();
    let out = d.predict(io.x.view(), &[17.3], &Condition::None).unwrap();
    assert!(rel_err(&out, &io.eps[1]) <= TOL);
    // A non-contiguous view: every other item of a batch of 4.
    let mut big = Array4::<f32>::zeros((4, 3, 16, 16));
    big.slice_mut(s![0..4;2, .., .., ..]).assign(&io.x);
    let out = d
        .predict(big.slice(s![0..4;2, .., .., ..]), &[17.3], &Condition::None)
        .unwrap();
    assert!(rel_err(&out, &io.eps[1]) <= TOL);
}

#[test]
fn half_precision_compute_is_close_to_f32() {
    single_thread();
    let io = io("tiny3");
    for kind in [Kind::Half, Kind::BFloat16] {
        let unet = DdpmUNet::load_with_config(fixture("tiny3.safetensors"), tiny3(), Device::Cpu, kind).unwrap();
        let out = unet
            .into_denoiser()
            .predict(io.x.view(), &[17.3], &Condition::None)
            .unwrap();
        let e = rel_err(&out, &io.eps[1]);
        let tol = if kind == Kind::Half { 1e-2 } else { 5e-2 };
        eprintln!("{kind:?}: relative error {e:e}");
        assert!(e <= tol, "{kind:?}: relative error {e:e}");
    }
}

#[test]
fn random_init_is_reproducible() {
    single_thread();
    let x = Array4::<f32>::from_elem((1, 3, 16, 16), 0.1);
    let a = DdpmUNet::random(tiny3(), Device::Cpu, Kind::Float, 7)
        .unwrap()
        .into_denoiser();
    let b = DdpmUNet::random(tiny3(), Device::Cpu, Kind::Float, 7)
        .unwrap()
        .into_denoiser();
    let ya = a.predict(x.view(), &[3.0], &Condition::None).unwrap();
    let yb = b.predict(x.view(), &[3.0], &Condition::None).unwrap();
    assert_eq!(ya, yb);
    assert!(ya.iter().all(|v| v.is_finite()) && ya.iter().any(|&v| v != 0.0));
}

#[test]
fn diffusers_defaults_multi_head_and_symmetric_padding() {
    single_thread();
    // tinyx: [cos, sin] embedding, freq_shift 0, head dim 4, downsample_padding 1, eps 1e-5;
    // the reference is diffusers' UNet2DModel itself.
    let unet = DdpmUNet::load(fixture("tinyx_diffusers"), Device::Cpu, Kind::Float).unwrap();
    let cfg = unet.config().clone();
    assert!(cfg.flip_sin_to_cos);
    assert_eq!(cfg.freq_shift, 0.0);
    assert_eq!(cfg.attention_head_dim, Some(4));
    assert_eq!(cfg.downsample_padding, DownsamplePadding::Symmetric);
    assert_eq!(cfg.norm_eps, 1e-5);
    assert_eq!(cfg.attn_resolutions, vec![16]);
    let e = check(unet, "tinyx", TOL);
    eprintln!("tinyx_diffusers: max relative error {e:e}");
}

/// `config.json` of the HF `google/ddpm-cat-256` repository (diffusers 0.0.4 era: no
/// `add_attention`, `mid_block_type` or `dropout` keys).
const GOOGLE_DDPM_CAT_256: &str = r#"{
  "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu",
  "attention_head_dim": null, "block_out_channels": [128, 128, 256, 256, 512, 512],
  "center_input_sample": false,
  "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3,
  "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
  "out_channels": 3, "sample_size": 256, "time_embedding_type": "positional",
  "up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]
}"#;

#[test]
fn google_ddpm_configs_are_the_released_architectures() {
    single_thread();
    assert_eq!(
        DdpmConfig::from_diffusers_json(GOOGLE_DDPM_CAT_256).unwrap(),
        DdpmConfig::lsun256()
    );
    let cifar = GOOGLE_DDPM_CAT_256
        .replace("[128, 128, 256, 256, 512, 512]", "[128, 256, 256, 256]")
        .replace(
            r#"["DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"]"#,
            r#"["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"]"#,
        )
        .replace(
            r#"["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]"#,
            r#"["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]"#,
        )
        .replace(r#""sample_size": 256"#, r#""sample_size": 32"#);
    let want = DdpmConfig {
        dropout: 0.0,
        ..DdpmConfig::cifar10()
    };
    assert_eq!(DdpmConfig::from_diffusers_json(&cifar).unwrap(), want);
}

#[test]
fn unsupported_diffusers_configs_name_the_field() {
    single_thread();
    let cases = [
        (r#""act_fn": "silu""#, r#""act_fn": "gelu""#, "act_fn"),
        (
            r#""center_input_sample": false"#,
            r#""center_input_sample": true"#,
            "center_input_sample",
        ),
        (
            r#""time_embedding_type": "positional""#,
            r#""time_embedding_type": "fourier""#,
            "time_embedding_type",
        ),
        (
            r#""attention_head_dim": null"#,
            r#""attention_head_dim": null, "class_embed_type": "timestep""#,
            "class_embed_type",
        ),
        (
            r#""attention_head_dim": null"#,
            r#""attention_head_dim": null, "resnet_time_scale_shift": "scale_shift""#,
            "resnet_time_scale_shift",
        ),
        // Attention on the way down at 16 but on the way up at 8.
        (
            r#"["UpBlock2D", "AttnUpBlock2D", "UpBlock2D","#,
            r#"["AttnUpBlock2D", "UpBlock2D", "UpBlock2D","#,
            "up_block_types",
        ),
        (r#""sample_size": 256"#, r#""sample_size": [256, 128]"#, "sample_size"),
        (
            r#""downsample_padding": 0"#,
            r#""downsample_padding": 2"#,
            "downsample_padding",
        ),
        (
            r#""_class_name": "UNet2DModel""#,
            r#""_class_name": "UNet2DConditionModel""#,
            "_class_name",
        ),
    ];
    for (from, to, field) in cases {
        let text = GOOGLE_DDPM_CAT_256.replace(from, to);
        assert_ne!(text, GOOGLE_DDPM_CAT_256, "{field}: the replacement did not apply");
        let err = DdpmConfig::from_diffusers_json(&text).unwrap_err();
        assert!(matches!(err, Error::Incompatible(_)), "{field}: {err:?}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(DdpmConfig::from_diffusers_json("not json").is_err());
    assert!(DdpmConfig::from_diffusers_json("[1, 2]").is_err());
}
