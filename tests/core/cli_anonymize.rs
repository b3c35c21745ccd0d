//! `boomerang anonymize`, run as a user runs it: the built binary on generated folders with
//! the analytic Gaussian denoiser. Determinism across batch sizes and thread counts, a real
//! kill and resume, sharding (flags and environment), inputs untouched, outputs inside the
//! input refused, odd and corrupt images reported and skipped, distances growing with t.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli_common::*;

const MODEL: &str = "gaussian:0,0.5";

fn anon_args<'a>(input: &'a Path, output: &'a Path, t: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "anonymize",
        "--model",
        MODEL,
        "--t",
        t,
        "--input",
        s(input),
        "--output",
        s(output),
        "--steps",
        "100",
        "-q",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn same_seed_same_files_whatever_batch_size_and_threads() {
    let root = scratch("anon-det");
    let input = root.join("in");
    make_dataset(&input, &["a", "b", "c/deep"], 4, 24);
    let before = tree(&input);

    let out1 = root.join("out1");
    run_ok(
        &anon_args(&input, &out1, "0.4", &["--batch-size", "1", "--seed", "9"]),
        &[("RAYON_NUM_THREADS", "1")],
    );
    let out2 = root.join("out2");
    run_ok(
        &anon_args(&input, &out2, "0.4", &["--batch-size", "5", "--seed", "9"]),
        &[("RAYON_NUM_THREADS", "4")],
    );
    let (a, b) = (images(&out1), images(&out2));
    assert_eq!(a.len(), 12);
    assert_eq!(a, b, "batch size or thread count changed the outputs");
    // The output tree mirrors the input tree.
    let want: Vec<String> = images(&input).keys().cloned().collect();
    assert_eq!(a.keys().cloned().collect::<Vec<_>>(), want);
    // Manifest lines are the same set.
    let sorted = |p: &Path| {
        let mut l: Vec<String> = std::fs::read_to_string(p).unwrap().lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(
        sorted(&out1.join("manifest.jsonl")),
        sorted(&out2.join("manifest.jsonl"))
    );

    // Another seed gives other images.
    let out3 = root.join("out3");
    run_ok(&anon_args(&input, &out3, "0.4", &["--seed", "10"]), &[]);
    let c = images(&out3);
    assert!(a.iter().all(|(k, v)| c[k] != *v), "seed 10 reproduced a seed-9 image");
    assert_eq!(tree(&input), before, "the input folder changed");
}

#[test]
fn killed_run_resumes_to_identical_outputs_without_temp_files() {
    let root = scratch("anon-kill");
    let input = root.join("in");
    make_dataset(&input, &["x", "y"], 12, 32);
    let before = tree(&input);

    // Every training step from t = 0.9 (900 model calls per image), one image per batch: slow
    // enough to kill part-way.
    let slow = |out: &'static str| -> Vec<String> {
        let out = root.join(out);
        [
            "anonymize",
            "--model",
            MODEL,
            "--t",
            "0.9",
            "--batch-size",
            "1",
            "-q",
            "--input",
            s(&input),
            "--output",
            s(&out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let reference = root.join("reference");
    let args = slow("reference");
    let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    run_ok(&args, &[]);

    // The same run, killed once the manifest shows 3 images.
    let out = root.join("out");
    let args = slow("out");
    let args: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
    let mut child = Command::new(BIN)
        .args(&args)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let manifest_path = out.join("manifest.jsonl");
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&manifest_path)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if lines >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed; make it slower"
        );
        assert!(start.elapsed() < Duration::from_secs(300), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = images(&out);
    assert!(
        partial.len() < 24,
        "the run was not interrupted ({} images)",
        partial.len()
    );
    // Whatever is there decodes: no truncated images under their final names.
    for (name, bytes) in &partial {
        image::load_from_memory(bytes).unwrap_or_else(|e| panic!("{name} is truncated: {e}"));
    }
    // Also simulate the worst case of a kill: a half-written temporary file of this run.
    let stale = out.join("x").join(format!(".img11.png.{}.tmp.png", 4_000_000));
    std::fs::write(&stale, b"\x89PNG half").unwrap();

    // Resume.
    let resumed = run_ok(&args, &[]);
    let _ = resumed;
    assert_eq!(
        images(&out),
        images(&reference),
        "resumed outputs differ from an uninterrupted run"
    );
    let leftovers: Vec<String> = tree(&out)
        .into_keys()
        .filter(|k| k.rsplit('/').next().unwrap().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // One manifest line per image, the same lines as the uninterrupted run.
    let mut got: Vec<String> = std::fs::read_to_string(&manifest_path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut want: Vec<String> = std::fs::read_to_string(reference.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(tree(&input), before, "the input folder changed");
}

#[test]
fn manifest_cut_mid_line_is_repaired_on_resume() {
    let root = scratch("anon-cut");
    let input = root.join("in");
    make_dataset(&input, &["a"], 3, 16);
    let out = root.join("out");
    run_ok(&anon_args(&input, &out, "0.3", &[]), &[]);
    let full = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    // Keep the first line and half of the second, and delete the images of lines 2 and 3.
    let lines: Vec<&str> = full.lines().collect();
    let cut = format!("{}\n{}", lines[0], &lines[1][..lines[1].len() / 2]);
    std::fs::write(out.join("manifest.jsonl"), cut).unwrap();
    let m2: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
    std::fs::remove_file(out.join(m2["output"].as_str().unwrap())).unwrap();
    run_ok(&anon_args(&input, &out, "0.3", &[]), &[]);
    // The cut line stays in the file (lines are only appended); readers skip it.
    let entries = manifest_lenient(&out.join("manifest.jsonl"));
    let mut inputs: Vec<&str> = entries
        .iter()
        .filter(|e| e["status"] == "ok")
        .map(|e| e["input"].as_str().unwrap())
        .collect();
    inputs.sort();
    assert_eq!(inputs, vec!["a/img0.png", "a/img1.png", "a/img2.png"]);
    let mut want: Vec<&str> = full.lines().collect();
    want.sort();
    let text = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let mut got: Vec<&str> = text.lines().filter(|l| l.ends_with('}')).collect();
    got.sort();
    assert_eq!(got, want, "recovered manifest lines differ from the originals");
}

#[test]
fn two_shards_make_the_same_files_as_one_run() {
    let root = scratch("anon-shard");
    let input = root.join("in");
    make_dataset(&input, &["a", "b"], 5, 16);
    let whole = root.join("whole");
    run_ok(&anon_args(&input, &whole, "0.5", &[]), &[]);

    let sharded = root.join("sharded");
    run_ok(&anon_args(&input, &sharded, "0.5", &["--shard", "1/2"]), &[]);
    let half = images(&sharded).len();
    assert!(half > 0 && half < 10, "shard 1/2 took {half} of 10 images");
    run_ok(&anon_args(&input, &sharded, "0.5", &["--shard", "0/2"]), &[]);
    assert_eq!(images(&sharded), images(&whole));
    let a = manifest(&sharded.join("manifest.shard-0-of-2.jsonl"));
    let b = manifest(&sharded.join("manifest.shard-1-of-2.jsonl"));
    assert_eq!(a.len() + b.len(), 10);

    // The same split from Slurm's environment (array 1-2) and from a Kubernetes Indexed Job.
    let slurm = root.join("slurm");
    for id in ["1", "2"] {
        run_ok(
            &anon_args(&input, &slurm, "0.5", &[]),
            &[
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_MIN", "1"),
                ("SLURM_ARRAY_TASK_MAX", "2"),
            ],
        );
    }
    assert_eq!(images(&slurm), images(&whole));
    assert!(slurm.join("manifest.shard-1-of-2.jsonl").exists());
    let k8s = root.join("k8s");
    run_ok(
        &anon_args(&input, &k8s, "0.5", &[]),
        &[("JOB_COMPLETION_INDEX", "0"), ("BOOMERANG_SHARD_COUNT", "2")],
    );
    assert_eq!(manifest(&k8s.join("manifest.shard-0-of-2.jsonl")), a);
    let err = run_fails(
        &anon_args(&input, &k8s, "0.5", &[]),
        &[("JOB_COMPLETION_INDEX", "1")],
        2,
    );
    assert!(err.contains("BOOMERANG_SHARD_COUNT"), "{err}");
    // An explicit --shard wins over the environment.
    run_ok(
        &anon_args(&input, &k8s, "0.5", &["--shard", "0/1"]),
        &[("JOB_COMPLETION_INDEX", "1")],
    );
    assert_eq!(images(&k8s), images(&whole));
    run_fails(&anon_args(&input, &k8s, "0.5", &["--shard", "2/2"]), &[], 2);
    run_fails(&anon_args(&input, &k8s, "0.5", &["--shard", "x"]), &[], 2);
}

#[test]
fn output_inside_input_is_refused_and_nothing_is_written() {
    let root = scratch("anon-inside");
    let input = root.join("in");
    make_dataset(&input, &["a"], 2, 16);
    let before = tree(&input);
    for out in [input.join("anon"), input.clone(), input.join("a").join("..").join("x")] {
        let err = run_fails(&anon_args(&input, &out, "0.3", &[]), &[], 2);
        assert!(err.contains("inside"), "{err}");
    }
    // An output folder that contains the input is refused too.
    let err = run_fails(&anon_args(&input, &root, "0.3", &[]), &[], 2);
    assert!(err.contains("inside"), "{err}");
    assert_eq!(tree(&input), before);
}

#[test]
fn corrupt_and_odd_images_are_reported_and_skipped() {
    let root = scratch("anon-odd");
    let input = root.join("in");
    make_dataset(&input, &["ok"], 3, 16);
    std::fs::create_dir_all(input.join("odd")).unwrap();
    std::fs::write(input.join("odd/garbage.png"), b"this is not an image").unwrap();
    // A real PNG cut in half.
    let good = std::fs::read(input.join("ok/img0.png")).unwrap();
    std::fs::write(input.join("odd/truncated.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(input.join("odd/empty.jpg"), b"").unwrap();
    // Grayscale, RGBA and 16-bit images: converted, not skipped.
    let gray = image::GrayImage::from_fn(16, 16, |x, y| image::Luma([(x * 16 + y) as u8]));
    gray.save(input.join("odd/gray.png")).unwrap();
    let rgba = image::RgbaImage::from_fn(16, 16, |x, y| image::Rgba([x as u8 * 9, y as u8 * 9, 100, 128]));
    rgba.save(input.join("odd/alpha.png")).unwrap();
    let deep = image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(16, 16, |x, y| {
        image::Rgb([(x * 4000) as u16, (y * 4000) as u16, 30000])
    });
    deep.save(input.join("odd/deep16.png")).unwrap();
    std::fs::write(input.join("notes.txt"), b"not an image, ignored").unwrap();
    let before = tree(&input);

    let out = root.join("out");
    let o = run_ok(&anon_args(&input, &out, "0.3", &[]), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    for bad in ["odd/garbage.png", "odd/truncated.png", "odd/empty.jpg"] {
        assert!(stderr.contains(bad), "{bad} not reported: {stderr}");
    }
    let entries = manifest(&out.join("manifest.jsonl"));
    let status = |name: &str| {
        entries
            .iter()
            .find(|e| e["input"] == name)
            .unwrap_or_else(|| panic!("{name} missing from the manifest"))
            .clone()
    };
    for bad in ["odd/garbage.png", "odd/truncated.png", "odd/empty.jpg"] {
        let e = status(bad);
        assert_eq!(e["status"], "skipped");
        assert!(!e["error"].as_str().unwrap().is_empty());
        assert!(!out.join(bad).exists());
    }
    assert_eq!(status("odd/gray.png")["converted"][0], "gray -> rgb");
    assert_eq!(status("odd/alpha.png")["converted"][0], "alpha dropped");
    assert_eq!(status("odd/deep16.png")["converted"][0], "16-bit -> 8-bit output");
    for name in ["odd/gray.png", "odd/alpha.png", "odd/deep16.png", "ok/img0.png"] {
        assert_eq!(status(name)["status"], "ok");
        let img = image::open(out.join(name)).unwrap();
        assert_eq!((img.width(), img.height()), (16, 16));
    }
    assert!(!out.join("notes.txt").exists());
    // A second run re-reports the bad files but adds no duplicate lines.
    run_ok(&anon_args(&input, &out, "0.3", &[]), &[]);
    assert_eq!(manifest(&out.join("manifest.jsonl")).len(), entries.len());
    assert_eq!(tree(&input), before);
}

#[test]
fn wrong_sizes_are_skipped_or_resized_for_a_fixed_size_model() {
    let root = scratch("anon-size");
    let data = root.join("data");
    make_dataset(&data, &["d"], 4, 16);
    let input = root.join("in");
    make_dataset(&input, &["a"], 2, 16);
    make_dataset(&input.join("big"), &["b"], 1, 20);
    let model = format!("empirical:{}", data.join("d").display());
    let out = root.join("out");
    let base = [
        "anonymize",
        "--model",
        &model,
        "--t",
        "0.3",
        "--steps",
        "50",
        "-q",
        "--input",
        s(&input),
    ];
    let mut args = base.to_vec();
    args.extend_from_slice(&["--output", s(&out)]);
    run_ok(&args, &[]);
    let entries = manifest(&out.join("manifest.jsonl"));
    let big = entries.iter().find(|e| e["input"] == "big/b/img0.png").unwrap();
    assert_eq!(big["status"], "skipped");
    assert!(big["error"].as_str().unwrap().contains("20×20"), "{big}");
    let out2 = root.join("out2");
    let mut args = base.to_vec();
    args.extend_from_slice(&["--output", s(&out2), "--resize"]);
    run_ok(&args, &[]);
    let img = image::open(out2.join("big/b/img0.png")).unwrap();
    assert_eq!((img.width(), img.height()), (16, 16));
    let entries = manifest(&out2.join("manifest.jsonl"));
    let big = entries.iter().find(|e| e["input"] == "big/b/img0.png").unwrap();
    assert_eq!(big["converted"][0], "resized 20x20 -> 16x16");
}

#[test]
fn distances_to_the_original_grow_with_t() {
    let root = scratch("anon-t");
    let input = root.join("in");
    make_dataset(&input, &["a", "b"], 6, 16);
    let mut rows = Vec::new();
    // Past t ≈ 0.6 the Gaussian model's samples no longer depend on the input (the distance
    // is flat at its maximum, see apps_library.rs), so the growth is checked below it.
    for t in ["0.02", "0.05", "0.1", "0.2", "0.4"] {
        let out = root.join(format!("out-{t}"));
        run_ok(&anon_args(&input, &out, t, &["--seed", "3"]), &[]);
        let entries = manifest(&out.join("manifest.jsonl"));
        assert_eq!(entries.len(), 12);
        let mean = |k: &str| entries.iter().map(|e| e[k].as_f64().unwrap()).sum::<f64>() / entries.len() as f64;
        rows.push((t, mean("mse"), mean("psnr"), mean("ssim")));
    }
    let mut report = String::new();
    for r in &rows {
        report += &format!("t={} mse={:.5} psnr={:.2} ssim={:.4}\n", r.0, r.1, r.2, r.3);
    }
    let mut f = std::fs::File::create(root.join("distances.txt")).unwrap();
    f.write_all(report.as_bytes()).unwrap();
    for w in rows.windows(2) {
        assert!(w[1].1 > w[0].1, "MSE did not grow with t:\n{report}");
        assert!(w[1].2 < w[0].2, "PSNR did not fall with t:\n{report}");
        assert!(w[1].3 < w[0].3, "SSIM did not fall with t:\n{report}");
    }
}
