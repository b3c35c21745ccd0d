//! Calling a denoiser at a grid point and turning its output, whatever it predicts, into the
//! pair `(x̂0, ε̂)` samplers work with; guidance (classifier-free and classifier) and clipping
//! live here.

use ndarray::parallel::prelude::*;
use ndarray::{concatenate, s, Array4, ArrayView4, Axis, Zip};

use crate::core::denoiser::{item_times, Condition, DataRange, Denoiser, Parameterization, RawPrediction, TimeInput};
use crate::core::guidance::Guidance;
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

/// How `x̂0` is kept in the data range at every step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Clip {
    /// No clipping.
    #[default]
    Off,
    /// Clamp to the denoiser's data range (Ho et al.'s `clip_denoised`).
    Range,
    /// Dynamic thresholding (Saharia et al., Imagen; Patched Diffusion uses 0.995): per item,
    /// with `u` the prediction mapped to `[-1, 1]`, `s = max(1, quantile(|u|, q))` and
    /// `u ← clamp(u, −s, s)/s`.
    Dynamic {
        /// The quantile `q` in `(0, 1]`.
        quantile: f64,
        /// How the quantile picks between order statistics.
        interpolation: Quantile,
    },
}

/// How a quantile is read off sorted values, as `torch.quantile`'s `interpolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quantile {
    /// Linear between the two neighbouring order statistics (torch's default; Imagen).
    #[default]
    Linear,
    /// The order statistic at the rank `q·(n−1)` rounded half to even (Patched Diffusion's
    /// sampling script).
    Nearest,
}

impl Clip {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Clip::Dynamic { quantile, .. } = *self {
            if !(quantile > 0.0 && quantile <= 1.0) {
                return Err(Error::param(
                    "threshold",
                    format!("the dynamic-thresholding quantile must lie in (0, 1], got {quantile}"),
                ));
            }
        }
        Ok(())
    }

    fn apply(&self, x0: &mut Array4<f32>, range: DataRange) {
        let (lo, hi) = range.bounds();
        match *self {
            Clip::Off => {}
            Clip::Range => x0.par_mapv_inplace(|v| v.clamp(lo, hi)),
            Clip::Dynamic {
                quantile,
                interpolation,
            } => {
                let (c, r) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
                x0.outer_iter_mut().into_par_iter().for_each(|mut item| {
                    let mut mags: Vec<f32> = item.iter().map(|&v| ((v - c) / r).abs()).collect();
                    let s = quantile_of(&mut mags, quantile, interpolation).max(1.0);
                    item.mapv_inplace(|v| c + r * (((v - c) / r).clamp(-s, s) / s));
                });
            }
        }
    }
}

/// `torch.quantile(values, q, interpolation=...)`.
fn quantile_of(values: &mut [f32], q: f64, interpolation: Quantile) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let pos = q * (values.len() - 1) as f64;
    if interpolation == Quantile::Nearest {
        let r = pos.round();
        let rank = if (pos - pos.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
            r - 1.0
        } else {
            r
        };
        let (_, &mut v, _) = values.select_nth_unstable_by(rank as usize, f32::total_cmp);
        return v;
    }
    let (lo, frac) = (pos.floor() as usize, (pos - pos.floor()) as f32);
    let (_, &mut a, rest) = values.select_nth_unstable_by(lo, f32::total_cmp);
    if frac == 0.0 || rest.is_empty() {
        return a;
    }
    let b = rest.iter().copied().fold(f32::INFINITY, f32::min);
    a + frac * (b - a)
}

/// How to call a denoiser: the pieces that stay fixed over a reverse run. `condition` and
/// the guidance's condition are already repeated to the batch.
pub(crate) struct Evaluator<'a, D: ?Sized> {
    pub denoiser: &'a D,
    pub schedule: &'a NoiseSchedule,
    pub condition: &'a Condition,
    pub guidance: Option<&'a Guidance>,
    pub clip: Clip,
    pub want_variance: bool,
}

impl<D: Denoiser + ?Sized> Evaluator<'_, D> {
    /// Predict `(x̂0, ε̂)` for the batch `x`, all items at `point`.
    pub fn predict(&self, x: ArrayView4<'_, f32>, point: &GridPoint) -> Result<Prediction> {
        self.predict_items(x, std::slice::from_ref(point))
    }

    /// Predict `(x̂0, ε̂)` for the batch `x` with item `i` at `points[i]` (or all at
    /// `points[0]` when there is one point): ONE network call, two items per input under
    /// classifier-free guidance.
    pub fn predict_items(&self, x: ArrayView4<'_, f32>, points: &[GridPoint]) -> Result<Prediction> {
        let n = x.dim().0;
        if points.len() != 1 && points.len() != n {
            return Err(Error::Shape(format!(
                "{} grid points for a batch of {n}; give one for all or one per item",
                points.len()
            )));
        }
        let spec = self.denoiser.spec();
        let times = points
            .iter()
            .map(|p| model_time(spec.time_input, self.schedule, p))
            .collect::<Result<Vec<f64>>>()?;
        let level_of = |i: usize| points[if points.len() == 1 { 0 } else { i }].level;
        // A σ-conditioned (VE) network sees x/α with noise σ/α.
        let ve_input = spec.time_input == TimeInput::Sigma;
        let model_level = |i: usize| {
            let l = level_of(i);
            if ve_input {
                NoiseLevel::ve(l.sigma_ve())
            } else {
                l
            }
        };
        let scaled;
        let xm = if ve_input && points.iter().any(|p| p.level.alpha != 1.0) {
            let mut a = x.to_owned();
            a.outer_iter_mut()
                .into_par_iter()
                .enumerate()
                .for_each(|(i, mut item)| {
                    let inv = (1.0 / level_of(i).alpha) as f32;
                    item.mapv_inplace(|v| v * inv);
                });
            scaled = a;
            scaled.view()
        } else {
            x.view()
        };

        let (output, variance_frac, grad) = match self.guidance {
            Some(Guidance::ClassifierFree { scale, unconditional }) => {
                // One call on [x; x] with [condition; unconditional].
                let both = concatenate(Axis(0), &[xm.view(), xm.view()]).map_err(|e| Error::Shape(e.to_string()))?;
                let cond = self.condition.concat(unconditional)?;
                let per_item = item_times(&times, n)?;
                let times2: Vec<f64> = per_item.iter().chain(per_item.iter()).copied().collect();
                let raw = self.call(both.view(), &times2, &cond)?;
                check_output(&raw.output, &both.view(), "guided prediction")?;
                let out = raw.output;
                let (c, u) = (out.slice(s![..n, .., .., ..]), out.slice(s![n.., .., .., ..]));
                let mut guided = c.to_owned();
                let g = *scale as f32;
                Zip::from(&mut guided)
                    .and(&u)
                    .par_for_each(|c, &u| *c = u + g * (*c - u));
                let var = raw.variance_frac.map(|v| v.slice(s![..n, .., .., ..]).to_owned());
                (guided, var, None)
            }
            Some(Guidance::Classifier { scale, guide }) => {
                let labels = match self.condition {
                    Condition::Class(v) => v,
                    _ => {
                        return Err(Error::Incompatible(
                            "classifier guidance needs class labels (Condition::Class)".into(),
                        ))
                    }
                };
                let raw = self.call(xm.view(), &times, &Condition::None)?;
                let grad = guide.grad_log_prob(xm.view(), &times, labels)?;
                check_output(&grad, &xm, "classifier gradient")?;
                (raw.output, raw.variance_frac, Some((*scale, grad)))
            }
            None => {
                let raw = self.call(xm.view(), &times, self.condition)?;
                (raw.output, raw.variance_frac, None)
            }
        };
        check_output(&output, &xm, "prediction")?;
        if self.want_variance && variance_frac.is_none() {
            return Err(Error::Incompatible(
                "the sampler uses a learned variance but the denoiser returned none".into(),
            ));
        }
        if let Some(v) = &variance_frac {
            check_output(v, &xm, "variance")?;
        }

        let (mut x0, mut eps) = to_x0_eps(spec.parameterization, &model_level, xm.view(), output);
        if let Some((scale, grad)) = grad {
            // score ← score + scale·∇x log p(y|x): ε ← ε − scale·σ·∇, x̂0 from the guided ε.
            Zip::indexed(&mut eps)
                .and(&mut x0)
                .and(&xm)
                .and(&grad)
                .par_for_each(|(i, _, _, _), e, x0, &xv, &g| {
                    let l = model_level(i);
                    let guided = *e as f64 - scale * l.sigma * g as f64;
                    *e = guided as f32;
                    *x0 = l.x0_from_eps(xv as f64, guided) as f32;
                });
        }
        self.clip.apply(&mut x0, spec.data_range);
        Ok(Prediction { x0, eps, variance_frac })
    }

    fn call(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        if self.want_variance {
            self.denoiser.predict_variance(x, times, condition)
        } else {
            Ok(RawPrediction {
                output: self.denoiser.predict(x, times, condition)?,
                variance_frac: None,
            })
        }
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

/// Convert a raw output (input `x`, item `i` at model-frame level `level(i)`) into
/// `(x̂0, ε̂)`.
fn to_x0_eps(
    p: Parameterization,
    level: &(impl Fn(usize) -> NoiseLevel + Sync),
    x: ArrayView4<'_, f32>,
    out: Array4<f32>,
) -> (Array4<f32>, Array4<f32>) {
    let mut other = Array4::<f32>::zeros(out.raw_dim());
    let mut out = out;
    let zip = Zip::indexed(&mut other).and(&x).and(&mut out);
    match p {
        Parameterization::Epsilon => {
            zip.par_for_each(|(i, _, _, _), o, &x, e| *o = level(i).x0_from_eps(x as f64, *e as f64) as f32);
            (other, out)
        }
        Parameterization::Sample => {
            zip.par_for_each(|(i, _, _, _), o, &x, x0| *o = level(i).eps_from_x0(x as f64, *x0 as f64) as f32);
            (out, other)
        }
        Parameterization::VPrediction => {
            zip.par_for_each(|(i, _, _, _), o, &x, v| {
                let (l, xf, vf) = (level(i), x as f64, *v as f64);
                *o = l.eps_from_v(xf, vf) as f32;
                *v = l.x0_from_v(xf, vf) as f32;
            });
            (out, other)
        }
        Parameterization::Score => {
            zip.par_for_each(|(i, _, _, _), o, &x, s| {
                let l = level(i);
                let e = l.eps_from_score(*s as f64);
                *s = e as f32;
                *o = l.x0_from_eps(x as f64, e) as f32;
            });
            (other, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_torch() {
        // torch.quantile(torch.tensor([1., 2., 3., 4.]), 0.5) == 2.5; q = 0.9 -> 3.7.
        let lin = Quantile::Linear;
        assert_eq!(quantile_of(&mut [4.0, 1.0, 3.0, 2.0], 0.5, lin), 2.5);
        assert!((quantile_of(&mut [4.0, 1.0, 3.0, 2.0], 0.9, lin) - 3.7).abs() < 1e-6);
        assert_eq!(quantile_of(&mut [5.0], 0.995, lin), 5.0);
        assert_eq!(quantile_of(&mut [1.0, 2.0], 1.0, lin), 2.0);
        // interpolation='nearest': rank 1.5 -> 2 (half to even), 2.7 -> 3, 0.5 -> 0.
        let near = Quantile::Nearest;
        assert_eq!(quantile_of(&mut [4.0, 1.0, 3.0, 2.0], 0.5, near), 3.0);
        assert_eq!(quantile_of(&mut [4.0, 1.0, 3.0, 2.0], 0.9, near), 4.0);
        assert_eq!(quantile_of(&mut [2.0, 1.0], 0.5, near), 1.0);
    }

    #[test]
    fn dynamic_thresholding_rescales_only_items_beyond_the_range() {
        // Item 0 within [-1, 1]: unchanged. Item 1 reaches ±3 at its 0.5 quantile s = 2:
        // clamp to ±2, then divide by 2.
        let mut x0 = Array4::from_shape_vec((2, 1, 1, 4), vec![0.5, -0.2, 0.9, -1.0, 3.0, -1.0, 1.0, -3.0]).unwrap();
        Clip::Dynamic {
            quantile: 0.5,
            interpolation: Quantile::Linear,
        }
        .apply(&mut x0, DataRange::MinusOneToOne);
        assert_eq!(x0.as_slice().unwrap()[..4], [0.5, -0.2, 0.9, -1.0]);
        assert_eq!(x0.as_slice().unwrap()[4..], [1.0, -0.5, 0.5, -1.0]);
        // In a [0, 1] range the same happens around the centre 0.5.
        let mut y = Array4::from_shape_vec((1, 1, 1, 2), vec![2.0, -1.0]).unwrap();
        Clip::Dynamic {
            quantile: 1.0,
            interpolation: Quantile::Linear,
        }
        .apply(&mut y, DataRange::ZeroToOne);
        assert_eq!(y.as_slice().unwrap(), [1.0, 0.0]);
        assert!(Clip::Dynamic {
            quantile: 0.0,
            interpolation: Quantile::Linear
        }
        .validate()
        .is_err());
        assert!(Clip::Dynamic {
            quantile: f64::NAN,
            interpolation: Quantile::Nearest
        }
        .validate()
        .is_err());
    }

    use crate::core::denoiser::{DenoiserSpec, FnDenoiser};
    use crate::schedule::{DiscreteSchedule, TimeSpec};

    /// Classifier-free guidance on a batch of several items at one grid point: one network
    /// call on 2n items with a time for each (a regression: the single time was doubled,
    /// "2 times for a batch of 4"), and per-item times doubled.
    #[test]
    fn classifier_free_guidance_batches_any_size() {
        // A "network" predicting each item's class label as its ε.
        let spec = DenoiserSpec::new(
            Parameterization::Epsilon,
            TimeInput::ContinuousStep,
            DataRange::MinusOneToOne,
        );
        let calls = std::sync::Mutex::new(Vec::new());
        let denoiser = FnDenoiser::new(spec, |x: ArrayView4<'_, f32>, t: &[f64], c: &Condition| {
            let n = x.dim().0;
            calls.lock().unwrap().push((n, t.to_vec()));
            crate::core::denoiser::item_times(t, n)?;
            let Condition::Class(labels) = c else { unreachable!() };
            let mut out = Array4::<f32>::zeros(x.raw_dim());
            for (mut item, &l) in out.outer_iter_mut().zip(labels) {
                item.fill(l as f32);
            }
            Ok(out)
        });
        let schedule: NoiseSchedule = DiscreteSchedule::linear(100, 1e-4, 0.02).unwrap().into();
        let guidance = Guidance::classifier_free(3.0, Condition::Class(vec![0, 1, 2]));
        let condition = Condition::Class(vec![1, 2, 4]);
        let eval = Evaluator {
            denoiser: &denoiser,
            schedule: &schedule,
            condition: &condition,
            guidance: Some(&guidance),
            clip: Clip::Off,
            want_variance: false,
        };
        let x = Array4::<f32>::zeros((3, 1, 2, 2));
        let p = schedule.start(TimeSpec::Step(50)).unwrap();
        let one = eval.predict(x.view(), &p).unwrap();
        let q = schedule.start(TimeSpec::Step(20)).unwrap();
        let per_item = eval.predict_items(x.view(), &[p, q, p]).unwrap();
        for pred in [&one, &per_item] {
            for (i, want) in [3.0f32, 4.0, 8.0].into_iter().enumerate() {
                assert!(pred.eps.index_axis(Axis(0), i).iter().all(|&e| e == want), "item {i}");
            }
        }
        let calls = calls.into_inner().unwrap();
        assert_eq!(
            calls,
            vec![(6, vec![50.0; 6]), (6, vec![50.0, 20.0, 50.0, 50.0, 20.0, 50.0])]
        );
    }
}
