//! `boomerang train`: train a DDPM UNet on a folder of images (or on the procedural shapes
//! family) and write a model folder that `--model` takes.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::CliError;

/// Options of `boomerang train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Folder of training images (PNG, JPEG; searched recursively), resized to --size.
    #[arg(
        long,
        value_name = "FOLDER",
        required_unless_present = "shapes",
        conflicts_with = "shapes"
    )]
    pub data: Option<PathBuf>,
    /// Train on fresh members of the procedural shapes family instead (what the default
    /// model learned).
    #[arg(long)]
    pub shapes: bool,
    /// The model folder to write (config.json, scheduler_config.json, weights); checkpoints
    /// and the loss curve go to OUTPUT/training/. Running the same command again resumes.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Image side in pixels.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Base width of the UNet.
    #[arg(long, default_value_t = 64)]
    pub channels: usize,
    /// Width multiplier per level, highest resolution first (one level per entry).
    #[arg(long, value_delimiter = ',', default_value = "1,2,2", value_name = "M,M,..")]
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per level.
    #[arg(long, default_value_t = 2)]
    pub res_blocks: usize,
    /// Resolutions with self-attention.
    #[arg(long, value_delimiter = ',', default_value = "16", value_name = "R,R,..")]
    pub attn: Vec<usize>,
    /// GroupNorm groups (must divide every width).
    #[arg(long, default_value_t = 32)]
    pub norm_groups: usize,
    /// Noise schedule: linear, linear:START:END, scaled-linear[:START:END] or cosine,
    /// optionally @STEPS.
    #[arg(long, default_value = "linear")]
    pub schedule: String,
    /// Optimisation steps in all (on resume: the new total).
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate of Adam.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// Decay of the EMA weights that are exported.
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f64,
    /// Clip the global gradient norm to this.
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// No random horizontal flips.
    #[arg(long)]
    pub no_flip: bool,
    /// Seed of the initialisation and of every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Save a resumable checkpoint every N steps.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub checkpoint_every: u64,
    /// Device: auto (CUDA if available), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Arithmetic: f32, or mixed (f16 autocast with loss scaling; CUDA only).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    pub precision: PrecisionArg,
}

/// `--precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    /// f32 everywhere.
    F32,
    /// f16 autocast on CUDA with dynamic loss scaling.
    Mixed,
}

/// Run `boomerang train`.
#[cfg(feature = "tch")]
pub fn train(args: TrainArgs, quiet: bool) -> Result<(), CliError> {
    use boomerang::models::ddpm::DdpmConfig;
    use boomerang::models::parse_device;
    use boomerang::schedule::BetaSchedule;
    use boomerang::shapes::Shapes;
    use boomerang::train::{Precision, TrainConfig, TrainData, Trainer};

    let weights = args.output.join("diffusion_pytorch_model.safetensors");
    if weights.exists() {
        return Err(CliError::usage(format!(
            "{} already holds a trained model; choose another --output (nothing was changed)",
            args.output.display()
        )));
    }
    let model = DdpmConfig {
        ch: args.channels,
        ch_mult: args.ch_mult.clone(),
        num_res_blocks: args.res_blocks,
        attn_resolutions: args.attn.clone(),
        dropout: 0.0,
        resolution: args.size,
        norm_groups: args.norm_groups,
        ..DdpmConfig::cifar10()
    };
    model.validate()?;
    let settings = TrainConfig {
        steps: args.steps,
        batch_size: args.batch_size,
        lr: args.lr,
        warmup: args.warmup,
        grad_clip: args.grad_clip,
        ema_decay: args.ema_decay,
        random_flip: !args.no_flip,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        schedule: BetaSchedule::parse(&args.schedule)?,
        precision: match args.precision {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Mixed => Precision::Mixed,
        },
    };
    // Every numeric option, before any data is read or network built.
    settings.validate()?;
    let device = parse_device(&args.device)?;
    let data = match &args.data {
        Some(folder) => TrainData::from_folder(folder, args.size)?,
        None => TrainData::Shapes(Shapes::new(args.size)?),
    };

    let work = args.output.join("training");
    let mut trainer = if work.join("checkpoint.json").is_file() {
        let trainer = Trainer::resume(&work, device, Some(args.steps))?;
        check_same_run(trainer.model_config(), &model, trainer.config(), &settings, &work)?;
        if !quiet {
            esay!("resuming {} at step {}", work.display(), trainer.step_count());
        }
        trainer
    } else {
        Trainer::new(model, settings, device)?
    };

    let bar = crate::progress::steps_bar(args.steps, trainer.step_count(), quiet);
    // Failing to write checkpoints or the model is a failed run (exit 1).
    let failed = CliError::from_job(&args.output);
    trainer
        .train(&data, &work, |step, loss| {
            bar.set_position(step);
            if step % 10 == 0 {
                bar.set_message(format!("loss {loss:.4}"));
            }
        })
        .map_err(&failed)?;
    bar.finish_and_clear();
    trainer.export(&args.output).map_err(&failed)?;
    if !quiet {
        esay!(
            "wrote the model (EMA weights) to {}; loss curve and checkpoint in {}\n\
             use it with: boomerang sample --model {} --t 0.3 -o out/ IMAGES",
            args.output.display(),
            work.display(),
            args.output.display()
        );
    }
    Ok(())
}

/// A resumed run must be the run the flags describe (only `--steps` may change).
#[cfg(feature = "tch")]
fn check_same_run(
    stored_model: &boomerang::models::ddpm::DdpmConfig,
    model: &boomerang::models::ddpm::DdpmConfig,
    stored: &boomerang::train::TrainConfig,
    settings: &boomerang::train::TrainConfig,
    work: &std::path::Path,
) -> Result<(), CliError> {
    let same_settings = boomerang::train::TrainConfig {
        steps: stored.steps,
        ..settings.clone()
    } == *stored;
    if stored_model != model || !same_settings {
        return Err(CliError::usage(format!(
            "{} holds a run with other settings than these flags (stored: {stored_model:?}, {stored:?}); \
             give the same flags to resume it (only --steps may change), or choose another --output",
            work.display()
        )));
    }
    Ok(())
}

/// Without libtorch there is nothing to train with.
#[cfg(not(feature = "tch"))]
pub fn train(_args: TrainArgs, _quiet: bool) -> Result<(), CliError> {
    Err(CliError::unsupported(
        "training needs libtorch, and this boomerang was built without the `tch` feature (build with default features)",
    ))
}
