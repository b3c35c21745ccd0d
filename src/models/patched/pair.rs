//! [`PatchedSplit`]: Patched Diffusion's model splitting (paper §4.1) as ONE [`Denoiser`]:
//! each item goes to the model responsible for its own signal-to-noise ratio.

use ndarray::{Array4, ArrayView4, Axis};

use super::config::PatchedConfig;
use super::denoiser::PatchedDenoiser;
use crate::core::denoiser::item_times;
use crate::{Condition, Denoiser, DenoiserSpec, Error, RawPrediction, Result};

/// Several Patched Diffusion models that share one configuration, each trained on a range
/// of signal-to-noise ratios `SNR_t = ᾱ_t/(1 − ᾱ_t)` (ImageNet: two models split at 0.25).
///
/// As the original's `get_current_model`, with `bounds = [1e9, splits..., 0]`, model `j`
/// handles a step `t` when `bounds[j] ≥ SNR_t > bounds[j+1]` (SNR computed as
/// `ᾱ/(√(1−ᾱ))²` in f64, as there): for ImageNet model 0 where SNR > 0.25, model 1 where
/// SNR ≤ 0.25. An SNR above 1e9 (the original finds no model) goes to model 0.
///
/// A call splits the batch by item (items may sit at different steps), runs each model
/// once on its items, and merges the results in the original order; a batch that lies
/// wholly in one model's range is passed through without copies.
#[derive(Debug)]
pub struct PatchedSplit {
    models: Vec<PatchedDenoiser>,
    splits: Vec<f64>,
    snr: Vec<f64>,
    spec: DenoiserSpec,
}

impl PatchedSplit {
    /// Models and their thresholds (descending, `splits.len() == models.len() − 1`). The
    /// models must share one configuration (a clear error names the differing fields).
    pub fn new(models: Vec<PatchedDenoiser>, splits: Vec<f64>) -> Result<Self> {
        let first = models
            .first()
            .ok_or_else(|| Error::InvalidInput("an SNR split needs at least one model".into()))?;
        if splits.len() + 1 != models.len() {
            return Err(Error::Incompatible(format!(
                "{} SNR thresholds {splits:?} need {} models, got {}",
                splits.len(),
                splits.len() + 1,
                models.len()
            )));
        }
        let mut prev = f64::INFINITY;
        for &s in &splits {
            if !(s.is_finite() && s > 0.0 && s < prev) {
                return Err(Error::param(
                    "snr_splits",
                    format!("{splits:?}: thresholds must be positive, finite and descending"),
                ));
            }
            prev = s;
        }
        let cfg = first.config();
        for (i, m) in models.iter().enumerate().skip(1) {
            let diff = cfg.differences(m.config());
            if !diff.is_empty() {
                return Err(Error::Incompatible(format!(
                    "the models of an SNR split must share one configuration: model {i} differs from \
                     model 0 in {}",
                    diff.join(", ")
                )));
            }
        }
        let snr = cfg
            .schedule()?
            .alphas_cumprod()
            .iter()
            .map(|&a| a / (1.0 - a).sqrt().powi(2))
            .collect();
        let spec = first.spec().clone();
        Ok(Self {
            models,
            splits,
            snr,
            spec,
        })
    }

    /// Two models split at `snr` (ImageNet: 0.25): model 0 above it, model 1 at or below.
    pub fn pair(high_snr: PatchedDenoiser, low_snr: PatchedDenoiser, snr: f64) -> Result<Self> {
        Self::new(vec![high_snr, low_snr], vec![snr])
    }

    /// The models, highest SNR first.
    pub fn models(&self) -> &[PatchedDenoiser] {
        &self.models
    }

    /// The thresholds.
    pub fn splits(&self) -> &[f64] {
        &self.splits
    }

    /// The shared configuration.
    pub fn config(&self) -> &PatchedConfig {
        self.models[0].config()
    }

    /// Which model handles training step `step`.
    pub fn model_for_step(&self, step: usize) -> Result<usize> {
        let snr = *self.snr.get(step).ok_or_else(|| {
            Error::param(
                "time",
                format!("step {step} is outside 0..{} of this model's schedule", self.snr.len()),
            )
        })?;
        // bounds = [1e9, splits..., 0]; the first j with snr > bounds[j+1].
        Ok(self.splits.iter().position(|&s| snr > s).unwrap_or(self.splits.len()))
    }

    fn run(
        &self,
        x: ArrayView4<'_, f32>,
        times: &[f64],
        condition: &Condition,
        call: impl Fn(&PatchedDenoiser, ArrayView4<'_, f32>, &[f64], &Condition) -> Result<RawPrediction>,
    ) -> Result<RawPrediction> {
        let n = x.dim().0;
        if n == 0 {
            return Err(Error::InvalidInput("the batch is empty".into()));
        }
        let t = item_times(times, n)?;
        let owner = t
            .iter()
            .map(|&ti| {
                if ti.fract() != 0.0 || ti < 0.0 {
                    return Err(Error::param(
                        "time",
                        format!("Patched Diffusion takes integer training steps, got {ti}"),
                    ));
                }
                self.model_for_step(ti as usize)
            })
            .collect::<Result<Vec<usize>>>()?;
        if owner.iter().all(|&o| o == owner[0]) {
            return call(&self.models[owner[0]], x, times, condition);
        }
        let condition = condition.repeat_to(n)?;
        let mut output: Option<Array4<f32>> = None;
        let mut frac: Option<Array4<f32>> = None;
        for (m, model) in self.models.iter().enumerate() {
            let idx: Vec<usize> = (0..n).filter(|&i| owner[i] == m).collect();
            if idx.is_empty() {
                continue;
            }
            let sub_x = x.select(Axis(0), &idx);
            let sub_t: Vec<f64> = idx.iter().map(|&i| t[i]).collect();
            let sub_c = match &condition {
                Condition::None => Condition::None,
                Condition::Class(v) => Condition::Class(idx.iter().map(|&i| v[i]).collect()),
                _ => {
                    return Err(Error::Incompatible(
                        "Patched Diffusion takes class labels or no condition".into(),
                    ))
                }
            };
            let raw = call(model, sub_x.view(), &sub_t, &sub_c)?;
            let out = output.get_or_insert_with(|| Array4::zeros((n, raw.output.dim().1, x.dim().2, x.dim().3)));
            scatter(out, &raw.output, &idx)?;
            match (raw.variance_frac, &mut frac) {
                (Some(v), f) => {
                    let f = f.get_or_insert_with(|| Array4::zeros(out.raw_dim()));
                    scatter(f, &v, &idx)?;
                }
                (None, Some(_)) => {
                    return Err(Error::Model("a split model returned no variance".into()));
                }
                (None, None) => {}
            }
        }
        let output = output.ok_or_else(|| Error::InvalidInput("the batch is empty".into()))?;
        Ok(RawPrediction {
            output,
            variance_frac: frac,
        })
    }
}

fn scatter(dst: &mut Array4<f32>, src: &Array4<f32>, idx: &[usize]) -> Result<()> {
    let (n, c, h, w) = src.dim();
    let (_, dc, dh, dw) = dst.dim();
    if n != idx.len() || (c, h, w) != (dc, dh, dw) {
        return Err(Error::Model(format!(
            "a split model returned shape {:?} for {} items",
            src.shape(),
            idx.len()
        )));
    }
    for (k, &i) in idx.iter().enumerate() {
        dst.index_axis_mut(Axis(0), i).assign(&src.index_axis(Axis(0), k));
    }
    Ok(())
}

impl Denoiser for PatchedSplit {
    fn spec(&self) -> &DenoiserSpec {
        &self.spec
    }

    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        let raw = self.run(x, times, condition, |m, x, t, c| {
            Ok(RawPrediction {
                output: m.predict(x, t, c)?,
                variance_frac: None,
            })
        })?;
        Ok(raw.output)
    }

    fn predict_variance(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        self.run(x, times, condition, |m, x, t, c| m.predict_variance(x, t, c))
    }
}
