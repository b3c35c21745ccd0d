//! `boomerang enhance`: perceptual resolution enhancement, vanilla or cascaded
//! ([`boomerang::apps::enhance::EnhanceJob`]).

use std::path::PathBuf;

use boomerang::apps::enhance::EnhanceJob;
use boomerang::image_io::ResizeFilter;
use boomerang::TimeSpec;
use clap::{Args, ValueEnum};

use crate::error::CliError;
use crate::inputs::image_limits;
use crate::model::{load_runner, ModelArgs};
use crate::{one_time, parse_step_arg, parse_t_arg, progress};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilterArg {
    Nearest,
    Bilinear,
    Bicubic,
}

impl From<FilterArg> for ResizeFilter {
    fn from(f: FilterArg) -> Self {
        match f {
            FilterArg::Nearest => ResizeFilter::Nearest,
            FilterArg::Bilinear => ResizeFilter::Bilinear,
            FilterArg::Bicubic => ResizeFilter::Bicubic,
        }
    }
}

#[derive(Debug, Args)]
pub struct EnhanceArgs {
    /// Low-resolution images or folders of them.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output folder (never inside an input folder).
    #[arg(short, long)]
    output: PathBuf,
    /// t of each pass as a fraction of the process (0.2).
    #[arg(long = "t", value_parser = parse_t_arg, value_name = "T", conflicts_with = "step")]
    t: Option<TimeSpec>,
    /// t of each pass as an integer training step instead (200).
    #[arg(long, value_parser = parse_step_arg, value_name = "STEP")]
    step: Option<TimeSpec>,
    /// Passes (1: vanilla; more: cascaded, each from the previous result; at most 1000).
    #[arg(long, default_value_t = 1)]
    passes: usize,
    /// Candidates per input (at most 10000).
    #[arg(short = 'k', long, default_value_t = 1)]
    candidates: usize,
    /// Upsampling interpolation.
    #[arg(long, value_enum, default_value_t = FilterArg::Bicubic)]
    filter: FilterArg,
    /// Scale factor (any positive number up to 64); models with a fixed size use theirs.
    #[arg(long)]
    scale: Option<f64>,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn enhance(a: EnhanceArgs, quiet: bool) -> Result<(), CliError> {
    let mut job = EnhanceJob::new(a.inputs.clone(), &a.output, one_time(a.t, a.step)?);
    job.passes = a.passes;
    job.candidates = a.candidates;
    job.filter = a.filter.into();
    job.scale = a.scale;
    job.seed = a.model.seed;
    job.batch_size = a.model.batch_size;
    job.overwrite = a.overwrite;
    job.limits = image_limits()?;
    // Refuse bad settings before a model is loaded.
    job.validate()?;
    a.model.refuse_class_folders("enhance")?;
    let runner = load_runner(&a.model)?.runner;
    let steps = runner.steps(job.t).unwrap_or(1);
    let work = progress::Work::new("enhancing", "passes", steps as f64, quiet);
    let counted = progress::Counted {
        inner: &*runner,
        work: &work,
    };
    let report = job
        .run(&counted, &mut |done, total| work.units(done, total))
        .map_err(CliError::from_job(&a.output))?;
    work.finish();
    if !quiet {
        say!(
            "enhanced {} image(s): {} candidate(s), {} pass(es) at t = {}, written to {}",
            report.images,
            a.candidates,
            a.passes,
            job.describe_t(),
            a.output.display()
        );
    }
    Ok(())
}
