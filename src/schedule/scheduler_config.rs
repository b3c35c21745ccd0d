//! THE reader of diffusers' `scheduler_config.json`, used by every model family and the CLI.
//!
//! It reads the training schedule (`beta_schedule`, `beta_start`, `beta_end`,
//! `num_train_timesteps`, `trained_betas`), what the network predicts (`prediction_type`),
//! and the settings that reproduce a diffusers sampling run: `clip_sample` (and its range),
//! `timestep_spacing` with `steps_offset`, `set_alpha_to_one`, `variance_type`. Fields it does
//! not know are ignored; values it cannot honour are errors naming the field.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{BetaSchedule, DiscreteSchedule};
use crate::sampler::Spacing;
use crate::{Error, Parameterization, Result};

/// The largest `num_train_timesteps` accepted (released models use 1000; 4000 for improved
/// diffusion): a bound on what a hostile config can make the crate allocate.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

fn d_steps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_linear() -> String {
    "linear".into()
}
fn d_epsilon() -> String {
    "epsilon".into()
}
fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}
fn d_leading() -> String {
    "leading".into()
}

/// A `scheduler_config.json`, as diffusers writes it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SchedulerConfig {
    /// The diffusers scheduler class (`DDPMScheduler`, `DDIMScheduler`, `PNDMScheduler`, ...).
    #[serde(default, rename = "_class_name")]
    pub class_name: Option<String>,
    /// Training steps `T`.
    #[serde(default = "d_steps")]
    pub num_train_timesteps: usize,
    /// First beta.
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    /// Last beta.
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(default = "d_linear")]
    pub beta_schedule: String,
    /// Explicit betas (override `beta_schedule`).
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    /// `epsilon`, `v_prediction` or `sample`.
    #[serde(default = "d_epsilon")]
    pub prediction_type: String,
    /// Whether the sampler clips `x̂0` (diffusers' default: true).
    #[serde(default = "d_true")]
    pub clip_sample: bool,
    /// The clipping range `[-r, r]` (default 1).
    #[serde(default = "d_one")]
    pub clip_sample_range: f64,
    /// `leading` (default), `trailing` or `linspace`.
    #[serde(default = "d_leading")]
    pub timestep_spacing: String,
    /// Added to every inference step (SD: 1).
    #[serde(default)]
    pub steps_offset: usize,
    /// Whether DDIM/PNDM's last step goes to `ᾱ = 1` (true) or to `ᾱ_0` (false; SD).
    #[serde(default = "d_true")]
    pub set_alpha_to_one: bool,
    /// `fixed_small`, `fixed_large`, `learned`, `learned_range` (DDPM).
    #[serde(default)]
    pub variance_type: Option<String>,
    /// Zero terminal SNR rescaling (refused: `ᾱ_{T−1} = 0` has no Boomerang start there).
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::from_json("{}").unwrap_or_else(|_| unreachable_default())
    }
}

// `from_json("{}")` cannot fail: every field has a default.
fn unreachable_default() -> SchedulerConfig {
    SchedulerConfig {
        class_name: None,
        num_train_timesteps: 1000,
        beta_start: d_beta_start(),
        beta_end: d_beta_end(),
        beta_schedule: d_linear(),
        trained_betas: None,
        prediction_type: d_epsilon(),
        clip_sample: true,
        clip_sample_range: 1.0,
        timestep_spacing: d_leading(),
        steps_offset: 0,
        set_alpha_to_one: true,
        variance_type: None,
        rescale_betas_zero_snr: false,
    }
}

impl SchedulerConfig {
    /// Parse `scheduler_config.json` text and check its values.
    pub fn from_json(text: &str) -> Result<Self> {
        let c: Self =
            serde_json::from_str(text).map_err(|e| Error::param("scheduler config", format!("invalid JSON: {e}")))?;
        c.check()?;
        Ok(c)
    }

    /// Read a `scheduler_config.json` file, or the one in a folder.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = if path.is_dir() {
            path.join("scheduler_config.json")
        } else {
            path.to_path_buf()
        };
        let meta = std::fs::metadata(&file).map_err(|e| Error::io(&file, e))?;
        if !meta.is_file() || meta.len() > 16 << 20 {
            return Err(Error::checkpoint(
                &file,
                "not a regular scheduler_config.json file of at most 16 MB",
            ));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        Self::from_json(&text).map_err(|e| Error::checkpoint(&file, e.to_string()))
    }

    /// Where a model's `scheduler_config.json` may be, first match wins: the `scheduler/`
    /// subfolder of a diffusers folder, the folder itself (or the weight file's folder), and
    /// for a `<pipeline>/unet/` folder its sibling `scheduler/`.
    pub fn find(model: &Path) -> Option<PathBuf> {
        let base = if model.is_dir() {
            model.to_path_buf()
        } else {
            model.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        let mut dirs = vec![base.join("scheduler"), base.clone()];
        if let Some(parent) = base.parent() {
            dirs.push(parent.join("scheduler"));
        }
        dirs.into_iter()
            .map(|d| d.join("scheduler_config.json"))
            .find(|f| f.is_file())
    }

    fn check(&self) -> Result<()> {
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&self.num_train_timesteps) {
            return Err(Error::param(
                "num_train_timesteps",
                format!(
                    "must lie in 2..={MAX_TRAIN_TIMESTEPS}, got {}",
                    self.num_train_timesteps
                ),
            ));
        }
        if let Some(b) = &self.trained_betas {
            if b.len() > MAX_TRAIN_TIMESTEPS {
                return Err(Error::param(
                    "trained_betas",
                    format!("{} betas; at most {MAX_TRAIN_TIMESTEPS}", b.len()),
                ));
            }
        }
        if !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0) {
            return Err(Error::param(
                "clip_sample_range",
                format!("must be positive, got {}", self.clip_sample_range),
            ));
        }
        if self.steps_offset >= self.num_train_timesteps {
            return Err(Error::param(
                "steps_offset",
                format!(
                    "must be below num_train_timesteps ({}), got {}",
                    self.num_train_timesteps, self.steps_offset
                ),
            ));
        }
        Ok(())
    }

    /// What the network predicts.
    pub fn parameterization(&self) -> Result<Parameterization> {
        match self.prediction_type.as_str() {
            "epsilon" => Ok(Parameterization::Epsilon),
            "v_prediction" => Ok(Parameterization::VPrediction),
            "sample" => Ok(Parameterization::Sample),
            other => Err(unsupported("prediction_type", other)),
        }
    }

    /// The training schedule as a [`BetaSchedule`] (`trained_betas` have none).
    pub fn beta_schedule(&self) -> Result<BetaSchedule> {
        if self.trained_betas.is_some() {
            return Err(Error::param(
                "trained_betas",
                "explicit betas have no named beta schedule",
            ));
        }
        let (num_train_timesteps, beta_start, beta_end) = (self.num_train_timesteps, self.beta_start, self.beta_end);
        Ok(match self.beta_schedule.as_str() {
            "linear" => BetaSchedule::Linear {
                num_train_timesteps,
                beta_start,
                beta_end,
            },
            "scaled_linear" => BetaSchedule::ScaledLinear {
                num_train_timesteps,
                beta_start,
                beta_end,
            },
            "squaredcos_cap_v2" => BetaSchedule::Cosine { num_train_timesteps },
            other => return Err(unsupported("beta_schedule", other)),
        })
    }

    /// The training noise schedule.
    pub fn schedule(&self) -> Result<DiscreteSchedule> {
        if self.rescale_betas_zero_snr {
            return Err(Error::Incompatible(
                "rescale_betas_zero_snr gives ᾱ = 0 at the last step, which this crate's discrete \
                 schedules refuse; the model's schedule cannot be reproduced"
                    .into(),
            ));
        }
        match &self.trained_betas {
            Some(b) => DiscreteSchedule::from_betas(b.clone()),
            None => self.beta_schedule()?.build(),
        }
    }

    /// The `x̂0` clipping range, if the config clips.
    pub fn clip_range(&self) -> Option<f64> {
        self.clip_sample.then_some(self.clip_sample_range)
    }

    /// Where the last reverse step lands, for
    /// [`BoomerangBuilder::final_alpha_bar`](crate::BoomerangBuilder::final_alpha_bar): `None`
    /// (clean data) unless a DDIM or PNDM config says `set_alpha_to_one: false`, which ends
    /// at `ᾱ_0` of the training schedule.
    pub fn final_alpha_bar(&self) -> Result<Option<f64>> {
        let multistep = matches!(self.class_name.as_deref(), Some("DDIMScheduler" | "PNDMScheduler"));
        if self.set_alpha_to_one || !multistep {
            return Ok(None);
        }
        Ok(Some(self.schedule()?.alpha_bar(0)?))
    }

    /// The inference grid diffusers' `set_timesteps(steps)` makes with this config's
    /// `timestep_spacing` and `steps_offset`, as [`Spacing::Steps`].
    pub fn spacing(&self, steps: usize) -> Result<Spacing> {
        Spacing::diffusers(
            self.num_train_timesteps,
            steps,
            &self.timestep_spacing,
            self.steps_offset,
        )
    }
}

fn unsupported(name: &'static str, value: &str) -> Error {
    Error::param(name, format!("`{value}` is not supported"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_config_reads_every_setting() {
        // Stable Diffusion 1.5's scheduler/scheduler_config.json (PNDMScheduler).
        let c = SchedulerConfig::from_json(
            r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false,
                "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null, "clip_sample": false}"#,
        )
        .unwrap();
        assert_eq!(c.parameterization().unwrap(), Parameterization::Epsilon);
        assert_eq!(c.steps_offset, 1);
        assert_eq!(c.clip_range(), None);
        let a0 = c.final_alpha_bar().unwrap().unwrap();
        assert!((a0 - (1.0 - 0.00085)).abs() < 1e-12);
        let Spacing::Steps(steps) = c.spacing(10).unwrap() else {
            panic!("diffusers spacings are explicit step lists")
        };
        assert_eq!(steps, vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    }

    #[test]
    fn defaults_are_diffusers_defaults() {
        let c = SchedulerConfig::from_json("{}").unwrap();
        assert_eq!(c, SchedulerConfig::default());
        assert_eq!(c.beta_schedule().unwrap(), BetaSchedule::ddpm());
        assert_eq!(c.clip_range(), Some(1.0));
        assert_eq!(c.final_alpha_bar().unwrap(), None);
    }

    #[test]
    fn hostile_and_unsupported_values_are_errors() {
        for text in [
            "[]x",
            r#"{"num_train_timesteps": 1.5}"#,
            r#"{"num_train_timesteps": 4000000000}"#,
            r#"{"num_train_timesteps": 1}"#,
            r#"{"beta_start": "a"}"#,
            r#"{"steps_offset": 1000}"#,
            r#"{"clip_sample_range": -1}"#,
        ] {
            assert!(SchedulerConfig::from_json(text).is_err(), "{text}");
        }
        let c = SchedulerConfig::from_json(r#"{"beta_schedule": "sigmoid"}"#).unwrap();
        assert!(c.schedule().is_err());
        let c = SchedulerConfig::from_json(r#"{"prediction_type": "flow"}"#).unwrap();
        assert!(c.parameterization().is_err());
        let c = SchedulerConfig::from_json(r#"{"trained_betas": [0.1, 0.2, 0.3]}"#).unwrap();
        assert_eq!(c.schedule().unwrap().num_steps(), 3);
    }
}
