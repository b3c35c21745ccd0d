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

#[path = "boomerang/info.rs"]
mod info;
#[path = "boomerang/model.rs"]
mod model;
#[path = "boomerang/progress.rs"]
mod progress;
#[path = "boomerang/train.rs"]
mod train;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use boomerang::anonymize::{AnonymizeJob, OutputFormat, Shard};
use boomerang::augment::{local_samples, AugmentJob, Existing, TimeChoice};
use boomerang::dataset::{
    format_time, list_images, load_for_model, parse_time, stack, LoadedImage, ModelInput, SizePolicy,
};
use boomerang::enhance::{enhance_with_progress, target_size, EnhanceOptions};
use boomerang::image_io::{grid, save_image, ResizeFilter};
use boomerang::keys::{derive_key, hash_bytes, path_key};
use boomerang::metrics::distances;
use boomerang::TimeSpec;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ndarray::{ArrayView3, Axis};

use boomerang::local::LocalSampler;
use model::{load_runner, ModelArgs};

/// An error of the command line tool, with its exit status.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments or input (exit status 2).
    Usage(String),
    /// Something this build cannot do (exit status 2).
    Unsupported(String),
    /// The run failed (exit status 1).
    Run(boomerang::Error),
}

impl CliError {
    /// A usage error.
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }

    /// An unsupported request.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        CliError::Unsupported(msg.into())
    }
}

impl From<boomerang::Error> for CliError {
    fn from(e: boomerang::Error) -> Self {
        match e {
            boomerang::Error::InvalidParameter { .. }
            | boomerang::Error::InvalidInput(_)
            | boomerang::Error::Shape(_)
            | boomerang::Error::Incompatible(_)
            | boomerang::Error::Image { .. }
            | boomerang::Error::Checkpoint { .. } => CliError::Usage(e.to_string()),
            boomerang::Error::Io { ref source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                CliError::Usage(e.to_string())
            }
            other => CliError::Run(other),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Unsupported(m) => f.write_str(m),
            CliError::Run(e) => write!(f, "{e}"),
        }
    }
}

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
    Sample(SampleArgs),
    /// Perceptual resolution enhancement: upsample, then Boomerang (vanilla or cascaded).
    #[command(
        after_help = "Examples:\n  boomerang enhance --model ddpm_cifar10/ --t 0.3 -o up/ low/\n  \
boomerang enhance --model gaussian:0,0.5 --scale 4 --t 0.1 --passes 3 -k 2 --filter bilinear -o up/ low.png\n\n\
Writes OUT/<name>_up.png (plain interpolation) and OUT/<name>_c<J>_p<P>.png for candidate J after pass P."
    )]
    Enhance(EnhanceArgs),
    /// Anonymize a dataset folder into a mirrored output folder (resumable, shardable).
    #[command(
        after_help = "Examples:\n  boomerang anonymize --model ddpm_celeba/ --t 0.3 --input faces/ --output anon/\n  \
boomerang anonymize --model gaussian:0,0.5 --t 300 --shard 2/8 --input faces/ --output anon/\n\n\
Resuming: run the same command again; finished images are skipped. Sharding: --shard I/N, or\n\
from Slurm job arrays (SLURM_ARRAY_TASK_ID with _COUNT or _MIN/_MAX), or Kubernetes Indexed\n\
Jobs (JOB_COMPLETION_INDEX with BOOMERANG_SHARD_COUNT set to the Job's completions).\n\
Each image's result depends only on (seed, its path relative to --input). A manifest\n\
(OUTPUT/manifest.jsonl, or manifest.shard-I-of-N.jsonl) records t, seed, key, model and\n\
MSE/PSNR/SSIM to the original for every image; unreadable images are recorded and skipped."
    )]
    Anonymize(AnonymizeArgs),
    /// k Boomerang copies of every image of a class-per-folder dataset.
    #[command(
        after_help = "Examples:\n  boomerang augment --model ddpm_cifar10/ --t 0.3 -k 2 --input train/ --output boom/\n  \
boomerang augment --model empirical:train/cat --t-range 0.2:0.5 -k 4 --copy-originals --input train/ --output boom/\n\n\
Writes OUTPUT/<class>/<name>_boom<K>.png."
    )]
    Augment(AugmentArgs),
    /// Convert a checkpoint (PyTorch zip/legacy, safetensors) to safetensors.
    #[command(after_help = "Examples:\n  boomerang convert model-790000.ckpt ddpm.safetensors\n  \
boomerang convert --select ema checkpoint.pth ema.safetensors\n\nPickles are read by a restricted reader that never runs code.")]
    Convert(info::ConvertArgs),
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

fn parse_t_arg(s: &str) -> Result<TimeSpec, String> {
    parse_time(s).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FilterArg {
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
struct SampleArgs {
    /// Images or folders of images (PNG, JPEG).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    output: PathBuf,
    /// t as a fraction (0.3) or a step (300); several: --t 0.2,0.5 or --t 0.2 --t 0.5.
    #[arg(long = "t", required = true, value_delimiter = ',', value_parser = parse_t_arg, value_name = "T")]
    t: Vec<TimeSpec>,
    /// Samples per image and t.
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

#[derive(Debug, Args)]
struct EnhanceArgs {
    /// Low-resolution images or folders of them.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output folder.
    #[arg(short, long)]
    output: PathBuf,
    /// t of each pass: a fraction (0.2) or a step (200).
    #[arg(long = "t", value_parser = parse_t_arg, value_name = "T")]
    t: TimeSpec,
    /// Passes (1: vanilla; more: cascaded, each from the previous result).
    #[arg(long, default_value_t = 1)]
    passes: usize,
    /// Candidates per input.
    #[arg(short = 'k', long, default_value_t = 1)]
    candidates: usize,
    /// Upsampling interpolation.
    #[arg(long, value_enum, default_value_t = FilterArg::Bicubic)]
    filter: FilterArg,
    /// Scale factor (any positive number); models with a fixed size use theirs.
    #[arg(long)]
    scale: Option<f64>,
    /// Replace existing output files.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// The input's own name and format.
    Same,
    /// PNG (lossless): a.jpg becomes a.png.
    Png,
}

#[derive(Debug, Args)]
struct AnonymizeArgs {
    /// The dataset folder (never modified).
    #[arg(long)]
    input: PathBuf,
    /// The output folder (mirrors the input tree; must not be inside the input).
    #[arg(long)]
    output: PathBuf,
    /// t as a fraction (0.3) or a step (300).
    #[arg(long = "t", value_parser = parse_t_arg, value_name = "T")]
    t: TimeSpec,
    /// This run's part of the dataset, INDEX/COUNT (default: from the environment, else all).
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Recompute outputs that exist (default: skip them, i.e. resume).
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

#[derive(Debug, Args)]
struct AugmentArgs {
    /// A class-per-folder dataset (never modified).
    #[arg(long)]
    input: PathBuf,
    /// The output folder (must not be inside the input).
    #[arg(long)]
    output: PathBuf,
    /// Fixed t: a fraction (0.3) or a step (300).
    #[arg(long = "t", value_parser = parse_t_arg, value_name = "T", required_unless_present = "t_range", conflicts_with = "t_range")]
    t: Option<TimeSpec>,
    /// Draw each copy's t uniformly from LOW:HIGH (fractions), seeded.
    #[arg(long, value_name = "LOW:HIGH")]
    t_range: Option<String>,
    /// Copies per image.
    #[arg(short = 'k', long, default_value_t = 1)]
    copies: usize,
    /// Copy the original images into the output too.
    #[arg(long)]
    copy_originals: bool,
    /// Keep existing outputs and make only the missing ones.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Sample(a) => sample(a, cli.quiet),
        Command::Enhance(a) => enhance_cmd(a, cli.quiet),
        Command::Anonymize(a) => anonymize(a, cli.quiet),
        Command::Augment(a) => augment(a, cli.quiet),
        Command::Convert(a) => info::convert(&a),
        Command::Info(a) => info::info(&a),
        Command::Train(a) => train::train(a, cli.quiet),
    }
}

/// One input image: its file and the name it goes by (its path relative to the folder
/// given, or its file name), which sets its key and its output names.
struct InputImage {
    path: PathBuf,
    rel: String,
}

fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<InputImage>, CliError> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
        let found: Vec<InputImage> = if meta.is_dir() {
            list_images(p)?
                .images
                .into_iter()
                .map(|rel| InputImage {
                    path: p.join(&rel),
                    rel,
                })
                .collect()
        } else {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| CliError::usage(format!("{}: not a file name", p.display())))?;
            vec![InputImage {
                path: p.clone(),
                rel: name,
            }]
        };
        for f in found {
            if let Some(prev) = seen.insert(f.rel.clone(), f.path.clone()) {
                return Err(CliError::usage(format!(
                    "{} and {} would both be named {}; rename one or pass their folder",
                    prev.display(),
                    f.path.display(),
                    f.rel
                )));
            }
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(CliError::usage("no PNG or JPEG images found in the inputs"));
    }
    Ok(out)
}

fn stem_of(rel: &str) -> String {
    let p = Path::new(rel);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => format!("{}/{stem}", parent.to_string_lossy()),
        _ => stem,
    }
}

/// Refuse to start if any planned output exists (unless overwriting), and create folders.
fn prepare_outputs(out_dir: &Path, names: &[String], overwrite: bool) -> Result<(), CliError> {
    if !overwrite {
        let existing: Vec<&String> = names.iter().filter(|n| out_dir.join(n).exists()).collect();
        if let Some(first) = existing.first() {
            return Err(CliError::usage(format!(
                "{} output file(s) exist already in {} (first: {first}); nothing was written. Pass \
                 --overwrite to replace them or choose another output folder",
                existing.len(),
                out_dir.display()
            )));
        }
    }
    for n in names {
        if let Some(parent) = out_dir.join(n).parent() {
            std::fs::create_dir_all(parent).map_err(|e| CliError::usage(format!("{}: {e}", parent.display())))?;
        }
    }
    Ok(())
}

fn check_inputs_not_in_output(inputs: &[InputImage], out_dir: &Path) -> Result<(), CliError> {
    let out = boomerang::dataset::resolve_path(out_dir)?;
    for i in inputs {
        let p = boomerang::dataset::resolve_path(&i.path)?;
        if p.starts_with(&out) {
            return Err(CliError::usage(format!(
                "input {} lies inside the output folder {}; choose another output folder",
                i.path.display(),
                out_dir.display()
            )));
        }
    }
    Ok(())
}

fn sample(a: SampleArgs, quiet: bool) -> Result<(), CliError> {
    if a.samples == 0 {
        return Err(CliError::usage("-k/--samples must be at least 1"));
    }
    let inputs = collect_inputs(&a.inputs)?;
    check_inputs_not_in_output(&inputs, &a.output)?;
    let runner = load_runner(&a.model)?.runner;
    for &t in &a.t {
        runner.start_time(t)?;
    }
    let mut names = Vec::new();
    for i in &inputs {
        let stem = stem_of(&i.rel);
        for &t in &a.t {
            for j in 0..a.samples {
                names.push(format!("{stem}_t{}_s{j}.png", format_time(t)));
            }
        }
        if a.grid {
            names.push(format!("{stem}_grid.png"));
        }
    }
    prepare_outputs(&a.output, &names, a.overwrite)?;
    let model = runner.input();
    let policy = if a.resize { SizePolicy::Resize } else { SizePolicy::Skip };
    let bar = progress::images_bar(inputs.len() * a.t.len() * a.samples, "sampling", quiet);
    let per_chunk = (a.model.batch_size / a.samples).max(1);
    // Mean distance of the samples to their input, per t: (Σ RMSE, Σ SSIM, SSIM count, n).
    let mut table = vec![(0f64, 0f64, 0usize, 0usize); a.t.len()];
    for chunk in inputs.chunks(per_chunk) {
        let loaded = chunk
            .iter()
            .map(|i| load_for_model(&i.path, &model, policy))
            .collect::<Result<Vec<LoadedImage>, _>>()?;
        for (i, img) in chunk.iter().zip(&loaded) {
            let stem = stem_of(&i.rel);
            let key = path_key(&i.rel);
            let x = stack(&[img.data.view()])?;
            let mut rows = Vec::new();
            for (ti, &t) in a.t.iter().enumerate() {
                let tkey = derive_key(key, &[hash_bytes(format_time(t).as_bytes())]);
                let samples = local_samples(
                    &runner,
                    x.view(),
                    &[tkey],
                    a.samples,
                    &TimeChoice::Fixed(t),
                    a.model.seed,
                    a.model.batch_size,
                )?;
                let mut row = vec![img.data.clone()];
                for s in samples {
                    let d = distances(s.sample.view(), img.data.view(), model.range)?;
                    let entry = &mut table[ti];
                    entry.0 += d.mse.sqrt();
                    if let Some(v) = d.ssim {
                        entry.1 += v;
                        entry.2 += 1;
                    }
                    entry.3 += 1;
                    let name = format!("{stem}_t{}_s{}.png", format_time(t), s.copy);
                    save_image(a.output.join(&name), s.sample.view(), model.range)?;
                    if a.grid {
                        row.push(s.sample);
                    }
                    bar.inc(1);
                }
                if a.grid {
                    rows.extend(row);
                }
            }
            if a.grid {
                let views: Vec<ArrayView3<'_, f32>> = rows.iter().map(|r| r.view()).collect();
                let batch = stack(&views)?;
                let (lo, _) = model.range.bounds();
                let picture = grid(batch.view(), a.samples + 1, 2, lo)?;
                save_image(a.output.join(format!("{stem}_grid.png")), picture.view(), model.range)?;
            }
        }
    }
    bar.finish_and_clear();
    if !quiet {
        say!(
            "wrote {} samples of {} image(s) at t = {} to {}",
            inputs.len() * a.t.len() * a.samples,
            inputs.len(),
            a.t.iter().map(|&t| format_time(t)).collect::<Vec<_>>().join(", "),
            a.output.display()
        );
        say!("distance to the input ([0, 1] scale, mean over samples):");
        say!("{:>8} {:>8} {:>8}", "t", "RMSE", "SSIM");
        for (&t, &(rmse, ssim, n_ssim, n)) in a.t.iter().zip(&table) {
            let ssim = if n_ssim > 0 {
                format!("{:.3}", ssim / n_ssim as f64)
            } else {
                "-".into()
            };
            say!("{:>8} {:>8.4} {:>8}", format_time(t), rmse / n.max(1) as f64, ssim);
        }
    }
    Ok(())
}

fn enhance_cmd(a: EnhanceArgs, quiet: bool) -> Result<(), CliError> {
    if a.candidates == 0 || a.passes == 0 {
        return Err(CliError::usage("-k/--candidates and --passes must be at least 1"));
    }
    let inputs = collect_inputs(&a.inputs)?;
    check_inputs_not_in_output(&inputs, &a.output)?;
    let runner = load_runner(&a.model)?.runner;
    runner.start_time(a.t)?;
    let spec = runner.input();
    // Inputs are low-resolution: any size is taken, then upsampled to the model's.
    let model = ModelInput {
        size: None,
        multiple: 1,
        ..spec
    };
    let mut names = Vec::new();
    for i in &inputs {
        let stem = stem_of(&i.rel);
        names.push(format!("{stem}_up.png"));
        for j in 0..a.candidates {
            for p in 1..=a.passes {
                names.push(format!("{stem}_c{j}_p{p}.png"));
            }
        }
    }
    prepare_outputs(&a.output, &names, a.overwrite)?;
    let opts = EnhanceOptions {
        t: a.t,
        passes: a.passes,
        candidates: a.candidates,
        filter: a.filter.into(),
        seed: a.model.seed,
        batch_size: a.model.batch_size,
    };
    let total = inputs.len() * a.candidates * a.passes;
    let bar = progress::images_bar(total, "enhancing", quiet);
    let mut done_before = 0;
    for i in &inputs {
        let img = load_for_model(&i.path, &model, SizePolicy::Skip)?;
        let (_, h, w) = img.data.dim();
        let size = round_to_multiple(target_size(spec.size, (h, w), a.scale)?, spec.multiple);
        let x = stack(&[img.data.view()])?;
        let key = path_key(&i.rel);
        let out = enhance_with_progress(&runner, x.view(), &[key], size, &opts, &mut |d, _| {
            bar.set_position((done_before + d) as u64)
        })?;
        done_before += a.candidates * a.passes;
        let stem = stem_of(&i.rel);
        save_image(
            a.output.join(format!("{stem}_up.png")),
            out.upsampled.index_axis(Axis(0), 0),
            spec.range,
        )?;
        for p in 0..a.passes {
            for j in 0..a.candidates {
                if let Some(c) = out.candidate(p, 0, j) {
                    save_image(a.output.join(format!("{stem}_c{j}_p{}.png", p + 1)), c, spec.range)?;
                }
            }
        }
    }
    bar.finish_and_clear();
    if !quiet {
        say!(
            "enhanced {} image(s): {} candidate(s), {} pass(es) at t = {}, written to {}",
            inputs.len(),
            a.candidates,
            a.passes,
            format_time(a.t),
            a.output.display()
        );
    }
    Ok(())
}

fn anonymize(a: AnonymizeArgs, quiet: bool) -> Result<(), CliError> {
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::from_env()?.unwrap_or_default(),
    };
    let loaded = load_runner(&a.model)?;
    let runner = loaded.runner;
    let mut job = AnonymizeJob::new(&a.input, &a.output, a.t);
    job.seed = a.model.seed;
    job.batch_size = a.model.batch_size;
    job.shard = shard;
    job.overwrite = a.overwrite;
    job.format = match a.format {
        FormatArg::Same => OutputFormat::Same,
        FormatArg::Png => OutputFormat::Png,
    };
    job.size_policy = if a.resize { SizePolicy::Resize } else { SizePolicy::Skip };
    job.model_name = loaded.name;
    for (k, v) in loaded.settings {
        job.extra.insert(k.to_string(), v);
    }
    let bar = progress::images_bar(0, "anonymizing", quiet);
    let mut first = true;
    let report = job.run(&runner, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        if first {
            // Images found done by a resumed run do not count towards the rate.
            bar.reset_elapsed();
            bar.reset_eta();
            first = false;
        }
    })?;
    bar.finish_and_clear();
    for (input, reason) in &report.failures {
        esay!("warning: skipped {input}: {reason}");
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

/// A size rounded to the nearest multiple of `m` on each side (at least `m`).
fn round_to_multiple(size: (usize, usize), m: usize) -> (usize, usize) {
    let m = m.max(1);
    let r = |v: usize| (((v + m / 2) / m).max(1)) * m;
    (r(size.0), r(size.1))
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

fn augment(a: AugmentArgs, quiet: bool) -> Result<(), CliError> {
    let t = match (&a.t, &a.t_range) {
        (Some(t), None) => TimeChoice::Fixed(*t),
        (None, Some(r)) => parse_range(r)?,
        _ => return Err(CliError::usage("give either --t or --t-range")),
    };
    let runner = load_runner(&a.model)?.runner;
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
    job.size_policy = if a.resize { SizePolicy::Resize } else { SizePolicy::Skip };
    let bar = progress::images_bar(0, "augmenting", quiet);
    let report = job.run(&runner, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    for (input, reason) in &report.failures {
        esay!("warning: skipped {input}: {reason}");
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
