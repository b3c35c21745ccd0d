//! The Boomerang core: noise `x0` to level `t` in one draw, then run the model's reverse
//! process from exactly `t` back to the data.

use ndarray::{s, Array4, ArrayView4, Axis, Zip};
use rand::Rng;

use crate::core::codec::{Codec, Identity};
use crate::core::denoiser::{Condition, Denoiser, TimeInput};
use crate::core::guidance::Guidance;
use crate::core::noise::NoiseStreams;
use crate::core::prediction::{model_time, Clip, Evaluator, Prediction};
use crate::sampler::{Sampler, Spacing, StepCallback};
use crate::schedule::{GridPoint, NoiseSchedule, TimeSpec};
use crate::{Error, Result};

/// Unchecked settings of a Boomerang run; [`build`](BoomerangBuilder::build) validates them
/// against the denoiser and schedule into a [`Boomerang`] runner.
#[derive(Debug, Clone)]
#[must_use = "call .build() to get a runner"]
pub struct BoomerangBuilder<D, C = Identity> {
    denoiser: D,
    codec: C,
    schedule: NoiseSchedule,
    final_alpha_bar: Option<f64>,
    sampler: Sampler,
    spacing: Spacing,
    clip: Clip,
    condition: Condition,
    guidance: Option<Guidance>,
}

impl<D: Denoiser, C: Codec> BoomerangBuilder<D, C> {
    /// Run in the space of `codec` (a latent model's VAE): images are encoded before the
    /// forward noise and decoded after the reverse run (default: [`Identity`]).
    pub fn codec<C2: Codec>(self, codec: C2) -> BoomerangBuilder<D, C2> {
        BoomerangBuilder {
            denoiser: self.denoiser,
            codec,
            schedule: self.schedule,
            final_alpha_bar: self.final_alpha_bar,
            sampler: self.sampler,
            spacing: self.spacing,
            clip: self.clip,
            condition: self.condition,
            guidance: self.guidance,
        }
    }

    /// Where the last reverse step lands: `None` (default) is the clean data (`ᾱ = 1`);
    /// `Some(ᾱ)` reproduces diffusers' DDIM/PNDM with `set_alpha_to_one = false`, whose last
    /// step goes to `ᾱ_0` of the training schedule (see
    /// [`SchedulerConfig::final_alpha_bar`](crate::schedule::SchedulerConfig::final_alpha_bar)).
    pub fn final_alpha_bar(mut self, alpha_bar: Option<f64>) -> Self {
        self.final_alpha_bar = alpha_bar;
        self
    }

    /// The reverse step rule (default: DDPM ancestral with the posterior variance, the
    /// paper's Algorithm 1).
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// The reverse grid (default: [`Spacing::Full`], every step from `t` to 0).
    pub fn spacing(mut self, spacing: Spacing) -> Self {
        self.spacing = spacing;
        self
    }

    /// Clip `x̂0` to the denoiser's data range at every step (default: off); shorthand for
    /// [`clip`](BoomerangBuilder::clip) with [`Clip::Range`] or [`Clip::Off`].
    pub fn clip_denoised(mut self, on: bool) -> Self {
        self.clip = if on { Clip::Range } else { Clip::Off };
        self
    }

    /// How `x̂0` is kept in range: off, clamped, or dynamically thresholded.
    pub fn clip(mut self, clip: Clip) -> Self {
        self.clip = clip;
        self
    }

    /// Conditioning for every run (class labels or text embeddings, one per item or one
    /// for all).
    pub fn condition(mut self, condition: Condition) -> Self {
        self.condition = condition;
        self
    }

    /// Guidance: classifier-free ([`Guidance::classifier_free`]) or by a classifier
    /// ([`Guidance::classifier`]).
    pub fn guidance(mut self, guidance: Guidance) -> Self {
        self.guidance = Some(guidance);
        self
    }

    /// Validate everything that can be checked before seeing data.
    pub fn build(self) -> Result<Boomerang<D, C>> {
        let spec = self.denoiser.spec();
        self.sampler.validate(&self.schedule)?;
        self.clip.validate()?;
        if self.sampler.needs_learned_variance() && !spec.learned_variance {
            return Err(Error::Incompatible(
                "Variance::Learned needs a denoiser that predicts its variance".into(),
            ));
        }
        if let Some(a) = self.final_alpha_bar {
            if !(a > 0.0 && a <= 1.0) {
                return Err(Error::param("final_alpha_bar", format!("must lie in (0, 1], got {a}")));
            }
        }
        if let Spacing::Uniform(0) = self.spacing {
            return Err(Error::param("spacing", "Uniform(n) needs n >= 1"));
        }
        if let Some(g) = &self.guidance {
            g.validate(&self.condition)?;
        }
        if spec.time_input == TimeInput::ContinuousTime && self.schedule.as_discrete().is_some() {
            return Err(Error::Incompatible(
                "the denoiser takes a continuous SDE time but the schedule is discrete".into(),
            ));
        }
        if spec.time_input == TimeInput::Step && matches!(self.spacing, Spacing::FastDpmVar { .. }) {
            return Err(Error::Incompatible(
                "FastDPM VAR calls the network at non-integer steps; this denoiser takes integer \
                 steps only (use FastDpmStep or Uniform)"
                    .into(),
            ));
        }
        // Build one grid from the last step to surface spacing errors now.
        let probe = self.schedule.start(TimeSpec::Fraction(1.0))?;
        self.spacing.grid(&self.schedule, probe)?;
        Ok(Boomerang {
            denoiser: self.denoiser,
            codec: self.codec,
            schedule: self.schedule,
            final_alpha_bar: self.final_alpha_bar,
            sampler: self.sampler,
            spacing: self.spacing,
            clip: self.clip,
            condition: self.condition,
            guidance: self.guidance,
        })
    }
}

/// Everything a detailed run returns. `sample` is an image; the other arrays are in the
/// denoiser's space (the latents of a latent model; the images themselves for pixel models).
#[derive(Debug, Clone)]
pub struct BoomerangOutput {
    /// The Boomerang sample `x̂` (decoded by the codec).
    pub sample: Array4<f32>,
    /// The reverse run's result in model space (`sample` before decoding).
    pub model_sample: Array4<f32>,
    /// The encoded input `x0` in model space (`None` when the run started from a given `x_t`).
    pub encoded: Option<Array4<f32>>,
    /// The noised input `x_t` the reverse process started from.
    pub x_t: Array4<f32>,
    /// The last prediction of `x0` (at the cleanest grid level), in model space.
    pub pred_x0: Array4<f32>,
    /// Where the run started.
    pub start: GridPoint,
    /// Number of reverse steps (grid points) run.
    pub steps: usize,
}

/// A validated Boomerang runner.
///
/// ```
/// use boomerang::{analytic::GaussianDenoiser, schedule::DiscreteSchedule, Boomerang, Sampler, Spacing, TimeSpec};
/// use rand::SeedableRng;
///
/// let denoiser = GaussianDenoiser::new(0.0, 0.5)?;
/// let runner = Boomerang::builder(denoiser, DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
///     .sampler(Sampler::ddim(0.0))
///     .spacing(Spacing::Uniform(100))
///     .build()?;
/// let x0 = ndarray::Array4::<f32>::zeros((2, 3, 8, 8));
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
/// let x = runner.run(x0.view(), TimeSpec::fraction(0.3), &mut rng)?;
/// assert_eq!(x.dim(), (2, 3, 8, 8));
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Boomerang<D, C = Identity> {
    denoiser: D,
    codec: C,
    schedule: NoiseSchedule,
    final_alpha_bar: Option<f64>,
    sampler: Sampler,
    spacing: Spacing,
    clip: Clip,
    condition: Condition,
    guidance: Option<Guidance>,
}

impl<D: Denoiser> Boomerang<D> {
    /// Start configuring a runner for `denoiser` on `schedule`.
    pub fn builder(denoiser: D, schedule: impl Into<NoiseSchedule>) -> BoomerangBuilder<D> {
        BoomerangBuilder {
            denoiser,
            codec: Identity,
            schedule: schedule.into(),
            final_alpha_bar: None,
            sampler: Sampler::default(),
            spacing: Spacing::Full,
            clip: Clip::Off,
            condition: Condition::None,
            guidance: None,
        }
    }
}

impl<D: Denoiser, C: Codec> Boomerang<D, C> {
    /// The denoiser.
    pub fn denoiser(&self) -> &D {
        &self.denoiser
    }

    /// The codec (images <-> model space).
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The reverse grid a run from `t` visits (its length is the number of network calls
    /// for DDPM and DDIM).
    pub fn plan(&self, t: TimeSpec) -> Result<Vec<GridPoint>> {
        let start = self.schedule.start(t)?;
        let grid = self.spacing.grid(&self.schedule, start)?;
        let input = self.denoiser.spec().time_input;
        for p in &grid {
            model_time(input, &self.schedule, p)?;
        }
        Ok(grid)
    }

    /// Boomerang each image of the batch `x0` (NCHW, in the data range of
    /// [`input`](crate::core::pipeline::Pipeline::input)) from `t`. Item `i` draws its noise
    /// from stream `i` of one seed taken from `rng`.
    pub fn run<R: Rng + ?Sized>(&self, x0: ArrayView4<'_, f32>, t: TimeSpec, rng: &mut R) -> Result<Array4<f32>> {
        let mut noise = NoiseStreams::from_rng(rng, x0.dim().0);
        Ok(self.run_with(x0, t, &mut noise, None)?.sample)
    }

    /// The full form: explicit per-item noise streams (e.g. [`NoiseStreams::keyed`]) and an
    /// optional per-step callback; returns `x_t`, the model-space result and the final `x̂0`
    /// too. Each item's stream supplies, in order, the codec's draws (a VAE posterior
    /// sample), the forward noise `z` and the sampler's noise.
    pub fn run_with(
        &self,
        x0: ArrayView4<'_, f32>,
        t: TimeSpec,
        noise: &mut NoiseStreams,
        callback: Option<StepCallback<'_>>,
    ) -> Result<BoomerangOutput> {
        self.run_inner(x0, t, None, &self.condition, noise, callback)
    }

    /// [`run_with`](Boomerang::run_with) with a forward noise `z` of your own (model-space
    /// shape, e.g. the latents' for a latent model): `x_t = α_t·encode(x0) + σ_t·z`. The
    /// streams still supply the codec's and the sampler's draws.
    pub fn run_with_noise(
        &self,
        x0: ArrayView4<'_, f32>,
        t: TimeSpec,
        z: ArrayView4<'_, f32>,
        noise: &mut NoiseStreams,
        callback: Option<StepCallback<'_>>,
    ) -> Result<BoomerangOutput> {
        self.run_inner(x0, t, Some(z), &self.condition, noise, callback)
    }

    pub(crate) fn run_inner(
        &self,
        x0: ArrayView4<'_, f32>,
        t: TimeSpec,
        z: Option<ArrayView4<'_, f32>>,
        condition: &Condition,
        noise: &mut NoiseStreams,
        callback: Option<StepCallback<'_>>,
    ) -> Result<BoomerangOutput> {
        let spec = self.denoiser.spec();
        self.codec.check_images(&x0, spec)?;
        check_streams(noise, x0.dim().0)?;
        let grid = self.plan(t)?;
        let start = grid[0];
        let encoded = self.codec.encode(x0, noise)?;
        spec.check_batch(&encoded.view(), "encoded x0")?;
        let (_, c, h, w) = encoded.dim();
        let mut x_t = match z {
            Some(z) => {
                if z.dim() != encoded.dim() {
                    return Err(Error::Shape(format!(
                        "forward noise of shape {:?} for model-space inputs of shape {:?}",
                        z.shape(),
                        encoded.shape()
                    )));
                }
                spec.check_batch(&z, "forward noise")?;
                z.to_owned()
            }
            None => noise.normal((c, h, w))?,
        };
        let (a, s) = (start.level.alpha as f32, start.level.sigma as f32);
        Zip::from(&mut x_t)
            .and(&encoded)
            .par_for_each(|z, &x| *z = a * x + s * *z);
        let (model_sample, pred_x0) = self.reverse(x_t.clone(), &grid, condition, noise, callback)?;
        Ok(BoomerangOutput {
            sample: self.codec.decode(model_sample.view())?,
            model_sample,
            encoded: Some(encoded),
            x_t,
            pred_x0,
            start,
            steps: grid.len(),
        })
    }

    /// The reverse half alone: run from a given `x_t` in model space (e.g. one noised with
    /// a noise of your own, or a stored one) at level `t`, and decode.
    /// [`run_with`](Boomerang::run_with) is `x_t = α_t·encode(x0) + σ_t·z` followed by this.
    pub fn reverse_from(
        &self,
        x_t: ArrayView4<'_, f32>,
        t: TimeSpec,
        noise: &mut NoiseStreams,
        callback: Option<StepCallback<'_>>,
    ) -> Result<BoomerangOutput> {
        self.denoiser.spec().check_batch(&x_t, "x_t")?;
        check_streams(noise, x_t.dim().0)?;
        let grid = self.plan(t)?;
        let (model_sample, pred_x0) = self.reverse(x_t.to_owned(), &grid, &self.condition, noise, callback)?;
        Ok(BoomerangOutput {
            sample: self.codec.decode(model_sample.view())?,
            model_sample,
            encoded: None,
            x_t: x_t.to_owned(),
            pred_x0,
            start: grid[0],
            steps: grid.len(),
        })
    }

    /// Boomerang with a `t` per item (e.g. augmentation with `t` drawn per image), in ONE
    /// batched network call per reverse step: item `i` starts at `ts[i]` on its own grid, and
    /// at step `k` every item that still has a `k`-th grid point is evaluated together (each
    /// at its own noise level, through the per-item times of [`Denoiser::predict`]); the step
    /// rule is then applied per item. Items whose grid is shorter finish earlier. Extra
    /// network calls a step rule makes (the predictor-corrector's corrector, PNDM's first
    /// step) run per item.
    ///
    /// With one `t` for all items this equals [`run_with`](Boomerang::run_with) bit for bit
    /// (for a denoiser whose items do not influence each other).
    pub fn run_items(&self, x0: ArrayView4<'_, f32>, ts: &[TimeSpec], noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        self.run_items_inner(x0, ts, &self.condition, noise, &mut |_| {})
    }

    /// [`run_items`](Boomerang::run_items) with a condition of this run in place of the
    /// runner's own (`Condition::None` keeps the runner's): one for all items or one per
    /// item, e.g. the class label of each image of a class-per-folder dataset. It also
    /// supplies the labels of classifier guidance.
    pub fn run_items_conditioned(
        &self,
        x0: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
    ) -> Result<Array4<f32>> {
        let condition = self.run_condition(condition)?;
        self.run_items_inner(x0, ts, condition, noise, &mut |_| {})
    }

    /// The condition of a run: the runner's own for `Condition::None`, else `condition`
    /// checked against the guidance.
    pub(crate) fn run_condition<'a>(&'a self, condition: &'a Condition) -> Result<&'a Condition> {
        if let Condition::None = condition {
            return Ok(&self.condition);
        }
        if let Some(g) = &self.guidance {
            g.validate(condition)?;
        }
        Ok(condition)
    }

    /// `on_step(k)` after every reverse step, `k` the number of items it advanced.
    pub(crate) fn run_items_inner(
        &self,
        x0: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Array4<f32>> {
        let n = x0.dim().0;
        if ts.len() != n {
            return Err(Error::Shape(format!("{} times for a batch of {n}", ts.len())));
        }
        let condition = condition.repeat_to(n)?;
        let spec = self.denoiser.spec();
        self.codec.check_images(&x0, spec)?;
        check_streams(noise, n)?;
        let grids = ts.iter().map(|&t| self.plan(t)).collect::<Result<Vec<_>>>()?;
        let encoded = self.codec.encode(x0, noise)?;
        spec.check_batch(&encoded.view(), "encoded x0")?;
        let (_, c, h, w) = encoded.dim();
        let mut x = noise.normal((c, h, w))?;
        Zip::from(x.outer_iter_mut())
            .and(encoded.outer_iter())
            .and(&grids)
            .par_for_each(|mut z, x0, grid| {
                let (a, s) = (grid[0].level.alpha as f32, grid[0].level.sigma as f32);
                Zip::from(&mut z).and(&x0).for_each(|z, &x| *z = a * x + s * *z);
            });

        let guidance = match &self.guidance {
            Some(g) => Some(g.repeat_to(n)?),
            None => None,
        };
        let terminal = self.terminal();
        // Each item lives in its own array, stepped in place; its condition is cut once.
        let mut items: Vec<Array4<f32>> = x.outer_iter().map(|xi| xi.insert_axis(Axis(0)).to_owned()).collect();
        drop(x);
        let item_conditions = (0..n).map(|i| condition.select(&[i])).collect::<Result<Vec<_>>>()?;
        let item_guides = (0..n)
            .map(|i| guidance.as_ref().map(|g| g.select(&[i])).transpose())
            .collect::<Result<Vec<_>>>()?;
        let mut streams = std::mem::replace(noise, NoiseStreams::join(Vec::new())).split_items();
        let mut states = vec![crate::SamplerState::default(); n];
        let result = (|| -> Result<()> {
            let longest = grids.iter().map(Vec::len).max().unwrap_or(0);
            for k in 0..longest {
                let active: Vec<usize> = (0..n).filter(|&i| grids[i].len() > k).collect();
                let points: Vec<GridPoint> = active.iter().map(|&i| grids[i][k]).collect();
                let xs = stack(active.iter().map(|&i| &items[i]))?;
                let cond = condition.select(&active)?;
                let guide = match &guidance {
                    Some(g) => Some(g.select(&active)?),
                    None => None,
                };
                let eval = self.evaluator(&cond, guide.as_ref());
                let pred = eval.predict_items(xs.view(), &points)?;
                drop(xs);
                for (j, &i) in active.iter().enumerate() {
                    let one = |a: &Array4<f32>| a.slice(s![j..j + 1, .., .., ..]).to_owned();
                    let mut first = Some(Prediction {
                        x0: one(&pred.x0),
                        eps: one(&pred.eps),
                        variance_frac: pred.variance_frac.as_ref().map(one),
                    });
                    let eval_i = self.evaluator(&item_conditions[i], item_guides[i].as_ref());
                    let from = grids[i][k];
                    // Every sampler's first evaluation of a step is at `from`, on the sample
                    // as the step received it: the batched call's prediction. Later ones
                    // (a corrector's, PNDM's end point) are the item's own calls.
                    let mut model = |xm: ArrayView4<'_, f32>, p: &GridPoint| match first.take() {
                        Some(p0) if p.time == from.time => Ok(p0),
                        _ => eval_i.predict(xm, p),
                    };
                    let to = grids[i].get(k + 1).or(terminal.as_ref());
                    self.sampler.step_in_place(
                        &mut model,
                        &mut items[i],
                        &from,
                        to,
                        &mut streams[i],
                        &mut states[i],
                    )?;
                }
                on_step(active.len());
            }
            Ok(())
        })();
        *noise = NoiseStreams::join(streams);
        result?;
        self.codec.decode(stack(items.iter())?.view())
    }

    fn evaluator<'a>(&'a self, condition: &'a Condition, guidance: Option<&'a Guidance>) -> Evaluator<'a, D> {
        Evaluator {
            denoiser: &self.denoiser,
            schedule: &self.schedule,
            condition,
            guidance,
            clip: self.clip,
            want_variance: self.sampler.needs_learned_variance(),
        }
    }

    fn terminal(&self) -> Option<GridPoint> {
        self.final_alpha_bar.map(|a| GridPoint {
            time: -1.0,
            level: crate::schedule::NoiseLevel::vp(a),
        })
    }

    /// Sample from the prior at the noisiest level (`x ~ N(0, (α²+σ²)·I)` at `t = 1`) and run
    /// the whole reverse process: a global sample, for comparison with local ones. `shape`
    /// is the model-space shape (the latents' for a latent model); the result is decoded.
    pub fn generate<R: Rng + ?Sized>(&self, shape: (usize, usize, usize, usize), rng: &mut R) -> Result<Array4<f32>> {
        let (n, c, h, w) = shape;
        let mut noise = NoiseStreams::from_rng(rng, n);
        let grid = self.plan(TimeSpec::Fraction(1.0))?;
        let level = grid[0].level;
        let scale = level.alpha.hypot(level.sigma) as f32;
        let x = noise.normal((c, h, w))?.mapv_into(|v| v * scale);
        self.denoiser.spec().check_batch(&x.view(), "prior sample")?;
        let out = self.reverse(x, &grid, &self.condition, &mut noise, None)?.0;
        self.codec.decode(out.view())
    }

    fn reverse(
        &self,
        x: Array4<f32>,
        grid: &[GridPoint],
        condition: &Condition,
        noise: &mut NoiseStreams,
        callback: Option<StepCallback<'_>>,
    ) -> Result<(Array4<f32>, Array4<f32>)> {
        let n = x.dim().0;
        let condition = condition.repeat_to(n)?;
        let guidance = match &self.guidance {
            Some(g) => Some(g.repeat_to(n)?),
            None => None,
        };
        let eval = self.evaluator(&condition, guidance.as_ref());
        let mut model = |x: ArrayView4<'_, f32>, p: &GridPoint| eval.predict(x, p);
        let terminal = self.terminal();
        let out = self
            .sampler
            .run_until(&mut model, x, grid, terminal.as_ref(), noise, callback)?;
        Ok((out.prev_sample, out.pred_x0))
    }
}

fn check_streams(noise: &NoiseStreams, n: usize) -> Result<()> {
    if noise.len() != n {
        return Err(Error::Shape(format!(
            "{} noise streams for a batch of {n}",
            noise.len()
        )));
    }
    Ok(())
}

/// Boomerang with the paper's defaults (DDPM ancestral, every step from `t`): one call.
///
/// ```
/// use boomerang::{analytic::GaussianDenoiser, boomerang, schedule::DiscreteSchedule, TimeSpec};
/// use rand::SeedableRng;
/// let schedule = DiscreteSchedule::linear(100, 1e-4, 0.2)?;
/// let x0 = ndarray::Array4::<f32>::from_elem((1, 1, 4, 4), 0.5);
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let x = boomerang(GaussianDenoiser::new(0.0, 1.0)?, schedule, x0.view(), TimeSpec::step(10), &mut rng)?;
/// assert!(x.iter().all(|v| v.is_finite()));
/// # Ok::<(), boomerang::Error>(())
/// ```
pub fn boomerang<D: Denoiser, R: Rng + ?Sized>(
    denoiser: D,
    schedule: impl Into<NoiseSchedule>,
    x0: ArrayView4<'_, f32>,
    t: TimeSpec,
    rng: &mut R,
) -> Result<Array4<f32>> {
    Boomerang::builder(denoiser, schedule).build()?.run(x0, t, rng)
}

/// One batch of single-item arrays (all of one shape), in order.
fn stack<'a>(items: impl Iterator<Item = &'a Array4<f32>>) -> Result<Array4<f32>> {
    let views: Vec<ArrayView4<'_, f32>> = items.map(Array4::view).collect();
    ndarray::concatenate(Axis(0), &views)
        .map_err(|e| Error::Shape(format!("internal error: items of different shapes: {e}")))
}
