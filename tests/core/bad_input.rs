//! Bad input gets a clear error, never a panic.

use boomerang::analytic::{EmpiricalDenoiser, GaussianDenoiser};
use boomerang::image_io::{load_image, ColorMode};
use boomerang::schedule::{DiscreteSchedule, VeSde};
use boomerang::{Boomerang, DataRange, Error, Sampler, Spacing, TimeSpec, Variance};
use ndarray::Array4;
use rand::SeedableRng;

fn rng() -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(0)
}

fn runner() -> Boomerang<EmpiricalDenoiser> {
    let data = Array4::<f32>::zeros((2, 3, 8, 8));
    Boomerang::builder(
        EmpiricalDenoiser::new(data, DataRange::MinusOneToOne).unwrap(),
        DiscreteSchedule::linear(100, 1e-4, 0.2).unwrap(),
    )
    .build()
    .unwrap()
}

fn msg(e: Error) -> String {
    e.to_string()
}

#[test]
fn t_out_of_range() {
    let r = runner();
    let x = Array4::<f32>::zeros((1, 3, 8, 8));
    for t in [
        TimeSpec::fraction(0.0),
        TimeSpec::fraction(-0.1),
        TimeSpec::fraction(1.5),
        TimeSpec::fraction(f64::NAN),
        TimeSpec::step(0),
        TimeSpec::step(100),
        TimeSpec::fraction(0.001),
    ] {
        let e = r.run(x.view(), t, &mut rng()).unwrap_err();
        assert!(matches!(e, Error::InvalidParameter { name: "t", .. }), "{t:?}: {e}");
    }
    assert!(msg(r.run(x.view(), TimeSpec::step(100), &mut rng()).unwrap_err()).contains("1..=99"));
    // An SDE refuses times below its smallest time.
    let ve = Boomerang::builder(GaussianDenoiser::new(0.0, 1.0).unwrap(), VeSde::dlsm_cifar())
        .sampler(Sampler::predictor_corrector())
        .build()
        .unwrap();
    assert!(ve.run(x.view(), TimeSpec::fraction(1e-6), &mut rng()).is_err());
}

#[test]
fn nan_inf_pixels() {
    let r = runner();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = Array4::<f32>::zeros((2, 3, 8, 8));
        x[[1, 2, 3, 4]] = bad;
        let e = r.run(x.view(), TimeSpec::fraction(0.5), &mut rng()).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e}");
        assert!(msg(e).contains("[1, 2, 3, 4]"));
    }
}

#[test]
fn wrong_shapes_and_empty_batch() {
    let r = runner();
    let e = r
        .run(
            Array4::<f32>::zeros((1, 1, 8, 8)).view(),
            TimeSpec::fraction(0.5),
            &mut rng(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Shape(_)) && msg(e).contains("3 channels"));
    let e = r
        .run(
            Array4::<f32>::zeros((1, 3, 9, 8)).view(),
            TimeSpec::fraction(0.5),
            &mut rng(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Shape(_)));
    let e = r
        .run(
            Array4::<f32>::zeros((0, 3, 8, 8)).view(),
            TimeSpec::fraction(0.5),
            &mut rng(),
        )
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)) && msg(e).contains("empty"));
    // (A wrong rank cannot reach the runner: it takes `ArrayView4`, so rank is checked by the
    // compiler; image files always decode to rank 4.)
}

#[test]
fn incompatible_components() {
    let g = || GaussianDenoiser::new(0.0, 1.0).unwrap();
    let vp = || DiscreteSchedule::linear(100, 1e-4, 0.2).unwrap();
    assert!(matches!(
        Boomerang::builder(g(), vp())
            .sampler(Sampler::predictor_corrector())
            .build(),
        Err(Error::Incompatible(_))
    ));
    assert!(matches!(
        Boomerang::builder(g(), VeSde::dlsm_cifar())
            .sampler(Sampler::ddpm())
            .build(),
        Err(Error::Incompatible(_))
    ));
    assert!(matches!(
        Boomerang::builder(g(), vp()).sampler(Sampler::ddim(1.5)).build(),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        Boomerang::builder(g(), vp()).spacing(Spacing::Uniform(0)).build(),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        Boomerang::builder(g(), vp())
            .sampler(Sampler::Ddpm {
                variance: Variance::Learned
            })
            .build(),
        Err(Error::Incompatible(_))
    ));
    assert!(
        Boomerang::builder(g(), DiscreteSchedule::cosine(100, 0.008, 0.999).unwrap())
            .spacing(Spacing::FastDpmVar {
                steps: 10,
                kind: boomerang::sampler::FastDpmKind::Linear
            })
            .build()
            .is_err()
    );
}

#[test]
fn unreadable_images() {
    let dir = std::env::temp_dir().join(format!("boomerang-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.png");
    assert!(matches!(
        load_image(&missing, ColorMode::Rgb, DataRange::MinusOneToOne),
        Err(Error::Io { .. })
    ));
    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"not an image at all").unwrap();
    let e = load_image(&garbage, ColorMode::Rgb, DataRange::MinusOneToOne).unwrap_err();
    assert!(matches!(e, Error::Image { .. }) && msg(e).contains("garbage.png"));
    // A truncated PNG.
    let png = dir.join("ok.png");
    boomerang::image_io::save_image(
        &png,
        Array4::<f32>::zeros((1, 3, 8, 8)).index_axis(ndarray::Axis(0), 0),
        DataRange::MinusOneToOne,
    )
    .unwrap();
    let bytes = std::fs::read(&png).unwrap();
    let cut = dir.join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(load_image(&cut, ColorMode::Rgb, DataRange::MinusOneToOne).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
