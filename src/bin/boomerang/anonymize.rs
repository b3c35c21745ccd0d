//! `boomerang anonymize`: a dataset folder into a mirrored, anonymized one.

use std::path::PathBuf;

use boomerang::apps::anonymize::{AnonymizeJob, OutputFormat, Shard};
use boomerang::apps::limits::check_batch_size;
use boomerang::TimeSpec;
use clap::{Args, ValueEnum};

use crate::error::CliError;
use crate::inputs::{image_limits, size_policy};
use crate::model::{load_runner, ModelArgs};
use crate::{one_time, parse_step_arg, parse_t_arg, progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// The input's own name and format.
    Same,
    /// PNG (lossless): a.jpg becomes a.png.
    Png,
}

#[derive(Debug, Args)]
pub struct AnonymizeArgs {
    /// The dataset folder (never modified).
    #[arg(long)]
    input: PathBuf,
    /// The output folder (mirrors the input tree; must not be inside the input).
    #[arg(long)]
    output: PathBuf,
    /// t as a fraction of the process (0.3; 1.0: all of it).
    #[arg(long = "t", value_parser = parse_t_arg, value_name = "T", conflicts_with = "step")]
    t: Option<TimeSpec>,
    /// t as an integer training step instead (300).
    #[arg(long, value_parser = parse_step_arg, value_name = "STEP")]
    step: Option<TimeSpec>,
    /// This run's part of the dataset, INDEX/COUNT (default: from the environment, else all).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Recompute and replace outputs that exist, whatever made them (default: resume, keeping
    /// only what a run with the same settings recorded).
    #[arg(long)]
    overwrite: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FormatArg::Same)]
    format: FormatArg,
    /// Resize images whose size is not the model's (default: record and skip them).
    #[arg(long)]
    resize: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn anonymize(a: AnonymizeArgs, quiet: bool) -> Result<(), CliError> {
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::from_env()?.unwrap_or_default(),
    };
    let limits = image_limits()?;
    check_batch_size(a.model.batch_size)?;
    let class_folders = a.model.class_folders()?;
    let loaded = load_runner(&a.model)?;
    let runner = loaded.runner;
    let mut job = AnonymizeJob::new(&a.input, &a.output, one_time(a.t, a.step)?);
    job.class_folders = class_folders;
    job.seed = a.model.seed;
    job.batch_size = a.model.batch_size;
    job.shard = shard;
    job.overwrite = a.overwrite;
    job.format = match a.format {
        FormatArg::Same => OutputFormat::Same,
        FormatArg::Png => OutputFormat::Png,
    };
    job.size_policy = size_policy(a.resize);
    job.limits = limits;
    job.model_name = loaded.name;
    for (k, v) in loaded.settings {
        job.extra.insert(k.to_string(), v);
    }
    let steps = runner.steps(job.t).unwrap_or(1);
    let work = progress::Work::new("anonymizing", "images", steps as f64, quiet);
    let counted = progress::Counted {
        inner: &*runner,
        work: &work,
    };
    let mut first = true;
    let report = job
        .run(&counted, &mut |p| {
            work.units(p.done, p.total);
            if first {
                // Images found done by a resumed run do not count towards the rate.
                work.restart_clock();
                first = false;
            }
        })
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
            "shard {shard}: {} of {} images; {} written, {} already done, {} recovered, {} skipped; manifest {}",
            report.in_shard,
            report.found,
            report.written,
            report.already_done,
            report.recovered,
            report.failed,
            report.manifest.display()
        );
    }
    Ok(())
}
