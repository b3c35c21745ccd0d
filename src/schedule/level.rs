//! A noise level in the general form `x_t = α·x0 + σ·ε`, and conversions between the
//! quantities a network can predict.
//!
//! VP schedules have `α = √ᾱ`, `σ = √(1 − ᾱ)`; VE schedules have `α = 1`. Writing both in
//! one form lets every conversion live in one place.

/// `x_t = alpha·x0 + sigma·ε`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseLevel {
    /// Signal scale `α`.
    pub alpha: f64,
    /// Noise scale `σ`.
    pub sigma: f64,
}

impl NoiseLevel {
    /// The VP level with cumulative product `ᾱ`.
    pub fn vp(alpha_bar: f64) -> Self {
        Self {
            alpha: alpha_bar.sqrt(),
            sigma: (1.0 - alpha_bar).sqrt(),
        }
    }

    /// The VE level with noise `σ`.
    pub fn ve(sigma: f64) -> Self {
        Self { alpha: 1.0, sigma }
    }

    /// `ᾱ = α²/(α² + σ²)`: the VP level with the same signal-to-noise ratio.
    pub fn alpha_bar(&self) -> f64 {
        let (a2, s2) = (self.alpha * self.alpha, self.sigma * self.sigma);
        a2 / (a2 + s2)
    }

    /// `σ/α`: the VE level with the same signal-to-noise ratio (`x_VE = x/α`).
    pub fn sigma_ve(&self) -> f64 {
        self.sigma / self.alpha
    }

    /// Signal-to-noise ratio `α²/σ²`.
    pub fn snr(&self) -> f64 {
        (self.alpha / self.sigma).powi(2)
    }

    /// `x0 = (x − σ·ε)/α`.
    pub fn x0_from_eps(&self, x: f64, eps: f64) -> f64 {
        (x - self.sigma * eps) / self.alpha
    }

    /// `ε = (x − α·x0)/σ`.
    pub fn eps_from_x0(&self, x: f64, x0: f64) -> f64 {
        (x - self.alpha * x0) / self.sigma
    }

    /// v-prediction (Salimans & Ho), defined on the unit-variance (VP) form:
    /// `x0 = ᾱ^½·x̃ − (1−ᾱ)^½·v`, with `x̃ = x/√(α²+σ²)`.
    pub fn x0_from_v(&self, x: f64, v: f64) -> f64 {
        let n = self.alpha.hypot(self.sigma);
        (self.alpha / n) * (x / n) - (self.sigma / n) * v
    }

    /// `ε = (1−ᾱ)^½·x̃ + ᾱ^½·v` (see [`x0_from_v`](Self::x0_from_v)).
    pub fn eps_from_v(&self, x: f64, v: f64) -> f64 {
        let n = self.alpha.hypot(self.sigma);
        (self.sigma / n) * (x / n) + (self.alpha / n) * v
    }

    /// `v = ᾱ^½·ε − (1−ᾱ)^½·x0` (the training target of v-prediction).
    pub fn v_from_x0_eps(&self, x0: f64, eps: f64) -> f64 {
        let n = self.alpha.hypot(self.sigma);
        (self.alpha / n) * eps - (self.sigma / n) * x0
    }

    /// Score `∇ log p(x_t) = −ε/σ`.
    pub fn score_from_eps(&self, eps: f64) -> f64 {
        -eps / self.sigma
    }

    /// `ε = −σ·score`.
    pub fn eps_from_score(&self, score: f64) -> f64 {
        -self.sigma * score
    }

    /// Forward noising `x_t = α·x0 + σ·z` (diffusers' `add_noise`: the caller brings `z`).
    pub fn add_noise(&self, x0: f64, z: f64) -> f64 {
        self.alpha * x0 + self.sigma * z
    }
}
