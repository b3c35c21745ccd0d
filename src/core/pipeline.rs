//! What the applications drive: a [`Pipeline`] maps a batch of images to Boomerang
//! samples at `t`, drawing all its randomness from per-item [`NoiseStreams`].
//!
//! Every [`Boomerang`] runner is one, pixel-space (DDPM, Patched Diffusion, NCSN++, the
//! analytic denoisers, any [`Denoiser`]) or latent (Stable Diffusion: a runner with a VAE
//! [`Codec`]); the model registry (`models::registry`) loads any checkpoint as one.
//!
//! [`crate::apps::enhance`], [`crate::apps::augment`] and [`crate::apps::anonymize`] take any `Pipeline`
//! (also as `&dyn Pipeline`), so a new model family plugs into all of them at once.

use ndarray::{Array4, ArrayView4};

use crate::core::codec::Codec;
use crate::core::denoiser::Condition;
use crate::core::noise::NoiseStreams;
use crate::schedule::TimeSpec;
use crate::{Boomerang, Denoiser, Result};

pub use crate::core::denoiser::ModelInput;

/// Boomerang on images: noise to `t`, run back, with per-item noise streams.
pub trait Pipeline {
    /// The images it takes: channels, fixed size (if any), side multiple, data range.
    fn input(&self) -> ModelInput;

    /// Check `t` and resolve it to the schedule's own time where the noise is added (the
    /// training step for discrete schedules). Errors for a `t` out of range.
    fn start_time(&self, t: TimeSpec) -> Result<f64>;

    /// Boomerang samples of `images` (`N×C×H×W` in [`ModelInput::range`]) at `t`; item `i`
    /// draws every random number from `noise` stream `i`.
    fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>>;

    /// Boomerang samples with item `i` at `ts[i]`. Runners batch items at different noise
    /// levels into one network call per step ([`Boomerang::run_items`]); the default runs
    /// each distinct `t` as its own batch.
    fn sample_items(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        noise: &mut NoiseStreams,
    ) -> Result<Array4<f32>> {
        default_sample_items(self, images, ts, noise)
    }

    /// [`sample_items`](Pipeline::sample_items) with a condition of this call in place of
    /// the pipeline's own (one for all items or one per item): e.g. the class label of each
    /// image of a class-per-folder dataset, for a class-conditional model or classifier
    /// guidance loaded without fixed labels. Pipelines that take no such condition refuse.
    fn sample_conditioned(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
    ) -> Result<Array4<f32>> {
        match condition {
            Condition::None => self.sample_items(images, ts, noise),
            c => Err(crate::Error::Incompatible(format!(
                "this model takes no {} condition per image",
                c.kind_name()
            ))),
        }
    }

    /// The number of reverse steps of a run from `t`, the unit of progress (1 where a
    /// pipeline cannot tell).
    fn steps(&self, t: TimeSpec) -> Result<usize> {
        self.start_time(t).map(|_| 1)
    }

    /// [`sample_conditioned`](Pipeline::sample_conditioned) that calls `on_step(k)` after
    /// every reverse step, `k` the number of items it advanced: over a call they add up to
    /// the sum of [`steps`](Pipeline::steps) of `ts`. For progress reports; the samples are
    /// the same as without it. The default reports the whole call at its end.
    fn sample_observed(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Array4<f32>> {
        let out = self.sample_conditioned(images, ts, condition, noise)?;
        let mut total = 0;
        for &t in ts {
            total += self.steps(t)?;
        }
        on_step(total);
        Ok(out)
    }
}

fn default_sample_items<S: Pipeline + ?Sized>(
    s: &S,
    images: ArrayView4<'_, f32>,
    ts: &[TimeSpec],
    noise: &mut NoiseStreams,
) -> Result<Array4<f32>> {
    let n = images.dim().0;
    if ts.len() != n {
        return Err(crate::Error::Shape(format!("{} times for a batch of {n}", ts.len())));
    }
    let mut out: Option<Array4<f32>> = None;
    let mut streams: Vec<Option<NoiseStreams>> = std::mem::replace(noise, NoiseStreams::join(Vec::new()))
        .split_items()
        .into_iter()
        .map(Some)
        .collect();
    let mut done = vec![false; n];
    let mut result = Ok(());
    for i in 0..n {
        if done[i] || result.is_err() {
            continue;
        }
        let group: Vec<usize> = (i..n).filter(|&j| !done[j] && ts[j] == ts[i]).collect();
        let mut group_noise = NoiseStreams::join(group.iter().filter_map(|&j| streams[j].take()).collect());
        let batch = images.select(ndarray::Axis(0), &group);
        match s.sample(batch.view(), ts[i], &mut group_noise) {
            Ok(res) => {
                let arr = out.get_or_insert_with(|| {
                    let (_, c, h, w) = res.dim();
                    Array4::zeros((n, c, h, w))
                });
                for (k, &j) in group.iter().enumerate() {
                    arr.index_axis_mut(ndarray::Axis(0), j)
                        .assign(&res.index_axis(ndarray::Axis(0), k));
                }
            }
            Err(e) => result = Err(e),
        }
        for (stream, &j) in group_noise.split_items().into_iter().zip(&group) {
            streams[j] = Some(stream);
            done[j] = true;
        }
    }
    *noise = NoiseStreams::join(streams.into_iter().flatten().collect());
    result?;
    out.ok_or_else(|| crate::Error::InvalidInput("the batch is empty".into()))
}

impl<D: Denoiser, C: Codec> Pipeline for Boomerang<D, C> {
    fn input(&self) -> ModelInput {
        self.codec().input(self.denoiser().spec())
    }

    fn start_time(&self, t: TimeSpec) -> Result<f64> {
        let grid = self.plan(t)?;
        Ok(grid.first().map_or(0.0, |p| p.time))
    }

    fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
        Ok(self.run_with(images, t, noise, None)?.sample)
    }

    fn sample_items(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        noise: &mut NoiseStreams,
    ) -> Result<Array4<f32>> {
        self.run_items(images, ts, noise)
    }

    fn sample_conditioned(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
    ) -> Result<Array4<f32>> {
        self.run_items_conditioned(images, ts, condition, noise)
    }

    fn steps(&self, t: TimeSpec) -> Result<usize> {
        Ok(self.plan(t)?.len())
    }

    fn sample_observed(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
        on_step: &mut dyn FnMut(usize),
    ) -> Result<Array4<f32>> {
        let condition = self.run_condition(condition)?;
        let n = images.dim().0;
        match ts.first() {
            // One `t` for all: the batched run, reporting each step of the whole batch.
            Some(&t) if ts.len() == n && ts.iter().all(|&x| x == t) => {
                let mut report = |_: &crate::StepInfo<'_>| on_step(n);
                Ok(self
                    .run_inner(images, t, None, condition, noise, Some(&mut report))?
                    .sample)
            }
            _ => self.run_items_inner(images, ts, condition, noise, on_step),
        }
    }
}

/// `&P` and `Box<P>` are pipelines too, forwarding every method (the defaults included,
/// so that an override of the inner pipeline is never lost).
macro_rules! forward_pipeline {
    ($($ty:ty),*) => {$(
        impl<S: Pipeline + ?Sized> Pipeline for $ty {
            fn input(&self) -> ModelInput {
                (**self).input()
            }
            fn start_time(&self, t: TimeSpec) -> Result<f64> {
                (**self).start_time(t)
            }
            fn sample(&self, images: ArrayView4<'_, f32>, t: TimeSpec, noise: &mut NoiseStreams) -> Result<Array4<f32>> {
                (**self).sample(images, t, noise)
            }
            fn sample_items(
                &self,
                images: ArrayView4<'_, f32>,
                ts: &[TimeSpec],
                noise: &mut NoiseStreams,
            ) -> Result<Array4<f32>> {
                (**self).sample_items(images, ts, noise)
            }
            fn sample_conditioned(
                &self,
                images: ArrayView4<'_, f32>,
                ts: &[TimeSpec],
                condition: &Condition,
                noise: &mut NoiseStreams,
            ) -> Result<Array4<f32>> {
                (**self).sample_conditioned(images, ts, condition, noise)
            }
            fn steps(&self, t: TimeSpec) -> Result<usize> {
                (**self).steps(t)
            }
            fn sample_observed(
                &self,
                images: ArrayView4<'_, f32>,
                ts: &[TimeSpec],
                condition: &Condition,
                noise: &mut NoiseStreams,
                on_step: &mut dyn FnMut(usize),
            ) -> Result<Array4<f32>> {
                (**self).sample_observed(images, ts, condition, noise, on_step)
            }
        }
    )*};
}

forward_pipeline!(&S, Box<S>);
