//! Noise schedules: discrete VP (linear, scaled-linear, cosine, any betas) and continuous VE
//! and VP SDEs, behind one [`NoiseSchedule`] that samplers ask everything they need.

mod config;
mod discrete;
mod level;
mod scheduler_config;
mod sde;

pub use config::BetaSchedule;
pub use discrete::DiscreteSchedule;
pub(crate) use discrete::{linspace, posterior_mean_coefs};
pub use level::NoiseLevel;
pub use scheduler_config::{SchedulerConfig, MAX_TRAIN_TIMESTEPS};
pub use sde::{VeSde, VpSde};

use crate::{Error, Result};

/// Where Boomerang starts: how far `x0` is pushed off the manifold.
///
/// A fraction `f` of the whole process or an integer step. For a discrete schedule of `T`
/// steps the fraction maps to step `round(f·(T−1))` (so `1.0` is the last step `T−1`);
/// for an SDE it is the time `t = f` itself. Step 0 / fraction 0 would return `x0`
/// unchanged and is refused: there is nothing to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeSpec {
    /// `t/T` in `(0, 1]`.
    Fraction(f64),
    /// A step in `1..=T−1` (for an SDE with `N` scales: time `step/(N−1)`).
    Step(usize),
}

impl TimeSpec {
    /// `TimeSpec::Fraction(f)`.
    pub fn fraction(f: f64) -> Self {
        TimeSpec::Fraction(f)
    }

    /// `TimeSpec::Step(s)`.
    pub fn step(s: usize) -> Self {
        TimeSpec::Step(s)
    }
}

impl From<f64> for TimeSpec {
    fn from(f: f64) -> Self {
        TimeSpec::Fraction(f)
    }
}

impl From<usize> for TimeSpec {
    fn from(s: usize) -> Self {
        TimeSpec::Step(s)
    }
}

/// One point of a reverse-time grid: the schedule's own time and its noise level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridPoint {
    /// Native time: the (possibly fractional) training step of a discrete schedule, or `t`
    /// of an SDE.
    pub time: f64,
    /// The noise level at that time.
    pub level: NoiseLevel,
}

/// What kind of process a schedule is; samplers check they fit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// Variance preserving: `α² + σ² = 1`.
    VariancePreserving,
    /// Variance exploding: `α = 1`.
    VarianceExploding,
}

/// A noise schedule.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum NoiseSchedule {
    /// Discrete VP schedule over `T` training steps.
    Discrete(DiscreteSchedule),
    /// Continuous VE SDE.
    Ve(VeSde),
    /// Continuous VP SDE.
    VpSde(VpSde),
}

impl From<DiscreteSchedule> for NoiseSchedule {
    fn from(s: DiscreteSchedule) -> Self {
        NoiseSchedule::Discrete(s)
    }
}

impl From<VeSde> for NoiseSchedule {
    fn from(s: VeSde) -> Self {
        NoiseSchedule::Ve(s)
    }
}

impl From<VpSde> for NoiseSchedule {
    fn from(s: VpSde) -> Self {
        NoiseSchedule::VpSde(s)
    }
}

impl NoiseSchedule {
    /// VP or VE.
    pub fn kind(&self) -> ProcessKind {
        match self {
            NoiseSchedule::Ve(_) => ProcessKind::VarianceExploding,
            _ => ProcessKind::VariancePreserving,
        }
    }

    /// Number of steps of a full sampling run (`T`, or `N` for an SDE).
    pub fn num_steps(&self) -> usize {
        match self {
            NoiseSchedule::Discrete(s) => s.num_steps(),
            NoiseSchedule::Ve(s) => s.num_scales(),
            NoiseSchedule::VpSde(s) => s.num_scales(),
        }
    }

    /// The noise level at native time `time` (a discrete schedule accepts integer steps
    /// only; fractional steps exist only on grids that carry their own level).
    pub fn level(&self, time: f64) -> Result<NoiseLevel> {
        match self {
            NoiseSchedule::Discrete(s) => {
                let step = time.round();
                if (step - time).abs() > 1e-9 || step < 0.0 {
                    return Err(Error::param(
                        "time",
                        format!("a discrete schedule has levels at integer steps, got {time}"),
                    ));
                }
                Ok(NoiseLevel::vp(s.alpha_bar(step as usize)?))
            }
            NoiseSchedule::Ve(s) => {
                check_unit_time(time)?;
                Ok(NoiseLevel::ve(s.sigma(time)))
            }
            NoiseSchedule::VpSde(s) => {
                check_unit_time(time)?;
                Ok(NoiseLevel::vp(s.alpha_bar(time)))
            }
        }
    }

    /// Resolve a [`TimeSpec`] to the point where Boomerang adds its noise and starts the
    /// reverse process. Errors if it is out of range; nothing is clamped.
    pub fn start(&self, t: TimeSpec) -> Result<GridPoint> {
        let time = match (self, t) {
            (_, TimeSpec::Fraction(f)) if !(f > 0.0 && f <= 1.0) => {
                return Err(Error::param("t", format!("a fraction t/T must lie in (0, 1], got {f}")))
            }
            (NoiseSchedule::Discrete(s), TimeSpec::Fraction(f)) => {
                let step = (f * (s.num_steps() - 1) as f64).round();
                if step < 1.0 {
                    return Err(Error::param(
                        "t",
                        format!(
                            "fraction {f} rounds to step 0 of {}, which leaves x0 unchanged; \
                             use at least {:.2e}",
                            s.num_steps(),
                            0.5 / (s.num_steps() - 1) as f64
                        ),
                    ));
                }
                step
            }
            (NoiseSchedule::Discrete(s), TimeSpec::Step(k)) => {
                if k == 0 || k >= s.num_steps() {
                    return Err(Error::param(
                        "t",
                        format!(
                            "step must lie in 1..={} for this {}-step schedule, got {k}",
                            s.num_steps() - 1,
                            s.num_steps()
                        ),
                    ));
                }
                k as f64
            }
            (NoiseSchedule::Ve(_) | NoiseSchedule::VpSde(_), TimeSpec::Fraction(f)) => f,
            (NoiseSchedule::Ve(_) | NoiseSchedule::VpSde(_), TimeSpec::Step(k)) => {
                let n = self.num_steps();
                if k == 0 || k >= n {
                    return Err(Error::param(
                        "t",
                        format!("step must lie in 1..={} for this SDE, got {k}", n - 1),
                    ));
                }
                k as f64 / (n - 1) as f64
            }
        };
        if let Some(t_min) = self.t_min() {
            if time < t_min {
                return Err(Error::param(
                    "t",
                    format!("time {time} is below this SDE's smallest time {t_min}"),
                ));
            }
        }
        Ok(GridPoint {
            time,
            level: self.level(time)?,
        })
    }

    /// The smallest time of an SDE (`None` for a discrete schedule).
    pub fn t_min(&self) -> Option<f64> {
        match self {
            NoiseSchedule::Discrete(_) => None,
            NoiseSchedule::Ve(s) => Some(s.t_min()),
            NoiseSchedule::VpSde(s) => Some(s.t_min()),
        }
    }

    /// The discrete schedule, if this is one.
    pub fn as_discrete(&self) -> Option<&DiscreteSchedule> {
        match self {
            NoiseSchedule::Discrete(s) => Some(s),
            _ => None,
        }
    }
}

fn check_unit_time(t: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&t) {
        return Err(Error::param("time", format!("SDE time must lie in [0, 1], got {t}")));
    }
    Ok(())
}
