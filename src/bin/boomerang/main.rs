//! `boomerang`: Boomerang local sampling from the command line.
//!
//! Subcommands: `sample`, `enhance`, `anonymize`, `augment`, `train`, `convert`, `info`; run
//! `boomerang --help` or `boomerang <command> --help` for options and examples. Every bad
//! input gives a message and a non-zero exit status (2: bad arguments or input, 1: the run
//! failed); existing files are never replaced unless `--overwrite` is given.

/// `println!` that never panics: output to a closed pipe (`boomerang info x | head`) is
/// dropped instead of aborting the program.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! esay {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
mod anonymize;
mod augment;
mod convert;
mod enhance;
mod error;
mod info;
mod inputs;
mod model;
mod progress;
mod sample;
mod train;

use std::process::ExitCode;

use boomerang::apps::dataset::parse_time;
use boomerang::TimeSpec;
use clap::{Parser, Subcommand};

pub use error::CliError;

const MAIN_EXAMPLES: &str = "\
Examples:
  # The built-in model, offline: local samples of a 32×32 image at t = 0.1 … 0.9
  boomerang sample --t 0.1,0.3,0.5,0.7,0.9 -k 4 --grid -o out/ shape.png

  # Four local samples of each image at t = 0.2 and t = 0.5, with a picture per input
  boomerang sample --model gaussian:0,0.5 --t 0.2,0.5 -k 4 --grid -o out/ photo.png

  # Stable Diffusion (diffusers folder): latent-space Boomerang with a class prompt
  boomerang sample --model stable-diffusion-v1-5/ --prompt \"a photo of a cat\" --t 0.5 -k 4 -o out/ cat.png

  # Anonymize a dataset, resumable, as 8 Slurm array tasks (sbatch --array=0-7)
  boomerang anonymize --model ddpm_celeba/ --t 0.3 --input faces/ --output faces-anon/

  # Cascaded resolution enhancement: 3 passes at t = 0.1, 2 candidates
  boomerang enhance --model ddpm_cifar10/ --t 0.1 --passes 3 -k 2 -o up/ small/*.png

  # Three augmented copies per training image, t drawn in [0.2, 0.4]
  boomerang augment --model empirical:train/ --t-range 0.2:0.4 -k 3 --input train/ --output train-boom/

  # Train your own model on a folder of images, then use it
  boomerang train --data faces/ --size 64 --steps 50000 -o ddpm_faces/

  # Inspect and convert a checkpoint
  boomerang info model-790000.ckpt
  boomerang convert model-790000.ckpt ddpm_cifar10.safetensors

Models: --model takes a DDPM UNet checkpoint (file or diffusers folder), a Stable Diffusion
diffusers folder, your own model from `boomerang train`, or an analytic stand-in:
gaussian:MEAN,STD or empirical:FOLDER (exact denoisers, no network). Without --model, the
built-in shapes32 runs: a small DDPM UNet of 32×32 coloured shapes, embedded in the crate.
t: a fraction of the diffusion like 0.3, or an integer training step like 300.";

/// Boomerang: local sampling on image manifolds with pretrained diffusion models.
///
/// Noise an image to level t in one draw, then run the model's reverse process back: small t
/// gives a near copy, large t a new image. Used to anonymize, augment and enhance images.
#[derive(Debug, Parser)]
#[command(name = "boomerang", version, after_help = MAIN_EXAMPLES)]
struct Cli {
    /// No progress bars and no summary.
    #[arg(long, short, global = true)]
    quiet: bool,

    /// Progress per reverse step: a bar on a terminal (auto), always a bar, plain lines on
    /// stderr for logs (lines), or none.
    #[arg(long, global = true, value_enum, default_value_t = progress::ProgressMode::Auto)]
    progress: progress::ProgressMode,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// k local samples of each image at one or several t.
    #[command(
        after_help = "Example:\n  boomerang sample --model gaussian:0,0.5 --t 0.1,0.3,0.6 -k 4 --grid -o out/ a.png b.png\n\n\
Writes OUT/<name>_t<T>_s<J>.png (and OUT/<name>_grid.png with --grid: one row per t, the input first)."
    )]
    Sample(sample::SampleArgs),
    /// Perceptual resolution enhancement: upsample, then Boomerang (vanilla or cascaded).
    #[command(
        after_help = "Examples:\n  boomerang enhance --model ddpm_cifar10/ --t 0.3 -o up/ low/\n  \
boomerang enhance --model gaussian:0,0.5 --scale 4 --t 0.1 --passes 3 -k 2 --filter bilinear -o up/ low.png\n\n\
Writes OUT/<name>_up.png (plain interpolation) and OUT/<name>_c<J>_p<P>.png for candidate J after pass P."
    )]
    Enhance(enhance::EnhanceArgs),
    /// Anonymize a dataset folder into a mirrored output folder (resumable, shardable).
    #[command(
        after_help = "Examples:\n  boomerang anonymize --model ddpm_celeba/ --t 0.3 --input faces/ --output anon/\n  \
boomerang anonymize --model gaussian:0,0.5 --step 300 --shard 2/8 --input faces/ --output anon/\n\n\
Resuming: run the same command again; finished images are skipped. Sharding: --shard I/N, or\n\
from Slurm job arrays (SLURM_ARRAY_TASK_ID with _COUNT or _MIN/_MAX), or Kubernetes Indexed\n\
Jobs (JOB_COMPLETION_INDEX with BOOMERANG_SHARD_COUNT set to the Job's completions).\n\
Each image's result depends only on (seed, its path relative to --input). A manifest\n\
(OUTPUT/manifest.jsonl, or manifest.shard-I-of-N.jsonl) records t, seed, key, model and\n\
MSE/PSNR/SSIM to the original for every image; unreadable images are recorded and skipped."
    )]
    Anonymize(anonymize::AnonymizeArgs),
    /// k Boomerang copies of every image of a class-per-folder dataset.
    #[command(
        after_help = "Examples:\n  boomerang augment --model ddpm_cifar10/ --t 0.3 -k 2 --input train/ --output boom/\n  \
boomerang augment --model empirical:train/cat --t-range 0.2:0.5 -k 4 --copy-originals --input train/ --output boom/\n\n\
Writes OUTPUT/<class>/<name>_boom<K>.png."
    )]
    Augment(augment::AugmentArgs),
    /// Convert a checkpoint (PyTorch zip/legacy, safetensors) to safetensors.
    #[command(after_help = "Examples:\n  boomerang convert model-790000.ckpt ddpm.safetensors\n  \
boomerang convert --select ema checkpoint.pth ema.safetensors\n\nPickles are read by a restricted reader that never runs code.")]
    Convert(convert::ConvertArgs),
    /// Train a DDPM UNet on a folder of images; writes a model folder for --model.
    #[command(
        after_help = "Examples:\n  boomerang train --data faces/ --size 64 --steps 50000 -o ddpm_faces/\n  \
boomerang train --shapes --size 32 --channels 32 --res-blocks 1 --attn 8 --norm-groups 8 --lr 1e-3 -o shapes/\n\n\
Writes OUTPUT/config.json, scheduler_config.json and diffusion_pytorch_model.safetensors (EMA weights),\n\
and OUTPUT/training/ (resumable checkpoint, loss.csv). Interrupted? Run the same command again."
    )]
    Train(train::TrainArgs),
    /// Show what a model file or folder holds: keys, shapes, dtypes, detected family.
    #[command(
        after_help = "Examples:\n  boomerang info model-790000.ckpt\n  boomerang info --json --limit 20 stable-diffusion-v1-5/"
    )]
    Info(info::InfoArgs),
}

/// `--t`: always a fraction t/T. An integer is refused as ambiguous (`--t 1` would read as
/// step 1 or as the whole process): steps go with `--step`.
pub(crate) fn parse_t_arg(s: &str) -> Result<TimeSpec, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`--t {s}` is ambiguous: --t is a fraction t/T of the process (0.3; 1.0 for all of it); \
             for training step {s} write --step {s}"
        ));
    }
    match parse_time(s) {
        Ok(t) => Ok(t),
        Err(e) => Err(e.to_string()),
    }
}

/// `--step`: an integer training step.
pub(crate) fn parse_step_arg(s: &str) -> Result<TimeSpec, String> {
    match s.trim().parse::<usize>() {
        Ok(step) => Ok(TimeSpec::Step(step)),
        Err(_) => Err(format!(
            "`{s}` is not a step: --step takes an integer training step (300); fractions go with --t"
        )),
    }
}

/// The one `t` of a command given as `--t` (fraction) or `--step` (integer).
pub(crate) fn one_time(t: Option<TimeSpec>, step: Option<TimeSpec>) -> Result<TimeSpec, CliError> {
    match (t, step) {
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (Some(_), Some(_)) => Err(CliError::usage("give --t (a fraction) or --step (a step), not both")),
        (None, None) => Err(CliError::usage(
            "give --t (a fraction such as 0.3) or --step (a step such as 300)",
        )),
    }
}

/// libgomp, inside libtorch, reads `OMP_WAIT_POLICY` once, when it is loaded, before `main`
/// runs. Its default (spinning threads) makes libtorch crawl when other work holds the cores
/// (a tiny Stable Diffusion run on a busy 2-core machine: 64 s instead of 2.9 s), so when the
/// user has not set it, run this program again, once, with it set to `PASSIVE` (which costs
/// nothing on an idle machine). A failed re-execution goes on as it is.
#[cfg(all(unix, feature = "tch"))]
fn passive_openmp() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "OMP_WAIT_POLICY";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only if it failed.
    let _ = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(VAR, "PASSIVE")
        .exec();
}

fn main() -> ExitCode {
    #[cfg(all(unix, feature = "tch"))]
    passive_openmp();
    let cli = Cli::parse();
    progress::set_mode(cli.progress);
    let quiet = cli.quiet;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let _ = quiet;
            esay!("error: {e}");
            match e {
                CliError::Run(_) => ExitCode::from(1),
                _ => ExitCode::from(2),
            }
        }
        Err(_) => {
            esay!("error: internal error (a bug in boomerang); please report it with the command line used");
            ExitCode::from(101)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Sample(a) => sample::sample(a, cli.quiet),
        Command::Enhance(a) => enhance::enhance(a, cli.quiet),
        Command::Anonymize(a) => anonymize::anonymize(a, cli.quiet),
        Command::Augment(a) => augment::augment(a, cli.quiet),
        Command::Convert(a) => convert::convert(&a),
        Command::Info(a) => info::info(&a),
        Command::Train(a) => train::train(a, cli.quiet),
    }
}
