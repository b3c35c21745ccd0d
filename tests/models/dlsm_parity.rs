//! Parity of DLSM's NCSN++ score models and time-conditional classifier with an
//! independent PyTorch transcription, in the checkpoint formats they ship in, and their
//! error behaviour.
//!
//! Fixtures: `tests/fixtures/dlsm/`, written by `tools/make_dlsm_fixtures.py` (see there).
//! Error measure: `max|a − b| / max|b|` over the whole output, `a` from Rust, `b` the
//! PyTorch reference, both f32 on the CPU; tolerance 1e-4. `reference_keys.txt` holds the
//! key names and shapes of the released CIFAR configurations, read off the original code.

use std::path::{Path, PathBuf};

use boomerang::checkpoint::{self, DType, Select, StateDict, TensorData};
use boomerang::models::ncsnpp::{
    self, matches_classifier_keys, matches_container_keys, matches_keys, ClassifierLoadOptions, DlsmLoadOptions,
    NcsnppConfig, ResNetCondConfig, Role, Weights, WeightsOrigin,
};
use boomerang::models::{Device, Kind};
use boomerang::{Condition, Denoiser, Error, Guide};
use ndarray::Array4;

const TOL: f32 = 1e-4;

fn single_thread() {
    tch::set_num_threads(1);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dlsm")
        .join(name)
}

fn io(name: &str) -> StateDict {
    checkpoint::load_state_dict(fixture(name).join("io.safetensors")).unwrap()
}

fn arr4(t: &TensorData) -> Array4<f32> {
    let s = &t.shape;
    Array4::from_shape_vec((s[0], s[1], s[2], s[3]), t.to_f32_vec().unwrap()).unwrap()
}

fn vec_of(sd: &StateDict, k: &str) -> Vec<f32> {
    sd.get(k).unwrap_or_else(|| panic!("no {k}")).to_f32_vec().unwrap()
}

fn rel_err(a: &Array4<f32>, b: &Array4<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    diff / b.iter().map(|y| y.abs()).fold(0.0f32, f32::max)
}

/// The `name (d0, d1, ...)` lines of one section of `reference_keys.txt`.
fn reference_section(header: &str) -> Vec<(String, Vec<usize>)> {
    let text = std::fs::read_to_string(fixture("reference_keys.txt")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("===") {
            inside = line.contains(header);
            continue;
        }
        let l = line.trim();
        if !inside || !line.starts_with("   ") || l == "..." || !l.ends_with(')') {
            continue;
        }
        let Some((name, shape)) = l.split_once(" (") else {
            continue;
        };
        let dims = shape
            .trim_end_matches(')')
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        out.push((name.to_string(), dims));
    }
    out
}

#[test]
fn presets_have_the_released_keys_shapes_and_order() {
    let reference = reference_section("NCSN++ score model (cifar10)");
    assert_eq!(reference.len(), 964);
    for cfg in [NcsnppConfig::dlsm_cifar10(), NcsnppConfig::dlsm_cifar100()] {
        let layout = cfg.layout().unwrap();
        let ours: Vec<(String, Vec<usize>)> = layout.iter().map(|p| (p.name.clone(), p.shape.clone())).collect();
        assert_eq!(ours, reference, "names, shapes and registration order");
        let trainable = layout.iter().filter(|p| p.role == Role::Trainable).count();
        assert_eq!(trainable, 962, "the EMA shadow list's length");
        let others: Vec<&str> = layout
            .iter()
            .filter(|p| p.role != Role::Trainable)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(others, ["sigmas", "all_modules.0.W"]);
        let total: u64 = reference.iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
        assert_eq!(cfg.num_parameters().unwrap(), total);
        assert_eq!(total, 107_588_075);
    }
    assert_eq!(NcsnppConfig::dlsm_cifar100().num_classes(), Some(100));

    // The classifiers: every listed key (the file elides the middle) with its shape, and
    // the state-tensor counts, which include one `num_batches_tracked` per BatchNorm.
    for (header, cfg, state_tensors, millions) in [
        ("classifier (cifar10)", ResNetCondConfig::dlsm_cifar10(), 135, 11.32),
        ("classifier (cifar100)", ResNetCondConfig::dlsm_cifar100(), 231, 21.48),
    ] {
        let layout = cfg.layout().unwrap();
        for (name, shape) in reference_section(header) {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let p = layout
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("{header}: no {name}"));
            assert_eq!(p.shape, shape, "{name}");
        }
        let norms = layout.iter().filter(|p| p.name.ends_with("running_mean")).count();
        assert_eq!(layout.len() + norms, state_tensors, "{header}");
        let params: u64 = layout
            .iter()
            .filter(|p| p.role != Role::Buffer)
            .map(|p| p.shape.iter().product::<usize>() as u64)
            .sum();
        assert!(
            ((params as f64 / 1e6) - millions).abs() < 0.005,
            "{header}: {params} parameters"
        );
    }
}

#[test]
fn the_preset_is_recognised_from_shapes_alone() {
    // A shape-only state dict of the released keys (no tensor data but `sigmas`).
    let mut sd = StateDict::new();
    for (name, shape) in reference_section("NCSN++ score model (cifar10)") {
        let t = if name == "sigmas" {
            let cfg = NcsnppConfig::dlsm_cifar10();
            let (a, b) = (cfg.model.sigma_max.ln(), cfg.model.sigma_min.ln());
            let v: Vec<f64> = (0..1000).map(|i| (a + (b - a) * i as f64 / 999.0).exp()).collect();
            TensorData::new(DType::F64, vec![1000], v.iter().flat_map(|x| x.to_le_bytes()).collect()).unwrap()
        } else {
            TensorData {
                dtype: DType::F32,
                shape,
                data: Vec::new(),
            }
        };
        sd.insert(name, t);
    }
    let cfg = NcsnppConfig::infer_from_state_dict(&sd).unwrap();
    let mut want = NcsnppConfig::dlsm_cifar10();
    want.data.dataset = String::new();
    assert_eq!(cfg, want);
    assert_eq!(cfg.num_classes(), None, "CIFAR-10 and CIFAR-100 cannot be told apart");
    sd.remove("all_modules.5.Conv_0.bias");
    let e = NcsnppConfig::infer_from_state_dict(&sd).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("all_modules.5.Conv_0.bias"),
        "{e}"
    );
}

fn score(model: &ncsnpp::DlsmModel, x: &Array4<f32>, sigmas: &[f64]) -> Array4<f32> {
    model.denoiser.predict(x.view(), sigmas, &Condition::None).unwrap()
}

#[test]
fn tiny_a_container_ema_weights_match_pytorch() {
    single_thread();
    // The folder: checkpoint.pth (training container) + config.json.
    let model = ncsnpp::load(fixture("tiny_a"), &DlsmLoadOptions::default()).unwrap();
    assert_eq!(model.origin, WeightsOrigin::Ema);
    assert_eq!(model.config().model.nf, 8);
    let io = io("tiny_a");
    let x = arr4(io.get("x").unwrap());
    let mut worst = 0.0f32;
    for (k, s) in vec_of(&io, "sigmas").iter().enumerate() {
        let got = score(&model, &x, &[*s as f64]);
        let e = rel_err(&got, &arr4(io.get(&format!("score.{k}")).unwrap()));
        assert!(e < TOL, "σ = {s}: relative error {e}");
        worst = worst.max(e);
    }
    let items: Vec<f64> = vec_of(&io, "sigma_items").iter().map(|&s| s as f64).collect();
    let got = score(&model, &arr4(io.get("x_items").unwrap()), &items);
    let e = rel_err(&got, &arr4(io.get("score_items").unwrap()));
    assert!(e < TOL, "per-item σ: relative error {e}");
    worst = worst.max(e);
    eprintln!("tiny_a (EMA container): max relative error {worst:.2e}");
}

#[test]
fn tiny_a_flat_safetensors_equal_the_container() {
    single_thread();
    let container = ncsnpp::load(fixture("tiny_a"), &DlsmLoadOptions::default()).unwrap();
    // The flat file, with the folder's config.json beside it.
    let flat = ncsnpp::load(fixture("tiny_a/ema.safetensors"), &DlsmLoadOptions::default()).unwrap();
    assert_eq!(flat.origin, WeightsOrigin::Flat);
    let a = container.denoiser.model().state_dict().unwrap();
    let b = flat.denoiser.model().state_dict().unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, t) in a.iter() {
        assert_eq!(
            t,
            b.get(k).unwrap(),
            "{k} differs between the container's EMA and the flat file"
        );
    }
    let io = io("tiny_a");
    let x = arr4(io.get("x").unwrap());
    assert_eq!(score(&container, &x, &[0.3]), score(&flat, &x, &[0.3]));
}

#[test]
fn tiny_a_raw_weights_only_on_request() {
    single_thread();
    let opts = DlsmLoadOptions {
        weights: Weights::Raw,
        ..DlsmLoadOptions::default()
    };
    let raw = ncsnpp::load(fixture("tiny_a"), &opts).unwrap();
    assert_eq!(raw.origin, WeightsOrigin::Raw);
    let io = io("tiny_a");
    let x = arr4(io.get("x").unwrap());
    let s1 = vec_of(&io, "sigmas")[1] as f64;
    let got = score(&raw, &x, &[s1]);
    let e = rel_err(&got, &arr4(io.get("score_raw").unwrap()));
    assert!(e < TOL, "raw weights: relative error {e}");
    // The EMA weights give another function: the shadow list really is applied.
    let ema = arr4(io.get("score.1").unwrap());
    assert!(rel_err(&got, &ema) > 1e-2);
    eprintln!("tiny_a (raw weights): max relative error {e:.2e}");
}

#[test]
fn tiny_b_container_without_ema() {
    single_thread();
    // DDPM++ blocks, FIR resampling convs, residual output pyramid, input_skip with cat,
    // positional embedding, ELU, no skip rescaling, centered data.
    let err = ncsnpp::load(fixture("tiny_b"), &DlsmLoadOptions::default()).unwrap_err();
    match &err {
        Error::Checkpoint { message, .. } => {
            assert!(
                message.contains("no `ema`") && message.contains("Weights::Raw"),
                "{message}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    let opts = DlsmLoadOptions {
        weights: Weights::Raw,
        ..DlsmLoadOptions::default()
    };
    let model = ncsnpp::load(fixture("tiny_b"), &opts).unwrap();
    assert_eq!(model.origin, WeightsOrigin::Raw);
    assert_eq!(model.denoiser.spec().data_range, boomerang::DataRange::MinusOneToOne);
    let io = io("tiny_b");
    let x = arr4(io.get("x").unwrap());
    let mut worst = 0.0f32;
    for (k, s) in vec_of(&io, "sigmas").iter().enumerate() {
        let got = score(&model, &x, &[*s as f64]);
        let e = rel_err(&got, &arr4(io.get(&format!("score.{k}")).unwrap()));
        assert!(e < TOL, "label {k}: relative error {e}");
        worst = worst.max(e);
    }
    eprintln!("tiny_b (positional, DDPM++ FIR, raw container): max relative error {worst:.2e}");
}

#[test]
fn tiny_c_flat_file() {
    single_thread();
    // DDPM++ blocks without FIR, output_skip, strided-conv input pyramid, unconditional.
    let model = ncsnpp::load(fixture("tiny_c/model.safetensors"), &DlsmLoadOptions::default()).unwrap();
    assert_eq!(model.origin, WeightsOrigin::Flat);
    let io = io("tiny_c");
    let x = arr4(io.get("x").unwrap());
    let mut worst = 0.0f32;
    for (k, s) in vec_of(&io, "sigmas").iter().enumerate() {
        let got = score(&model, &x, &[*s as f64]);
        let e = rel_err(&got, &arr4(io.get(&format!("score.{k}")).unwrap()));
        assert!(e < TOL, "σ = {s}: relative error {e}");
        worst = worst.max(e);
    }
    eprintln!("tiny_c (no FIR, output_skip, unconditional): max relative error {worst:.2e}");
}

#[test]
fn classifier_logits_and_gradient_match_pytorch() {
    single_thread();
    let guide = ncsnpp::load_classifier_guide(fixture("tiny_clf"), &ClassifierLoadOptions::default()).unwrap();
    assert_eq!(guide.num_classes(), Some(10));
    assert_eq!(guide.config().num_blocks, [1, 2, 1, 1]);
    let io = io("tiny_clf");
    let x = arr4(io.get("x").unwrap());
    let mut worst = 0.0f32;
    for (k, s) in vec_of(&io, "sigmas").iter().enumerate() {
        let got = guide.logits(x.view(), &[*s as f64]).unwrap();
        let want = vec_of(&io, &format!("logits.{k}"));
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        let e = diff / want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        assert!(e < TOL, "σ = {s}: logits relative error {e}");
        worst = worst.max(e);
    }
    let xn = arr4(io.get("x_noisy").unwrap());
    let sig: Vec<f64> = vec_of(&io, "sigma_items").iter().map(|&s| s as f64).collect();
    let labels: Vec<i64> = vec_of(&io, "labels").iter().map(|&l| l as i64).collect();
    // Gradients are switched on inside the guide even under a caller's no_grad.
    let grad = tch::no_grad(|| guide.grad_log_prob(xn.view(), &sig, &labels)).unwrap();
    let e = rel_err(&grad, &arr4(io.get("grad").unwrap()));
    assert!(e < TOL, "∇x log p(y|x, σ): relative error {e}");
    eprintln!("classifier: logits max relative error {worst:.2e}, gradient {e:.2e}");
    // One item at a time gives the same gradient (no batch coupling).
    let one = guide
        .grad_log_prob(xn.slice(ndarray::s![1..2, .., .., ..]), &sig[1..], &labels[1..])
        .unwrap();
    let full1 = grad.slice(ndarray::s![1..2, .., .., ..]).to_owned();
    assert!(rel_err(&one, &full1) < 1e-5);
}

#[test]
fn key_detectors() {
    let score_keys = checkpoint::load_state_dict(fixture("tiny_a/ema.safetensors")).unwrap();
    let keys: Vec<&str> = score_keys.keys().collect();
    assert!(matches_keys(&keys));
    assert!(!matches_classifier_keys(&keys));
    let prefixed: Vec<String> = keys.iter().map(|k| format!("module.{k}")).collect();
    assert!(matches_keys(&prefixed.iter().map(String::as_str).collect::<Vec<_>>()));

    let clf = checkpoint::load_state_dict_with(fixture("tiny_clf/checkpoint.pth"), &Select::Path(&["model"])).unwrap();
    let ck: Vec<&str> = clf.keys().collect();
    assert!(ck[0].starts_with("classifier."), "Select strips `module.`: {}", ck[0]);
    assert!(matches_classifier_keys(&ck));
    assert!(!matches_keys(&ck));

    let ddpm = checkpoint::load_state_dict(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ddpm/tiny3.safetensors"),
    )
    .unwrap();
    let dk: Vec<&str> = ddpm.keys().collect();
    assert!(!matches_keys(&dk) && !matches_classifier_keys(&dk));

    let root = checkpoint::Checkpoint::open(fixture("tiny_a/checkpoint.pth")).unwrap();
    let top: Vec<&str> = root
        .root()
        .as_dict()
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .collect();
    assert!(matches_container_keys(&top), "{top:?}");
    assert!(!matches_container_keys(&["model", "optimizer", "step"]));
}

#[test]
fn sigma_outside_the_sde_range_is_an_error() {
    single_thread();
    let model = ncsnpp::load(fixture("tiny_a"), &DlsmLoadOptions::default()).unwrap();
    let x = Array4::<f32>::from_elem((1, 3, 16, 16), 0.5);
    let e = model
        .denoiser
        .predict(x.view(), &[f64::NAN], &Condition::None)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
    for bad in [100.0, 0.001, 50.01] {
        let e = model.denoiser.predict(x.view(), &[bad], &Condition::None).unwrap_err();
        match &e {
            Error::InvalidParameter { name, reason } => {
                assert_eq!(*name, "sigma");
                assert!(reason.contains("[0.01, 50]"), "{reason}");
            }
            other => panic!("σ = {bad}: unexpected {other:?}"),
        }
    }
    // The ends of the range itself are fine (f32 rounding included).
    model.denoiser.predict(x.view(), &[0.01], &Condition::None).unwrap();
    model.denoiser.predict(x.view(), &[50.0], &Condition::None).unwrap();
    // A class condition is refused: classes enter through guidance.
    let e = model
        .denoiser
        .predict(x.view(), &[1.0], &Condition::Class(vec![1]))
        .unwrap_err();
    assert!(matches!(e, Error::Incompatible(_)), "{e}");
}

#[test]
fn classifier_classes_must_match() {
    single_thread();
    let opts = ClassifierLoadOptions {
        expected_classes: Some(100),
        ..ClassifierLoadOptions::default()
    };
    let e = ncsnpp::load_classifier_guide(fixture("tiny_clf"), &opts).unwrap_err();
    assert!(matches!(&e, Error::Incompatible(m) if m.contains("10 classes")), "{e}");

    let guide = ncsnpp::load_classifier(fixture("tiny_clf"), &ClassifierLoadOptions::default()).unwrap();
    // A score model declared as CIFAR-100 (the tiny weights, the dataset changed).
    let text = std::fs::read_to_string(fixture("tiny_a/config.json")).unwrap();
    let mut cfg = NcsnppConfig::from_json(&text).unwrap();
    cfg.data.dataset = "CIFAR100".into();
    let opts = DlsmLoadOptions {
        config: Some(cfg),
        ..DlsmLoadOptions::default()
    };
    let model = ncsnpp::load(fixture("tiny_a"), &opts).unwrap();
    let e = model.classifier_guidance(guide.clone(), 1.0).unwrap_err();
    assert!(matches!(&e, Error::Incompatible(m) if m.contains("CIFAR100")), "{e}");

    // Labels outside the classifier's classes are refused before any sampling.
    let model = ncsnpp::load(fixture("tiny_a"), &DlsmLoadOptions::default()).unwrap();
    let g = model.classifier_guidance(guide.clone(), 1.0).unwrap();
    let e = model
        .into_builder()
        .guidance(g)
        .condition(Condition::Class(vec![10]))
        .build()
        .unwrap_err();
    assert!(matches!(&e, Error::InvalidParameter { name: "class", .. }), "{e}");
    let x = Array4::<f32>::zeros((1, 3, 16, 16));
    let e = guide.grad_log_prob(x.view(), &[1.0], &[-1]).unwrap_err();
    assert!(matches!(&e, Error::InvalidParameter { name: "class", .. }), "{e}");
}

#[test]
fn bad_configs_name_the_field() {
    let base = std::fs::read_to_string(fixture("tiny_a/config.json")).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&base).unwrap();
        f(&mut v);
        NcsnppConfig::from_json(&v.to_string())
    };
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("model.nf", Box::new(|v| v["model"]["nf"] = 0.into())),
        (
            "model.progressive",
            Box::new(|v| v["model"]["progressive"] = "sideways".into()),
        ),
        ("training.sde", Box::new(|v| v["training"]["sde"] = "vpsde".into())),
        ("model.name", Box::new(|v| v["model"]["name"] = "ddpm".into())),
        ("data.image_size", Box::new(|v| v["data"]["image_size"] = 17.into())),
        (
            "model.fir_kernel",
            Box::new(|v| v["model"]["fir_kernel"] = serde_json::json!([1, -1])),
        ),
        ("model.sigma_min", Box::new(|v| v["model"]["sigma_min"] = (-1.0).into())),
        ("model.nf/model.ch_mult", Box::new(|v| v["model"]["nf"] = 6.into())),
        (
            "training.continuous",
            Box::new(|v| v["training"]["continuous"] = false.into()),
        ),
        (
            "parameters",
            Box::new(|v| {
                v["model"]["nf"] = 4096.into();
                v["model"]["ch_mult"] = serde_json::json!([64, 64, 64, 64]);
                v["data"]["image_size"] = 64.into();
            }),
        ),
    ];
    let t = std::time::Instant::now();
    for (field, f) in &cases {
        let e = edit(f.as_ref()).unwrap_err().to_string();
        assert!(e.contains(field), "expected an error naming `{field}`, got: {e}");
    }
    // Refused from the analytic count, before anything is allocated.
    assert!(t.elapsed().as_secs_f64() < 5.0);
    // Case-insensitive names and unknown keys, as in the original.
    let ok = edit(&|v| {
        v["model"]["resblock_type"] = "BigGAN".into();
        v["some_new_section"] = serde_json::json!({"x": 1});
    });
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn checkpoint_and_config_mismatches_are_clear() {
    single_thread();
    let text = std::fs::read_to_string(fixture("tiny_a/config.json")).unwrap();
    // A σ range the checkpoint's `sigmas` buffer contradicts.
    let mut cfg = NcsnppConfig::from_json(&text).unwrap();
    cfg.model.sigma_max = 60.0;
    let opts = DlsmLoadOptions {
        config: Some(cfg),
        ..DlsmLoadOptions::default()
    };
    let e = ncsnpp::load(fixture("tiny_a/ema.safetensors"), &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.sigma_max"), "{e}");
    // Another architecture: the EMA list cannot be assigned.
    let mut cfg = NcsnppConfig::from_json(&text).unwrap();
    cfg.model.num_res_blocks = 2;
    let opts = DlsmLoadOptions {
        config: Some(cfg),
        ..DlsmLoadOptions::default()
    };
    let e = ncsnpp::load(fixture("tiny_a"), &opts).unwrap_err().to_string();
    assert!(e.contains("shadow") || e.contains("count mismatch"), "{e}");
    // Weights of an architecture that is no preset, without any config: asks for one.
    let dir = std::env::temp_dir().join(format!("dlsm_noconfig_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("tiny_c/model.safetensors"), dir.join("model.safetensors")).unwrap();
    let e = ncsnpp::load(dir.join("model.safetensors"), &DlsmLoadOptions::default())
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).ok();
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn half_precision_runs_close_to_f32() {
    single_thread();
    let io = io("tiny_a");
    let x = arr4(io.get("x").unwrap());
    let want = arr4(io.get("score.1").unwrap());
    for (kind, tol) in [(Kind::Half, 2e-2f32), (Kind::BFloat16, 1e-1)] {
        let opts = DlsmLoadOptions {
            kind,
            device: Device::Cpu,
            ..DlsmLoadOptions::default()
        };
        let model = ncsnpp::load(fixture("tiny_a/ema.safetensors"), &opts).unwrap();
        let got = score(&model, &x, &[vec_of(&io, "sigmas")[1] as f64]);
        let e = rel_err(&got, &want);
        assert!(e < tol, "{kind:?}: relative error {e}");
        eprintln!("tiny_a in {kind:?}: relative error {e:.2e}");
    }
}

#[test]
fn random_networks_are_reproducible_and_round_trip() {
    single_thread();
    let text = std::fs::read_to_string(fixture("tiny_a/config.json")).unwrap();
    let cfg = NcsnppConfig::from_json(&text).unwrap();
    let a = ncsnpp::NcsnppNet::random(cfg.clone(), Device::Cpu, Kind::Float, 5).unwrap();
    let b = ncsnpp::NcsnppNet::random(cfg.clone(), Device::Cpu, Kind::Float, 5).unwrap();
    let sa = a.state_dict().unwrap();
    assert_eq!(
        sa.keys().collect::<Vec<_>>(),
        b.state_dict().unwrap().keys().collect::<Vec<_>>()
    );
    for (k, t) in sa.iter() {
        assert_eq!(t, b.state_dict().unwrap().get(k).unwrap(), "{k}");
    }
    assert_eq!(a.num_parameters(), cfg.num_parameters().unwrap());
    // state_dict -> safetensors -> load gives the same network.
    let dir = std::env::temp_dir().join(format!("dlsm_roundtrip_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("random.safetensors");
    checkpoint::save_safetensors(&sa, &file).unwrap();
    let opts = DlsmLoadOptions {
        config: Some(cfg),
        ..DlsmLoadOptions::default()
    };
    let loaded = ncsnpp::load(&file, &opts).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let x = Array4::<f32>::from_shape_fn((2, 3, 16, 16), |(n, c, h, w)| ((n + 2 * c + h * w) % 7) as f32 / 7.0);
    let da = a.into_denoiser();
    let want = da.predict(x.view(), &[0.5], &Condition::None).unwrap();
    assert_eq!(
        loaded.denoiser.predict(x.view(), &[0.5], &Condition::None).unwrap(),
        want
    );
    assert!(want.iter().all(|v| v.is_finite()));

    let clf = ResNetCondConfig::from_json(&text).unwrap();
    let c1 = ncsnpp::TimeCondResNet::random(clf.clone(), Device::Cpu, Kind::Float, 2).unwrap();
    assert_eq!(c1.num_parameters(), clf.num_parameters().unwrap());
    let roles: Vec<Role> = c1.layout().iter().map(|p| p.role).collect();
    assert_eq!(roles[0], Role::Frozen, "the classifier's Fourier W");
    assert!(c1
        .layout()
        .iter()
        .any(|p| p.role == Role::Buffer && p.name.ends_with("running_var")));
}
