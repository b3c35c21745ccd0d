//! Property tests of the schedule maths.

use approx::assert_relative_eq;
use boomerang::sampler::FastDpmKind;
use boomerang::schedule::{DiscreteSchedule, NoiseLevel, NoiseSchedule, VeSde, VpSde};
use boomerang::{Spacing, TimeSpec};
use proptest::prelude::*;

fn any_discrete() -> impl Strategy<Value = DiscreteSchedule> {
    prop_oneof![
        (2usize..2000, 1e-6f64..1e-2, 1e-2f64..0.5).prop_map(|(t, a, b)| DiscreteSchedule::linear(t, a, b).unwrap()),
        (2usize..2000, 1e-5f64..1e-3, 1e-3f64..0.05)
            .prop_map(|(t, a, b)| DiscreteSchedule::scaled_linear(t, a, b).unwrap()),
        (2usize..2000, 0.0f64..0.1).prop_map(|(t, s)| DiscreteSchedule::cosine(t, s, 0.999).unwrap()),
    ]
}

proptest! {
    #[test]
    fn alpha_bar_strictly_decreasing_in_unit_interval(s in any_discrete()) {
        let ab = s.alphas_cumprod();
        prop_assert!(ab[0] < 1.0 && ab[0] > 0.0);
        for w in ab.windows(2) {
            prop_assert!(w[1] < w[0] && w[1] > 0.0);
        }
        for &b in s.betas() {
            prop_assert!(b > 0.0 && b < 1.0);
        }
    }

    #[test]
    fn posterior_variance_between_zero_and_beta(s in any_discrete(), frac in 0.0f64..1.0) {
        let t = ((s.num_steps() - 1) as f64 * frac) as usize;
        let pv = s.posterior_variance(t).unwrap();
        prop_assert!(pv >= 0.0 && pv <= s.beta(t).unwrap() * (1.0 + 1e-12));
        if t == 0 { prop_assert_eq!(pv, 0.0); }
    }

    #[test]
    fn conversions_round_trip(ab in 1e-4f64..0.9999, x0 in -3.0f64..3.0, eps in -3.0f64..3.0, ve in prop::bool::ANY, sigma in 0.01f64..80.0) {
        let l = if ve { NoiseLevel::ve(sigma) } else { NoiseLevel::vp(ab) };
        let x = l.add_noise(x0, eps);
        let scale = 1.0 + x.abs() + x0.abs() + eps.abs();
        prop_assert!((l.x0_from_eps(x, eps) - x0).abs() <= 1e-9 * scale / l.alpha.min(1.0));
        prop_assert!((l.eps_from_x0(x, x0) - eps).abs() <= 1e-9 * scale / l.sigma.min(1.0));
        let v = l.v_from_x0_eps(x0, eps);
        prop_assert!((l.x0_from_v(x, v) - x0).abs() <= 1e-9 * scale);
        prop_assert!((l.eps_from_v(x, v) - eps).abs() <= 1e-9 * scale);
        let score = l.score_from_eps(eps);
        prop_assert!((l.eps_from_score(score) - eps).abs() <= 1e-12 * scale);
        // VP <-> VE: same SNR; x/α is the VE sample.
        let ve_level = NoiseLevel::ve(l.sigma_ve());
        prop_assert!((ve_level.alpha_bar() - l.alpha_bar()).abs() <= 1e-12);
        prop_assert!((x / l.alpha - ve_level.add_noise(x0, eps)).abs() <= 1e-9 * scale / l.alpha.min(1.0));
    }

    #[test]
    fn add_noise_at_zero_noise_is_identity(x0 in -10.0f64..10.0, z in -5.0f64..5.0) {
        prop_assert_eq!(NoiseLevel::vp(1.0).add_noise(x0, z), x0);
        prop_assert_eq!(NoiseLevel::ve(0.0).add_noise(x0, z), x0);
    }

    #[test]
    fn respaced_grids_descend_and_start_exactly_at_t(s in any_discrete(), frac in 0.001f64..=1.0, n in 1usize..300, sk in 2usize..100, quad in prop::bool::ANY) {
        let sched: NoiseSchedule = s.clone().into();
        let Ok(start) = sched.start(TimeSpec::fraction(frac)) else { return Ok(()); };
        let kind = if quad { FastDpmKind::Quadratic } else { FastDpmKind::Linear };
        let mut spacings = vec![Spacing::Full, Spacing::Uniform(n)];
        if sk <= s.num_steps() {
            spacings.push(Spacing::FastDpmStep { steps: sk, kind });
        }
        for spacing in spacings {
            let grid = spacing.grid(&sched, start).unwrap();
            prop_assert_eq!(grid[0], start);
            for w in grid.windows(2) {
                prop_assert!(w[1].time < w[0].time);
                prop_assert!(w[1].level.alpha_bar() > w[0].level.alpha_bar());
            }
            prop_assert!(grid.last().unwrap().time >= 0.0);
            prop_assert!(grid.len() <= start.time as usize + 1);
        }
    }

    #[test]
    fn sde_grids_descend_and_start_exactly_at_t(t in 0.001f64..=1.0, n in 1usize..500) {
        let sched: NoiseSchedule = VeSde::dlsm_cifar().into();
        let start = sched.start(TimeSpec::fraction(t)).unwrap();
        prop_assert_eq!(start.time, t);
        prop_assert_eq!(start.level.sigma, 0.01 * 5000f64.powf(t));
        let grid = Spacing::Uniform(n).grid(&sched, start).unwrap();
        prop_assert_eq!(grid[0], start);
        for w in grid.windows(2) {
            prop_assert!(w[1].time < w[0].time && w[1].level.sigma < w[0].level.sigma);
        }
        let end = if grid.len() > 1 { 1e-5 } else { t };
        prop_assert!((grid.last().unwrap().time - end).abs() < 1e-12);
    }

    #[test]
    fn out_of_range_t_is_rejected(s in any_discrete(), bad in prop_oneof![-10.0f64..=0.0, 1.0000001f64..10.0]) {
        let sched: NoiseSchedule = s.clone().into();
        prop_assert!(sched.start(TimeSpec::fraction(bad)).is_err());
        prop_assert!(sched.start(TimeSpec::step(0)).is_err());
        prop_assert!(sched.start(TimeSpec::step(s.num_steps())).is_err());
        prop_assert!(sched.start(TimeSpec::step(s.num_steps() - 1)).is_ok());
        prop_assert!(s.alpha_bar(s.num_steps()).is_err());
    }

    #[test]
    fn invalid_parameters_are_rejected(t in 0usize..2, b in prop_oneof![-1.0f64..=0.0, 1.0f64..2.0]) {
        prop_assert!(DiscreteSchedule::linear(t, 1e-4, 0.02).is_err());
        prop_assert!(DiscreteSchedule::from_betas(vec![0.1, b]).is_err());
        prop_assert!(DiscreteSchedule::cosine(100, 0.008, b.abs() + 1.0).is_err());
        prop_assert!(VeSde::new(b.abs() + 1.0, 0.5, 100, 1e-5).is_err());
        prop_assert!(VpSde::new(0.1, 20.0, t, 1e-3).is_err());
    }
}

#[test]
fn cosine_matches_closed_form() {
    // ᾱ_t = ∏(1 − β) must equal f(t+1)/f(0) with f(u) = cos²((u/T + s)/(1 + s)·π/2), wherever
    // no beta was clipped at 0.999 (all but the last steps).
    let (t_total, s) = (1000usize, 0.008);
    let sched = DiscreteSchedule::cosine(t_total, s, 0.999).unwrap();
    let f = |u: f64| {
        ((u / t_total as f64 + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    for t in 0..t_total {
        if sched.betas()[..=t].iter().any(|&b| b >= 0.999) {
            break;
        }
        assert_relative_eq!(
            sched.alpha_bar(t).unwrap(),
            f((t + 1) as f64) / f(0.0),
            max_relative = 1e-9
        );
    }
    // Not the integer-division collapse of the Rust ports: betas vary smoothly and ᾱ_{T/2}
    // is about one half.
    let mid = sched.alpha_bar(t_total / 2).unwrap();
    assert!((0.45..0.55).contains(&mid), "ᾱ at T/2 = {mid}");
    assert_eq!(sched.betas()[t_total - 1], 0.999);
}

#[test]
fn known_values() {
    let s = DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap();
    assert_relative_eq!(s.beta(0).unwrap(), 1e-4);
    assert_relative_eq!(s.beta(999).unwrap(), 0.02);
    // ᾱ_{999} of Ho et al.'s schedule is 4.036e-5 (numpy: np.prod(1 - np.linspace(1e-4, .02, 1000))).
    assert_relative_eq!(s.alpha_bar(999).unwrap(), 4.035829e-5, max_relative = 1e-5);
    let sd = DiscreteSchedule::scaled_linear(1000, 0.00085, 0.012).unwrap();
    assert_relative_eq!(sd.beta(0).unwrap(), 0.00085, max_relative = 1e-12);
    assert_relative_eq!(sd.beta(999).unwrap(), 0.012, max_relative = 1e-12);
    let ve = VeSde::dlsm_cifar();
    let sig = ve.discrete_sigmas();
    assert_relative_eq!(sig[0], 0.01, max_relative = 1e-12);
    assert_relative_eq!(sig[999], 50.0, max_relative = 1e-12);
    assert_relative_eq!(ve.sigma(0.5), (0.01f64 * 50.0).sqrt(), max_relative = 1e-12);
}
