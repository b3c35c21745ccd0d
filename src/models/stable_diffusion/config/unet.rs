//! `unet/config.json`: diffusers' `UNet2DConditionModel` settings, and the per-block
//! plan the network is built from.

use std::path::Path;

use serde::Deserialize;

use super::activation::activation;
use super::defaults::{d_default, d_eps5, d_four, d_one, d_positional, d_silu, d_three, d_true};
use super::read::{read_json, unsupported, with_path};
use super::values::{PerBlock, SampleSize};
use crate::models::config_json;
use crate::{Error, Result};

fn d_unet_blocks_out() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_unet_down() -> Vec<String> {
    [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn d_unet_up() -> Vec<String> {
    [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
fn d_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_layers2() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn d_tlayers() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn d_heads8() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn d_xattn() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn d_only_cross() -> PerBlock<bool> {
    PerBlock::One(false)
}
fn d_groups32() -> Option<usize> {
    Some(32)
}
fn d_down_pad() -> usize {
    1
}

/// `unet/config.json`: diffusers' `UNet2DConditionModel`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UNetConfig {
    /// Latent side the model was trained at (64 for SD1.x and SD2-base, 96 for SD2 768-v).
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    /// Latent channels in.
    #[serde(default = "d_four")]
    pub in_channels: usize,
    /// Channels out.
    #[serde(default = "d_four")]
    pub out_channels: usize,
    /// Map the input `x` to `2x − 1` first.
    #[serde(default)]
    pub center_input_sample: bool,
    /// Timestep sinusoid ordered `[cos, sin]` instead of `[sin, cos]`.
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// Frequency shift of the timestep sinusoid.
    #[serde(default)]
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, highest resolution first.
    #[serde(default = "d_unet_down")]
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn` (the only mid block implemented).
    #[serde(default = "d_mid_block")]
    pub mid_block_type: Option<String>,
    /// `UpBlock2D` or `CrossAttnUpBlock2D`, lowest resolution first.
    #[serde(default = "d_unet_up")]
    pub up_block_types: Vec<String>,
    /// Whether `attn1` attends to the text instead of to itself (one flag or one per block).
    #[serde(default = "d_only_cross")]
    pub only_cross_attention: PerBlock<bool>,
    /// The mid block's `only_cross_attention` (defaults to a single-flag `only_cross_attention`).
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    /// Channels of each resolution level.
    #[serde(default = "d_unet_blocks_out")]
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block (up blocks have one more).
    #[serde(default = "d_layers2")]
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the stride-2 downsampling convolutions (1: symmetric; 0: pad right/bottom).
    #[serde(default = "d_down_pad")]
    pub downsample_padding: usize,
    /// The mid block's residual divisor.
    #[serde(default = "d_one")]
    pub mid_block_scale_factor: f64,
    /// Activation (`silu`/`swish`, `gelu`, `mish`).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// GroupNorm groups.
    #[serde(default = "d_groups32")]
    pub norm_num_groups: Option<usize>,
    /// GroupNorm / LayerNorm epsilon.
    #[serde(default = "d_eps5")]
    pub norm_eps: f64,
    /// Width of the text embeddings (768 for SD1, 1024 for SD2).
    #[serde(default = "d_xattn")]
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks per attention layer.
    #[serde(default = "d_tlayers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// Attention HEAD COUNT per block, despite its name (diffusers issue #2011): SD1 has 8
    /// heads everywhere, SD2 `[5, 10, 20, 20]` (head size 64).
    #[serde(default = "d_heads8")]
    pub attention_head_dim: PerBlock<usize>,
    /// Refused if set (diffusers itself refuses it).
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Two text encoders' transformers side by side (not implemented; refused).
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Linear `proj_in`/`proj_out` (SD2) instead of 1×1 convolutions (SD1).
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Compute attention scores in f32 (SD2.1 768-v needs it in f16).
    #[serde(default)]
    pub upcast_attention: bool,
    /// `default` only (`scale_shift` is refused).
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// Refused if true.
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    /// ResNet residual divisor.
    #[serde(default = "d_one")]
    pub resnet_out_scale_factor: f64,
    /// `positional` only.
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    /// Width of the time embedding (default `4 × block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// Refused if set.
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    /// Refused if set.
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    /// Refused if set (LCM guidance embedding).
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// Kernel of `conv_in`.
    #[serde(default = "d_three")]
    pub conv_in_kernel: usize,
    /// Kernel of `conv_out`.
    #[serde(default = "d_three")]
    pub conv_out_kernel: usize,
    /// Refused if set.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Refused if set.
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// Refused if set (SDXL's text-time embedding).
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Refused if set.
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    /// Refused if set.
    #[serde(default)]
    pub encoder_hid_dim_type: Option<String>,
    /// `default` only.
    #[serde(default = "d_default")]
    pub attention_type: String,
    /// Refused if set.
    #[serde(default)]
    pub cross_attention_norm: Option<String>,
    /// Refused if set.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<serde_json::Value>,
    /// Refused if true.
    #[serde(default)]
    pub class_embeddings_concat: bool,
}

/// What one down or up block of the UNet has, after resolving per-block settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BlockPlan {
    pub cross_attention: bool,
    pub heads: usize,
    pub cross_attention_dim: usize,
    pub only_cross_attention: bool,
    pub transformer_layers: usize,
    pub layers: usize,
}

impl UNetConfig {
    /// Parse `config.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        config_json::parse(text).map_err(|f| Error::param("unet config", f.describe("config.json")))
    }

    /// Read and validate `unet/config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        c.validate().map_err(|e| with_path(e, path))?;
        Ok(c)
    }

    /// Check that every setting is one this port implements.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::param("block_out_channels", "is empty"));
        }
        if self.block_out_channels.contains(&0) || self.in_channels == 0 || self.out_channels == 0 {
            return Err(Error::param("block_out_channels", "channel counts must be positive"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::param(
                "down_block_types/up_block_types",
                format!(
                    "{} down and {} up blocks for {n} entries of block_out_channels",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            ));
        }
        for t in &self.down_block_types {
            if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
                return Err(unsupported("down_block_types", t));
            }
        }
        for t in &self.up_block_types {
            if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
                return Err(unsupported("up_block_types", t));
            }
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => return Err(unsupported("mid_block_type", &format!("{other:?}"))),
        }
        let groups = self
            .norm_num_groups
            .ok_or_else(|| Error::param("norm_num_groups", "null is not supported"))?;
        if groups == 0 {
            return Err(Error::param("norm_num_groups", "must be positive"));
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| c % groups != 0) {
            return Err(Error::param(
                "norm_num_groups",
                format!("{groups} groups do not divide {c} channels"),
            ));
        }
        activation(&self.act_fn)?;
        let checks = [
            ("num_attention_heads", self.num_attention_heads.is_some()),
            ("dual_cross_attention", self.dual_cross_attention),
            ("resnet_time_scale_shift", self.resnet_time_scale_shift != "default"),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
            ("time_embedding_type", self.time_embedding_type != "positional"),
            ("time_embedding_act_fn", self.time_embedding_act_fn.is_some()),
            ("timestep_post_act", self.timestep_post_act.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("class_embed_type", self.class_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            ("class_embeddings_concat", self.class_embeddings_concat),
            ("addition_embed_type", self.addition_embed_type.is_some()),
            (
                "encoder_hid_dim",
                self.encoder_hid_dim.is_some() || self.encoder_hid_dim_type.is_some(),
            ),
            ("attention_type", self.attention_type != "default"),
            ("cross_attention_norm", self.cross_attention_norm.is_some()),
            (
                "reverse_transformer_layers_per_block",
                self.reverse_transformer_layers_per_block
                    .as_ref()
                    .is_some_and(|v| !v.is_null()),
            ),
        ];
        if let Some((name, _)) = checks.iter().find(|(_, bad)| *bad) {
            return Err(Error::param(
                name,
                "this setting is not implemented by the Stable Diffusion port (SD 1.x/2.x \
                 configurations leave it at its default)",
            ));
        }
        for (k, name) in [
            (self.conv_in_kernel, "conv_in_kernel"),
            (self.conv_out_kernel, "conv_out_kernel"),
        ] {
            if k % 2 == 0 {
                return Err(Error::param(name, format!("must be odd, got {k}")));
            }
        }
        if self.downsample_padding > 1 {
            return Err(Error::param("downsample_padding", "must be 0 or 1"));
        }
        for p in self.down_plans()? {
            if p.cross_attention && (p.heads == 0 || p.cross_attention_dim == 0 || p.transformer_layers == 0) {
                return Err(Error::param(
                    "attention_head_dim",
                    "head counts, cross_attention_dim and transformer layers must be positive",
                ));
            }
            if p.layers == 0 {
                return Err(Error::param("layers_per_block", "must be positive"));
            }
        }
        for (i, p) in self.down_plans()?.iter().enumerate() {
            let c = self.block_out_channels[i];
            if p.cross_attention && !c.is_multiple_of(p.heads) {
                return Err(Error::param(
                    "attention_head_dim",
                    format!("{} heads do not divide the {c} channels of block {i}", p.heads),
                ));
            }
        }
        Ok(())
    }

    /// The time embedding width.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(4 * self.block_out_channels[0])
    }

    /// The text-embedding width the first block expects (the width `Condition::Text` must
    /// have when all blocks agree).
    pub fn context_dim(&self) -> usize {
        match &self.cross_attention_dim {
            PerBlock::One(d) => *d,
            PerBlock::Each(v) => v.first().copied().unwrap_or(0),
        }
    }

    /// The plan of each down block (index 0 = highest resolution).
    pub(crate) fn down_plans(&self) -> Result<Vec<BlockPlan>> {
        let n = self.block_out_channels.len();
        let heads = self.attention_head_dim.expand(n, "attention_head_dim")?;
        let xdim = self.cross_attention_dim.expand(n, "cross_attention_dim")?;
        let only = self.only_cross_attention.expand(n, "only_cross_attention")?;
        let tl = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        Ok((0..n)
            .map(|i| BlockPlan {
                cross_attention: self.down_block_types[i] == "CrossAttnDownBlock2D",
                heads: heads[i],
                cross_attention_dim: xdim[i],
                only_cross_attention: only[i],
                transformer_layers: tl[i],
                layers: layers[i],
            })
            .collect())
    }

    /// The plan of each up block (index 0 = lowest resolution): the per-block lists
    /// reversed, and one more ResNet layer than the matching down block.
    pub(crate) fn up_plans(&self) -> Result<Vec<BlockPlan>> {
        let mut down = self.down_plans()?;
        down.reverse();
        Ok(down
            .into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                p.cross_attention = self.up_block_types[i] == "CrossAttnUpBlock2D";
                p.layers += 1;
                p
            })
            .collect())
    }

    /// The mid block's plan: the last down block's heads, text width and layers.
    pub(crate) fn mid_plan(&self) -> Result<BlockPlan> {
        let mut p = self
            .down_plans()?
            .pop()
            .ok_or_else(|| Error::param("block_out_channels", "is empty"))?;
        p.cross_attention = true;
        p.layers = 1;
        p.only_cross_attention = match (self.mid_block_only_cross_attention, &self.only_cross_attention) {
            (Some(v), _) => v,
            (None, PerBlock::One(v)) => *v,
            (None, PerBlock::Each(_)) => false,
        };
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd1_defaults_are_diffusers_defaults() {
        let c = UNetConfig::from_json("{}").unwrap();
        c.validate().unwrap();
        assert_eq!(c.block_out_channels, vec![320, 640, 1280, 1280]);
        assert_eq!(c.time_embed_dim(), 1280);
        let down = c.down_plans().unwrap();
        assert_eq!(down[0].heads, 8);
        assert!(!down[3].cross_attention);
        let up = c.up_plans().unwrap();
        assert_eq!(up[0].layers, 3);
        assert!(!up[0].cross_attention);
    }

    #[test]
    fn per_block_lists_and_refusals() {
        let c =
            UNetConfig::from_json(r#"{"attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024}"#).unwrap();
        c.validate().unwrap();
        assert_eq!(c.up_plans().unwrap()[1].heads, 20);
        assert_eq!(c.mid_plan().unwrap().heads, 20);
        let bad = UNetConfig::from_json(r#"{"addition_embed_type": "text_time"}"#).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("addition_embed_type"));
        let bad = UNetConfig::from_json(r#"{"attention_head_dim": [5, 10]}"#).unwrap();
        assert!(bad.validate().is_err());
    }
}
