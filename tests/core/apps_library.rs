//! The application modules as a library: stable keys, enhancement, augmentation, the epoch
//! scheme, shards, and the statistics of Boomerang distances on the Gaussian model.

use boomerang::analytic::GaussianDenoiser;
use boomerang::apps::anonymize::{anonymize_batch, AnonymizeJob, Shard};
use boomerang::apps::augment::{local_samples, EpochAugmenter, Pick, TimeChoice};
use boomerang::apps::enhance::{enhance, target_size, EnhanceOptions};
use boomerang::apps::keys::{derive_key, hash_bytes, path_key, unit_f64};
use boomerang::image_io::{save_image, ResizeFilter};
use boomerang::schedule::DiscreteSchedule;
use boomerang::{Boomerang, DataRange, Spacing, TimeSpec};
use ndarray::{s, Array4, Axis};
use ndarray_rand::rand_distr::{Distribution, Normal};
use rand::SeedableRng;

fn runner(spacing: Spacing) -> Boomerang<GaussianDenoiser> {
    Boomerang::builder(
        GaussianDenoiser::new(0.0, 0.5).unwrap(),
        DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap(),
    )
    .spacing(spacing)
    .build()
    .unwrap()
}

fn images(n: usize, h: usize, w: usize) -> Array4<f32> {
    Array4::from_shape_fn((n, 3, h, w), |(i, c, y, x)| {
        ((0.4 * x as f32 + 0.3 * y as f32 + c as f32 + 1.3 * i as f32).sin() * 0.7).clamp(-1.0, 1.0)
    })
}

#[test]
fn keys_are_pinned() {
    // These values are part of the reproducibility contract: a change here changes every
    // anonymized dataset. Update them only with a deliberate, documented break.
    assert_eq!(hash_bytes(b"cats/001.png"), path_key("cats/001.png"));
    assert_eq!(path_key("cats/001.png"), path_key("./cats//001.png"));
    // Keys come from path components: on Windows `cats\001.png` is the same two components,
    // on Unix it is one file name (another file, another key; it used to be split on `\`,
    // which is how `sub\..\..\victim.png` escaped the output folder).
    #[cfg(windows)]
    assert_eq!(path_key("cats/001.png"), path_key("cats\\001.png"));
    #[cfg(unix)]
    assert_ne!(path_key("cats/001.png"), path_key("cats\\001.png"));
    assert_eq!(format!("{:016x}", path_key("cats/001.png")), PINNED_PATH_KEY);
    assert_eq!(format!("{:016x}", derive_key(42, &[1, 2])), PINNED_DERIVED);
    assert_ne!(derive_key(42, &[1, 2]), derive_key(42, &[2, 1]));
    assert_ne!(derive_key(42, &[]), derive_key(42, &[0]));
    let u: Vec<f64> = (0..20_000u64).map(unit_f64).collect();
    let mean = u.iter().sum::<f64>() / u.len() as f64;
    assert!((mean - 0.5).abs() < 0.01, "{mean}");
}

// Cross-checked against an independent Python transcription of FNV-1a + SplitMix64.
const PINNED_PATH_KEY: &str = "f0f0ae366f481480";
const PINNED_DERIVED: &str = "13a3438ee2abbe43";

#[test]
fn enhance_is_per_item_and_batch_independent() {
    let r = runner(Spacing::Uniform(40));
    let low = images(3, 7, 5);
    let keys = [11, 22, 33];
    let mut opts = EnhanceOptions::new(TimeSpec::fraction(0.15));
    opts.passes = 3;
    opts.candidates = 2;
    opts.seed = 5;
    let all = enhance(&r, low.view(), &keys, (16, 20), &opts).unwrap();
    assert_eq!(all.passes.len(), 3);
    assert_eq!(all.upsampled.dim(), (3, 3, 16, 20));
    for p in &all.passes {
        assert_eq!(p.dim(), (6, 3, 16, 20));
    }
    // Batch limit 1: same bits.
    opts.batch_size = 1;
    let one = enhance(&r, low.view(), &keys, (16, 20), &opts).unwrap();
    for (a, b) in all.passes.iter().zip(&one.passes) {
        assert_eq!(a, b);
    }
    // Through a trait object, as the command line tool drives it: the same.
    let dynamic: &dyn boomerang::core::pipeline::Pipeline = &r;
    let via_dyn = enhance(dynamic, low.view(), &keys, (16, 20), &opts).unwrap();
    assert_eq!(via_dyn.passes, one.passes);
    // Input 1 alone (key 22) gives what it gave in the batch.
    let alone = enhance(&r, low.slice(s![1..2, .., .., ..]), &[22], (16, 20), &opts).unwrap();
    for p in 0..3 {
        for j in 0..2 {
            assert_eq!(alone.candidate(p, 0, j).unwrap(), all.candidate(p, 1, j).unwrap());
        }
    }
    // Candidates and passes differ.
    assert_ne!(all.candidate(0, 0, 0).unwrap(), all.candidate(0, 0, 1).unwrap());
    assert_ne!(all.candidate(0, 0, 0).unwrap(), all.candidate(1, 0, 0).unwrap());
    assert!(all.candidate(3, 0, 0).is_none() && all.candidate(0, 3, 0).is_none() && all.candidate(0, 0, 2).is_none());
    // Bad settings are errors.
    let mut bad = opts.clone();
    bad.passes = 0;
    assert!(enhance(&r, low.view(), &keys, (16, 20), &bad).is_err());
    assert!(enhance(&r, low.view(), &keys[..2], (16, 20), &opts).is_err());
    bad = opts.clone();
    bad.t = TimeSpec::fraction(1.5);
    assert!(enhance(&r, low.view(), &keys, (16, 20), &bad).is_err());
}

#[test]
fn enhance_sizes_and_filters() {
    assert_eq!(target_size(Some((64, 64)), (16, 16), None).unwrap(), (64, 64));
    assert_eq!(target_size(Some((64, 64)), (16, 16), Some(4.0)).unwrap(), (64, 64));
    assert!(target_size(Some((64, 64)), (16, 16), Some(3.0)).is_err());
    assert_eq!(target_size(None, (12, 10), Some(2.5)).unwrap(), (30, 25));
    assert_eq!(target_size(None, (12, 10), Some(1.0 / 3.0)).unwrap(), (4, 3));
    assert!(target_size(None, (12, 10), None).is_err());
    assert!(target_size(None, (12, 10), Some(-1.0)).is_err());
    // Nearest upsampling by 3 replicates pixels exactly.
    let low = images(1, 4, 4);
    let up = boomerang::apps::enhance::upsample(low.view(), (12, 12), ResizeFilter::Nearest).unwrap();
    for y in 0..12 {
        for x in 0..12 {
            assert_eq!(up[[0, 1, y, x]], low[[0, 1, y / 3, x / 3]]);
        }
    }
}

#[test]
fn local_samples_are_deterministic_and_t_ranges_are_respected() {
    let r = runner(Spacing::Uniform(50));
    let x = images(3, 8, 8);
    let keys = [7, 8, 9];
    let t = TimeChoice::Uniform { low: 0.2, high: 0.6 };
    let a = local_samples(&r, x.view(), &keys, 4, &t, 1, 0).unwrap();
    let b = local_samples(&r, x.view(), &keys, 4, &t, 1, 1).unwrap();
    assert_eq!(a.len(), 12);
    let mut ts = Vec::new();
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(p.sample, q.sample);
        assert_eq!((p.item, p.copy), (q.item, q.copy));
        match p.t {
            TimeSpec::Fraction(f) => {
                assert!((0.2..=0.6).contains(&f));
                ts.push(f);
            }
            other => panic!("{other:?}"),
        }
    }
    ts.sort_by(f64::total_cmp);
    ts.dedup();
    assert!(ts.len() > 8, "t draws collide: {ts:?}");
    // Reversed order of items: same samples per key.
    let rev = x.slice(s![..;-1, .., .., ..]).to_owned();
    let c = local_samples(&r, rev.view(), &[9, 8, 7], 4, &t, 1, 2).unwrap();
    for s in &c {
        let orig = &a[(2 - s.item) * 4 + s.copy];
        assert_eq!(s.sample, orig.sample);
    }
    assert!(local_samples(&r, x.view(), &keys, 0, &t, 1, 0).is_err());
    assert!(local_samples(
        &r,
        x.view(),
        &keys,
        1,
        &TimeChoice::Uniform { low: 0.5, high: 0.2 },
        1,
        0
    )
    .is_err());
}

#[test]
fn epoch_augmenter_follows_p_and_is_deterministic() {
    let aug = EpochAugmenter::new(3, 0.25).unwrap();
    let n = 40_000u64;
    let mut counts = [0usize; 5];
    let mut copies = 0;
    for item in 0..n {
        match aug.pick(7, item, 5) {
            Pick::Original => {}
            Pick::Copy(k) => {
                copies += 1;
                counts[k] += 1;
            }
        }
        assert_eq!(aug.pick(7, item, 5), aug.pick(7, item, 5));
    }
    let frac = copies as f64 / n as f64;
    // Binomial(40000, 0.25): standard deviation 0.0022.
    assert!((frac - 0.25).abs() < 0.01, "{frac}");
    for c in counts {
        let share = c as f64 / copies as f64;
        assert!((share - 0.2).abs() < 0.02, "{counts:?}");
    }
    // Epochs differ; p = 0 and p = 1 are the extremes; no copies means the original.
    let changed = (0..1000u64).filter(|&i| aug.pick(1, i, 5) != aug.pick(2, i, 5)).count();
    assert!(changed > 100);
    let never = EpochAugmenter::new(3, 0.0).unwrap();
    let always = EpochAugmenter::new(3, 1.0).unwrap();
    assert!((0..1000).all(|i| never.pick(0, i, 3) == Pick::Original));
    assert!((0..1000).all(|i| always.pick(0, i, 3) != Pick::Original));
    assert_eq!(always.pick(0, 1, 0), Pick::Original);
    assert!(EpochAugmenter::new(0, 1.5).is_err());
    let p = aug.path(
        0,
        "cat/a.jpg",
        2,
        std::path::Path::new("/o"),
        std::path::Path::new("/b"),
    );
    assert!(
        p == std::path::Path::new("/o/cat/a.jpg") || p.starts_with("/b/cat"),
        "{p:?}"
    );
}

#[test]
fn shards_from_flags_and_environments() {
    assert_eq!(Shard::parse("3/8").unwrap(), Shard { index: 3, count: 8 });
    for bad in ["8/8", "1", "a/b", "1/0", "-1/2"] {
        assert!(Shard::parse(bad).is_err(), "{bad}");
    }
    let env = |vars: &[(&str, &str)]| {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Shard::from_vars(move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    };
    assert_eq!(env(&[]).unwrap(), None);
    assert_eq!(
        env(&[("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4")]).unwrap(),
        Some(Shard { index: 2, count: 4 })
    );
    // --array=1-8: ids 1..=8 are shards 0..=7 of 8.
    assert_eq!(
        env(&[
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "8")
        ])
        .unwrap(),
        Some(Shard { index: 7, count: 8 })
    );
    // --array=0-10:5 gives ids 0, 5, 10.
    assert_eq!(
        env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "10"),
            ("SLURM_ARRAY_TASK_STEP", "5")
        ])
        .unwrap(),
        Some(Shard { index: 1, count: 3 })
    );
    assert!(env(&[("SLURM_ARRAY_TASK_ID", "2")]).is_err());
    assert!(env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "4")]).is_err());
    assert_eq!(
        env(&[("JOB_COMPLETION_INDEX", "1"), ("BOOMERANG_SHARD_COUNT", "3")]).unwrap(),
        Some(Shard { index: 1, count: 3 })
    );
    assert!(env(&[("JOB_COMPLETION_INDEX", "1")]).is_err());
    assert!(env(&[("JOB_COMPLETION_INDEX", "3"), ("BOOMERANG_SHARD_COUNT", "3")]).is_err());
    // Shards partition every key set.
    let keys: Vec<u64> = (0..1000).map(|i| path_key(format!("img{i}.png"))).collect();
    let shards: Vec<Shard> = (0..4).map(|i| Shard::new(i, 4).unwrap()).collect();
    for k in &keys {
        assert_eq!(shards.iter().filter(|s| s.contains(*k)).count(), 1);
    }
    let sizes: Vec<usize> = shards
        .iter()
        .map(|s| keys.iter().filter(|k| s.contains(**k)).count())
        .collect();
    assert!(sizes.iter().all(|&n| (200..300).contains(&n)), "{sizes:?}");
}

/// The law of the discrete DDPM chain on Gaussian data, computed exactly: with μ = 0 every
/// step is linear, x = p·x0 + (independent noise of variance v). Starting at step `s`,
/// p = √ā_s, v = 1 − ā_s; each step predicts x̂0 = g·x with g = s²/(s² + σ²)/√ā (σ² =
/// (1−ā)/ā, the exact denoiser in VE terms) and moves to x' = (c0·g + cx)·x + √β̃'·z; the
/// last step returns x̂0. Then E[(x̂ − x0)²] = (p − 1)²·s² + v for x0 ~ N(0, s²).
fn discrete_chain_mse(schedule: &DiscreteSchedule, start: usize, sd: f64) -> f64 {
    let ab = |k: usize| schedule.alpha_bar(k).unwrap();
    let g = |k: usize| {
        let a = ab(k);
        let sig2 = (1.0 - a) / a;
        sd * sd / (sd * sd + sig2) / a.sqrt()
    };
    let (mut p, mut v) = (ab(start).sqrt(), 1.0 - ab(start));
    for k in (1..=start).rev() {
        let (a_cur, a_next) = (ab(k), ab(k - 1));
        let beta = 1.0 - a_cur / a_next;
        let c0 = a_next.sqrt() * beta / (1.0 - a_cur);
        let cx = (1.0 - beta).sqrt() * (1.0 - a_next) / (1.0 - a_cur);
        let small = beta * (1.0 - a_next) / (1.0 - a_cur);
        let m = c0 * g(k) + cx;
        p *= m;
        v = m * m * v + small;
    }
    let g0 = g(0);
    p *= g0;
    v *= g0 * g0;
    (p - 1.0).powi(2) * sd * sd + v
}

/// Boomerang on the exact Gaussian denoiser with the paper's sampler (DDPM, every step from
/// t), for x0 ~ N(0, s²) per pixel, on 196 608 pixels per t:
/// - against the exact law of the discrete chain ([`discrete_chain_mse`]): within 2%, six
///   standard deviations of the sampling error (x̂ − x0 is Gaussian, so the mean of its
///   square has relative standard deviation √(2/196 608) = 0.32%);
/// - against the continuous-time closed form E[(x̂ − x0)²] = 2s²(1−a)/(1−a+a·s²), a = ᾱ_t
///   (variance s²(1−a)(1−a+2as²)/D² plus squared bias (1−a)²s²/D², D = 1−a+as²; see
///   docs/design.md): the finite-step DDPM chain runs 1-8% below it (largest at small t,
///   where the chain has few steps), so within 10%;
/// - growing with t wherever the prediction grows (above t ≈ 0.6 it is flat at 2s²: x̂ is
///   then a fresh draw, independent of x0).
#[test]
fn distance_to_the_original_grows_with_t_as_predicted() {
    let sd = 0.5f64;
    let schedule = DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let r = runner(Spacing::Full);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
    let normal = Normal::new(0.0f32, sd as f32).unwrap();
    let x0 = Array4::from_shape_simple_fn((32, 3, 32, 32), || normal.sample(&mut rng));
    let keys: Vec<u64> = (0..32).collect();
    let mut last = 0.0;
    let mut lines = Vec::new();
    for t in [0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.95] {
        let out = anonymize_batch(&r, x0.view(), &keys, TimeSpec::fraction(t), 4).unwrap();
        let measured = (&out - &x0).mapv(|v| (v as f64).powi(2)).mean().unwrap();
        let step = (t * 999.0_f64).round() as usize;
        let a = schedule.alpha_bar(step).unwrap();
        let continuous = 2.0 * sd * sd * (1.0 - a) / (1.0 - a + a * sd * sd);
        let exact = discrete_chain_mse(&schedule, step, sd);
        lines.push(format!(
            "t={t}: measured {measured:.5}, discrete chain {exact:.5} ({:+.2}%), continuous {continuous:.5} ({:+.2}%)",
            100.0 * (measured / exact - 1.0),
            100.0 * (measured / continuous - 1.0)
        ));
        let report = lines.join("\n");
        assert!((measured - exact).abs() < 0.025 * exact, "{report}");
        assert!((measured - continuous).abs() < 0.10 * continuous, "{report}");
        if t <= 0.45 {
            assert!(measured > last, "{report}");
        }
        last = measured;
    }
    eprintln!("{}", lines.join("\n"));
    // Per-item results do not depend on the other items of the batch.
    let one = anonymize_batch(&r, x0.slice(s![5..6, .., .., ..]), &[5], TimeSpec::fraction(0.4), 4).unwrap();
    let all = anonymize_batch(&r, x0.view(), &keys, TimeSpec::fraction(0.4), 4).unwrap();
    assert_eq!(one.index_axis(Axis(0), 0), all.index_axis(Axis(0), 5));
}

#[test]
fn anonymize_job_is_identical_across_batch_sizes_and_thread_pools() {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("apps-anon-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let input = root.join("in");
    let x = images(7, 16, 16);
    for (i, img) in x.axis_iter(Axis(0)).enumerate() {
        let dir = input.join(if i % 2 == 0 { "even" } else { "odd/deeper" });
        std::fs::create_dir_all(&dir).unwrap();
        save_image(dir.join(format!("{i}.png")), img, DataRange::MinusOneToOne).unwrap();
    }
    let r = runner(Spacing::Uniform(60));
    let run = |out: &str, batch: usize, threads: usize| {
        let mut job = AnonymizeJob::new(&input, root.join(out), TimeSpec::fraction(0.35));
        job.batch_size = batch;
        job.seed = 8;
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| job.run(&r, &mut |_| {})).unwrap()
    };
    let a = run("a", 1, 1);
    let b = run("b", 4, 3);
    assert_eq!((a.written, b.written, a.found), (7, 7, 7));
    for i in 0..7 {
        let rel = format!("{}/{i}.png", if i % 2 == 0 { "even" } else { "odd/deeper" });
        assert_eq!(
            std::fs::read(root.join("a").join(&rel)).unwrap(),
            std::fs::read(root.join("b").join(&rel)).unwrap(),
            "{rel}"
        );
    }
    // Running again does nothing new.
    let again = run("a", 2, 2);
    assert_eq!((again.written, again.already_done), (0, 7));
    let _ = std::fs::remove_dir_all(&root);
}
