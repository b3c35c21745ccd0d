//! Integration tests of the checkpoint reader against files written by PyTorch.
//!
//! The fixtures in `tests/fixtures/checkpoint/` come from
//! `tools/make_checkpoint_fixtures.py`, which also writes `expected.json`: for each fixture
//! and selection, the names in order, dtypes, shapes and values that must come out.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use boomerang::checkpoint::{
    self, convert_to_safetensors, inspect, load_state_dict, load_state_dict_with, save_safetensors, Checkpoint, DType,
    EntryKind, Format, LazyStateDict, Select, StateDict, TensorData, TensorInfo, Value,
};
use boomerang::Error;
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checkpoint")
        .join(name)
}

/// A fresh, empty directory for one test.
fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "checkpoint-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn checkpoint_message(e: &Error) -> String {
    match e {
        Error::Checkpoint { message, .. } => message.clone(),
        other => panic!("expected Error::Checkpoint, got {other:?}"),
    }
}

struct ExpectedTensor {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

struct Case {
    file: String,
    select: serde_json::Value,
    tensors: Vec<ExpectedTensor>,
}

fn expected_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            file: c["file"].as_str().unwrap().to_string(),
            select: c["select"].clone(),
            tensors: c["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| ExpectedTensor {
                    name: t[0].as_str().unwrap().to_string(),
                    dtype: t[1].as_str().unwrap().to_string(),
                    shape: t[2]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d.as_u64().unwrap() as usize)
                        .collect(),
                    values: t[3]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Runs `f` with the `Select` that a case's JSON describes.
fn with_select<T>(sel: &serde_json::Value, f: impl FnOnce(&Select<'_>) -> T) -> T {
    match sel["kind"].as_str().unwrap() {
        "auto" => f(&Select::Auto),
        "path" => {
            let p = strs(&sel["path"]);
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            f(&Select::Path(&p))
        }
        "ema_shadow" => {
            let (m, s, x) = (strs(&sel["model"]), strs(&sel["shadow"]), strs(&sel["exclude"]));
            let m: Vec<&str> = m.iter().map(String::as_str).collect();
            let s: Vec<&str> = s.iter().map(String::as_str).collect();
            let x: Vec<&str> = x.iter().map(String::as_str).collect();
            f(&Select::EmaShadow {
                model: &m,
                shadow: &s,
                exclude: &x,
            })
        }
        other => panic!("unknown select kind {other}"),
    }
}

fn assert_matches(case: &Case, sd: &StateDict, how: &str) {
    let ctx = format!("{} {} via {how}", case.file, case.select);
    let names: Vec<&str> = sd.keys().collect();
    let want: Vec<&str> = case.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, want, "{ctx}: names or order differ");
    for e in &case.tensors {
        let t = sd.get(&e.name).unwrap();
        assert_eq!(t.dtype.safetensors_name(), e.dtype, "{ctx}: dtype of {}", e.name);
        assert_eq!(t.shape, e.shape, "{ctx}: shape of {}", e.name);
        assert_eq!(t.numel(), e.values.len(), "{ctx}: numel of {}", e.name);
        t.check_len().unwrap();
        let got = t.to_f32_vec().unwrap();
        let same = got.iter().zip(&e.values).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{ctx}: values of {} differ:\n got {got:?}\nwant {:?}",
            e.name, e.values
        );
    }
}

#[test]
fn every_fixture_yields_the_values_pytorch_saved() {
    let cases = expected_cases();
    assert!(cases.len() >= 15, "expected.json lists only {} cases", cases.len());
    for case in &cases {
        let path = fixture(&case.file);
        let lazy = with_select(&case.select, |s| load_state_dict_with(&path, s))
            .unwrap_or_else(|e| panic!("{}: {e}", case.file));
        assert_matches(case, &lazy, "load_state_dict_with");
        let ckpt = Checkpoint::open(&path).unwrap();
        let eager = with_select(&case.select, |s| ckpt.state_dict(s)).unwrap();
        assert_matches(case, &eager, "Checkpoint::state_dict");

        // Tensor by tensor, last first: views of one storage and zip entries read out of
        // order give the same values, and the metadata is there before any read.
        let mut one = with_select(&case.select, |s| LazyStateDict::open_with(&path, s)).unwrap();
        assert_eq!(one.len(), lazy.len(), "{}", case.file);
        let names: Vec<String> = one.keys().map(str::to_string).collect();
        let mut read = StateDict::new();
        for name in names.iter().rev() {
            let info = one.info(name).unwrap().clone();
            let t = one.read(name).unwrap();
            assert_eq!((t.dtype, &t.shape), (info.dtype, &info.shape), "{} {name}", case.file);
            read.insert(name.clone(), t);
        }
        let in_order: StateDict = names
            .iter()
            .map(|n| (n.clone(), read.get(n).unwrap().clone()))
            .collect();
        assert_matches(case, &in_order, "LazyStateDict::read");
    }
}

#[test]
fn lazy_state_dicts_rename_reshape_and_refuse_clashes() {
    let dir = scratch_dir("lazy");
    let mut sd = StateDict::new();
    sd.insert(
        "enc.a.weight".into(),
        TensorData::from_f32(vec![2, 3, 1, 1], &[1., 2., 3., 4., 5., 6.]),
    );
    sd.insert("enc.a.bias".into(), TensorData::from_f32(vec![2], &[7., 8.]));
    sd.insert("enc.position_ids".into(), TensorData::from_f32(vec![1], &[0.]));
    let path = dir.join("m.safetensors");
    save_safetensors(&sd, &path).unwrap();

    let mut lazy = LazyStateDict::open(&path).unwrap();
    assert_eq!(lazy.path(), path.as_path());
    assert!(lazy.strip_prefix("enc.").unwrap());
    assert!(!lazy.strip_prefix("enc.").unwrap(), "stripped twice");
    lazy.rename(|name, shape| {
        if name == "position_ids" {
            return None;
        }
        if shape.len() == 4 {
            shape.truncate(2);
        }
        Some(format!("net.{name}"))
    })
    .unwrap();
    let keys: Vec<&str> = lazy.keys().collect();
    assert_eq!(keys, ["net.a.weight", "net.a.bias"], "order kept, dropped key gone");
    assert_eq!(lazy.info("net.a.weight").unwrap().shape, [2, 3]);
    let w = lazy.read("net.a.weight").unwrap();
    assert_eq!(
        (w.shape.clone(), w.to_f32_vec().unwrap()),
        (vec![2, 3], vec![1., 2., 3., 4., 5., 6.])
    );
    let e = checkpoint_message(&lazy.read("a.weight").unwrap_err());
    assert!(e.contains("no tensor named `a.weight`"), "{e}");

    // Two tensors renamed to one name, and a reshape to another element count, are errors.
    let mut lazy = LazyStateDict::open(&path).unwrap();
    let e = checkpoint_message(&lazy.rename(|_, _| Some("same".into())).unwrap_err());
    assert!(e.contains("two tensors are named `same`"), "{e}");
    let mut lazy = LazyStateDict::open(&path).unwrap();
    assert!(lazy
        .rename(|n, shape| {
            shape.push(2);
            Some(n.to_string())
        })
        .is_err());

    // The whole dict equals the eager read.
    assert_eq!(LazyStateDict::open(&path).unwrap().into_state_dict().unwrap(), sd);
}

#[test]
fn a_file_changed_after_opening_is_an_error_of_the_read() {
    let dir = scratch_dir("lazy-changed");
    for name in ["flat.safetensors", "flat_zip.pt", "flat_deflated.pt", "flat_legacy.pt"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let p = write(&dir, name, &bytes);
        let mut lazy = LazyStateDict::open(&p).unwrap();
        let names: Vec<String> = lazy.keys().map(str::to_string).collect();
        assert!(!names.is_empty(), "{name}");
        // Cut to a third: the data of the later tensors is gone.
        std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
        let failed = names.iter().filter(|n| lazy.read(n).is_err()).count();
        assert!(failed > 0, "{name}: every tensor read from a file cut to a third");
    }
}

#[test]
fn inspection_picks_what_loading_picks_without_the_data() {
    for case in &expected_cases() {
        let inv = inspect(fixture(&case.file)).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        let picked = with_select(&case.select, |s| inv.select(s)).unwrap();
        let want: Vec<(String, TensorInfo)> = case
            .tensors
            .iter()
            .map(|t| {
                let dtype = DType::from_safetensors_name(&t.dtype).unwrap();
                (
                    t.name.clone(),
                    TensorInfo {
                        dtype,
                        shape: t.shape.clone(),
                    },
                )
            })
            .collect();
        assert_eq!(picked, want, "{} {}", case.file, case.select);
    }
    // Every fixture: the inventory lists the loaded tree's tensors, in order.
    for name in [
        "flat_zip.pt",
        "flat_legacy.pt",
        "flat_p4_zip.pt",
        "flat_deflated.pt",
        "flat.safetensors",
        "nested.pt",
        "dataparallel_legacy.pt",
        "ddim_list.pt",
        "dlsm.pt",
        "dtypes_zip.pt",
        "dtypes_legacy.pt",
        "dtypes_bigendian.pt",
        "views_zip.pt",
        "views_legacy.pt",
        "bare_p2.pkl",
        "bare_p5.pkl",
    ] {
        let inv = inspect(fixture(name)).unwrap();
        let ckpt = Checkpoint::open(fixture(name)).unwrap();
        assert_eq!(inv.format(), ckpt.format(), "{name}");
        let mut loaded = Vec::new();
        collect_tensors(ckpt.root(), &mut loaded);
        let listed: Vec<(DType, Vec<usize>)> = inv.tensors().map(|(_, t)| (t.dtype, t.shape.clone())).collect();
        assert_eq!(listed, loaded, "{name}");
        assert_eq!(
            inv.numel(),
            loaded.iter().map(|(_, s)| s.iter().product::<usize>()).sum::<usize>()
        );
    }
}

fn collect_tensors(v: &Value, out: &mut Vec<(DType, Vec<usize>)>) {
    match v {
        Value::Tensor(t) => out.push((t.dtype, t.shape.clone())),
        Value::List(items) | Value::Tuple(items) => items.iter().for_each(|x| collect_tensors(x, out)),
        Value::Dict(e) => e.iter().for_each(|(k, x)| {
            collect_tensors(k, out);
            collect_tensors(x, out);
        }),
        _ => {}
    }
}

#[test]
fn inventories_show_nested_containers_with_dotted_paths() {
    // DLSM / score_sde: {'model': {...}, 'ema': {decay, num_updates, shadow_params: [...]},
    // 'optimizer': {...}, 'step': int}.
    let inv = inspect(fixture("dlsm.pt")).unwrap();
    assert_eq!(inv.format(), Format::TorchZip);
    assert_eq!(inv.get("step"), Some(&EntryKind::Value(Value::Int(17))));
    assert_eq!(inv.get("ema.decay"), Some(&EntryKind::Value(Value::Float(0.999))));
    assert_eq!(inv.get("ema.num_updates"), Some(&EntryKind::Value(Value::Int(17))));
    assert!(matches!(inv.get("ema.shadow_params.5"), Some(EntryKind::Tensor(_))));
    assert!(inv.get("ema.shadow_params.6").is_none());
    match inv.get("model.module.all_modules.0.W") {
        Some(EntryKind::Tensor(t)) => assert_eq!((t.dtype, t.shape.as_slice()), (DType::F32, &[4][..])),
        other => panic!("{other:?}"),
    }
    assert_eq!(inv.tensors().filter(|(k, _)| k.starts_with("model.module.")).count(), 8);
    assert_eq!(
        inv.get("optimizer.param_groups.0.lr"),
        Some(&EntryKind::Value(Value::Float(2e-4)))
    );
    assert!(inv.tensors().any(|(k, _)| k.starts_with("optimizer.state.0.exp_avg")));
    let e = inv.select(&Select::Auto).unwrap_err().to_string();
    assert!(e.contains("Select::EmaShadow"), "{e}");
    let ema = inv
        .select(&Select::EmaShadow {
            model: &["model"],
            shadow: &["ema", "shadow_params"],
            exclude: &["sigmas", "all_modules.0.W"],
        })
        .unwrap();
    assert_eq!(ema.len(), 8);
    assert_eq!(ema[0].0, "sigmas");

    // DDIM: [model state dict, optimizer state dict, epoch, step, ema state dict].
    let inv = inspect(fixture("ddim_list.pt")).unwrap();
    assert_eq!(inv.get("2"), Some(&EntryKind::Value(Value::Int(7))));
    assert_eq!(inv.get("3"), Some(&EntryKind::Value(Value::Int(1234))));
    assert_eq!(
        inv.get("1.param_groups.0.lr"),
        Some(&EntryKind::Value(Value::Float(1e-3)))
    );
    let ema = load_state_dict(fixture("ddim_list.pt")).unwrap();
    assert_eq!(inv.tensors().filter(|(k, _)| k.starts_with("4.")).count(), ema.len());
    assert_eq!(
        inv.select(&Select::Auto).unwrap(),
        inv.select(&Select::Path(&["-1"])).unwrap()
    );
    let first = inv.select(&Select::Path(&["0"])).unwrap();
    assert_eq!(first.len(), ema.len());

    // A bare pickle: values only, nested keys and indices spelled out.
    let inv = inspect(fixture("bare_p5.pkl")).unwrap();
    assert_eq!(inv.tensors().count(), 0);
    assert_eq!(inv.get("nested.k.deep.1.1.0"), Some(&EntryKind::Value(Value::Int(3))));
    assert_eq!(inv.get("c.1"), Some(&EntryKind::Value(Value::Int(2))));
    assert_eq!(
        inv.get("d"),
        Some(&EntryKind::Value(Value::Bytes(b"bytes\x00\xff".to_vec())))
    );
}

#[test]
fn formats_are_detected_from_content_not_extension() {
    let dir = scratch_dir("ext");
    for (name, format) in [
        ("flat_zip.pt", Format::TorchZip),
        ("flat_legacy.pt", Format::TorchLegacy),
        ("flat.safetensors", Format::SafeTensors),
        ("bare_p5.pkl", Format::Pickle),
    ] {
        let renamed = dir.join(format!("{name}.safetensors.bin"));
        std::fs::copy(fixture(name), &renamed).unwrap();
        assert_eq!(Checkpoint::open(&renamed).unwrap().format(), format, "{name}");
    }
    let a = load_state_dict(fixture("flat_zip.pt")).unwrap();
    let b = load_state_dict(fixture("flat_legacy.pt")).unwrap();
    let c = load_state_dict(fixture("flat_deflated.pt")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn object_trees_keep_the_non_tensor_values() {
    let nested = Checkpoint::open(fixture("nested.pt")).unwrap();
    assert_eq!(nested.root().get("epoch"), Some(&Value::Int(3)));
    assert!(nested.root().get("state_dict").unwrap().is_tensor_dict());

    let ddim = Checkpoint::open(fixture("ddim_list.pt")).unwrap();
    let items = ddim.root().as_list().unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[2], Value::Int(7));
    assert_eq!(items[3], Value::Int(1234));
    let groups = items[1].get("param_groups").unwrap().as_list().unwrap();
    assert_eq!(groups[0].get("lr").and_then(Value::as_f64), Some(1e-3));

    let dlsm = Checkpoint::open(fixture("dlsm.pt")).unwrap();
    let ema = dlsm.root().get("ema").unwrap();
    assert_eq!(ema.get("decay"), Some(&Value::Float(0.999)));
    assert_eq!(ema.get("num_updates"), Some(&Value::Int(17)));
    assert_eq!(ema.get("shadow_params").unwrap().as_list().unwrap().len(), 6);

    let dtypes = Checkpoint::open(fixture("dtypes_zip.pt")).unwrap();
    let scalar = dtypes.root().get("scalar_f16").unwrap().as_tensor().unwrap();
    assert_eq!((scalar.dtype, scalar.shape.len(), scalar.numel()), (DType::F16, 0, 1));
    assert_eq!(scalar.to_f32_vec().unwrap(), vec![1.5]);
}

#[test]
fn bare_pickles_of_both_protocols_agree() {
    let p2 = Checkpoint::open(fixture("bare_p2.pkl")).unwrap();
    let p5 = Checkpoint::open(fixture("bare_p5.pkl")).unwrap();
    assert_eq!(p2.root(), p5.root());
    let r = p5.root();
    assert_eq!(r.get("a"), Some(&Value::Int(1)));
    assert_eq!(
        r.get("b"),
        Some(&Value::List(vec![
            Value::Float(1.5),
            Value::Str("x".into()),
            Value::None,
            Value::Bool(true),
            Value::Bool(false)
        ]))
    );
    assert_eq!(r.get("c"), Some(&Value::Tuple(vec![Value::Int(1), Value::Int(2)])));
    assert_eq!(r.get("d"), Some(&Value::Bytes(b"bytes\x00\xff".to_vec())));
    assert_eq!(r.get("big"), Some(&Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0x40])));
    assert_eq!(r.get("neg"), Some(&Value::Int(-(1 << 40))));
    assert_eq!(r.get("s"), Some(&Value::List(vec![Value::Int(3)])));
    assert_eq!(r.get("unicode"), Some(&Value::Str("h\u{e9}llo \u{2603}".into())));
    let deep = r.get("nested").unwrap().get("k").unwrap().get("deep").unwrap();
    assert_eq!(
        deep,
        &Value::List(vec![
            Value::Int(1),
            Value::List(vec![Value::Int(2), Value::List(vec![Value::Int(3)])])
        ])
    );
    // No tensors: Auto explains what it found instead.
    let e = checkpoint_message(&p5.state_dict(&Select::Auto).unwrap_err());
    assert!(e.contains("top level") && e.contains("\"big\""), "{e}");
}

#[test]
fn auto_explains_the_dlsm_layout() {
    let e = checkpoint_message(&load_state_dict(fixture("dlsm.pt")).unwrap_err());
    assert!(e.contains("Select::EmaShadow") && e.contains("shadow_params"), "{e}");
    assert!(e.contains("Select::Path(&[\"model\"])"), "{e}");
    assert!(
        e.contains("8 entries") && e.contains("6 tensors") && e.contains("2 names"),
        "{e}"
    );
}

#[test]
fn ema_shadow_errors_name_the_mismatch() {
    let path = fixture("dlsm.pt");
    let sel = |exclude: &'static [&'static str]| Select::EmaShadow {
        model: &["model"],
        shadow: &["ema", "shadow_params"],
        exclude,
    };
    // A buffer missing from the exclude list: counts disagree.
    let e = checkpoint_message(&load_state_dict_with(&path, &sel(&["sigmas"])).unwrap_err());
    assert!(
        e.contains("count mismatch") && e.contains("6 tensors") && e.contains("7 names"),
        "{e}"
    );
    assert!(e.contains("exclude 1 more"), "{e}");
    // The right count but the wrong names: the first shape mismatch is named.
    let e = checkpoint_message(&load_state_dict_with(&path, &sel(&["sigmas", "all_modules.1.bias"])).unwrap_err());
    assert!(e.contains("shape mismatch") && e.contains("`all_modules.0.W`"), "{e}");
    // A name that does not exist.
    let e = checkpoint_message(&load_state_dict_with(&path, &sel(&["sigmas", "all_modules.0.w"])).unwrap_err());
    assert!(e.contains("\"all_modules.0.w\" is not in the model dict"), "{e}");
    // `module.`-prefixed exclude names are accepted too.
    let ok = load_state_dict_with(&path, &sel(&["module.sigmas", "module.all_modules.0.W"])).unwrap();
    assert_eq!(ok.len(), 8);
    // A path that leads nowhere lists what is there.
    let e = checkpoint_message(&load_state_dict_with(&path, &Select::Path(&["emma"])).unwrap_err());
    assert!(e.contains("no key \"emma\"") && e.contains("\"ema\""), "{e}");
    let e = checkpoint_message(&load_state_dict_with(&path, &Select::Path(&["ema", "shadow_params"])).unwrap_err());
    assert!(e.contains("Select::EmaShadow"), "{e}");
}

#[test]
fn list_paths_accept_negative_indices() {
    let last = load_state_dict_with(fixture("ddim_list.pt"), &Select::Path(&["-1"])).unwrap();
    let four = load_state_dict_with(fixture("ddim_list.pt"), &Select::Path(&["4"])).unwrap();
    assert_eq!(last, four);
    assert_eq!(last, load_state_dict(fixture("ddim_list.pt")).unwrap());
    assert!(load_state_dict_with(fixture("ddim_list.pt"), &Select::Path(&["5"])).is_err());
    assert!(load_state_dict_with(fixture("ddim_list.pt"), &Select::Path(&["-6"])).is_err());
}

const MARKERS: [&str; 2] = ["BOOMERANG_PICKLE_PAYLOAD_RAN", "BOOMERANG_ZIP_PAYLOAD_RAN"];

fn assert_no_payload_marker() {
    let dirs = [
        std::env::current_dir().unwrap(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::env::temp_dir(),
    ];
    for d in &dirs {
        for m in MARKERS {
            assert!(!d.join(m).exists(), "{} exists: a payload ran", d.join(m).display());
        }
    }
}

#[test]
fn malicious_pickles_are_refused_without_running_anything() {
    assert_no_payload_marker();
    for (name, global) in [
        ("malicious_reduce.pkl", "`os.system`"),
        ("malicious_zip.pt", "`posix.system`"),
    ] {
        let path = fixture(name);
        let e = Checkpoint::open(&path).unwrap_err();
        match &e {
            Error::Checkpoint { path: p, message } => {
                assert_eq!(p, &path);
                assert!(message.contains("refused to load"), "{message}");
                assert!(message.contains(global), "{message}");
                assert!(message.contains("never executes code"), "{message}");
                assert!(message.contains("torch.save(model.state_dict())"), "{message}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(load_state_dict(&path).is_err());
        let out = scratch_dir("malicious").join("out.safetensors");
        assert!(convert_to_safetensors(&path, &out, &Select::Auto).is_err());
        assert!(!out.exists());
    }
    assert_no_payload_marker();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn truncated_files_are_errors() {
    let dir = scratch_dir("truncated");
    for name in [
        "flat_zip.pt",
        "flat_legacy.pt",
        "views_legacy.pt",
        "dtypes_legacy.pt",
        "flat.safetensors",
        "flat_deflated.pt",
        "dlsm.pt",
        "bare_p5.pkl",
    ] {
        let full = std::fs::read(fixture(name)).unwrap();
        let step = if full.len() > 5000 { 7 } else { 1 };
        for cut in (0..full.len()).step_by(step) {
            let p = write(&dir, "cut.pt", &full[..cut]);
            let r = Checkpoint::open(&p);
            assert!(r.is_err(), "{name} cut at {cut} of {} loaded", full.len());
            assert!(load_state_dict(&p).is_err(), "{name} cut at {cut}");
        }
    }
}

#[test]
fn corrupt_and_foreign_files_are_clear_errors() {
    let dir = scratch_dir("corrupt");
    let cases: [(&str, &[u8], &str); 6] = [
        ("empty", b"", "empty"),
        (
            "text",
            b"just some notes about the model\n",
            "not a recognised checkpoint",
        ),
        (
            "lfs",
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n",
            "git lfs pull",
        ),
        ("html", b"<!DOCTYPE html>\n<html><body>Sign in</body></html>", "HTML"),
        (
            "garbage",
            &[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3],
            "not a recognised",
        ),
        (
            "zip-no-pkl",
            b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            "no data.pkl",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = write(&dir, name, bytes);
        let e = checkpoint_message(&Checkpoint::open(&p).unwrap_err());
        assert!(e.contains(want), "{name}: {e}");
    }
    let e = Checkpoint::open(dir.join("does-not-exist.pt")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");

    // A flipped byte inside a stored tensor record is caught by the zip CRC.
    let full = std::fs::read(fixture("flat_zip.pt")).unwrap();
    let pos = find(&full, b"/data/0").expect("record name") + 200;
    let mut bad = full.clone();
    bad[pos] ^= 0x40;
    let p = write(&dir, "flipped.pt", &bad);
    let e = checkpoint_message(&Checkpoint::open(&p).unwrap_err());
    assert!(e.contains("CRC"), "{e}");

    // Every single-byte flip of small fixtures: an error or a value, never a panic.
    for name in [
        "flat_legacy.pt",
        "views_zip.pt",
        "flat.safetensors",
        "bare_p2.pkl",
        "malicious_zip.pt",
    ] {
        let full = std::fs::read(fixture(name)).unwrap();
        for i in 0..full.len() {
            let mut m = full.clone();
            m[i] ^= 0xff;
            let p = write(&dir, "flip.pt", &m);
            let r = std::panic::catch_unwind(|| {
                let _ = Checkpoint::open(&p);
                let _ = load_state_dict(&p);
            });
            assert!(r.is_ok(), "{name}: flipping byte {i} panicked");
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const FUZZ_FIXTURES: [&str; 7] = [
    "flat_zip.pt",
    "flat_legacy.pt",
    "views_legacy.pt",
    "dtypes_zip.pt",
    "flat.safetensors",
    "bare_p5.pkl",
    "dlsm.pt",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_mutations_never_panic(
        which in 0usize..FUZZ_FIXTURES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let name = FUZZ_FIXTURES[which];
        let mut bytes = std::fs::read(fixture(name)).unwrap();
        for (at, v) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *v;
        }
        if let Some(c) = cut {
            let n = c.index(bytes.len());
            bytes.truncate(n);
        }
        let dir = scratch_dir("fuzz");
        let p = write(&dir, "m.pt", &bytes);
        let r = std::panic::catch_unwind(|| {
            if let Ok(c) = Checkpoint::open(&p) {
                let _ = c.state_dict(&Select::Auto);
            }
            let _ = load_state_dict(&p);
        });
        let _ = std::fs::remove_dir_all(&dir);
        prop_assert!(r.is_ok(), "{} with edits {:?} and cut {:?} panicked", name, edits, cut);
    }
}

#[test]
fn safetensors_round_trip_and_no_overwrite() {
    let dir = scratch_dir("save");
    let sd = load_state_dict(fixture("dtypes_zip.pt")).unwrap();
    let out = dir.join("model.safetensors");
    save_safetensors(&sd, &out).unwrap();
    let back = load_state_dict(&out).unwrap();
    assert_eq!(back, sd, "round trip changed the state dict (order included)");
    assert_eq!(Checkpoint::open(&out).unwrap().format(), Format::SafeTensors);

    // The reference implementation reads our file.
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), sd.len());
    for (name, t) in sd.iter() {
        let v = st.tensor(name).unwrap();
        assert_eq!(v.shape(), t.shape.as_slice(), "{name}");
        assert_eq!(format!("{:?}", v.dtype()), t.dtype.safetensors_name(), "{name}");
        assert_eq!(v.data(), t.data.as_slice(), "{name}");
    }

    // Refuses to overwrite, leaves the file as it was, and leaves no temporary file behind.
    let before = std::fs::read(&out).unwrap();
    let mut other = StateDict::new();
    other.insert("x".into(), TensorData::from_f32(vec![1], &[1.0]));
    let e = checkpoint_message(&save_safetensors(&other, &out).unwrap_err());
    assert!(e.contains("refusing to overwrite"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "stray files: {names:?}");

    // Inconsistent tensors are refused before anything is written.
    let mut broken = StateDict::new();
    broken.insert("bad".into(), TensorData::from_f32(vec![3], &[1.0]));
    let p = dir.join("broken.safetensors");
    assert!(matches!(save_safetensors(&broken, &p), Err(Error::Shape(_))));
    assert!(!p.exists());
}

#[test]
fn reads_safetensors_written_by_the_reference_implementation() {
    let dir = scratch_dir("reference");
    let sd = load_state_dict(fixture("views_zip.pt")).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = sd
        .iter()
        .map(|(k, t)| {
            let dtype = match t.dtype {
                DType::F32 => safetensors::Dtype::F32,
                other => panic!("unexpected {other}"),
            };
            (
                k.to_string(),
                safetensors::tensor::TensorView::new(dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    let p = dir.join("ref.safetensors");
    safetensors::tensor::serialize_to_file(views, &None, &p).unwrap();
    let back = load_state_dict(&p).unwrap();
    assert_eq!(back.len(), sd.len());
    for (k, t) in sd.iter() {
        assert_eq!(back.get(k), Some(t), "{k}");
    }
}

#[test]
fn convert_to_safetensors_writes_the_selected_weights() {
    let dir = scratch_dir("convert");
    let out = dir.join("flat.safetensors");
    let written = convert_to_safetensors(fixture("flat_zip.pt"), &out, &Select::Auto).unwrap();
    let original = load_state_dict(fixture("flat_zip.pt")).unwrap();
    assert_eq!(written, original);
    assert_eq!(load_state_dict(&out).unwrap(), original);
    let e = convert_to_safetensors(fixture("flat_zip.pt"), &out, &Select::Auto).unwrap_err();
    assert!(checkpoint_message(&e).contains("refusing to overwrite"));

    let out = dir.join("dlsm_ema.safetensors");
    let sel = Select::EmaShadow {
        model: &["model"],
        shadow: &["ema", "shadow_params"],
        exclude: &["sigmas", "all_modules.0.W"],
    };
    let written = convert_to_safetensors(fixture("dlsm.pt"), &out, &sel).unwrap();
    assert_eq!(load_state_dict(&out).unwrap(), written);
    assert_eq!(written.keys().next(), Some("sigmas"));
}

#[test]
fn public_helpers_behave() {
    let mut sd = load_state_dict_with(fixture("dlsm.pt"), &Select::Path(&["model"])).unwrap();
    assert!(sd.keys().all(|k| !k.starts_with("module.")));
    assert!(!sd.strip_prefix("all_modules."));
    let w = sd.remove("all_modules.0.W").unwrap();
    assert_eq!(w.shape, vec![4]);
    assert!(sd.get("all_modules.0.W").is_none());
    let entries = sd.clone().into_entries();
    assert_eq!(entries.len(), sd.len());
    assert_eq!(entries[0].0, "sigmas");
    assert_eq!(checkpoint::DType::BF16.size_in_bytes(), 2);
    let t = TensorData::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(t.numel(), 4);
    assert_eq!(t.to_f32_vec().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}
