//! LPIPS (AlexNet, v0.1) against the `lpips` PyPI package on random weights
//! (tools/make_lpips_fixtures.py): same distances, per layer and per item, in a batch or not.

use boomerang::apps::metrics::Lpips;
use boomerang::checkpoint::{load_state_dict, StateDict};
use boomerang::DataRange;
use ndarray::{stack, Array3, Axis};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/lpips");

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/lpips_reference.json")).unwrap()).unwrap()
}

fn inputs() -> StateDict {
    load_state_dict(format!("{DIR}/lpips_inputs.pt")).unwrap()
}

fn image(sd: &StateDict, name: &str) -> Array3<f32> {
    let t = sd.get(name).unwrap();
    Array3::from_shape_vec((t.shape[0], t.shape[1], t.shape[2]), t.to_f32_vec().unwrap()).unwrap()
}

fn close(got: f32, want: f64, what: &str) {
    // f32 convolutions in a different order than PyTorch's: relative 1e-4 plus a floor.
    let tol = 1e-4 * want.abs() + 1e-7;
    assert!((got as f64 - want).abs() <= tol, "{what}: {got} vs {want}");
}

#[test]
fn matches_the_lpips_package_on_random_weights() {
    let lpips = Lpips::load(&[format!("{DIR}/alex_random_fp16.pt")], tch::Device::Cpu).unwrap();
    let r = reference();
    let sd = inputs();
    for pair in r["pairs"].as_array().unwrap() {
        let i = pair["pair"].as_u64().unwrap();
        let a = image(&sd, &format!("pair{i}.a")).insert_axis(Axis(0));
        let b = image(&sd, &format!("pair{i}.b")).insert_axis(Axis(0));
        let got = lpips.distance_layers(a.view(), b.view()).unwrap();
        close(got[0].0, pair["distance"].as_f64().unwrap(), &format!("pair {i}"));
        for (l, want) in pair["layers"].as_array().unwrap().iter().enumerate() {
            close(got[0].1[l], want.as_f64().unwrap(), &format!("pair {i} layer {l}"));
        }
        // Symmetric, and zero for identical images.
        let back = lpips.distance(b.view(), a.view()).unwrap();
        close(back[0], pair["distance"].as_f64().unwrap(), "symmetry");
        assert_eq!(lpips.distance(a.view(), a.view()).unwrap()[0], 0.0);
        // The same through another data range.
        let a01 = a.mapv(|v| (v + 1.0) / 2.0);
        let b01 = b.mapv(|v| (v + 1.0) / 2.0);
        let via = lpips
            .distance_in_range(a01.view(), b01.view(), DataRange::ZeroToOne)
            .unwrap();
        close(via[0], pair["distance"].as_f64().unwrap(), "range");
    }
    // A batch of two gives the package's batched values.
    let a = stack(Axis(0), &[image(&sd, "pair0.a").view(), image(&sd, "pair1.a").view()]).unwrap();
    let b = stack(Axis(0), &[image(&sd, "pair0.b").view(), image(&sd, "pair1.b").view()]).unwrap();
    let got = lpips.distance(a.view(), b.view()).unwrap();
    for (g, w) in got.iter().zip(r["batch_of_pairs_0_1"].as_array().unwrap()) {
        close(*g, w.as_f64().unwrap(), "batch");
    }
}

#[test]
fn torchvision_and_heads_in_separate_files() {
    // Split the fixture into torchvision's AlexNet layout (`features.N.*`) and the package's
    // head file (`linK.model.1.weight`), as users have them.
    let full = load_state_dict(format!("{DIR}/alex_random_fp16.pt")).unwrap();
    let mut trunk = StateDict::new();
    let mut heads = StateDict::new();
    for (k, t) in full.iter() {
        if let Some(rest) = k.strip_prefix("net.slice") {
            let (_, name) = rest.split_once('.').unwrap();
            trunk.insert(format!("features.{name}"), t.clone());
        } else {
            heads.insert(k.to_string(), t.clone());
        }
    }
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lpips-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    boomerang::checkpoint::save_safetensors(&trunk, root.join("alexnet.safetensors")).unwrap();
    boomerang::checkpoint::save_safetensors(&heads, root.join("heads.safetensors")).unwrap();
    let split = Lpips::load(
        &[root.join("alexnet.safetensors"), root.join("heads.safetensors")],
        tch::Device::Cpu,
    )
    .unwrap();
    let sd = inputs();
    let a = image(&sd, "pair2.a").insert_axis(Axis(0));
    let b = image(&sd, "pair2.b").insert_axis(Axis(0));
    let want = reference()["pairs"][2]["distance"].as_f64().unwrap();
    close(split.distance(a.view(), b.view()).unwrap()[0], want, "split files");

    // The trunk alone is an error that says what is missing; so are bad inputs.
    let err = Lpips::load(&[root.join("alexnet.safetensors")], tch::Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("lin0.model.1.weight"), "{err}");
    let gray = a.slice(ndarray::s![.., 0..1, .., ..]).to_owned();
    assert!(split.distance(gray.view(), gray.view()).is_err());
    let small = a.slice(ndarray::s![.., .., 0..16, 0..16]).to_owned();
    assert!(split.distance(small.view(), small.view()).is_err());
    assert!(split.distance(a.view(), small.view()).is_err());
    let _ = std::fs::remove_dir_all(&root);
}
