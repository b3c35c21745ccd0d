//! Progress of long commands, per reverse step: a bar on a terminal, plain lines for logs
//! (`--progress lines`), or nothing (`--quiet`, `--progress none`, or stderr not a terminal
//! with the default `auto`).
//!
//! The unit is the image-step (one image through one reverse step): a batch of `b` images
//! at step `k` advances `b`, which is what its cost is proportional to, so the rate and the
//! time left stay honest while a batch is running. The library reports every step through
//! [`Pipeline::sample_observed`]; [`Counted`] forwards a pipeline's steps to a [`Work`].

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use boomerang::core::pipeline::{ModelInput, Pipeline};
use boomerang::ndarray::{Array4, ArrayView4};
use boomerang::{Condition, NoiseStreams, TimeSpec};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else nothing.
    #[default]
    Auto,
    /// Always a bar.
    Bar,
    /// A line on stderr whenever the percentage or the image count changes (for logs).
    Lines,
    /// Nothing.
    None,
}

static MODE: OnceLock<ProgressMode> = OnceLock::new();

/// Set the mode once, from the command line.
pub fn set_mode(mode: ProgressMode) {
    let _ = MODE.set(mode);
}

fn mode(quiet: bool) -> ProgressMode {
    match (quiet, MODE.get().copied().unwrap_or_default()) {
        (true, _) => ProgressMode::None,
        (false, ProgressMode::Auto) if std::io::stderr().is_terminal() => ProgressMode::Bar,
        (false, ProgressMode::Auto) => ProgressMode::None,
        (false, m) => m,
    }
}

/// The progress of one command, in image-steps, with the count of finished units (images,
/// samples, copies or passes) beside it.
pub struct Work {
    bar: ProgressBar,
    lines: bool,
    unit: &'static str,
    label: &'static str,
    steps_per_unit: f64,
    started: Instant,
    state: Mutex<Counts>,
}

/// Units done and in all, and what the last line showed: (percent, units done).
#[derive(Default)]
struct Counts {
    done: usize,
    total: usize,
    shown: Option<(u64, usize)>,
}

impl Work {
    /// Progress of work whose units (`unit`: "images", "samples", ...) each take
    /// `steps_per_unit` reverse steps.
    pub fn new(label: &'static str, unit: &'static str, steps_per_unit: f64, quiet: bool) -> Self {
        let mode = mode(quiet);
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        if mode == ProgressMode::Bar {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        let style = ProgressStyle::with_template(
            "{msg:12} [{elapsed_precise}] {wide_bar} {prefix} · {pos}/{len} steps ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label);
        Self {
            bar,
            lines: mode == ProgressMode::Lines,
            unit,
            label,
            steps_per_unit: steps_per_unit.max(1.0),
            started: Instant::now(),
            state: Mutex::new(Counts::default()),
        }
    }

    /// `k` more image-steps done.
    pub fn steps(&self, k: usize) {
        self.bar.inc(k as u64);
        self.line();
    }

    /// `done` of `total` units finished (from the library job's progress callback).
    pub fn units(&self, done: usize, total: usize) {
        let at = (done as f64 * self.steps_per_unit).round() as u64;
        let len = ((total as f64 * self.steps_per_unit).round() as u64).max(at);
        self.bar.set_length(len);
        if at > self.bar.position() {
            self.bar.set_position(at);
        }
        self.bar.set_prefix(format!("{done}/{total} {}", self.unit));
        if let Ok(mut s) = self.state.lock() {
            s.done = done;
            s.total = total;
        }
        self.line();
    }

    /// Start the clock again (work found done by a resumed run does not count to the rate).
    pub fn restart_clock(&self) {
        self.bar.reset_elapsed();
        self.bar.reset_eta();
    }

    fn line(&self) {
        if !self.lines {
            return;
        }
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let percent = (pos * 100).checked_div(len).unwrap_or(0);
        let Ok(mut s) = self.state.lock() else { return };
        let (done, total) = (s.done, s.total);
        if s.shown == Some((percent, done)) {
            return;
        }
        s.shown = Some((percent, done));
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { pos as f64 / secs } else { 0.0 };
        let left = match (rate > 0.0, len > pos) {
            (true, true) => format!(", {:.0} s left", (len - pos) as f64 / rate),
            _ => String::new(),
        };
        eprintln!(
            "{}: {done}/{total} {}, {pos}/{len} steps ({percent}%), {rate:.1} steps/s{left}",
            self.label, self.unit
        );
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A pipeline whose every reverse step is counted in a [`Work`]; the samples are the
/// inner pipeline's.
pub struct Counted<'a> {
    /// The pipeline that does the work.
    pub inner: &'a dyn Pipeline,
    /// Where its steps are counted.
    pub work: &'a Work,
}

impl Pipeline for Counted<'_> {
    fn input(&self) -> ModelInput {
        self.inner.input()
    }

    fn start_time(&self, t: TimeSpec) -> boomerang::Result<f64> {
        self.inner.start_time(t)
    }

    fn steps(&self, t: TimeSpec) -> boomerang::Result<usize> {
        self.inner.steps(t)
    }

    fn sample(
        &self,
        images: ArrayView4<'_, f32>,
        t: TimeSpec,
        noise: &mut NoiseStreams,
    ) -> boomerang::Result<Array4<f32>> {
        let ts = vec![t; images.dim().0];
        self.sample_observed(images, &ts, &Condition::None, noise, &mut |_| {})
    }

    fn sample_items(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        noise: &mut NoiseStreams,
    ) -> boomerang::Result<Array4<f32>> {
        self.sample_observed(images, ts, &Condition::None, noise, &mut |_| {})
    }

    fn sample_conditioned(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
    ) -> boomerang::Result<Array4<f32>> {
        self.sample_observed(images, ts, condition, noise, &mut |_| {})
    }

    fn sample_observed(
        &self,
        images: ArrayView4<'_, f32>,
        ts: &[TimeSpec],
        condition: &Condition,
        noise: &mut NoiseStreams,
        on_step: &mut dyn FnMut(usize),
    ) -> boomerang::Result<Array4<f32>> {
        self.inner.sample_observed(images, ts, condition, noise, &mut |k| {
            self.work.steps(k);
            on_step(k);
        })
    }
}

/// A bar counting training steps, with the latest loss as its message.
#[cfg(feature = "tch")]
pub fn steps_bar(total: u64, done: u64, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
    if mode(quiet) != ProgressMode::None {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    let style = ProgressStyle::with_template(
        "{msg:14} [{elapsed_precise}] {wide_bar} {pos}/{len} steps ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(done);
    bar.reset_eta();
    bar
}
