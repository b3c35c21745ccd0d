//! Exact denoisers for data whose posterior mean is known in closed form. They are test
//! oracles (the statistics of Boomerang are known exactly for them) and let users check their
//! own pipelines without a network.
//!
//! Both are σ-conditioned `x0` predictors: at VE level `σ` (`y = x/α = x0 + σ·z`) they return
//! `E[x0 | y]`, so they drive any schedule.

use ndarray::{Array4, ArrayView4, Axis, Zip};

use crate::core::denoiser::{item_times, Condition, DataRange, Denoiser, DenoiserSpec, Parameterization, TimeInput};
use crate::{Error, Result};

/// The exact denoiser of i.i.d. Gaussian pixels `x0 ~ N(μ, s²)`:
/// `E[x0 | y] = μ + s²/(s² + σ²)·(y − μ)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianDenoiser {
    mean: f64,
    std: f64,
    spec: DenoiserSpec,
}

impl GaussianDenoiser {
    /// Data `N(mean, std²)` per pixel; `std > 0`.
    pub fn new(mean: f64, std: f64) -> Result<Self> {
        if !(mean.is_finite() && std.is_finite() && std > 0.0) {
            return Err(Error::param(
                "mean/std",
                format!("need a finite mean and std > 0, got {mean} and {std}"),
            ));
        }
        Ok(Self {
            mean,
            std,
            spec: DenoiserSpec::new(Parameterization::Sample, TimeInput::Sigma, DataRange::MinusOneToOne),
        })
    }

    /// `μ`.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// `s`.
    pub fn std(&self) -> f64 {
        self.std
    }
}

impl Denoiser for GaussianDenoiser {
    fn spec(&self) -> &DenoiserSpec {
        &self.spec
    }

    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], _c: &Condition) -> Result<Array4<f32>> {
        let sigmas = item_times(times, x.dim().0)?;
        let s2 = self.std * self.std;
        let mu = self.mean;
        let mut out = x.to_owned();
        Zip::from(out.axis_iter_mut(Axis(0)))
            .and(&sigmas)
            .par_for_each(|mut item, &sigma| {
                let k = s2 / (s2 + sigma * sigma);
                item.mapv_inplace(|y| (mu + k * (y as f64 - mu)) as f32);
            });
        Ok(out)
    }
}

/// The exact denoiser of the empirical distribution of a dataset `{y_k}`:
/// `E[x0 | y] = Σ_k w_k·y_k`, `w = softmax_k(−‖y − y_k‖²/(2σ²))`. With it Boomerang at
/// small `t` returns near copies and at large `t` one of the training images: a picture of
/// what "local sampling" means.
#[derive(Debug, Clone)]
pub struct EmpiricalDenoiser {
    data: Array4<f32>,
    spec: DenoiserSpec,
}

impl EmpiricalDenoiser {
    /// The dataset as an NCHW batch in `range`; at least one finite image.
    pub fn new(data: Array4<f32>, range: DataRange) -> Result<Self> {
        let (_, c, h, w) = data.dim();
        let spec = DenoiserSpec::new(Parameterization::Sample, TimeInput::Sigma, range)
            .with_channels(c)
            .with_image_size(h, w);
        spec.check_batch(&data.view(), "dataset")?;
        Ok(Self { data, spec })
    }

    /// The dataset.
    pub fn data(&self) -> &Array4<f32> {
        &self.data
    }
}

impl Denoiser for EmpiricalDenoiser {
    fn spec(&self) -> &DenoiserSpec {
        &self.spec
    }

    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], _c: &Condition) -> Result<Array4<f32>> {
        let sigmas = item_times(times, x.dim().0)?;
        let mut out = Array4::<f32>::zeros(x.raw_dim());
        Zip::from(out.axis_iter_mut(Axis(0)))
            .and(x.axis_iter(Axis(0)))
            .and(&sigmas)
            .par_for_each(|mut o, xi, &sigma| {
                let two_s2 = 2.0 * sigma * sigma;
                let d2: Vec<f64> = self
                    .data
                    .axis_iter(Axis(0))
                    .map(|yk| {
                        Zip::from(&xi)
                            .and(&yk)
                            .fold(0.0f64, |acc, &a, &b| acc + ((a - b) as f64).powi(2))
                    })
                    .collect();
                let logits: Vec<f64> = if two_s2 > 0.0 {
                    d2.iter().map(|d| -d / two_s2).collect()
                } else {
                    // σ = 0: the nearest neighbour.
                    let m = d2.iter().cloned().fold(f64::INFINITY, f64::min);
                    d2.iter()
                        .map(|&d| if d == m { 0.0 } else { f64::NEG_INFINITY })
                        .collect()
                };
                let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
                let z: f64 = w.iter().sum();
                let mut acc = ndarray::Array3::<f64>::zeros(o.raw_dim());
                for (wk, yk) in w.iter().zip(self.data.axis_iter(Axis(0))) {
                    if *wk > 0.0 {
                        let c = wk / z;
                        Zip::from(&mut acc).and(&yk).for_each(|a, &y| *a += c * y as f64);
                    }
                }
                Zip::from(&mut o).and(&acc).for_each(|o, &a| *o = a as f32);
            });
        Ok(out)
    }
}
