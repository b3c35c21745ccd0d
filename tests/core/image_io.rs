//! Images <-> arrays and resizing.

use boomerang::image_io::{self, ColorMode, ResizeFilter};
use boomerang::DataRange;
use ndarray::{Array4, Axis};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("boomerang-io-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn png_round_trip_is_exact_on_8_bit_values_in_both_ranges() {
    let dir = tmpdir("rt");
    for range in [DataRange::MinusOneToOne, DataRange::ZeroToOne] {
        let (lo, hi) = range.bounds();
        // Values on the 8-bit grid survive encode/decode exactly (up to f32 rounding).
        let x = Array4::from_shape_fn((1, 3, 5, 7), |(_, c, h, w)| {
            lo + (hi - lo) * ((c * 35 + h * 7 + w) * 2) as f32 / 255.0
        });
        let p = dir.join("a.png");
        image_io::save_image(&p, x.index_axis(Axis(0), 0), range).unwrap();
        let y = image_io::load_image(&p, ColorMode::Rgb, range).unwrap();
        assert_eq!(y.dim(), (1, 3, 5, 7));
        let err = (&y - &x).mapv(f32::abs).fold(0.0f32, |a, &b| a.max(b));
        assert!(err < 1e-6, "{range:?}: {err}");
        // Gray: luma of equal channels is that value.
        let g = image_io::load_image(&p, ColorMode::Gray, range).unwrap();
        assert_eq!(g.dim(), (1, 1, 5, 7));
    }
    // No temporary file is left behind.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn out_of_range_values_are_clamped_on_save_and_bad_arrays_refused() {
    let dir = tmpdir("clamp");
    let x = Array4::from_elem((1, 3, 2, 2), 5.0f32);
    let p = dir.join("c.png");
    image_io::save_image(&p, x.index_axis(Axis(0), 0), DataRange::MinusOneToOne).unwrap();
    let y = image_io::load_image(&p, ColorMode::Rgb, DataRange::MinusOneToOne).unwrap();
    assert!(y.iter().all(|&v| v == 1.0));
    let two = Array4::<f32>::zeros((1, 2, 2, 2));
    assert!(image_io::save_image(dir.join("d.png"), two.index_axis(Axis(0), 0), DataRange::ZeroToOne).is_err());
    assert!(image_io::save_image(dir.join("d.xyz"), x.index_axis(Axis(0), 0), DataRange::ZeroToOne).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resize_known_values() {
    // 2×2 -> 4×4 bilinear (half-pixel centres, edge clamped as PIL does):
    // row [0, 1] becomes [0, 0.25, 0.75, 1].
    let x = Array4::from_shape_vec((1, 1, 2, 2), vec![0.0f32, 1.0, 0.0, 1.0]).unwrap();
    let y = image_io::resize(x.view(), 4, 4, ResizeFilter::Bilinear).unwrap();
    for row in y.index_axis(Axis(0), 0).index_axis(Axis(0), 0).rows() {
        let v: Vec<f32> = row.to_vec();
        for (a, b) in v.iter().zip([0.0, 0.25, 0.75, 1.0]) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }
    // Nearest upsampling by 2 repeats pixels.
    let y = image_io::resize(x.view(), 4, 4, ResizeFilter::Nearest).unwrap();
    assert_eq!(y[[0, 0, 3, 1]], 0.0);
    assert_eq!(y[[0, 0, 3, 2]], 1.0);
    // Every filter keeps a constant image constant (weights sum to one), at any scale.
    let c = Array4::from_elem((2, 3, 7, 5), 0.3f32);
    for f in [ResizeFilter::Nearest, ResizeFilter::Bilinear, ResizeFilter::Bicubic] {
        for (h, w) in [(21, 15), (3, 2), (10, 11)] {
            let y = image_io::resize(c.view(), h, w, f).unwrap();
            assert!(y.iter().all(|&v| (v - 0.3).abs() < 1e-6), "{f:?} {h}x{w}");
        }
    }
    // Bicubic reproduces a linear ramp in the interior (cubic convolution is exact on lines).
    let ramp = Array4::from_shape_fn((1, 1, 1, 16), |(_, _, _, w)| w as f32);
    let y = image_io::resize(ramp.view(), 1, 32, ResizeFilter::Bicubic).unwrap();
    for o in 4..28 {
        let expect = (o as f32 + 0.5) / 2.0 - 0.5;
        assert!((y[[0, 0, 0, o]] - expect).abs() < 1e-4, "{o}: {}", y[[0, 0, 0, o]]);
    }
    assert!(image_io::resize(c.view(), 0, 4, ResizeFilter::Bicubic).is_err());
}

#[test]
fn grid_tiles_images() {
    let b = Array4::from_shape_fn((3, 1, 2, 2), |(n, _, _, _)| n as f32);
    let g = image_io::grid(b.view(), 2, 1, -1.0).unwrap();
    assert_eq!(g.dim(), (1, 2 * 2 + 3, 2 * 2 + 3));
    assert_eq!(g[[0, 1, 1]], 0.0);
    assert_eq!(g[[0, 1, 4]], 1.0);
    assert_eq!(g[[0, 4, 1]], 2.0);
    assert_eq!(g[[0, 4, 4]], -1.0);
}
