//! Data augmentation with Boomerang: `k` local samples per training image, at a fixed `t` or
//! at a `t` drawn (seeded) from a range, and the paper's training-time scheme: at each epoch
//! use the original or, with probability `p`, one of its Boomerang copies
//! ([`EpochAugmenter`]).
//!
//! On disk ([`AugmentJob`]) a class-per-folder dataset `in/<class>/<name>.<ext>` gives
//! `out/<class>/<name>_boom<k>.png` for `k = 0..copies` (deeper folders are mirrored the
//! same way), optionally with the originals copied alongside, so `out/` is a ready
//! `ImageFolder`-style training set.
//!
//! Seeding: copy `k` of the image keyed `key` ([`path_key`] of its relative path on disk)
//! draws its noise from stream `derive_key(key, [k])` of the seed, and, for a range, its `t`
//! from `derive_key(key, [k, seed, 1])`: results never depend on batching or order.
//!
//! ```
//! use boomerang::apps::augment::{local_samples, TimeChoice, EpochAugmenter, Pick};
//! use boomerang::analytic::GaussianDenoiser;
//! use boomerang::schedule::DiscreteSchedule;
//! use boomerang::{Boomerang, Spacing};
//!
//! let runner = Boomerang::builder(GaussianDenoiser::new(0.0, 0.5)?, DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
//!     .spacing(Spacing::Uniform(50))
//!     .build()?;
//! let x = ndarray::Array4::<f32>::zeros((2, 3, 8, 8));
//! let t = TimeChoice::Uniform { low: 0.2, high: 0.4 };
//! let samples = local_samples(&runner, x.view(), &[1, 2], 3, &t, 7, 0)?;
//! assert_eq!(samples.len(), 6);
//!
//! let aug = EpochAugmenter::new(7, 0.5)?;
//! let pick = aug.pick(0, 1, 3);
//! assert_eq!(pick, aug.pick(0, 1, 3)); // deterministic in (seed, epoch, item)
//! # Ok::<(), boomerang::Error>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3, ArrayView4, Axis};
use rayon::prelude::*;

use crate::apps::dataset::{check_separate, format_time, list_images, load_for_model, stack, LoadedImage, SizePolicy};
use crate::apps::keys::{canonical_relative, derive_key, path_key, unit_f64};
use crate::core::local::LocalSampler;
use crate::core::noise::NoiseStreams;
use crate::image_io::save_image;
use crate::schedule::TimeSpec;
use crate::{Error, Result};

/// Which `t` each copy uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeChoice {
    /// The same `t` for every copy.
    Fixed(TimeSpec),
    /// A fraction `t/T` drawn uniformly from `[low, high]` for each copy (seeded by the
    /// copy's key).
    Uniform {
        /// Smallest fraction, in `(0, 1]`.
        low: f64,
        /// Largest fraction, in `[low, 1]`.
        high: f64,
    },
}

impl TimeChoice {
    /// Check the range.
    pub fn validate(&self) -> Result<()> {
        if let TimeChoice::Uniform { low, high } = *self {
            if !(low > 0.0 && low <= high && high <= 1.0) {
                return Err(Error::param(
                    "t range",
                    format!("need 0 < low <= high <= 1, got {low}..{high}"),
                ));
            }
        }
        Ok(())
    }

    /// The `t` of copy `copy` of the item keyed `key`.
    pub fn pick(&self, seed: u64, key: u64, copy: usize) -> TimeSpec {
        match *self {
            TimeChoice::Fixed(t) => t,
            TimeChoice::Uniform { low, high } => {
                let u = unit_f64(derive_key(key, &[copy as u64, seed, 1]));
                TimeSpec::Fraction((low + u * (high - low)).clamp(low, high))
            }
        }
    }
}

/// One local sample.
#[derive(Debug, Clone)]
pub struct LocalSample {
    /// Index of the source image in the batch.
    pub item: usize,
    /// Which copy, `0..copies`.
    pub copy: usize,
    /// The `t` it was made at.
    pub t: TimeSpec,
    /// The sample, `C×H×W`.
    pub sample: Array3<f32>,
}

struct Unit<'a> {
    item: usize,
    copy: usize,
    key: u64,
    t: TimeSpec,
    start: f64,
    image: ArrayView3<'a, f32>,
}

/// Run a list of units in model batches of at most `batch_size` (0: no limit), grouped by
/// starting time and shape; returns samples in the order of `units`.
fn run_units<S: LocalSampler + ?Sized>(
    runner: &S,
    units: &[Unit<'_>],
    seed: u64,
    batch_size: usize,
) -> Result<Vec<Array3<f32>>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<(u64, Vec<usize>), usize> = HashMap::new();
    for (i, u) in units.iter().enumerate() {
        let sig = (u.start.to_bits(), u.image.shape().to_vec());
        match index.get(&sig) {
            Some(&g) => groups[g].push(i),
            None => {
                index.insert(sig, groups.len());
                groups.push(vec![i]);
            }
        }
    }
    let mut out: Vec<Option<Array3<f32>>> = vec![None; units.len()];
    for group in groups {
        let limit = if batch_size == 0 { group.len() } else { batch_size };
        for chunk in group.chunks(limit) {
            let views: Vec<_> = chunk.iter().map(|&i| units[i].image).collect();
            let batch = stack(&views)?;
            let keys: Vec<u64> = chunk
                .iter()
                .map(|&i| derive_key(units[i].key, &[units[i].copy as u64]))
                .collect();
            let mut noise = NoiseStreams::keyed(seed, &keys);
            let res = runner.sample(batch.view(), units[chunk[0]].t, &mut noise)?;
            for (&i, s) in chunk.iter().zip(res.axis_iter(Axis(0))) {
                out[i] = Some(s.to_owned());
            }
        }
    }
    out.into_iter()
        .map(|o| o.ok_or_else(|| Error::InvalidInput("internal: a sample was not computed".into())))
        .collect()
}

/// `copies` local samples of each image of `images` (`N×C×H×W`, in the model's range),
/// item-major (`item·copies + copy`). `keys` names the images (one each); `batch_size`
/// bounds the model batch (0: no limit) and does not change the results.
pub fn local_samples<S: LocalSampler + ?Sized>(
    runner: &S,
    images: ArrayView4<'_, f32>,
    keys: &[u64],
    copies: usize,
    t: &TimeChoice,
    seed: u64,
    batch_size: usize,
) -> Result<Vec<LocalSample>> {
    t.validate()?;
    let n = images.dim().0;
    if keys.len() != n {
        return Err(Error::Shape(format!("{} keys for {n} images", keys.len())));
    }
    if copies == 0 {
        return Err(Error::param("copies", "need at least one copy"));
    }
    let mut units = Vec::with_capacity(n * copies);
    for (item, image) in images.axis_iter(Axis(0)).enumerate() {
        for copy in 0..copies {
            let tc = t.pick(seed, keys[item], copy);
            let start = runner.start_time(tc)?;
            units.push(Unit {
                item,
                copy,
                key: keys[item],
                t: tc,
                start,
                image,
            });
        }
    }
    let samples = run_units(runner, &units, seed, batch_size)?;
    Ok(units
        .iter()
        .zip(samples)
        .map(|(u, sample)| LocalSample {
            item: u.item,
            copy: u.copy,
            t: u.t,
            sample,
        })
        .collect())
}

/// The file name of copy `copy` of the image at relative path `rel`:
/// `dir/name.ext` -> `dir/name_boom<copy>.png`.
pub fn augmented_name(rel: &str, copy: usize) -> String {
    let p = Path::new(rel);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = format!("{stem}_boom{copy}.png");
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => canonical_relative(parent.join(name)),
        _ => name,
    }
}

/// What to do when an output file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse to start (nothing is written).
    #[default]
    Error,
    /// Keep it and skip that copy.
    Skip,
    /// Replace it.
    Overwrite,
}

/// A folder augmentation job; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentJob {
    /// Input folder (class-per-folder), read only.
    pub input: PathBuf,
    /// Output folder.
    pub output: PathBuf,
    /// Copies per image.
    pub copies: usize,
    /// `t` of each copy.
    pub t: TimeChoice,
    /// Global seed.
    pub seed: u64,
    /// Source images per model batch (results do not depend on it).
    pub batch_size: usize,
    /// Existing outputs.
    pub existing: Existing,
    /// Copy the original files (byte for byte) into the output too.
    pub copy_originals: bool,
    /// Images of the wrong size.
    pub size_policy: SizePolicy,
}

/// What an augmentation run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AugmentReport {
    /// Images found.
    pub images: usize,
    /// Copies written.
    pub written: usize,
    /// Copies skipped because they existed.
    pub existing: usize,
    /// Originals copied.
    pub originals: usize,
    /// `(input, reason)` of images that could not be used.
    pub failures: Vec<(String, String)>,
}

impl AugmentJob {
    /// Defaults: 1 copy, seed 0, batches of 8, refuse existing outputs, no originals, wrong
    /// sizes skipped.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>, t: TimeChoice) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            copies: 1,
            t,
            seed: 0,
            batch_size: 8,
            existing: Existing::Error,
            copy_originals: false,
            size_policy: SizePolicy::Skip,
        }
    }

    /// Run it; `progress(copies_done, copies_total)` after each batch.
    pub fn run<S: LocalSampler + ?Sized>(
        &self,
        runner: &S,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<AugmentReport> {
        self.t.validate()?;
        if self.copies == 0 {
            return Err(Error::param("copies", "need at least one copy"));
        }
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", "must be at least 1"));
        }
        if let TimeChoice::Fixed(t) = self.t {
            runner.start_time(t)?;
        } else if let TimeChoice::Uniform { low, high } = self.t {
            runner.start_time(TimeSpec::Fraction(low))?;
            runner.start_time(TimeSpec::Fraction(high))?;
        }
        check_separate(&self.input, &self.output)?;
        let list = list_images(&self.input)?;
        let mut report = AugmentReport {
            images: list.images.len(),
            ..AugmentReport::default()
        };
        // Every output name, checked before any work.
        let mut owner: HashMap<String, &str> = HashMap::new();
        let mut existing = Vec::new();
        for rel in &list.images {
            let mut names: Vec<String> = (0..self.copies).map(|k| augmented_name(rel, k)).collect();
            if self.copy_originals {
                names.push(rel.clone());
            }
            for name in names {
                if let Some(other) = owner.insert(name.clone(), rel) {
                    return Err(Error::InvalidInput(format!(
                        "inputs {other} and {rel} would both write {name}; rename one of them"
                    )));
                }
                if self.output.join(&name).exists() {
                    existing.push(name);
                }
            }
        }
        if self.existing == Existing::Error && !existing.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{} output file(s) exist already in {} (first: {}); nothing was written. Use the \
                 overwrite or skip-existing option",
                existing.len(),
                self.output.display(),
                existing[0]
            )));
        }
        std::fs::create_dir_all(&self.output).map_err(|e| Error::io(&self.output, e))?;
        let model = runner.input();
        let skip = |name: &str| self.existing == Existing::Skip && self.output.join(name).exists();
        let total = list.images.len() * self.copies;
        let mut done = 0;
        for chunk in list.images.chunks(self.batch_size) {
            let loaded: Vec<Result<LoadedImage>> = chunk
                .par_iter()
                .map(|rel| load_for_model(&self.input.join(rel), &model, self.size_policy))
                .collect();
            let mut units = Vec::new();
            let mut names = Vec::new();
            for (rel, res) in chunk.iter().zip(&loaded) {
                let img = match res {
                    Ok(img) => img,
                    Err(e) => {
                        report.failures.push((rel.clone(), e.to_string()));
                        continue;
                    }
                };
                if self.copy_originals && !skip(rel) {
                    copy_atomic(&self.input.join(rel), &self.output.join(rel))?;
                    report.originals += 1;
                }
                let key = path_key(rel);
                for copy in 0..self.copies {
                    let name = augmented_name(rel, copy);
                    if skip(&name) {
                        report.existing += 1;
                        continue;
                    }
                    let t = self.t.pick(self.seed, key, copy);
                    let start = runner.start_time(t)?;
                    units.push(Unit {
                        item: 0,
                        copy,
                        key,
                        t,
                        start,
                        image: img.data.view(),
                    });
                    names.push(name);
                }
            }
            let samples = run_units(runner, &units, self.seed, 0)?;
            let range = model.range;
            let written: Vec<Result<()>> = names
                .par_iter()
                .zip(samples.par_iter())
                .map(|(name, sample)| {
                    let path = self.output.join(name);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                    }
                    save_image(&path, sample.view(), range)
                })
                .collect();
            for w in written {
                w?;
                report.written += 1;
            }
            done += chunk.len() * self.copies;
            progress(done.min(total), total);
        }
        Ok(report)
    }

    /// A one-line description of the `t` setting (for logs).
    pub fn describe_t(&self) -> String {
        match self.t {
            TimeChoice::Fixed(t) => format_time(t),
            TimeChoice::Uniform { low, high } => format!("U[{low}, {high}]"),
        }
    }
}

/// Copy a file under a temporary name, then rename it into place.
fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let tmp = crate::image_io::temp_path(to);
    std::fs::copy(from, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(from, e)
    })?;
    std::fs::rename(&tmp, to).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(to, e)
    })
}

/// What an item is served as at one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The original image.
    Original,
    /// Boomerang copy number `k`.
    Copy(usize),
}

/// The paper's augmentation scheme as a seeded helper: at every epoch each item is served as
/// one of its Boomerang copies with probability `p` (the copy chosen uniformly), else as the
/// original. The choice depends only on `(seed, epoch, item)`, so it is the same on every
/// worker and after a restart.
///
/// ```
/// use boomerang::apps::augment::{EpochAugmenter, Pick};
/// let aug = EpochAugmenter::new(1, 0.3)?;
/// let copies = (0..10_000u64).filter(|&i| aug.pick(5, i, 4) != Pick::Original).count();
/// assert!((copies as f64 / 10_000.0 - 0.3).abs() < 0.02);
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochAugmenter {
    seed: u64,
    p: f64,
}

impl EpochAugmenter {
    /// Probability `p ∈ [0, 1]` of serving a copy.
    pub fn new(seed: u64, p: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::param("p", format!("must lie in [0, 1], got {p}")));
        }
        Ok(Self { seed, p })
    }

    /// The probability of serving a copy.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// What item `item` (an index, or [`path_key`] of its file) with `copies` Boomerang copies
    /// is served as at `epoch`. With no copies it is always the original.
    pub fn pick(&self, epoch: u64, item: u64, copies: usize) -> Pick {
        if copies == 0 {
            return Pick::Original;
        }
        let base = derive_key(self.seed, &[epoch, item]);
        if unit_f64(derive_key(base, &[0])) < self.p {
            Pick::Copy((derive_key(base, &[1]) % copies as u64) as usize)
        } else {
            Pick::Original
        }
    }

    /// For a dataset on disk: the file to serve at `epoch` for the image at relative path
    /// `rel`, given the folder of originals and the folder an [`AugmentJob`] wrote.
    pub fn path(&self, epoch: u64, rel: &str, copies: usize, originals: &Path, augmented: &Path) -> PathBuf {
        match self.pick(epoch, path_key(rel), copies) {
            Pick::Original => originals.join(rel),
            Pick::Copy(k) => augmented.join(augmented_name(rel, k)),
        }
    }
}
