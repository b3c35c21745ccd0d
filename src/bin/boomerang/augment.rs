//! `boomerang augment`: Boomerang copies of every image of a class-per-folder dataset.

use std::path::PathBuf;

use boomerang::apps::augment::{AugmentJob, Existing, TimeChoice};
use boomerang::TimeSpec;
use clap::Args;

use crate::error::CliError;
use crate::inputs::{image_limits, size_policy};
use crate::model::{load_runner, ModelArgs};
use crate::{parse_step_arg, parse_t_arg, progress};

#[derive(Debug, Args)]
pub struct AugmentArgs {
    /// A class-per-folder dataset (never modified).
    #[arg(long)]
    input: PathBuf,
    /// The output folder (must not be inside the input).
    #[arg(long)]
    output: PathBuf,
    /// Fixed t as a fraction of the process (0.3).
    #[arg(long = "t", value_parser = parse_t_arg, value_name = "T", conflicts_with_all = ["t_range", "step"])]
    t: Option<TimeSpec>,
    /// Fixed t as an integer training step instead (300).
    #[arg(long, value_parser = parse_step_arg, value_name = "STEP", conflicts_with = "t_range")]
    step: Option<TimeSpec>,
    /// Draw each copy's t uniformly from LOW:HIGH (fractions), seeded.
    #[arg(long, value_name = "LOW:HIGH")]
    t_range: Option<String>,
    /// Copies per image (at most 10000).
    #[arg(short = 'k', long, default_value_t = 1)]
    copies: usize,
    /// Copy the original images into the output too.
    #[arg(long)]
    copy_originals: bool,
    /// Keep existing outputs and make only the missing ones (only outputs recorded as made
    /// with the same settings are kept; any other existing output is refused).
    #[arg(long, conflicts_with = "overwrite")]
    skip_existing: bool,
    /// Replace existing outputs.
    #[arg(long)]
    overwrite: bool,
    /// Resize images whose size is not the model's (default: report and skip them).
    #[arg(long)]
    resize: bool,
    #[command(flatten)]
    model: ModelArgs,
}

fn parse_range(s: &str) -> Result<TimeChoice, CliError> {
    let (lo, hi) = s
        .split_once(':')
        .ok_or_else(|| CliError::usage(format!("--t-range takes LOW:HIGH fractions like 0.2:0.5, got `{s}`")))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| CliError::usage(format!("--t-range takes LOW:HIGH fractions like 0.2:0.5, got `{s}`")))
    };
    let t = TimeChoice::Uniform {
        low: parse(lo)?,
        high: parse(hi)?,
    };
    t.validate()?;
    Ok(t)
}

pub fn augment(a: AugmentArgs, quiet: bool) -> Result<(), CliError> {
    let t = match (a.t.or(a.step), &a.t_range) {
        (Some(t), None) => TimeChoice::Fixed(t),
        (None, Some(r)) => parse_range(r)?,
        _ => {
            return Err(CliError::usage(
                "give --t (a fraction), --step (a step) or --t-range LOW:HIGH",
            ))
        }
    };
    let mut job = AugmentJob::new(&a.input, &a.output, t);
    job.copies = a.copies;
    job.seed = a.model.seed;
    job.batch_size = a.model.batch_size;
    job.copy_originals = a.copy_originals;
    job.existing = if a.overwrite {
        Existing::Overwrite
    } else if a.skip_existing {
        Existing::Skip
    } else {
        Existing::Error
    };
    job.size_policy = size_policy(a.resize);
    job.limits = image_limits()?;
    job.class_folders = a.model.class_folders()?;
    // Refuse bad settings before a model is loaded.
    job.validate()?;
    let loaded = load_runner(&a.model)?;
    let runner = loaded.runner;
    job.model_name = loaded.name;
    for (k, v) in loaded.settings {
        job.extra.insert(k.to_string(), v);
    }
    // A drawn t: steps grow linearly with t, so the mean of the ends is the expected count.
    let steps = match job.t {
        TimeChoice::Fixed(t) => runner.steps(t).unwrap_or(1) as f64,
        TimeChoice::Uniform { low, high } => {
            let at = |f: f64| runner.steps(TimeSpec::Fraction(f)).unwrap_or(1) as f64;
            (at(low) + at(high)) / 2.0
        }
    };
    let work = progress::Work::new("augmenting", "copies", steps, quiet);
    let counted = progress::Counted {
        inner: &*runner,
        work: &work,
    };
    let report = job
        .run(&counted, &mut |done, total| work.units(done, total))
        .map_err(CliError::from_job(&a.output))?;
    work.finish();
    for (input, reason) in &report.failures {
        esay!("warning: skipped {input}: {reason}");
    }
    if let (Some(c), false) = (&report.classes, quiet) {
        say!("class labels: {}", c.describe());
    }
    if !quiet {
        say!(
            "{} images: {} copies written ({} existed), {} originals copied, {} skipped; t = {}",
            report.images,
            report.written,
            report.existing,
            report.originals,
            report.failures.len(),
            job.describe_t()
        );
    }
    Ok(())
}
