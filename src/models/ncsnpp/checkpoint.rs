//! DLSM's checkpoint files as released, and flat conversions of them.
//!
//! A score checkpoint is `torch.save({'optimizer': …, 'model': …, 'ema': …, 'step': …})`
//! (`run_lib_score.py` / score_sde's `save_checkpoint`):
//!
//! - `model`: the `nn.DataParallel` state dict (`module.`-prefixed): the buffer `sigmas`,
//!   the Fourier frequencies `all_modules.0.W` (an `nn.Parameter` with
//!   `requires_grad=False`) and the trainable parameters, in registration order;
//! - `ema`: `ExponentialMovingAverage.state_dict()` = `{'decay', 'num_updates',
//!   'shadow_params'}`, where `shadow_params` is an UNNAMED list of
//!   `[p.clone() for p in model.parameters() if p.requires_grad]`: the buffer is not a
//!   parameter and `W` is filtered out, so for DLSM's CIFAR models the list has 962
//!   tensors for 964 state-dict entries.
//!
//! Sampling uses the EMA weights (`ema.copy_to(model.parameters())`). Here the shadow list
//! is zipped with the trainable entries of the network's own layout in registration order
//! (checked against the names and shapes of `model`), and `sigmas` and `W` come from
//! `model`. A container without `ema` is refused unless the raw training weights are asked
//! for explicitly ([`Weights::Raw`]); flat files (safetensors, or a `torch.save` of a plain
//! state dict, e.g. converted EMA weights) are used as they are.
//!
//! Classifier checkpoints are `{'optimizer', 'model', 'step'}` without EMA; their `model`
//! (or a flat file) is used.

use std::path::Path;

use super::config::{NcsnppConfig, ResNetCondConfig};
use super::layers::{ParamInfo, Role};
use crate::checkpoint::{self, Checkpoint, Select, StateDict, Value};
use crate::{Error, Result};

/// Which weights of a score-model training checkpoint to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Weights {
    /// The EMA weights (what DLSM samples with); a container without them is an error.
    #[default]
    Ema,
    /// The raw training weights of `model` (for checkpoints saved without EMA, or to
    /// compare). Flat files are used as they are either way.
    Raw,
}

/// Where a score model's weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsOrigin {
    /// The EMA shadow list of a training container, named by the model's layout.
    Ema,
    /// The `model` entry of a training container.
    Raw,
    /// A flat state dict (safetensors or a plain `torch.save`).
    Flat,
}

const PREFIX: &str = "module.";

fn strip(k: &str) -> &str {
    k.strip_prefix(PREFIX).unwrap_or(k)
}

/// Whether the tensor names of a state dict (a flat file's keys, or those of a training
/// container's `model` entry; `module.` prefixes allowed) are an NCSN++ score model's:
/// the `sigmas` buffer and `all_modules.<i>.…` layers with `GroupNorm_0`. No tensor data
/// is needed.
///
/// ```
/// use boomerang::models::ncsnpp::matches_keys;
/// assert!(matches_keys(&["module.sigmas", "module.all_modules.0.W", "module.all_modules.4.GroupNorm_0.weight"]));
/// assert!(!matches_keys(&["conv_in.weight", "temb.dense.0.weight"]));
/// ```
pub fn matches_keys(keys: &[&str]) -> bool {
    let mut sigmas = false;
    let mut modules = false;
    let mut norm = false;
    for k in keys.iter().map(|k| strip(k)) {
        if k.starts_with("classifier.") {
            return false;
        }
        sigmas |= k == "sigmas";
        if let Some(rest) = k.strip_prefix("all_modules.") {
            modules = true;
            let mut parts = rest.splitn(2, '.');
            let index_ok = parts.next().is_some_and(|i| i.parse::<usize>().is_ok());
            norm |= index_ok && parts.next().is_some_and(|r| r.starts_with("GroupNorm_0."));
        }
    }
    sigmas && modules && norm
}

/// Whether the top-level keys of a checkpoint are a score_sde / DLSM training container
/// (`model` and `ema`, with `optimizer` or `step`).
pub fn matches_container_keys(keys: &[&str]) -> bool {
    let has = |k: &str| keys.contains(&k);
    has("model") && has("ema") && (has("optimizer") || has("step"))
}

/// Whether the tensor names of a state dict are DLSM's time-conditional classifier's
/// (`classifier.condition_modules.0.W`, `classifier.classifier.conv1.weight`,
/// `classifier.classifier.linear.weight`; `module.` prefixes allowed).
///
/// ```
/// use boomerang::models::ncsnpp::matches_classifier_keys;
/// assert!(matches_classifier_keys(&[
///     "module.classifier.condition_modules.0.W",
///     "module.classifier.classifier.conv1.weight",
///     "module.classifier.classifier.linear.weight",
/// ]));
/// ```
pub fn matches_classifier_keys(keys: &[&str]) -> bool {
    let names: Vec<&str> = keys.iter().map(|k| strip(k)).collect();
    [
        "classifier.condition_modules.0.W",
        "classifier.classifier.conv1.weight",
        "classifier.classifier.linear.weight",
    ]
    .iter()
    .all(|k| names.contains(k))
}

/// The EMA shadow list's exclusions for a layout: every entry that is not a trainable
/// parameter (`sigmas`, `all_modules.0.W`).
fn non_trainable(layout: &[ParamInfo]) -> Vec<&str> {
    layout
        .iter()
        .filter(|p| p.role != Role::Trainable)
        .map(|p| p.name.as_str())
        .collect()
}

/// Read a score model's weights as a flat state dict (names without `module.`).
///
/// `layout` is the network's (if its configuration is known; else DLSM's default, `sigmas`
/// and `all_modules.0.W` non-trainable, is assumed for the EMA zip and the result is
/// checked against the inferred configuration afterwards).
pub(crate) fn read_score(
    path: &Path,
    layout: Option<&[ParamInfo]>,
    weights: Weights,
) -> Result<(StateDict, WeightsOrigin)> {
    let default_exclude = ["sigmas", "all_modules.0.W"];
    let exclude: Vec<&str> = match layout {
        Some(l) => non_trainable(l),
        None => default_exclude.to_vec(),
    };
    let first = match weights {
        Weights::Ema => checkpoint::load_state_dict_with(
            path,
            &Select::EmaShadow {
                model: &["model"],
                shadow: &["ema", "shadow_params"],
                exclude: &exclude,
            },
        )
        .map(|sd| (sd, WeightsOrigin::Ema)),
        Weights::Raw => {
            checkpoint::load_state_dict_with(path, &Select::Path(&["model"])).map(|sd| (sd, WeightsOrigin::Raw))
        }
    };
    let (mut sd, origin) = match first {
        Ok(found) => found,
        // Not the usual container: look at the whole tree (this materializes every
        // tensor, the optimizer's too, so it is only the fallback).
        Err(e) => {
            let ckpt = Checkpoint::open(path)?;
            let format = ckpt.format();
            let root = ckpt.into_root();
            match classify(&root) {
                Layout::Flat => (take_tensor_dict(root, path)?, WeightsOrigin::Flat),
                Layout::ContainerWithoutEma if weights == Weights::Ema => {
                    return Err(Error::checkpoint(
                        path,
                        "this training checkpoint has no `ema` entry (DLSM samples with the EMA weights, \
                         `ema.shadow_params`): pass Weights::Raw (DlsmLoadOptions::weights) to use the raw \
                         training weights of `model` instead",
                    ))
                }
                // A container whose EMA zip (or `model` entry) failed: that error says why.
                Layout::Container | Layout::ContainerWithoutEma => return Err(e),
                Layout::Other => {
                    return Err(Error::checkpoint(
                        path,
                        format!(
                            "not an NCSN++ score checkpoint ({format:?}): expected a training container \
                             {{'model', 'ema', 'optimizer', 'step'}} or a flat state dict; {}",
                            root.outline()
                        ),
                    ))
                }
            }
        }
    };
    sd.strip_prefix(PREFIX);
    if origin == WeightsOrigin::Ema {
        check_registration_order(&sd, layout, path)?;
    }
    Ok((sd, origin))
}

/// The EMA zip follows the container's `model` order; the network's own registration
/// order must be the same, or the shadow tensors would land on the wrong names.
fn check_registration_order(sd: &StateDict, layout: Option<&[ParamInfo]>, path: &Path) -> Result<()> {
    let Some(layout) = layout else {
        return Ok(()); // checked once the configuration is inferred
    };
    let stored: Vec<&str> = sd.keys().collect();
    let expected: Vec<&str> = layout.iter().map(|p| p.name.as_str()).collect();
    if stored != expected {
        let first = stored
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(stored.len().min(expected.len()));
        return Err(Error::checkpoint(
            path,
            format!(
                "the checkpoint's `model` entries are not in the network's registration order (entry {first}: \
                 checkpoint `{}`, network `{}`; {} vs {} entries), so the unnamed EMA shadow list cannot be \
                 assigned: the configuration does not describe this checkpoint",
                stored.get(first).copied().unwrap_or("<end>"),
                expected.get(first).copied().unwrap_or("<end>"),
                stored.len(),
                expected.len()
            ),
        ));
    }
    Ok(())
}

/// Re-check an EMA state dict whose configuration was inferred after reading.
pub(crate) fn check_inferred_order(
    sd: &StateDict,
    origin: WeightsOrigin,
    layout: &[ParamInfo],
    path: &Path,
) -> Result<()> {
    if origin == WeightsOrigin::Ema {
        check_registration_order(sd, Some(layout), path)?;
    }
    Ok(())
}

enum Layout {
    Flat,
    Container,
    ContainerWithoutEma,
    Other,
}

fn classify(root: &Value) -> Layout {
    if root.is_tensor_dict() && root.as_dict().is_some_and(|d| !d.is_empty()) {
        return Layout::Flat;
    }
    let model_ok = root.get("model").is_some_and(|m| m.is_tensor_dict());
    match (model_ok, root.get("ema")) {
        (true, Some(_)) => Layout::Container,
        (true, None) => Layout::ContainerWithoutEma,
        _ => Layout::Other,
    }
}

fn take_tensor_dict(root: Value, path: &Path) -> Result<StateDict> {
    let Value::Dict(entries) = root else {
        return Err(Error::checkpoint(path, "not a dict of tensors"));
    };
    let mut sd = StateDict::new();
    for (k, v) in entries {
        match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => {
                sd.insert(name, t);
            }
            (k, v) => {
                return Err(Error::checkpoint(
                    path,
                    format!("entry {k:?} is {}, not a named tensor", v.summary()),
                ))
            }
        }
    }
    Ok(sd)
}

/// The released architecture a state dict has, if any: its names and shapes equal to a
/// preset's layout (with the `sigmas` length free). The SDE's σ range and `N` are then read
/// off the `sigmas` buffer (`exp(linspace(ln σ_max, ln σ_min, N))`). The dataset cannot be
/// told from the weights (DLSM's CIFAR-10 and CIFAR-100 models are identical in shape): it
/// is left empty.
pub(crate) fn infer_config(sd: &StateDict, path: &Path) -> Result<NcsnppConfig> {
    let sigmas = sd.get("sigmas").ok_or_else(|| {
        Error::checkpoint(
            path,
            "cannot infer the NCSN++ configuration: no `sigmas` buffer; pass the original config (config.json \
             beside the weights, or DlsmLoadOptions::config)",
        )
    })?;
    let s = sigmas.to_f32_vec()?;
    if s.len() < 2 || s.iter().any(|v| !(v.is_finite() && *v > 0.0)) || s[0] <= s[s.len() - 1] {
        return Err(Error::checkpoint(
            path,
            format!(
                "the `sigmas` buffer ({} values) is not a descending list of positive noise levels",
                s.len()
            ),
        ));
    }
    let mut cfg = NcsnppConfig::dlsm_cifar10();
    cfg.data.dataset = String::new();
    let snap = |v: f64, preset: f64| {
        if ((v - preset) / preset).abs() < 1e-5 {
            preset
        } else {
            v
        }
    };
    cfg.model.sigma_max = snap(s[0] as f64, cfg.model.sigma_max);
    cfg.model.sigma_min = snap(s[s.len() - 1] as f64, cfg.model.sigma_min);
    cfg.model.num_scales = s.len();
    let layout = cfg.layout()?;
    let mut diffs = Vec::new();
    for p in &layout {
        match sd.get(&p.name) {
            None => diffs.push(format!("missing `{}`", p.name)),
            Some(t) if t.shape != p.shape => {
                diffs.push(format!("`{}` has shape {:?}, DLSM's {:?}", p.name, t.shape, p.shape))
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> = layout.iter().map(|p| p.name.as_str()).collect();
    for k in sd.keys().filter(|k| !known.contains(k)) {
        diffs.push(format!("extra `{k}`"));
    }
    if !diffs.is_empty() {
        let n = diffs.len();
        diffs.truncate(3);
        return Err(Error::checkpoint(
            path,
            format!(
                "these NCSN++ weights are not DLSM's released CIFAR architecture ({n} differences, e.g. {}), and \
                 the architecture cannot be read off the weights alone: put the original config as config.json \
                 beside the weights, or pass DlsmLoadOptions::config",
                diffs.join("; ")
            ),
        ));
    }
    Ok(cfg)
}

/// Read a classifier's weights as a flat state dict (names without `module.`): the
/// `model` entry of a training container, or a flat file.
pub(crate) fn read_classifier(path: &Path) -> Result<StateDict> {
    let mut sd = checkpoint::load_state_dict_with(path, &Select::Auto)?;
    sd.strip_prefix(PREFIX);
    let keys: Vec<&str> = sd.keys().collect();
    if !matches_classifier_keys(&keys) {
        return Err(Error::checkpoint(
            path,
            format!(
                "not a DLSM time-conditional classifier: no `classifier.condition_modules.0.W` / \
                 `classifier.classifier.conv1.weight` / `classifier.classifier.linear.weight` among its {} \
                 tensors (e.g. {:?})",
                keys.len(),
                keys.iter().take(3).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(sd)
}

/// The classifier architecture a state dict has: `nf` (Fourier `W`), stem width, input
/// channels, blocks per stage and classes from the shapes. The Fourier scale and the
/// pooling kernel are not stored: DLSM's values (16, 4) are assumed.
pub(crate) fn infer_classifier_config(sd: &StateDict, path: &Path) -> Result<ResNetCondConfig> {
    let shape = |k: &str| -> Result<&[usize]> {
        sd.get(k)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| Error::checkpoint(path, format!("cannot infer the classifier: no `{k}`")))
    };
    let w = shape("classifier.condition_modules.0.W")?;
    let conv1 = shape("classifier.classifier.conv1.weight")?;
    let linear = shape("classifier.classifier.linear.weight")?;
    if w.len() != 1 || conv1.len() != 4 || linear.len() != 2 {
        return Err(Error::checkpoint(path, "classifier weights of unexpected ranks"));
    }
    let mut num_blocks = Vec::with_capacity(4);
    for k in 1..=4 {
        let mut b = 0;
        while sd.contains_key(&format!("classifier.classifier.layer{k}.{b}.conv1.weight")) {
            b += 1;
        }
        num_blocks.push(b);
    }
    let cfg = ResNetCondConfig {
        nf: w[0],
        num_classes: linear[0],
        in_channels: conv1[1],
        width: conv1[0],
        num_blocks,
        ..ResNetCondConfig::dlsm_cifar10()
    };
    cfg.validate()
        .map_err(|e| Error::checkpoint(path, format!("inferred classifier configuration: {e}")))?;
    Ok(cfg)
}

impl NcsnppConfig {
    /// The released architecture a flat state dict (names without `module.`) has: DLSM's
    /// CIFAR NCSN++, with the SDE's σ range and `N` read off its `sigmas` buffer. The
    /// dataset cannot be told from the weights (CIFAR-10 and CIFAR-100 models have the same
    /// shapes) and is left empty. Any other architecture is an error asking for the config.
    pub fn infer_from_state_dict(sd: &crate::checkpoint::StateDict) -> Result<Self> {
        infer_config(sd, std::path::Path::new("<state dict>"))
    }
}

impl ResNetCondConfig {
    /// The architecture a flat classifier state dict has (`nf`, width, channels, blocks
    /// per stage and classes from the shapes; Fourier scale 16 and pooling kernel 4, which
    /// are not stored, assumed).
    pub fn infer_from_state_dict(sd: &crate::checkpoint::StateDict) -> Result<Self> {
        infer_classifier_config(sd, std::path::Path::new("<state dict>"))
    }
}
