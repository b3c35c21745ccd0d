//! Per-folder class labels: anonymizing and augmenting a class-per-folder dataset with a
//! class-conditional model samples each image with its folder's label, in one batch of
//! mixed labels, records the label, and refuses to resume with other labels.

use boomerang::apps::anonymize::{read_manifest, AnonymizeJob};
use boomerang::apps::augment::{AugmentJob, TimeChoice};
use boomerang::apps::classes::ClassFolders;
use boomerang::image_io::{load_image, ColorMode};
use boomerang::schedule::DiscreteSchedule;
use boomerang::{
    Boomerang, Condition, DataRange, DenoiserSpec, FnDenoiser, Parameterization, Sampler, Spacing, TimeInput, TimeSpec,
};
use ndarray::{Array4, ArrayView4};

use crate::cli_common::{make_dataset, scratch};

/// A class-conditional x0 "network": it predicts the flat grey `label/4 − 0.5` whatever the
/// input, so a deterministic DDIM run from `t = 1` ends exactly there and the output's grey
/// level shows which label each image was sampled with.
fn by_label(x: ArrayView4<'_, f32>, _t: &[f64], c: &Condition) -> boomerang::Result<Array4<f32>> {
    let Condition::Class(labels) = c else {
        return Err(boomerang::Error::InvalidInput("class-conditional: pass labels".into()));
    };
    let mut out = Array4::zeros(x.raw_dim());
    for (mut item, &l) in out.outer_iter_mut().zip(labels) {
        item.fill(l as f32 / 4.0 - 0.5);
    }
    Ok(out)
}

type Model = FnDenoiser<fn(ArrayView4<'_, f32>, &[f64], &Condition) -> boomerang::Result<Array4<f32>>>;

fn runner() -> Boomerang<Model> {
    let spec = DenoiserSpec::new(Parameterization::Sample, TimeInput::Step, DataRange::MinusOneToOne);
    let model: Model = FnDenoiser::new(spec, by_label);
    Boomerang::builder(model, DiscreteSchedule::ddpm().unwrap())
        .sampler(Sampler::ddim(0.0))
        .spacing(Spacing::Uniform(10))
        .build()
        .unwrap()
}

/// The mean grey level of an image file, in [-1, 1].
fn grey(path: &std::path::Path) -> f32 {
    let img = load_image(path, ColorMode::Rgb, DataRange::MinusOneToOne).unwrap();
    img.mean().unwrap()
}

#[test]
fn augment_labels_each_image_by_its_class_folder() {
    let root = scratch("class-folders-augment");
    let input = root.join("in");
    make_dataset(&input, &["cat", "dog"], 3, 8);
    let mut job = AugmentJob::new(&input, root.join("out"), TimeChoice::Fixed(TimeSpec::fraction(1.0)));
    job.copies = 2;
    job.batch_size = 4; // batches mix both classes
    job.class_folders = Some(ClassFolders::Auto);
    let report = job.run(&runner(), &mut |_, _| {}).unwrap();
    assert_eq!(report.written, 12);
    assert_eq!(
        report.classes.as_ref().unwrap().describe(),
        "2 class folders by sorted name: cat=0, dog=1"
    );
    for (class, want) in [("cat", -0.5), ("dog", -0.25)] {
        for i in 0..3 {
            for k in 0..2 {
                let g = grey(&root.join(format!("out/{class}/img{i}_boom{k}.png")));
                // 8-bit PNG quantization: half a step of 2/255.
                assert!(
                    (g - want).abs() < 0.005,
                    "{class}/img{i} copy {k}: grey {g}, label's {want}"
                );
            }
        }
    }
    let manifest = std::fs::read_to_string(root.join("out/augment-manifest.jsonl")).unwrap();
    assert!(manifest.lines().all(|l| l.contains("\"label\":")), "{manifest}");

    // The same folder with other labels (a map) is not "the same settings".
    let map = root.join("map.json");
    std::fs::write(&map, r#"{"cat": 3, "dog": 1}"#).unwrap();
    job.existing = boomerang::apps::augment::Existing::Skip;
    job.class_folders = Some(ClassFolders::read_map(&map).unwrap());
    let err = job.run(&runner(), &mut |_, _| {}).unwrap_err().to_string();
    assert!(
        err.contains("class label of cat/") && err.contains("0 there, 3 now"),
        "{err}"
    );
    // With the labels it was made with, everything is kept.
    job.class_folders = Some(ClassFolders::Sorted);
    let again = job.run(&runner(), &mut |_, _| {}).unwrap();
    assert_eq!((again.written, again.existing), (0, 12));
}

#[test]
fn anonymize_takes_numbered_folders_as_labels_in_every_batch_size() {
    let root = scratch("class-folders-anonymize");
    let input = root.join("in");
    make_dataset(&input, &["1", "3", "10"], 2, 8);
    let mut outputs = Vec::new();
    for (name, batch) in [("b1", 1), ("b4", 4)] {
        let mut job = AnonymizeJob::new(&input, root.join(name), TimeSpec::fraction(1.0));
        job.batch_size = batch;
        job.class_folders = Some(ClassFolders::Auto);
        let report = job.run(&runner(), &mut |_| {}).unwrap();
        assert_eq!(report.written, 6, "{:?}", report.failures);
        assert_eq!(report.classes.as_ref().unwrap().rule(), "by number");
        outputs.push(crate::cli_common::images(&root.join(name)));
        let entries = read_manifest(&report.manifest).unwrap();
        for e in &entries {
            let folder: i64 = e.input.split('/').next().unwrap().parse().unwrap();
            assert_eq!(e.label, Some(folder), "{}", e.input);
            let g = grey(&root.join(name).join(&e.output));
            let want = folder as f32 / 4.0 - 0.5;
            // Label 10 lies outside [-1, 1] and is clipped by the PNG.
            assert!((g - want.min(1.0)).abs() < 0.005, "{}: grey {g}, want {want}", e.input);
        }
    }
    assert_eq!(outputs[0], outputs[1], "results depend on the batch size");
}

#[test]
fn labels_are_refused_where_they_cannot_be_used() {
    let root = scratch("class-folders-refused");
    let input = root.join("in");
    make_dataset(&input, &["cat"], 1, 8);
    std::fs::copy(input.join("cat/img0.png"), input.join("loose.png")).unwrap();
    let mut job = AnonymizeJob::new(&input, root.join("out"), TimeSpec::fraction(0.5));
    job.class_folders = Some(ClassFolders::Auto);
    let err = job.run(&runner(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("loose.png lies in the dataset's root"), "{err}");
    assert!(!root.join("out").exists(), "nothing may be written before the checks");

    // A pipeline that takes no per-image condition says so.
    struct Fixed(Boomerang<Model>);
    impl boomerang::core::pipeline::Pipeline for Fixed {
        fn input(&self) -> boomerang::core::pipeline::ModelInput {
            self.0.input()
        }
        fn start_time(&self, t: TimeSpec) -> boomerang::Result<f64> {
            self.0.start_time(t)
        }
        fn sample(
            &self,
            images: ArrayView4<'_, f32>,
            t: TimeSpec,
            noise: &mut boomerang::NoiseStreams,
        ) -> boomerang::Result<Array4<f32>> {
            self.0.sample(images, t, noise)
        }
    }
    std::fs::remove_file(input.join("loose.png")).unwrap();
    let err = job.run(&Fixed(runner()), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("takes no class condition per image"), "{err}");
}
