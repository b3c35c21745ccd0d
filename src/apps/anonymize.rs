//! Anonymize a dataset: replace every image of a folder tree by a Boomerang local sample,
//! written to a second tree with the same layout. Built to be left running for days:
//!
//! - **Inputs are never modified**; an output folder inside the input (or containing it) is
//!   refused ([`crate::apps::paths::check_separate`]), and so is a symbolic link anywhere in
//!   the output tree (an output subfolder linked into the input would otherwise be written
//!   through). Outputs are named from the input's path components
//!   ([`crate::apps::paths::RelPath`]), written without following links, and never outside
//!   the output folder.
//! - **Deterministic per file**: image `rel` uses noise stream
//!   [`path_key`]`(rel)` of the global seed, so its result is the same whatever the batch
//!   size, order, thread count or sharding.
//! - **Resumable, and only on its own work**: an output counts as done only when a manifest
//!   line of this output folder, made with the same settings (model, `t`, seed, format, size
//!   policy, sampler settings), records it and the file still has the recorded length and
//!   content hash. An output that exists without such a line (a run killed between writing
//!   the image and its line) is recomputed and recorded only if it is byte for byte what this
//!   run makes; any other file is left alone and reported (an output tree pre-filled with
//!   copies of the originals is never recorded as anonymized). A folder made with other
//!   settings is refused, naming the setting, unless [`AnonymizeJob::overwrite`] is set. Every
//!   image is written to a temporary file and renamed, so a killed run leaves no truncated
//!   image (stale temporary files of this shard are removed when a run starts).
//! - **Never the original**: a result whose pixels equal the input's is not written; it is
//!   recorded as skipped.
//! - **Sharded**: [`Shard`] `i/n` takes the images whose key is `i` modulo `n`; by default
//!   the shard comes from the environment ([`Shard::from_env`]: Slurm job arrays, Kubernetes
//!   Indexed Jobs).
//! - **A manifest** (JSON lines, one [`ManifestEntry`] per image) records input and output
//!   paths, `t`, seed and key, the model, format and size policy, the written file's length
//!   and content hash, and the distances to the original (MSE, PSNR, SSIM on the `[0, 1]`
//!   scale, computed on the file as written and decoded again, so a JPEG's loss is counted).
//!   Names are stored exactly: a name that is not UTF-8 is written as text with `\xNN`
//!   escapes and, in `input_bytes` / `output_bytes`, as its bytes (components joined by `/`),
//!   which [`ManifestEntry::input_path`] reads back. Unsharded runs write
//!   `manifest.jsonl` in the output folder, shard `i/n` writes
//!   `manifest.shard-<i>-of-<n>.jsonl`, so concurrent shards never share a file.
//! - **Odd inputs never stop the run**: grayscale, alpha and 16-bit images are converted
//!   (see [`crate::apps::dataset`]); undecodable files, and wrong sizes under
//!   [`SizePolicy::Skip`] or above [`ImageLimits`], are recorded as `"status": "skipped"`
//!   with the reason (an image too large is refused from its header, before decoding).
//!
//! ```no_run
//! use boomerang::analytic::GaussianDenoiser;
//! use boomerang::apps::anonymize::AnonymizeJob;
//! use boomerang::schedule::DiscreteSchedule;
//! use boomerang::{Boomerang, TimeSpec};
//!
//! let runner = Boomerang::builder(GaussianDenoiser::new(0.0, 0.5)?, DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
//!     .build()?;
//! let job = AnonymizeJob::new("faces/", "faces-anon/", TimeSpec::fraction(0.3));
//! let report = job.run(&runner, &mut |p| eprintln!("{}/{}", p.done, p.total))?;
//! println!("{} written, {} skipped", report.written, report.failed);
//! # Ok::<(), boomerang::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use ndarray::{ArrayView3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::apps::classes::{ClassFolders, FolderClasses};
use crate::apps::dataset::{
    convert_for_model, format_time, list_images, load_for_model, load_for_model_with, stack, LoadedImage, ModelInput,
    SizePolicy,
};
use crate::apps::keys::path_key;
use crate::apps::keys::{content_id, file_content_id};
use crate::apps::limits::check_batch_size;
use crate::apps::metrics::{distances, Distances};
use crate::apps::paths::{
    check_separate, read_regular, temp_target, visit_lines, JsonLog, OutputPlan, OutputState, OutputTree, RelPath,
};
use crate::core::denoiser::Condition;
use crate::core::noise::NoiseStreams;
use crate::core::pipeline::Pipeline;
use crate::image_io::{decode_bytes, encode_image, output_format, ImageLimits, MAX_IMAGE_FILE_BYTES};
use crate::schedule::TimeSpec;
use crate::{Error, Result};

/// The environment variable giving the number of shards of a Kubernetes Indexed Job (set it
/// to the Job's `completions`); the index comes from `JOB_COMPLETION_INDEX`.
pub const SHARD_COUNT_ENV: &str = "BOOMERANG_SHARD_COUNT";

/// One part of a dataset split between independent runs: images whose key is `index`
/// modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0..count`.
    pub index: usize,
    /// Number of parts.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self::whole()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Shard::parse(s)
    }
}

impl Shard {
    /// The whole dataset (`0/1`).
    pub fn whole() -> Self {
        Self { index: 0, count: 1 }
    }

    /// `index/count` with `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::param(
                "shard",
                format!("need 0 <= index < count, got {index}/{count}"),
            ));
        }
        Ok(Self { index, count })
    }

    /// Parse `"i/n"` (e.g. `"3/8"`).
    pub fn parse(s: &str) -> Result<Self> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| Error::param("shard", format!("expected INDEX/COUNT like 0/4, got `{s}`")))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| Error::param("shard", format!("expected INDEX/COUNT like 0/4, got `{s}`")))
        };
        Self::new(parse(i)?, parse(n)?)
    }

    /// The shard given by the process environment, if any (see [`Shard::from_vars`]).
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The shard given by environment variables read through `var`:
    /// - Slurm job arrays: `SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_MIN` (default 0),
    ///   `SLURM_ARRAY_TASK_STEP` (default 1) and `SLURM_ARRAY_TASK_COUNT` (or, without it,
    ///   `SLURM_ARRAY_TASK_MAX`): index `(ID − MIN)/STEP`, count `COUNT` or
    ///   `(MAX − MIN)/STEP + 1`. So `--array=0-7` and `--array=1-8` both give shards `i/8`.
    /// - Kubernetes Indexed Jobs: `JOB_COMPLETION_INDEX` with the count in
    ///   [`SHARD_COUNT_ENV`] (`BOOMERANG_SHARD_COUNT`, set it to the Job's `completions`);
    ///   without it this is an error, not a silent run over everything.
    ///
    /// `None` when none of these is set.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let num = |name: &str| -> Result<Option<usize>> {
            match var(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    Error::param(
                        "shard",
                        format!("environment variable {name}={v} is not a whole number"),
                    )
                }),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            if id < min || (id - min) % step != 0 {
                return Err(Error::param(
                    "shard",
                    format!("SLURM_ARRAY_TASK_ID={id} does not fit MIN={min}, STEP={step}"),
                ));
            }
            let count = match (num("SLURM_ARRAY_TASK_COUNT")?, num("SLURM_ARRAY_TASK_MAX")?) {
                (Some(c), _) => c,
                (None, Some(max)) if max >= min => (max - min) / step + 1,
                _ => {
                    return Err(Error::param(
                        "shard",
                        "SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor a valid \
                         SLURM_ARRAY_TASK_MAX is; pass --shard INDEX/COUNT",
                    ))
                }
            };
            return Self::new((id - min) / step, count).map(Some);
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let count = num(SHARD_COUNT_ENV)?.ok_or_else(|| {
                Error::param(
                    "shard",
                    format!(
                        "JOB_COMPLETION_INDEX={index} is set (Kubernetes Indexed Job) but {SHARD_COUNT_ENV} \
                         is not; set it to the Job's completions, or pass --shard INDEX/COUNT"
                    ),
                )
            })?;
            return Self::new(index, count).map(Some);
        }
        Ok(None)
    }

    /// Whether the item with this key belongs to the shard.
    pub fn contains(&self, key: u64) -> bool {
        self.count <= 1 || key % self.count as u64 == self.index as u64
    }

    /// The manifest file name of this shard.
    pub fn manifest_name(&self) -> String {
        if self.count <= 1 {
            "manifest.jsonl".to_string()
        } else {
            format!("manifest.shard-{}-of-{}.jsonl", self.index, self.count)
        }
    }
}

/// The format outputs are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The input's own file name and format (JPEG inputs give JPEG outputs).
    #[default]
    Same,
    /// PNG, lossless: `a.jpg` becomes `a.png` (two inputs that would share an output name
    /// are refused before any work).
    Png,
}

impl OutputFormat {
    /// The name recorded in manifests: `"same"` or `"png"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Same => "same",
            OutputFormat::Png => "png",
        }
    }
}

impl SizePolicy {
    /// The name recorded in manifests: `"skip"` or `"resize"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SizePolicy::Skip => "skip",
            SizePolicy::Resize => "resize",
        }
    }
}

/// Whether an image was written or skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryStatus {
    /// Anonymized and written.
    Ok,
    /// Not processed; `error` says why.
    Skipped,
}

/// One line of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The input's path relative to the input folder (components joined by `/`; bytes that
    /// are not UTF-8 appear as `\xNN`, the exact name is then in `input_bytes`).
    pub input: String,
    /// The exact bytes of the input's relative path (components joined by `/`), present only
    /// when it is not UTF-8. Read names back with [`ManifestEntry::input_path`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_bytes: Option<Vec<u8>>,
    /// The output's path relative to the output folder (same form as `input`).
    pub output: String,
    /// The exact bytes of the output's relative path, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<Vec<u8>>,
    /// Written or skipped.
    pub status: EntryStatus,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `t` as given (`"0.3"`: fraction t/T, `"300"`: step).
    pub t: String,
    /// The schedule's own time where the noise was added (the training step for discrete
    /// schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t_native: Option<f64>,
    /// The global seed.
    pub seed: u64,
    /// The item's stream key, [`path_key`] of `input`, as 16 hex digits.
    pub key: String,
    /// The class label it was made with (labels from class folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<i64>,
    /// The model, as named by the caller.
    pub model: String,
    /// The shard that wrote the line (`i/n`).
    pub shard: String,
    /// The output format ([`OutputFormat::as_str`]); absent in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The size policy ([`SizePolicy::as_str`]); absent in manifests of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_policy: Option<String>,
    /// Length in bytes of the file written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// Content hash of the file written ([`crate::apps::keys::content_id`]: 16 hex digits,
    /// not cryptographic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_hash: Option<String>,
    /// Distances of the output (as written, decoded again) to the (converted) input.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub distances: Option<Distances>,
    /// Conversions made to the input (see [`crate::apps::dataset`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub converted: Vec<String>,
    /// Whatever else the caller records (sampler, steps, ...).
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ManifestEntry {
    /// The input's exact relative path.
    pub fn input_path(&self) -> Result<RelPath> {
        RelPath::from_manifest(&self.input, self.input_bytes.as_deref())
    }

    /// The output's exact relative path.
    pub fn output_path(&self) -> Result<RelPath> {
        RelPath::from_manifest(&self.output, self.output_bytes.as_deref())
    }
}

/// Read a manifest; lines that do not parse (e.g. a last line cut by a kill) are ignored. A
/// missing file is an empty manifest; a symbolic link or special file is refused.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>> {
    let mut out = Vec::new();
    visit_manifest(path, &mut |e| out.push(e))?;
    Ok(out)
}

/// Call `visit` on every entry of a manifest, streaming (see [`read_manifest`]).
fn visit_manifest(path: &Path, visit: &mut dyn FnMut(ManifestEntry)) -> Result<()> {
    visit_lines(path, &mut |line| {
        if let Ok(entry) = serde_json::from_slice::<ManifestEntry>(line) {
            visit(entry);
        }
    })
}

/// Whether `name` is a manifest file name of [`Shard::manifest_name`].
fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
    let Some(n) = name.to_str() else { return false };
    n == "manifest.jsonl"
        || n.strip_prefix("manifest.shard-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|r| r.split_once("-of-"))
            .is_some_and(|(i, c)| {
                !i.is_empty() && !c.is_empty() && (i.bytes().chain(c.bytes())).all(|b| b.is_ascii_digit())
            })
}

/// Progress of a run, reported after each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Images of this shard handled so far (written, found done, or skipped).
    pub done: usize,
    /// Images in this shard.
    pub total: usize,
    /// Images newly written by this run so far.
    pub written: usize,
    /// Images skipped because of an error so far.
    pub failed: usize,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// Images in the input folder.
    pub found: usize,
    /// Images in this shard.
    pub in_shard: usize,
    /// Images anonymized and written by this run.
    pub written: usize,
    /// Outputs already present and recorded (a resumed run's earlier work), checked against
    /// their recorded length and content hash.
    pub already_done: usize,
    /// Outputs present but missing from the manifest (a run killed between writing the
    /// image and its manifest line) that are byte for byte what this run makes: their lines
    /// were written now.
    pub recovered: usize,
    /// Images skipped because of an error (each has a manifest line), including outputs
    /// that exist but were not made by a run with these settings (left alone).
    pub failed: usize,
    /// `(input, reason)` of each skipped image.
    pub failures: Vec<(String, String)>,
    /// Non-image files in the input (not copied).
    pub ignored: usize,
    /// Stale temporary files of this shard removed at the start.
    pub temp_removed: usize,
    /// The class labels used, when taken from class folders.
    pub classes: Option<FolderClasses>,
    /// The manifest written.
    pub manifest: PathBuf,
}

/// A dataset anonymization job; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct AnonymizeJob {
    /// The input folder (read only).
    pub input: PathBuf,
    /// The output folder (created if missing).
    pub output: PathBuf,
    /// Boomerang's `t`.
    pub t: TimeSpec,
    /// Global seed.
    pub seed: u64,
    /// Images per model batch, `1..=`[`crate::apps::limits::MAX_BATCH_SIZE`] (results do not
    /// depend on it).
    pub batch_size: usize,
    /// Which part of the dataset this run handles.
    pub shard: Shard,
    /// Recompute and replace outputs that exist, whatever made them (default: resume, i.e.
    /// keep what a run with the same settings recorded). The manifest is append-only: a
    /// recomputed image gets a new line, and the last line for an input is the current one.
    pub overwrite: bool,
    /// Output format.
    pub format: OutputFormat,
    /// What to do with images of the wrong size.
    pub size_policy: SizePolicy,
    /// Class labels from the images' class folders, for a pipeline loaded to take a label
    /// per image ([`crate::models::ClassLabels::PerImage`]); `None`: the pipeline's own.
    pub class_folders: Option<ClassFolders>,
    /// The largest images read.
    pub limits: ImageLimits,
    /// The model's name for the manifest.
    pub model_name: String,
    /// Extra fields for every manifest line.
    pub extra: BTreeMap<String, serde_json::Value>,
}

struct Item {
    input: RelPath,
    output: RelPath,
    key: u64,
    label: Option<i64>,
    existing: OutputState,
}

/// What is known of an output from the manifests.
struct Recorded {
    output: RelPath,
    /// Length and content hash, when the line was made with this job's settings.
    file: Option<(u64, String)>,
    /// Whether the line is in this shard's manifest.
    own: bool,
}

enum Outcome {
    Written(ManifestEntry),
    Recovered(ManifestEntry),
    Refused(String),
}

impl AnonymizeJob {
    /// A job with seed 0, batches of 8, the whole dataset, resume semantics, same format,
    /// wrong sizes skipped, the default [`ImageLimits`], model name `"model"`.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>, t: TimeSpec) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            t,
            seed: 0,
            batch_size: 8,
            shard: Shard::whole(),
            overwrite: false,
            format: OutputFormat::Same,
            size_policy: SizePolicy::Skip,
            class_folders: None,
            limits: ImageLimits::default(),
            model_name: "model".into(),
            extra: BTreeMap::new(),
        }
    }

    fn output_name(&self, input: &RelPath) -> Result<RelPath> {
        match self.format {
            OutputFormat::Same => Ok(input.clone()),
            OutputFormat::Png => input.with_extension("png"),
        }
    }

    /// The first setting in which `entry` differs from this job, as `name: there, here`.
    fn differing_setting(&self, e: &ManifestEntry) -> Option<String> {
        let t = format_time(self.t);
        if e.model != self.model_name {
            return Some(format!("model: {} there, {} now", e.model, self.model_name));
        }
        if e.t != t {
            return Some(format!("t: {} there, {t} now", e.t));
        }
        if e.seed != self.seed {
            return Some(format!("seed: {} there, {} now", e.seed, self.seed));
        }
        if let Some(f) = &e.format {
            if f != self.format.as_str() {
                return Some(format!("format: {f} there, {} now", self.format.as_str()));
            }
        }
        if let Some(p) = &e.size_policy {
            if p != self.size_policy.as_str() {
                return Some(format!("size policy: {p} there, {} now", self.size_policy.as_str()));
            }
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

    /// Run the job with `runner` (any [`Pipeline`]: a [`crate::Boomerang`] runner, Stable
    /// Diffusion, ...); `progress` is called after each batch. Per-image problems
    /// are recorded and skipped; only problems with the job itself (bad folders, a bad `t`,
    /// a folder made with other settings, a link in the output tree, an unwritable manifest,
    /// a failing model) are errors, and every check of the job is made before anything is
    /// written.
    pub fn run<S: Pipeline + ?Sized>(&self, runner: &S, progress: &mut dyn FnMut(&Progress)) -> Result<Report> {
        check_batch_size(self.batch_size)?;
        let t_native = Some(runner.start_time(self.t)?);
        check_separate(&self.input, &self.output)?;
        let list = list_images(&self.input)?;
        let tree = OutputTree::new(&self.output);

        // Labels over the whole dataset, so that every shard numbers the folders alike.
        let classes = match &self.class_folders {
            Some(rule) => Some(FolderClasses::new(rule, &list.images)?),
            None => None,
        };
        let label_of = |rel: &RelPath| -> Result<Option<i64>> { classes.as_ref().map(|c| c.label_of(rel)).transpose() };
        // Every output name, over the whole dataset, before any work.
        let mut plan = OutputPlan::new();
        let mut items = Vec::new();
        for rel in &list.images {
            let key = path_key(rel);
            let out = self.output_name(rel)?;
            plan.add(out.clone(), rel)?;
            if self.shard.contains(key) {
                let existing = tree.state(&out)?;
                items.push(Item {
                    input: rel.clone(),
                    output: out,
                    key,
                    label: label_of(rel)?,
                    existing,
                });
            }
        }
        let mut report = Report {
            found: list.images.len(),
            in_shard: items.len(),
            ignored: list.ignored.len(),
            manifest: self.output.join(self.shard.manifest_name()),
            classes: classes.clone(),
            ..Report::default()
        };

        // What the manifests of this folder (every shard's) record.
        let own_name = std::ffi::OsString::from(self.shard.manifest_name());
        let mut recorded: HashMap<RelPath, Vec<Recorded>> = HashMap::new();
        let mut known_failures: HashSet<(RelPath, String)> = HashSet::new();
        // The last ok line of an input is its current one: its settings are the folder's.
        let mut current: HashMap<RelPath, Option<String>> = HashMap::new();
        if self.output.is_dir() {
            let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&self.output)
                .map_err(|e| Error::io(&self.output, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .filter(|n| is_manifest_name(n))
                .collect();
            names.sort();
            for name in names {
                let own = name == own_name;
                visit_manifest(&self.output.join(&name), &mut |e| {
                    let Ok(input) = e.input_path() else { return };
                    match e.status {
                        EntryStatus::Ok => {
                            let differs = self.differing_setting(&e).or_else(|| {
                                let now = label_of(&input).ok().flatten();
                                (now != e.label).then(|| {
                                    let show = |l: Option<i64>| l.map_or("(none)".to_string(), |l| l.to_string());
                                    format!("class label of {input}: {} there, {} now", show(e.label), show(now))
                                })
                            });
                            let Ok(output) = e.output_path() else { return };
                            // Only a record of these settings vouches for a file.
                            let file = if differs.is_none() {
                                e.file_bytes.zip(e.file_hash.clone())
                            } else {
                                None
                            };
                            current.insert(input.clone(), differs);
                            recorded.entry(input).or_default().push(Recorded { output, file, own });
                        }
                        EntryStatus::Skipped => {
                            if own {
                                known_failures.insert((input, e.error.clone().unwrap_or_default()));
                            }
                        }
                    }
                })?;
            }
        }
        let mut conflicts: Vec<&String> = current.values().flatten().collect();
        conflicts.sort();
        if let (Some(what), false) = (conflicts.first(), self.overwrite) {
            return Err(Error::InvalidInput(format!(
                "the output folder {} holds results made with other settings ({what}); nothing was \
                 written. Resume with the same settings, overwrite them (--overwrite), or choose another \
                 output folder",
                self.output.display()
            )));
        }

        tree.create_root()?;
        let mut manifest = JsonLog::open(&report.manifest)?;
        report.temp_removed = self.remove_stale_temps(&items)?;
        let model = runner.input();

        let mut queue = Vec::new();
        for item in &items {
            let done = !self.overwrite
                && item.existing == OutputState::File
                && recorded.get(&item.input).is_some_and(|recs| {
                    let now = file_content_id(&tree.path(&item.output), MAX_IMAGE_FILE_BYTES);
                    recs.iter()
                        .any(|r| r.output == item.output && r.file.is_some() && r.file == now)
                })
                // A recorded output that is a copy of its input is never done.
                && !same_bytes(&self.input.join(&item.input), &tree.path(&item.output));
            if done {
                report.already_done += 1;
            } else {
                queue.push(item);
            }
        }
        let total = items.len();
        let mut done = total - queue.len();
        progress(&Progress {
            done,
            total,
            written: 0,
            failed: report.failed,
        });

        for chunk in queue.chunks(self.batch_size) {
            // Decode in parallel; every failure becomes a manifest line.
            let loaded: Vec<Result<LoadedImage>> = chunk
                .par_iter()
                .map(|it| load_for_model_with(&self.input.join(&it.input), &model, self.size_policy, &self.limits))
                .collect();
            let mut ready: Vec<(&Item, LoadedImage)> = Vec::new();
            let mut failed: Vec<(&Item, String)> = Vec::new();
            for (item, res) in chunk.iter().zip(loaded) {
                match res {
                    Ok(img) => ready.push((item, img)),
                    Err(e) => failed.push((item, e.to_string())),
                }
            }
            // Images of one size share a model batch.
            let mut groups: Vec<Vec<usize>> = Vec::new();
            for (i, (_, img)) in ready.iter().enumerate() {
                match groups.iter_mut().find(|g| ready[g[0]].1.data.dim() == img.data.dim()) {
                    Some(g) => g.push(i),
                    None => groups.push(vec![i]),
                }
            }
            for group in groups {
                let views: Vec<ArrayView3<'_, f32>> = group.iter().map(|&i| ready[i].1.data.view()).collect();
                let batch = stack(&views)?;
                let keys: Vec<u64> = group.iter().map(|&i| ready[i].0.key).collect();
                let mut noise = NoiseStreams::keyed(self.seed, &keys);
                let labels: Option<Vec<i64>> = group.iter().map(|&i| ready[i].0.label).collect();
                let out = match labels {
                    Some(labels) => runner.sample_conditioned(
                        batch.view(),
                        &vec![self.t; group.len()],
                        &Condition::Class(labels),
                        &mut noise,
                    )?,
                    None => runner.sample(batch.view(), self.t, &mut noise)?,
                };
                let results: Vec<Result<Outcome>> = group
                    .par_iter()
                    .zip(out.axis_iter(Axis(0)).collect::<Vec<_>>())
                    .map(|(&i, sample)| {
                        let (item, img) = &ready[i];
                        self.finish(&tree, item, img, sample, &model, t_native)
                    })
                    .collect();
                for (&i, r) in group.iter().zip(results) {
                    let item = ready[i].0;
                    let recorded_here = |entry: &ManifestEntry| {
                        recorded.get(&item.input).is_some_and(|recs| {
                            recs.iter().any(|r| {
                                r.own
                                    && r.output == item.output
                                    && r.file == entry.file_bytes.zip(entry.file_hash.clone())
                            })
                        })
                    };
                    match r? {
                        Outcome::Written(entry) => {
                            // A recorded output that had gone missing gets no second line.
                            if !recorded_here(&entry) {
                                manifest.append(&entry)?;
                            }
                            report.written += 1;
                        }
                        Outcome::Recovered(entry) => {
                            if !recorded_here(&entry) {
                                manifest.append(&entry)?;
                            }
                            report.recovered += 1;
                        }
                        Outcome::Refused(msg) => failed.push((item, msg)),
                    }
                }
            }
            for (item, msg) in failed {
                if !known_failures.contains(&(item.input.clone(), msg.clone())) {
                    manifest.append(&self.entry(
                        item,
                        EntryStatus::Skipped,
                        Some(msg.clone()),
                        t_native,
                        None,
                        vec![],
                        None,
                    ))?;
                }
                report.failures.push((item.input.to_string(), msg));
                report.failed += 1;
            }
            manifest.flush()?;
            done += chunk.len();
            progress(&Progress {
                done,
                total,
                written: report.written,
                failed: report.failed,
            });
        }
        manifest.flush()?;
        Ok(report)
    }

    /// Encode one result, measure it as written, and write it unless that would replace a
    /// file this run did not make or publish the original.
    fn finish(
        &self,
        tree: &OutputTree,
        item: &Item,
        img: &LoadedImage,
        sample: ArrayView3<'_, f32>,
        model: &ModelInput,
        t_native: Option<f64>,
    ) -> Result<Outcome> {
        let path = tree.path(&item.output);
        let bytes = encode_image(sample, model.range, output_format(&path)?).map_err(|e| match e {
            Error::Image { message, .. } => Error::Image {
                path: path.clone(),
                message,
            },
            other => other,
        })?;
        // Measure what the file holds: the encoded bytes decoded again (a JPEG's loss counts).
        let (_, h, w) = img.data.dim();
        let decoded = decode_bytes(&path, &bytes, &self.limits)?;
        let output_model = ModelInput {
            size: Some((h, w)),
            ..*model
        };
        let written = convert_for_model(&path, &decoded, &output_model, SizePolicy::Skip)?;
        if written.data == img.data {
            return Ok(Outcome::Refused(format!(
                "the result equals the input image (nothing was anonymized at t = {}); not written",
                format_time(self.t)
            )));
        }
        let d = distances(written.data.view(), img.data.view(), model.range)?;
        let entry = self.entry(
            item,
            EntryStatus::Ok,
            None,
            t_native,
            Some(d),
            img.converted.clone(),
            Some(content_id(&bytes)),
        );
        if item.existing == OutputState::File && !self.overwrite {
            // An output without a (valid) record: ours only if it is exactly what we make.
            let same = read_regular(&path, MAX_IMAGE_FILE_BYTES).is_ok_and(|old| old == bytes);
            return Ok(if same {
                Outcome::Recovered(entry)
            } else {
                Outcome::Refused(format!(
                    "{} exists but is not what this run makes for it (not recorded as written with these \
                     settings); it was left alone: remove it, or replace it with the overwrite option",
                    item.output
                ))
            });
        }
        tree.write(&item.output, &bytes)?;
        Ok(Outcome::Written(entry))
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &self,
        item: &Item,
        status: EntryStatus,
        error: Option<String>,
        t_native: Option<f64>,
        distances: Option<Distances>,
        converted: Vec<String>,
        file: Option<(u64, String)>,
    ) -> ManifestEntry {
        let (input, input_bytes) = item.input.to_manifest();
        let (output, output_bytes) = item.output.to_manifest();
        let (file_bytes, file_hash) = file.unzip();
        ManifestEntry {
            input,
            input_bytes,
            output,
            output_bytes,
            status,
            error,
            t: format_time(self.t),
            t_native,
            seed: self.seed,
            key: format!("{:016x}", item.key),
            label: item.label,
            model: self.model_name.clone(),
            shard: self.shard.to_string(),
            format: Some(self.format.as_str().to_string()),
            size_policy: Some(self.size_policy.as_str().to_string()),
            file_bytes,
            file_hash,
            distances,
            converted,
            extra: self.extra.clone(),
        }
    }

    /// Remove `.NAME.PID.tmp.EXT` files left by killed runs, for outputs of this shard only
    /// (a concurrent shard's files in progress are left alone). Links are never followed.
    fn remove_stale_temps(&self, items: &[Item]) -> Result<usize> {
        let mine: HashSet<&RelPath> = items.iter().map(|i| &i.output).collect();
        let mut removed = 0;
        let mut stack: Vec<Vec<std::ffi::OsString>> = vec![Vec::new()];
        while let Some(rel_dir) = stack.pop() {
            let dir = rel_dir.iter().fold(self.output.clone(), |p, c| p.join(c));
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(_) => continue,
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    let mut sub = rel_dir.clone();
                    sub.push(name);
                    stack.push(sub);
                } else if let Some(target) = temp_target(&name) {
                    let mut parts = rel_dir.clone();
                    parts.push(target);
                    let Ok(target_rel) = RelPath::from_components(parts) else {
                        continue;
                    };
                    if mine.contains(&target_rel) && std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// Whether two regular files hold the same bytes (lengths compared first).
fn same_bytes(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(ma), Ok(mb)) if ma.is_file() && mb.is_file() && ma.len() == mb.len() => {
            match (
                read_regular(a, MAX_IMAGE_FILE_BYTES),
                read_regular(b, MAX_IMAGE_FILE_BYTES),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Anonymize one in-memory batch (`N×C×H×W`, in the model's range) with the same seeding as
/// [`AnonymizeJob`]: item `i` uses stream `keys[i]` of `seed`.
pub fn anonymize_batch<S: Pipeline + ?Sized>(
    runner: &S,
    images: ndarray::ArrayView4<'_, f32>,
    keys: &[u64],
    t: TimeSpec,
    seed: u64,
) -> Result<ndarray::Array4<f32>> {
    if keys.len() != images.dim().0 {
        return Err(Error::Shape(format!(
            "{} keys for {} images",
            keys.len(),
            images.dim().0
        )));
    }
    let mut noise = NoiseStreams::keyed(seed, keys);
    runner.sample(images, t, &mut noise)
}

/// Distances of a written output to its input, as the manifest computes them (test and
/// audit helper): both files are decoded for `model`.
pub fn file_distances(input: &Path, output: &Path, model: &ModelInput, policy: SizePolicy) -> Result<Distances> {
    let a = load_for_model(input, model, policy)?;
    let (_, h, w) = a.data.dim();
    let b = load_for_model(
        output,
        &ModelInput {
            size: Some((h, w)),
            ..*model
        },
        SizePolicy::Skip,
    )?;
    distances(b.data.view(), a.data.view(), model.range)
}
