//! `boomerang sample | enhance | augment | convert | info` and bad input handling, run on the
//! built binary.

use crate::cli_common::*;

const MODEL: &str = "gaussian:0,0.5";

#[test]
fn help_has_examples_for_every_command() {
    let out = run_ok(&["--help"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Examples:"), "{text}");
    for cmd in ["sample", "enhance", "anonymize", "augment", "train", "convert", "info"] {
        let out = run_ok(&[cmd, "--help"], &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{cmd} --help has no example:\n{text}");
    }
}

#[test]
fn sample_writes_k_samples_per_t_deterministically_and_never_overwrites() {
    let root = scratch("sample");
    let input = root.join("in");
    make_dataset(&input, &["a"], 2, 16);
    let out = root.join("out");
    let args = |out: &std::path::Path, extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "sample", "--model", MODEL, "--t", "0.1", "--step", "300", "-k", "3", "--steps", "50", "--grid", "-q", "-o",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.push(s(out).to_string());
        v.push(s(&input).to_string());
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    };
    let a = args(&out, &[]);
    run_ok(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &[]);
    let files = images(&out);
    // 2 inputs × 2 t × 3 samples + 2 grids; inputs keep their folder.
    assert_eq!(files.len(), 14, "{:?}", files.keys().collect::<Vec<_>>());
    assert!(files.contains_key("a/img0_t0.1_s2.png"));
    assert!(files.contains_key("a/img1_t300_s0.png"));
    assert!(files.contains_key("a/img0_grid.png"));
    // Samples differ from each other.
    assert_ne!(files["a/img0_t0.1_s0.png"], files["a/img0_t0.1_s1.png"]);

    // Without -q: a table of the distance to the input against t, growing with t.
    let loud: Vec<String> = args(&root.join("loud"), &[])
        .into_iter()
        .filter(|x| x != "-q")
        .collect();
    let text = String::from_utf8(run_ok(&loud.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &[]).stdout).unwrap();
    let rmse_at = |t: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(t))
            .unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    assert!(text.contains("distance to the input"), "{text}");
    assert!(rmse_at("0.1") < rmse_at("300"), "{text}");

    // Existing outputs are never replaced without --overwrite.
    let before = tree(&out);
    let err = run_fails(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &[], 2);
    assert!(err.contains("--overwrite"), "{err}");
    assert_eq!(tree(&out), before);
    let b = args(&out, &["--overwrite"]);
    run_ok(&b.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &[]);
    assert_eq!(tree(&out), before, "same seed gave other samples");

    // Batch size does not change the samples; the seed does.
    let out2 = root.join("out2");
    let c = args(&out2, &["--batch-size", "1"]);
    run_ok(&c.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &[]);
    assert_eq!(images(&out2), files);
    let out3 = root.join("out3");
    let d = args(&out3, &["--seed", "1"]);
    run_ok(&d.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &[]);
    assert_ne!(images(&out3)["a/img0_t0.1_s0.png"], files["a/img0_t0.1_s0.png"]);
}

#[test]
fn enhance_vanilla_and_cascaded_with_any_scale() {
    let root = scratch("enhance");
    let input = root.join("in");
    make_dataset(&input, &["lo"], 2, 12);
    let out = root.join("out");
    run_ok(
        &[
            "enhance",
            "--model",
            MODEL,
            "--t",
            "0.1",
            "--passes",
            "3",
            "-k",
            "2",
            "--scale",
            "2.5",
            "--filter",
            "bilinear",
            "--steps",
            "50",
            "-q",
            "-o",
            s(&out),
            s(&input),
        ],
        &[],
    );
    let files = images(&out);
    // Per input: the interpolated image and 2 candidates × 3 passes.
    assert_eq!(files.len(), 2 * (1 + 6), "{:?}", files.keys().collect::<Vec<_>>());
    for name in ["lo/img0_up.png", "lo/img0_c1_p3.png", "lo/img1_c0_p1.png"] {
        let img = image::load_from_memory(&files[name]).unwrap();
        assert_eq!((img.width(), img.height()), (30, 30), "{name}");
    }
    assert_ne!(files["lo/img0_c0_p3.png"], files["lo/img0_c1_p3.png"]);
    assert_ne!(files["lo/img0_c0_p1.png"], files["lo/img0_c0_p2.png"]);

    // A fixed-size model sets the size itself; a scale that disagrees is refused.
    let data = root.join("data");
    make_dataset(&data, &["d"], 3, 24);
    let model = format!("empirical:{}", data.join("d").display());
    let out2 = root.join("out2");
    run_ok(
        &[
            "enhance",
            "--model",
            &model,
            "--t",
            "0.2",
            "--steps",
            "20",
            "-q",
            "-o",
            s(&out2),
            s(&input),
        ],
        &[],
    );
    let img = image::open(out2.join("lo/img0_c0_p1.png")).unwrap();
    assert_eq!((img.width(), img.height()), (24, 24));
    let out3 = root.join("out3");
    let err = run_fails(
        &[
            "enhance",
            "--model",
            &model,
            "--t",
            "0.2",
            "--scale",
            "3",
            "-o",
            s(&out3),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(err.contains("24×24"), "{err}");
    // A model of any size needs a scale.
    let err = run_fails(
        &["enhance", "--model", MODEL, "--t", "0.2", "-o", s(&out3), s(&input)],
        &[],
        2,
    );
    assert!(err.contains("scale"), "{err}");
}

#[test]
fn augment_writes_class_folders_and_respects_existing_files() {
    let root = scratch("augment");
    let input = root.join("train");
    make_dataset(&input, &["cat", "dog"], 2, 16);
    let before = tree(&input);
    let out = root.join("boom");
    let args = [
        "augment",
        "--model",
        MODEL,
        "--t-range",
        "0.2:0.5",
        "-k",
        "3",
        "--copy-originals",
        "--steps",
        "50",
        "-q",
        "--input",
        s(&input),
        "--output",
        s(&out),
    ];
    run_ok(&args, &[]);
    let files = images(&out);
    assert_eq!(files.len(), 4 * 3 + 4);
    assert!(files.contains_key("cat/img0_boom2.png"));
    assert!(files.contains_key("dog/img1_boom0.png"));
    assert_eq!(
        files["cat/img0.png"], before["cat/img0.png"],
        "originals must be copied byte for byte"
    );

    // Refuses to touch existing outputs by default; --skip-existing fills the gaps only.
    run_fails(&args, &[], 2);
    std::fs::remove_file(out.join("dog/img1_boom0.png")).unwrap();
    let mut skip = args.to_vec();
    skip.push("--skip-existing");
    run_ok(&skip, &[]);
    assert_eq!(images(&out), files, "the re-made copy differs");
    assert_eq!(tree(&input), before);

    // Fixed t; --t and --t-range together are refused.
    let out2 = root.join("boom2");
    run_ok(
        &[
            "augment",
            "--model",
            MODEL,
            "--t",
            "0.3",
            "--steps",
            "50",
            "-q",
            "--input",
            s(&input),
            "--output",
            s(&out2),
        ],
        &[],
    );
    assert_eq!(images(&out2).len(), 4);
    let out3 = root.join("boom3");
    let out = run(
        &[
            "augment",
            "--model",
            MODEL,
            "--t",
            "0.3",
            "--t-range",
            "0.1:0.2",
            "--input",
            s(&input),
            "--output",
            s(&out3),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    run_fails(
        &[
            "augment",
            "--model",
            MODEL,
            "--t-range",
            "0.5:0.1",
            "--input",
            s(&input),
            "--output",
            s(&out3),
        ],
        &[],
        2,
    );
    run_fails(
        &[
            "augment",
            "--model",
            MODEL,
            "--t",
            "0.3",
            "--input",
            s(&input),
            "--output",
            s(&input.join("x")),
        ],
        &[],
        2,
    );
}

#[test]
fn convert_and_info_on_a_checkpoint() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint/flat_zip.pt");
    let root = scratch("convert");
    let st = root.join("flat.safetensors");
    let out = run_ok(&["convert", s(&fixture), s(&st)], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let a = boomerang::checkpoint::load_state_dict(&fixture).unwrap();
    let b = boomerang::checkpoint::load_state_dict(&st).unwrap();
    assert_eq!(a.len(), b.len());
    for (k, t) in a.iter() {
        assert_eq!(b.get(k).unwrap().shape, t.shape, "{k}");
    }
    // Never overwrite without --overwrite; no temporary files left.
    let before = std::fs::read(&st).unwrap();
    run_fails(&["convert", s(&fixture), s(&st)], &[], 2);
    assert_eq!(std::fs::read(&st).unwrap(), before);
    run_ok(&["convert", "--overwrite", s(&fixture), s(&st)], &[]);
    assert_eq!(tree(&root).len(), 1, "{:?}", tree(&root).keys().collect::<Vec<_>>());

    for path in [&fixture, &st] {
        let out = run_ok(&["info", s(path)], &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        let first = a.keys().next().unwrap();
        assert!(text.contains(first), "{text}");
        let out = run_ok(&["info", "--json", s(path)], &[]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["files"][0]["tensors"].as_array().unwrap().len(), a.len());
    }
    // Output into a pipe closed early (`boomerang info x | head -1`): no panic, success.
    let mut child = std::process::Command::new(BIN)
        .args(["info", s(&fixture)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // A folder: every weight file in it.
    let out = run_ok(&["info", s(&root)], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("flat.safetensors"));

    // Not a checkpoint, missing files, malicious pickles: messages, no panics.
    let junk = root.join("junk.pt");
    std::fs::write(&junk, b"definitely not a checkpoint").unwrap();
    run_fails(&["info", s(&junk)], &[], 2);
    run_fails(&["info", s(&root.join("missing.pt"))], &[], 2);
    run_fails(&["convert", s(&junk), s(&root.join("x.safetensors"))], &[], 2);
    let evil = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint/malicious_zip.pt");
    run_fails(&["convert", s(&evil), s(&root.join("y.safetensors"))], &[], 2);
    assert!(!root.join("x.safetensors").exists() && !root.join("y.safetensors").exists());
}

#[test]
fn bad_inputs_give_messages_and_nonzero_exits() {
    let root = scratch("bad");
    let input = root.join("in");
    make_dataset(&input, &["a"], 1, 16);
    let img = input.join("a/img0.png");
    let out = root.join("out");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["sample", "-q", "-o", s(&out), s(&img)]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--model", MODEL, "--t", "1.5"], "(0, 1]"),
        (vec!["--model", MODEL, "--t", "abc"], "fraction"),
        (vec!["--model", MODEL, "--t", "0"], "step"),
        (vec!["--model", MODEL, "--t", "1000"], "step"),
        // `--t 1` could mean step 1 or the whole process: refused, naming both forms.
        (vec!["--model", MODEL, "--t", "1"], "ambiguous"),
        (vec!["--model", MODEL, "--t", "1"], "--step 1"),
        (vec!["--model", MODEL, "--step", "0.3"], "fractions go with --t"),
        (vec!["--model", MODEL, "--step", "1000"], "step"),
        (vec!["--model", MODEL, "--t", "0.0001"], "step 0"),
        (vec!["--model", "gaussian:0", "--t", "0.3"], "gaussian:MEAN,STD"),
        (vec!["--model", "gaussian:0,-1", "--t", "0.3"], "std"),
        (vec!["--model", "nowhere/model.ckpt", "--t", "0.3"], "no such file"),
        (vec!["--model", MODEL, "--t", "0.3", "--eta", "0.5"], "--eta"),
        (
            vec!["--model", MODEL, "--t", "0.3", "--sampler", "ddim", "--eta", "2"],
            "eta",
        ),
        (vec!["--model", MODEL, "--t", "0.3", "--sampler", "pc"], "VE"),
        (vec!["--model", MODEL, "--t", "0.3", "--prompt", "a cat"], "text"),
        (vec!["--model", MODEL, "--t", "0.3", "--device", "cuda"], "CPU"),
        (vec!["--model", MODEL, "--t", "0.3", "--device", "tpu"], "not a device"),
        (vec!["--model", MODEL, "--t", "0.3", "--dtype", "f16"], "f32"),
        (vec!["--model", MODEL, "--t", "0.3", "--steps", "0"], "steps"),
        (vec!["--model", MODEL, "--t", "0.3", "-k", "0"], "samples"),
        (vec!["--model", MODEL, "--t", "0.3", "--batch-size", "0"], "batch"),
        (vec!["--model", "empirical:", "--t", "0.3"], "empirical"),
    ];
    for (extra, needle) in cases {
        let args = base(&extra);
        let err = run_fails(&args.iter().map(|x| x.as_str()).collect::<Vec<_>>(), &[], 2);
        assert!(err.contains(needle), "{extra:?}: expected `{needle}` in: {err}");
    }
    // A missing input, a folder without images, an image that is not one.
    let err = run_fails(
        &[
            "sample",
            "--model",
            MODEL,
            "--t",
            "0.3",
            "-o",
            s(&out),
            s(&root.join("nope.png")),
        ],
        &[],
        2,
    );
    assert!(err.contains("nope.png"), "{err}");
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    run_fails(
        &["sample", "--model", MODEL, "--t", "0.3", "-o", s(&out), s(&empty)],
        &[],
        2,
    );
    let fake = root.join("fake.png");
    std::fs::write(&fake, b"nope").unwrap();
    let err = run_fails(
        &["sample", "--model", MODEL, "--t", "0.3", "-o", s(&out), s(&fake)],
        &[],
        2,
    );
    assert!(err.contains("fake.png"), "{err}");
    // Unknown flags and subcommands: clap's usage errors (status 2).
    assert_eq!(run(&["sample", "--bogus"], &[]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"], &[]).status.code(), Some(2));
    assert!(
        !out.exists() || images(&out).is_empty(),
        "a failed command wrote images"
    );
}

#[cfg(not(feature = "tch"))]
#[test]
fn the_builtin_default_model_needs_libtorch() {
    let root = scratch("builtin-no-tch");
    let input = root.join("in");
    make_dataset(&input, &["a"], 1, 32);
    let err = run_fails(&["sample", "--t", "0.3", "-o", s(&root.join("out")), s(&input)], &[], 2);
    assert!(err.contains("tch") && err.contains("--model"), "{err}");
    let err = run_fails(&["train", "--shapes", "-o", s(&root.join("m"))], &[], 2);
    assert!(err.contains("libtorch"), "{err}");
}

#[test]
fn progress_moves_with_every_reverse_step() {
    let root = scratch("progress");
    let input = root.join("in");
    make_dataset(&input, &["a"], 1, 8);
    let out = root.join("out");
    let args = [
        "sample",
        "--model",
        "gaussian:0,0.5",
        "--t",
        "0.5",
        "-k",
        "4",
        "--batch-size",
        "4",
        "--steps",
        "100",
        "--progress",
        "lines",
        "-o",
        s(&out),
        s(&input),
    ];
    let text = String::from_utf8(run_ok(&args, &[]).stderr).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("sampling: ")).collect();
    // One batch of 4 samples over the grid's steps from t = 0.5 (about 50 of the 100):
    // 4 image-steps per reverse step, reported as they happen.
    let total: u64 = lines[0]
        .split(", ")
        .nth(1)
        .and_then(|p| p.split('/').nth(1))
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        total.is_multiple_of(4) && (45 * 4..=55 * 4).contains(&total),
        "{total} image-steps:\n{text}"
    );
    let mid_batch = lines
        .iter()
        .filter(|l| l.contains("0/4 samples") && !l.contains(&format!(" 0/{total} steps")))
        .count();
    assert!(mid_batch >= 10, "progress did not move within the batch:\n{text}");
    let end = format!("4/4 samples, {total}/{total} steps (100%)");
    assert!(lines.last().is_some_and(|l| l.contains(&end)), "{text}");
    // Quiet means quiet.
    let q: Vec<&str> = args.iter().copied().chain(["-q", "--overwrite"]).collect();
    assert!(run_ok(&q, &[]).stderr.is_empty());
}
