//! The procedural family and its membership test.

use boomerang::shapes::{ShapeKind, Shapes};
use ndarray::{Array3, Axis};
use ndarray_rand::rand_distr::Uniform;
use ndarray_rand::RandomExt;
use rand::SeedableRng;

#[test]
fn members_are_explained_and_other_images_are_not() {
    let fam = Shapes::new(32).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let batch = fam.sample(40, &mut rng);
    let mut worst_member = 0f32;
    let mut kinds_right = 0;
    let mut rng2 = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for img in batch.axis_iter(Axis(0)) {
        let truth = fam.sample_params(&mut rng2);
        let fit = fam.fit(img).unwrap();
        assert!(fam.is_member(&fit), "{fit:?} of {truth:?}");
        worst_member = worst_member.max(fit.rmse);
        kinds_right += (fit.params.kind == truth.kind) as usize;
    }
    // Members: the fit reproduces them up to a few edge pixels (measured worst 0.14, every
    // kind recovered); noise measures 0.58 and a two-shape image 0.53.
    assert!(worst_member < 0.2, "worst member rmse {worst_member}");
    assert!(kinds_right >= 38, "kind recovered for {kinds_right}/40");
    // Non-members: uniform noise, and two shapes in one image, are poorly explained.
    let noise = Array3::random_using((3, 32, 32), Uniform::new(-1.0f32, 1.0), &mut rng);
    assert!(fam.fit(noise.view()).unwrap().rmse > 0.4);
    let a = fam.sample(2, &mut rng);
    let mut two = a.index_axis(Axis(0), 0).to_owned();
    let second = fam.render(&boomerang::shapes::ShapeParams {
        kind: ShapeKind::Square,
        cy: 6.0,
        cx: 26.0,
        size: 4.0,
        color: [1.0, 1.0, 1.0],
        background: [-1.0; 3],
    });
    ndarray::Zip::from(&mut two).and(&second).for_each(|t, &s| {
        if s > 0.5 {
            *t = s
        }
    });
    assert!(fam.fit(two.view()).unwrap().rmse > 0.3);
    assert!(fam.fit(ndarray::Array3::<f32>::zeros((3, 16, 16)).view()).is_err());
}

#[test]
fn membership_also_needs_the_family_s_parameters() {
    let fam = Shapes::new(32).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let member = fam.sample_params(&mut rng);
    // Well explained by a shape, but not one the family draws: a bright background, a
    // colour out of range, a tiny or huge shape, a shape cut by the border.
    let outsiders = [
        boomerang::shapes::ShapeParams {
            background: [0.2, -0.8, -0.8],
            ..member
        },
        boomerang::shapes::ShapeParams {
            color: [-0.5, 0.5, 0.5],
            ..member
        },
        boomerang::shapes::ShapeParams {
            kind: ShapeKind::Disc,
            size: 2.5,
            cy: 16.0,
            cx: 16.0,
            ..member
        },
        boomerang::shapes::ShapeParams {
            kind: ShapeKind::Square,
            size: 12.0,
            cy: 16.0,
            cx: 16.0,
            ..member
        },
        boomerang::shapes::ShapeParams {
            kind: ShapeKind::Square,
            size: 6.0,
            cy: 2.0,
            cx: 16.0,
            ..member
        },
    ];
    assert!(fam.is_member(&fam.fit(fam.render(&member).view()).unwrap()));
    for (i, p) in outsiders.into_iter().enumerate() {
        let fit = fam.fit(fam.render(&p).view()).unwrap();
        // All but the cut shape are explained as well as members are: the fit error alone
        // would let them in.
        if i < 4 {
            assert!(fit.rmse < Shapes::MEMBER_RMSE, "{p:?} renders a clean shape: {fit:?}");
        }
        assert!(!fam.is_member(&fit), "{p:?} is not a member: {fit:?}");
    }
}
