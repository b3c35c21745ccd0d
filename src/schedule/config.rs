//! Discrete schedules as model folders describe them: diffusers' `scheduler_config.json`
//! (`beta_schedule`, `num_train_timesteps`, `beta_start`, `beta_end`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DiscreteSchedule, SchedulerConfig};
use crate::{Error, Result};

/// A named beta schedule: what training uses and what a model folder records.
///
/// ```
/// use boomerang::schedule::BetaSchedule;
/// let s = BetaSchedule::parse("cosine")?;
/// assert_eq!(s.build()?.num_steps(), 1000);
/// assert_eq!(BetaSchedule::parse("linear:1e-4:0.02")?, BetaSchedule::ddpm());
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "beta_schedule", rename_all = "snake_case")]
pub enum BetaSchedule {
    /// `β = linspace(beta_start, beta_end, T)` (DDPM: 1e-4, 0.02).
    Linear {
        /// `T`.
        num_train_timesteps: usize,
        /// `β_1`.
        beta_start: f64,
        /// `β_T`.
        beta_end: f64,
    },
    /// `β = linspace(√beta_start, √beta_end, T)²` (Stable Diffusion: 0.00085, 0.012).
    ScaledLinear {
        /// `T`.
        num_train_timesteps: usize,
        /// `β_1`.
        beta_start: f64,
        /// `β_T`.
        beta_end: f64,
    },
    /// Nichol & Dhariwal's cosine schedule with `s = 0.008` and `β ≤ 0.999` (diffusers'
    /// `squaredcos_cap_v2`).
    #[serde(rename = "squaredcos_cap_v2")]
    Cosine {
        /// `T`.
        num_train_timesteps: usize,
    },
}

impl BetaSchedule {
    /// Ho et al.'s DDPM schedule: linear from 1e-4 to 0.02 over 1000 steps.
    pub fn ddpm() -> Self {
        BetaSchedule::Linear {
            num_train_timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
        }
    }

    /// `T`.
    pub fn num_train_timesteps(&self) -> usize {
        match *self {
            BetaSchedule::Linear {
                num_train_timesteps, ..
            }
            | BetaSchedule::ScaledLinear {
                num_train_timesteps, ..
            }
            | BetaSchedule::Cosine { num_train_timesteps } => num_train_timesteps,
        }
    }

    /// The schedule itself (validates the parameters).
    pub fn build(&self) -> Result<DiscreteSchedule> {
        match *self {
            BetaSchedule::Linear {
                num_train_timesteps,
                beta_start,
                beta_end,
            } => DiscreteSchedule::linear(num_train_timesteps, beta_start, beta_end),
            BetaSchedule::ScaledLinear {
                num_train_timesteps,
                beta_start,
                beta_end,
            } => DiscreteSchedule::scaled_linear(num_train_timesteps, beta_start, beta_end),
            BetaSchedule::Cosine { num_train_timesteps } => DiscreteSchedule::cosine(num_train_timesteps, 0.008, 0.999),
        }
    }

    /// Parse a command-line form: `linear`, `linear:START:END`, `scaled-linear`,
    /// `scaled-linear:START:END` or `cosine`, each optionally followed by `@T` (default
    /// 1000 steps; linear defaults to DDPM's 1e-4..0.02, scaled-linear to Stable
    /// Diffusion's 0.00085..0.012).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::param(
                "schedule",
                format!(
                    "`{text}`: {why}; use linear, linear:START:END, scaled-linear[:START:END] or \
                     cosine, optionally with @STEPS (e.g. cosine@1000)"
                ),
            )
        };
        let (body, steps) = match text.split_once('@') {
            Some((b, s)) => (
                b,
                s.trim()
                    .parse::<usize>()
                    .map_err(|_| bad("STEPS must be a whole number"))?,
            ),
            None => (text, 1000),
        };
        let mut parts = body.split(':').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let numbers: Vec<f64> = parts
            .map(|p| p.parse::<f64>().map_err(|_| bad("START and END must be numbers")))
            .collect::<Result<_>>()?;
        let ends = |default: (f64, f64)| match numbers.as_slice() {
            [] => Ok(default),
            [a, b] => Ok((*a, *b)),
            _ => Err(bad("give both START and END, or neither")),
        };
        let schedule = match name {
            "linear" => {
                let (beta_start, beta_end) = ends((1e-4, 0.02))?;
                BetaSchedule::Linear {
                    num_train_timesteps: steps,
                    beta_start,
                    beta_end,
                }
            }
            "scaled-linear" | "scaled_linear" => {
                let (beta_start, beta_end) = ends((0.00085, 0.012))?;
                BetaSchedule::ScaledLinear {
                    num_train_timesteps: steps,
                    beta_start,
                    beta_end,
                }
            }
            "cosine" | "squaredcos_cap_v2" if numbers.is_empty() => BetaSchedule::Cosine {
                num_train_timesteps: steps,
            },
            "cosine" | "squaredcos_cap_v2" => return Err(bad("cosine takes no START:END")),
            _ => return Err(bad("unknown schedule")),
        };
        schedule.build()?;
        Ok(schedule)
    }

    /// Read diffusers' `scheduler_config.json` text. Missing fields take diffusers'
    /// defaults (linear, 1000 steps, 1e-4..0.02); other schedules are an error.
    pub fn from_scheduler_config(text: &str) -> Result<Self> {
        let schedule = SchedulerConfig::from_json(text)?.beta_schedule()?;
        schedule.build()?;
        Ok(schedule)
    }

    /// Read `dir/scheduler_config.json`.
    pub fn read(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("scheduler_config.json");
        let schedule = SchedulerConfig::read(&path)?
            .beta_schedule()
            .map_err(|e| Error::checkpoint(&path, e.to_string()))?;
        schedule.build().map_err(|e| Error::checkpoint(&path, e.to_string()))?;
        Ok(schedule)
    }

    /// diffusers' `DDPMScheduler` config for this schedule (ε-prediction, fixed-small
    /// variance, clipped x̂0: DDPM's sampling settings).
    pub fn to_scheduler_config(&self) -> String {
        let mut v = serde_json::json!({
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": self.num_train_timesteps(),
            "prediction_type": "epsilon",
            "variance_type": "fixed_small",
            "clip_sample": true,
        });
        match *self {
            BetaSchedule::Linear {
                beta_start, beta_end, ..
            } => {
                v["beta_schedule"] = "linear".into();
                v["beta_start"] = beta_start.into();
                v["beta_end"] = beta_end.into();
            }
            BetaSchedule::ScaledLinear {
                beta_start, beta_end, ..
            } => {
                v["beta_schedule"] = "scaled_linear".into();
                v["beta_start"] = beta_start.into();
                v["beta_end"] = beta_end.into();
            }
            BetaSchedule::Cosine { .. } => v["beta_schedule"] = "squaredcos_cap_v2".into(),
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_configs_round_trip() {
        for s in [
            BetaSchedule::ddpm(),
            BetaSchedule::ScaledLinear {
                num_train_timesteps: 1000,
                beta_start: 0.00085,
                beta_end: 0.012,
            },
            BetaSchedule::Cosine {
                num_train_timesteps: 4000,
            },
        ] {
            assert_eq!(
                BetaSchedule::from_scheduler_config(&s.to_scheduler_config()).unwrap(),
                s
            );
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<BetaSchedule>(&json).unwrap(), s);
        }
    }

    #[test]
    fn diffusers_defaults_and_sd_config() {
        // Stable Diffusion 1.5's scheduler/scheduler_config.json (PNDMScheduler).
        let sd = r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                     "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false,
                     "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null}"#;
        let s = BetaSchedule::from_scheduler_config(sd).unwrap();
        assert_eq!(
            s,
            BetaSchedule::ScaledLinear {
                num_train_timesteps: 1000,
                beta_start: 0.00085,
                beta_end: 0.012
            }
        );
        assert_eq!(BetaSchedule::from_scheduler_config("{}").unwrap(), BetaSchedule::ddpm());
    }

    #[test]
    fn bad_configs_and_forms_are_errors() {
        for text in [
            "[]x",
            r#"{"beta_schedule": "sigmoid"}"#,
            r#"{"num_train_timesteps": 1.5}"#,
            r#"{"beta_start": "a"}"#,
            r#"{"trained_betas": [0.1, 0.2]}"#,
            r#"{"beta_start": 0.5, "beta_end": 1.5}"#,
        ] {
            assert!(BetaSchedule::from_scheduler_config(text).is_err(), "{text}");
        }
        for text in [
            "",
            "quadratic",
            "linear:1e-4",
            "cosine:0.1:0.2",
            "linear@x",
            "linear@1",
            "linear:a:b",
        ] {
            let e = BetaSchedule::parse(text).unwrap_err().to_string();
            assert!(e.contains("schedule") || e.contains("step"), "{text}: {e}");
        }
        assert_eq!(
            BetaSchedule::parse("scaled-linear@500").unwrap(),
            BetaSchedule::ScaledLinear {
                num_train_timesteps: 500,
                beta_start: 0.00085,
                beta_end: 0.012
            }
        );
    }
}
