//! Local samples of images named on a command line: `k` Boomerang samples of each input at
//! each of several `t`, written as `OUT/<name>_t<T>_s<J>.png` (and, optionally, one picture
//! per input, `OUT/<name>_grid.png`: a row per `t`, the input first, each row labelled
//! `t=<T>` and the columns `input` and `samples`), with the mean distance of the samples to
//! their input per `t`.
//!
//! The job runs in the order every job here does: inputs ([`collect_inputs`], which keeps
//! outputs out of the inputs) → planned output names (collisions refused) → checks (image
//! headers against the model and [`ImageLimits`], existing outputs, links in the output tree;
//! nothing is written if any fails) → samples written → distance table.
//!
//! Seeding: sample `j` at `t` of the input named `rel` draws from stream
//! `derive_key(derive_key(path_key(rel), [hash_bytes(format_time(t))]), [j])` of the seed, so
//! it does not depend on the other inputs, the other `t`, `k` or the batch size.
//!
//! ```
//! use boomerang::analytic::GaussianDenoiser;
//! use boomerang::apps::sample::SampleJob;
//! use boomerang::image_io::save_image;
//! use boomerang::schedule::DiscreteSchedule;
//! use boomerang::{Boomerang, DataRange, Spacing, TimeSpec};
//!
//! let dir = std::env::temp_dir().join(format!("boomerang-sample-doc-{}", std::process::id()));
//! std::fs::create_dir_all(dir.join("in")).unwrap();
//! save_image(dir.join("in/a.png"), ndarray::Array3::<f32>::zeros((3, 8, 8)).view(), DataRange::MinusOneToOne)?;
//! let runner = Boomerang::builder(GaussianDenoiser::new(0.0, 0.5)?, DiscreteSchedule::linear(1000, 1e-4, 0.02)?)
//!     .spacing(Spacing::Uniform(20))
//!     .build()?;
//! let mut job = SampleJob::new(vec![dir.join("in")], dir.join("out"), vec![TimeSpec::fraction(0.3)]);
//! job.samples = 2;
//! let report = job.run(&runner, &mut |_, _| {})?;
//! assert_eq!(report.written, 2);
//! assert!(dir.join("out/a_t0.3_s1.png").is_file());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), boomerang::Error>(())
//! ```

use std::collections::HashSet;
use std::path::PathBuf;

use ndarray::ArrayView3;

use crate::apps::augment::{copies_of, TimeChoice};
use crate::apps::dataset::collect_inputs;
use crate::apps::dataset::{format_time, load_for_model_with, stack, SizePolicy};
use crate::apps::keys::{derive_key, hash_bytes, path_key};
use crate::apps::limits::{check_batch_size, check_count, MAX_COPIES, MAX_T_VALUES};
use crate::apps::metrics::distances;
use crate::apps::paths::{OutputPlan, OutputState, OutputTree, RelPath};
use crate::core::pipeline::Pipeline;
use crate::image_io::{encode_image, read_header, ImageLimits};
use crate::labels::{labelled_grid, Caption, GridLabels, MAX_SCALE};
use crate::schedule::TimeSpec;
use crate::{Error, Result};

/// Padding of the grid picture, in pixels.
const GRID_PAD: usize = 2;

/// A sampling job; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleJob {
    /// Images or folders of images (searched recursively); a folder's images go by their
    /// path relative to it, a file by its name.
    pub inputs: Vec<PathBuf>,
    /// The output folder (created if missing; never inside an input folder).
    pub output: PathBuf,
    /// The `t` values, at most [`MAX_T_VALUES`], each once.
    pub t: Vec<TimeSpec>,
    /// Samples per image and `t`, `1..=`[`MAX_COPIES`].
    pub samples: usize,
    /// Also write one picture per input: a row per `t`, the input first, with a label per
    /// row (`t=<T>`) and a caption per column (`input`, `samples`). Its size must fit
    /// [`ImageLimits`].
    pub grid: bool,
    /// Images of a size other than the model's.
    pub size_policy: SizePolicy,
    /// Replace existing outputs (default: refuse to start when any exists).
    pub overwrite: bool,
    /// Global seed.
    pub seed: u64,
    /// Images per model batch, `1..=`[`crate::apps::limits::MAX_BATCH_SIZE`] (results do not
    /// depend on it); memory holds about this many samples at a time (all of an input's with
    /// [`SampleJob::grid`]).
    pub batch_size: usize,
    /// The largest images read and written.
    pub limits: ImageLimits,
}

/// The mean distance of the samples at one `t` to their inputs (`[0, 1]` scale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistanceRow {
    /// The `t`.
    pub t: TimeSpec,
    /// Mean root-mean-square error.
    pub rmse: f64,
    /// Mean SSIM, when the images are large enough for it (11×11).
    pub ssim: Option<f64>,
    /// Samples measured.
    pub count: usize,
}

/// What a sampling run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SampleReport {
    /// Input images.
    pub images: usize,
    /// Samples written (grids not counted).
    pub written: usize,
    /// Grid pictures written.
    pub grids: usize,
    /// One row per `t`, in the order given.
    pub distances: Vec<DistanceRow>,
}

/// `dir/name.ext` -> `dir/name_t<T>_s<j>.png`.
pub fn sample_name(rel: &RelPath, t: TimeSpec, j: usize) -> Result<RelPath> {
    rel.with_stem_suffix(&format!("_t{}_s{j}.png", format_time(t)))
}

/// `dir/name.ext` -> `dir/name_grid.png`.
pub fn grid_name(rel: &RelPath) -> Result<RelPath> {
    rel.with_stem_suffix("_grid.png")
}

impl SampleJob {
    /// The labels of the grid picture of images `height` pixels tall: white text, one font
    /// pixel per 64 image pixels (at least 1).
    fn grid_labels(&self, height: usize, range: crate::DataRange) -> GridLabels {
        let rows = self.t.iter().map(|&t| format!("t={}", format_time(t)));
        GridLabels::rows(rows, range.bounds().1)
            .with_header(0, vec![Caption::new("input", 1), Caption::new("samples", self.samples)])
            .with_scale((height / 64).clamp(1, MAX_SCALE))
    }

    /// 4 samples per image and `t`, no grid, wrong sizes refused, no overwriting, seed 0,
    /// batches of 8, the default [`ImageLimits`].
    pub fn new(inputs: Vec<PathBuf>, output: impl Into<PathBuf>, t: Vec<TimeSpec>) -> Self {
        Self {
            inputs,
            output: output.into(),
            t,
            samples: 4,
            grid: false,
            size_policy: SizePolicy::Skip,
            overwrite: false,
            seed: 0,
            batch_size: 8,
            limits: ImageLimits::default(),
        }
    }

    /// Check the settings that need no model (counts, bounds, `t` given twice); [`Self::run`]
    /// checks them too.
    pub fn validate(&self) -> Result<()> {
        check_count("samples", self.samples, 1, MAX_COPIES)?;
        check_count("t", self.t.len(), 1, MAX_T_VALUES)?;
        check_batch_size(self.batch_size)?;
        let mut seen = HashSet::new();
        for &t in &self.t {
            if !seen.insert(format_time(t)) {
                return Err(Error::param(
                    "t",
                    format!(
                        "t = {} is given twice (its samples would share file names)",
                        format_time(t)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Run it; `progress(samples_done, samples_total)` at the start and after each batch. Every check is made
    /// before anything is written; then an error (a model failure, a write that fails) stops
    /// the run.
    pub fn run<S: Pipeline + ?Sized>(
        &self,
        runner: &S,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<SampleReport> {
        self.validate()?;
        for &t in &self.t {
            runner.start_time(t)?;
        }
        let inputs = collect_inputs(&self.inputs, &self.output)?;
        let model = runner.input();

        // Every output name, before any work.
        let mut plan = OutputPlan::new();
        for i in &inputs {
            for &t in &self.t {
                for j in 0..self.samples {
                    plan.add(sample_name(&i.rel, t, j)?, i.path.display())?;
                }
            }
            if self.grid {
                plan.add(grid_name(&i.rel)?, i.path.display())?;
            }
        }
        // Every input's size, from its header: refused now, not after some outputs exist.
        for i in &inputs {
            let header = read_header(&i.path)?;
            let (h, w) = (header.height as u64, header.width as u64);
            self.limits.check(&format!("image {}", i.path.display()), w, h)?;
            let (th, tw) = match (model.size, self.size_policy) {
                (Some(size), _) => (size.0 as u64, size.1 as u64),
                (None, _) => {
                    let m = model.multiple.max(1) as u64;
                    ((h / m).max(1) * m, (w / m).max(1) * m)
                }
            };
            if (th, tw) != (h, w) && self.size_policy == SizePolicy::Skip {
                // The loader words the refusal.
                load_for_model_with(&i.path, &model, self.size_policy, &self.limits)?;
            }
            if self.grid {
                let (gh, gw) = self.grid_labels(th as usize, model.range).picture_size(
                    self.t.len() * (self.samples + 1),
                    th as usize,
                    tw as usize,
                    self.samples + 1,
                    GRID_PAD,
                )?;
                self.limits.check(
                    &format!("the grid picture of {}", i.path.display()),
                    gw as u64,
                    gh as u64,
                )?;
            }
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

        let total = inputs.len() * self.t.len() * self.samples;
        let mut report = SampleReport {
            images: inputs.len(),
            ..SampleReport::default()
        };
        // Per t: (Σ RMSE, Σ SSIM, SSIM count, n).
        let mut table = vec![(0f64, 0f64, 0usize, 0usize); self.t.len()];
        let mut done = 0;
        progress(0, total);
        for i in &inputs {
            let img = load_for_model_with(&i.path, &model, self.size_policy, &self.limits)?;
            let key = path_key(&i.rel);
            let mut rows = Vec::new();
            for (ti, &t) in self.t.iter().enumerate() {
                let tkey = derive_key(key, &[hash_bytes(format_time(t).as_bytes())]);
                if self.grid {
                    rows.push(img.data.clone());
                }
                let mut start = 0;
                while start < self.samples {
                    let end = (start + self.batch_size).min(self.samples);
                    let samples = copies_of(
                        runner,
                        img.data.view(),
                        tkey,
                        start..end,
                        &TimeChoice::Fixed(t),
                        self.seed,
                        self.batch_size,
                    )?;
                    for s in samples {
                        let d = distances(s.sample.view(), img.data.view(), model.range)?;
                        let entry = &mut table[ti];
                        entry.0 += d.mse.sqrt();
                        if let Some(v) = d.ssim {
                            entry.1 += v;
                            entry.2 += 1;
                        }
                        entry.3 += 1;
                        let bytes = encode_image(s.sample.view(), model.range, image::ImageFormat::Png)?;
                        tree.write(&sample_name(&i.rel, t, s.copy)?, &bytes)?;
                        report.written += 1;
                        if self.grid {
                            rows.push(s.sample);
                        }
                    }
                    done += end - start;
                    progress(done, total);
                    start = end;
                }
            }
            if self.grid {
                let views: Vec<ArrayView3<'_, f32>> = rows.iter().map(|r| r.view()).collect();
                let batch = stack(&views)?;
                let (lo, _) = model.range.bounds();
                let labels = self.grid_labels(batch.dim().2, model.range);
                let picture = labelled_grid(batch.view(), self.samples + 1, GRID_PAD, lo, &labels)?;
                let bytes = encode_image(picture.view(), model.range, image::ImageFormat::Png)?;
                tree.write(&grid_name(&i.rel)?, &bytes)?;
                report.grids += 1;
            }
        }
        report.distances = self
            .t
            .iter()
            .zip(&table)
            .map(|(&t, &(rmse, ssim, n_ssim, n))| DistanceRow {
                t,
                rmse: rmse / n.max(1) as f64,
                ssim: (n_ssim > 0).then(|| ssim / n_ssim as f64),
                count: n,
            })
            .collect();
        Ok(report)
    }
}
