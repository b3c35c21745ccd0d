//! Data augmentation with Boomerang: `k` local samples per training image, at a fixed `t` or
//! at a `t` drawn (seeded) from a range, and the paper's training-time scheme: at each epoch
//! use the original or, with probability `p`, one of its Boomerang copies
//! ([`EpochAugmenter`]).
//!
//! On disk ([`AugmentJob`]) a class-per-folder dataset `in/<class>/<name>.<ext>` gives
//! `out/<class>/<name>_boom<k>.png` for `k = 0..copies` (deeper folders are mirrored the
//! same way), optionally with the originals copied alongside, so `out/` is a ready
//! `ImageFolder`-style training set. Names are built from path components
//! ([`crate::apps::paths::RelPath`]); every output name is planned, and collisions refused,
//! before anything is written; outputs are written without following links, and
//! `out/augment-manifest.jsonl` ([`AUGMENT_MANIFEST`]) records each file written with the
//! settings that made it, so that skipping existing outputs ([`Existing::Skip`]) keeps only
//! what a run with the same settings wrote.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::{Array3, ArrayView3, ArrayView4, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::apps::classes::{ClassFolders, FolderClasses};
use crate::apps::dataset::{format_time, list_images, load_for_model_with, stack, LoadedImage, SizePolicy};
use crate::apps::keys::{content_id, file_content_id};
use crate::apps::keys::{derive_key, path_key, unit_f64};
use crate::apps::limits::{check_batch_size, check_count, MAX_COPIES};
use crate::apps::paths::{
    check_separate, read_regular, visit_lines, JsonLog, OutputPlan, OutputState, OutputTree, RelPath,
};
use crate::core::denoiser::Condition;
use crate::core::noise::NoiseStreams;
use crate::core::pipeline::Pipeline;
use crate::image_io::{encode_image, ImageLimits, MAX_IMAGE_FILE_BYTES};
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
    /// The class label it is made with, when labels come per image.
    label: Option<i64>,
    image: ArrayView3<'a, f32>,
}

/// Run a list of units in model batches of at most `batch_size` (0: no limit), grouped by
/// shape, each item at its own `t` in one batch ([`Pipeline::sample_items`]); returns
/// samples in the order of `units`.
fn run_units<S: Pipeline + ?Sized>(
    runner: &S,
    units: &[Unit<'_>],
    seed: u64,
    batch_size: usize,
) -> Result<Vec<Array3<f32>>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<Vec<usize>, usize> = HashMap::new();
    for (i, u) in units.iter().enumerate() {
        let sig = u.image.shape().to_vec();
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
            let ts: Vec<TimeSpec> = chunk.iter().map(|&i| units[i].t).collect();
            let labels: Option<Vec<i64>> = chunk.iter().map(|&i| units[i].label).collect();
            let res = match labels {
                Some(labels) => runner.sample_conditioned(batch.view(), &ts, &Condition::Class(labels), &mut noise)?,
                None => runner.sample_items(batch.view(), &ts, &mut noise)?,
            };
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
pub fn local_samples<S: Pipeline + ?Sized>(
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
            runner.start_time(tc)?;
            units.push(Unit {
                item,
                copy,
                key: keys[item],
                t: tc,
                label: None,
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

/// Copies `copies` (a range of copy numbers) of one image keyed `key`, as [`local_samples`]
/// makes them (the same streams), in model batches of at most `batch_size`: a caller that
/// takes the copies of an image a batch at a time keeps only a batch in memory.
pub(crate) fn copies_of<S: Pipeline + ?Sized>(
    runner: &S,
    image: ArrayView3<'_, f32>,
    key: u64,
    copies: Range<usize>,
    t: &TimeChoice,
    seed: u64,
    batch_size: usize,
) -> Result<Vec<LocalSample>> {
    let mut units = Vec::with_capacity(copies.len());
    for copy in copies {
        let tc = t.pick(seed, key, copy);
        runner.start_time(tc)?;
        units.push(Unit {
            item: 0,
            copy,
            key,
            t: tc,
            label: None,
            image,
        });
    }
    let samples = run_units(runner, &units, seed, batch_size)?;
    Ok(units
        .iter()
        .zip(samples)
        .map(|(u, sample)| LocalSample {
            item: 0,
            copy: u.copy,
            t: u.t,
            sample,
        })
        .collect())
}

/// The file name of copy `copy` of the image at relative path `rel`:
/// `dir/name.ext` -> `dir/name_boom<copy>.png`, built from the path's components (the
/// folder part is kept as it is; only the file name changes).
pub fn augmented_name(rel: impl AsRef<Path>, copy: usize) -> PathBuf {
    let p = rel.as_ref();
    let mut name = p.file_stem().unwrap_or_default().to_os_string();
    name.push(format!("_boom{copy}.png"));
    p.with_file_name(name)
}

fn augmented_rel(rel: &RelPath, copy: usize) -> Result<RelPath> {
    rel.with_stem_suffix(&format!("_boom{copy}.png"))
}

/// The file in an augmentation's output folder that records what it wrote (JSON lines, one
/// [`AugmentEntry`] per file).
pub const AUGMENT_MANIFEST: &str = "augment-manifest.jsonl";

/// One line of [`AUGMENT_MANIFEST`]: a file an [`AugmentJob`] wrote, and the settings that
/// made it. Names are stored as in the anonymization manifest (text, plus the exact bytes
/// when not UTF-8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentEntry {
    /// The output's path relative to the output folder.
    pub output: String,
    /// Its exact bytes (components joined by `/`), when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<Vec<u8>>,
    /// The input's path relative to the input folder.
    pub input: String,
    /// Its exact bytes, when not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_bytes: Option<Vec<u8>>,
    /// The copy number; absent for an original copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<usize>,
    /// The `t` this copy was made at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<String>,
    /// The class label it was made with (labels from class folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
    /// The job's `t` setting ([`AugmentJob::describe_t`]).
    pub t_setting: String,
    /// The global seed.
    pub seed: u64,
    /// The model, as named by the caller.
    pub model: String,
    /// The size policy ([`SizePolicy::as_str`]).
    pub size_policy: String,
    /// Length of the file written.
    pub file_bytes: u64,
    /// Content hash of the file written ([`crate::apps::keys::content_id`]).
    pub file_hash: String,
    /// Whatever else the caller records (sampler, steps, ...).
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl AugmentEntry {
    /// The input's exact relative path.
    pub fn input_path(&self) -> Result<RelPath> {
        RelPath::from_manifest(&self.input, self.input_bytes.as_deref())
    }

    /// The output's exact relative path.
    pub fn output_path(&self) -> Result<RelPath> {
        RelPath::from_manifest(&self.output, self.output_bytes.as_deref())
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
    /// Copies per image, `1..=`[`MAX_COPIES`].
    pub copies: usize,
    /// `t` of each copy.
    pub t: TimeChoice,
    /// Global seed.
    pub seed: u64,
    /// Images per model batch, `1..=`[`crate::apps::limits::MAX_BATCH_SIZE`] (results do not
    /// depend on it); memory holds about this many inputs and copies at a time.
    pub batch_size: usize,
    /// Existing outputs.
    pub existing: Existing,
    /// Copy the original files (byte for byte) into the output too.
    pub copy_originals: bool,
    /// Images of the wrong size.
    pub size_policy: SizePolicy,
    /// Class labels from the images' class folders, for a pipeline loaded to take a label
    /// per image ([`crate::models::ClassLabels::PerImage`]); `None`: the pipeline's own.
    pub class_folders: Option<ClassFolders>,
    /// The largest images read.
    pub limits: ImageLimits,
    /// The model's name, recorded with every file written.
    pub model_name: String,
    /// Extra settings recorded with every file written (sampler, steps, ...); compared like
    /// the others when skipping existing outputs.
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// What an augmentation run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AugmentReport {
    /// Images found.
    pub images: usize,
    /// Copies written.
    pub written: usize,
    /// Copies skipped because they existed (written by a run with the same settings).
    pub existing: usize,
    /// Originals copied.
    pub originals: usize,
    /// The class labels used, when taken from class folders.
    pub classes: Option<FolderClasses>,
    /// `(input, reason)` of images that could not be used.
    pub failures: Vec<(String, String)>,
}

impl AugmentJob {
    /// Defaults: 1 copy, seed 0, batches of 8, refuse existing outputs, no originals, wrong
    /// sizes skipped, the default [`ImageLimits`], model name `"model"`.
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
            class_folders: None,
            limits: ImageLimits::default(),
            model_name: "model".into(),
            extra: BTreeMap::new(),
        }
    }

    /// The first setting in which a recorded file differs from this job, as `name: there,
    /// here`.
    fn differing_setting(&self, e: &AugmentEntry) -> Option<String> {
        let t = self.describe_t();
        if e.model != self.model_name {
            return Some(format!("model: {} there, {} now", e.model, self.model_name));
        }
        if e.t_setting != t {
            return Some(format!("t: {} there, {t} now", e.t_setting));
        }
        if e.seed != self.seed {
            return Some(format!("seed: {} there, {} now", e.seed, self.seed));
        }
        if e.size_policy != self.size_policy.as_str() {
            return Some(format!(
                "size policy: {} there, {} now",
                e.size_policy,
                self.size_policy.as_str()
            ));
        }
        let keys: std::collections::BTreeSet<&String> = e.extra.keys().chain(self.extra.keys()).collect();
        for k in keys {
            let (a, b) = (e.extra.get(k), self.extra.get(k));
            if a != b {
                let show = |v: Option<&serde_json::Value>| v.map_or("(none)".to_string(), |v| v.to_string());
                return Some(format!("{k}: {} there, {} now", show(a), show(b)));
            }
        }
        None
    }

    fn entry(
        &self,
        output: &RelPath,
        input: &RelPath,
        copy: Option<usize>,
        t: Option<TimeSpec>,
        label: Option<i64>,
        bytes: &[u8],
    ) -> AugmentEntry {
        let (output, output_bytes) = output.to_manifest();
        let (input, input_bytes) = input.to_manifest();
        let (file_bytes, file_hash) = content_id(bytes);
        AugmentEntry {
            output,
            output_bytes,
            input,
            input_bytes,
            copy,
            t: t.map(format_time),
            label,
            t_setting: self.describe_t(),
            seed: self.seed,
            model: self.model_name.clone(),
            size_policy: self.size_policy.as_str().to_string(),
            file_bytes,
            file_hash,
            extra: self.extra.clone(),
        }
    }

    /// Check the settings that need no model (the `t` range, counts, bounds); [`Self::run`]
    /// checks them too.
    pub fn validate(&self) -> Result<()> {
        self.t.validate()?;
        check_count("copies", self.copies, 1, MAX_COPIES)?;
        check_batch_size(self.batch_size)
    }

    /// Run it; `progress(copies_done, copies_total)` at the start and after each batch. With
    /// [`class_folders`](Self::class_folders), each image's copies are made with its folder's
    /// label ([`Pipeline::sample_conditioned`]). Every check (names,
    /// collisions, links in the output tree, existing outputs and the settings that made
    /// them) is made before anything is written.
    pub fn run<S: Pipeline + ?Sized>(
        &self,
        runner: &S,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<AugmentReport> {
        self.validate()?;
        if let TimeChoice::Fixed(t) = self.t {
            runner.start_time(t)?;
        } else if let TimeChoice::Uniform { low, high } = self.t {
            runner.start_time(TimeSpec::Fraction(low))?;
            runner.start_time(TimeSpec::Fraction(high))?;
        }
        check_separate(&self.input, &self.output)?;
        let list = list_images(&self.input)?;
        let classes = match &self.class_folders {
            Some(rule) => Some(FolderClasses::new(rule, &list.images)?),
            None => None,
        };
        let tree = OutputTree::new(&self.output);
        let mut report = AugmentReport {
            images: list.images.len(),
            classes: classes.clone(),
            ..AugmentReport::default()
        };
        // Every output name, checked before any work.
        let mut plan = OutputPlan::new();
        let mut originals: HashMap<RelPath, &RelPath> = HashMap::new();
        for rel in &list.images {
            for k in 0..self.copies {
                plan.add(augmented_rel(rel, k)?, rel)?;
            }
            if self.copy_originals {
                plan.add(rel.clone(), rel)?;
                originals.insert(rel.clone(), rel);
            }
        }
        let mut existing = Vec::new();
        for name in plan.outputs() {
            if tree.state(name)? == OutputState::File {
                existing.push(name.clone());
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
        let manifest_path = self.output.join(AUGMENT_MANIFEST);
        let mut keep: HashSet<RelPath> = HashSet::new();
        if self.existing == Existing::Skip && !existing.is_empty() {
            // Keep only what a run with these settings recorded, unchanged since.
            // The last line of an output is its current one.
            let mut recorded: HashMap<RelPath, AugmentEntry> = HashMap::new();
            visit_augment_manifest(&manifest_path, &mut |e| {
                if let Ok(out) = e.output_path() {
                    recorded.insert(out, e);
                }
            })?;
            // Copies made with other settings (originals do not depend on them).
            let mut conflicts: Vec<String> = recorded
                .values()
                .filter(|e| e.copy.is_some())
                .filter_map(|e| {
                    self.differing_setting(e).or_else(|| {
                        let input = e.input_path().ok()?;
                        let now = classes.as_ref().and_then(|c| c.label_of(&input).ok());
                        (now != e.label).then(|| {
                            let show = |l: Option<i64>| l.map_or("(none)".to_string(), |l| l.to_string());
                            format!("class label of {input}: {} there, {} now", show(e.label), show(now))
                        })
                    })
                })
                .collect();
            conflicts.sort();
            if let Some(what) = conflicts.first() {
                return Err(Error::InvalidInput(format!(
                    "the output folder {} holds copies made with other settings ({what}); nothing was \
                     written. Skip existing outputs only with the same settings, overwrite them, or choose \
                     another output folder",
                    self.output.display()
                )));
            }
            for name in &existing {
                let path = tree.path(name);
                let ok = match originals.get(name) {
                    Some(rel) => {
                        let want = read_regular(&self.input.join(rel), MAX_IMAGE_FILE_BYTES)?;
                        read_regular(&path, MAX_IMAGE_FILE_BYTES).is_ok_and(|have| have == want)
                    }
                    None => recorded.get(name).is_some_and(|e| {
                        file_content_id(&path, MAX_IMAGE_FILE_BYTES) == Some((e.file_bytes, e.file_hash.clone()))
                    }),
                };
                if !ok {
                    return Err(Error::InvalidInput(format!(
                        "{} exists but was not written by an augmentation with these settings (or has \
                         changed since); nothing was written. Remove it, overwrite it, or choose another \
                         output folder",
                        path.display()
                    )));
                }
                keep.insert(name.clone());
            }
        }
        tree.create_root()?;
        let mut manifest = JsonLog::open(&manifest_path)?;
        let model = runner.input();
        let total = list.images.len() * self.copies;
        let mut done = 0;
        progress(0, total);
        for chunk in list.images.chunks(self.batch_size) {
            let loaded: Vec<Result<LoadedImage>> = chunk
                .par_iter()
                .map(|rel| load_for_model_with(&self.input.join(rel), &model, self.size_policy, &self.limits))
                .collect();
            let mut units = Vec::new();
            let mut names = Vec::new();
            for (rel, res) in chunk.iter().zip(&loaded) {
                let img = match res {
                    Ok(img) => img,
                    Err(e) => {
                        report.failures.push((rel.to_string(), e.to_string()));
                        continue;
                    }
                };
                if self.copy_originals && !keep.contains(rel) {
                    let bytes = read_regular(&self.input.join(rel), MAX_IMAGE_FILE_BYTES)?;
                    tree.write(rel, &bytes)?;
                    manifest.append(&self.entry(rel, rel, None, None, None, &bytes))?;
                    report.originals += 1;
                }
                let key = path_key(rel);
                let label = match &classes {
                    Some(c) => Some(c.label_of(rel)?),
                    None => None,
                };
                for copy in 0..self.copies {
                    let name = augmented_rel(rel, copy)?;
                    if keep.contains(&name) {
                        report.existing += 1;
                        continue;
                    }
                    let t = self.t.pick(self.seed, key, copy);
                    units.push(Unit {
                        item: 0,
                        copy,
                        key,
                        t,
                        label,
                        image: img.data.view(),
                    });
                    names.push((name, rel));
                }
            }
            // At most a batch of copies in memory at a time.
            for (units, names) in units.chunks(self.batch_size).zip(names.chunks(self.batch_size)) {
                let samples = run_units(runner, units, self.seed, self.batch_size)?;
                let range = model.range;
                let written: Vec<Result<AugmentEntry>> = names
                    .par_iter()
                    .zip(samples.par_iter())
                    .zip(units.par_iter())
                    .map(|(((name, rel), sample), unit)| {
                        let bytes = encode_image(sample.view(), range, image::ImageFormat::Png)?;
                        tree.write(name, &bytes)?;
                        Ok(self.entry(name, rel, Some(unit.copy), Some(unit.t), unit.label, &bytes))
                    })
                    .collect();
                for w in written {
                    manifest.append(&w?)?;
                    report.written += 1;
                }
            }
            manifest.flush()?;
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

/// Read [`AUGMENT_MANIFEST`] lines; lines that do not parse are ignored, a missing file is
/// empty, a link is refused.
fn visit_augment_manifest(path: &Path, visit: &mut dyn FnMut(AugmentEntry)) -> Result<()> {
    visit_lines(path, &mut |line| {
        if let Ok(entry) = serde_json::from_slice::<AugmentEntry>(line) {
            visit(entry);
        }
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
    pub fn path(
        &self,
        epoch: u64,
        rel: impl AsRef<Path>,
        copies: usize,
        originals: &Path,
        augmented: &Path,
    ) -> PathBuf {
        let rel = rel.as_ref();
        match self.pick(epoch, path_key(rel), copies) {
            Pick::Original => originals.join(rel),
            Pick::Copy(k) => augmented.join(augmented_name(rel, k)),
        }
    }
}
