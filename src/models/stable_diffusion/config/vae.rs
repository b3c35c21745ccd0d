//! `vae/config.json`: diffusers' `AutoencoderKL` settings.

use std::path::Path;

use serde::Deserialize;

use super::activation::activation;
use super::defaults::{d_four, d_silu, d_three, d_true};
use super::read::{read_json, unsupported, with_path};
use super::values::SampleSize;
use crate::models::config_json;
use crate::{Error, Result};

fn d_vae_blocks_out() -> Vec<usize> {
    vec![64]
}
fn d_vae_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_vae_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_layers1() -> usize {
    1
}
fn d_groups_vae() -> usize {
    32
}

/// `vae/config.json`: diffusers' `AutoencoderKL`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VaeConfig {
    /// Image channels in.
    #[serde(default = "d_three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "d_three")]
    pub out_channels: usize,
    /// `DownEncoderBlock2D` per level.
    #[serde(default = "d_vae_down")]
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D` per level.
    #[serde(default = "d_vae_up")]
    pub up_block_types: Vec<String>,
    /// Channels of each level (SD: `[128, 256, 512, 512]`).
    #[serde(default = "d_vae_blocks_out")]
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per encoder block (decoder blocks have one more).
    #[serde(default = "d_layers1")]
    pub layers_per_block: usize,
    /// Activation.
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// Latent channels (4 for SD).
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    /// GroupNorm groups.
    #[serde(default = "d_groups_vae")]
    pub norm_num_groups: usize,
    /// Image side the VAE was trained at.
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    /// Latents are `(z − shift_factor) × scaling_factor` (SD1 and SD2: 0.18215).
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// Subtracted before scaling (absent for SD1/SD2).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Run the VAE in f32 even when the pipeline runs in f16.
    #[serde(default = "d_true")]
    pub force_upcast: bool,
    /// Whether `quant_conv` exists.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` exists.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have their attention layer.
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
}

impl VaeConfig {
    /// Parse `config.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        config_json::parse(text).map_err(|f| Error::param("vae config", f.describe("config.json")))
    }

    /// Read and validate `vae/config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        c.validate().map_err(|e| with_path(e, path))?;
        Ok(c)
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::param(
                "block_out_channels",
                "needs one entry per down block and per up block, and at least one",
            ));
        }
        if let Some(t) = self.down_block_types.iter().find(|t| *t != "DownEncoderBlock2D") {
            return Err(unsupported("down_block_types", t));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(unsupported("up_block_types", t));
        }
        if self.norm_num_groups == 0
            || self
                .block_out_channels
                .iter()
                .any(|c| *c == 0 || c % self.norm_num_groups != 0)
        {
            return Err(Error::param(
                "norm_num_groups",
                format!(
                    "{} groups must divide every entry of block_out_channels",
                    self.norm_num_groups
                ),
            ));
        }
        if self.layers_per_block == 0 || self.latent_channels == 0 {
            return Err(Error::param(
                "layers_per_block",
                "layers and latent channels must be positive",
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(Error::param(
                "scaling_factor",
                format!("must be positive, got {}", self.scaling_factor),
            ));
        }
        activation(&self.act_fn)?;
        Ok(())
    }

    /// How much the encoder shrinks each side: `2^(levels − 1)` (8 for SD).
    pub fn downsample_factor(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}
