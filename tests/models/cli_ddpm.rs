//! The command line tool on a real (tiny, random) DDPM UNet checkpoint: a diffusers folder
//! from tests/fixtures/ddpm (made by tools/make_ddpm_fixtures.py).

use crate::cli_common::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/ddpm/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn anonymize_with_a_ddpm_checkpoint_is_deterministic_and_resumable() {
    let model = fixture("tiny3_diffusers");
    let root = scratch("ddpm-anon");
    let input = root.join("in");
    make_dataset(&input, &["a", "b"], 3, 16);
    let before = tree(&input);
    let run_to = |out: &str, batch: &str| {
        let out = root.join(out);
        run_ok(
            &[
                "anonymize",
                "--model",
                &model,
                "--t",
                "0.3",
                "--steps",
                "50",
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
    let b = run_to("b", "4");
    assert_eq!(images(&a).len(), 6);
    assert_eq!(images(&a), images(&b), "batch size changed the DDPM outputs");
    let entries = manifest(&a.join("manifest.jsonl"));
    assert!(entries
        .iter()
        .all(|e| e["status"] == "ok" && e["model"].as_str().unwrap().starts_with("ddpm:")));
    // Resume: delete two outputs, run again, get the same files.
    std::fs::remove_file(a.join("a/img0.png")).unwrap();
    std::fs::remove_file(a.join("b/img2.png")).unwrap();
    run_to("a", "2");
    assert_eq!(images(&a), images(&b));
    assert_eq!(tree(&input), before);
    // The model takes 16×16 images: others are skipped (or resized on request).
    make_dataset(&input.join("big"), &["c"], 1, 20);
    let c = run_to("c", "2");
    let entries = manifest(&c.join("manifest.jsonl"));
    let big = entries.iter().find(|e| e["input"] == "big/c/img0.png").unwrap();
    assert_eq!(big["status"], "skipped");
}

#[test]
fn info_sample_and_errors_with_ddpm_files() {
    let out = run_ok(&["info", &fixture("tiny3_diffusers")], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("DDPM UNet") && text.contains("diffusers UNet2DModel"),
        "{text}"
    );
    let out = run_ok(&["info", &fixture("tiny3.ckpt")], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pesser"));

    let root = scratch("ddpm-sample");
    let input = root.join("in");
    make_dataset(&input, &["a"], 1, 16);
    let out = root.join("out");
    run_ok(
        &[
            "sample",
            "--model",
            &fixture("tiny3_diffusers"),
            "--t",
            "0.2,0.5",
            "-k",
            "2",
            "--sampler",
            "ddim",
            "--steps",
            "20",
            "-q",
            "-o",
            s(&out),
            s(&input),
        ],
        &[],
    );
    assert_eq!(images(&out).len(), 4);
    // Weights whose configuration cannot be inferred, devices that do not exist, dtypes
    // that do not exist: messages and status 2.
    let err = run_fails(
        &[
            "sample",
            "--model",
            &fixture("tiny3.ckpt"),
            "--t",
            "0.3",
            "-o",
            s(&out),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(err.contains("configuration"), "{err}");
    let err = run_fails(
        &[
            "sample",
            "--model",
            &fixture("tiny3_diffusers"),
            "--t",
            "0.3",
            "--device",
            "cuda:7",
            "-o",
            s(&out),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(err.contains("cuda:7"), "{err}");
    run_fails(
        &[
            "sample",
            "--model",
            &fixture("tiny3_diffusers"),
            "--t",
            "0.3",
            "--dtype",
            "int8",
            "-o",
            s(&out),
            s(&input),
        ],
        &[],
        2,
    );
}
