//! Calling a denoiser at a grid point and turning its output, whatever it predicts, into the
//! pair `(x̂0, ε̂)` samplers work with; classifier-free guidance and clipping live here.

use ndarray::{Array4, ArrayView4, Zip};

use crate::core::denoiser::{Condition, Denoiser, Guidance, Parameterization, TimeInput};
use crate::schedule::{GridPoint, NoiseLevel, NoiseSchedule};
use crate::{Error, Result};

/// A denoiser's prediction at one grid point, in the sampler's terms.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Predicted clean sample `x̂0` (clipped if clipping is on).
    pub x0: Array4<f32>,
    /// Predicted noise `ε̂` (from the unclipped prediction, as diffusers does).
    pub eps: Array4<f32>,
    /// Learned variance fraction towards `β` (see [`crate::RawPrediction`]).
    pub variance_frac: Option<Array4<f32>>,
}

/// How to call a denoiser: the pieces that stay fixed over a reverse run.
pub(crate) struct Evaluator<'a, D: ?Sized> {
    pub denoiser: &'a D,
    pub schedule: &'a NoiseSchedule,
    pub condition: &'a Condition,
    pub guidance: Option<&'a Guidance>,
    pub clip: Option<(f32, f32)>,
    pub want_variance: bool,
}

impl<D: Denoiser + ?Sized> Evaluator<'_, D> {
    /// Predict `(x̂0, ε̂)` for `x` at `point`.
    pub fn predict(&self, x: ArrayView4<'_, f32>, point: &GridPoint) -> Result<Prediction> {
        let spec = self.denoiser.spec();
        let time = model_time(spec.time_input, self.schedule, point)?;
        let level = point.level;
        // A σ-conditioned (VE) network sees x/α with noise σ/α.
        let (input, model_level) = if spec.time_input == TimeInput::Sigma && level.alpha != 1.0 {
            let inv = (1.0 / level.alpha) as f32;
            (Some(x.mapv(|v| v * inv)), NoiseLevel::ve(level.sigma_ve()))
        } else {
            (None, level)
        };
        let xm = match &input {
            Some(a) => a.view(),
            None => x.view(),
        };

        let raw = if self.want_variance {
            self.denoiser.predict_variance(xm, time, self.condition)?
        } else {
            crate::RawPrediction {
                output: self.denoiser.predict(xm, time, self.condition)?,
                variance_frac: None,
            }
        };
        check_output(&raw.output, &x, "prediction")?;
        let mut output = raw.output;
        if let Some(g) = self.guidance {
            let uncond = self.denoiser.predict(xm, time, &g.unconditional)?;
            check_output(&uncond, &x, "unconditional prediction")?;
            let scale = g.scale as f32;
            Zip::from(&mut output)
                .and(&uncond)
                .par_for_each(|c, &u| *c = u + scale * (*c - u));
        }
        if self.want_variance && raw.variance_frac.is_none() {
            return Err(Error::Incompatible(
                "the sampler uses a learned variance but the denoiser returned none".into(),
            ));
        }
        if let Some(v) = &raw.variance_frac {
            check_output(v, &x, "variance")?;
        }

        let (x0, eps) = to_x0_eps(spec.parameterization, model_level, xm, output);
        let x0 = match self.clip {
            Some((lo, hi)) => x0.mapv_into(|v| v.clamp(lo, hi)),
            None => x0,
        };
        Ok(Prediction {
            x0,
            eps,
            variance_frac: raw.variance_frac,
        })
    }
}

/// The time value a denoiser asked for with `input` gets at `point`.
pub(crate) fn model_time(input: TimeInput, schedule: &NoiseSchedule, point: &GridPoint) -> Result<f64> {
    let discrete = schedule.as_discrete().is_some();
    let steps = if discrete {
        point.time
    } else {
        point.time * (schedule.num_steps() - 1) as f64
    };
    match input {
        TimeInput::Step => {
            let r = steps.round();
            if (r - steps).abs() > 1e-6 {
                return Err(Error::Incompatible(format!(
                    "this denoiser takes integer steps, but the grid visits step {steps}; \
                     use a grid of integer steps (not FastDPM VAR)"
                )));
            }
            Ok(r)
        }
        TimeInput::ContinuousStep => Ok(steps),
        TimeInput::ContinuousTime if discrete => Err(Error::Incompatible(
            "this denoiser takes a continuous SDE time, but the schedule is discrete".into(),
        )),
        TimeInput::ContinuousTime => Ok(point.time),
        TimeInput::Sigma => Ok(point.level.sigma_ve()),
    }
}

fn check_output(out: &Array4<f32>, x: &ArrayView4<'_, f32>, what: &str) -> Result<()> {
    if out.shape() != x.shape() {
        return Err(Error::Model(format!(
            "the denoiser's {what} has shape {:?}, expected {:?}",
            out.shape(),
            x.shape()
        )));
    }
    if out.iter().any(|v| !v.is_finite()) {
        return Err(Error::Model(format!(
            "the denoiser's {what} contains NaN or infinite values"
        )));
    }
    Ok(())
}

/// Convert a raw output at model-frame `level` (input `x`) into `(x̂0, ε̂)`.
fn to_x0_eps(
    p: Parameterization,
    level: NoiseLevel,
    x: ArrayView4<'_, f32>,
    out: Array4<f32>,
) -> (Array4<f32>, Array4<f32>) {
    let mut other = Array4::<f32>::zeros(out.raw_dim());
    let mut out = out;
    match p {
        Parameterization::Epsilon => {
            // out = ε; other = x0
            Zip::from(&mut other).and(&x).and(&out).par_for_each(|o, &x, &e| {
                *o = level.x0_from_eps(x as f64, e as f64) as f32;
            });
            (other, out)
        }
        Parameterization::Sample => {
            Zip::from(&mut other).and(&x).and(&out).par_for_each(|o, &x, &x0| {
                *o = level.eps_from_x0(x as f64, x0 as f64) as f32;
            });
            (out, other)
        }
        Parameterization::VPrediction => {
            Zip::from(&mut other).and(&x).and(&mut out).par_for_each(|o, &x, v| {
                let (xf, vf) = (x as f64, *v as f64);
                *o = level.eps_from_v(xf, vf) as f32;
                *v = level.x0_from_v(xf, vf) as f32;
            });
            (out, other)
        }
        Parameterization::Score => {
            Zip::from(&mut other).and(&x).and(&mut out).par_for_each(|o, &x, s| {
                let e = level.eps_from_score(*s as f64);
                *s = e as f32;
                *o = level.x0_from_eps(x as f64, e) as f32;
            });
            (other, out)
        }
    }
}
