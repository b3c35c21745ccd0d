//! Reverse-time grids: which noise levels a reverse run visits, starting exactly at `t`.

use crate::schedule::{linspace, DiscreteSchedule, GridPoint, NoiseLevel, NoiseSchedule};
use crate::{Error, Result};

/// FastDPM's two ways of spreading `S` steps or variances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastDpmKind {
    /// Evenly spaced.
    Linear,
    /// Quadratically spaced (denser near the data).
    Quadratic,
}

/// Which grid a reverse run uses. Every grid starts exactly at Boomerang's `t` (the level
/// the forward noise was drawn at) and descends to the cleanest level; its cost is
/// proportional to `t`.
#[derive(Debug, Clone, PartialEq)]
pub enum Spacing {
    /// Every training step from `t` down to 0 (the model's unmodified reverse process);
    /// for an SDE, its `N` discretisation steps over `[ε, 1]`.
    Full,
    /// `n` evenly spaced steps over the whole range, of which Boomerang runs the share
    /// below `t`: `round((n−1)·t/T) + 1` points from `t` to 0 (respacing, e.g. 250 of 1000).
    Uniform(usize),
    /// FastDPM's STEP: the sub-sequence `τ` of `S` training steps (Kong & Ping 2021), with
    /// `t` prepended; the steps of `τ` at or above `t` are not run. Duplicate `τ` (quadratic,
    /// large `S`) are dropped: in FastDPM they are identity steps.
    FastDpmStep {
        /// Number of steps `S` of a full run.
        steps: usize,
        /// Linear or quadratic `τ`.
        kind: FastDpmKind,
    },
    /// FastDPM's VAR: `S` new variances `η` whose product matches `ᾱ_{T−1}`; the network is
    /// called at the non-integer steps where `ᾱ(t) = γ̄_s`. Needs a linear discrete schedule.
    FastDpmVar {
        /// Number of steps `S` of a full run.
        steps: usize,
        /// Linear or quadratic `η`.
        kind: FastDpmKind,
    },
    /// An explicit list of training steps (any order; duplicates dropped): the grid is `t`
    /// followed by the listed steps below `t`, descending. [`Spacing::diffusers`] makes the
    /// list diffusers' schedulers walk, so a diffusers img2img run can be reproduced step
    /// for step.
    Steps(Vec<usize>),
}

impl Spacing {
    /// The steps diffusers' `set_timesteps(steps)` picks out of `num_train` training steps
    /// with `timestep_spacing` (`"leading"` plus `steps_offset`, `"trailing"` or
    /// `"linspace"`), as [`Spacing::Steps`].
    ///
    /// ```
    /// use boomerang::Spacing;
    /// // Stable Diffusion 1.5's DDIM/PNDM with 10 steps: leading spacing, steps_offset 1.
    /// assert_eq!(
    ///     Spacing::diffusers(1000, 10, "leading", 1)?,
    ///     Spacing::Steps(vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1])
    /// );
    /// assert_eq!(Spacing::diffusers(1000, 4, "trailing", 0)?, Spacing::Steps(vec![999, 749, 499, 249]));
    /// assert_eq!(Spacing::diffusers(1000, 3, "linspace", 0)?, Spacing::Steps(vec![999, 500, 0]));
    /// # Ok::<(), boomerang::Error>(())
    /// ```
    pub fn diffusers(num_train: usize, steps: usize, timestep_spacing: &str, steps_offset: usize) -> Result<Self> {
        if steps == 0 || steps > num_train {
            return Err(Error::param(
                "steps",
                format!("must lie in 1..={num_train} (the training steps), got {steps}"),
            ));
        }
        let list: Vec<usize> = match timestep_spacing {
            "leading" => {
                let ratio = num_train / steps;
                (0..steps).rev().map(|i| i * ratio + steps_offset).collect()
            }
            "trailing" => {
                // np.round(np.arange(T, 0, -T/steps)) - 1
                let ratio = num_train as f64 / steps as f64;
                (0..steps)
                    .map(|i| round_half_even(num_train as f64 - i as f64 * ratio) as usize - 1)
                    .collect()
            }
            "linspace" => linspace(0.0, (num_train - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(|v| round_half_even(v) as usize)
                .collect(),
            other => {
                return Err(Error::param(
                    "timestep_spacing",
                    format!("`{other}` is not one of leading, trailing, linspace"),
                ))
            }
        };
        if let Some(&bad) = list.iter().find(|&&s| s >= num_train) {
            return Err(Error::param(
                "steps_offset",
                format!("step {bad} lies past the {num_train} training steps"),
            ));
        }
        Ok(Spacing::Steps(list))
    }

    /// The grid from `start` (as returned by [`NoiseSchedule::start`]) to the cleanest level.
    pub fn grid(&self, schedule: &NoiseSchedule, start: GridPoint) -> Result<Vec<GridPoint>> {
        match (self, schedule) {
            (Spacing::Full, NoiseSchedule::Discrete(_)) => {
                let s = start_step(start)?;
                (0..=s).rev().map(|k| point(schedule, k as f64)).collect()
            }
            (Spacing::Full, _) => continuous_grid(schedule, start, schedule.num_steps()),
            (&Spacing::Uniform(0), _) => Err(Error::param("steps", "Uniform(n) needs n >= 1")),
            (&Spacing::Uniform(n), NoiseSchedule::Discrete(d)) => {
                let s = start_step(start)?;
                let span = (d.num_steps() - 1) as f64;
                let k = (((n - 1) as f64 * s as f64 / span).round() as usize + 1).min(s + 1);
                if k == 1 {
                    return Ok(vec![start]);
                }
                (0..k)
                    .map(|i| {
                        let tau = (s as f64 * (k - 1 - i) as f64 / (k - 1) as f64).round();
                        point(schedule, tau)
                    })
                    .collect()
            }
            (&Spacing::Uniform(n), _) => continuous_grid(schedule, start, n),
            (&Spacing::FastDpmStep { steps, kind }, NoiseSchedule::Discrete(d)) => {
                let s = start_step(start)?;
                let mut taus = fastdpm_step_taus(d.num_steps(), steps, kind)?;
                taus.dedup();
                let mut grid = vec![start];
                for &tau in taus.iter().rev().filter(|&&tau| tau < s) {
                    grid.push(point(schedule, tau as f64)?);
                }
                Ok(grid)
            }
            (&Spacing::FastDpmVar { steps, kind }, NoiseSchedule::Discrete(d)) => {
                start_step(start)?;
                let a_start = start.level.alpha_bar();
                let betas = fastdpm_var_betas(d, steps, kind)?;
                let gammas = cumprod_one_minus(&betas);
                let times = fastdpm_var_times(d, &gammas)?;
                let mut grid = vec![start];
                // `times[j]` belongs to `gammas[S-1-j]` (descending time).
                for (j, &time) in times.iter().enumerate() {
                    let g = gammas[gammas.len() - 1 - j];
                    if g > a_start {
                        grid.push(GridPoint {
                            time,
                            level: NoiseLevel::vp(g),
                        });
                    }
                }
                Ok(grid)
            }
            (Spacing::Steps(list), NoiseSchedule::Discrete(d)) => {
                let s = start_step(start)?;
                if let Some(&bad) = list.iter().find(|&&k| k >= d.num_steps()) {
                    return Err(Error::param(
                        "steps",
                        format!("step {bad} lies past the schedule's {} training steps", d.num_steps()),
                    ));
                }
                let mut below: Vec<usize> = list.iter().copied().filter(|&k| k < s).collect();
                below.sort_unstable_by(|a, b| b.cmp(a));
                below.dedup();
                let mut grid = vec![start];
                for k in below {
                    grid.push(point(schedule, k as f64)?);
                }
                Ok(grid)
            }
            (Spacing::FastDpmStep { .. } | Spacing::FastDpmVar { .. } | Spacing::Steps(_), _) => {
                Err(Error::Incompatible(
                    "FastDPM's STEP and VAR grids and explicit step lists are defined for discrete \
                     schedules only"
                        .into(),
                ))
            }
        }
    }
}

/// numpy's `round` (half to even), which diffusers' spacings use.
fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

fn point(schedule: &NoiseSchedule, time: f64) -> Result<GridPoint> {
    Ok(GridPoint {
        time,
        level: schedule.level(time)?,
    })
}

fn start_step(start: GridPoint) -> Result<usize> {
    let s = start.time.round();
    if s < 1.0 || (s - start.time).abs() > 1e-9 {
        return Err(Error::param(
            "t",
            format!("a discrete grid starts at an integer step >= 1, got {}", start.time),
        ));
    }
    Ok(s as usize)
}

/// `linspace(t, ε, k)` with `k = round((n−1)·(t−ε)/(1−ε)) + 1`: the share below `t` of an
/// `n`-step run over `[ε, 1]`.
fn continuous_grid(schedule: &NoiseSchedule, start: GridPoint, n: usize) -> Result<Vec<GridPoint>> {
    let eps = schedule.t_min().unwrap_or(0.0);
    let t = start.time;
    let k = ((n.max(1) - 1) as f64 * (t - eps) / (1.0 - eps)).round() as usize + 1;
    let mut grid = vec![start];
    for time in linspace(t, eps, k).into_iter().skip(1) {
        grid.push(point(schedule, time)?);
    }
    Ok(grid)
}

fn cumprod_one_minus(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc
        })
        .collect()
}

/// FastDPM STEP's `τ` for `S` of `T` steps: linear `floor(i·(T−1)/(S−1))`, quadratic
/// `floor((i·√(0.8T)/(S−1))²)`, `i = 0..S` (ascending, duplicates kept as FastDPM has them).
pub fn fastdpm_step_taus(num_train_steps: usize, steps: usize, kind: FastDpmKind) -> Result<Vec<usize>> {
    if steps < 2 || steps > num_train_steps {
        return Err(Error::param(
            "steps",
            format!("FastDPM needs 2 <= S <= T = {num_train_steps}, got S = {steps}"),
        ));
    }
    let t = num_train_steps as f64;
    Ok(match kind {
        FastDpmKind::Linear => {
            let c = (t - 1.0) / (steps as f64 - 1.0);
            (0..steps).map(|i| (i as f64 * c).floor() as usize).collect()
        }
        FastDpmKind::Quadratic => linspace(0.0, (t * 0.8).sqrt(), steps)
            .into_iter()
            .map(|v| (v * v).floor() as usize)
            .collect(),
    })
}

/// FastDPM VAR's `S` variances `η`: linear `linspace(β_0, x, S)` or quadratic
/// `β_0·(1 + i·x)²`, with `x` found by FastDPM's bisection so that `∏(1−η) ≈ ᾱ_{T−1}`
/// (relative tolerance 1e-4; domains `(β_0, 0.99)` and `(0, 0.95/(√β_0·S))`).
pub fn fastdpm_var_betas(schedule: &DiscreteSchedule, steps: usize, kind: FastDpmKind) -> Result<Vec<f64>> {
    check_linear(schedule)?;
    if steps < 2 || steps > schedule.num_steps() {
        return Err(Error::param(
            "steps",
            format!("FastDPM needs 2 <= S <= T = {}, got S = {steps}", schedule.num_steps()),
        ));
    }
    let beta0 = schedule.betas()[0];
    let target = *schedule.alphas_cumprod().last().unwrap_or(&0.0);
    let g = |x: f64| -> Vec<f64> {
        match kind {
            FastDpmKind::Linear => linspace(beta0, x, steps),
            FastDpmKind::Quadratic => (0..steps).map(|i| beta0 * (1.0 + i as f64 * x).powi(2)).collect(),
        }
    };
    let domain = match kind {
        FastDpmKind::Linear => (beta0, 0.99),
        FastDpmKind::Quadratic => (0.0, 0.95 / beta0.sqrt() / steps as f64),
    };
    let f = |x: f64| g(x).iter().map(|b| 1.0 - b).product::<f64>();
    let x = bisearch(f, domain, target, 1e-4);
    let betas = g(x);
    if betas.iter().any(|b| !(*b > 0.0 && *b < 1.0)) {
        return Err(Error::param(
            "steps",
            format!("FastDPM VAR with S = {steps} gives variances outside (0, 1)"),
        ));
    }
    Ok(betas)
}

/// The non-integer steps where the network is called for each `γ̄_s` (in descending time
/// order, `s = S−1 … 0`): FastDPM's bisection of its Stirling approximation of `log ᾱ(t)`
/// on `[i − 0.01, i + 1.01]` where `ᾱ_i ≥ γ̄_s > ᾱ_{i+1}`, or `T − 1` if there is no such `i`.
pub fn fastdpm_var_times(schedule: &DiscreteSchedule, gamma_bar: &[f64]) -> Result<Vec<f64>> {
    check_linear(schedule)?;
    let ab = schedule.alphas_cumprod();
    let t_total = schedule.num_steps();
    let (b0, bt) = (schedule.betas()[0], schedule.betas()[t_total - 1]);
    let log_cont = |t: f64| log_cont_noise(t, b0, bt, t_total);
    Ok(gamma_bar
        .iter()
        .rev()
        .map(|&g| {
            (0..t_total - 1)
                .find(|&i| ab[i] >= g && g > ab[i + 1])
                .map(|i| bisearch(log_cont, (i as f64 - 0.01, i as f64 + 1.01), g.ln(), 1e-8))
                .unwrap_or((t_total - 1) as f64)
        })
        .collect())
}

/// FastDPM's `bisearch`: bisection for `f(x) ≈ target` with `f` decreasing, stopping when
/// `target ≤ f(x) ≤ (1 ± eps)·target` or after 1000 halvings.
fn bisearch(f: impl Fn(f64) -> f64, domain: (f64, f64), target: f64, eps: f64) -> f64 {
    let sign = if target < 0.0 { -1.0 } else { 1.0 };
    let (mut left, mut right) = domain;
    let mut x = (left + right) / 2.0;
    for _ in 0..1000 {
        x = (left + right) / 2.0;
        let fx = f(x);
        if fx < target {
            right = x;
        } else if fx > (1.0 + sign * eps) * target {
            left = x;
        } else {
            break;
        }
    }
    x
}

/// Stirling's `log Γ(x)`: `Γ(y+1) ≈ √(2πy)(y/e)^y(1 + 1/(12y))`, `y = x − 1`.
fn log_gamma(x: f64) -> f64 {
    let y = x - 1.0;
    (2.0 * std::f64::consts::PI * y).ln() / 2.0 + y * (y.ln() - 1.0) + (1.0 + 1.0 / (12.0 * y)).ln()
}

/// FastDPM's continuous `log ᾱ(t)` for a linear schedule:
/// `(t+1)·ln Δ + ln Γ(c+1) − ln Γ(c−t)`, `Δ = (β_T − β_0)/(T−1)`, `c = (1 − β_0)/Δ`.
fn log_cont_noise(t: f64, beta0: f64, beta_t: f64, t_total: usize) -> f64 {
    let delta = (beta_t - beta0) / (t_total as f64 - 1.0);
    let c = (1.0 - beta0) / delta;
    let t1 = t + 1.0;
    t1 * delta.ln() + log_gamma(c + 1.0) - log_gamma(c - t1 + 1.0)
}

fn check_linear(schedule: &DiscreteSchedule) -> Result<()> {
    let b = schedule.betas();
    let lin = linspace(b[0], b[b.len() - 1], b.len());
    let linear = b[b.len() - 1] > b[0]
        && b.iter()
            .zip(&lin)
            .all(|(x, y)| (x - y).abs() <= 1e-12 * y.abs().max(1e-12));
    if linear {
        Ok(())
    } else {
        Err(Error::Incompatible(
            "FastDPM VAR inverts ᾱ(t) in closed form for a linear beta schedule only".into(),
        ))
    }
}
