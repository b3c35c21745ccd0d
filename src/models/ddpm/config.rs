//! The DDPM UNet's architecture settings: the released presets, diffusers' `UNet2DModel`
//! configs, and inference from a state dict's shapes.

use crate::checkpoint::StateDict;
use crate::models::config_json;

/// The most parameters a configuration may describe (4·10⁹; the largest released DDPM UNet
/// has 1.1·10⁸).
pub const MAX_PARAMETERS: f64 = 4e9;
use crate::{DataRange, DenoiserSpec, Error, Parameterization, Result, TimeInput};

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

    /// About how many parameters the network has (the 3×3 convolutions dominate), computed
    /// without building anything: a bound for configs from untrusted files.
    pub fn approx_parameters(&self) -> f64 {
        let ch = self.ch as f64;
        let per_level: f64 = self
            .ch_mult
            .iter()
            .map(|&m| {
                let c = ch * m as f64;
                // down: n blocks of two convs; up: n + 1 blocks of two convs on ~2c inputs.
                (self.num_res_blocks as f64 * 2.0 + (self.num_res_blocks as f64 + 1.0) * 3.0) * 9.0 * c * c
            })
            .sum();
        per_level + 16.0 * ch * ch
    }

    /// Check that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let p = |reason: String| Err(Error::param("DdpmConfig", reason));
        if self.ch < 4 {
            return p(format!("ch must be at least 4, got {}", self.ch));
        }
        // Bounds before anything is allocated: a hostile config.json must not make the crate
        // reserve gigabytes (released models have ch 128, 6 levels, 2 blocks, 256²).
        if self.ch > 4096 || self.ch_mult.len() > 12 || self.ch_mult.iter().any(|&m| m > 64) {
            return p(format!(
                "ch {} with ch_mult {:?} is beyond this crate's limits (ch ≤ 4096, ≤ 12 levels, \
                 multipliers ≤ 64)",
                self.ch, self.ch_mult
            ));
        }
        if self.num_res_blocks > 64 || self.resolution > 16384 || self.in_channels > 64 || self.out_ch > 128 {
            return p(format!(
                "num_res_blocks {} / resolution {} / channels {} -> {} are beyond this crate's limits \
                 (64 blocks, 16384 px, 64 in, 128 out)",
                self.num_res_blocks, self.resolution, self.in_channels, self.out_ch
            ));
        }
        let params = self.approx_parameters();
        if params > MAX_PARAMETERS {
            return p(format!(
                "the configuration describes about {:.2e} parameters, more than the {MAX_PARAMETERS:.0e} \
                 this crate builds; check the config file",
                params
            ));
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
        if self.resolution == 0 || !self.resolution.is_multiple_of(down) {
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
            if !c.is_multiple_of(self.norm_groups) {
                return p(format!(
                    "width {c} (ch·{m}) is not divisible by norm_groups {}",
                    self.norm_groups
                ));
            }
        }
        if !self.ch.is_multiple_of(self.norm_groups) {
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

    /// Whether a parsed `config.json` describes a DDPM UNet: diffusers' `UNet2DModel` config
    /// or the original code's model config (`ch`, `ch_mult`, ..., flat or under `model`).
    pub fn is_ddpm_json(v: &serde_json::Value) -> bool {
        let model = v.get("model").unwrap_or(v);
        v.get("_class_name").and_then(|c| c.as_str()) == Some("UNet2DModel")
            || v.get("block_out_channels").is_some() && v.get("cross_attention_dim").is_none()
            || (model.get("ch").is_some() && model.get("ch_mult").is_some())
    }

    /// A configuration from `config.json` text in either form [`is_ddpm_json`] accepts:
    /// diffusers' `UNet2DModel` config ([`from_diffusers_json`]) or the model config of
    /// Ho et al.'s code as pesser's and DDIM's ports write it ([`from_original_json`]).
    ///
    /// [`is_ddpm_json`]: DdpmConfig::is_ddpm_json
    /// [`from_diffusers_json`]: DdpmConfig::from_diffusers_json
    /// [`from_original_json`]: DdpmConfig::from_original_json
    pub fn from_json(text: &str) -> Result<Self> {
        /// The keys that mark diffusers' form (present, even as `null`).
        #[derive(serde::Deserialize)]
        struct Form {
            #[serde(default, deserialize_with = "config_json::present")]
            block_out_channels: Option<Option<serde::de::IgnoredAny>>,
            #[serde(default, rename = "_class_name", deserialize_with = "config_json::present")]
            class_name: Option<Option<serde::de::IgnoredAny>>,
        }
        let form: Form = config_json::parse(text).map_err(|f| {
            if f.syntax {
                Error::InvalidInput(f.describe("config.json"))
            } else {
                Error::InvalidInput(format!(
                    "config.json is not a JSON object of model settings ({})",
                    f.message
                ))
            }
        })?;
        if form.block_out_channels.is_some() || form.class_name.is_some() {
            Self::from_diffusers_json(text)
        } else {
            Self::from_original_json(text)
        }
    }

    /// A configuration from the original code's model config as JSON: the keyword arguments
    /// of pesser's `Model(...)` / DDIM's `config.model` (`ch`, `out_ch`, `ch_mult`,
    /// `num_res_blocks`, `attn_resolutions`, `dropout`, `resamp_with_conv`, `in_channels`,
    /// `resolution`), flat or nested as DDIM's YAML is (`{"model": {...}, "data":
    /// {"image_size": 64, "channels": 3}}`). Unknown keys are ignored; every architectural
    /// setting not in that list keeps DDPM's value.
    ///
    /// ```
    /// use boomerang::models::DdpmConfig;
    /// let c = DdpmConfig::from_original_json(r#"{"model": {"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 2, 2],
    ///     "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.1, "resamp_with_conv": true,
    ///     "var_type": "fixedlarge"}, "data": {"image_size": 32, "channels": 3}}"#)?;
    /// assert_eq!(c, DdpmConfig::cifar10());
    /// # Ok::<(), boomerang::Error>(())
    /// ```
    pub fn from_original_json(text: &str) -> Result<Self> {
        let fault = |f: config_json::Fault| match (&f.key, f.syntax) {
            (_, true) => Error::InvalidInput(f.describe("config.json")),
            (Some(k), false) => Error::InvalidInput(format!(
                "not a DDPM model config: key `{k}`: {}; fix this value in config.json",
                f.message
            )),
            (None, false) => Error::InvalidInput(format!(
                "not a DDPM model config ({}); give the model's `ch`, `ch_mult` and `num_res_blocks`",
                f.message
            )),
        };
        // DDIM's YAML nests the model settings under `model` beside `data`; pesser's
        // keyword arguments are flat.
        let file: OriginalFile = config_json::parse(text).map_err(fault)?;
        let o = match file.model {
            Some(model) => model,
            None => config_json::parse::<OriginalModel>(text).map_err(fault)?,
        };
        let data = file.data.unwrap_or_default();
        let resolution = o
            .resolution
            .or(data.image_size)
            .ok_or_else(|| Error::InvalidInput("the model config gives no `resolution` (or data.image_size)".into()))?;
        let in_channels = o.in_channels.or(data.channels).unwrap_or(3);
        let mut c = Self::ddpm(&o.ch_mult, o.dropout, resolution);
        c.ch = o.ch;
        c.num_res_blocks = o.num_res_blocks;
        c.attn_resolutions = o.attn_resolutions;
        c.resamp_with_conv = o.resamp_with_conv;
        c.in_channels = in_channels;
        c.out_ch = o.out_ch.unwrap_or(in_channels);
        if c.ch % 32 != 0 {
            // GroupNorm(32) needs multiples of 32; smaller research configs use fewer groups.
            return Err(Error::param(
                "DdpmConfig",
                format!("ch {} is not a multiple of DDPM's 32 GroupNorm groups", c.ch),
            ));
        }
        c.validate()?;
        Ok(c)
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
        let bad = |k: &str, why: String| Error::Incompatible(format!("diffusers config `{k}`: {why}"));
        let f: DiffusersUNet2D = config_json::parse(text).map_err(|f| match (&f.key, f.syntax) {
            (_, true) => Error::InvalidInput(f.describe("diffusers config.json")),
            (Some(k), false) => bad(k, format!("{}; fix this value in config.json", f.message)),
            (None, false) => Error::InvalidInput(format!(
                "diffusers config.json is not a UNet2DModel config object ({})",
                f.message
            )),
        })?;
        let require = |k: &str, got: Option<String>, default: &str, ok: &[&str]| -> Result<()> {
            let got = got.unwrap_or_else(|| default.to_string());
            if ok.contains(&got.as_str()) {
                Ok(())
            } else {
                Err(bad(
                    k,
                    format!("`{got}` is not supported by the DDPM UNet (supported: {ok:?})"),
                ))
            }
        };

        if let Some(serde_json::Value::String(class)) = &f.class_name {
            if class != "UNet2DModel" {
                return Err(bad("_class_name", format!("`{class}` is not a UNet2DModel")));
            }
        }
        require(
            "time_embedding_type",
            f.time_embedding_type,
            "positional",
            &["positional"],
        )?;
        require("act_fn", f.act_fn, "silu", &["silu", "swish"])?;
        require(
            "resnet_time_scale_shift",
            f.resnet_time_scale_shift,
            "default",
            &["default"],
        )?;
        require("downsample_type", f.downsample_type, "conv", &["conv"])?;
        require("upsample_type", f.upsample_type, "conv", &["conv"])?;
        if f.mid_block_type == Some(None) {
            return Err(bad(
                "mid_block_type",
                "a UNet without middle block is not supported".into(),
            ));
        }
        require(
            "mid_block_type",
            f.mid_block_type.flatten(),
            "UNetMidBlock2D",
            &["UNetMidBlock2D"],
        )?;
        if f.center_input_sample.unwrap_or(false) {
            return Err(bad("center_input_sample", "inputs in [0, 1] are not supported".into()));
        }
        for (k, x) in [
            ("class_embed_type", &f.class_embed_type),
            ("num_class_embeds", &f.num_class_embeds),
            ("attn_norm_num_groups", &f.attn_norm_num_groups),
        ] {
            if let Some(x) = x {
                return Err(bad(k, format!("{x} is not supported (must be null)")));
            }
        }
        if f.mid_block_scale_factor.unwrap_or(1.0) != 1.0 {
            return Err(bad("mid_block_scale_factor", "only 1 is supported".into()));
        }

        let block_out = f
            .block_out_channels
            .ok_or_else(|| bad("block_out_channels", "is required".into()))?;
        let ch = *block_out
            .first()
            .ok_or_else(|| bad("block_out_channels", "is empty".into()))?;
        if ch == 0 || block_out.iter().any(|&c| c % ch != 0) {
            return Err(bad(
                "block_out_channels",
                format!("{block_out:?}: every width must be a multiple of the first"),
            ));
        }
        if let Some(d) = &f.time_embedding_dim {
            if d.as_u64() != Some(4 * ch as u64) {
                return Err(bad(
                    "time_embedding_dim",
                    format!("{d}: only 4·block_out_channels[0] is supported"),
                ));
            }
        }
        let blocks =
            |k: &str, b: Option<Vec<String>>| b.ok_or_else(|| bad(k, "is required (a list of block types)".into()));
        let down = blocks("down_block_types", f.down_block_types)?;
        let up = blocks("up_block_types", f.up_block_types)?;
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
        let resolution = match f.sample_size {
            None => return Err(bad("sample_size", "is required".into())),
            Some(SampleSize::Square(s)) => s,
            Some(SampleSize::HeightWidth(hw)) => match hw.as_slice() {
                [h, w] if h == w => *h,
                _ => return Err(bad("sample_size", format!("{hw:?}: only square sizes are supported"))),
            },
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
        let downsample_padding = match f.downsample_padding.unwrap_or(1) {
            0 => DownsamplePadding::Asymmetric,
            1 => DownsamplePadding::Symmetric,
            other => return Err(bad("downsample_padding", format!("{other} is not 0 or 1"))),
        };
        let cfg = Self {
            ch,
            ch_mult: block_out.iter().map(|c| c / ch).collect(),
            num_res_blocks: f.layers_per_block.unwrap_or(2),
            attn_resolutions,
            dropout: f.dropout.unwrap_or(0.0),
            resolution,
            in_channels: f.in_channels.unwrap_or(3),
            out_ch: f.out_channels.unwrap_or(3),
            resamp_with_conv: true,
            norm_groups: f.norm_num_groups.unwrap_or(32),
            norm_eps: f.norm_eps.unwrap_or(1e-5),
            flip_sin_to_cos: f.flip_sin_to_cos.unwrap_or(true),
            freq_shift: f.freq_shift.unwrap_or(0.0),
            // Absent: diffusers' default of 8; an explicit null: one head.
            attention_head_dim: f.attention_head_dim.unwrap_or(Some(8)),
            downsample_padding,
            mid_attention: f.add_attention.unwrap_or(true),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The diffusers `UNet2DModel` `config.json` describing this architecture (the inverse of
    /// [`from_diffusers_json`](DdpmConfig::from_diffusers_json)); with weights in either
    /// naming beside it, `DdpmUNet::load` reads the folder.
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
            if ch == 0 || t.shape.first().is_none_or(|c| !c.is_multiple_of(ch)) {
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

/// The model settings of Ho et al.'s code as pesser's `Model(...)` keyword arguments and
/// DDIM's `config.model` write them (unknown keys ignored).
#[derive(Debug, serde::Deserialize)]
struct OriginalModel {
    ch: usize,
    #[serde(default)]
    out_ch: Option<usize>,
    ch_mult: Vec<usize>,
    num_res_blocks: usize,
    #[serde(default)]
    attn_resolutions: Vec<usize>,
    #[serde(default)]
    dropout: f64,
    #[serde(default = "yes")]
    resamp_with_conv: bool,
    #[serde(default)]
    in_channels: Option<usize>,
    #[serde(default)]
    resolution: Option<usize>,
}

fn yes() -> bool {
    true
}

/// DDIM's config layout: `model` and `data` sections (a flat file has neither).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OriginalFile {
    model: Option<OriginalModel>,
    data: Option<OriginalData>,
}

/// DDIM's `data` section: what the model settings may leave to it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct OriginalData {
    image_size: Option<usize>,
    channels: Option<usize>,
}

/// The settings of diffusers' `UNet2DModel` `config.json` that [`DdpmConfig::from_diffusers_json`]
/// reads (a `null` reads as absent; unknown keys are ignored).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct DiffusersUNet2D {
    /// Any JSON value: only a string other than `UNet2DModel` is refused.
    #[serde(rename = "_class_name")]
    class_name: Option<serde_json::Value>,
    time_embedding_type: Option<String>,
    act_fn: Option<String>,
    resnet_time_scale_shift: Option<String>,
    downsample_type: Option<String>,
    upsample_type: Option<String>,
    /// `Some(None)`: an explicit `null` (no middle block).
    #[serde(deserialize_with = "config_json::present")]
    mid_block_type: Option<Option<String>>,
    center_input_sample: Option<bool>,
    class_embed_type: Option<serde_json::Value>,
    num_class_embeds: Option<serde_json::Value>,
    attn_norm_num_groups: Option<serde_json::Value>,
    mid_block_scale_factor: Option<f64>,
    block_out_channels: Option<Vec<usize>>,
    time_embedding_dim: Option<serde_json::Value>,
    down_block_types: Option<Vec<String>>,
    up_block_types: Option<Vec<String>>,
    sample_size: Option<SampleSize>,
    downsample_padding: Option<usize>,
    layers_per_block: Option<usize>,
    dropout: Option<f64>,
    in_channels: Option<usize>,
    out_channels: Option<usize>,
    norm_num_groups: Option<usize>,
    norm_eps: Option<f64>,
    flip_sin_to_cos: Option<bool>,
    freq_shift: Option<f64>,
    /// `Some(None)`: an explicit `null` (one head); absent: diffusers' default.
    #[serde(deserialize_with = "config_json::present")]
    attention_head_dim: Option<Option<usize>>,
    add_attention: Option<bool>,
}

/// diffusers' `sample_size`: one side, or `[height, width]`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum SampleSize {
    Square(usize),
    HeightWidth(Vec<usize>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_name_the_bad_key() {
        let e = DdpmConfig::from_original_json(
            r#"{"model": {"ch": "128", "ch_mult": [1, 2], "num_res_blocks": 2}, "data": {"image_size": 32}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("model.ch"), "{e}");
        let e = DdpmConfig::from_original_json(r#"{"ch": 128, "ch_mult": [1, 2]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_res_blocks"), "{e}");
        let e = DdpmConfig::from_diffusers_json(r#"{"block_out_channels": [32, 64], "layers_per_block": "two"}"#)
            .unwrap_err();
        assert!(
            matches!(e, Error::Incompatible(_)) && e.to_string().contains("layers_per_block"),
            "{e}"
        );
        assert!(matches!(
            DdpmConfig::from_json("{not json"),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn flat_nested_absent_and_null() {
        let flat = DdpmConfig::from_original_json(
            r#"{"ch": 128, "out_ch": 3, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 2,
                "attn_resolutions": [16], "dropout": 0.1, "resolution": 32, "var_type": "fixedlarge"}"#,
        )
        .unwrap();
        assert_eq!(flat, DdpmConfig::cifar10());
        // diffusers: an explicit null attention_head_dim is one head, an absent one 8.
        let c = DdpmConfig::cifar10();
        let json = c.to_diffusers_json().unwrap();
        assert_eq!(DdpmConfig::from_json(&json).unwrap(), c);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v.as_object_mut().unwrap().remove("attention_head_dim");
        let absent = DdpmConfig::from_diffusers_json(&v.to_string()).unwrap();
        assert_eq!(absent.attention_head_dim, Some(8));
        v.as_object_mut()
            .unwrap()
            .insert("mid_block_type".into(), serde_json::Value::Null);
        let e = DdpmConfig::from_diffusers_json(&v.to_string()).unwrap_err();
        assert!(e.to_string().contains("mid_block_type"), "{e}");
    }
}
