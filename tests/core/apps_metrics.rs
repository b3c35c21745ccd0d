//! MSE, PSNR and SSIM against scikit-image (tools/make_lpips_fixtures.py) and hand-derived
//! values.

use boomerang::apps::metrics::{batch_distances, distances, mse, psnr, psnr_from_mse, ssim, SsimConfig};
use boomerang::DataRange;
use ndarray::{Array3, Array4};

fn reference() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lpips/metrics_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn array(v: &serde_json::Value, shape: &[usize]) -> Array3<f32> {
    let data: Vec<f32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Array3::from_shape_vec((shape[0], shape[1], shape[2]), data).unwrap()
}

#[test]
fn matches_scikit_image() {
    let r = reference();
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for c in cases {
        let shape: Vec<usize> = c["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let a = array(&c["a"], &shape);
        let b = array(&c["b"], &shape);
        let name = c["name"].as_str().unwrap();
        let m = mse(a.view(), b.view()).unwrap();
        let p = psnr(a.view(), b.view(), 1.0).unwrap();
        let s = ssim(a.view(), b.view(), &SsimConfig::default()).unwrap();
        let (rm, rp, rs) = (
            c["mse"].as_f64().unwrap(),
            c["psnr"].as_f64().unwrap(),
            c["ssim"].as_f64().unwrap(),
        );
        // Both sides compute in f64 from the same f32 pixels: only summation order differs.
        assert!((m - rm).abs() <= 1e-12 * rm.max(1e-3), "{name}: mse {m} vs {rm}");
        assert!((p - rp).abs() <= 1e-9, "{name}: psnr {p} vs {rp}");
        assert!((s - rs).abs() <= 1e-9, "{name}: ssim {s} vs {rs}");
        // distances() on [0, 1] data is the same thing.
        let d = distances(a.view(), b.view(), DataRange::ZeroToOne).unwrap();
        assert!((d.ssim.unwrap() - rs).abs() <= 1e-9 && (d.psnr - rp).abs() <= 1e-9);
    }
}

#[test]
fn hand_derived_values() {
    let a = Array3::<f32>::from_shape_fn((3, 16, 16), |(c, y, x)| ((c * 5 + y * 3 + x) % 11) as f32 / 20.0);
    // Identical images: SSIM 1, PSNR infinite, MSE 0.
    assert_eq!(mse(a.view(), a.view()).unwrap(), 0.0);
    assert!(psnr(a.view(), a.view(), 1.0).unwrap().is_infinite());
    assert!((ssim(a.view(), a.view(), &SsimConfig::default()).unwrap() - 1.0).abs() < 1e-12);
    // A constant offset d: MSE d², PSNR 10·log10(R²/d²).
    for (d, range) in [(0.05f32, 1.0), (0.1, 1.0), (0.25, 2.0)] {
        let b = a.mapv(|v| v + d);
        let want = 10.0 * ((range * range) / (d as f64 * d as f64)).log10();
        let got = psnr(a.view(), b.view(), range).unwrap();
        assert!((got - want).abs() < 1e-4, "offset {d}: {got} vs {want}");
    }
    // In [-1, 1], an offset of 0.2 is 0.1 on the [0, 1] scale: 20 dB, MSE 0.01.
    let x = a.mapv(|v| 2.0 * v - 1.0);
    let y = x.mapv(|v| v + 0.2);
    let d = distances(y.view(), x.view(), DataRange::MinusOneToOne).unwrap();
    assert!((d.psnr - 20.0).abs() < 1e-4 && (d.mse - 0.01).abs() < 1e-7, "{d:?}");
    // A constant offset leaves the structure term at 1: SSIM is the luminance term's mean.
    let s = ssim(a.view(), a.mapv(|v| v + 0.1).view(), &SsimConfig::default()).unwrap();
    assert!(s < 1.0 && s > 0.9, "{s}");
    // Symmetric.
    let b = a.mapv(|v| (v * 1.7).sin());
    let c = SsimConfig::default();
    assert!((ssim(a.view(), b.view(), &c).unwrap() - ssim(b.view(), a.view(), &c).unwrap()).abs() < 1e-12);
    assert_eq!(psnr_from_mse(0.0, 1.0), f64::INFINITY);
}

#[test]
fn bad_inputs_are_errors() {
    let a = Array3::<f32>::zeros((3, 16, 16));
    let b = Array3::<f32>::zeros((3, 16, 15));
    assert!(mse(a.view(), b.view()).is_err());
    assert!(ssim(a.view(), b.view(), &SsimConfig::default()).is_err());
    let mut n = a.clone();
    n[[0, 1, 1]] = f32::NAN;
    assert!(mse(a.view(), n.view()).is_err());
    assert!(psnr(a.view(), a.view(), 0.0).is_err());
    let small = Array3::<f32>::zeros((3, 8, 8));
    assert!(ssim(small.view(), small.view(), &SsimConfig::default()).is_err());
    // distances() reports no SSIM for images smaller than the window instead of failing.
    assert_eq!(
        distances(small.view(), small.view(), DataRange::ZeroToOne)
            .unwrap()
            .ssim,
        None
    );
    let even = SsimConfig {
        window: 10,
        ..SsimConfig::default()
    };
    assert!(ssim(a.view(), a.view(), &even).is_err());
    let x = Array4::<f32>::zeros((2, 3, 16, 16));
    let y = Array4::<f32>::zeros((3, 3, 16, 16));
    assert!(batch_distances(x.view(), y.view(), DataRange::ZeroToOne).is_err());
}

#[test]
fn manifest_serialisation_writes_null_for_infinite_psnr() {
    let a = Array3::<f32>::zeros((3, 16, 16));
    let d = distances(a.view(), a.view(), DataRange::ZeroToOne).unwrap();
    let text = serde_json::to_string(&d).unwrap();
    assert_eq!(text, r#"{"mse":0.0,"psnr":null,"ssim":1.0}"#);
    let back: boomerang::apps::metrics::Distances = serde_json::from_str(&text).unwrap();
    assert!(back.psnr.is_infinite());
}
