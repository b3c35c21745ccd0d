//! The NCSN++ family's registry loader: a DLSM score checkpoint as a Boomerang sampler on
//! its VE SDE, with classifier guidance from a time-conditional classifier when one is given.

use super::{load, load_classifier, ClassifierLoadOptions, DlsmLoadOptions, NcsnppConfig};
use crate::models::family::{
    clip_name, spacing_name, ClassLabels, Family, LoadedModel, ModelDescription, ModelOptions, Probe,
};
use crate::models::{parse_device, parse_kind};
use crate::{Clip, Condition, Error, Result, Spacing};

/// Load an NCSN++ score model (DLSM's container with EMA weights, or a flat file): the
/// family's default sampler (the reverse-diffusion predictor, which keeps Boomerang local;
/// DLSM's predictor-corrector with `--sampler pc`) over the SDE's discretisation from `t`.
/// With `options.classifier`, classifier guidance towards `options.classes` (DLSM's
/// `scaling_factor` from `options.classifier_scale`, default 1).
pub(crate) fn load_pipeline(probe: &Probe, options: &ModelOptions) -> Result<LoadedModel> {
    options.refuse("NCSN++", &["prompt", "negative_prompt", "guidance", "latent", "second"])?;
    let (device, kind) = (parse_device(&options.device)?, parse_kind(&options.dtype)?);
    let config = match &options.config {
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
            Some(NcsnppConfig::from_json(&text).map_err(|e| Error::checkpoint(file, e.to_string()))?)
        }
        None => None,
    };
    let model = load(
        &probe.path,
        &DlsmLoadOptions {
            device,
            kind,
            config,
            max_batch: options.max_batch,
            ..DlsmLoadOptions::default()
        },
    )?;
    let mut description = ModelDescription::new(Family::Ncsnpp, format!("ncsnpp:{}", probe.path.display()));
    let sampler = options.sampler.unwrap_or_else(|| {
        description.default_applied("sampler: the reverse-diffusion predictor (local at small t)");
        model.sampler
    });
    let spacing = options.spacing.clone().unwrap_or(Spacing::Full);
    let clip = options.clip.unwrap_or(Clip::Off);
    description.set("sampler", sampler.name());
    description.set("steps", spacing_name(&spacing));
    description.set("clip", clip_name(clip));
    let guidance = match (&options.classifier, &options.classes) {
        (Some(path), labels @ (ClassLabels::Fixed(_) | ClassLabels::PerImage)) => {
            let guide = load_classifier(
                path,
                &ClassifierLoadOptions {
                    device,
                    kind,
                    expected_classes: model.num_classes(),
                    max_batch: options.max_batch,
                    ..ClassifierLoadOptions::default()
                },
            )?;
            let scale = options.classifier_scale.unwrap_or(1.0);
            description.set("classifier", path.display().to_string());
            description.set("classifier_scale", scale);
            let condition = match labels {
                ClassLabels::Fixed(classes) => {
                    description.set("class", serde_json::json!(classes));
                    Condition::Class(classes.clone())
                }
                _ => {
                    description.set("class", "per image");
                    Condition::None
                }
            };
            Some((model.classifier_guidance(guide, scale)?, condition))
        }
        (Some(_), ClassLabels::None) => {
            return Err(Error::param(
                "class",
                "classifier guidance needs the target class label(s)",
            ))
        }
        (None, ClassLabels::Fixed(_) | ClassLabels::PerImage) => {
            return Err(Error::param(
                "class",
                "NCSN++ score models are unconditional: class labels need a classifier for guidance",
            ))
        }
        (None, ClassLabels::None) if options.classifier_scale.is_some() => {
            return Err(Error::param("classifier", "a classifier scale needs a classifier"))
        }
        (None, ClassLabels::None) => None,
    };
    let mut builder = model.into_builder().sampler(sampler).spacing(spacing).clip(clip);
    if let Some((g, condition)) = guidance {
        builder = builder.condition(condition).guidance(g);
    }
    Ok(LoadedModel {
        pipeline: Box::new(builder.build()?),
        description,
    })
}
