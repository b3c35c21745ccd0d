//! Every model family through the command line: the registry detects it, the CLI only
//! parses and prints. Tiny random models from the parity fixtures.

use std::path::PathBuf;

use crate::cli_common::{make_dataset, run_fails, run_ok, s, scratch};

fn fixture(p: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn pngs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn patched_diffusion_samples_and_enhances_from_a_folder_with_its_config() {
    let root = scratch("cli-patched");
    let input = root.join("in");
    make_dataset(&input, &["a"], 1, 8);
    let model = fixture("patched/p2");
    let out = root.join("out");
    let args = [
        "sample",
        "--model",
        s(&model),
        "--class",
        "3",
        "--t",
        "0.2",
        "-k",
        "1",
        "--steps",
        "10",
    ];
    let mut v: Vec<&str> = args.to_vec();
    v.extend(["-o", s(&out), s(&input)]);
    run_ok(&v, &[]);
    assert_eq!(pngs(&out.join("a")), 1);
    // Class-conditional: no label is an error naming the class; out of range too.
    let x = root.join("x");
    let mut v: Vec<&str> = vec!["sample", "--model", s(&model), "--t", "0.2", "-o", s(&x), s(&input)];
    let e = run_fails(&v, &[], 2);
    assert!(e.contains("class"), "{e}");
    v.extend(["--class", "99"]);
    let e = run_fails(&v, &[], 2);
    assert!(e.contains("99"), "{e}");
    // Cascaded resolution enhancement with this family.
    let low = root.join("low");
    make_dataset(&low, &["a"], 1, 4);
    let up = root.join("up");
    run_ok(
        &[
            "enhance",
            "--model",
            s(&model),
            "--class",
            "1",
            "--t",
            "0.1",
            "--passes",
            "2",
            "--steps",
            "10",
            "-o",
            s(&up),
            s(&low),
        ],
        &[],
    );
    assert!(pngs(&up.join("a")) >= 2);
}

#[test]
fn dlsm_samples_with_and_without_classifier_guidance() {
    let root = scratch("cli-dlsm");
    let input = root.join("in");
    make_dataset(&input, &["a"], 1, 16);
    let model = fixture("dlsm/tiny_a");
    let clf = fixture("dlsm/tiny_clf/checkpoint.pth");
    let out = root.join("plain");
    run_ok(
        &[
            "sample",
            "--model",
            s(&model),
            "--t",
            "0.1",
            "-k",
            "1",
            "--steps",
            "20",
            "-o",
            s(&out),
            s(&input),
        ],
        &[],
    );
    assert_eq!(pngs(&out.join("a")), 1);
    let guided = root.join("guided");
    run_ok(
        &[
            "sample",
            "--model",
            s(&model),
            "--t",
            "0.1",
            "-k",
            "1",
            "--steps",
            "20",
            "--classifier",
            s(&clf),
            "--class",
            "3",
            "--classifier-scale",
            "2",
            "-o",
            s(&guided),
            s(&input),
        ],
        &[],
    );
    assert_eq!(pngs(&guided.join("a")), 1);
    // Labels without a classifier, and a text prompt, are refused.
    let (x, y) = (root.join("x"), root.join("y"));
    let e = run_fails(
        &[
            "sample",
            "--model",
            s(&model),
            "--t",
            "0.1",
            "--class",
            "3",
            "-o",
            s(&x),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(e.contains("classifier"), "{e}");
    let e = run_fails(
        &[
            "sample",
            "--model",
            s(&model),
            "--t",
            "0.1",
            "--prompt",
            "a",
            "-o",
            s(&y),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(e.contains("text-conditioned"), "{e}");
}

#[test]
fn info_names_each_family_and_refuses_a_missing_selection() {
    for (path, family) in [
        ("patched/p2/model.safetensors", "patched-diffusion"),
        ("dlsm/tiny_a/checkpoint.pth", "ncsnpp"),
        ("dlsm/tiny_clf/checkpoint.pth", "noisy-classifier"),
        ("ddpm/tiny3.ckpt", "ddpm"),
    ] {
        let out = run_ok(&["info", "--json", "--limit", "3", s(&fixture(path))], &[]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["family"], family, "{path}");
        if let Some(tensors) = v["files"][0]["tensors"].as_array() {
            assert!(tensors.len() <= 3, "--limit 3 printed {} tensors", tensors.len());
        }
    }
    let e = run_fails(
        &["info", "--select", "no.such.path", s(&fixture("ddpm/tiny3.ckpt"))],
        &[],
        2,
    );
    assert!(e.contains("--select"), "{e}");
}

#[test]
fn convert_removes_temporaries_a_killed_run_left() {
    let root = scratch("cli-convert-stale");
    let out = root.join("m.safetensors");
    // A temporary of this crate's naming from a process that no longer exists.
    let stale = root.join(".m.safetensors.999999999.tmp");
    std::fs::write(&stale, b"partial").unwrap();
    let unrelated = root.join(".m.safetensors.notes");
    std::fs::write(&unrelated, b"keep").unwrap();
    run_ok(&["convert", s(&fixture("ddpm/tiny3.ckpt")), s(&out)], &[]);
    assert!(out.is_file());
    assert!(!stale.exists(), "the stale temporary is still there");
    assert!(unrelated.exists(), "a file of another naming was removed");
}

#[test]
fn class_folders_label_each_image_with_its_folder() {
    let root = scratch("cli-class-folders");
    let input = root.join("in");
    make_dataset(&input, &["0", "2"], 2, 8);
    let model = fixture("patched/p2");
    let anonymize = |out: &std::path::Path, class: &str| {
        run_ok(
            &[
                "anonymize",
                "--model",
                s(&model),
                "--class",
                class,
                "--t",
                "0.3",
                "--steps",
                "10",
                "--input",
                s(&input),
                "--output",
                s(out),
            ],
            &[],
        )
    };
    let (by_folder, all_zero) = (root.join("folders"), root.join("zero"));
    let said = String::from_utf8_lossy(&anonymize(&by_folder, "folders").stdout).into_owned();
    assert!(
        said.contains("class labels: 2 class folders by number: 0=0, 2=2"),
        "{said}"
    );
    anonymize(&all_zero, "0");
    let (a, b) = (
        crate::cli_common::images(&by_folder),
        crate::cli_common::images(&all_zero),
    );
    assert_eq!(a.len(), 4);
    for (name, bytes) in &a {
        // Same key, same noise: only the label differs, and only in folder 2.
        assert_eq!(name.starts_with("0/"), b[name] == *bytes, "{name}");
    }
    let manifest = std::fs::read_to_string(by_folder.join("manifest.jsonl")).unwrap();
    assert!(manifest.contains("\"label\":2"), "{manifest}");

    // Classifier guidance (DLSM) from a class map; `sample` takes labels, not folders.
    let dlsm_in = root.join("dlsm-in");
    make_dataset(&dlsm_in, &["cat"], 1, 16);
    let map = root.join("map.json");
    std::fs::write(&map, r#"{"cat": 3}"#).unwrap();
    let aug = root.join("aug");
    let dlsm = fixture("dlsm/tiny_a");
    let clf = fixture("dlsm/tiny_clf/checkpoint.pth");
    let said = run_ok(
        &[
            "augment",
            "--model",
            s(&dlsm),
            "--classifier",
            s(&clf),
            "--class",
            "folders",
            "--class-map",
            s(&map),
            "--t",
            "0.1",
            "--steps",
            "10",
            "--input",
            s(&dlsm_in),
            "--output",
            s(&aug),
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(said.contains("cat=3"), "{said}");
    assert_eq!(pngs(&aug.join("cat")), 1);
    let x = root.join("x");
    let e = run_fails(
        &[
            "sample",
            "--model",
            s(&model),
            "--class",
            "folders",
            "--t",
            "0.2",
            "-o",
            s(&x),
            s(&input),
        ],
        &[],
        2,
    );
    assert!(e.contains("class-per-folder dataset"), "{e}");
}
