//! Discrete variance-preserving schedules over `T` training steps (DDPM, Stable Diffusion).

use crate::{Error, Result};

/// A discrete VP noise schedule: `β_0 … β_{T−1}` and `ᾱ_t = ∏_{s≤t} (1 − β_s)`.
///
/// Step indices run over `0..T`; step 0 is the least noisy. All quantities are kept in
/// `f64`; samplers cast the per-step coefficients to `f32` once.
///
/// ```
/// use boomerang::schedule::DiscreteSchedule;
/// let s = DiscreteSchedule::linear(1000, 1e-4, 0.02)?;
/// assert_eq!(s.num_steps(), 1000);
/// assert!(s.alpha_bar(999)? < 1e-4);
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DiscreteSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl DiscreteSchedule {
    /// Ho et al.'s DDPM schedule, linear β from 1e-4 to 0.02 over T = 1000 steps: every
    /// released DDPM checkpoint's, and the analytic models'.
    pub fn ddpm() -> Result<Self> {
        Self::linear(1000, 1e-4, 0.02)
    }

    /// `β = linspace(beta_start, beta_end, T)`: Ho et al.'s DDPM (1e-4, 0.02), Patched
    /// Diffusion's FFHQ model (1e-4, 0.025).
    pub fn linear(num_steps: usize, beta_start: f64, beta_end: f64) -> Result<Self> {
        check_steps(num_steps)?;
        Self::from_betas(linspace(beta_start, beta_end, num_steps))
    }

    /// `β = linspace(√beta_start, √beta_end, T)²`: Stable Diffusion's "scaled_linear"
    /// (0.00085, 0.012).
    pub fn scaled_linear(num_steps: usize, beta_start: f64, beta_end: f64) -> Result<Self> {
        check_steps(num_steps)?;
        if !(beta_start >= 0.0 && beta_end >= 0.0) {
            return Err(Error::param(
                "beta_start/beta_end",
                format!("must be non-negative, got {beta_start} and {beta_end}"),
            ));
        }
        let betas = linspace(beta_start.sqrt(), beta_end.sqrt(), num_steps)
            .into_iter()
            .map(|b| b * b)
            .collect();
        Self::from_betas(betas)
    }

    /// Nichol & Dhariwal's cosine schedule: `ᾱ(u) = cos²((u/T + s)/(1 + s)·π/2)` and
    /// `β_t = min(1 − ᾱ(t+1)/ᾱ(t), max_beta)`, computed in floating point (the usual `s` is
    /// 0.008 and `max_beta` 0.999, as in improved-diffusion and diffusers).
    pub fn cosine(num_steps: usize, s: f64, max_beta: f64) -> Result<Self> {
        check_steps(num_steps)?;
        if !(s.is_finite() && s >= 0.0) {
            return Err(Error::param("s", format!("must be finite and >= 0, got {s}")));
        }
        if !(max_beta > 0.0 && max_beta < 1.0) {
            return Err(Error::param("max_beta", format!("must lie in (0, 1), got {max_beta}")));
        }
        let t_total = num_steps as f64;
        let f = |u: f64| {
            ((u / t_total + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let betas = (0..num_steps)
            .map(|i| {
                let (u0, u1) = (i as f64, (i + 1) as f64);
                (1.0 - f(u1) / f(u0)).min(max_beta)
            })
            .collect();
        Self::from_betas(betas)
    }

    /// Any sequence of betas, each in `(0, 1)`.
    pub fn from_betas(betas: Vec<f64>) -> Result<Self> {
        check_steps(betas.len())?;
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(b.is_finite() && **b > 0.0 && **b < 1.0))
        {
            return Err(Error::param(
                "betas",
                format!("every beta must lie in (0, 1); beta[{i}] = {b}"),
            ));
        }
        let mut acc = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect();
        Ok(Self { betas, alphas_cumprod })
    }

    /// Number of training steps `T`.
    pub fn num_steps(&self) -> usize {
        self.betas.len()
    }

    /// All betas.
    pub fn betas(&self) -> &[f64] {
        &self.betas
    }

    /// All `ᾱ_t`.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// `β_t`.
    pub fn beta(&self, t: usize) -> Result<f64> {
        self.check(t).map(|t| self.betas[t])
    }

    /// `ᾱ_t`.
    pub fn alpha_bar(&self, t: usize) -> Result<f64> {
        self.check(t).map(|t| self.alphas_cumprod[t])
    }

    /// `ᾱ_{t−1}`, with `ᾱ_{−1} = 1`.
    pub fn alpha_bar_prev(&self, t: usize) -> Result<f64> {
        self.check(t).map(|t| self.ab_prev(t))
    }

    /// Signal-to-noise ratio `ᾱ_t / (1 − ᾱ_t)`.
    pub fn snr(&self, t: usize) -> Result<f64> {
        self.alpha_bar(t).map(|a| a / (1.0 - a))
    }

    /// The equivalent VE noise level `σ = √((1 − ᾱ_t)/ᾱ_t)`.
    pub fn sigma_ve(&self, t: usize) -> Result<f64> {
        self.alpha_bar(t).map(|a| ((1.0 - a) / a).sqrt())
    }

    /// Posterior variance `β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)` ("fixed small").
    pub fn posterior_variance(&self, t: usize) -> Result<f64> {
        let t = self.check(t)?;
        Ok(self.betas[t] * (1.0 - self.ab_prev(t)) / (1.0 - self.alphas_cumprod[t]))
    }

    /// Coefficients `(c_x0, c_xt)` of the posterior mean
    /// `μ̃_t = c_x0·x̂0 + c_xt·x_t` of `q(x_{t−1} | x_t, x0)`.
    pub fn posterior_mean_coefs(&self, t: usize) -> Result<(f64, f64)> {
        let t = self.check(t)?;
        Ok(posterior_mean_coefs(self.alphas_cumprod[t], self.ab_prev(t)))
    }

    fn ab_prev(&self, t: usize) -> f64 {
        if t == 0 {
            1.0
        } else {
            self.alphas_cumprod[t - 1]
        }
    }

    fn check(&self, t: usize) -> Result<usize> {
        if t < self.betas.len() {
            Ok(t)
        } else {
            Err(Error::param(
                "t",
                format!("step {t} is outside 0..{} of this schedule", self.betas.len()),
            ))
        }
    }
}

/// Posterior-mean coefficients between any two VP levels `a_cur < a_next`:
/// `β' = 1 − a_cur/a_next`, `c_x0 = √a_next·β'/(1−a_cur)`, `c_xt = √(1−β')·(1−a_next)/(1−a_cur)`.
pub(crate) fn posterior_mean_coefs(a_cur: f64, a_next: f64) -> (f64, f64) {
    let beta = 1.0 - a_cur / a_next;
    let c_x0 = a_next.sqrt() * beta / (1.0 - a_cur);
    let c_xt = (1.0 - beta).sqrt() * (1.0 - a_next) / (1.0 - a_cur);
    (c_x0, c_xt)
}

fn check_steps(n: usize) -> Result<()> {
    if n < 2 {
        return Err(Error::param(
            "num_steps",
            format!("a schedule needs at least 2 steps, got {n}"),
        ));
    }
    Ok(())
}

/// `n` points from `a` to `b` inclusive, computed as numpy does (`a + i·(b−a)/(n−1)`, last
/// point exactly `b`).
pub(crate) fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            (0..n)
                .map(|i| if i == n - 1 { b } else { a + step * i as f64 })
                .collect()
        }
    }
}
