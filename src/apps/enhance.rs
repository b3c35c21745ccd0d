//! Perceptual resolution enhancement (PRE): upsample a low-resolution image to the model's
//! size with plain interpolation, then Boomerang it, so the model fills in plausible detail.
//!
//! - **Vanilla**: one Boomerang pass at `t` (the paper uses a fairly large `t`).
//! - **Cascaded**: `n` passes at a small `t`, each starting from the previous result; every
//!   intermediate is kept. Several small steps stay closer to the input than one large one
//!   (SDEdit's repeated edits).
//! - `k` **candidates** per input: independent chains, for choosing among.
//!
//! On disk, [`EnhanceJob`] enhances the images named on a command line into a folder:
//! `OUT/<name>_up.png` (plain interpolation) and `OUT/<name>_c<J>_p<P>.png` for candidate `J`
//! after pass `P` (from 1), with the order of every job here: inputs (outputs kept out of
//! them) → planned names (collisions refused) → checks (headers, target sizes against
//! [`ImageLimits`], existing outputs, links) → results written, a batch of candidates at a
//! time through all passes (memory holds a batch, whatever `k` and the number of passes).
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

use std::path::PathBuf;

use ndarray::{s, Array4, ArrayView3, ArrayView4, Axis};

use crate::apps::dataset::collect_inputs;
use crate::apps::dataset::{format_time, load_for_model_with, stack, ModelInput, SizePolicy};
use crate::apps::keys::{derive_key, path_key};
use crate::apps::limits::{check_batch_size, check_count, MAX_COPIES, MAX_PASSES, MAX_SCALE};
use crate::apps::paths::{OutputPlan, OutputState, OutputTree, RelPath};
use crate::core::noise::NoiseStreams;
use crate::core::pipeline::Pipeline;
use crate::image_io::{encode_image, read_header, resize, ImageLimits, ResizeFilter};
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
/// must agree with it), else `scale ×` the input size rounded to whole pixels. A scale must
/// be finite, positive and at most [`MAX_SCALE`].
pub fn target_size(
    model_size: Option<(usize, usize)>,
    input: (usize, usize),
    scale: Option<f64>,
) -> Result<(usize, usize)> {
    if let Some(s) = scale {
        if !(s.is_finite() && s > 0.0) {
            return Err(Error::param("scale", format!("must be positive, got {s}")));
        }
        if s > MAX_SCALE {
            return Err(Error::param(
                "scale",
                format!("at most {MAX_SCALE} is accepted, got {s} (enhance in several runs for more)"),
            ));
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
            "this model takes any size, so the output size must come from a scale factor \
             (EnhanceJob::scale; --scale on the command line)",
        )),
    }
}

fn scaled(input: (usize, usize), s: f64) -> Result<(usize, usize)> {
    let h = (input.0 as f64 * s).round();
    let w = (input.1 as f64 * s).round();
    if h < 1.0 || w < 1.0 || h > u32::MAX as f64 || w > u32::MAX as f64 {
        return Err(Error::param("scale", format!("{s} gives a {h}×{w} image")));
    }
    Ok((h as usize, w as usize))
}

/// Enhance the batch `low` (`N×C×h×w`, in the model's data range) to `size` with any
/// [`Pipeline`] (a [`crate::Boomerang`] runner, Stable Diffusion, ...): upsample, then
/// `passes` Boomerang passes for each of `candidates` chains. `keys` names each input (one
/// per item, e.g. [`crate::apps::keys::path_key`] of its file).
pub fn enhance<S: Pipeline + ?Sized>(
    runner: &S,
    low: ArrayView4<'_, f32>,
    keys: &[u64],
    size: (usize, usize),
    options: &EnhanceOptions,
) -> Result<Enhancement> {
    enhance_with_progress(runner, low, keys, size, options, &mut |_, _| {})
}

/// [`enhance`], calling `progress(images_done, images_total)` after each model batch.
pub fn enhance_with_progress<S: Pipeline + ?Sized>(
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

/// A size rounded to the nearest multiple of `m` on each side (at least `m`).
pub fn round_to_multiple(size: (usize, usize), m: usize) -> (usize, usize) {
    let m = m.max(1);
    let r = |v: usize| (((v + m / 2) / m).max(1)) * m;
    (r(size.0), r(size.1))
}

/// A folder enhancement job; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct EnhanceJob {
    /// Low-resolution images or folders of them (searched recursively).
    pub inputs: Vec<PathBuf>,
    /// The output folder (created if missing; never inside an input folder).
    pub output: PathBuf,
    /// Boomerang's `t` for every pass.
    pub t: TimeSpec,
    /// Passes, `1..=`[`MAX_PASSES`]: 1 is vanilla, more is cascaded.
    pub passes: usize,
    /// Candidates per input, `1..=`[`MAX_COPIES`].
    pub candidates: usize,
    /// Upsampling interpolation.
    pub filter: ResizeFilter,
    /// Scale factor; models with a fixed size use theirs (see [`target_size`]).
    pub scale: Option<f64>,
    /// Global seed.
    pub seed: u64,
    /// Images per model batch, `1..=`[`crate::apps::limits::MAX_BATCH_SIZE`] (results do not
    /// depend on it).
    pub batch_size: usize,
    /// Replace existing outputs (default: refuse to start when any exists).
    pub overwrite: bool,
    /// The largest images read and made.
    pub limits: ImageLimits,
}

/// What an enhancement run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EnhanceReport {
    /// Input images.
    pub images: usize,
    /// Files written (interpolated images and candidates).
    pub written: usize,
}

/// `dir/name.ext` -> `dir/name_up.png`.
pub fn upsampled_name(rel: &RelPath) -> Result<RelPath> {
    rel.with_stem_suffix("_up.png")
}

/// `dir/name.ext` -> `dir/name_c<j>_p<pass>.png` (`pass` from 1).
pub fn candidate_name(rel: &RelPath, j: usize, pass: usize) -> Result<RelPath> {
    rel.with_stem_suffix(&format!("_c{j}_p{pass}.png"))
}

impl EnhanceJob {
    /// One pass, one candidate, bicubic, no scale, seed 0, batches of 8, no overwriting, the
    /// default [`ImageLimits`].
    pub fn new(inputs: Vec<PathBuf>, output: impl Into<PathBuf>, t: TimeSpec) -> Self {
        Self {
            inputs,
            output: output.into(),
            t,
            passes: 1,
            candidates: 1,
            filter: ResizeFilter::Bicubic,
            scale: None,
            seed: 0,
            batch_size: 8,
            overwrite: false,
            limits: ImageLimits::default(),
        }
    }

    /// Check the settings that need no model (counts, bounds, the scale); [`Self::run`]
    /// checks them too.
    pub fn validate(&self) -> Result<()> {
        check_count("passes", self.passes, 1, MAX_PASSES)?;
        check_count("candidates", self.candidates, 1, MAX_COPIES)?;
        check_batch_size(self.batch_size)?;
        if self.scale.is_some() {
            target_size(None, (1, 1), self.scale).map(|_| ())?;
        }
        Ok(())
    }

    /// Run it; `progress(done, total)` counts candidate passes (called at the start and after
    /// each pass of a batch). Every check is made before
    /// anything is written.
    pub fn run<S: Pipeline + ?Sized>(
        &self,
        runner: &S,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<EnhanceReport> {
        self.validate()?;
        runner.start_time(self.t)?;
        let inputs = collect_inputs(&self.inputs, &self.output)?;
        let spec = runner.input();
        // Inputs are low-resolution: any size is taken, then upsampled to the model's.
        let model = ModelInput {
            size: None,
            multiple: 1,
            ..spec
        };
        let mut plan = OutputPlan::new();
        let mut sizes = Vec::with_capacity(inputs.len());
        for i in &inputs {
            plan.add(upsampled_name(&i.rel)?, i.path.display())?;
            for j in 0..self.candidates {
                for p in 1..=self.passes {
                    plan.add(candidate_name(&i.rel, j, p)?, i.path.display())?;
                }
            }
            let header = read_header(&i.path)?;
            let (h, w) = (header.height as usize, header.width as usize);
            self.limits
                .check(&format!("image {}", i.path.display()), w as u64, h as u64)?;
            let size = round_to_multiple(target_size(spec.size, (h, w), self.scale)?, spec.multiple);
            self.limits.check(
                &format!("the enhanced image of {}", i.path.display()),
                size.1 as u64,
                size.0 as u64,
            )?;
            sizes.push(size);
        }
        let tree = OutputTree::new(&self.output);
        let mut existing = Vec::new();
        for name in plan.outputs() {
            if tree.state(name)? == OutputState::File {
                existing.push(name);
            }
        }
        if !self.overwrite {
            if let Some(first) = existing.first() {
                return Err(Error::InvalidInput(format!(
                    "{} output file(s) exist already in {} (first: {first}); nothing was written. Pass \
                     --overwrite to replace them or choose another output folder",
                    existing.len(),
                    self.output.display()
                )));
            }
        }
        tree.create_root()?;

        let k = self.candidates;
        let total = inputs.len() * k * self.passes;
        let mut done = 0;
        progress(0, total);
        let mut report = EnhanceReport {
            images: inputs.len(),
            ..EnhanceReport::default()
        };
        for (i, &size) in inputs.iter().zip(&sizes) {
            let img = load_for_model_with(&i.path, &model, SizePolicy::Skip, &self.limits)?;
            let x = stack(&[img.data.view()])?;
            let up = upsample(x.view(), size, self.filter)?;
            let key = path_key(&i.rel);
            let encode = |a: ArrayView3<'_, f32>| encode_image(a, spec.range, image::ImageFormat::Png);
            tree.write(&upsampled_name(&i.rel)?, &encode(up.index_axis(Axis(0), 0))?)?;
            report.written += 1;
            let (_, c, h, w) = up.dim();
            // A batch of candidates at a time, through every pass.
            let mut j0 = 0;
            while j0 < k {
                let j1 = (j0 + self.batch_size).min(k);
                let mut current = Array4::<f32>::zeros((j1 - j0, c, h, w));
                for mut item in current.axis_iter_mut(Axis(0)) {
                    item.assign(&up.index_axis(Axis(0), 0));
                }
                for p in 0..self.passes {
                    let keys: Vec<u64> = (j0..j1).map(|j| derive_key(key, &[j as u64, p as u64])).collect();
                    let mut noise = NoiseStreams::keyed(self.seed, &keys);
                    current = runner.sample(current.view(), self.t, &mut noise)?;
                    for (n, j) in (j0..j1).enumerate() {
                        let bytes = encode(current.index_axis(Axis(0), n))?;
                        tree.write(&candidate_name(&i.rel, j, p + 1)?, &bytes)?;
                        report.written += 1;
                    }
                    done += j1 - j0;
                    progress(done, total);
                }
                j0 = j1;
            }
        }
        Ok(report)
    }

    /// A one-line description of the `t` setting (for logs).
    pub fn describe_t(&self) -> String {
        format_time(self.t)
    }
}
