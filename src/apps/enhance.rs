//! Perceptual resolution enhancement (PRE): upsample a low-resolution image to the model's
//! size with plain interpolation, then Boomerang it, so the model fills in plausible detail.
//!
//! - **Vanilla**: one Boomerang pass at `t` (the paper uses a fairly large `t`).
//! - **Cascaded**: `n` passes at a small `t`, each starting from the previous result; every
//!   intermediate is kept. Several small steps stay closer to the input than one large one
//!   (SDEdit's repeated edits).
//! - `k` **candidates** per input: independent chains, for choosing among.
//!
//! The noise of candidate `j` of input `i` at pass `p` comes from its own stream
//! `derive_key(keys[i], [j, p])` (see [`crate::apps::keys`]) of `seed`, so every result depends only
//! on `(seed, key, j, p)`, never on batch size, order or the other inputs.
//!
//! ```
//! use boomerang::analytic::GaussianDenoiser;
//! use boomerang::apps::enhance::{enhance, EnhanceOptions};
//! use boomerang::image_io::ResizeFilter;
//! use boomerang::schedule::DiscreteSchedule;
//! use boomerang::{Boomerang, Spacing, TimeSpec};
//!
//! let runner = Boomerang::builder(GaussianDenoiser::new(0.0, 0.5)?, DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
//!     .spacing(Spacing::Uniform(50))
//!     .build()?;
//! let low = ndarray::Array4::<f32>::from_elem((2, 3, 6, 6), 0.2);
//! let opts = EnhanceOptions { passes: 3, candidates: 2, ..EnhanceOptions::new(TimeSpec::fraction(0.1)) };
//! let out = enhance(&runner, low.view(), &[10, 11], (16, 16), &opts)?;
//! assert_eq!(out.upsampled.dim(), (2, 3, 16, 16));
//! assert_eq!(out.passes.len(), 3);
//! assert_eq!(out.passes[2].dim(), (4, 3, 16, 16)); // input-major: item i·k + j
//! assert!(out.candidate(2, 1, 0).is_some());
//! # Ok::<(), boomerang::Error>(())
//! ```

use ndarray::{s, Array4, ArrayView3, ArrayView4, Axis};

use crate::apps::keys::derive_key;
use crate::core::local::LocalSampler;
use crate::core::noise::NoiseStreams;
use crate::image_io::{resize, ResizeFilter};
use crate::schedule::TimeSpec;
use crate::{Error, Result};

/// Settings of an enhancement run.
#[derive(Debug, Clone, PartialEq)]
pub struct EnhanceOptions {
    /// Boomerang's `t` for every pass.
    pub t: TimeSpec,
    /// Number of passes: 1 is vanilla PRE, more is cascaded.
    pub passes: usize,
    /// Independent candidates per input.
    pub candidates: usize,
    /// Interpolation used to upsample.
    pub filter: ResizeFilter,
    /// Global seed of the noise streams.
    pub seed: u64,
    /// Largest number of images sent to the model at once (0: no limit). Results do not
    /// depend on it.
    pub batch_size: usize,
}

impl EnhanceOptions {
    /// One pass, one candidate, bicubic upsampling, seed 0, no batch limit.
    pub fn new(t: TimeSpec) -> Self {
        Self {
            t,
            passes: 1,
            candidates: 1,
            filter: ResizeFilter::Bicubic,
            seed: 0,
            batch_size: 0,
        }
    }
}

/// What an enhancement run returns.
#[derive(Debug, Clone)]
pub struct Enhancement {
    /// The interpolated inputs, `N×C×H×W`.
    pub upsampled: Array4<f32>,
    /// One batch per pass, `(N·k)×C×H×W`, candidate `j` of input `i` at item `i·k + j`.
    pub passes: Vec<Array4<f32>>,
    /// `k`.
    pub candidates: usize,
}

impl Enhancement {
    /// Candidate `j` of input `i` after pass `p` (from 0).
    pub fn candidate(&self, pass: usize, input: usize, j: usize) -> Option<ArrayView3<'_, f32>> {
        if j >= self.candidates {
            return None;
        }
        let batch = self.passes.get(pass)?;
        let idx = input.checked_mul(self.candidates)?.checked_add(j)?;
        (idx < batch.dim().0).then(|| batch.index_axis(Axis(0), idx))
    }

    /// The results of the last pass.
    pub fn last(&self) -> Option<&Array4<f32>> {
        self.passes.last()
    }
}

/// Upsample (or resample) every image of `low` to `height × width` with plain
/// interpolation; any scale factor works.
pub fn upsample(low: ArrayView4<'_, f32>, size: (usize, usize), filter: ResizeFilter) -> Result<Array4<f32>> {
    resize(low, size.0, size.1, filter)
}

/// The size to enhance to: the model's fixed size if it has one (and `scale`, when given,
/// must agree with it), else `scale ×` the input size rounded to whole pixels.
pub fn target_size(
    model_size: Option<(usize, usize)>,
    input: (usize, usize),
    scale: Option<f64>,
) -> Result<(usize, usize)> {
    if let Some(s) = scale {
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::param("scale", format!("must be positive, got {s}")));
        }
    }
    match (model_size, scale) {
        (Some(size), None) => Ok(size),
        (Some(size), Some(s)) => {
            let want = scaled(input, s)?;
            if want != size {
                return Err(Error::Incompatible(format!(
                    "scale {s} takes {}×{} to {}×{}, but the model works at {}×{}",
                    input.0, input.1, want.0, want.1, size.0, size.1
                )));
            }
            Ok(size)
        }
        (None, Some(s)) => scaled(input, s),
        (None, None) => Err(Error::param(
            "scale",
            "this model takes any size: give a scale factor or a target size",
        )),
    }
}

fn scaled(input: (usize, usize), s: f64) -> Result<(usize, usize)> {
    let h = (input.0 as f64 * s).round();
    let w = (input.1 as f64 * s).round();
    if h < 1.0 || w < 1.0 || h > 1e6 || w > 1e6 {
        return Err(Error::param("scale", format!("{s} gives a {h}×{w} image")));
    }
    Ok((h as usize, w as usize))
}

/// Enhance the batch `low` (`N×C×h×w`, in the model's data range) to `size` with any
/// [`LocalSampler`] (a [`crate::Boomerang`] runner, Stable Diffusion, ...): upsample, then
/// `passes` Boomerang passes for each of `candidates` chains. `keys` names each input (one
/// per item, e.g. [`crate::apps::keys::path_key`] of its file).
pub fn enhance<S: LocalSampler + ?Sized>(
    runner: &S,
    low: ArrayView4<'_, f32>,
    keys: &[u64],
    size: (usize, usize),
    options: &EnhanceOptions,
) -> Result<Enhancement> {
    enhance_with_progress(runner, low, keys, size, options, &mut |_, _| {})
}

/// [`enhance`], calling `progress(images_done, images_total)` after each model batch.
pub fn enhance_with_progress<S: LocalSampler + ?Sized>(
    runner: &S,
    low: ArrayView4<'_, f32>,
    keys: &[u64],
    size: (usize, usize),
    options: &EnhanceOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Enhancement> {
    let n = low.dim().0;
    if n == 0 {
        return Err(Error::InvalidInput("enhance: no input images".into()));
    }
    if keys.len() != n {
        return Err(Error::Shape(format!("enhance: {} keys for {n} images", keys.len())));
    }
    if options.passes == 0 {
        return Err(Error::param("passes", "need at least one pass"));
    }
    if options.candidates == 0 {
        return Err(Error::param("candidates", "need at least one candidate"));
    }
    // Refuse a bad t before any work.
    runner.start_time(options.t)?;
    let k = options.candidates;
    let upsampled = upsample(low, size, options.filter)?;
    let (_, c, h, w) = upsampled.dim();
    let mut current = Array4::<f32>::zeros((n * k, c, h, w));
    for i in 0..n {
        for j in 0..k {
            current
                .index_axis_mut(Axis(0), i * k + j)
                .assign(&upsampled.index_axis(Axis(0), i));
        }
    }
    let total = n * k * options.passes;
    let chunk = if options.batch_size == 0 {
        n * k
    } else {
        options.batch_size
    };
    let mut done = 0;
    let mut passes = Vec::with_capacity(options.passes);
    for p in 0..options.passes {
        let mut next = Array4::<f32>::zeros(current.raw_dim());
        let mut start = 0;
        while start < n * k {
            let end = (start + chunk).min(n * k);
            let stream_keys: Vec<u64> = (start..end)
                .map(|idx| derive_key(keys[idx / k], &[(idx % k) as u64, p as u64]))
                .collect();
            let mut noise = NoiseStreams::keyed(options.seed, &stream_keys);
            let out = runner.sample(current.slice(s![start..end, .., .., ..]), options.t, &mut noise)?;
            next.slice_mut(s![start..end, .., .., ..]).assign(&out);
            done += end - start;
            progress(done, total);
            start = end;
        }
        passes.push(next.clone());
        current = next;
    }
    Ok(Enhancement {
        upsampled,
        passes,
        candidates: k,
    })
}
