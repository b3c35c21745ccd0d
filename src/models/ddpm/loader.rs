//! The DDPM family's registry loader: weights, configuration and schedule from a checkpoint
//! file or folder, Ho et al.'s sampling defaults.

use super::{DdpmConfig, DdpmUNet};
use crate::models::family::{Family, LoadedModel, ModelDescription, ModelOptions, Probe, SamplingDefaults};
use crate::models::{parse_device, parse_kind, TchDenoiser};
use crate::schedule::{DiscreteSchedule, SchedulerConfig};
use crate::{Boomerang, Clip, Error, Result, Sampler, Spacing};

/// Load a DDPM UNet checkpoint (original or diffusers naming; a file or a folder) as a
/// Boomerang sampler.
///
/// - architecture: `options.config` (diffusers' or the original code's model config), else
///   a DDPM `config.json` next to the weights, else inferred from the weights' shapes (the
///   released configurations);
/// - schedule: the model's `scheduler_config.json` (beside the weights, in `scheduler/`),
///   else Ho et al.'s linear β 1e-4..0.02 over 1000 steps;
/// - sampling: DDPM ancestral over every step from `t`, `x̂0` clipped to `[-1, 1]` unless
///   the scheduler config says `clip_sample: false` (Ho et al.'s sampler and diffusers'
///   `DDPMScheduler` clip).
pub(crate) fn load_pipeline(probe: &Probe, options: &ModelOptions) -> Result<LoadedModel> {
    options.refuse(
        "DDPM",
        &[
            "prompt",
            "negative_prompt",
            "guidance",
            "latent",
            "classes",
            "classifier",
            "second",
        ],
    )?;
    let device = parse_device(&options.device)?;
    let kind = parse_kind(&options.dtype)?;
    let weights = probe
        .weights
        .clone()
        .ok_or_else(|| Error::checkpoint(&probe.path, "a folder without DDPM weights"))?;
    let mut description = ModelDescription::new(Family::Ddpm, format!("ddpm:{}", probe.path.display()));
    let config_file = options.config.clone().or_else(|| {
        let is_ddpm = probe.config.as_ref().is_some_and(DdpmConfig::is_ddpm_json);
        probe.config_path.clone().filter(|_| is_ddpm)
    });
    let unet = match &config_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let config = DdpmConfig::from_json(&text).map_err(|e| Error::checkpoint(path, e.to_string()))?;
            description.set("config", path.display().to_string());
            DdpmUNet::load_with_config(&weights, config, device, kind)?
        }
        None => {
            description.default_applied("architecture: inferred from the weights (a released configuration)");
            DdpmUNet::load(&weights, device, kind)?
        }
    };
    let (schedule, clip) = match SchedulerConfig::find(&probe.path) {
        Some(file) => {
            let c = SchedulerConfig::read(&file)?;
            description.set("scheduler_config", file.display().to_string());
            let schedule = c.schedule().map_err(|e| Error::checkpoint(&file, e.to_string()))?;
            (schedule, if c.clip_sample { Clip::Range } else { Clip::Off })
        }
        None => {
            description.default_applied("schedule: Ho et al.'s linear β 1e-4..0.02 over 1000 steps");
            (DiscreteSchedule::ddpm()?, Clip::Range)
        }
    };
    if schedule.num_steps() != 1000 && options.spacing.is_none() {
        description.default_applied(format!("{} training steps", schedule.num_steps()));
    }
    let defaults = SamplingDefaults {
        sampler: Sampler::ddpm(),
        spacing: Spacing::Full,
        clip,
    };
    let (sampler, spacing, clip) = defaults.resolve(options, &mut description);
    let denoiser = TchDenoiser::new(unet).with_max_batch(options.max_batch)?;
    let runner = Boomerang::builder(denoiser, schedule)
        .sampler(sampler)
        .spacing(spacing)
        .clip(clip)
        .build()?;
    Ok(LoadedModel {
        pipeline: Box::new(runner),
        description,
    })
}
