//! `boomerang train` and the built-in model on the command line: train a tiny UNet, resume
//! it, refuse what would lose work, sample with the result and with no `--model` at all.

use boomerang::image_io::save_image;
use boomerang::models::pretrained;
use boomerang::DataRange;
use rand::SeedableRng;

use crate::cli_common::*;

/// Flags of a tiny, quick run on a folder of images.
fn tiny_run<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "-o",
        out,
        "--size",
        "16",
        "--channels",
        "16",
        "--ch-mult",
        "1,2",
        "--res-blocks",
        "1",
        "--attn",
        "8",
        "--norm-groups",
        "8",
        "--steps",
        steps,
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
        "--device",
        "cpu",
        "-q",
    ]
}

#[test]
fn train_resume_and_sample_with_the_result() {
    let root = scratch("cli-train");
    let data = root.join("data");
    make_dataset(&data, &["a", "b"], 2, 16);
    let (d, out) = (s(&data).to_string(), root.join("model"));
    let o = s(&out).to_string();

    // 3 steps, then resume to 4 with the same flags.
    run_ok(&tiny_run(&d, &o, "3"), &[]);
    let losses = std::fs::read_to_string(out.join("training/loss.csv")).unwrap();
    assert_eq!(losses.lines().count(), 4, "header + one line per step:\n{losses}");
    // A finished model is never overwritten.
    let before = tree(&out);
    let e = run_fails(&tiny_run(&d, &o, "4"), &[], 2);
    assert!(e.contains("already holds a trained model"), "{e}");
    assert_eq!(tree(&out), before);
    std::fs::remove_file(out.join("diffusion_pytorch_model.safetensors")).unwrap();
    // Other settings than the checkpoint's: refused, nothing touched.
    let mut other = tiny_run(&d, &o, "4");
    other.extend(["--lr", "1e-3"]);
    let e = run_fails(&other, &[], 2);
    assert!(e.contains("other settings") && e.contains("--steps"), "{e}");
    run_ok(&tiny_run(&d, &o, "4"), &[]);
    let losses = std::fs::read_to_string(out.join("training/loss.csv")).unwrap();
    assert_eq!(losses.lines().count(), 5, "resumed at step 3:\n{losses}");

    // The result is a model like any other.
    let info = String::from_utf8(run_ok(&["info", &o], &[]).stdout).unwrap();
    assert!(
        info.contains("UNet2DModel") || info.to_lowercase().contains("ddpm"),
        "{info}"
    );
    let samples = root.join("samples");
    run_ok(
        &[
            "sample",
            "--model",
            &o,
            "--t",
            "0.2",
            "-k",
            "2",
            "--steps",
            "20",
            "-q",
            "-o",
            s(&samples),
            s(&data.join("a")),
        ],
        &[],
    );
    assert_eq!(images(&samples).len(), 4);

    // Bad input: a cosine schedule spelled wrong, a folder without images, CPU mixed precision.
    let (m2, m4) = (root.join("m2"), root.join("m4"));
    let mut bad = tiny_run(&d, s(&m2), "2");
    bad.extend(["--schedule", "cosine:1:2"]);
    assert!(run_fails(&bad, &[], 2).contains("cosine takes no START:END"));
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(run_fails(&tiny_run(s(&empty), s(&root.join("m3")), "2"), &[], 2).contains("no .png"));
    let mut mixed = tiny_run(&d, s(&m4), "2");
    mixed.extend(["--precision", "mixed"]);
    assert!(run_fails(&mixed, &[], 2).contains("CUDA"));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn sample_without_a_model_uses_the_builtin_one() {
    let root = scratch("cli-builtin");
    let family = pretrained::shapes32_family();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let x = family.sample(1, &mut rng);
    let input = root.join("shape.png");
    save_image(&input, x.index_axis(ndarray::Axis(0), 0), DataRange::MinusOneToOne).unwrap();
    let sample = |model: &[&str], out: &std::path::Path| {
        let mut args = vec!["sample"];
        args.extend_from_slice(model);
        args.extend([
            "--t",
            "0.2",
            "-k",
            "2",
            "--steps",
            "25",
            "-q",
            "--grid",
            "-o",
            s(out),
            s(&input),
        ]);
        run_ok(&args, &[]);
    };
    let (out, named) = (root.join("out"), root.join("named"));
    sample(&[], &out);
    assert_eq!(images(&out).len(), 3, "two samples and the grid");
    // The same through the explicit name gives the same files.
    sample(&["--model", "builtin:shapes32"], &named);
    assert_eq!(images(&out), images(&named));
    let e = run_fails(
        &[
            "sample",
            "--model",
            "builtin:faces",
            "--t",
            "0.2",
            "-o",
            s(&out),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(e.contains("builtin:shapes32"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}
