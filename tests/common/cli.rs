//! Helpers shared by the command-line tests: scratch folders, generated datasets, running
//! the built binary, comparing folder trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use boomerang::image_io::save_image;
use boomerang::DataRange;
use ndarray::Array3;

pub const BIN: &str = env!("CARGO_BIN_EXE_boomerang");

/// A fresh, empty folder under Cargo's scratch space for integration tests.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A deterministic test picture in [-1, 1]: smooth structure plus pseudo-random texture.
pub fn picture(seed: usize, channels: usize, h: usize, w: usize) -> Array3<f32> {
    Array3::from_shape_fn((channels, h, w), |(c, y, x)| {
        let s = seed as f32;
        let smooth = (0.3 * x as f32 + 0.2 * y as f32 + 1.7 * c as f32 + 0.9 * s).sin() * 0.6;
        let hash = ((x * 73 + y * 151 + c * 37 + seed * 1009) % 101) as f32 / 101.0;
        (smooth + 0.35 * (hash - 0.5)).clamp(-1.0, 1.0)
    })
}

/// Write `n` RGB PNGs of `size`×`size` into `dir/<class>/img<i>.png`, spread over classes.
pub fn make_dataset(dir: &Path, classes: &[&str], per_class: usize, size: usize) -> Vec<String> {
    let mut rels = Vec::new();
    let mut k = 0;
    for class in classes {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..per_class {
            let rel = format!("{class}/img{i}.png");
            save_image(
                dir.join(&rel),
                picture(k, 3, size, size).view(),
                DataRange::MinusOneToOne,
            )
            .unwrap();
            rels.push(rel);
            k += 1;
        }
    }
    rels
}

/// Every file under `root` (hidden ones included), by relative path, with its bytes.
pub fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The image files of a tree (no manifests).
pub fn images(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(root)
        .into_iter()
        .filter(|(k, _)| k.ends_with(".png") || k.ends_with(".jpg"))
        .collect()
}

/// Run the binary with `args` (and extra environment variables).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_MAX",
        "SLURM_ARRAY_TASK_STEP",
        "JOB_COMPLETION_INDEX",
        "BOOMERANG_SHARD_COUNT",
    ] {
        cmd.env_remove(var);
    }
    // libgomp's spin-waiting makes libtorch crawl when test processes share a few cores (the
    // Makefile sets the same).
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        cmd.env("OMP_WAIT_POLICY", "PASSIVE");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the boomerang binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "the binary panicked: {stderr}");
    out
}

/// Run and require success.
pub fn run_ok(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = run(args, env);
    assert!(
        out.status.success(),
        "boomerang {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run and require the exit status `code`; returns stderr.
pub fn run_fails(args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let out = run(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "boomerang {args:?}: expected exit status {code}; stderr: {stderr}"
    );
    assert!(stderr.contains("error"), "no error message for {args:?}: {stderr}");
    stderr
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The manifest's lines parsed as JSON objects.
pub fn manifest(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The manifest's lines that parse (a line cut by a kill does not).
pub fn manifest_lenient(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
