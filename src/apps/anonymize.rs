//! Anonymize a dataset: replace every image of a folder tree by a Boomerang local sample,
//! written to a second tree with the same layout. Built to be left running for days:
//!
//! - **Inputs are never modified**; an output folder inside the input (or containing it) is
//!   refused ([`crate::apps::dataset::check_separate`]).
//! - **Deterministic per file**: image `rel` uses noise stream
//!   [`path_key`]`(rel)` of the global seed, so its result is the same whatever the batch
//!   size, order, thread count or sharding.
//! - **Resumable**: outputs that exist are skipped; every image is written to a temporary
//!   file and renamed, so a killed run leaves no truncated image (stale temporary files of
//!   this shard are removed when a run starts).
//! - **Sharded**: [`Shard`] `i/n` takes the images whose key is `i` modulo `n`; by default
//!   the shard comes from the environment ([`Shard::from_env`]: Slurm job arrays, Kubernetes
//!   Indexed Jobs).
//! - **A manifest** (JSON lines, one [`ManifestEntry`] per image) records input and output
//!   paths, `t`, seed and key, the model, and the distances to the original (MSE, PSNR, SSIM
//!   on the `[0, 1]` scale, computed on the 8-bit image as written). Unsharded runs write
//!   `manifest.jsonl` in the output folder, shard `i/n` writes
//!   `manifest.shard-<i>-of-<n>.jsonl`, so concurrent shards never share a file.
//! - **Odd inputs never stop the run**: grayscale, alpha and 16-bit images are converted
//!   (see [`crate::apps::dataset`]); undecodable files, and wrong sizes under
//!   [`SizePolicy::Skip`], are recorded as `"status": "skipped"` with the reason.
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
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ndarray::{ArrayView3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::apps::dataset::{
    check_separate, format_time, list_images, load_for_model, quantize, stack, temp_target, LoadedImage, ModelInput,
    SizePolicy,
};
use crate::apps::keys::path_key;
use crate::apps::metrics::{distances, Distances};
use crate::core::local::LocalSampler;
use crate::core::noise::NoiseStreams;
use crate::image_io::save_image;
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
    /// The input's path relative to the input folder (`/`-separated).
    pub input: String,
    /// The output's path relative to the output folder.
    pub output: String,
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
    /// The model, as named by the caller.
    pub model: String,
    /// The shard that wrote the line (`i/n`).
    pub shard: String,
    /// Distances of the output to the (converted) input.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub distances: Option<Distances>,
    /// Conversions made to the input (see [`crate::apps::dataset`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub converted: Vec<String>,
    /// Whatever else the caller records (sampler, steps, ...).
    #[serde(default, flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Read a manifest; lines that do not parse (e.g. a last line cut by a kill) are ignored.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if let Ok(entry) = serde_json::from_str::<ManifestEntry>(&line) {
            out.push(entry);
        }
    }
    Ok(out)
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
    /// Outputs already present and recorded (a resumed run's earlier work).
    pub already_done: usize,
    /// Outputs present but missing from the manifest (a run killed between writing the
    /// image and its manifest line): their lines were written now.
    pub recovered: usize,
    /// Images skipped because of an error (each has a manifest line).
    pub failed: usize,
    /// `(input, reason)` of each skipped image.
    pub failures: Vec<(String, String)>,
    /// Non-image files in the input (not copied).
    pub ignored: usize,
    /// Stale temporary files of this shard removed at the start.
    pub temp_removed: usize,
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
    /// Images per model batch (results do not depend on it).
    pub batch_size: usize,
    /// Which part of the dataset this run handles.
    pub shard: Shard,
    /// Recompute and replace outputs that exist (default: skip them, i.e. resume). The
    /// manifest is append-only: a recomputed image gets a new line, and the last line for an
    /// input is the current one.
    pub overwrite: bool,
    /// Output format.
    pub format: OutputFormat,
    /// What to do with images of the wrong size.
    pub size_policy: SizePolicy,
    /// The model's name for the manifest.
    pub model_name: String,
    /// Extra fields for every manifest line.
    pub extra: BTreeMap<String, serde_json::Value>,
}

struct Item {
    input: String,
    output: String,
    key: u64,
}

impl AnonymizeJob {
    /// A job with seed 0, batches of 8, the whole dataset, resume semantics, same format,
    /// wrong sizes skipped, model name `"model"`.
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
            model_name: "model".into(),
            extra: BTreeMap::new(),
        }
    }

    fn output_name(&self, input: &str) -> String {
        match self.format {
            OutputFormat::Same => input.to_string(),
            OutputFormat::Png => {
                let p = Path::new(input).with_extension("png");
                crate::apps::keys::canonical_relative(p)
            }
        }
    }

    /// Run the job with `runner` (any [`LocalSampler`]: a [`crate::Boomerang`] runner, Stable
    /// Diffusion, ...); `progress` is called after each batch. Per-image problems
    /// are recorded and skipped; only problems with the job itself (bad folders, a bad `t`,
    /// an unwritable manifest, a failing model) are errors.
    pub fn run<S: LocalSampler + ?Sized>(&self, runner: &S, progress: &mut dyn FnMut(&Progress)) -> Result<Report> {
        if self.batch_size == 0 {
            return Err(Error::param("batch_size", "must be at least 1"));
        }
        let t_native = Some(runner.start_time(self.t)?);
        check_separate(&self.input, &self.output)?;
        let list = list_images(&self.input)?;
        std::fs::create_dir_all(&self.output).map_err(|e| Error::io(&self.output, e))?;

        let mut by_output: HashMap<String, String> = HashMap::new();
        let mut items = Vec::new();
        for rel in &list.images {
            let key = path_key(rel);
            let out = self.output_name(rel);
            if let Some(other) = by_output.insert(out.clone(), rel.clone()) {
                return Err(Error::InvalidInput(format!(
                    "inputs {other} and {rel} would both be written to {out}; use the same-format output"
                )));
            }
            if self.shard.contains(key) {
                items.push(Item {
                    input: rel.clone(),
                    output: out,
                    key,
                });
            }
        }
        let mut report = Report {
            found: list.images.len(),
            in_shard: items.len(),
            ignored: list.ignored.len(),
            manifest: self.output.join(self.shard.manifest_name()),
            ..Report::default()
        };
        report.temp_removed = self.remove_stale_temps(&items)?;

        let previous = read_manifest(&report.manifest)?;
        let done_ok: HashSet<&str> = previous
            .iter()
            .filter(|e| e.status == EntryStatus::Ok)
            .map(|e| e.input.as_str())
            .collect();
        let known_failures: HashSet<(&str, &str)> = previous
            .iter()
            .filter(|e| e.status == EntryStatus::Skipped)
            .map(|e| (e.input.as_str(), e.error.as_deref().unwrap_or("")))
            .collect();
        let mut manifest = Manifest::open(&report.manifest)?;
        let model = runner.input();

        let mut queue = Vec::new();
        for item in &items {
            let out_path = self.output.join(&item.output);
            if !self.overwrite && out_path.exists() {
                if done_ok.contains(item.input.as_str()) {
                    report.already_done += 1;
                } else {
                    // Written by a run killed before its manifest line: recompute the line
                    // from the files (the distances of an 8-bit PNG are exactly those of the
                    // quantized sample).
                    match self.recover_entry(item, &model, t_native) {
                        Ok(entry) => {
                            manifest.append(&entry)?;
                            report.recovered += 1;
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            report.failures.push((item.input.clone(), msg.clone()));
                            report.failed += 1;
                        }
                    }
                }
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
                .map(|it| load_for_model(&self.input.join(&it.input), &model, self.size_policy))
                .collect();
            let mut ready: Vec<(&Item, LoadedImage)> = Vec::new();
            for (item, res) in chunk.iter().zip(loaded) {
                match res {
                    Ok(img) => ready.push((item, img)),
                    Err(e) => {
                        let msg = e.to_string();
                        if !known_failures.contains(&(item.input.as_str(), msg.as_str())) {
                            manifest.append(&self.entry(
                                item,
                                EntryStatus::Skipped,
                                Some(msg.clone()),
                                t_native,
                                None,
                                vec![],
                            ))?;
                        }
                        report.failures.push((item.input.clone(), msg));
                        report.failed += 1;
                    }
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
                let out = runner.sample(batch.view(), self.t, &mut noise)?;
                let results: Vec<Result<ManifestEntry>> = group
                    .par_iter()
                    .zip(out.axis_iter(Axis(0)).collect::<Vec<_>>())
                    .map(|(&i, sample)| {
                        let (item, img) = &ready[i];
                        let written = quantize(sample, model.range);
                        let d = distances(written.view(), img.data.view(), model.range)?;
                        let path = self.output.join(&item.output);
                        if let Some(parent) = path.parent() {
                            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                        }
                        save_image(&path, written.view(), model.range)?;
                        Ok(self.entry(item, EntryStatus::Ok, None, t_native, Some(d), img.converted.clone()))
                    })
                    .collect();
                for r in results {
                    manifest.append(&r?)?;
                    report.written += 1;
                }
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

    fn entry(
        &self,
        item: &Item,
        status: EntryStatus,
        error: Option<String>,
        t_native: Option<f64>,
        distances: Option<Distances>,
        converted: Vec<String>,
    ) -> ManifestEntry {
        ManifestEntry {
            input: item.input.clone(),
            output: item.output.clone(),
            status,
            error,
            t: format_time(self.t),
            t_native,
            seed: self.seed,
            key: format!("{:016x}", item.key),
            model: self.model_name.clone(),
            shard: self.shard.to_string(),
            distances,
            converted,
            extra: self.extra.clone(),
        }
    }

    fn recover_entry(&self, item: &Item, model: &ModelInput, t_native: Option<f64>) -> Result<ManifestEntry> {
        let input = load_for_model(&self.input.join(&item.input), model, self.size_policy)?;
        let output_model = ModelInput {
            size: Some((input.data.dim().1, input.data.dim().2)),
            ..*model
        };
        let output = load_for_model(&self.output.join(&item.output), &output_model, SizePolicy::Skip)?;
        let d = distances(output.data.view(), input.data.view(), model.range)?;
        Ok(self.entry(item, EntryStatus::Ok, None, t_native, Some(d), input.converted))
    }

    /// Remove `.NAME.PID.tmp.EXT` files left by killed runs, for outputs of this shard only
    /// (a concurrent shard's files in progress are left alone).
    fn remove_stale_temps(&self, items: &[Item]) -> Result<usize> {
        let mine: HashSet<&str> = items.iter().map(|i| i.output.as_str()).collect();
        let mut removed = 0;
        let mut stack = vec![PathBuf::new()];
        while let Some(rel_dir) = stack.pop() {
            let dir = self.output.join(&rel_dir);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(_) => continue,
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    stack.push(rel_dir.join(&name));
                } else if let Some(target) = temp_target(&name) {
                    let target_rel = crate::apps::keys::canonical_relative(rel_dir.join(&target));
                    if mine.contains(target_rel.as_str()) && std::fs::remove_file(entry.path()).is_ok() {
                        removed += 1;
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// An append-only JSON-lines file.
struct Manifest {
    path: PathBuf,
    file: std::io::BufWriter<File>,
}

impl Manifest {
    fn open(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // A line cut by a kill: start on a fresh line.
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(|e| Error::io(path, e))?;
            file.read_exact(&mut last).map_err(|e| Error::io(path, e))?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(|e| Error::io(path, e))?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    fn append(&mut self, entry: &ManifestEntry) -> Result<()> {
        let line = serde_json::to_string(entry)
            .map_err(|e| Error::InvalidInput(format!("cannot serialise a manifest line: {e}")))?;
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.write_all(b"\n"))
            .map_err(|e| Error::io(&self.path, e))
    }

    fn flush(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// Anonymize one in-memory batch (`N×C×H×W`, in the model's range) with the same seeding as
/// [`AnonymizeJob`]: item `i` uses stream `keys[i]` of `seed`.
pub fn anonymize_batch<S: LocalSampler + ?Sized>(
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
