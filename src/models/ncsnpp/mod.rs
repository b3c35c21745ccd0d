//! DLSM (Chao et al., ICLR 2022, "Denoising Likelihood Score Matching for Conditional
//! Score-based Data Generation"): NCSN++ score models on the VE SDE, DLSM's
//! time-conditional classifier, and classifier guidance.
//!
//! - [`NcsnppNet`]: the score network (`models/ncsnpp.py`), a [`TchModule`](crate::models::TchModule) predicting the
//!   score ([`Parameterization::Score`](crate::Parameterization::Score)) from `x` in `[0, 1]`
//!   ([`DataRange::ZeroToOne`](crate::DataRange::ZeroToOne), unless `data.centered`) at
//!   the VE noise level σ ([`TimeInput::Sigma`](crate::TimeInput::Sigma)); a σ outside the
//!   SDE's `[σ_min, σ_max]` is an error;
//! - [`TimeCondResNet`] + [`ClassifierGuide`]: the classifier (`models/resnet_cond.py`) and
//!   `∇x log p(y | x, σ)` by autograd, a [`Guide`] for
//!   [`Guidance::Classifier`]: the score becomes
//!   `s + scale·∇x log p(y | x, σ)` in every predictor AND corrector call (the crate applies
//!   guidance on every network call), as DLSM's `sampling.py` does;
//! - [`NcsnppConfig`] / [`ResNetCondConfig`]: the original `ml_collections` configs (read
//!   from a `config.json` dump), with DLSM's CIFAR-10/100 presets;
//! - [`load`] / [`load_classifier`]: the released checkpoints as they are (training
//!   containers with an unnamed EMA list; see [`Weights`]), or flat safetensors.
//!
//! # Samplers
//!
//! DLSM samples with the predictor-corrector sampler: reverse-diffusion predictor and one
//! Langevin corrector step with `snr = 0.16` per level ([`DlsmModel::dlsm_sampler`],
//! [`Sampler::predictor_corrector`]). For Boomerang the default here is the predictor
//! alone ([`default_sampler`], `corrector_steps = 0`): the corrector's step size
//! `2(snr·‖z‖/‖s‖)²` does not shrink with σ when the score is small next to `1/σ`, and then
//! each corrector step is a Markov step towards the whole marginal `p_σ` that contracts
//! the memory of `x0` by about `1 − 2·snr² ≈ 0.95`; over the ~`t·N` steps of a run from `t`
//! that forgets `x0` (on broad data such as the analytic Gaussian, `t = 0.1` returns
//! samples as far from the input as fresh ones). On image data, whose score at small σ is
//! `~√d/σ`, the step is `~2·snr²·σ²` and the corrector stays local; pass
//! [`DlsmModel::dlsm_sampler`] to sample exactly as DLSM does.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use boomerang::models::ncsnpp::{self, ClassifierLoadOptions, DlsmLoadOptions};
//! use boomerang::{Condition, TimeSpec};
//! use rand::SeedableRng;
//!
//! // DLSM's released files (Google Drive): Cifar10/score/checkpoint.pth and a classifier.
//! let model = ncsnpp::load("Cifar10/score/checkpoint.pth", &DlsmLoadOptions::cifar10())?;
//! let guide = ncsnpp::load_classifier("Cifar10/classifier/ours/checkpoint.pth", &ClassifierLoadOptions::default())?;
//! let guidance = model.classifier_guidance(guide, 1.0)?;
//! let runner = model
//!     .into_builder()
//!     .guidance(guidance)
//!     .condition(Condition::Class(vec![3]))
//!     .build()?;
//! let x0 = ndarray::Array4::<f32>::from_elem((4, 3, 32, 32), 0.5); // images in [0, 1]
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let x = runner.run(x0.view(), TimeSpec::fraction(0.2), &mut rng)?;
//! # Ok::<(), boomerang::Error>(())
//! ```

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod guide;
pub mod layers;
mod loader;
pub mod network;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::models::{Device, Kind, TchDenoiser};
use crate::schedule::VeSde;
use crate::{Boomerang, BoomerangBuilder, Error, Guidance, Guide, Result, Sampler, Spacing};

pub use checkpoint::{matches_classifier_keys, matches_container_keys, matches_keys, Weights, WeightsOrigin};
pub use classifier::TimeCondResNet;
pub use config::{NcsnppConfig, ResNetCondConfig};
pub use guide::ClassifierGuide;
pub use layers::{ParamInfo, Role};
pub use network::NcsnppNet;

pub(crate) use loader::load_pipeline;

/// The smallest SDE time DLSM's samplers reach (score_sde's `sampling_eps` for VE).
pub const T_MIN: f64 = 1e-5;

/// The sampler this family uses for Boomerang by default: DLSM's reverse-diffusion
/// predictor without the Langevin corrector (see the [module docs](self#samplers) for
/// why), i.e. `Sampler::PredictorCorrector { snr: 0.16, corrector_steps: 0 }`.
pub fn default_sampler() -> Sampler {
    Sampler::PredictorCorrector {
        snr: 0.16,
        corrector_steps: 0,
    }
}

/// DLSM's own sampler for `config`: reverse-diffusion predictor plus `sampling.n_steps_each`
/// Langevin steps at `sampling.snr` (`corrector = none`: no steps). Other predictors and
/// correctors are refused, naming the field.
pub fn dlsm_sampler(config: &NcsnppConfig) -> Result<Sampler> {
    let s = &config.sampling;
    if !s.method.eq_ignore_ascii_case("pc") {
        return Err(Error::Incompatible(format!(
            "sampling.method `{}`: only DLSM's predictor-corrector (pc) sampler is mapped",
            s.method
        )));
    }
    if !s.predictor.eq_ignore_ascii_case("reverse_diffusion") {
        return Err(Error::Incompatible(format!(
            "sampling.predictor `{}`: only reverse_diffusion is mapped",
            s.predictor
        )));
    }
    let corrector_steps = match s.corrector.to_ascii_lowercase().as_str() {
        "langevin" => s.n_steps_each,
        "none" => 0,
        other => {
            return Err(Error::Incompatible(format!(
                "sampling.corrector `{other}`: only langevin and none are mapped"
            )))
        }
    };
    Ok(Sampler::PredictorCorrector {
        snr: s.snr,
        corrector_steps,
    })
}

/// The VE SDE of `config`: `σ(t) = σ_min(σ_max/σ_min)^t` over `[1e-5, 1]` with `N =
/// model.num_scales` steps.
pub fn schedule(config: &NcsnppConfig) -> Result<VeSde> {
    let m = &config.model;
    VeSde::new(m.sigma_min, m.sigma_max, m.num_scales, T_MIN)
}

/// How [`load`] reads a score model.
#[derive(Debug, Clone, PartialEq)]
pub struct DlsmLoadOptions {
    /// Where the network runs.
    pub device: Device,
    /// Its compute kind (`f32`, `f16`, `bf16`).
    pub kind: Kind,
    /// The configuration; `None`: a `config.json` beside the weights (the original config
    /// dumped as JSON), else recognised from the weights' shapes (DLSM's CIFAR
    /// architecture, with the SDE read off the `sigmas` buffer and the dataset unknown).
    pub config: Option<NcsnppConfig>,
    /// EMA or raw weights of a training container.
    pub weights: Weights,
    /// Chunk size of the network calls.
    pub max_batch: usize,
}

impl Default for DlsmLoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            kind: Kind::Float,
            config: None,
            weights: Weights::Ema,
            max_batch: crate::models::DEFAULT_MAX_BATCH,
        }
    }
}

impl DlsmLoadOptions {
    /// DLSM's CIFAR-10 score model on the CPU in f32.
    pub fn cifar10() -> Self {
        Self {
            config: Some(NcsnppConfig::dlsm_cifar10()),
            ..Self::default()
        }
    }

    /// DLSM's CIFAR-100 score model on the CPU in f32.
    pub fn cifar100() -> Self {
        Self {
            config: Some(NcsnppConfig::dlsm_cifar100()),
            ..Self::default()
        }
    }
}

/// A loaded DLSM score model with what it needs to run: the denoiser, its VE SDE and
/// the family's default sampler.
#[derive(Debug)]
pub struct DlsmModel {
    /// The score network behind the [`Denoiser`](crate::Denoiser) seam.
    pub denoiser: TchDenoiser<NcsnppNet>,
    /// The VE SDE it was trained on.
    pub schedule: VeSde,
    /// The sampler for Boomerang ([`default_sampler`]).
    pub sampler: Sampler,
    /// Which weights were loaded.
    pub origin: WeightsOrigin,
}

impl DlsmModel {
    /// The configuration.
    pub fn config(&self) -> &NcsnppConfig {
        self.denoiser.model().config()
    }

    /// The classes of the training dataset (`CIFAR10`: 10, `CIFAR100`: 100), if known.
    pub fn num_classes(&self) -> Option<usize> {
        self.config().num_classes()
    }

    /// DLSM's predictor-corrector sampler as configured (snr 0.16, one Langevin step).
    pub fn dlsm_sampler(&self) -> Result<Sampler> {
        dlsm_sampler(self.config())
    }

    /// Classifier guidance with weight `scale` (DLSM's `scaling_factor`, 1 by default),
    /// checking that the classifier has as many classes as the score model's dataset when
    /// that is known.
    pub fn classifier_guidance(&self, guide: Arc<dyn Guide>, scale: f64) -> Result<Guidance> {
        if let (Some(want), Some(got)) = (self.num_classes(), guide.num_classes()) {
            if want != got {
                return Err(Error::Incompatible(format!(
                    "the classifier has {got} classes but the score model was trained on {} ({want} classes)",
                    self.config().data.dataset
                )));
            }
        }
        Ok(Guidance::classifier(scale, guide))
    }

    /// A Boomerang builder with the schedule, [`sampler`](DlsmModel::sampler) and every
    /// step from `t` ([`Spacing::Full`]).
    pub fn into_builder(self) -> BoomerangBuilder<TchDenoiser<NcsnppNet>> {
        let sampler = self.sampler;
        Boomerang::builder(self.denoiser, self.schedule)
            .sampler(sampler)
            .spacing(Spacing::Full)
    }
}

/// The weights file and an optional `config.json` for `path` (a file, or a folder holding
/// `checkpoint.pth` or one `.safetensors`/`.pth`/`.pt` file).
fn locate(path: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    let (weights, dir) = if path.is_dir() {
        let named = path.join("checkpoint.pth");
        let weights = if named.is_file() {
            named
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .and_then(|e| e.to_str())
                            .is_some_and(|e| matches!(e, "safetensors" | "pth" | "pt"))
                })
                .collect();
            found.sort();
            match found.len() {
                1 => found.remove(0),
                0 => {
                    return Err(Error::checkpoint(
                        path,
                        "no checkpoint.pth, .safetensors, .pth or .pt file in this folder",
                    ))
                }
                n => {
                    return Err(Error::checkpoint(
                        path,
                        format!("{n} weight files in this folder ({found:?}): name the one to load"),
                    ))
                }
            }
        };
        (weights, path.to_path_buf())
    } else {
        (
            path.to_path_buf(),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let cfg = dir.join("config.json");
    Ok((weights, cfg.is_file().then_some(cfg)))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Load a DLSM / NCSN++ score model: a training container (`checkpoint.pth`, EMA weights
/// by default), a flat safetensors or `torch.save` state dict, or a folder holding one.
/// The configuration is `options.config`, else `config.json` beside the weights, else
/// recognised from the weights (see [`DlsmLoadOptions::config`]).
pub fn load(path: impl AsRef<Path>, options: &DlsmLoadOptions) -> Result<DlsmModel> {
    let (weights_path, config_json) = locate(path.as_ref())?;
    let given = match (&options.config, &config_json) {
        (Some(c), _) => {
            c.validate()?;
            Some(c.clone())
        }
        (None, Some(p)) => {
            Some(NcsnppConfig::from_json(&read_text(p)?).map_err(|e| Error::checkpoint(p, e.to_string()))?)
        }
        (None, None) => None,
    };
    let layout = match &given {
        Some(c) => Some(c.layout()?),
        None => None,
    };
    let (sd, origin) = checkpoint::read_score(&weights_path, layout.as_deref(), options.weights)?;
    let config = match given {
        Some(c) => c,
        None => {
            let c = checkpoint::infer_config(&sd, &weights_path)?;
            checkpoint::check_inferred_order(&sd, origin, &c.layout()?, &weights_path)?;
            c
        }
    };
    let schedule = schedule(&config)?;
    let net = NcsnppNet::from_state_dict(config, sd, options.device, options.kind, &weights_path)?;
    Ok(DlsmModel {
        denoiser: TchDenoiser::new(net).with_max_batch(options.max_batch)?,
        schedule,
        sampler: default_sampler(),
        origin,
    })
}

/// How [`load_classifier`] reads a classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierLoadOptions {
    /// Where the classifier runs.
    pub device: Device,
    /// Its compute kind.
    pub kind: Kind,
    /// The configuration; `None`: the `classifier` section of a `config.json` beside the
    /// weights, else inferred from the weights' shapes (Fourier scale 16 and pooling
    /// kernel 4 assumed: DLSM's).
    pub config: Option<ResNetCondConfig>,
    /// Refuse a classifier with another number of classes (e.g. the score model's
    /// dataset's).
    pub expected_classes: Option<usize>,
    /// Chunk size of the classifier calls.
    pub max_batch: usize,
}

impl Default for ClassifierLoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            kind: Kind::Float,
            config: None,
            expected_classes: None,
            max_batch: crate::models::DEFAULT_MAX_BATCH,
        }
    }
}

/// Load DLSM's classifier as a [`ClassifierGuide`] (training container `{'optimizer',
/// 'model', 'step'}` or a flat file, or a folder holding one).
pub fn load_classifier_guide(path: impl AsRef<Path>, options: &ClassifierLoadOptions) -> Result<ClassifierGuide> {
    let (weights_path, config_json) = locate(path.as_ref())?;
    let sd = checkpoint::read_classifier(&weights_path)?;
    let config = match (&options.config, &config_json) {
        (Some(c), _) => c.clone(),
        (None, Some(p)) => {
            let text = read_text(p)?;
            let has_section = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .is_some_and(|v| v.get("classifier").is_some());
            if has_section {
                ResNetCondConfig::from_json(&text).map_err(|e| Error::checkpoint(p, e.to_string()))?
            } else {
                checkpoint::infer_classifier_config(&sd, &weights_path)?
            }
        }
        (None, None) => checkpoint::infer_classifier_config(&sd, &weights_path)?,
    };
    if let Some(want) = options.expected_classes {
        if want != config.num_classes {
            return Err(Error::Incompatible(format!(
                "{}: the classifier has {} classes, but {want} are expected (the score model's dataset)",
                weights_path.display(),
                config.num_classes
            )));
        }
    }
    let net = TimeCondResNet::from_state_dict(config, sd, options.device, options.kind, &weights_path)?;
    ClassifierGuide::new(net).with_max_batch(options.max_batch)
}

/// [`load_classifier_guide`] as the `Arc<dyn Guide>` that [`Guidance::classifier`] takes.
pub fn load_classifier(path: impl AsRef<Path>, options: &ClassifierLoadOptions) -> Result<Arc<dyn Guide>> {
    Ok(Arc::new(load_classifier_guide(path, options)?))
}
