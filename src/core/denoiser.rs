//! The seam between networks and samplers: the [`Denoiser`] trait.
//!
//! A denoiser takes a batch `x` (NCHW `f32`) at one noise level and returns its prediction.
//! It declares what it predicts ([`Parameterization`]), how it wants the noise level
//! ([`TimeInput`]), which data range it was trained on ([`DataRange`]) and what shape it
//! accepts; samplers do every conversion, so a model never knows which sampler drives it.

use ndarray::{s, Array3, Array4, ArrayView4};

use crate::{Error, Result};

/// What the network's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameterization {
    /// The noise `ε` (DDPM, Stable Diffusion 1.x).
    Epsilon,
    /// The clean sample `x0` (Patched Diffusion).
    Sample,
    /// `v = √ᾱ·ε − √(1−ᾱ)·x0` (Stable Diffusion 2.x 768).
    VPrediction,
    /// The score `∇ log p(x_t)` (NCSN++, DLSM).
    Score,
}

/// How the network wants to be told the noise level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInput {
    /// The integer training step (Patched Diffusion). Non-integer grid times are refused.
    Step,
    /// The training step as a float (FastDPM's VAR calls at non-integer steps; SD).
    ContinuousStep,
    /// The SDE time `t ∈ [0, 1]`.
    ContinuousTime,
    /// The VE noise level `σ = σ_VP/α`; the network then sees `x/α` (DLSM, NCSN++).
    Sigma,
}

/// The data range a model was trained on. Images are mapped into it on load and out of it
/// on save; clipping of `x̂0` clips to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataRange {
    /// `[-1, 1]` (DDPM, Patched Diffusion, Stable Diffusion).
    #[default]
    MinusOneToOne,
    /// `[0, 1]` (DLSM).
    ZeroToOne,
}

impl DataRange {
    /// `(low, high)`.
    pub fn bounds(self) -> (f32, f32) {
        match self {
            DataRange::MinusOneToOne => (-1.0, 1.0),
            DataRange::ZeroToOne => (0.0, 1.0),
        }
    }
}

/// What a denoiser is and accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct DenoiserSpec {
    /// What the output means.
    pub parameterization: Parameterization,
    /// How the noise level is given.
    pub time_input: TimeInput,
    /// The data range of `x0`.
    pub data_range: DataRange,
    /// Channels the network takes, if fixed.
    pub channels: Option<usize>,
    /// `(height, width)` the network takes, if fixed.
    pub image_size: Option<(usize, usize)>,
    /// Whether [`Denoiser::predict_variance`] returns a learned variance.
    pub learned_variance: bool,
}

impl DenoiserSpec {
    /// A spec with no shape constraints and no learned variance.
    pub fn new(parameterization: Parameterization, time_input: TimeInput, data_range: DataRange) -> Self {
        Self {
            parameterization,
            time_input,
            data_range,
            channels: None,
            image_size: None,
            learned_variance: false,
        }
    }

    /// Fix the number of channels.
    pub fn with_channels(mut self, c: usize) -> Self {
        self.channels = Some(c);
        self
    }

    /// Fix the image size.
    pub fn with_image_size(mut self, height: usize, width: usize) -> Self {
        self.image_size = Some((height, width));
        self
    }

    /// Check a batch against this spec: non-empty, right channels and size, finite.
    pub fn check_batch(&self, x: &ArrayView4<'_, f32>, what: &str) -> Result<()> {
        let (n, c, h, w) = x.dim();
        if n == 0 {
            return Err(Error::InvalidInput(format!("{what}: the batch is empty")));
        }
        if h == 0 || w == 0 || c == 0 {
            return Err(Error::Shape(format!(
                "{what}: shape {:?} has a zero-sized axis",
                x.shape()
            )));
        }
        if let Some(ch) = self.channels {
            if c != ch {
                return Err(Error::Shape(format!(
                    "{what}: the model takes {ch} channels, got {c} (shape NCHW {:?})",
                    x.shape()
                )));
            }
        }
        if let Some((eh, ew)) = self.image_size {
            if (h, w) != (eh, ew) {
                return Err(Error::Shape(format!(
                    "{what}: the model takes {eh}×{ew} images, got {h}×{w}; resize first \
                     (see image_io::resize)"
                )));
            }
        }
        if let Some(pos) = x.iter().position(|v| !v.is_finite()) {
            let idx = unravel(pos, x.shape());
            return Err(Error::InvalidInput(format!(
                "{what}: value at NCHW index {idx:?} is {} (NaN or infinite)",
                x.iter().nth(pos).copied().unwrap_or(f32::NAN)
            )));
        }
        Ok(())
    }
}

/// What a model takes, for [`load_for_model`](crate::apps::dataset::load_for_model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInput {
    /// Channels (1 or 3).
    pub channels: usize,
    /// Fixed `(height, width)`, if any.
    pub size: Option<(usize, usize)>,
    /// Without a fixed size, sides must be multiples of this (1: any size; 8 for Stable
    /// Diffusion's VAE).
    pub multiple: usize,
    /// The model's data range.
    pub range: DataRange,
}

impl ModelInput {
    /// From a denoiser's spec; a model with no fixed channel count gets RGB.
    pub fn from_spec(spec: &DenoiserSpec) -> Self {
        Self {
            channels: spec.channels.unwrap_or(3),
            size: spec.image_size,
            multiple: 1,
            range: spec.data_range,
        }
    }
}

fn unravel(mut pos: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (i, &d) in shape.iter().enumerate().rev() {
        idx[i] = pos % d.max(1);
        pos /= d.max(1);
    }
    idx
}

/// Per-item conditioning for a batch.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Condition {
    /// No conditioning.
    #[default]
    None,
    /// One class label per item.
    Class(Vec<i64>),
    /// One sequence of text embeddings per item, `(batch, tokens, width)`.
    Text(Array3<f32>),
}

impl Condition {
    /// How many items it conditions (`None` fits any batch).
    pub fn batch_len(&self) -> Option<usize> {
        match self {
            Condition::None => None,
            Condition::Class(v) => Some(v.len()),
            Condition::Text(a) => Some(a.dim().0),
        }
    }

    /// Items `start..end`, for models that split large batches into chunks.
    pub fn slice(&self, start: usize, end: usize) -> Result<Condition> {
        if start > end || self.batch_len().is_some_and(|n| end > n) {
            return Err(Error::Shape(format!(
                "condition slice {start}..{end} is outside its {:?} items",
                self.batch_len()
            )));
        }
        Ok(match self {
            Condition::None => Condition::None,
            Condition::Class(v) => Condition::Class(v[start..end].to_vec()),
            Condition::Text(a) => Condition::Text(a.slice(s![start..end, .., ..]).to_owned()),
        })
    }

    /// Items `idx` (in that order) of a condition of `n` items (`None` stays `None`).
    pub fn select(&self, idx: &[usize]) -> Result<Condition> {
        let n = self.batch_len();
        if let (Some(n), Some(&bad)) = (n, idx.iter().find(|&&i| n.is_some_and(|n| i >= n))) {
            return Err(Error::Shape(format!("condition item {bad} of {n}")));
        }
        Ok(match self {
            Condition::None => Condition::None,
            Condition::Class(v) => Condition::Class(idx.iter().map(|&i| v[i]).collect()),
            Condition::Text(a) => Condition::Text(a.select(ndarray::Axis(0), idx)),
        })
    }

    /// This condition's items followed by `other`'s (the `2n` batch of classifier-free
    /// guidance). Both must be of the same kind; text embeddings must have the same shape
    /// per item.
    pub fn concat(&self, other: &Condition) -> Result<Condition> {
        match (self, other) {
            (Condition::None, Condition::None) => Ok(Condition::None),
            (Condition::Class(a), Condition::Class(b)) => Ok(Condition::Class(a.iter().chain(b).copied().collect())),
            (Condition::Text(a), Condition::Text(b)) => ndarray::concatenate(ndarray::Axis(0), &[a.view(), b.view()])
                .map(Condition::Text)
                .map_err(|_| {
                    Error::Shape(format!(
                        "text conditions of shapes {:?} and {:?} cannot be batched together",
                        a.shape(),
                        b.shape()
                    ))
                }),
            (a, b) => Err(Error::Incompatible(format!(
                "cannot batch a {} condition with a {} one",
                a.kind_name(),
                b.kind_name()
            ))),
        }
    }

    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Condition::None => "missing",
            Condition::Class(_) => "class",
            Condition::Text(_) => "text",
        }
    }

    /// The same condition repeated for a batch of `n` (a single item broadcast).
    pub fn repeat_to(&self, n: usize) -> Result<Condition> {
        match self.batch_len() {
            None => Ok(self.clone()),
            Some(m) if m == n => Ok(self.clone()),
            Some(1) => Ok(match self {
                Condition::Class(v) => Condition::Class(vec![v[0]; n]),
                Condition::Text(a) => {
                    let (_, l, d) = a.dim();
                    Condition::Text(
                        a.broadcast((n, l, d))
                            .map(|b| b.to_owned())
                            .ok_or_else(|| Error::Shape("cannot broadcast text condition".into()))?,
                    )
                }
                Condition::None => Condition::None,
            }),
            Some(m) => Err(Error::Shape(format!(
                "condition has {m} items but the batch has {n}; give one per item or one for all"
            ))),
        }
    }
}

/// A network output with an optional learned variance.
#[derive(Debug, Clone)]
pub struct RawPrediction {
    /// The output in the denoiser's [`Parameterization`].
    pub output: Array4<f32>,
    /// Learned variance as the interpolation fraction `f ∈ [0, 1]` towards `β`:
    /// `log σ² = f·log β + (1 − f)·log β̃` (improved-diffusion's convention).
    pub variance_frac: Option<Array4<f32>>,
}

/// A denoising network (or an analytic stand-in).
///
/// Implementors need [`spec`](Denoiser::spec) and [`predict`](Denoiser::predict).
/// `&D`, `Box<D>` and [`FnDenoiser`] (from a closure) are denoisers too.
pub trait Denoiser {
    /// What this denoiser is and accepts.
    fn spec(&self) -> &DenoiserSpec;

    /// Predict for the batch `x` at the noise levels `times` (in the units of
    /// [`DenoiserSpec::time_input`]): one for every item, or one per item (items at
    /// different levels in one call; see [`item_times`]). `condition` has one entry per item
    /// or is `None`.
    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>>;

    /// Predict with a learned variance (models with `learned_variance`); the default
    /// returns [`predict`](Denoiser::predict) with no variance.
    fn predict_variance(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        Ok(RawPrediction {
            output: self.predict(x, times, condition)?,
            variance_frac: None,
        })
    }
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn spec(&self) -> &DenoiserSpec {
        (**self).spec()
    }
    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        (**self).predict(x, times, condition)
    }
    fn predict_variance(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        (**self).predict_variance(x, times, condition)
    }
}

impl<D: Denoiser + ?Sized> Denoiser for Box<D> {
    fn spec(&self) -> &DenoiserSpec {
        (**self).spec()
    }
    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        (**self).predict(x, times, condition)
    }
    fn predict_variance(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        (**self).predict_variance(x, times, condition)
    }
}

impl<D: Denoiser + ?Sized> Denoiser for std::sync::Arc<D> {
    fn spec(&self) -> &DenoiserSpec {
        (**self).spec()
    }
    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        (**self).predict(x, times, condition)
    }
    fn predict_variance(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        (**self).predict_variance(x, times, condition)
    }
}

impl<D: Denoiser + ?Sized> Denoiser for std::rc::Rc<D> {
    fn spec(&self) -> &DenoiserSpec {
        (**self).spec()
    }
    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        (**self).predict(x, times, condition)
    }
    fn predict_variance(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<RawPrediction> {
        (**self).predict_variance(x, times, condition)
    }
}

/// The per-item times of a batch of `n`: `times` itself when it has `n` entries, its one
/// entry repeated otherwise. Errors for any other length and for non-finite times.
///
/// ```
/// assert_eq!(boomerang::core::denoiser::item_times(&[5.0], 3)?, vec![5.0; 3]);
/// assert!(boomerang::core::denoiser::item_times(&[1.0, 2.0], 3).is_err());
/// # Ok::<(), boomerang::Error>(())
/// ```
pub fn item_times(times: &[f64], n: usize) -> Result<Vec<f64>> {
    if let Some(bad) = times.iter().find(|t| !t.is_finite()) {
        return Err(Error::param("time", format!("must be finite, got {bad}")));
    }
    match times.len() {
        1 => Ok(vec![times[0]; n]),
        m if m == n => Ok(times.to_vec()),
        m => Err(Error::Shape(format!(
            "{m} times for a batch of {n}; give one for all items or one per item"
        ))),
    }
}

/// A denoiser made of a spec and a closure `(x, times, condition) -> prediction`.
///
/// ```
/// use boomerang::{Denoiser, DenoiserSpec, FnDenoiser, Parameterization, TimeInput, DataRange, Condition};
/// // A "network" that always predicts zero noise.
/// let d = FnDenoiser::new(
///     DenoiserSpec::new(Parameterization::Epsilon, TimeInput::ContinuousStep, DataRange::MinusOneToOne),
///     |x, _t, _c| Ok(ndarray::Array4::zeros(x.raw_dim())),
/// );
/// let x = ndarray::Array4::<f32>::ones((1, 3, 4, 4));
/// assert_eq!(d.predict(x.view(), &[10.0], &Condition::None)?.sum(), 0.0);
/// # Ok::<(), boomerang::Error>(())
/// ```
pub struct FnDenoiser<F> {
    spec: DenoiserSpec,
    f: F,
}

impl<F> FnDenoiser<F>
where
    F: Fn(ArrayView4<'_, f32>, &[f64], &Condition) -> Result<Array4<f32>>,
{
    /// Wrap a closure.
    pub fn new(spec: DenoiserSpec, f: F) -> Self {
        Self { spec, f }
    }
}

impl<F> Denoiser for FnDenoiser<F>
where
    F: Fn(ArrayView4<'_, f32>, &[f64], &Condition) -> Result<Array4<f32>>,
{
    fn spec(&self) -> &DenoiserSpec {
        &self.spec
    }
    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        (self.f)(x, times, condition)
    }
}
