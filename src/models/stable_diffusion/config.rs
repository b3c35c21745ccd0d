//! The JSON configuration files of a diffusers-format Stable Diffusion folder.
//!
//! Every architectural setting is read from the folder; nothing is hard-coded per SD version.
//! Defaults are diffusers' (and transformers') constructor defaults, so a `config.json` that
//! omits a field means what it means in Python. Settings this port does not implement (class
//! embeddings, added text-time embeddings, GLIGEN, spatial norms, ...) are refused by
//! [`UNetConfig::validate`] and friends with an error naming the field, instead of being
//! silently ignored.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// A setting given either once for all blocks or once per block (`attention_head_dim`,
/// `cross_attention_dim`, `layers_per_block`, ...).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// One value for every block.
    One(T),
    /// One value per down block (up blocks use the list reversed, as diffusers does).
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `n` blocks; a list must have exactly `n` entries.
    pub fn expand(&self, n: usize, name: &'static str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::param(
                name,
                format!("has {} entries but the model has {n} down blocks", v.len()),
            )),
        }
    }
}

/// `sample_size`: one side or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square.
    Square(usize),
    /// `[height, width]`.
    Rect([usize; 2]),
}

impl SampleSize {
    /// `(height, width)`.
    pub fn hw(self) -> (usize, usize) {
        match self {
            SampleSize::Square(s) => (s, s),
            SampleSize::Rect([h, w]) => (h, w),
        }
    }
}

fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}
fn d_four() -> usize {
    4
}
fn d_three() -> usize {
    3
}
fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}

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
fn d_eps5() -> f64 {
    1e-5
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
        serde_json::from_str(text).map_err(|e| Error::param("unet config", format!("invalid JSON: {e}")))
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
        serde_json::from_str(text).map_err(|e| Error::param("vae config", format!("invalid JSON: {e}")))
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

fn d_clip_act() -> String {
    "quick_gelu".into()
}
fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_inter() -> usize {
    2048
}
fn d_layers12() -> usize {
    12
}
fn d_heads() -> usize {
    8
}
fn d_pos() -> usize {
    77
}

/// `text_encoder/config.json`: transformers' `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width (768 for SD1, 1024 for SD2).
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Layers (SD2's folder stores 23 of OpenCLIP's 24: the penultimate layer's output).
    #[serde(default = "d_layers12")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Positions (77).
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD1) or `gelu` (SD2).
    #[serde(default = "d_clip_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps5")]
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    /// Parse `config.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::param("text encoder config", format!("invalid JSON: {e}")))
    }

    /// Read and validate `text_encoder/config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        c.validate().map_err(|e| with_path(e, path))?;
        Ok(c)
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::param(
                "num_attention_heads",
                format!(
                    "{} heads must divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.intermediate_size == 0 {
            return Err(Error::param("vocab_size", "sizes must be positive"));
        }
        match self.hidden_act.as_str() {
            "quick_gelu" | "gelu" | "gelu_new" | "gelu_pytorch_tanh" => Ok(()),
            other => Err(unsupported("hidden_act", other)),
        }
    }
}

/// A special token in `tokenizer_config.json` / `special_tokens_map.json`: a plain string or
/// an `AddedToken` object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TokenSpec {
    /// `"<|endoftext|>"`.
    Plain(String),
    /// `{"content": "...", "normalized": true, ...}`.
    Added {
        /// The token text.
        content: String,
        /// Matched against the normalized (lower-cased) text instead of the raw text.
        #[serde(default)]
        normalized: Option<bool>,
    },
}

impl TokenSpec {
    /// The token text.
    pub fn content(&self) -> &str {
        match self {
            TokenSpec::Plain(s) => s,
            TokenSpec::Added { content, .. } => content,
        }
    }

    /// Whether the token is matched after normalization. transformers registers plain-string
    /// special tokens with `normalized = false`; objects say it themselves (default false for
    /// special tokens).
    pub fn normalized(&self) -> bool {
        match self {
            TokenSpec::Plain(_) => false,
            TokenSpec::Added { normalized, .. } => normalized.unwrap_or(false),
        }
    }
}

/// An entry of `added_tokens_decoder` (newer `tokenizer_config.json` files).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AddedTokenEntry {
    /// The token text.
    pub content: String,
    /// Matched after normalization.
    #[serde(default)]
    pub normalized: bool,
}

/// `tokenizer/tokenizer_config.json` (and `special_tokens_map.json`, same fields).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TokenizerConfig {
    /// Sequence length (77).
    #[serde(default)]
    pub model_max_length: Option<f64>,
    /// Start token.
    #[serde(default)]
    pub bos_token: Option<TokenSpec>,
    /// End token.
    #[serde(default)]
    pub eos_token: Option<TokenSpec>,
    /// Unknown token.
    #[serde(default)]
    pub unk_token: Option<TokenSpec>,
    /// Padding token: `<|endoftext|>` for SD1, `!` for SD2.
    #[serde(default)]
    pub pad_token: Option<TokenSpec>,
    /// Extra added tokens, by id.
    #[serde(default)]
    pub added_tokens_decoder: Option<std::collections::BTreeMap<String, AddedTokenEntry>>,
    /// `CLIPTokenizer` or `CLIPTokenizerFast`.
    #[serde(default)]
    pub tokenizer_class: Option<String>,
}

impl TokenizerConfig {
    /// Read a tokenizer configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// `other`'s special tokens override this one's (transformers reads
    /// `special_tokens_map.json` after `tokenizer_config.json`).
    pub fn merged_with(mut self, other: TokenizerConfig) -> Self {
        if other.bos_token.is_some() {
            self.bos_token = other.bos_token;
        }
        if other.eos_token.is_some() {
            self.eos_token = other.eos_token;
        }
        if other.unk_token.is_some() {
            self.unk_token = other.unk_token;
        }
        if other.pad_token.is_some() {
            self.pad_token = other.pad_token;
        }
        if other.model_max_length.is_some() {
            self.model_max_length = other.model_max_length;
        }
        self
    }
}

/// `model_index.json`: which class each component folder holds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelIndex {
    /// The pipeline class, e.g. `StableDiffusionPipeline`.
    #[serde(rename = "_class_name")]
    pub class_name: String,
    /// `["diffusers", "UNet2DConditionModel"]`.
    #[serde(default)]
    pub unet: Option<(Option<String>, Option<String>)>,
    /// `["diffusers", "AutoencoderKL"]`.
    #[serde(default)]
    pub vae: Option<(Option<String>, Option<String>)>,
    /// `["transformers", "CLIPTextModel"]`.
    #[serde(default)]
    pub text_encoder: Option<(Option<String>, Option<String>)>,
    /// `["transformers", "CLIPTokenizer"]`.
    #[serde(default)]
    pub tokenizer: Option<(Option<String>, Option<String>)>,
}

impl ModelIndex {
    /// Read `model_index.json`.
    pub fn load(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// Check that the components are classes this port implements.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &'static str, entry: &Option<(Option<String>, Option<String>)>, ok: &[&str]| match entry
            .as_ref()
            .and_then(|(_, c)| c.as_deref())
        {
            None => Err(Error::param(
                name,
                "model_index.json lists no such component".to_string(),
            )),
            Some(c) if ok.contains(&c) => Ok(()),
            Some(c) => Err(Error::Incompatible(format!(
                "model_index.json: `{name}` is a {c}; this port implements {}",
                ok.join(" / ")
            ))),
        };
        check("unet", &self.unet, &["UNet2DConditionModel"])?;
        check("vae", &self.vae, &["AutoencoderKL"])?;
        check(
            "text_encoder",
            &self.text_encoder,
            &["CLIPTextModel", "CLIPTextModelWithProjection"],
        )?;
        check("tokenizer", &self.tokenizer, &["CLIPTokenizer", "CLIPTokenizerFast"])?;
        Ok(())
    }
}

/// The activations a config may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    Silu,
    Gelu,
    Mish,
}

pub(crate) fn activation(name: &str) -> Result<Activation> {
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu" => Ok(Activation::Gelu),
        "mish" => Ok(Activation::Mish),
        other => Err(unsupported("act_fn", other)),
    }
}

fn unsupported(name: &'static str, value: &str) -> Error {
    Error::param(name, format!("`{value}` is not supported by the Stable Diffusion port"))
}

fn with_path(e: Error, path: &Path) -> Error {
    Error::checkpoint(path, e.to_string())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::checkpoint(path, format!("invalid JSON: {e}")))
}

/// Apply an activation.
pub(crate) fn activate(x: &tch::Tensor, act: Activation) -> Result<tch::Tensor> {
    Ok(match act {
        Activation::Silu => x.f_silu()?,
        Activation::Gelu => x.f_gelu("none")?,
        Activation::Mish => x.f_mish()?,
    })
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
