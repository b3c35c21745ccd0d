//! `boomerang sample`: k local samples of each image at one or several t
//! ([`boomerang::apps::sample::SampleJob`]).

use std::path::PathBuf;

use boomerang::apps::dataset::format_time;
use boomerang::apps::sample::SampleJob;
use boomerang::TimeSpec;
use clap::Args;

use crate::error::CliError;
use crate::inputs::{image_limits, size_policy};
use crate::model::{load_runner, ModelArgs};
use crate::{parse_step_arg, parse_t_arg, progress};

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Images or folders of images (PNG, JPEG).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output folder (never inside an input folder).
    #[arg(short, long)]
    output: PathBuf,
    /// t as a fraction of the process (0.3; 1.0: all of it); several: --t 0.2,0.5 or
    /// --t 0.2 --t 0.5.
    #[arg(long = "t", required_unless_present = "step", value_delimiter = ',', value_parser = parse_t_arg, value_name = "T")]
    t: Vec<TimeSpec>,
    /// t as integer training steps instead (300; several: --step 100,300).
    #[arg(long, value_delimiter = ',', value_parser = parse_step_arg, value_name = "STEP")]
    step: Vec<TimeSpec>,
    /// Samples per image and t (at most 10000).
    #[arg(short = 'k', long, default_value_t = 4)]
    samples: usize,
    /// Also write one picture per input: a row per t, the input first.
    #[arg(long)]
    grid: bool,
    /// Resize images whose size is not the model's (default: refuse them).
    #[arg(long)]
    resize: bool,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn sample(a: SampleArgs, quiet: bool) -> Result<(), CliError> {
    let times: Vec<TimeSpec> = a.t.iter().chain(&a.step).copied().collect();
    let mut job = SampleJob::new(a.inputs.clone(), &a.output, times.clone());
    job.samples = a.samples;
    job.grid = a.grid;
    job.size_policy = size_policy(a.resize);
    job.overwrite = a.overwrite;
    job.seed = a.model.seed;
    job.batch_size = a.model.batch_size;
    job.limits = image_limits()?;
    // Refuse bad settings before a model is loaded.
    job.validate()?;
    a.model.refuse_class_folders("sample")?;
    let runner = load_runner(&a.model)?.runner;
    // Every t has as many samples: the mean is exact. (A bad t is the job's to report.)
    let steps: usize = times.iter().map(|&t| runner.steps(t).unwrap_or(1)).sum();
    let work = progress::Work::new("sampling", "samples", steps as f64 / times.len().max(1) as f64, quiet);
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
            "wrote {} sample(s) of {} image(s) at t = {} to {}",
            report.written,
            report.images,
            times.iter().map(|&t| format_time(t)).collect::<Vec<_>>().join(", "),
            a.output.display()
        );
        say!("distance to the input ([0, 1] scale, mean over samples):");
        say!("{:>8} {:>8} {:>8}", "t", "RMSE", "SSIM");
        for row in &report.distances {
            let ssim = row.ssim.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
            say!("{:>8} {:>8.4} {:>8}", format_time(row.t), row.rmse, ssim);
        }
    }
    Ok(())
}
