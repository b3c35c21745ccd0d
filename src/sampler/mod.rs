//! Reverse samplers. A sampler never knows which network it drives: it sees predictions
//! `(x̂0, ε̂)` at grid points (see [`crate::Prediction`]).
//!
//! - [`Sampler::Ddpm`]: ancestral sampling, the paper's Algorithm 1 and the default;
//! - [`Sampler::Ddim`]: DDIM with `η`, identical to FastDPM's generalized step with `κ = η`;
//! - [`Sampler::PredictorCorrector`]: reverse-diffusion predictor + Langevin corrector for VE
//!   score models (DLSM / score SDE);
//! - Stable Diffusion's schedulers, on any VP grid: [`Sampler::Pndm`] (PLMS, SD's default),
//!   [`Sampler::Euler`], [`Sampler::EulerAncestral`] and [`Sampler::DpmSolverPp2M`].
//!
//! σ-based samplers (Euler, DPM-Solver) work on `y = x/α` at `σ/α` and convert back at every
//! step, so the latent is never rescaled wrongly and the run starts exactly at `t`.
//! Every sampler's last step goes to the clean data (`ᾱ = 1`), adding no noise.
//!
//! Grids (which levels are visited) are chosen separately with [`Spacing`].

mod ancestral;
mod ddim;
mod euler;
mod kernel;
mod langevin;
mod multistep;
mod spacing;

pub use spacing::{fastdpm_step_taus, fastdpm_var_betas, fastdpm_var_times, FastDpmKind, Spacing};

use ndarray::{Array4, ArrayView4};

use crate::core::noise::NoiseStreams;
use crate::core::prediction::Prediction;
use crate::schedule::{GridPoint, NoiseSchedule, ProcessKind};
use crate::{Error, Result};

/// Variance of the ancestral (DDPM) step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variance {
    /// `β̃_t`, the posterior variance (DDPM's "fixed small", FastDPM's STD mode).
    #[default]
    FixedSmall,
    /// `β_t` ("fixed large").
    FixedLarge,
    /// The model's learned interpolation between `log β̃_t` and `log β_t` (improved
    /// diffusion, Patched Diffusion).
    Learned,
}

/// A reverse-process step rule.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// Ancestral sampling from the posterior `q(x_prev | x_t, x̂0)` (VP schedules).
    Ddpm {
        /// Which variance to add.
        variance: Variance,
    },
    /// DDIM / FastDPM generalized step (VP schedules):
    /// `σ = η·√((1−a_next)/(1−a_cur)·(1−a_cur/a_next))`,
    /// `x_next = √a_next·x̂0 + √(1−a_next−σ²)·ε̂ + σ·z`.
    Ddim {
        /// `η` (FastDPM's `κ`) in `[0, 1]`: 0 is deterministic DDIM, 1 is DDPM-like.
        eta: f64,
    },
    /// Reverse-diffusion predictor with a Langevin corrector (VE schedules):
    /// corrector `x += ε·s + √(2ε)·z`, `ε = 2(snr·‖z‖/‖s‖)²` (per item), then predictor
    /// `x += (σ_cur² − σ_next²)·s + √(σ_cur² − σ_next²)·z`; the last step returns the mean.
    ///
    /// The corrector targets the whole marginal `p_σ`, not the neighbourhood of Boomerang's
    /// input: where the score is small next to `1/σ` (broad data such as
    /// [`GaussianDenoiser`](crate::analytic::GaussianDenoiser)), `ε ≈ 2snr²·(s² + σ²)`
    /// does not shrink with σ and each step keeps only `1 − 2snr²` (0.95 at snr 0.16) of
    /// the sample's deviation, so the ~`t·N` corrector steps of a run from `t` forget `x0`
    /// (tests/core/pc_locality.rs checks this against its closed form). On image data the
    /// score at small σ is `~√d/σ`, `ε ≈ 2snr²σ²`, and the corrector stays local. With
    /// `corrector_steps = 0` this is the reverse-diffusion predictor alone.
    PredictorCorrector {
        /// Corrector signal-to-noise ratio (DLSM: 0.16).
        snr: f64,
        /// Corrector steps per level (DLSM: 1).
        corrector_steps: usize,
    },
    /// PNDM's pseudo linear multistep (PLMS) steps, as diffusers' `PNDMScheduler` with
    /// `skip_prk_steps` (Stable Diffusion's default): the first step is evaluated twice
    /// (at its start and at a predicted end point), later steps combine up to 4 past `ε̂`
    /// with the Adams–Bashforth weights. Deterministic.
    Pndm,
    /// Euler on the probability-flow ODE in σ (diffusers' `EulerDiscreteScheduler`,
    /// Karras et al.): `y ← y + (σ_next − σ)·(y − x̂0)/σ`. Deterministic.
    Euler,
    /// Euler ancestral (diffusers' `EulerAncestralDiscreteScheduler`): a step to
    /// `σ_down` plus fresh noise `σ_up`, `σ_up² = σ_next²(σ² − σ_next²)/σ²`.
    EulerAncestral,
    /// DPM-Solver++(2M) (Lu et al. 2022; diffusers' `DPMSolverMultistepScheduler` with
    /// `algorithm_type="dpmsolver++"`, order 2, midpoint): data-prediction multistep in
    /// `λ = log(α/σ)`; first order on the first step and into the clean data. Deterministic.
    DpmSolverPp2M,
}

/// Per-run memory of multistep samplers (PNDM's past `ε̂`, DPM-Solver's last `x̂0`) and the
/// buffers a step rule reuses from step to step. Start each run with a fresh
/// `SamplerState::default()`.
#[derive(Debug, Clone, Default)]
pub struct SamplerState {
    history: Vec<Array4<f32>>,
    last_lambda: Option<f64>,
    /// Work space shaped like the sample (the corrector's noise, PNDM's first end point).
    scratch: Option<Array4<f32>>,
}

impl SamplerState {
    /// The scratch buffer, shaped like `x` (allocated on first use, then reused).
    fn scratch_like(&mut self, x: &Array4<f32>) -> &mut Array4<f32> {
        let buf = self.scratch.get_or_insert_with(|| Array4::zeros(x.raw_dim()));
        if buf.dim() != x.dim() {
            *buf = Array4::zeros(x.raw_dim());
        }
        buf
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler::Ddpm {
            variance: Variance::FixedSmall,
        }
    }
}

/// The result of one reverse step (diffusers' convention).
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The sample at the next (cleaner) level.
    pub prev_sample: Array4<f32>,
    /// The prediction of `x0` made at the current level.
    pub pred_x0: Array4<f32>,
}

/// Progress of a reverse run, handed to the per-step callback.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// Index of the step just taken, from 0.
    pub index: usize,
    /// Number of steps of the run.
    pub total: usize,
    /// The grid point the step started from.
    pub from: GridPoint,
    /// The sample after the step.
    pub sample: ArrayView4<'a, f32>,
    /// The `x̂0` predicted during the step.
    pub pred_x0: ArrayView4<'a, f32>,
}

/// A per-step callback.
pub type StepCallback<'a> = &'a mut dyn FnMut(&StepInfo<'_>);

/// Something that predicts `(x̂0, ε̂)` for a batch at a grid point.
pub type Model<'a> = dyn FnMut(ArrayView4<'_, f32>, &GridPoint) -> Result<Prediction> + 'a;

impl Sampler {
    /// DDPM ancestral sampling with the posterior variance.
    pub fn ddpm() -> Self {
        Self::default()
    }

    /// DDIM with `η`.
    pub fn ddim(eta: f64) -> Self {
        Sampler::Ddim { eta }
    }

    /// DLSM's predictor-corrector: snr 0.16, one corrector step.
    pub fn predictor_corrector() -> Self {
        Sampler::PredictorCorrector {
            snr: 0.16,
            corrector_steps: 1,
        }
    }

    /// A short name: `ddpm`, `ddim`, `pc`, `pndm`, `euler`, `euler-a`, `dpmpp2m` (the
    /// command line's `--sampler` values; manifests record it).
    pub fn name(&self) -> &'static str {
        match self {
            Sampler::Ddpm { .. } => "ddpm",
            Sampler::Ddim { .. } => "ddim",
            Sampler::PredictorCorrector { .. } => "pc",
            Sampler::Pndm => "pndm",
            Sampler::Euler => "euler",
            Sampler::EulerAncestral => "euler-a",
            Sampler::DpmSolverPp2M => "dpmpp2m",
        }
    }

    /// Whether the sampler fits a schedule of this kind (VP or VE).
    pub fn fits(&self, kind: ProcessKind) -> bool {
        match self {
            Sampler::PredictorCorrector { .. } => kind == ProcessKind::VarianceExploding,
            _ => kind == ProcessKind::VariancePreserving,
        }
    }

    /// Check parameters and that the sampler fits the schedule.
    pub fn validate(&self, schedule: &NoiseSchedule) -> Result<()> {
        match *self {
            Sampler::Ddim { eta } if !(0.0..=1.0).contains(&eta) => {
                Err(Error::param("eta", format!("must lie in [0, 1], got {eta}")))
            }
            Sampler::PredictorCorrector { snr, .. } if !(snr.is_finite() && snr > 0.0) => {
                Err(Error::param("snr", format!("must be positive, got {snr}")))
            }
            Sampler::PredictorCorrector { .. } if schedule.kind() != ProcessKind::VarianceExploding => {
                Err(Error::Incompatible(
                    "the predictor-corrector sampler is implemented for VE schedules; use DDPM or \
                     DDIM for VP schedules"
                        .into(),
                ))
            }
            Sampler::PredictorCorrector { .. } => Ok(()),
            _ if schedule.kind() != ProcessKind::VariancePreserving => Err(Error::Incompatible(format!(
                "{self:?} is defined here for VP schedules; use the predictor-corrector \
                     sampler for a VE SDE"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether the sampler needs the model's learned variance.
    pub fn needs_learned_variance(&self) -> bool {
        matches!(
            self,
            Sampler::Ddpm {
                variance: Variance::Learned
            }
        )
    }

    /// One reverse step from `from` to `to` (`None`: to the clean data, no noise added).
    /// `model` is called once, `1 + corrector_steps` times (predictor-corrector) or twice
    /// (PNDM's first step). `state` carries multistep history between the steps of one run.
    ///
    /// This copies `x` into the new sample; [`step_in_place`](Sampler::step_in_place) is the
    /// same step without the copy.
    pub fn step(
        &self,
        model: &mut Model<'_>,
        x: ArrayView4<'_, f32>,
        from: &GridPoint,
        to: Option<&GridPoint>,
        noise: &mut NoiseStreams,
        state: &mut SamplerState,
    ) -> Result<StepOutput> {
        let mut prev_sample = x.to_owned();
        let pred_x0 = self.step_in_place(model, &mut prev_sample, from, to, noise, state)?;
        Ok(StepOutput { prev_sample, pred_x0 })
    }

    /// [`step`](Sampler::step) that overwrites `x` (the sample at `from`) with the sample at
    /// `to` and returns the `x̂0` predicted at `from`. The step's arithmetic is one pass over
    /// the arrays, its noise drawn during that pass, and it allocates nothing of its own
    /// (buffers that a rule needs live in `state`); the model's output is the model's.
    /// After an error `x` may hold a partly updated sample.
    pub fn step_in_place(
        &self,
        model: &mut Model<'_>,
        x: &mut Array4<f32>,
        from: &GridPoint,
        to: Option<&GridPoint>,
        noise: &mut NoiseStreams,
        state: &mut SamplerState,
    ) -> Result<Array4<f32>> {
        match *self {
            Sampler::Ddpm { variance } => {
                let pred = model(x.view(), from)?;
                ancestral::step(variance, x, pred, from, to, noise)
            }
            Sampler::Ddim { eta } => {
                let pred = model(x.view(), from)?;
                ddim::step(eta, x, pred, from, to, noise)
            }
            Sampler::PredictorCorrector { snr, corrector_steps } => {
                langevin::step(snr, corrector_steps, model, x, from, to, noise, state)
            }
            Sampler::Pndm => multistep::pndm(model, x, from, to, state),
            Sampler::DpmSolverPp2M => {
                let pred = model(x.view(), from)?;
                multistep::dpm_solver_pp_2m(x, pred, from, to, state)
            }
            Sampler::Euler | Sampler::EulerAncestral => {
                let pred = model(x.view(), from)?;
                euler::step(*self == Sampler::EulerAncestral, x, pred, from, to, noise)
            }
        }
    }

    /// Run the whole grid from `x` (the sample at `grid[0]`) into the clean data. Returns
    /// the final sample and the last `x̂0` prediction.
    pub fn run(
        &self,
        model: &mut Model<'_>,
        x: Array4<f32>,
        grid: &[GridPoint],
        noise: &mut NoiseStreams,
        callback: Option<StepCallback<'_>>,
    ) -> Result<StepOutput> {
        self.run_until(model, x, grid, None, noise, callback)
    }

    /// [`run`](Sampler::run) whose last step goes to `terminal` instead of the clean data
    /// (`None`): diffusers' `set_alpha_to_one = false` ends at `ᾱ_0`.
    pub fn run_until(
        &self,
        model: &mut Model<'_>,
        mut x: Array4<f32>,
        grid: &[GridPoint],
        terminal: Option<&GridPoint>,
        noise: &mut NoiseStreams,
        mut callback: Option<StepCallback<'_>>,
    ) -> Result<StepOutput> {
        let mut pred_x0 = None;
        let mut state = SamplerState::default();
        // The sample is updated in place: one buffer for the whole run.
        for (i, from) in grid.iter().enumerate() {
            let to = grid.get(i + 1).or(terminal);
            let x0 = self.step_in_place(model, &mut x, from, to, noise, &mut state)?;
            if let Some(cb) = callback.as_mut() {
                cb(&StepInfo {
                    index: i,
                    total: grid.len(),
                    from: *from,
                    sample: x.view(),
                    pred_x0: x0.view(),
                });
            }
            pred_x0 = Some(x0);
        }
        let pred_x0 = pred_x0.ok_or_else(|| Error::InvalidInput("the reverse grid is empty".into()))?;
        Ok(StepOutput {
            prev_sample: x,
            pred_x0,
        })
    }
}
