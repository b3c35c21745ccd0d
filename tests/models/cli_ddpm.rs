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

#[test]
fn bare_checkpoints_run_with_a_config_file_and_fastdpm_grids() {
    let root = scratch("ddpm-config");
    let input = root.join("in");
    make_dataset(&input, &["a"], 1, 16);
    let config = fixture("tiny3_diffusers/config.json");
    let sample = |model: &str, extra: &[&str], out: &std::path::Path| {
        let mut v = vec!["sample", "--model", model, "--t", "0.3", "-k", "2", "-q", "-o", s(out)];
        v.extend_from_slice(extra);
        v.push(s(&input));
        run_ok(&v, &[]);
        images(out)
    };
    // A bare original-naming checkpoint with `--config`, and the same file under another
    // name in a folder with the config beside it: the same model, the same bytes.
    let with_flag = sample(
        &fixture("tiny3.ckpt"),
        &["--config", &config, "--steps", "10"],
        &root.join("flag"),
    );
    assert_eq!(with_flag.len(), 2);
    let folder = root.join("bare");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(fixture("tiny3.ckpt"), folder.join("model-790000.ckpt")).unwrap();
    std::fs::copy(&config, folder.join("config.json")).unwrap();
    let beside = sample(s(&folder), &["--steps", "10"], &root.join("beside"));
    assert_eq!(with_flag, beside);
    // FastDPM's STEP and VAR grids (the DDPM UNet takes float steps, so VAR runs too).
    for grid in [
        "step-linear:10",
        "step-quadratic:10",
        "var-linear:10",
        "var-quadratic:10",
    ] {
        let out = root.join(grid.replace(':', "-"));
        let got = sample(s(&folder), &["--steps", grid, "--sampler", "ddim"], &out);
        assert_eq!(got.len(), 2, "{grid}");
        assert_ne!(got, with_flag, "{grid} gave the 10-step uniform grid's samples");
    }
    // A grid that is not one, and a config that does not fit the weights.
    let err = run_fails(
        &[
            "sample",
            "--model",
            s(&folder),
            "--t",
            "0.3",
            "--steps",
            "step-cubic:10",
            "-o",
            s(&root.join("x")),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(err.contains("step-linear"), "{err}");
    let wrong = root.join("wrong.json");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(fixture("tiny2_diffusers/config.json")).unwrap(),
    )
    .unwrap();
    let err = run_fails(
        &[
            "sample",
            "--model",
            &fixture("tiny3.ckpt"),
            "--config",
            s(&wrong),
            "--t",
            "0.3",
            "-o",
            s(&root.join("y")),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(err.to_lowercase().contains("shape") || err.contains("missing"), "{err}");
}
