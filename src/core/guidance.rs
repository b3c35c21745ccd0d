//! Guidance: steering the reverse process towards a condition, applied in
//! [`prediction`](crate::core::prediction), the one place where model outputs are converted.
//!
//! - [`Guidance::ClassifierFree`]: `out = out_u + scale·(out_c − out_u)` on the network's
//!   output, with the conditional and unconditional inputs run as ONE batched call of `2n`
//!   items (as diffusers does);
//! - [`Guidance::Classifier`]: a [`Guide`] returns `∇x log p(y | x_t, t)`, added to the score
//!   with weight `scale` (Dhariwal & Nichol; DLSM's `scaling_factor`), i.e.
//!   `ε̂ ← ε̂ − scale·σ·∇x log p(y | x_t, t)` in the model's frame. The class labels come from
//!   the run's [`Condition::Class`]; the denoiser itself then runs unconditionally.

use std::fmt;
use std::sync::Arc;

use ndarray::{Array4, ArrayView4};

use crate::core::denoiser::Condition;
use crate::{Error, Result};

/// A classifier of noisy samples: the gradient of its log-probability of a class.
///
/// `x` is the batch in the frame the denoiser sees (for σ-conditioned VE models `x/α`),
/// `times` holds one noise level per item in the units of the denoiser's
/// [`TimeInput`](crate::TimeInput) (σ for DLSM), and `labels` one class per item.
///
/// Implementations are `Send + Sync` so that a runner holding one stays `Send`; a guide
/// holding `tch` tensors keeps them behind a `Mutex`.
pub trait Guide: Send + Sync {
    /// Number of classes, if known (labels are checked against it).
    fn num_classes(&self) -> Option<usize>;

    /// `∇x log p(labels | x, times)`, with the shape of `x`.
    fn grad_log_prob(&self, x: ArrayView4<'_, f32>, times: &[f64], labels: &[i64]) -> Result<Array4<f32>>;
}

/// How to guide a reverse run.
#[derive(Clone)]
pub enum Guidance {
    /// Classifier-free guidance: `out = out_u + scale·(out_c − out_u)`.
    ClassifierFree {
        /// Guidance scale (Stable Diffusion's default is 7.5; 1 means no guidance).
        scale: f64,
        /// The unconditional (or negative-prompt) condition.
        unconditional: Condition,
    },
    /// Classifier guidance: the score plus `scale·∇x log p(y | x_t, t)`.
    Classifier {
        /// Weight of the classifier gradient (DLSM's default is 1).
        scale: f64,
        /// The classifier.
        guide: Arc<dyn Guide>,
    },
}

impl fmt::Debug for Guidance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Guidance::ClassifierFree { scale, unconditional } => f
                .debug_struct("ClassifierFree")
                .field("scale", scale)
                .field("unconditional", unconditional)
                .finish(),
            Guidance::Classifier { scale, guide } => f
                .debug_struct("Classifier")
                .field("scale", scale)
                .field("num_classes", &guide.num_classes())
                .finish(),
        }
    }
}

impl Guidance {
    /// Classifier-free guidance with `scale` against `unconditional`.
    pub fn classifier_free(scale: f64, unconditional: Condition) -> Self {
        Guidance::ClassifierFree { scale, unconditional }
    }

    /// Classifier guidance with `scale`.
    pub fn classifier(scale: f64, guide: Arc<dyn Guide>) -> Self {
        Guidance::Classifier { scale, guide }
    }

    /// The scale.
    pub fn scale(&self) -> f64 {
        match self {
            Guidance::ClassifierFree { scale, .. } | Guidance::Classifier { scale, .. } => *scale,
        }
    }

    /// Check what can be checked before seeing data: a finite scale, and for classifier
    /// guidance class labels in the run's condition within the classifier's range (no
    /// condition: the labels come with each run).
    pub(crate) fn validate(&self, condition: &Condition) -> Result<()> {
        let scale = self.scale();
        if !scale.is_finite() {
            return Err(Error::param("guidance scale", format!("must be finite, got {scale}")));
        }
        if let Guidance::Classifier { guide, .. } = self {
            let labels = match condition {
                Condition::Class(v) => v,
                // The labels come with each run (`Boomerang::run_items_conditioned`).
                Condition::None => return Ok(()),
                Condition::Text(_) => {
                    return Err(Error::Incompatible(
                        "classifier guidance needs class labels: set the condition to Condition::Class".into(),
                    ))
                }
            };
            if let Some(n) = guide.num_classes() {
                if let Some(&bad) = labels.iter().find(|&&y| y < 0 || y as usize >= n) {
                    return Err(Error::param(
                        "class",
                        format!("label {bad} is outside the classifier's {n} classes (0..{})", n - 1),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The guidance of items `idx` of a batch.
    pub(crate) fn select(&self, idx: &[usize]) -> Result<Self> {
        Ok(match self {
            Guidance::ClassifierFree { scale, unconditional } => Guidance::ClassifierFree {
                scale: *scale,
                unconditional: unconditional.select(idx)?,
            },
            other => other.clone(),
        })
    }

    /// The same guidance with its condition repeated for a batch of `n`.
    pub(crate) fn repeat_to(&self, n: usize) -> Result<Self> {
        Ok(match self {
            Guidance::ClassifierFree { scale, unconditional } => Guidance::ClassifierFree {
                scale: *scale,
                unconditional: unconditional.repeat_to(n)?,
            },
            other => other.clone(),
        })
    }
}
