//! Continuous-time SDE schedules (Song et al., score SDE): VE and VP.

use super::discrete::linspace;
use crate::{Error, Result};

/// Variance-exploding SDE: `σ(t) = σ_min·(σ_max/σ_min)^t` for `t ∈ [ε, 1]`, the forward
/// process `x_t = x0 + σ(t)·z`. NCSN++ / DLSM models use it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VeSde {
    sigma_min: f64,
    sigma_max: f64,
    num_scales: usize,
    t_min: f64,
}

impl VeSde {
    /// A VE SDE with the given noise range, number of discretisation steps `N` and smallest
    /// time `ε` (score_sde's `sampling_eps`).
    pub fn new(sigma_min: f64, sigma_max: f64, num_scales: usize, t_min: f64) -> Result<Self> {
        if !(sigma_min > 0.0 && sigma_max > sigma_min && sigma_max.is_finite()) {
            return Err(Error::param(
                "sigma_min/sigma_max",
                format!("need 0 < sigma_min < sigma_max < inf, got {sigma_min} and {sigma_max}"),
            ));
        }
        if num_scales < 2 {
            return Err(Error::param(
                "num_scales",
                format!("need at least 2 scales, got {num_scales}"),
            ));
        }
        if !(t_min > 0.0 && t_min < 1.0) {
            return Err(Error::param("t_min", format!("must lie in (0, 1), got {t_min}")));
        }
        Ok(Self {
            sigma_min,
            sigma_max,
            num_scales,
            t_min,
        })
    }

    /// DLSM's CIFAR-10/100 score models (`configs/.../cifar10`, score_sde's `ve` defaults):
    /// σ_min 0.01, σ_max 50, N = 1000, ε = 1e-5.
    pub fn dlsm_cifar() -> Self {
        Self {
            sigma_min: 0.01,
            sigma_max: 50.0,
            num_scales: 1000,
            t_min: 1e-5,
        }
    }

    /// `σ(t)`.
    pub fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
    }

    /// The discrete levels `σ_i = exp(linspace(ln σ_min, ln σ_max, N))`.
    pub fn discrete_sigmas(&self) -> Vec<f64> {
        linspace(self.sigma_min.ln(), self.sigma_max.ln(), self.num_scales)
            .into_iter()
            .map(f64::exp)
            .collect()
    }

    /// `σ_min`.
    pub fn sigma_min(&self) -> f64 {
        self.sigma_min
    }

    /// `σ_max`.
    pub fn sigma_max(&self) -> f64 {
        self.sigma_max
    }

    /// Number of discretisation steps `N` of a full sampling run.
    pub fn num_scales(&self) -> usize {
        self.num_scales
    }

    /// The smallest time `ε` a sampler reaches.
    pub fn t_min(&self) -> f64 {
        self.t_min
    }
}

/// Variance-preserving SDE with linear `β(t) = β_min + t(β_max − β_min)`:
/// `ᾱ(t) = exp(−½t²(β_max − β_min) − t·β_min)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpSde {
    beta_min: f64,
    beta_max: f64,
    num_scales: usize,
    t_min: f64,
}

impl VpSde {
    /// A VP SDE; score_sde's defaults are β_min 0.1, β_max 20, N = 1000, ε = 1e-3.
    pub fn new(beta_min: f64, beta_max: f64, num_scales: usize, t_min: f64) -> Result<Self> {
        if !(beta_min >= 0.0 && beta_max > beta_min && beta_max.is_finite()) {
            return Err(Error::param(
                "beta_min/beta_max",
                format!("need 0 <= beta_min < beta_max < inf, got {beta_min} and {beta_max}"),
            ));
        }
        if num_scales < 2 {
            return Err(Error::param(
                "num_scales",
                format!("need at least 2 scales, got {num_scales}"),
            ));
        }
        if !(t_min > 0.0 && t_min < 1.0) {
            return Err(Error::param("t_min", format!("must lie in (0, 1), got {t_min}")));
        }
        Ok(Self {
            beta_min,
            beta_max,
            num_scales,
            t_min,
        })
    }

    /// `ᾱ(t)`.
    pub fn alpha_bar(&self, t: f64) -> f64 {
        (-0.5 * t * t * (self.beta_max - self.beta_min) - t * self.beta_min).exp()
    }

    /// `β(t)`.
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// Number of discretisation steps `N` of a full sampling run.
    pub fn num_scales(&self) -> usize {
        self.num_scales
    }

    /// The smallest time `ε` a sampler reaches.
    pub fn t_min(&self) -> f64 {
        self.t_min
    }
}
