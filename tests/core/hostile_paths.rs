//! Hostile files and folders: no data loss, no privacy leak, no crash, bounded memory. Every
//! job (`anonymize`, `augment`, `sample`, `enhance`, as the built binary and as the library)
//! on generated trees with names, links, collisions, special files and sizes chosen to break
//! it: outputs stay inside the output folder, inputs are never written, a run keeps only what
//! it wrote itself with the same settings, and every refusal comes before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use boomerang::apps::anonymize::{read_manifest, AnonymizeJob, EntryStatus};
use boomerang::apps::dataset::{load_for_model_with, ModelInput, SizePolicy};
use boomerang::core::pipeline::Pipeline;
use boomerang::image_io::{save_image, ImageLimits};
use boomerang::{DataRange, NoiseStreams, TimeSpec};
use ndarray::{Array4, ArrayView4};

use crate::cli_common::*;

const MODEL: &str = "gaussian:0,0.5";

/// Every file under `root` except under the folders in `skip`, with its bytes.
fn files_outside(root: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if skip.iter().any(|s| p.starts_with(s)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Run the binary, killing it after `secs` (a hang or a runaway allocation fails the test
/// instead of the machine).
fn run_within(args: &[&str], env: &[(&str, &str)], secs: u64) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(secs) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "boomerang {args:?} still ran after {secs} s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn fails_within(args: &[&str], code: i32, secs: u64) -> String {
    let out = run_within(args, &[], secs);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "boomerang {args:?}: {stderr}");
    assert!(stderr.contains("error"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn anonymize<'a>(input: &'a Path, output: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "anonymize",
        "--model",
        MODEL,
        "--t",
        "0.3",
        "--steps",
        "20",
        "-q",
        "--input",
        s(input),
        "--output",
        s(output),
    ];
    v.extend_from_slice(extra);
    v
}

fn augment<'a>(input: &'a Path, output: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "augment",
        "--model",
        MODEL,
        "--steps",
        "20",
        "-q",
        "--input",
        s(input),
        "--output",
        s(output),
    ];
    v.extend_from_slice(extra);
    v
}

fn sample<'a>(inputs: &[&'a Path], output: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "sample",
        "--model",
        MODEL,
        "--t",
        "0.3",
        "-k",
        "1",
        "--steps",
        "20",
        "-q",
        "-o",
        s(output),
    ];
    v.extend_from_slice(extra);
    v.extend(inputs.iter().map(|p| s(p)));
    v
}

fn enhance<'a>(inputs: &[&'a Path], output: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "enhance",
        "--model",
        MODEL,
        "--t",
        "0.2",
        "--scale",
        "2",
        "--steps",
        "20",
        "-q",
        "-o",
        s(output),
    ];
    v.extend_from_slice(extra);
    v.extend(inputs.iter().map(|p| s(p)));
    v
}

fn png(path: &Path, seed: usize, size: usize) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    save_image(path, picture(seed, 3, size, size).view(), DataRange::MinusOneToOne).unwrap();
}

// ---------------------------------------------------------------------------------------
// 1. Path traversal from file names.

/// On Linux `sub\..\..\victim.png` is one file name. It used to be split on `\` and its `..`
/// kept, so every job read `root/victim.png` (outside the input) and wrote over it (outside
/// the output). Now it is a name like any other, inside both trees.
#[cfg(unix)]
#[test]
fn backslash_dot_dot_names_stay_inside_both_trees_for_every_job() {
    let root = scratch("hostile-traversal");
    let input = root.join("in");
    let hostile = "sub\\..\\..\\victim.png";
    png(&input.join("sub/x.png"), 1, 16);
    png(&input.join(hostile), 2, 16);
    png(&root.join("victim.png"), 3, 16);
    let outs: Vec<PathBuf> = ["o-anon", "o-aug", "o-sample", "o-enh"]
        .iter()
        .map(|n| root.join(n))
        .collect();
    let skip: Vec<&Path> = outs.iter().map(|p| p.as_path()).collect();
    let before = files_outside(&root, &skip);

    run_ok(&anonymize(&input, &outs[0], &["--overwrite"]), &[]);
    run_ok(&augment(&input, &outs[1], &["--t", "0.3", "--overwrite"]), &[]);
    run_ok(&sample(&[&input], &outs[2], &["--overwrite"]), &[]);
    run_ok(&enhance(&[&input], &outs[3], &["--overwrite"]), &[]);

    assert_eq!(
        files_outside(&root, &skip),
        before,
        "a job wrote outside its output folder (or into the input)"
    );
    for (out, name) in [
        (&outs[0], hostile.to_string()),
        (&outs[1], "sub\\..\\..\\victim_boom0.png".into()),
        (&outs[2], "sub\\..\\..\\victim_t0.3_s0.png".into()),
        (&outs[3], "sub\\..\\..\\victim_up.png".into()),
    ] {
        let file = out.join(&name);
        assert!(file.is_file(), "{} missing", file.display());
        assert_eq!(file.parent().unwrap(), out.as_path(), "{name} left its folder");
    }
    // The anonymized hostile file comes from the hostile input, not from the victim.
    let entries = manifest(&outs[0].join("manifest.jsonl"));
    let e = entries
        .iter()
        .find(|e| e["input"] == hostile)
        .expect("hostile input recorded");
    assert_eq!(e["status"], "ok", "{e}");
    assert_eq!(e["output"], hostile);
}

// ---------------------------------------------------------------------------------------
// 2. Anonymize never "recovers" what it did not write.

/// An output subfolder linked into the input, an output file linked to an input file, a
/// manifest linked to an input file: refused (exit 2) before anything is written, with or
/// without --overwrite, for every job; the input is unchanged.
#[cfg(unix)]
#[test]
fn links_inside_the_output_tree_are_refused_and_never_written_through() {
    use std::os::unix::fs::symlink;
    let root = scratch("hostile-links");
    let input = root.join("in");
    make_dataset(&input, &["a"], 2, 16);
    let before = tree(&input);

    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    symlink(input.join("a"), out.join("a")).unwrap();
    for extra in [&[][..], &["--overwrite"][..]] {
        let err = run_fails(&anonymize(&input, &out, extra), &[], 2);
        assert!(err.contains("symbolic link"), "{err}");
        let mut aug = vec!["--t", "0.3"];
        aug.extend_from_slice(extra);
        let err = run_fails(&augment(&input, &out, &aug), &[], 2);
        assert!(err.contains("symbolic link"), "{err}");
        let err = run_fails(&sample(&[&input], &out, extra), &[], 2);
        assert!(err.contains("symbolic link"), "{err}");
        let err = run_fails(&enhance(&[&input], &out, extra), &[], 2);
        assert!(err.contains("symbolic link"), "{err}");
    }
    assert_eq!(tree(&input), before);

    // A link as the output file itself.
    let out2 = root.join("out2");
    std::fs::create_dir_all(out2.join("a")).unwrap();
    symlink(input.join("a/img0.png"), out2.join("a/img0.png")).unwrap();
    let err = run_fails(&anonymize(&input, &out2, &["--overwrite"]), &[], 2);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(tree(&input), before);

    // A manifest linked to an input file is never appended to.
    let out3 = root.join("out3");
    std::fs::create_dir_all(&out3).unwrap();
    symlink(input.join("a/img1.png"), out3.join("manifest.jsonl")).unwrap();
    let err = run_fails(&anonymize(&input, &out3, &[]), &[], 2);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(tree(&input), before);
    assert!(!out3.join("a").exists(), "something was written before the refusal");
}

/// An output tree pre-filled with copies of the originals used to be taken as done: the
/// manifest recorded the originals as anonymized with MSE 0 and SSIM 1. Now an existing
/// output counts only if a manifest line of the same settings records its content, or if it
/// is byte for byte what this run makes; anything else is left alone and reported.
#[test]
fn copies_of_the_originals_are_never_recorded_as_anonymized() {
    let root = scratch("hostile-prefilled");
    let input = root.join("in");
    make_dataset(&input, &["a", "b"], 2, 16);
    let out = root.join("out");
    for (rel, bytes) in tree(&input) {
        let p = out.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let copies = tree(&out);
    let o = run_ok(&anonymize(&input, &out, &[]), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("not what this run makes"), "{stderr}");
    let entries = manifest(&out.join("manifest.jsonl"));
    assert_eq!(entries.len(), 4);
    for e in &entries {
        assert_eq!(e["status"], "skipped", "an original was recorded as anonymized: {e}");
        assert!(e.get("mse").is_none(), "{e}");
    }
    let now: BTreeMap<String, Vec<u8>> = tree(&out).into_iter().filter(|(k, _)| k.ends_with(".png")).collect();
    assert_eq!(
        now, copies,
        "files the run did not make were replaced without --overwrite"
    );

    // --overwrite replaces them by real samples.
    run_ok(&anonymize(&input, &out, &["--overwrite"]), &[]);
    let entries = manifest(&out.join("manifest.jsonl"));
    let ok: Vec<_> = entries.iter().filter(|e| e["status"] == "ok").collect();
    assert_eq!(ok.len(), 4);
    for e in ok {
        assert!(e["mse"].as_f64().unwrap() > 0.0, "{e}");
        let rel = e["output"].as_str().unwrap();
        assert_ne!(std::fs::read(out.join(rel)).unwrap(), copies[rel]);
    }
    // And a resumed run now finds them done (recorded and unchanged).
    let o = run_ok(
        &anonymize(&input, &out, &[])
            .into_iter()
            .filter(|a| *a != "-q")
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("4 already done"));
    // A manifest line forged to record a copy of the original does not make it done.
    let forged = root.join("forged");
    std::fs::create_dir_all(forged.join("a")).unwrap();
    std::fs::write(forged.join("a/img0.png"), &copies["a/img0.png"]).unwrap();
    let line = manifest(&out.join("manifest.jsonl"))
        .into_iter()
        .find(|e| e["status"] == "ok" && e["input"] == "a/img0.png")
        .unwrap();
    let (len, hash) = boomerang::apps::keys::content_id(&copies["a/img0.png"]);
    let mut line = line.as_object().unwrap().clone();
    line.insert("file_bytes".into(), len.into());
    line.insert("file_hash".into(), hash.into());
    line.insert("mse".into(), 0.01.into());
    std::fs::write(
        forged.join("manifest.jsonl"),
        format!("{}\n", serde_json::Value::Object(line)),
    )
    .unwrap();
    let o = run_ok(&anonymize(&input, &forged, &[]), &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not what this run makes"));
    assert_eq!(std::fs::read(forged.join("a/img0.png")).unwrap(), copies["a/img0.png"]);
    // A recorded output replaced by its original afterwards is not done any more.
    std::fs::write(out.join("a/img0.png"), &copies["a/img0.png"]).unwrap();
    let o = run_ok(&anonymize(&input, &out, &[]), &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("a/img0.png"));
    assert_eq!(std::fs::read(out.join("a/img0.png")).unwrap(), copies["a/img0.png"]);
}

/// A model that returns its input: nothing is anonymized.
struct Identity;

impl Pipeline for Identity {
    fn input(&self) -> ModelInput {
        ModelInput {
            channels: 3,
            size: None,
            multiple: 1,
            range: DataRange::MinusOneToOne,
        }
    }
    fn start_time(&self, _t: TimeSpec) -> boomerang::Result<f64> {
        Ok(300.0)
    }
    fn sample(
        &self,
        images: ArrayView4<'_, f32>,
        _t: TimeSpec,
        _n: &mut NoiseStreams,
    ) -> boomerang::Result<Array4<f32>> {
        Ok(images.to_owned())
    }
}

#[test]
fn a_result_equal_to_its_input_is_never_written_as_anonymized() {
    let root = scratch("hostile-identity");
    let input = root.join("in");
    make_dataset(&input, &["a"], 3, 12);
    let out = root.join("out");
    let report = AnonymizeJob::new(&input, &out, TimeSpec::fraction(0.3))
        .run(&Identity, &mut |_| {})
        .unwrap();
    assert_eq!((report.written, report.failed), (0, 3), "{report:?}");
    assert!(report.failures[0].1.contains("equals the input"), "{report:?}");
    assert!(images(&out).is_empty(), "an original was published as anonymized");
    let entries = read_manifest(&out.join("manifest.jsonl")).unwrap();
    assert!(entries.iter().all(|e| e.status == EntryStatus::Skipped));
}

// ---------------------------------------------------------------------------------------
// 3. Re-runs with other settings.

/// Anonymize at t = 0.5 into an output made at t = 0.3 used to print "0 written, 4 already
/// done". Now it is refused, naming the setting; so are other seeds, formats, size policies
/// and sampler settings; augment's --skip-existing likewise.
#[test]
fn reruns_with_other_settings_are_refused_naming_the_setting() {
    let root = scratch("hostile-settings");
    let input = root.join("in");
    make_dataset(&input, &["a"], 2, 16);
    let out = root.join("out");
    run_ok(&anonymize(&input, &out, &[]), &[]);
    let made = tree(&out);
    let other_t: Vec<&str> = anonymize(&input, &out, &[])
        .into_iter()
        .map(|a| if a == "0.3" { "0.5" } else { a })
        .collect();
    for (args, needle) in [
        (other_t, "t: 0.3 there, 0.5 now"),
        (anonymize(&input, &out, &["--seed", "7"]), "seed: 0 there, 7 now"),
        (
            anonymize(&input, &out, &["--format", "png"]),
            "format: same there, png now",
        ),
        (
            anonymize(&input, &out, &["--resize"]),
            "size policy: skip there, resize now",
        ),
        (
            anonymize(&input, &out, &[])
                .into_iter()
                .map(|a| if a == "20" { "30" } else { a })
                .collect(),
            "steps: \"uniform:20\" there, \"uniform:30\" now",
        ),
    ] {
        let err = run_fails(&args, &[], 2);
        assert!(err.contains(needle), "expected `{needle}` in: {err}");
        assert_eq!(tree(&out), made, "a refused run changed the output");
    }
    // The same settings resume; --overwrite replaces.
    run_ok(&anonymize(&input, &out, &[]), &[]);
    assert_eq!(tree(&out), made);
    run_ok(&anonymize(&input, &out, &["--seed", "7", "--overwrite"]), &[]);
    let made_images: BTreeMap<String, Vec<u8>> = made.into_iter().filter(|(k, _)| k.ends_with(".png")).collect();
    assert_ne!(images(&out), made_images);
    // Replaced, the folder holds seed 7 now: seed 7 resumes, seed 0 is refused.
    let o = run_ok(
        &anonymize(&input, &out, &["--seed", "7"])
            .into_iter()
            .filter(|a| *a != "-q")
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 written, 2 already done"));
    let err = run_fails(&anonymize(&input, &out, &[]), &[], 2);
    assert!(err.contains("seed: 7 there, 0 now"), "{err}");

    // augment --skip-existing: only with the same settings, only over recorded files.
    let aug = root.join("aug");
    run_ok(&augment(&input, &aug, &["--t", "0.3", "-k", "2"]), &[]);
    std::fs::remove_file(aug.join("a/img0_boom1.png")).unwrap();
    let err = run_fails(
        &augment(&input, &aug, &["--t", "0.4", "-k", "2", "--skip-existing"]),
        &[],
        2,
    );
    assert!(err.contains("t: 0.3 there, 0.4 now"), "{err}");
    assert!(!aug.join("a/img0_boom1.png").exists());
    let err = run_fails(
        &augment(
            &input,
            &aug,
            &["--t", "0.3", "-k", "2", "--skip-existing", "--seed", "1"],
        ),
        &[],
        2,
    );
    assert!(err.contains("seed"), "{err}");
    run_ok(
        &augment(&input, &aug, &["--t", "0.3", "-k", "2", "--skip-existing"]),
        &[],
    );
    assert!(aug.join("a/img0_boom1.png").is_file());
    // A file no run recorded is not kept as done.
    std::fs::copy(input.join("a/img1.png"), aug.join("a/img1_boom0.png")).unwrap();
    let err = run_fails(
        &augment(&input, &aug, &["--t", "0.3", "-k", "2", "--skip-existing"]),
        &[],
        2,
    );
    assert!(
        err.contains("img1_boom0.png") && err.contains("not written by"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Outputs inside an input folder.

#[test]
fn sample_and_enhance_refuse_an_output_inside_an_input_folder() {
    let root = scratch("hostile-inside");
    let input = root.join("in");
    make_dataset(&input, &["a"], 2, 16);
    let before = tree(&input);
    for out in [input.join("samples"), input.join("a"), input.clone()] {
        let err = run_fails(&sample(&[&input], &out, &[]), &[], 2);
        assert!(err.contains("inside"), "{err}");
        let err = run_fails(&enhance(&[&input], &out, &[]), &[], 2);
        assert!(err.contains("inside"), "{err}");
    }
    // An input file inside the output folder too.
    let img = input.join("a/img0.png");
    let err = run_fails(&sample(&[&img], &input, &[]), &[], 2);
    assert!(err.contains("inside"), "{err}");
    assert_eq!(tree(&input), before);
    // A file input beside the output folder is fine.
    run_ok(
        &sample(&[&img], &input.join("a").join("..").join("..").join("s"), &[]),
        &[],
    );
}

// ---------------------------------------------------------------------------------------
// 5. Output name collisions.

/// `a.png` and `a.jpg` map to the same output names; a `t` given twice too. Refused before
/// anything is written, in every job.
#[test]
fn colliding_output_names_are_refused_before_anything_is_written() {
    let root = scratch("hostile-collide");
    let input = root.join("in");
    png(&input.join("c/a.png"), 1, 16);
    save_image(
        input.join("c/a.jpg"),
        picture(2, 3, 16, 16).view(),
        DataRange::MinusOneToOne,
    )
    .unwrap();
    png(&input.join("c/b.png"), 3, 16);
    let before = tree(&input);
    let out = root.join("out");
    for args in [
        sample(&[&input], &out, &[]),
        enhance(&[&input], &out, &[]),
        augment(&input, &out, &["--t", "0.3"]),
        anonymize(&input, &out, &["--format", "png"]),
    ] {
        let err = run_fails(&args, &[], 2);
        assert!(err.contains("a.png") && err.contains("a.jpg"), "{args:?}: {err}");
        assert!(
            !out.exists() || images(&out).is_empty(),
            "{args:?} wrote before refusing"
        );
    }
    let err = run_fails(&sample(&[&input.join("c/b.png")], &out, &["--t", "0.3,0.30"]), &[], 2);
    assert!(err.contains("twice"), "{err}");
    // An input named like another input's output (augment with originals copied).
    let in2 = root.join("in2");
    png(&in2.join("c/x.png"), 4, 16);
    png(&in2.join("c/x_boom0.png"), 5, 16);
    let err = run_fails(&augment(&in2, &out, &["--t", "0.3", "--copy-originals"]), &[], 2);
    assert!(err.contains("x_boom0.png"), "{err}");
    assert!(!out.exists() || images(&out).is_empty());
    assert_eq!(tree(&input), before);
}

// ---------------------------------------------------------------------------------------
// 6. Non-UTF-8 names.

/// A name that is not UTF-8 used to be converted lossily, then reported missing. Now it is
/// kept byte for byte in every output name, and the manifest stores it exactly and reads it
/// back.
#[cfg(unix)]
#[test]
fn non_utf8_names_are_kept_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let root = scratch("hostile-bytes");
    let input = root.join("in");
    let dir = OsStr::from_bytes(b"d\xff");
    let name = OsStr::from_bytes(b"caf\xe9.png");
    png(&input.join(dir).join(name), 1, 16);
    png(&input.join("plain.png"), 2, 16);
    let names = |out: &Path| -> Vec<Vec<u8>> {
        let mut v: Vec<Vec<u8>> = std::fs::read_dir(out.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        v.sort();
        v
    };

    let anon = root.join("anon");
    let o = run_ok(&anonymize(&input, &anon, &[]), &[]);
    assert!(
        String::from_utf8_lossy(&o.stderr).is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(names(&anon), vec![b"caf\xe9.png".to_vec()]);
    let entries = read_manifest(&anon.join("manifest.jsonl")).unwrap();
    let e = entries
        .iter()
        .find(|e| e.input_bytes.is_some())
        .expect("exact bytes recorded");
    assert_eq!(e.status, EntryStatus::Ok);
    assert_eq!(e.input_bytes.as_deref(), Some(&b"d\xff/caf\xe9.png"[..]));
    assert_eq!(e.input, "d\\xff/caf\\xe9.png");
    let rel = e.input_path().unwrap();
    assert_eq!(input.join(&rel), input.join(dir).join(name));
    assert_eq!(e.output_path().unwrap(), rel);
    let plain = entries.iter().find(|e| e.input == "plain.png").unwrap();
    assert!(plain.input_bytes.is_none(), "UTF-8 names are stored as text only");
    // Resuming reads the names back: nothing to do.
    let o = run_ok(
        &anonymize(&input, &anon, &[])
            .into_iter()
            .filter(|a| *a != "-q")
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 written, 2 already done"));

    let aug = root.join("aug");
    run_ok(&augment(&input, &aug, &["--t", "0.3"]), &[]);
    assert_eq!(names(&aug), vec![b"caf\xe9_boom0.png".to_vec()]);
    let smp = root.join("smp");
    run_ok(&sample(&[&input], &smp, &[]), &[]);
    assert_eq!(names(&smp), vec![b"caf\xe9_t0.3_s0.png".to_vec()]);
    let enh = root.join("enh");
    run_ok(&enhance(&[&input], &enh, &[]), &[]);
    assert_eq!(
        names(&enh),
        vec![b"caf\xe9_c0_p1.png".to_vec(), b"caf\xe9_up.png".to_vec()]
    );
}

// ---------------------------------------------------------------------------------------
// 7. Bounded sizes, special files.

/// A PNG that declares `w × h` pixels: a valid header (with its CRC), then garbage.
fn png_header_only(path: &Path, w: u32, h: u32) {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut bytes, b"IHDR", &ihdr);
    chunk(&mut bytes, b"IDAT", &[0x78, 0x9c, 1, 2, 3, 4]);
    chunk(&mut bytes, b"IEND", &[]);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// A 10000×10000 PNG is refused from its header, before any pixel is decoded (it used to be
/// decoded first: 2.7 GB for a 292 KB file), naming the limit and how to raise it.
#[test]
fn oversized_images_are_refused_from_their_header() {
    let root = scratch("hostile-big");
    let big = root.join("in/a/big.png");
    png_header_only(&big, 10_000, 10_000);
    let model = ModelInput {
        channels: 3,
        size: None,
        multiple: 1,
        range: DataRange::MinusOneToOne,
    };
    let e = load_for_model_with(&big, &model, SizePolicy::Resize, &ImageLimits::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("10000×10000") && e.contains("BOOMERANG_MAX_PIXELS") && e.contains("16.8 megapixels"),
        "{e}"
    );
    // Raised, the limit lets the header through (and the garbage fails to decode).
    let raised = ImageLimits::from_var(Some("200000000".into())).unwrap();
    let e = load_for_model_with(&big, &model, SizePolicy::Resize, &raised)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot decode"), "{e}");
    assert!(ImageLimits::from_var(Some("lots".into())).is_err());
    assert!(ImageLimits::from_var(Some("0".into())).is_err());

    // The tools: anonymize records and skips it, sample refuses it, BOOMERANG_MAX_PIXELS
    // lowers the limit for everything.
    png(&root.join("in/a/ok.png"), 1, 16);
    let out = root.join("out");
    let o = run_within(&anonymize(&root.join("in"), &out, &[]), &[], 60);
    assert!(o.status.success());
    let entries = manifest(&out.join("manifest.jsonl"));
    let e = entries.iter().find(|e| e["input"] == "a/big.png").unwrap();
    assert_eq!(e["status"], "skipped");
    assert!(e["error"].as_str().unwrap().contains("BOOMERANG_MAX_PIXELS"), "{e}");
    let err = fails_within(&sample(&[&big], &root.join("s"), &[]), 2, 60);
    assert!(err.contains("BOOMERANG_MAX_PIXELS"), "{err}");
    let o = run_within(
        &sample(&[&root.join("in/a/ok.png")], &root.join("s"), &[]),
        &[("BOOMERANG_MAX_PIXELS", "100")],
        60,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("above the limit"));
}

/// Counts, factors and sizes are bounded before anything is allocated; special files are
/// refused before they are opened (reading `/dev/zero` never ends, opening a FIFO blocks).
#[cfg(unix)]
#[test]
fn huge_counts_and_special_files_are_refused_at_once() {
    let root = scratch("hostile-bounds");
    let img = root.join("in/a.png");
    png(&img, 1, 16);
    let out = root.join("out");
    for (extra, needle) in [
        (&["-k", "1000000000"][..], "samples"),
        (&["--batch-size", "100000000"][..], "batch_size"),
        (
            &["--grid", "-k", "9999", "--t", "0.1,0.2,0.4,0.5,0.6,0.7,0.8,0.9,1.0"][..],
            "grid",
        ),
    ] {
        let mut args = sample(&[&img], &out, &[]);
        if extra.contains(&"-k") {
            let k = args.iter().position(|a| *a == "-k").unwrap();
            args.drain(k..k + 2);
        }
        args.extend_from_slice(extra);
        let err = fails_within(&args, 2, 30);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    for (extra, needle) in [
        (&["--passes", "1000000000"][..], "passes"),
        (&["-k", "1000000000"][..], "candidates"),
        (&["--scale", "1e9"][..], "scale"),
        (&["--scale", "inf"][..], "scale"),
    ] {
        let mut args = enhance(&[&img], &out, &[]);
        args.retain(|a| *a != "--scale" && *a != "2");
        args.extend_from_slice(extra);
        let err = fails_within(&args, 2, 30);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    // A scale within bounds whose result is too large.
    let big = root.join("in2/b.png");
    png(&big, 2, 100);
    let mut args = enhance(&[&big], &out, &[]);
    args.retain(|a| *a != "--scale" && *a != "2");
    args.extend_from_slice(&["--scale", "60"]);
    let err = fails_within(&args, 2, 30);
    assert!(err.contains("BOOMERANG_MAX_PIXELS"), "{err}");
    let err = fails_within(
        &augment(&root.join("in"), &out, &["--t", "0.3", "-k", "1000000000"]),
        2,
        30,
    );
    assert!(err.contains("copies"), "{err}");
    assert!(!out.exists() || images(&out).is_empty());

    // Special files named as inputs.
    let fifo = root.join("fifo.png");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for special in [Path::new("/dev/zero"), fifo.as_path()] {
        let err = fails_within(&sample(&[special], &out, &[]), 2, 30);
        assert!(err.contains("not a regular file"), "{err}");
        let err = fails_within(&enhance(&[special], &out, &[]), 2, 30);
        assert!(err.contains("not a regular file"), "{err}");
    }
    // ... or found in a folder (also as a link named like an image): never opened.
    let input = root.join("in3");
    png(&input.join("ok.png"), 3, 16);
    std::os::unix::fs::symlink("/dev/zero", input.join("zero.png")).unwrap();
    std::fs::rename(&fifo, input.join("fifo.png")).unwrap();
    let o = run_within(&anonymize(&input, &root.join("anon"), &[]), &[], 60);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(manifest(&root.join("anon/manifest.jsonl")).len(), 1);
}

// ---------------------------------------------------------------------------------------
// 8. Exit codes.

/// 2: bad arguments or input; 1: the run failed. Writing into a path under a regular file
/// (ENOTDIR; tests run as root, so permissions cannot make a folder read-only) used to give 2
/// in `sample` and `enhance` and 1 in `anonymize`; now every job gives 1, also when the
/// failure comes part-way through (a file where an output subfolder goes).
#[test]
fn write_failures_exit_1_and_bad_input_exits_2_in_every_job() {
    let root = scratch("hostile-exit");
    let input = root.join("in");
    make_dataset(&input, &["a"], 2, 16);
    let file = root.join("file.txt");
    std::fs::write(&file, b"a regular file").unwrap();
    let under = file.join("out");
    for args in [
        anonymize(&input, &under, &[]),
        augment(&input, &under, &["--t", "0.3"]),
        sample(&[&input], &under, &[]),
        enhance(&[&input], &under, &[]),
    ] {
        run_fails(&args, &[], 1);
    }
    // Part-way: the output folder exists, but a file is where the class folder goes.
    for (i, make) in ["anon", "aug", "smp", "enh"].iter().enumerate() {
        let out = root.join(make);
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("a"), b"in the way").unwrap();
        let args = match i {
            0 => anonymize(&input, &out, &[]),
            1 => augment(&input, &out, &["--t", "0.3"]),
            2 => sample(&[&input], &out, &[]),
            _ => enhance(&[&input], &out, &[]),
        };
        let err = run_fails(&args, &[], 1);
        assert!(err.contains("a"), "{err}");
    }
    // Bad input stays 2.
    let missing = root.join("missing");
    run_fails(&anonymize(&missing, &root.join("o"), &[]), &[], 2);
    run_fails(&sample(&[&missing], &root.join("o"), &[]), &[], 2);
}

// ---------------------------------------------------------------------------------------
// 9. Distances of recovered entries.

/// After lost manifest lines, a recovered JPEG entry used to report distances measured on the
/// decoded file while an uninterrupted run measured the array before encoding. Both now
/// measure the file as written: the recovered line is the line an uninterrupted run writes.
#[test]
fn recovered_jpeg_entries_match_an_uninterrupted_run() {
    let root = scratch("hostile-jpeg");
    let input = root.join("in");
    for i in 0..3 {
        let p = input.join(format!("a/img{i}.jpg"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        save_image(&p, picture(i, 3, 16, 16).view(), DataRange::MinusOneToOne).unwrap();
    }
    let out = root.join("out");
    run_ok(&anonymize(&input, &out, &[]), &[]);
    let full = std::fs::read_to_string(out.join("manifest.jsonl")).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    assert_eq!(lines.len(), 3);
    // Lose the second line (its image stays).
    std::fs::write(out.join("manifest.jsonl"), format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let o = run_ok(
        &anonymize(&input, &out, &[])
            .into_iter()
            .filter(|a| *a != "-q")
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 recovered"));
    let mut got: Vec<String> = std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut want: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "the recovered line differs from the uninterrupted run's");
    // The recorded distances are those of the file as written.
    let m: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    let rel = m["output"].as_str().unwrap();
    let d = boomerang::apps::anonymize::file_distances(
        &input.join(rel),
        &out.join(rel),
        &ModelInput {
            channels: 3,
            size: None,
            multiple: 1,
            range: DataRange::MinusOneToOne,
        },
        SizePolicy::Skip,
    )
    .unwrap();
    assert_eq!(m["mse"].as_f64().unwrap(), d.mse);
}
