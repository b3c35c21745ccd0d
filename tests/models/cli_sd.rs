//! The command line tool on a tiny random Stable Diffusion pipeline (tests/fixtures/sd/sd1,
//! made by tools/make_sd_fixtures.py): latent-space Boomerang through the same commands.

use crate::cli_common::*;

fn sd1() -> String {
    format!("{}/tests/fixtures/sd/sd1", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn anonymize_and_sample_with_stable_diffusion() {
    let model = sd1();
    let root = scratch("sd");
    let input = root.join("in");
    make_dataset(&input, &["a"], 3, 16);
    // A side that is not a multiple of the VAE's factor is reported and skipped.
    let odd = image::RgbImage::from_fn(15, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 50]));
    odd.save(input.join("a/odd.png")).unwrap();
    let before = tree(&input);
    let run_to = |out: &str, batch: &str| {
        let out = root.join(out);
        run_ok(
            &[
                "anonymize",
                "--model",
                &model,
                "--prompt",
                "a photo of a cat",
                "--t",
                "0.5",
                "--steps",
                "20",
                "--batch-size",
                batch,
                "--device",
                "cpu",
                "-q",
                "--input",
                s(&input),
                "--output",
                s(&out),
            ],
            &[],
        );
        out
    };
    let a = run_to("a", "1");
    let b = run_to("b", "3");
    assert_eq!(images(&a).len(), 3);
    assert_eq!(
        images(&a),
        images(&b),
        "batch size changed the Stable Diffusion outputs"
    );
    let entries = manifest(&a.join("manifest.jsonl"));
    let ok = entries.iter().find(|e| e["input"] == "a/img0.png").unwrap();
    assert_eq!(ok["prompt"], "a photo of a cat");
    assert_eq!(ok["sampler"], "ddim");
    assert_eq!(ok["t_native"], 500.0);
    let odd = entries.iter().find(|e| e["input"] == "a/odd.png").unwrap();
    assert_eq!(odd["status"], "skipped");
    assert!(odd["error"].as_str().unwrap().contains("multiples of"), "{odd}");
    assert_eq!(tree(&input), before);

    // Another prompt gives other images; sample and enhance run too.
    let c = root.join("c");
    run_ok(
        &[
            "anonymize",
            "--model",
            &model,
            "--prompt",
            "a dog",
            "--t",
            "0.5",
            "--steps",
            "20",
            "-q",
            "--input",
            s(&input),
            "--output",
            s(&c),
        ],
        &[],
    );
    assert_ne!(images(&a)["a/img0.png"], images(&c)["a/img0.png"]);
    let out = root.join("samples");
    run_ok(
        &[
            "sample",
            "--model",
            &model,
            "--t",
            "0.3,0.6",
            "-k",
            "2",
            "--steps",
            "10",
            "-q",
            "-o",
            s(&out),
            s(&input.join("a/img0.png")),
        ],
        &[],
    );
    assert_eq!(images(&out).len(), 4);
    let up = root.join("up");
    run_ok(
        &[
            "enhance",
            "--model",
            &model,
            "--t",
            "0.3",
            "--scale",
            "2",
            "--steps",
            "10",
            "-q",
            "-o",
            s(&up),
            s(&input.join("a/img1.png")),
        ],
        &[],
    );
    let img = image::open(up.join("img1_c0_p1.png")).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));

    // Options that do not apply are refused.
    let x = root.join("x");
    let img0 = input.join("a/img0.png");
    for extra in [
        vec!["--clip-denoised"],
        vec!["--sampler", "pc"],
        vec!["--sampler", "ddpm", "--eta", "0.5"],
    ] {
        let mut args = vec!["sample", "--model", model.as_str(), "--t", "0.5", "-o", s(&x), s(&img0)];
        args.extend(extra);
        run_fails(&args, &[], 2);
    }
    let err = run_fails(
        &[
            "sample",
            "--model",
            "gaussian:0,0.5",
            "--t",
            "0.5",
            "--prompt",
            "a cat",
            "-o",
            s(&x),
            s(&img0),
        ],
        &[],
        2,
    );
    assert!(err.contains("text-conditioned"), "{err}");

    let info = run_ok(&["info", &model], &[]);
    let text = String::from_utf8_lossy(&info.stdout);
    for family in [
        "Stable Diffusion pipeline",
        "Stable Diffusion UNet",
        "VAE",
        "CLIP text encoder",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
}
