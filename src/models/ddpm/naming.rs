//! DDPM checkpoint files and key namings: the original (Ho et al., pesser, FastDPM, DDIM)
//! names the network's `VarStore` uses, and diffusers' `UNet2DModel` names mapped onto them.

use std::path::{Path, PathBuf};

use crate::checkpoint::diffusers::model_weights;
use crate::checkpoint::StateDict;
use crate::{Error, Result};

/// Which key naming a DDPM state dict uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Ho et al. / pesser / FastDPM names (`temb.dense.0.weight`, `down.0.block.0...`).
    Original,
    /// diffusers' `UNet2DModel` names (`time_embedding.linear_1.weight`, `down_blocks...`).
    Diffusers,
    /// Neither.
    Unknown,
}

impl Naming {
    /// Detect the naming from the keys.
    pub fn detect(sd: &StateDict) -> Naming {
        Self::from_keys(sd.keys())
    }

    /// Detect the naming from key names alone (e.g. a checkpoint's header, no tensor data).
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Naming {
        let (mut original, mut diffusers) = (false, false);
        for k in keys {
            original |= k == "temb.dense.0.weight" || k.starts_with("down.0.block.");
            diffusers |= k == "time_embedding.linear_1.weight" || k.starts_with("down_blocks.");
        }
        match (original, diffusers) {
            (true, _) => Naming::Original,
            (false, true) => Naming::Diffusers,
            _ => Naming::Unknown,
        }
    }
}

#[cfg_attr(not(feature = "tch"), allow(dead_code))]
pub(crate) fn unknown_naming(path: &Path, sd: &StateDict) -> Error {
    let first: Vec<&str> = sd.keys().take(5).collect();
    Error::checkpoint(
        path,
        format!(
            "not a DDPM UNet state dict: neither original (`temb.dense.0.weight`) nor diffusers \
             (`time_embedding.linear_1.weight`) naming; its {} keys start with {first:?}",
            sd.len()
        ),
    )
}

/// The weights file and the diffusers `config.json` (if any) for `path`.
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
pub(crate) fn locate(path: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if path.is_dir() {
        let weights = model_weights(path)?.ok_or_else(|| {
            Error::checkpoint(
                path,
                "a folder without DDPM weights (no .safetensors, .ckpt, .pt, .pth or .bin file)",
            )
        })?;
        return Ok((weights.clone(), ddpm_config_beside(&weights)));
    }
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    Ok((path.to_path_buf(), ddpm_config_beside(path)))
}

/// The `config.json` in a weight file's folder, if it describes a DDPM UNet (diffusers' or
/// the original code's form).
fn ddpm_config_beside(weights: &Path) -> Option<PathBuf> {
    let config = weights.parent()?.join("config.json");
    let text = std::fs::read_to_string(&config).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    super::DdpmConfig::is_ddpm_json(&v).then_some(config)
}

/// Rename a diffusers `UNet2DModel` state dict (levels given) to the original DDPM names,
/// reshaping attention `Linear` weights `[C, C]` to 1×1 conv weights `[C, C, 1, 1]`.
///
/// | diffusers | original |
/// |---|---|
/// | `time_embedding.linear_{1,2}` | `temb.dense.{0,1}` |
/// | `down_blocks.l.resnets.i` | `down.l.block.i` |
/// | `down_blocks.l.attentions.i` | `down.l.attn.i` |
/// | `down_blocks.l.downsamplers.0.conv` | `down.l.downsample.conv` |
/// | `mid_block.resnets.{0,1}`, `mid_block.attentions.0` | `mid.block_{1,2}`, `mid.attn_1` |
/// | `up_blocks.j.*` | `up.(L−1−j).*` (diffusers counts up levels from the bottom) |
/// | `up_blocks.j.upsamplers.0.conv` | `up.(L−1−j).upsample.conv` |
/// | `conv_norm_out` | `norm_out` |
/// | resnet `time_emb_proj`, `conv_shortcut` | `temb_proj`, `nin_shortcut` |
/// | attention `group_norm`, `to_q`/`query`, `to_k`/`key`, `to_v`/`value`, `to_out.0`/`proj_attn` | `norm`, `q`, `k`, `v`, `proj_out` |
///
/// Keys it does not know are kept unchanged, so that the loader reports them as
/// unexpected.
pub fn diffusers_to_original(sd: StateDict, levels: usize) -> Result<StateDict> {
    let mut out = StateDict::new();
    for (key, mut t) in sd.into_entries() {
        let (new, is_attn_weight) = rename_diffusers_key(&key, levels);
        if is_attn_weight && t.shape.len() == 2 {
            t.shape.extend([1, 1]);
        }
        if out.insert(new.clone(), t).is_some() {
            return Err(Error::InvalidInput(format!(
                "two diffusers keys map to `{new}` (the second is `{key}`): the state dict mixes \
                 legacy and current attention names"
            )));
        }
    }
    Ok(out)
}

/// The original name of a diffusers key, and whether it is an attention projection weight.
fn rename_diffusers_key(key: &str, levels: usize) -> (String, bool) {
    let parts: Vec<&str> = key.split('.').collect();
    let resnet = |rest: &[&str]| -> Option<String> {
        let (sub, tail) = rest.split_first()?;
        let sub = match *sub {
            "norm1" | "conv1" | "norm2" | "conv2" => *sub,
            "time_emb_proj" => "temb_proj",
            "conv_shortcut" => "nin_shortcut",
            _ => return None,
        };
        Some(format!("{sub}.{}", tail.join(".")))
    };
    let attention = |rest: &[&str]| -> Option<(String, bool)> {
        let (sub, tail) = match rest {
            ["to_out", "0", tail @ ..] => ("proj_out", tail),
            [sub, tail @ ..] => (
                match *sub {
                    "group_norm" => "norm",
                    "to_q" | "query" => "q",
                    "to_k" | "key" => "k",
                    "to_v" | "value" => "v",
                    "proj_attn" => "proj_out",
                    _ => return None,
                },
                tail,
            ),
            [] => return None,
        };
        let weight = sub != "norm" && tail == ["weight"];
        Some((format!("{sub}.{}", tail.join(".")), weight))
    };
    let mapped: Option<(String, bool)> = match parts.as_slice() {
        ["time_embedding", lin, p] => match *lin {
            "linear_1" => Some((format!("temb.dense.0.{p}"), false)),
            "linear_2" => Some((format!("temb.dense.1.{p}"), false)),
            _ => None,
        },
        ["conv_in", p] => Some((format!("conv_in.{p}"), false)),
        ["conv_out", p] => Some((format!("conv_out.{p}"), false)),
        ["conv_norm_out", p] => Some((format!("norm_out.{p}"), false)),
        ["down_blocks" | "up_blocks", l, kind, rest @ ..] => {
            let is_down = parts[0] == "down_blocks";
            l.parse::<usize>().ok().filter(|&l| l < levels).and_then(|l| {
                let (dir, lvl) = if is_down { ("down", l) } else { ("up", levels - 1 - l) };
                match (*kind, rest) {
                    ("resnets", [i, r @ ..]) => resnet(r).map(|s| (format!("{dir}.{lvl}.block.{i}.{s}"), false)),
                    ("attentions", [i, r @ ..]) => attention(r).map(|(s, w)| (format!("{dir}.{lvl}.attn.{i}.{s}"), w)),
                    ("downsamplers", ["0", "conv", p]) if is_down => {
                        Some((format!("down.{lvl}.downsample.conv.{p}"), false))
                    }
                    ("upsamplers", ["0", "conv", p]) if !is_down => {
                        Some((format!("up.{lvl}.upsample.conv.{p}"), false))
                    }
                    _ => None,
                }
            })
        }
        ["mid_block", "resnets", i, rest @ ..] => {
            let name = match *i {
                "0" => Some("block_1"),
                "1" => Some("block_2"),
                _ => None,
            };
            name.and_then(|n| resnet(rest).map(|s| (format!("mid.{n}.{s}"), false)))
        }
        ["mid_block", "attentions", "0", rest @ ..] => attention(rest).map(|(s, w)| (format!("mid.attn_1.{s}"), w)),
        _ => None,
    };
    mapped.unwrap_or_else(|| (key.to_string(), false))
}

/// The registry's detection rule: DDPM UNet key names (original or diffusers naming, not a
/// cross-attention UNet), or a folder whose `config.json` describes a DDPM UNet.
pub fn matches(probe: &crate::models::Probe) -> bool {
    let unet_keys = Naming::from_keys(probe.keys.iter().map(String::as_str)) != Naming::Unknown
        && !probe.keys.iter().any(|k| k.contains(".attn2."));
    let config = probe.config.as_ref().is_some_and(super::DdpmConfig::is_ddpm_json);
    unet_keys || (probe.keys.is_empty() && config)
}
