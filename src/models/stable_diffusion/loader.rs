//! The Stable Diffusion family's registry loader: a diffusers pipeline folder as a latent
//! Boomerang sampler (VAE codec, text prompt, classifier-free guidance).

use std::rc::Rc;

use super::{SdOptions, StableDiffusion, TextPrompt};
use crate::models::family::{Family, LoadedModel, ModelDescription, ModelOptions, Probe, SamplingDefaults};
use crate::models::{parse_device, parse_kind};
use crate::{Clip, Error, Result, Sampler, Spacing};

/// Load a diffusers Stable Diffusion folder. Defaults: the empty prompt, guidance 7.5, the
/// posterior mode as latent (the Boomerang notebook), DDIM with η = 0 over a 100-step grid of
/// which a run from `t` uses its share.
pub(crate) fn load_pipeline(probe: &Probe, options: &ModelOptions) -> Result<LoadedModel> {
    options.refuse("Stable Diffusion", &["classes", "classifier", "second", "config"])?;
    if options.clip.is_some_and(|c| c != Clip::Off) {
        return Err(Error::param(
            "clip",
            "clipping x̂0 applies to pixel-space models, not to Stable Diffusion's latents",
        ));
    }
    let sd_options = SdOptions {
        device: parse_device(&options.device)?,
        kind: parse_kind(&options.dtype)?,
        max_batch: options.max_batch,
        ..SdOptions::default()
    };
    let sd = Rc::new(StableDiffusion::load(&probe.path, &sd_options)?);
    let mut description = ModelDescription::new(
        Family::StableDiffusion,
        format!("stable-diffusion:{}", probe.path.display()),
    );
    let prompt = TextPrompt {
        prompts: vec![options.prompt.clone().unwrap_or_default()],
        negative_prompts: options.negative_prompt.iter().cloned().collect(),
        guidance_scale: options.guidance.unwrap_or(7.5),
    };
    if options.prompt.is_none() {
        description.default_applied("prompt: the empty prompt");
    }
    if options.guidance.is_none() {
        description.default_applied("guidance: 7.5");
    }
    let latent = options.latent.unwrap_or_default();
    description.set("prompt", prompt.prompts[0].clone());
    if let Some(n) = &options.negative_prompt {
        description.set("negative_prompt", n.clone());
    }
    description.set("guidance", prompt.guidance_scale);
    description.set(
        "latent",
        match latent {
            crate::core::codec::LatentMode::Mode => "mode",
            crate::core::codec::LatentMode::Sample => "sample",
        },
    );
    let defaults = SamplingDefaults {
        sampler: Sampler::ddim(0.0),
        spacing: Spacing::Uniform(100),
        clip: Clip::Off,
    };
    let (sampler, spacing, _) = defaults.resolve(options, &mut description);
    let runner = StableDiffusion::boomerang(sd, &prompt, latent)?
        .sampler(sampler)
        .spacing(spacing)
        .build()?;
    Ok(LoadedModel {
        pipeline: Box::new(runner),
        description,
    })
}
