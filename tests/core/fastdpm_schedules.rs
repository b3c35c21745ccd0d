//! FastDPM's STEP and VAR schedules against reference values computed from its formulas
//! (tools/make_fastdpm_fixtures.py, numpy float64).

use boomerang::sampler::{fastdpm_step_taus, fastdpm_var_betas, fastdpm_var_times, FastDpmKind};
use boomerang::schedule::{DiscreteSchedule, NoiseSchedule};
use boomerang::{Spacing, TimeSpec};

#[derive(serde::Deserialize)]
struct Case {
    #[serde(rename = "S")]
    s: usize,
    kind: String,
    step_taus: Vec<usize>,
    var_etas: Vec<f64>,
    var_times: Vec<f64>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

fn fixture() -> Fixture {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/fastdpm_schedules.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn kind(k: &str) -> FastDpmKind {
    if k == "linear" {
        FastDpmKind::Linear
    } else {
        FastDpmKind::Quadratic
    }
}

#[test]
fn step_and_var_match_reference_for_s_10_20_50_100() {
    let sched = DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap();
    let f = fixture();
    assert_eq!(f.cases.len(), 8);
    for c in &f.cases {
        let k = kind(&c.kind);
        assert_eq!(
            fastdpm_step_taus(1000, c.s, k).unwrap(),
            c.step_taus,
            "STEP S={} {}",
            c.s,
            c.kind
        );
        let etas = fastdpm_var_betas(&sched, c.s, k).unwrap();
        assert_eq!(etas.len(), c.s);
        for (a, b) in etas.iter().zip(&c.var_etas) {
            // Same f64 operations in the same order: agreement to rounding.
            assert!(
                (a - b).abs() <= 1e-12 * b.abs(),
                "VAR eta S={} {}: {a} vs {b}",
                c.s,
                c.kind
            );
        }
        let mut g = 1.0;
        let gammas: Vec<f64> = etas
            .iter()
            .map(|e| {
                g *= 1.0 - e;
                g
            })
            .collect();
        let times = fastdpm_var_times(&sched, &gammas).unwrap();
        for (a, b) in times.iter().zip(&c.var_times) {
            // Bisection stops at relative 1e-8 of log γ̄; 1e-6 steps absolute is far inside.
            assert!((a - b).abs() < 1e-6, "VAR time S={} {}: {a} vs {b}", c.s, c.kind);
        }
        // The product of 1 − η never goes below ᾱ_{T−1}, and matches it to FastDPM's bisection
        // tolerance (1e-4) except where FastDPM's own search domain cannot reach it: quadratic
        // with S <= 20 caps η below 0.95² and stops at the domain edge (so does FastDPM).
        let target = sched.alphas_cumprod()[999];
        assert!(g >= target * (1.0 - 1e-12));
        if !(c.kind == "quadratic" && c.s <= 20) {
            assert!(
                (g - target) / target <= 1e-4 + 1e-12,
                "S={} {}: {g} vs {target}",
                c.s,
                c.kind
            );
        }
    }
}

#[test]
fn boomerang_grids_start_exactly_at_t_and_only_run_below_it() {
    let sched: NoiseSchedule = DiscreteSchedule::linear(1000, 1e-4, 0.02).unwrap().into();
    for s in [10, 20, 50, 100] {
        for k in [FastDpmKind::Linear, FastDpmKind::Quadratic] {
            for spacing in [
                Spacing::FastDpmStep { steps: s, kind: k },
                Spacing::FastDpmVar { steps: s, kind: k },
            ] {
                for t in [37usize, 500, 999] {
                    let start = sched.start(TimeSpec::step(t)).unwrap();
                    let grid = spacing.grid(&sched, start).unwrap();
                    assert_eq!(grid[0].time, t as f64);
                    assert_eq!(grid[0].level, start.level);
                    for w in grid.windows(2) {
                        assert!(w[1].time < w[0].time, "{spacing:?} t={t}: times not descending");
                        assert!(
                            w[1].level.alpha_bar() > w[0].level.alpha_bar(),
                            "{spacing:?}: noise not decreasing"
                        );
                    }
                    // Cost is proportional to t: never more points than the full run has.
                    assert!(grid.len() <= s + 1);
                }
            }
        }
    }
}

#[test]
fn var_needs_a_linear_schedule() {
    let cosine = DiscreteSchedule::cosine(1000, 0.008, 0.999).unwrap();
    assert!(fastdpm_var_betas(&cosine, 10, FastDpmKind::Linear).is_err());
}
