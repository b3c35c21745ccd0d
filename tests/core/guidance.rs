//! The guidance seam and per-item noise levels: classifier-free guidance is ONE batched
//! network call per step and equals the two-call form; classifier guidance matches its
//! closed form on Gaussian data; items at different `t` share one call per step.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use boomerang::analytic::GaussianDenoiser;
use boomerang::schedule::{DiscreteSchedule, NoiseSchedule, VeSde};
use boomerang::{
    Boomerang, Condition, DataRange, Denoiser, DenoiserSpec, FnDenoiser, Guidance, Guide, NoiseStreams,
    Parameterization, Prediction, Sampler, Spacing, TimeInput, TimeSpec,
};
use ndarray::{Array4, ArrayView4, Zip};

/// ε̂ = 0.1·x + 0.05·label + 0.01·t/1000: a conditional "network" whose output depends on
/// the input, the class and the time, so any mix-up of halves shows.
fn toy_eps(x: ArrayView4<'_, f32>, t: &[f64], c: &Condition) -> boomerang::Result<Array4<f32>> {
    let Condition::Class(labels) = c else {
        return Err(boomerang::Error::InvalidInput("needs classes".into()));
    };
    let n = x.dim().0;
    let times = boomerang::core::denoiser::item_times(t, n)?;
    let mut out = x.to_owned();
    for (i, mut item) in out.outer_iter_mut().enumerate() {
        let shift = 0.05 * labels[i] as f32 + 0.01 * (times[i] / 1000.0) as f32;
        item.mapv_inplace(|v| 0.1 * v + shift);
    }
    Ok(out)
}

fn eps_spec() -> DenoiserSpec {
    DenoiserSpec::new(
        Parameterization::Epsilon,
        TimeInput::ContinuousStep,
        DataRange::MinusOneToOne,
    )
}

fn x0() -> Array4<f32> {
    Array4::from_shape_fn((2, 3, 4, 4), |(n, c, h, w)| {
        ((n + 3 * c + 5 * h + 7 * w) % 11) as f32 / 5.5 - 1.0
    })
}

#[test]
fn classifier_free_guidance_is_one_batched_call_equal_to_two_calls() {
    let calls = RefCell::new(Vec::<usize>::new());
    let counting = FnDenoiser::new(eps_spec(), |x, t, c| {
        calls.borrow_mut().push(x.dim().0);
        toy_eps(x, t, c)
    });
    let cond = Condition::Class(vec![3, 7]);
    let uncond = Condition::Class(vec![0]);
    let scale = 2.5;
    let sched = DiscreteSchedule::ddpm().unwrap();
    let runner = Boomerang::builder(&counting, sched.clone())
        .sampler(Sampler::ddim(0.0))
        .spacing(Spacing::Uniform(20))
        .condition(cond.clone())
        .guidance(Guidance::classifier_free(scale, uncond.clone()))
        .build()
        .unwrap();
    let x = x0();
    let mut noise = NoiseStreams::keyed(5, &[1, 2]);
    let out = runner
        .run_with(x.view(), TimeSpec::fraction(0.6), &mut noise, None)
        .unwrap();
    let calls = calls.borrow().clone();
    assert_eq!(calls.len(), out.steps, "one network call per reverse step");
    assert!(calls.iter().all(|&b| b == 4), "each call holds the 2n batch: {calls:?}");

    // The two-call form, spelt out: ε = ε_u + g(ε_c − ε_u), then x̂0 from ε.
    let grid = runner.plan(TimeSpec::fraction(0.6)).unwrap();
    let two = FnDenoiser::new(eps_spec(), toy_eps);
    let uncond2 = Condition::Class(vec![0, 0]);
    let mut model = |x: ArrayView4<'_, f32>, p: &boomerang::GridPoint| -> boomerang::Result<Prediction> {
        let c = two.predict(x, &[p.time], &cond)?;
        let u = two.predict(x, &[p.time], &uncond2)?;
        let mut eps = c;
        Zip::from(&mut eps)
            .and(&u)
            .for_each(|c, &u| *c = u + scale as f32 * (*c - u));
        let l = p.level;
        let x0 = Zip::from(&x)
            .and(&eps)
            .map_collect(|&x, &e| l.x0_from_eps(x as f64, e as f64) as f32);
        Ok(Prediction {
            x0,
            eps,
            variance_frac: None,
        })
    };
    let manual = Sampler::ddim(0.0)
        .run(
            &mut model,
            out.x_t.clone(),
            &grid,
            &mut NoiseStreams::keyed(5, &[1, 2]),
            None,
        )
        .unwrap()
        .prev_sample;
    let err = (&manual - &out.sample).mapv(f32::abs).fold(0f32, |a, &b| a.max(b));
    assert!(err <= 1e-6, "batched and two-call guidance differ by {err:e}");
}

/// `∇x log p(y | x)` of a Gaussian likelihood `N(x; m_y, v)` per pixel: `−(x − m_y)/v`.
struct GaussianLikelihood {
    means: Vec<f64>,
    var: f64,
    seen: Mutex<Vec<f64>>,
}

impl Guide for GaussianLikelihood {
    fn num_classes(&self) -> Option<usize> {
        Some(self.means.len())
    }
    fn grad_log_prob(&self, x: ArrayView4<'_, f32>, times: &[f64], labels: &[i64]) -> boomerang::Result<Array4<f32>> {
        self.seen
            .lock()
            .map_err(|_| boomerang::Error::Model("poisoned".into()))?
            .extend_from_slice(times);
        let mut g = x.to_owned();
        for (i, mut item) in g.outer_iter_mut().enumerate() {
            let m = self.means[labels[i] as usize];
            item.mapv_inplace(|v| (-(v as f64 - m) / self.var) as f32);
        }
        Ok(g)
    }
}

#[test]
fn classifier_guidance_matches_the_closed_form_on_gaussian_data() {
    // Data x0 ~ N(μ, s²) per pixel; the σ-conditioned exact denoiser sees y = x/α at σ_VE,
    // where p(y) = N(μ, s² + σ²) and the guided score is
    //   s'(y) = −(y − μ)/(s² + σ²) + λ·(−(y − m)/v),  x̂0' = y + σ²·s'(y)   (Tweedie).
    let (mu, s) = (0.1, 0.5);
    let guide = Arc::new(GaussianLikelihood {
        means: vec![-0.6, 0.8],
        var: 0.3,
        seen: Mutex::new(Vec::new()),
    });
    let lambda = 1.7;
    let sched = DiscreteSchedule::ddpm().unwrap();
    // One grid point: the DDIM step into the clean data returns x̂0 itself.
    let runner = Boomerang::builder(GaussianDenoiser::new(mu, s).unwrap(), sched.clone())
        .sampler(Sampler::ddim(0.0))
        .spacing(Spacing::Uniform(1))
        .condition(Condition::Class(vec![1, 0]))
        .guidance(Guidance::classifier(lambda, guide.clone()))
        .build()
        .unwrap();
    let step = 400;
    let x_t = x0();
    let out = runner
        .reverse_from(
            x_t.view(),
            TimeSpec::Step(step),
            &mut NoiseStreams::keyed(0, &[0, 1]),
            None,
        )
        .unwrap();
    assert_eq!(out.steps, 1);
    let a = sched.alpha_bar(step).unwrap();
    let (alpha, sigma2) = (a.sqrt(), (1.0 - a) / a);
    let labels = [1usize, 0];
    let mut worst = 0f64;
    for ((n, c, h, w), &x) in x_t.indexed_iter() {
        let _ = (c, h, w);
        let y = x as f64 / alpha;
        let m = guide.means[labels[n]];
        let score = -(y - mu) / (s * s + sigma2) + lambda * (-(y - m) / guide.var);
        let expect = y + sigma2 * score;
        worst = worst.max((out.sample[[n, c, h, w]] as f64 - expect).abs());
    }
    assert!(worst < 1e-5, "guided x̂0 differs from the closed form by {worst:e}");
    // The guide saw the denoiser's own time input: σ_VE at the step.
    let seen = guide.seen.lock().unwrap();
    assert!(seen.iter().all(|&t| (t - sigma2.sqrt()).abs() < 1e-9), "{seen:?}");
}

#[test]
fn classifier_guidance_refuses_missing_or_out_of_range_labels() {
    let guide: Arc<dyn Guide> = Arc::new(GaussianLikelihood {
        means: vec![0.0, 1.0],
        var: 1.0,
        seen: Mutex::new(Vec::new()),
    });
    let sched = DiscreteSchedule::ddpm().unwrap();
    let build = |c: Condition| {
        Boomerang::builder(GaussianDenoiser::new(0.0, 0.5).unwrap(), sched.clone())
            .condition(c)
            .guidance(Guidance::classifier(1.0, guide.clone()))
            .build()
    };
    // Without labels the runner waits for them with each run (per-image labels)...
    let unlabelled = build(Condition::None).unwrap();
    let x = Array4::<f32>::zeros((2, 1, 2, 2));
    let mut noise = NoiseStreams::keyed(0, &[1, 2]);
    let e = unlabelled
        .run_with(x.view(), TimeSpec::fraction(0.2), &mut noise, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class labels"), "{e}");
    let ts = [TimeSpec::fraction(0.2); 2];
    let e = unlabelled
        .run_items_conditioned(x.view(), &ts, &Condition::Class(vec![0, 5]), &mut noise)
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 5") && e.contains("2 classes"), "{e}");
    let per_image = unlabelled
        .run_items_conditioned(x.view(), &ts, &Condition::Class(vec![0, 1]), &mut noise)
        .unwrap();
    // ... and then equals a runner built with those labels.
    let labelled = build(Condition::Class(vec![0, 1])).unwrap();
    let fixed = labelled
        .run_items(x.view(), &ts, &mut NoiseStreams::keyed(0, &[1, 2]))
        .unwrap();
    let again = unlabelled
        .run_items_conditioned(
            x.view(),
            &ts,
            &Condition::Class(vec![0, 1]),
            &mut NoiseStreams::keyed(0, &[1, 2]),
        )
        .unwrap();
    assert_eq!(fixed, again);
    assert_eq!(per_image.dim(), fixed.dim());
    let e = build(Condition::Class(vec![2])).unwrap_err().to_string();
    assert!(e.contains("label 2") && e.contains("2 classes"), "{e}");
    assert!(build(Condition::Class(vec![1])).is_ok());
}

#[test]
fn items_at_different_t_share_one_call_per_step_and_match_single_runs() {
    let x = Array4::from_shape_fn((4, 1, 3, 3), |(n, _, h, w)| {
        (n as f32 - 1.5) / 2.0 + 0.1 * (h * 3 + w) as f32
    });
    let ts = [0.2, 0.5, 0.5, 0.8].map(TimeSpec::fraction);
    let keys = [11, 12, 13, 14];
    // Every sampler, the ones that evaluate the model more than once per step included
    // (the batched call serves each item's first evaluation, the rest are the item's own).
    for sampler in [
        Sampler::ddpm(),
        Sampler::ddim(0.0),
        Sampler::ddim(0.7),
        Sampler::predictor_corrector(),
        Sampler::Pndm,
        Sampler::DpmSolverPp2M,
        Sampler::Euler,
        Sampler::EulerAncestral,
    ] {
        let calls = RefCell::new(0usize);
        let inner = GaussianDenoiser::new(0.0, 0.5).unwrap();
        let counting = FnDenoiser::new(inner.spec().clone(), |x, t, c| {
            *calls.borrow_mut() += 1;
            inner.predict(x, t, c)
        });
        // The predictor-corrector sampler is DLSM's, for VE schedules.
        let schedule: NoiseSchedule = if matches!(sampler, Sampler::PredictorCorrector { .. }) {
            VeSde::dlsm_cifar().into()
        } else {
            DiscreteSchedule::ddpm().unwrap().into()
        };
        let runner = Boomerang::builder(&counting, schedule)
            .sampler(sampler)
            .spacing(Spacing::Uniform(50))
            .build()
            .unwrap_or_else(|e| panic!("{sampler:?}: {e}"));
        let together = runner
            .run_items(x.view(), &ts, &mut NoiseStreams::keyed(9, &keys))
            .unwrap();
        let longest = ts.iter().map(|&t| runner.plan(t).unwrap().len()).max().unwrap();
        let single_call = matches!(sampler, Sampler::Ddpm { .. } | Sampler::Ddim { .. })
            || matches!(
                sampler,
                Sampler::DpmSolverPp2M | Sampler::Euler | Sampler::EulerAncestral
            );
        if single_call {
            assert_eq!(
                *calls.borrow(),
                longest,
                "{sampler:?}: one call per step of the longest grid"
            );
        }
        for i in 0..4 {
            let alone = runner
                .run_with(
                    x.slice(ndarray::s![i..i + 1, .., .., ..]),
                    ts[i],
                    &mut NoiseStreams::keyed(9, &keys[i..i + 1]),
                    None,
                )
                .unwrap()
                .sample;
            assert_eq!(
                together.slice(ndarray::s![i..i + 1, .., .., ..]),
                alone,
                "{sampler:?}: item {i} differs from its own run"
            );
        }
        // Bad lengths are errors.
        assert!(runner
            .run_items(x.view(), &ts[..2], &mut NoiseStreams::keyed(9, &keys))
            .is_err());
    }
}

#[test]
fn observed_runs_report_every_step_and_change_nothing() {
    use boomerang::core::pipeline::Pipeline;
    let runner = Boomerang::builder(
        GaussianDenoiser::new(0.0, 0.5).unwrap(),
        DiscreteSchedule::ddpm().unwrap(),
    )
    .spacing(Spacing::Uniform(40))
    .build()
    .unwrap();
    let x = x0();
    for ts in [
        vec![TimeSpec::fraction(0.5); 2],
        vec![TimeSpec::fraction(0.2), TimeSpec::fraction(0.7)],
    ] {
        let mut reports = Vec::new();
        let seen = runner
            .sample_observed(
                x.view(),
                &ts,
                &Condition::None,
                &mut NoiseStreams::keyed(3, &[1, 2]),
                &mut |k| reports.push(k),
            )
            .unwrap();
        let plain = runner
            .sample_items(x.view(), &ts, &mut NoiseStreams::keyed(3, &[1, 2]))
            .unwrap();
        assert_eq!(seen, plain, "observing changed the samples");
        let want: usize = ts.iter().map(|&t| runner.steps(t).unwrap()).sum();
        assert_eq!(reports.iter().sum::<usize>(), want, "{ts:?}: {reports:?}");
        // One report per reverse step of the longest grid.
        let longest = ts.iter().map(|&t| runner.steps(t).unwrap()).max().unwrap();
        assert_eq!(reports.len(), longest);
    }
}
