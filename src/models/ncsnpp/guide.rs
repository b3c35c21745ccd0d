//! Classifier guidance with DLSM's time-conditional classifier: a [`Guide`] returning
//! `∇x log p(y | x, σ)` by autograd.
//!
//! DLSM (`sde_lib.py`, `sampling.py`) differentiates `log(softmax(clf(x, σ)) + 1e-8)` at the
//! label, with `x` the noisy sample in data range and `σ = σ(t)`; the same is done here
//! (the `1e-8` matters only where `p(y | x) < 1e-6`). This is the only place the crate
//! needs gradients at sampling time: they are switched on for the classifier's forward and
//! backward only, whatever the caller's grad mode.

use std::sync::Mutex;

use ndarray::{Array2, Array4, ArrayView4};
use tch::{Device, Kind, Tensor};

use super::classifier::TimeCondResNet;
use super::config::ResNetCondConfig;
use crate::core::denoiser::item_times;
use crate::models::{crossing, guard_panics};
use crate::{Error, Guide, Result};

/// DLSM's `1e-8` inside the logarithm.
const LOG_EPS: f64 = 1e-8;

/// [`TimeCondResNet`] as a [`Guide`]. The network sits behind a `Mutex` (tch tensors are
/// not `Sync`), so concurrent callers take turns.
#[derive(Debug)]
pub struct ClassifierGuide {
    net: Mutex<TimeCondResNet>,
    config: ResNetCondConfig,
    max_batch: usize,
}

impl ClassifierGuide {
    /// Wrap a classifier; batches run in chunks of at most 64 items.
    pub fn new(net: TimeCondResNet) -> Self {
        let config = net.config().clone();
        Self {
            net: Mutex::new(net),
            config,
            max_batch: crate::models::DEFAULT_MAX_BATCH,
        }
    }

    /// Set the largest number of items run through the classifier at once (at least 1).
    pub fn with_max_batch(mut self, max_batch: usize) -> Result<Self> {
        if max_batch == 0 {
            return Err(Error::param("max_batch", "must be at least 1"));
        }
        self.max_batch = max_batch;
        Ok(self)
    }

    /// The classifier's configuration.
    pub fn config(&self) -> &ResNetCondConfig {
        &self.config
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, TimeCondResNet>> {
        self.net
            .lock()
            .map_err(|_| Error::Model("the classifier's lock is poisoned (a previous call panicked)".into()))
    }

    fn check(&self, x: &ArrayView4<'_, f32>, times: &[f64]) -> Result<Vec<f64>> {
        let (n, c, _, _) = x.dim();
        if n == 0 {
            return Err(Error::InvalidInput("classifier input: the batch is empty".into()));
        }
        if c != self.config.in_channels {
            return Err(Error::Shape(format!(
                "the classifier takes {} channels, got {c}",
                self.config.in_channels
            )));
        }
        let sigmas = item_times(times, n)?;
        if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::param(
                "sigma",
                format!("the classifier takes noise levels σ > 0 (it embeds log σ), got {bad}"),
            ));
        }
        Ok(sigmas)
    }

    /// Runs `f` on every chunk of `x` as a device tensor, concatenating the host results
    /// along the first axis.
    fn chunks<T: Clone + Default>(
        &self,
        x: ArrayView4<'_, f32>,
        sigmas: &[f64],
        mut f: impl FnMut(&TimeCondResNet, Tensor, Tensor, std::ops::Range<usize>) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let (n, c, h, w) = x.dim();
        let slice = crossing::host_slice(&x);
        let net = self.lock()?;
        let (device, kind): (Device, Kind) = (net.device(), net.kind());
        let per = c * h * w;
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let len = self.max_batch.min(n - start);
            let xs =
                crossing::slice_to_tensor(&slice[start * per..(start + len) * per], &[len, c, h, w], device, kind)?;
            let s: Vec<f32> = sigmas[start..start + len].iter().map(|&v| v as f32).collect();
            let st = crossing::slice_to_tensor(&s, &[len], device, Kind::Float)?;
            out.extend(f(&net, xs, st, start..start + len)?);
            start += len;
        }
        Ok(out)
    }

    /// The logits `[N, classes]` for `x` at noise levels `sigmas` (one for all or one per
    /// item), without gradients.
    pub fn logits(&self, x: ArrayView4<'_, f32>, sigmas: &[f64]) -> Result<Array2<f32>> {
        let sig = self.check(&x, sigmas)?;
        let k = self.config.num_classes;
        let n = x.dim().0;
        let values = guard_panics(|| {
            let _g = tch::no_grad_guard();
            self.chunks(x, &sig, |net, xs, st, r| {
                let y = net.forward(&xs, &st)?;
                let mut v = vec![0f32; r.len() * k];
                crossing::tensor_into(&y, &mut v)?;
                Ok(v)
            })
        })?;
        Array2::from_shape_vec((n, k), values).map_err(|e| Error::Shape(e.to_string()))
    }

    /// `softmax(logits)` per item.
    pub fn probabilities(&self, x: ArrayView4<'_, f32>, sigmas: &[f64]) -> Result<Array2<f32>> {
        let mut l = self.logits(x, sigmas)?;
        for mut row in l.rows_mut() {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row.mapv_inplace(|v| (v - m).exp());
            let s: f32 = row.sum();
            row.mapv_inplace(|v| v / s);
        }
        Ok(l)
    }
}

impl Guide for ClassifierGuide {
    fn num_classes(&self) -> Option<usize> {
        Some(self.config.num_classes)
    }

    fn grad_log_prob(&self, x: ArrayView4<'_, f32>, times: &[f64], labels: &[i64]) -> Result<Array4<f32>> {
        let sig = self.check(&x, times)?;
        let (n, c, h, w) = x.dim();
        let k = self.config.num_classes;
        if labels.len() != n {
            return Err(Error::Shape(format!("{} labels for a batch of {n}", labels.len())));
        }
        if let Some(&bad) = labels.iter().find(|&&y| y < 0 || y as usize >= k) {
            return Err(Error::param(
                "class",
                format!("label {bad} is outside the classifier's {k} classes (0..{})", k - 1),
            ));
        }
        let per = c * h * w;
        // Gradients on for this call only; `with_grad` restores the caller's mode, and the
        // panic guard inside it keeps a panic from skipping that.
        let values = tch::with_grad(|| {
            guard_panics(|| {
                self.chunks(x, &sig, |net, xs, st, r| {
                    let leaf = xs.f_detach()?.f_set_requires_grad(true)?;
                    let logits = net.forward(&leaf, &st)?;
                    let logp = logits.f_softmax(1, Kind::Float)?.f_add_scalar(LOG_EPS)?.f_log()?;
                    let y = crossing::slice_to_tensor(&labels[r.clone()], &[r.len(), 1], logp.device(), Kind::Int64)?;
                    let picked = logp.f_gather(1, &y, false)?.f_sum(Kind::Float)?;
                    let grads = Tensor::f_run_backward(&[&picked], &[&leaf], false, false)?;
                    let g = grads
                        .into_iter()
                        .next()
                        .ok_or_else(|| Error::Model("autograd returned no gradient".into()))?;
                    let mut v = vec![0f32; r.len() * per];
                    crossing::tensor_into(&g, &mut v)?;
                    Ok(v)
                })
            })
        })?;
        Array4::from_shape_vec((n, c, h, w), values).map_err(|e| Error::Shape(e.to_string()))
    }
}
