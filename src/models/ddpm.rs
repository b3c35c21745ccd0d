//! The DDPM UNet of Ho et al. (2020), as converted to PyTorch by pesser/pytorch_diffusion
//! and used unchanged by FastDPM (`model.py`), and as packaged by diffusers
//! (`UNet2DModel`, the `google/ddpm-*` checkpoints).
//!
//! The network predicts `ε` from `x_t ∈ [-1, 1]` and a FLOAT training step `t` (FastDPM's
//! VAR grids call it at non-integer `t`):
//!
//! - time embedding: DDPM's sinusoid of width `ch`, frequencies
//!   `exp(−ln(10⁴)·i/(ch/2 − 1))`, `[sin, cos]`, then `Linear(ch, 4ch) → swish →
//!   Linear(4ch, 4ch)` (`temb.dense.{0,1}`);
//! - `conv_in`, then per level `l` (resolution `R/2^l`, width `ch·ch_mult[l]`)
//!   `num_res_blocks` ResNet blocks, each followed by self-attention when the level's
//!   resolution is in `attn_resolutions`, then a stride-2 downsample (pad `(0,1,0,1)`,
//!   3×3 conv) except at the last level;
//! - middle: ResNet block, attention, ResNet block;
//! - up path mirrored with `num_res_blocks + 1` blocks per level on the skip connections,
//!   nearest ×2 upsampling + 3×3 conv;
//! - `norm_out → swish → conv_out`.
//!
//! ResNet block: `GN → swish → conv3 (+ temb_proj(swish(temb))) → GN → swish → dropout →
//! conv3`, with a 1×1 `nin_shortcut` when the width changes. Attention: GroupNorm, 1×1 conv
//! `q, k, v`, softmax of `qᵀk·C^−½` over the keys, 1×1 `proj_out`, residual. GroupNorm has
//! 32 groups and `eps = 1e-6`; dropout is the identity here (inference).
//!
//! [`DdpmUNet`]'s `VarStore` paths are the original key names (`temb.dense.0.weight`,
//! `down.1.attn.0.q.weight`, `mid.block_1.norm1.bias`, `up.0.upsample.conv.weight`,
//! `norm_out.weight`, ...): loading pesser's or DDIM's checkpoints is a name-for-name copy.
//! diffusers' names are mapped onto them by [`diffusers_to_original`].

use std::path::{Path, PathBuf};

use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::loading::{self, LoadOptions};
use super::nn::{Conv2d, GroupNorm, Linear};
use super::TchModule;
use crate::checkpoint::{StateDict, TensorData};
use crate::{Condition, DataRange, DenoiserSpec, Error, Parameterization, Result, TimeInput};

/// How the stride-2 downsampling convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DownsamplePadding {
    /// Zero-pad one row at the bottom and one column at the right (TensorFlow's "SAME" for
    /// stride 2), then a 3×3 convolution without padding: DDPM (diffusers
    /// `downsample_padding = 0`).
    Asymmetric,
    /// A 3×3 convolution with padding 1 on every side (diffusers `downsample_padding = 1`,
    /// its default).
    Symmetric,
}

/// The architecture of a DDPM UNet.
///
/// The presets are the released configurations (FastDPM `config.py`, pesser
/// `pytorch_diffusion/diffusion.py`, DDIM `configs/celeba.yml`); the fields past
/// `resamp_with_conv` generalize to the `UNet2DModel` variants diffusers can describe with
/// this block structure, and keep DDPM's values in every preset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DdpmConfig {
    /// Base width `ch` (the time-embedding input width; `4·ch` is the embedding width).
    pub ch: usize,
    /// Width multiplier per level, highest resolution first.
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per level on the way down (one more per level on the way up).
    pub num_res_blocks: usize,
    /// Resolutions at which the ResNet blocks are followed by self-attention.
    pub attn_resolutions: Vec<usize>,
    /// Dropout probability in the ResNet blocks (training only; inference ignores it).
    pub dropout: f64,
    /// Image side length the network was trained at.
    pub resolution: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Convolutions in the down/upsampling layers (`true` in every release); `false` means
    /// 2×2 average pooling and plain nearest-neighbour upsampling.
    pub resamp_with_conv: bool,
    /// GroupNorm groups (32).
    pub norm_groups: usize,
    /// GroupNorm epsilon (1e-6).
    pub norm_eps: f64,
    /// Order of the time embedding's halves: `false` is `[sin, cos]` (DDPM), `true`
    /// `[cos, sin]`.
    pub flip_sin_to_cos: bool,
    /// The embedding's frequencies are `exp(−ln(10⁴)·i/(ch/2 − freq_shift))` (DDPM: 1).
    pub freq_shift: f64,
    /// Channels per attention head; `None` is a single head over all channels (DDPM).
    pub attention_head_dim: Option<usize>,
    /// Padding of the downsampling convolution.
    pub downsample_padding: DownsamplePadding,
    /// Whether the middle block has its attention layer (`true` in DDPM).
    pub mid_attention: bool,
}

impl DdpmConfig {
    fn ddpm(ch_mult: &[usize], dropout: f64, resolution: usize) -> Self {
        Self {
            ch: 128,
            ch_mult: ch_mult.to_vec(),
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            dropout,
            resolution,
            in_channels: 3,
            out_ch: 3,
            resamp_with_conv: true,
            norm_groups: 32,
            norm_eps: 1e-6,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            attention_head_dim: None,
            downsample_padding: DownsamplePadding::Asymmetric,
            mid_attention: true,
        }
    }

    /// CIFAR-10 32×32 (Ho et al.; FastDPM `cifar10_cfg`): ch 128, ch_mult (1,2,2,2),
    /// 2 blocks, attention at 16, dropout 0.1; 35.75M parameters.
    pub fn cifar10() -> Self {
        Self::ddpm(&[1, 2, 2, 2], 0.1, 32)
    }

    /// CelebA 64×64 (DDIM's checkpoint; FastDPM `celeba64_cfg`): ch 128, ch_mult
    /// (1,2,2,2,4), 2 blocks, attention at 16, dropout 0.1; 78.70M parameters.
    pub fn celeba64() -> Self {
        Self::ddpm(&[1, 2, 2, 2, 4], 0.1, 64)
    }

    /// LSUN bedroom / cat / church 256×256 (Ho et al.; FastDPM `lsun_cfg`): ch 128,
    /// ch_mult (1,1,2,2,4,4), 2 blocks, attention at 16, dropout 0; 113.67M parameters.
    pub fn lsun256() -> Self {
        Self::ddpm(&[1, 1, 2, 2, 4, 4], 0.0, 256)
    }

    /// A tiny DDPM-style network for tests, examples and benchmarks: ch 16, ch_mult (1,2),
    /// 1 block, attention at 8, 16×16 RGB, GroupNorm(8); 177k parameters. (The parity
    /// fixture `tests/fixtures/ddpm/tiny2_diffusers` has this architecture.)
    ///
    /// A GroupNorm with a single channel per group would cancel the time embedding (it is a
    /// per-channel bias), so tiny widths need fewer than DDPM's 32 groups.
    pub fn tiny() -> Self {
        Self {
            ch: 16,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![8],
            dropout: 0.0,
            resolution: 16,
            norm_groups: 8,
            ..Self::cifar10()
        }
    }

    /// The released configurations, by name: `cifar10`, `celeba64`, `lsun256` (aliases
    /// `lsun_bedroom`, `lsun_cat`, `lsun_church`).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "cifar10" => Ok(Self::cifar10()),
            "celeba64" | "celeba" => Ok(Self::celeba64()),
            "lsun256" | "lsun_bedroom" | "lsun_cat" | "lsun_church" => Ok(Self::lsun256()),
            _ => Err(Error::param(
                "preset",
                format!("unknown DDPM preset `{name}`; use cifar10, celeba64 or lsun256"),
            )),
        }
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.ch_mult.len()
    }

    /// Resolution of level `l`.
    pub fn level_resolution(&self, l: usize) -> usize {
        self.resolution >> l
    }

    /// Whether level `l` has attention after its ResNet blocks.
    pub fn level_has_attention(&self, l: usize) -> bool {
        self.attn_resolutions.contains(&self.level_resolution(l))
    }

    /// Width of the time embedding (`4·ch`).
    pub fn temb_ch(&self) -> usize {
        4 * self.ch
    }

    /// Check that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let p = |reason: String| Err(Error::param("DdpmConfig", reason));
        if self.ch < 4 {
            return p(format!("ch must be at least 4, got {}", self.ch));
        }
        if self.ch_mult.is_empty() || self.ch_mult.contains(&0) {
            return p(format!(
                "ch_mult must be non-empty and positive, got {:?}",
                self.ch_mult
            ));
        }
        if self.num_res_blocks == 0 {
            return p("num_res_blocks must be at least 1".into());
        }
        if self.in_channels == 0 || self.out_ch == 0 {
            return p("in_channels and out_ch must be positive".into());
        }
        let down = 1usize << (self.levels() - 1).min(usize::BITS as usize - 1);
        if self.resolution == 0 || self.resolution % down != 0 {
            return p(format!(
                "resolution {} must be a positive multiple of 2^(levels−1) = {down}",
                self.resolution
            ));
        }
        if self.norm_groups == 0 || !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return p("norm_groups must be positive and norm_eps positive and finite".into());
        }
        for &m in &self.ch_mult {
            let c = self.ch * m;
            if c % self.norm_groups != 0 {
                return p(format!(
                    "width {c} (ch·{m}) is not divisible by norm_groups {}",
                    self.norm_groups
                ));
            }
        }
        if self.ch % self.norm_groups != 0 {
            return p(format!(
                "ch {} is not divisible by norm_groups {}",
                self.ch, self.norm_groups
            ));
        }
        let half = (self.ch / 2) as f64;
        if !(self.freq_shift.is_finite() && half - self.freq_shift > 0.0) {
            return p(format!(
                "freq_shift {} must be finite and below ch/2 = {half}",
                self.freq_shift
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return p(format!("dropout must lie in [0, 1), got {}", self.dropout));
        }
        let level_res: Vec<usize> = (0..self.levels()).map(|l| self.level_resolution(l)).collect();
        for r in &self.attn_resolutions {
            if !level_res.contains(r) {
                return p(format!(
                    "attention resolution {r} is not the resolution of any level {level_res:?}"
                ));
            }
        }
        if let Some(d) = self.attention_head_dim {
            let last = self.ch * self.ch_mult[self.levels() - 1];
            let mut widths: Vec<usize> = (0..self.levels())
                .filter(|&l| self.level_has_attention(l))
                .map(|l| self.ch * self.ch_mult[l])
                .collect();
            if self.mid_attention {
                widths.push(last);
            }
            if let Some(c) = widths.iter().find(|&&c| d == 0 || c % d != 0) {
                return p(format!(
                    "attention width {c} is not divisible by attention_head_dim {d}"
                ));
            }
        }
        Ok(())
    }

    /// The denoiser spec: `ε`-prediction, continuous (float) step, data in `[-1, 1]`,
    /// `in_channels` × `resolution` × `resolution`.
    pub fn spec(&self) -> DenoiserSpec {
        DenoiserSpec::new(
            Parameterization::Epsilon,
            TimeInput::ContinuousStep,
            DataRange::MinusOneToOne,
        )
        .with_channels(self.in_channels)
        .with_image_size(self.resolution, self.resolution)
    }

    /// Build a configuration from diffusers' `UNet2DModel` `config.json` text.
    ///
    /// Accepted: `DownBlock2D`/`AttnDownBlock2D` levels mirrored by `UpBlock2D`/
    /// `AttnUpBlock2D`, `UNetMidBlock2D`, positional time embedding, `silu`, default
    /// time-scale shift, conv resampling, any `block_out_channels` that are multiples of the
    /// first, `attention_head_dim` (null = one head), `norm_num_groups`, `norm_eps`,
    /// `flip_sin_to_cos`, `freq_shift`, `downsample_padding` 0 or 1, `add_attention`.
    /// Anything else (class embeddings, Fourier time, scale-shift norm, ...) is refused
    /// with [`Error::Incompatible`] naming the field. Absent fields take `UNet2DModel`'s
    /// defaults.
    pub fn from_diffusers_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidInput(format!("diffusers config.json is not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Error::InvalidInput("diffusers config.json is not a JSON object".into()))?;
        let get = |k: &str| obj.get(k).filter(|x| !x.is_null());
        let bad = |k: &str, why: String| Error::Incompatible(format!("diffusers config `{k}`: {why}"));
        let uint = |k: &str, default: Option<usize>| -> Result<usize> {
            match get(k) {
                None => default.ok_or_else(|| bad(k, "is required".into())),
                Some(x) => x
                    .as_u64()
                    .map(|u| u as usize)
                    .ok_or_else(|| bad(k, format!("expected a non-negative integer, got {x}"))),
            }
        };
        let float = |k: &str, default: f64| -> Result<f64> {
            match get(k) {
                None => Ok(default),
                Some(x) => x.as_f64().ok_or_else(|| bad(k, format!("expected a number, got {x}"))),
            }
        };
        let boolean = |k: &str, default: bool| -> Result<bool> {
            match get(k) {
                None => Ok(default),
                Some(x) => x
                    .as_bool()
                    .ok_or_else(|| bad(k, format!("expected true/false, got {x}"))),
            }
        };
        let string = |k: &str, default: &str| -> Result<String> {
            match get(k) {
                None => Ok(default.to_string()),
                Some(x) => x
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(k, format!("expected a string, got {x}"))),
            }
        };
        let strings = |k: &str| -> Result<Vec<String>> {
            let arr = get(k)
                .and_then(|x| x.as_array())
                .ok_or_else(|| bad(k, "is required (a list of block types)".into()))?;
            arr.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(k, format!("{x} is not a string")))
                })
                .collect()
        };
        let require = |k: &str, got: String, ok: &[&str]| -> Result<()> {
            if ok.contains(&got.as_str()) {
                Ok(())
            } else {
                Err(bad(
                    k,
                    format!("`{got}` is not supported by the DDPM UNet (supported: {ok:?})"),
                ))
            }
        };

        if let Some(class) = get("_class_name").and_then(|x| x.as_str()) {
            if class != "UNet2DModel" {
                return Err(bad("_class_name", format!("`{class}` is not a UNet2DModel")));
            }
        }
        require(
            "time_embedding_type",
            string("time_embedding_type", "positional")?,
            &["positional"],
        )?;
        require("act_fn", string("act_fn", "silu")?, &["silu", "swish"])?;
        require(
            "resnet_time_scale_shift",
            string("resnet_time_scale_shift", "default")?,
            &["default"],
        )?;
        require("downsample_type", string("downsample_type", "conv")?, &["conv"])?;
        require("upsample_type", string("upsample_type", "conv")?, &["conv"])?;
        require(
            "mid_block_type",
            string("mid_block_type", "UNetMidBlock2D")?,
            &["UNetMidBlock2D"],
        )?;
        if obj.get("mid_block_type").is_some_and(|x| x.is_null()) {
            return Err(bad(
                "mid_block_type",
                "a UNet without middle block is not supported".into(),
            ));
        }
        if boolean("center_input_sample", false)? {
            return Err(bad("center_input_sample", "inputs in [0, 1] are not supported".into()));
        }
        for k in ["class_embed_type", "num_class_embeds", "attn_norm_num_groups"] {
            if let Some(x) = get(k) {
                return Err(bad(k, format!("{x} is not supported (must be null)")));
            }
        }
        if float("mid_block_scale_factor", 1.0)? != 1.0 {
            return Err(bad("mid_block_scale_factor", "only 1 is supported".into()));
        }

        let block_out: Vec<usize> = get("block_out_channels")
            .and_then(|x| x.as_array())
            .ok_or_else(|| bad("block_out_channels", "is required".into()))?
            .iter()
            .map(|x| x.as_u64().map(|u| u as usize))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("block_out_channels", "expected a list of integers".into()))?;
        let ch = *block_out
            .first()
            .ok_or_else(|| bad("block_out_channels", "is empty".into()))?;
        if ch == 0 || block_out.iter().any(|&c| c % ch != 0) {
            return Err(bad(
                "block_out_channels",
                format!("{block_out:?}: every width must be a multiple of the first"),
            ));
        }
        if let Some(d) = get("time_embedding_dim") {
            if d.as_u64() != Some(4 * ch as u64) {
                return Err(bad(
                    "time_embedding_dim",
                    format!("{d}: only 4·block_out_channels[0] is supported"),
                ));
            }
        }
        let down = strings("down_block_types")?;
        let up = strings("up_block_types")?;
        if down.len() != block_out.len() || up.len() != block_out.len() {
            return Err(bad(
                "down_block_types",
                format!(
                    "{} down and {} up block types for {} levels",
                    down.len(),
                    up.len(),
                    block_out.len()
                ),
            ));
        }
        let resolution = match get("sample_size") {
            None => return Err(bad("sample_size", "is required".into())),
            Some(x) if x.is_u64() => x.as_u64().unwrap_or(0) as usize,
            Some(x) => {
                let hw: Option<Vec<u64>> = x.as_array().map(|a| a.iter().filter_map(|v| v.as_u64()).collect());
                match hw.as_deref() {
                    Some([h, w]) if h == w => *h as usize,
                    _ => return Err(bad("sample_size", format!("{x}: only square sizes are supported"))),
                }
            }
        };
        let mut attn_resolutions = Vec::new();
        for (l, kind) in down.iter().enumerate() {
            let has = match kind.as_str() {
                "DownBlock2D" => false,
                "AttnDownBlock2D" => true,
                other => return Err(bad("down_block_types", format!("`{other}` is not supported"))),
            };
            let mirror = &up[block_out.len() - 1 - l];
            let up_has = match mirror.as_str() {
                "UpBlock2D" => false,
                "AttnUpBlock2D" => true,
                other => return Err(bad("up_block_types", format!("`{other}` is not supported"))),
            };
            if has != up_has {
                return Err(bad(
                    "up_block_types",
                    format!("level {l} is `{kind}` on the way down but `{mirror}` on the way up"),
                ));
            }
            if has {
                attn_resolutions.push(resolution >> l);
            }
        }
        let downsample_padding = match uint("downsample_padding", Some(1))? {
            0 => DownsamplePadding::Asymmetric,
            1 => DownsamplePadding::Symmetric,
            other => return Err(bad("downsample_padding", format!("{other} is not 0 or 1"))),
        };
        let cfg = Self {
            ch,
            ch_mult: block_out.iter().map(|c| c / ch).collect(),
            num_res_blocks: uint("layers_per_block", Some(2))?,
            attn_resolutions,
            dropout: float("dropout", 0.0)?,
            resolution,
            in_channels: uint("in_channels", Some(3))?,
            out_ch: uint("out_channels", Some(3))?,
            resamp_with_conv: true,
            norm_groups: uint("norm_num_groups", Some(32))?,
            norm_eps: float("norm_eps", 1e-5)?,
            flip_sin_to_cos: boolean("flip_sin_to_cos", true)?,
            freq_shift: float("freq_shift", 0.0)?,
            attention_head_dim: match get("attention_head_dim") {
                None if obj.contains_key("attention_head_dim") => None,
                None => Some(8),
                Some(x) => Some(
                    x.as_u64()
                        .map(|u| u as usize)
                        .ok_or_else(|| bad("attention_head_dim", format!("expected an integer, got {x}")))?,
                ),
            },
            downsample_padding,
            mid_attention: boolean("add_attention", true)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The diffusers `UNet2DModel` `config.json` describing this architecture (the inverse of
    /// [`from_diffusers_json`](DdpmConfig::from_diffusers_json)); with weights in either
    /// naming beside it, [`DdpmUNet::load`] reads the folder.
    pub fn to_diffusers_json(&self) -> Result<String> {
        self.validate()?;
        if !self.resamp_with_conv {
            return Err(Error::Incompatible(
                "diffusers' UNet2DModel has no form for resamp_with_conv = false".into(),
            ));
        }
        let levels = self.levels();
        let down: Vec<&str> = (0..levels)
            .map(|l| {
                if self.level_has_attention(l) {
                    "AttnDownBlock2D"
                } else {
                    "DownBlock2D"
                }
            })
            .collect();
        let up: Vec<&str> = (0..levels)
            .rev()
            .map(|l| {
                if self.level_has_attention(l) {
                    "AttnUpBlock2D"
                } else {
                    "UpBlock2D"
                }
            })
            .collect();
        let v = serde_json::json!({
            "_class_name": "UNet2DModel",
            "sample_size": self.resolution,
            "in_channels": self.in_channels,
            "out_channels": self.out_ch,
            "block_out_channels": self.ch_mult.iter().map(|m| m * self.ch).collect::<Vec<_>>(),
            "layers_per_block": self.num_res_blocks,
            "down_block_types": down,
            "up_block_types": up,
            "attention_head_dim": self.attention_head_dim,
            "norm_num_groups": self.norm_groups,
            "norm_eps": self.norm_eps,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": self.freq_shift,
            "downsample_padding": match self.downsample_padding {
                DownsamplePadding::Asymmetric => 0,
                DownsamplePadding::Symmetric => 1,
            },
            "add_attention": self.mid_attention,
            "dropout": self.dropout,
            "act_fn": "silu",
            "time_embedding_type": "positional",
            "resnet_time_scale_shift": "default",
            "center_input_sample": false
        });
        serde_json::to_string_pretty(&v).map_err(|e| Error::Model(e.to_string()))
    }

    /// The architecture that a state dict in original naming describes, as far as its
    /// shapes tell: `ch`, `ch_mult`, `num_res_blocks`, attention levels, in/out channels.
    /// The resolution is not stored in the weights: if these match a preset, the preset is
    /// returned; otherwise an error lists what was found and asks for an explicit config.
    pub fn infer_from_state_dict(sd: &StateDict) -> Result<Self> {
        let shape = |k: &str| -> Result<&[usize]> {
            sd.get(k)
                .map(|t| t.shape.as_slice())
                .ok_or_else(|| Error::InvalidInput(format!("cannot infer the DDPM configuration: no `{k}`")))
        };
        let conv_in = shape("conv_in.weight")?;
        let conv_out = shape("conv_out.weight")?;
        if conv_in.len() != 4 || conv_out.len() != 4 {
            return Err(Error::InvalidInput("conv_in/conv_out weights are not 4-D".into()));
        }
        let (ch, in_channels, out_ch) = (conv_in[0], conv_in[1], conv_out[0]);
        let mut ch_mult = Vec::new();
        let mut attn_levels = Vec::new();
        while let Some(t) = sd.get(&format!("down.{}.block.0.conv1.weight", ch_mult.len())) {
            let l = ch_mult.len();
            if ch == 0 || t.shape.first().map_or(true, |c| c % ch != 0) {
                return Err(Error::InvalidInput(format!(
                    "down.{l}.block.0.conv1.weight has shape {:?}",
                    t.shape
                )));
            }
            ch_mult.push(t.shape[0] / ch);
            attn_levels.push(sd.contains_key(&format!("down.{l}.attn.0.q.weight")));
        }
        let mut num_res_blocks = 0;
        while sd.contains_key(&format!("down.0.block.{num_res_blocks}.conv1.weight")) {
            num_res_blocks += 1;
        }
        for preset in [Self::cifar10(), Self::celeba64(), Self::lsun256()] {
            let preset_attn: Vec<bool> = (0..preset.levels()).map(|l| preset.level_has_attention(l)).collect();
            if preset.ch == ch
                && preset.ch_mult == ch_mult
                && preset.num_res_blocks == num_res_blocks
                && preset_attn == attn_levels
                && preset.in_channels == in_channels
                && preset.out_ch == out_ch
            {
                return Ok(preset);
            }
        }
        Err(Error::Incompatible(format!(
            "these DDPM weights (ch {ch}, ch_mult {ch_mult:?}, {num_res_blocks} res blocks, attention at \
             levels {:?}, {in_channels} -> {out_ch} channels) match no released configuration, and the \
             image resolution is not stored in them: pass a DdpmConfig (DdpmUNet::load_with_config)",
            attn_levels
                .iter()
                .enumerate()
                .filter(|(_, &a)| a)
                .map(|(l, _)| l)
                .collect::<Vec<_>>()
        )))
    }
}

// ------------------------------------------------------------------------------------
// Layers: plain structs over tensors that live in the VarStore (shallow clones).
// ------------------------------------------------------------------------------------

#[derive(Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    temb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResBlock {
    fn new(p: &tch::nn::Path<'_>, cin: usize, cout: usize, cfg: &DdpmConfig) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(&(p / "norm1"), cfg.norm_groups, cin, cfg.norm_eps)?,
            conv1: Conv2d::new(&(p / "conv1"), cin, cout, 3, 1, 1)?,
            temb_proj: Linear::new(&(p / "temb_proj"), cfg.temb_ch(), cout, true)?,
            norm2: GroupNorm::new(&(p / "norm2"), cfg.norm_groups, cout, cfg.norm_eps)?,
            conv2: Conv2d::new(&(p / "conv2"), cout, cout, 3, 1, 1)?,
            nin_shortcut: if cin != cout {
                Some(Conv2d::new(&(p / "nin_shortcut"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// `temb_act` is `swish(temb)`, shared by every block.
    fn forward(&self, x: &Tensor, temb_act: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward(x)?.f_silu()?)?;
        let t = self.temb_proj.forward(temb_act)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?;
        let h = h.f_add(&t)?;
        // Dropout is the identity at inference.
        let h = self.conv2.forward(&self.norm2.forward(&h)?.f_silu()?)?;
        match &self.nin_shortcut {
            Some(s) => Ok(s.forward(x)?.f_add(&h)?),
            None => Ok(x.f_add(&h)?),
        }
    }
}

#[derive(Debug)]
struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
    heads: i64,
}

impl AttnBlock {
    fn new(p: &tch::nn::Path<'_>, c: usize, cfg: &DdpmConfig) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(&(p / "norm"), cfg.norm_groups, c, cfg.norm_eps)?,
            q: Conv2d::new(&(p / "q"), c, c, 1, 1, 0)?,
            k: Conv2d::new(&(p / "k"), c, c, 1, 1, 0)?,
            v: Conv2d::new(&(p / "v"), c, c, 1, 1, 0)?,
            proj_out: Conv2d::new(&(p / "proj_out"), c, c, 1, 1, 0)?,
            heads: cfg.attention_head_dim.map_or(1, |d| (c / d.max(1)) as i64),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let hn = self.norm.forward(x)?;
        let d = c / self.heads;
        // (b, c, h, w) -> (b, heads, hw, d): channel c = head·d + i, as in diffusers.
        let split = |t: Tensor| -> Result<Tensor> { Ok(t.f_view([b, self.heads, d, h * w])?.f_transpose(-1, -2)?) };
        let q = split(self.q.forward(&hn)?)?;
        let k = split(self.k.forward(&hn)?)?;
        let v = split(self.v.forward(&hn)?)?;
        // softmax(q kᵀ / √d) v over the keys; d = C for DDPM's single head.
        let scale = (d as f64).powf(-0.5);
        let a = Tensor::f_scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, scale, false)?;
        let a = a.f_transpose(-1, -2)?.f_reshape([b, c, h, w])?;
        Ok(x.f_add(&self.proj_out.forward(&a)?)?)
    }
}

#[derive(Debug)]
enum Resample {
    None,
    Conv(Conv2d),
    Plain,
}

#[derive(Debug)]
struct Level {
    blocks: Vec<ResBlock>,
    attns: Vec<AttnBlock>,
    resample: Resample,
}

/// The DDPM UNet on libtorch. Implements [`TchModule`]; wrap it in
/// [`TchDenoiser`](super::TchDenoiser) to use it as a [`Denoiser`](crate::Denoiser)
/// ([`DdpmUNet::into_denoiser`]).
///
/// ```no_run
/// use boomerang::models::{ddpm::DdpmUNet, Device, Kind};
/// // An HF diffusers folder (config.json + diffusion_pytorch_model.safetensors) ...
/// let a = DdpmUNet::load("ddpm-cifar10-32", Device::Cpu, Kind::Float)?;
/// // ... or pesser's / DDIM's PyTorch checkpoints (released configs are recognised).
/// let b = DdpmUNet::load("ema_diffusion_cifar10_model/model-790000.ckpt", Device::cuda_if_available(), Kind::Half)?;
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug)]
pub struct DdpmUNet {
    config: DdpmConfig,
    vs: VarStore,
    kind: Kind,
    freqs: Tensor,
    temb_dense0: Linear,
    temb_dense1: Linear,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid_block_1: ResBlock,
    mid_attn_1: Option<AttnBlock>,
    mid_block_2: ResBlock,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl DdpmUNet {
    /// Declare the network's variables (zeros; GroupNorm scales 1) in a new `VarStore` on
    /// `device`, in compute kind `kind`.
    fn declare(config: DdpmConfig, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        super::check_kind(kind)?;
        super::check_device(device)?;
        super::guard_panics(|| {
            let mut vs = VarStore::new(device);
            // The store is empty: this only sets the kind new variables are created in.
            vs.set_kind(kind);
            let root = vs.root();
            let cfg = &config;
            let ch = cfg.ch;
            let temb = root.clone() / "temb" / "dense";
            let temb_dense0 = Linear::new(&(&temb / 0), ch, cfg.temb_ch(), true)?;
            let temb_dense1 = Linear::new(&(&temb / 1), cfg.temb_ch(), cfg.temb_ch(), true)?;
            let conv_in = Conv2d::new(&(&root / "conv_in"), cfg.in_channels, ch, 3, 1, 1)?;
            let levels = cfg.levels();
            let in_mult: Vec<usize> = std::iter::once(1).chain(cfg.ch_mult.iter().copied()).collect();
            let resample_down = |p: &tch::nn::Path<'_>, c: usize| -> Result<Resample> {
                if !cfg.resamp_with_conv {
                    return Ok(Resample::Plain);
                }
                let pad = match cfg.downsample_padding {
                    DownsamplePadding::Asymmetric => 0,
                    DownsamplePadding::Symmetric => 1,
                };
                Ok(Resample::Conv(Conv2d::new(&(p / "conv"), c, c, 3, 2, pad)?))
            };
            let mut down = Vec::with_capacity(levels);
            let mut block_in = ch;
            for (l, (&mult, &prev_mult)) in cfg.ch_mult.iter().zip(&in_mult).enumerate() {
                let p = &root / "down" / l;
                let block_out = ch * mult;
                let mut blocks = Vec::new();
                let mut attns = Vec::new();
                block_in = ch * prev_mult;
                for i in 0..cfg.num_res_blocks {
                    blocks.push(ResBlock::new(&(&p / "block" / i), block_in, block_out, cfg)?);
                    block_in = block_out;
                    if cfg.level_has_attention(l) {
                        attns.push(AttnBlock::new(&(&p / "attn" / i), block_in, cfg)?);
                    }
                }
                let resample = if l + 1 != levels {
                    resample_down(&(&p / "downsample"), block_in)?
                } else {
                    Resample::None
                };
                down.push(Level {
                    blocks,
                    attns,
                    resample,
                });
            }
            let mid = &root / "mid";
            let mid_block_1 = ResBlock::new(&(&mid / "block_1"), block_in, block_in, cfg)?;
            let mid_attn_1 = if cfg.mid_attention {
                Some(AttnBlock::new(&(&mid / "attn_1"), block_in, cfg)?)
            } else {
                None
            };
            let mid_block_2 = ResBlock::new(&(&mid / "block_2"), block_in, block_in, cfg)?;
            // Built from the lowest resolution up, stored with index = level (l = 0 is the
            // highest resolution), as the original's `insert(0, up)`.
            let mut up: Vec<Option<Level>> = (0..levels).map(|_| None).collect();
            for l in (0..levels).rev() {
                let p = &root / "up" / l;
                let block_out = ch * cfg.ch_mult[l];
                let mut skip_in = ch * cfg.ch_mult[l];
                let mut blocks = Vec::new();
                let mut attns = Vec::new();
                for i in 0..=cfg.num_res_blocks {
                    if i == cfg.num_res_blocks {
                        skip_in = ch * in_mult[l];
                    }
                    blocks.push(ResBlock::new(&(&p / "block" / i), block_in + skip_in, block_out, cfg)?);
                    block_in = block_out;
                    if cfg.level_has_attention(l) {
                        attns.push(AttnBlock::new(&(&p / "attn" / i), block_in, cfg)?);
                    }
                }
                let resample = if l != 0 {
                    if cfg.resamp_with_conv {
                        Resample::Conv(Conv2d::new(&(&p / "upsample" / "conv"), block_in, block_in, 3, 1, 1)?)
                    } else {
                        Resample::Plain
                    }
                } else {
                    Resample::None
                };
                up[l] = Some(Level {
                    blocks,
                    attns,
                    resample,
                });
            }
            let up: Vec<Level> = up.into_iter().flatten().collect();
            let norm_out = GroupNorm::new(&(&root / "norm_out"), cfg.norm_groups, block_in, cfg.norm_eps)?;
            let conv_out = Conv2d::new(&(&root / "conv_out"), block_in, cfg.out_ch, 3, 1, 1)?;
            // Sinusoid frequencies, f32 as in the original: exp(arange(half) · −ln(1e4)/(half − shift)).
            let half = (ch / 2) as i64;
            let step = -(10000f64.ln()) / (half as f64 - cfg.freq_shift);
            let freqs = Tensor::f_arange(half, (Kind::Float, device))?
                .f_mul_scalar(step)?
                .f_exp()?;
            vs.freeze();
            Ok(Self {
                config: config.clone(),
                vs,
                kind,
                freqs,
                temb_dense0,
                temb_dense1,
                conv_in,
                down,
                mid_block_1,
                mid_attn_1,
                mid_block_2,
                up,
                norm_out,
                conv_out,
            })
        })
    }

    /// A network with all-zero weights (GroupNorm scales 1): for shape checks, or as the
    /// target of a later copy into [`var_store`](DdpmUNet::var_store).
    pub fn zeros(config: DdpmConfig, device: Device, kind: Kind) -> Result<Self> {
        Self::declare(config, device, kind)
    }

    /// A network with reproducible random weights drawn on the host from `seed` (PyTorch's
    /// default scale: uniform ±1/√fan_in for weights and biases, GroupNorm 1 and 0). For
    /// tests and benchmarks; libtorch's global RNG is not touched.
    pub fn random(config: DdpmConfig, device: Device, kind: Kind, seed: u64) -> Result<Self> {
        let mut net = Self::declare(config, device, kind)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let vars = net.vs.variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        let mut sd = StateDict::new();
        for name in names {
            let shape: Vec<usize> = vars[name].size().iter().map(|&d| d as usize).collect();
            let numel: usize = shape.iter().product();
            // The layer's weight: for a GroupNorm it is 1-D (scale 1, shift 0).
            let weight_name = match name.strip_suffix(".bias") {
                Some(layer) => format!("{layer}.weight"),
                None => name.clone(),
            };
            let weight_shape = vars.get(&weight_name).map(|w| w.size()).unwrap_or_default();
            let values: Vec<f32> = if weight_shape.len() == 1 {
                vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; numel]
            } else {
                let fan_in: i64 = weight_shape.iter().skip(1).product::<i64>().max(1);
                let bound = 1.0 / (fan_in as f32).sqrt();
                let dist = Uniform::new_inclusive(-bound, bound);
                (0..numel).map(|_| dist.sample(&mut rng)).collect()
            };
            sd.insert(name.clone(), TensorData::from_f32(shape, &values));
        }
        net.load_original(&sd, Path::new("<random init>"))?;
        Ok(net)
    }

    /// A network with the weights of `sd`, in original naming (`temb.dense.0.weight`, ...)
    /// or diffusers' (`time_embedding.linear_1.weight`, ...; detected from the keys).
    /// `source` names the origin in error messages.
    pub fn from_state_dict(
        config: DdpmConfig,
        sd: StateDict,
        device: Device,
        kind: Kind,
        source: &Path,
    ) -> Result<Self> {
        let sd = match Naming::detect(&sd) {
            Naming::Diffusers => diffusers_to_original(sd, config.levels())?,
            Naming::Original | Naming::Unknown => sd,
        };
        let mut net = Self::declare(config, device, kind)?;
        net.load_original(&sd, source)?;
        Ok(net)
    }

    fn load_original(&mut self, sd: &StateDict, source: &Path) -> Result<()> {
        loading::load_state_dict_into(&mut self.vs, sd, source, &LoadOptions::default())
    }

    /// Load a network from `path`:
    ///
    /// - a diffusers folder (`config.json` + `diffusion_pytorch_model[.fp16].safetensors`
    ///   or `.bin`, also under `unet/`), or a weights file with a diffusers `config.json`
    ///   beside it: the configuration comes from `config.json`;
    /// - a PyTorch checkpoint or safetensors file in original naming (pesser's `.ckpt`,
    ///   DDIM's CelebA list, `module.`-prefixed DataParallel dicts): the configuration is
    ///   recognised from the weights' shapes among the released ones (CIFAR-10, CelebA-64,
    ///   LSUN-256); for any other, use [`DdpmUNet::load_with_config`].
    pub fn load(path: impl AsRef<Path>, device: Device, kind: Kind) -> Result<Self> {
        let path = path.as_ref();
        let (weights, config_json) = locate(path)?;
        let sd = loading::read_state_dict(&weights)?;
        let config = match config_json {
            Some(cfg_path) => {
                let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
                DdpmConfig::from_diffusers_json(&text).map_err(|e| Error::checkpoint(&cfg_path, e.to_string()))?
            }
            None => match Naming::detect(&sd) {
                Naming::Original => {
                    DdpmConfig::infer_from_state_dict(&sd).map_err(|e| Error::checkpoint(&weights, e.to_string()))?
                }
                Naming::Diffusers => {
                    return Err(Error::checkpoint(
                        &weights,
                        "diffusers-named DDPM weights need their config.json (put it beside the \
                         weights, or use DdpmUNet::load_with_config)",
                    ))
                }
                Naming::Unknown => return Err(unknown_naming(&weights, &sd)),
            },
        };
        Self::from_state_dict(config, sd, device, kind, &weights)
    }

    /// Load the weights at `path` (a file or a diffusers folder) into a network of the
    /// given configuration (any naming).
    pub fn load_with_config(path: impl AsRef<Path>, config: DdpmConfig, device: Device, kind: Kind) -> Result<Self> {
        let (weights, _) = locate(path.as_ref())?;
        let sd = loading::read_state_dict(&weights)?;
        if Naming::detect(&sd) == Naming::Unknown {
            return Err(unknown_naming(&weights, &sd));
        }
        Self::from_state_dict(config, sd, device, kind, &weights)
    }

    /// The configuration.
    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    /// The variables, named as the original checkpoints (for saving or inspection).
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Mutable access to the variables (e.g. to unfreeze them for training).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// The weights in original naming, as `f32` host tensors sorted by name (e.g. to save
    /// diffusers weights as an original-naming file with
    /// [`save_safetensors`](crate::checkpoint::save_safetensors)).
    pub fn state_dict(&self) -> Result<StateDict> {
        let vars = self.vs.variables();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        super::guard_panics(|| {
            let mut sd = StateDict::new();
            for name in names {
                let t = vars[name].f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?;
                let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
                let numel: usize = shape.iter().product();
                let mut values = vec![0f32; numel];
                t.f_copy_data(&mut values, numel)?;
                sd.insert(name.clone(), TensorData::from_f32(shape, &values));
            }
            Ok(sd)
        })
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.vs.variables().values().map(|t| t.numel()).sum()
    }

    /// Wrap the network as a [`Denoiser`](crate::Denoiser).
    pub fn into_denoiser(self) -> super::TchDenoiser<Self> {
        super::TchDenoiser::new(self)
    }

    /// DDPM's sinusoidal time embedding of the float steps `t` (f32, shape `[N, ch]`).
    fn time_embedding(&self, t: &Tensor) -> Result<Tensor> {
        let args = t
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(1)?
            .f_mul(&self.freqs.f_unsqueeze(0)?)?;
        let (sin, cos) = (args.f_sin()?, args.f_cos()?);
        let emb = if self.config.flip_sin_to_cos {
            Tensor::f_cat(&[cos, sin], 1)?
        } else {
            Tensor::f_cat(&[sin, cos], 1)?
        };
        if self.config.ch % 2 == 1 {
            Ok(emb.f_constant_pad_nd([0, 1])?)
        } else {
            Ok(emb)
        }
    }

    /// The forward pass: `ε̂(x, t)` for `x` (NCHW, the model's device and kind) and float
    /// steps `t` (1-D, one per item). Checks the input's channels and size.
    ///
    /// Call it under `tch::no_grad` (or use [`TchDenoiser::forward_tensor`](super::TchDenoiser::forward_tensor),
    /// which also guards against panics); [`TchDenoiser`](super::TchDenoiser) does both.
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let (n, c, h, w) = x.size4()?;
        if c as usize != cfg.in_channels || h as usize != cfg.resolution || w as usize != cfg.resolution {
            return Err(Error::Shape(format!(
                "the DDPM UNet takes {}×{}×{} inputs, got {c}×{h}×{w}",
                cfg.in_channels, cfg.resolution, cfg.resolution
            )));
        }
        if t.size() != [n] {
            return Err(Error::Shape(format!(
                "expected {n} times, got a tensor of shape {:?}",
                t.size()
            )));
        }
        let x = x.f_to_kind(self.kind)?;
        let temb = self.time_embedding(t)?.f_to_kind(self.kind)?;
        let temb = self.temb_dense1.forward(&self.temb_dense0.forward(&temb)?.f_silu()?)?;
        let temb_act = temb.f_silu()?;

        let mut hs = vec![self.conv_in.forward(&x)?];
        for level in &self.down {
            for (i, block) in level.blocks.iter().enumerate() {
                let last = hs.last().ok_or_else(|| Error::Model("empty skip stack".into()))?;
                let mut h = block.forward(last, &temb_act)?;
                if let Some(attn) = level.attns.get(i) {
                    h = attn.forward(&h)?;
                }
                hs.push(h);
            }
            let last = hs.last().ok_or_else(|| Error::Model("empty skip stack".into()))?;
            let down = match &level.resample {
                Resample::None => None,
                Resample::Conv(conv) => Some(match cfg.downsample_padding {
                    DownsamplePadding::Asymmetric => conv.forward(&last.f_constant_pad_nd([0, 1, 0, 1])?)?,
                    DownsamplePadding::Symmetric => conv.forward(last)?,
                }),
                Resample::Plain => Some(last.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)?),
            };
            if let Some(d) = down {
                hs.push(d);
            }
        }
        let mut h = self.mid_block_1.forward(
            hs.last().ok_or_else(|| Error::Model("empty skip stack".into()))?,
            &temb_act,
        )?;
        if let Some(attn) = &self.mid_attn_1 {
            h = attn.forward(&h)?;
        }
        h = self.mid_block_2.forward(&h, &temb_act)?;
        for level in self.up.iter().rev() {
            for (i, block) in level.blocks.iter().enumerate() {
                let skip = hs.pop().ok_or_else(|| Error::Model("skip stack exhausted".into()))?;
                h = block.forward(&Tensor::f_cat(&[&h, &skip], 1)?, &temb_act)?;
                if let Some(attn) = level.attns.get(i) {
                    h = attn.forward(&h)?;
                }
            }
            h = match &level.resample {
                Resample::None => h,
                Resample::Conv(conv) => conv.forward(&upsample(&h)?)?,
                Resample::Plain => upsample(&h)?,
            };
        }
        let h = self.norm_out.forward(&h)?.f_silu()?;
        self.conv_out.forward(&h)
    }
}

fn upsample(h: &Tensor) -> Result<Tensor> {
    let (_, _, hh, ww) = h.size4()?;
    Ok(h.f_upsample_nearest2d([2 * hh, 2 * ww], 2.0, 2.0)?)
}

impl TchModule for DdpmUNet {
    fn spec(&self) -> DenoiserSpec {
        self.config.spec()
    }

    fn device(&self) -> Device {
        self.vs.device()
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn forward_t(&self, x: &Tensor, t: &Tensor, condition: &Condition) -> Result<Tensor> {
        if !matches!(condition, Condition::None) {
            return Err(Error::Incompatible(
                "the DDPM UNet is unconditional; pass Condition::None".into(),
            ));
        }
        self.forward(x, t)
    }
}

// ------------------------------------------------------------------------------------
// Files and namings.
// ------------------------------------------------------------------------------------

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
        if sd.contains_key("temb.dense.0.weight") || sd.keys().any(|k| k.starts_with("down.0.block.")) {
            Naming::Original
        } else if sd.contains_key("time_embedding.linear_1.weight") || sd.keys().any(|k| k.starts_with("down_blocks."))
        {
            Naming::Diffusers
        } else {
            Naming::Unknown
        }
    }
}

fn unknown_naming(path: &Path, sd: &StateDict) -> Error {
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

/// Weights file names of a diffusers model folder, in order of preference.
const DIFFUSERS_WEIGHTS: [&str; 4] = [
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
];

/// The weights file and the diffusers `config.json` (if any) for `path`.
fn locate(path: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if path.is_dir() {
        for dir in [path.to_path_buf(), path.join("unet")] {
            for name in DIFFUSERS_WEIGHTS {
                let w = dir.join(name);
                if w.is_file() {
                    let c = dir.join("config.json");
                    return Ok((w, c.is_file().then_some(c)));
                }
            }
        }
        return Err(Error::checkpoint(
            path,
            format!("a folder without DDPM weights: expected one of {DIFFUSERS_WEIGHTS:?} (or under unet/)"),
        ));
    }
    if !path.is_file() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
        ));
    }
    let config = path.parent().map(|d| d.join("config.json")).filter(|c| c.is_file());
    // Only a diffusers UNet2DModel config counts (pesser's folders have none).
    let config = config.filter(|c| std::fs::read_to_string(c).is_ok_and(|t| t.contains("\"block_out_channels\"")));
    Ok((path.to_path_buf(), config))
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
