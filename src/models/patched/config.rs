//! [`PatchedConfig`]: every architecture, diffusion and sampling setting of a Patched
//! Diffusion model, its released presets, the `config.json` readers (the original sampling
//! script's keyword arguments, or this crate's own serialization) and the validation that
//! runs before anything is allocated.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::respace::respaced_steps;
use crate::models::config_json;
use crate::schedule::DiscreteSchedule;
use crate::{DataRange, DenoiserSpec, Error, Parameterization, Result, TimeInput};

/// The largest network [`PatchedConfig::validate`] accepts, in parameters (the released
/// models have 121M-202M).
pub const MAX_PARAMETERS: u64 = 4_000_000_000;

/// Bounds checked before the block plan is even built (so that an absurd configuration
/// costs nothing): image side, levels, residual blocks per level, any one channel width,
/// number of classes, training steps.
const MAX_IMAGE_SIZE: usize = 1 << 16;
const MAX_LEVELS: usize = 16;
const MAX_RES_BLOCKS: usize = 256;
const MAX_WIDTH: usize = 1 << 16;
const MAX_CLASSES: usize = 1 << 24;
const MAX_STEPS: usize = 1 << 20;

/// What the network's mean head predicts (`model_mean_type` of the original).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeanType {
    /// `x0` (`"xstart"`, `"x0"`): every released model.
    #[default]
    Xstart,
    /// `ε` (`"eps"`, `"epsilon"`).
    Epsilon,
    /// `v = √ᾱ·ε − √(1−ᾱ)·x0` (`"v"`).
    V,
}

impl MeanType {
    /// The crate's name for it.
    pub fn parameterization(self) -> Parameterization {
        match self {
            MeanType::Xstart => Parameterization::Sample,
            MeanType::Epsilon => Parameterization::Epsilon,
            MeanType::V => Parameterization::VPrediction,
        }
    }

    fn parse(s: &str) -> Result<Self> {
        // create_gaussian_diffusion: lower() in [eps, epsilon] / [xstart, x0, xo]; 'v' exactly.
        match s.to_lowercase().as_str() {
            "eps" | "epsilon" => Ok(MeanType::Epsilon),
            "xstart" | "x0" | "xo" => Ok(MeanType::Xstart),
            _ if s == "v" => Ok(MeanType::V),
            _ => Err(Error::param(
                "model_mean_type",
                format!("`{s}` is not one of xstart, x0, eps, epsilon, v"),
            )),
        }
    }
}

/// A Patched Diffusion model (Luhman & Luhman 2022, arXiv 2207.04316): the UNet of
/// PatchDiffusion-Pytorch's `unet.py` with its diffusion (`gaussian_diffusion.py`) and
/// sampling (`scripts/image_sample.py`) settings.
///
/// Field names follow the original's `UNetModel` / `create_model_and_diffusion` arguments;
/// [`from_json`](PatchedConfig::from_json) reads both the original keyword arguments and
/// this struct's own serde form. Two fields generalise what the original hard-wires, for
/// tiny test networks: `num_classes` (the original: 1000 when `class_cond`) and
/// `norm_groups` (the original: 32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchedConfig {
    /// Image side length (square images), before patching.
    pub image_size: usize,
    /// Image channels (3).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Patch size `P`: the network runs on `P²·C` channels at `image_size/P`.
    pub patch_size: usize,
    /// Base width (`num_channels` of the scripts).
    pub model_channels: usize,
    /// Width multiplier per level, highest resolution first (floats: `1,1.5,2`).
    pub channel_mult: Vec<f64>,
    /// Residual blocks per level on the way down (one more on the way up).
    pub num_res_blocks: usize,
    /// Post-patch feature resolutions with self-attention (the scripts' `"16,8"`); level `l`
    /// has attention when `2^l` is one of `(image_size/P) / r`, floor division as the
    /// original. The middle block always has attention.
    pub attention_resolutions: Vec<usize>,
    /// Attention heads where `num_head_channels` is unset.
    #[serde(default = "four")]
    pub num_heads: usize,
    /// Channels per attention head (the original's `-1` is `None`).
    #[serde(default)]
    pub num_head_channels: Option<usize>,
    /// Heads of the up path's attention when `num_head_channels` is unset (`None`: as
    /// `num_heads`).
    #[serde(default)]
    pub num_heads_upsample: Option<usize>,
    /// Split q, k, v before the heads (`QKVAttention`) instead of after
    /// (`QKVAttentionLegacy`). `true` in every release.
    #[serde(default)]
    pub use_new_attention_order: bool,
    /// Scale-shift (FiLM) time conditioning: must be `true` (the original's other branch
    /// cannot run: its embedding projection has twice the block's width).
    #[serde(default = "yes")]
    pub use_scale_shift_norm: bool,
    /// Residual blocks as resamplers: must be `false` (no release uses them; refused).
    #[serde(default)]
    pub resblock_updown: bool,
    /// Number of classes of a class-conditional model (`class_cond` gives 1000); `None`
    /// for an unconditional one.
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// Whether the label table has the extra null label `num_classes` (classifier-free
    /// guidance).
    #[serde(default = "yes")]
    pub classifier_free: bool,
    /// Whether the network has the variance head (`learn_sigma`): 6 output channels.
    pub learn_sigma: bool,
    /// GroupNorm groups (32 in the original, for both the affine and the affine-free norm).
    #[serde(default = "thirty_two")]
    pub norm_groups: usize,
    /// Dropout of training (the identity here).
    #[serde(default)]
    pub dropout: f64,
    /// Whether the original sampled in fp16 (a record; the compute kind is chosen at load).
    #[serde(default)]
    pub use_fp16: bool,
    /// Training steps `T`.
    #[serde(default = "thousand")]
    pub diffusion_steps: usize,
    /// `"linear"` (β from 1e-4 to 0.02, scaled by 1000/T), `"linearB"` (to `B` instead of
    /// 0.02: FFHQ's `linear0.025`) or `"cosine"`.
    #[serde(default = "linear")]
    pub noise_schedule: String,
    /// What the mean head predicts.
    #[serde(default)]
    pub model_mean_type: MeanType,
    /// Feed the network `t·1000/T` instead of `t` (`false` in every release).
    #[serde(default)]
    pub rescale_timesteps: bool,
    /// The sampling grid (`space_timesteps` section counts; `""` is every step).
    #[serde(default)]
    pub timestep_respacing: String,
    /// SNR thresholds between the models of a split, descending (ImageNet: `[0.25]`):
    /// model `j` runs where `splits[j−1] ≥ SNR > splits[j]`.
    #[serde(default)]
    pub snr_splits: Vec<f64>,
    /// Classifier-free guidance scale of the sampling script (1.5; 1 is no guidance).
    #[serde(default = "one_and_a_half")]
    pub guidance_scale: f64,
    /// Clip `x̂0` to `[-1, 1]` (the script's `clip_denoised`, `true`).
    #[serde(default = "yes")]
    pub clip_denoised: bool,
}

fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn thousand() -> usize {
    1000
}
fn yes() -> bool {
    true
}
fn linear() -> String {
    "linear".into()
}
fn one_and_a_half() -> f64 {
    1.5
}

/// One layer of a block of the UNet, with its widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    /// 3×3 convolution (`input_blocks.0.0`).
    Conv { cin: usize, cout: usize },
    /// Scale-shift residual block.
    Res { cin: usize, cout: usize },
    /// Self-attention over `c` channels in `heads` heads.
    Attn { c: usize, heads: usize },
    /// TF-"SAME" stride-2 3×3 convolution (`op`).
    Down { cin: usize, cout: usize },
    /// Nearest ×2 then a 3×3 convolution (`conv`).
    Up { cin: usize, cout: usize },
}

/// The blocks of the UNet as the original builds them: `input_blocks.i.j`,
/// `middle_block.j`, `output_blocks.i.j`.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub input: Vec<Vec<Layer>>,
    pub middle: Vec<Layer>,
    pub output: Vec<Vec<Layer>>,
    /// Width of level 0 (`input_ch`).
    pub ch0: usize,
    /// Width of the time embedding (`model_channels·channel_mult[-1]`).
    pub emb: usize,
    /// Patched channels `P²·C`.
    pub patched: usize,
}

impl PatchedConfig {
    fn released(image_size: usize, patch_size: usize, mc: usize, mult: &[f64], nrb: usize) -> Self {
        Self {
            image_size,
            in_channels: 3,
            patch_size,
            model_channels: mc,
            channel_mult: mult.to_vec(),
            num_res_blocks: nrb,
            attention_resolutions: vec![16, 8],
            num_heads: 4,
            num_head_channels: Some(64),
            num_heads_upsample: None,
            use_new_attention_order: true,
            use_scale_shift_norm: true,
            resblock_updown: false,
            num_classes: None,
            classifier_free: true,
            learn_sigma: true,
            norm_groups: 32,
            dropout: 0.0,
            use_fp16: true,
            diffusion_steps: 1000,
            noise_schedule: "linear".into(),
            model_mean_type: MeanType::Xstart,
            rescale_timesteps: false,
            timestep_respacing: "250".into(),
            snr_splits: Vec::new(),
            guidance_scale: 1.5,
            clip_denoised: true,
        }
    }

    /// ImageNet 256×256, class-conditional, two models split at SNR 0.25
    /// (`imagenet_weights_{0,1}.pt`; README flags `--snr_splits '0.25' --channel_mult
    /// '1,2,2,2' --class_cond True --patch_size 4 --num_channels 256 --num_res_blocks 3`,
    /// guidance 1.5, 250 steps; models.md table: 202.15M parameters each).
    pub fn imagenet256() -> Self {
        Self {
            num_classes: Some(1000),
            snr_splits: vec![0.25],
            ..Self::released(256, 4, 256, &[1.0, 2.0, 2.0, 2.0], 3)
        }
    }

    /// FFHQ 1024×1024, unconditional (`ffhq_weights.pt`; `--channel_mult '1,2,2,4,4,4'
    /// --patch_size 4 --noise_schedule linear0.025 --num_channels 128 --num_res_blocks 2`;
    /// 162.65M parameters).
    pub fn ffhq1024() -> Self {
        Self {
            noise_schedule: "linear0.025".into(),
            ..Self::released(1024, 4, 128, &[1.0, 2.0, 2.0, 4.0, 4.0, 4.0], 2)
        }
    }

    /// LSUN 256×256 with `P = 2` (`lsun_weights_p2.pt`; `--channel_mult '1,2,2,4,4'
    /// --num_channels 128 --num_res_blocks 2`; 122.92M parameters).
    pub fn lsun256_p2() -> Self {
        Self::released(256, 2, 128, &[1.0, 2.0, 2.0, 4.0, 4.0], 2)
    }

    /// LSUN 256×256 with `P = 4` (`lsun_weights_p4.pt`; `--channel_mult '1,1,2,2'
    /// --num_channels 256 --num_res_blocks 2`; 121.42M parameters).
    pub fn lsun256_p4() -> Self {
        Self::released(256, 4, 256, &[1.0, 1.0, 2.0, 2.0], 2)
    }

    /// LSUN 256×256 with `P = 8` (`lsun_weights_p8.pt`; `--channel_mult '1,1.5,2'
    /// --num_channels 256 --num_res_blocks 3`; 121.01M parameters).
    pub fn lsun256_p8() -> Self {
        Self::released(256, 8, 256, &[1.0, 1.5, 2.0], 3)
    }

    /// The preset names [`preset`](PatchedConfig::preset) knows.
    pub const PRESETS: [&'static str; 5] = ["imagenet256", "ffhq1024", "lsun256_p2", "lsun256_p4", "lsun256_p8"];

    /// A released configuration by name (see [`PRESETS`](PatchedConfig::PRESETS)).
    pub fn preset(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "imagenet256" | "imagenet" => Ok(Self::imagenet256()),
            "ffhq1024" | "ffhq" => Ok(Self::ffhq1024()),
            "lsun256_p2" | "lsun_p2" => Ok(Self::lsun256_p2()),
            "lsun256_p4" | "lsun_p4" => Ok(Self::lsun256_p4()),
            "lsun256_p8" | "lsun_p8" => Ok(Self::lsun256_p8()),
            _ => Err(Error::param(
                "preset",
                format!(
                    "unknown Patched Diffusion preset `{name}`; use one of {:?}",
                    Self::PRESETS
                ),
            )),
        }
    }

    /// Read a `config.json`: either the original sampling script's keyword arguments
    /// (`image_size`, `num_channels`, `channel_mult: "1,2,2,2"`, `class_cond`, ...; the
    /// names `create_model_and_diffusion` takes, plus `guidance_scale` and `clip_denoised`
    /// of `image_sample.py`; absent keys take the script's defaults, unknown keys are
    /// ignored) or this struct's own serialization (recognised by its `model_channels`
    /// key). The result is validated.
    pub fn from_json(text: &str) -> Result<Self> {
        const FILE: &str = "Patched Diffusion config.json";
        /// Which form a `config.json` is in: this struct's own has `model_channels`.
        #[derive(Deserialize)]
        struct Form {
            #[serde(default, deserialize_with = "config_json::present")]
            model_channels: Option<Option<serde::de::IgnoredAny>>,
        }
        let form: Form = config_json::parse(text).map_err(|f| {
            if f.syntax {
                Error::InvalidInput(f.describe(FILE))
            } else {
                Error::InvalidInput(format!("{FILE} is not a JSON object of settings ({})", f.message))
            }
        })?;
        let cfg = if form.model_channels.is_some() {
            config_json::parse::<PatchedConfig>(text).map_err(|f| Error::InvalidInput(f.describe(FILE)))?
        } else {
            config_json::parse::<OriginalKwargs>(text)
                .map_err(|f| kwargs_fault(f, FILE))?
                .into_config()?
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// This configuration in its own serde form (what [`from_json`](PatchedConfig::from_json)
    /// reads back).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Model(e.to_string()))
    }

    /// Build a configuration from the original scripts' keyword arguments (not validated;
    /// [`from_json`](PatchedConfig::from_json) validates).
    pub fn from_original_kwargs(obj: &Map<String, Value>) -> Result<Self> {
        // Through the text, so that an error can name its key from its position.
        let text = serde_json::to_string_pretty(obj).map_err(|e| Error::Model(e.to_string()))?;
        config_json::parse::<OriginalKwargs>(&text)
            .map_err(|f| kwargs_fault(f, "the keyword arguments"))?
            .into_config()
    }

    /// Post-patch feature resolution `image_size/P`.
    pub fn input_resolution(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Width of level `l`: `int(model_channels·channel_mult[l])`, truncated as the original.
    pub fn level_channels(&self, l: usize) -> usize {
        width(self.model_channels, self.channel_mult[l])
    }

    /// Width of the time embedding, `int(model_channels·channel_mult[-1])` (not `4·mc`).
    pub fn time_embed_dim(&self) -> usize {
        self.channel_mult.last().map_or(0, |&m| width(self.model_channels, m))
    }

    /// The downsampling rates with attention (`(image_size/P) // r` per resolution `r`).
    pub fn attention_rates(&self) -> Vec<usize> {
        let res = self.input_resolution();
        self.attention_resolutions
            .iter()
            .filter(|&&r| r > 0)
            .map(|&r| res / r)
            .collect()
    }

    /// The null (unconditional) label, `num_classes`, of a classifier-free model.
    pub fn null_label(&self) -> Option<i64> {
        match self.num_classes {
            Some(n) if self.classifier_free => Some(n as i64),
            _ => None,
        }
    }

    /// The number of models a split of this configuration has (`snr_splits.len() + 1`).
    pub fn num_models(&self) -> usize {
        self.snr_splits.len() + 1
    }

    /// The betas of `noise_schedule` over `diffusion_steps` (`get_named_beta_schedule`).
    pub fn betas(&self) -> Result<Vec<f64>> {
        let t = self.diffusion_steps;
        if !(2..=MAX_STEPS).contains(&t) {
            return Err(Error::param(
                "diffusion_steps",
                format!("must lie in 2..={MAX_STEPS}, got {t}"),
            ));
        }
        let name = self.noise_schedule.as_str();
        if let Some(rest) = name.strip_prefix("linear") {
            let scale = 1000.0 / t as f64;
            let beta_max = if rest.is_empty() {
                0.02
            } else {
                rest.trim().parse::<f64>().map_err(|_| {
                    Error::param(
                        "noise_schedule",
                        format!("`{name}`: expected linear or linearB with B a number (e.g. linear0.025)"),
                    )
                })?
            };
            let (start, end) = (scale * 0.0001, scale * beta_max);
            if !(end.is_finite() && end > 0.0 && end < 1.0) {
                return Err(Error::param(
                    "noise_schedule",
                    format!("`{name}` gives a final beta {end} outside (0, 1) for {t} steps"),
                ));
            }
            Ok(DiscreteSchedule::linear(t, start, end)?.betas().to_vec())
        } else if name == "cosine" {
            Ok(DiscreteSchedule::cosine(t, 0.008, 0.999)?.betas().to_vec())
        } else {
            Err(Error::param(
                "noise_schedule",
                format!("unknown beta schedule `{name}`; use linear, linearB (e.g. linear0.025) or cosine"),
            ))
        }
    }

    /// The training noise schedule.
    pub fn schedule(&self) -> Result<DiscreteSchedule> {
        DiscreteSchedule::from_betas(self.betas()?)
    }

    /// The sampling grid of `timestep_respacing` (ascending training steps).
    pub fn respaced_steps(&self) -> Result<Vec<usize>> {
        respaced_steps(self.diffusion_steps, &self.timestep_respacing)
    }

    /// The denoiser spec of one model: its parameterization, the original integer step,
    /// data in `[-1, 1]`, `in_channels` × `image_size`², learned variance iff `learn_sigma`.
    pub fn spec(&self) -> DenoiserSpec {
        let mut spec = DenoiserSpec::new(
            self.model_mean_type.parameterization(),
            TimeInput::Step,
            DataRange::MinusOneToOne,
        )
        .with_channels(self.in_channels)
        .with_image_size(self.image_size, self.image_size);
        spec.learned_variance = self.learn_sigma;
        spec
    }

    /// The names of the fields in which `other` differs from `self`.
    pub fn differences(&self, other: &PatchedConfig) -> Vec<&'static str> {
        let mut d = Vec::new();
        macro_rules! cmp {
            ($($f:ident),*) => { $( if self.$f != other.$f { d.push(stringify!($f)); } )* };
        }
        cmp!(
            image_size,
            in_channels,
            patch_size,
            model_channels,
            channel_mult,
            num_res_blocks,
            attention_resolutions,
            num_heads,
            num_head_channels,
            num_heads_upsample,
            use_new_attention_order,
            use_scale_shift_norm,
            resblock_updown,
            num_classes,
            classifier_free,
            learn_sigma,
            norm_groups,
            dropout,
            use_fp16,
            diffusion_steps,
            noise_schedule,
            model_mean_type,
            rescale_timesteps,
            timestep_respacing,
            snr_splits,
            guidance_scale,
            clip_denoised
        );
        d
    }

    /// Check that the configuration describes a network the original builds and runs,
    /// within [`MAX_PARAMETERS`], without allocating anything: errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.plan().map(|_| ())?;
        let n = self.num_parameters()?;
        if n > MAX_PARAMETERS {
            return Err(Error::param(
                "PatchedConfig",
                format!("{n} parameters is more than the {MAX_PARAMETERS} this crate accepts"),
            ));
        }
        self.betas()?;
        self.respaced_steps()?;
        if !self.guidance_scale.is_finite() {
            return Err(Error::param(
                "guidance_scale",
                format!("must be finite, got {}", self.guidance_scale),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::param(
                "dropout",
                format!("must lie in [0, 1), got {}", self.dropout),
            ));
        }
        let mut prev = f64::INFINITY;
        for &s in &self.snr_splits {
            if !(s.is_finite() && s > 0.0 && s < prev) {
                return Err(Error::param(
                    "snr_splits",
                    format!(
                        "{:?}: thresholds must be positive, finite and descending",
                        self.snr_splits
                    ),
                ));
            }
            prev = s;
        }
        Ok(())
    }

    /// Number of parameters, computed from the shapes (nothing is allocated).
    pub fn num_parameters(&self) -> Result<u64> {
        let shapes = self.parameter_shapes()?;
        let mut total: u128 = 0;
        for (_, s) in &shapes {
            total += s.iter().map(|&d| d as u128).product::<u128>();
        }
        Ok(u64::try_from(total).unwrap_or(u64::MAX))
    }

    /// The state-dict skeleton: every key of the original `state_dict()` with its shape,
    /// in the original's order (`label_embs`, `time_embed`, `input_blocks`, `middle_block`,
    /// `output_blocks`, `out`, the variance head).
    pub fn parameter_shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let plan = self.plan()?;
        let mut v: Vec<(String, Vec<usize>)> = Vec::new();
        let mut add = |k: String, s: Vec<usize>| v.push((k, s));
        let (mc, e, ch0, pc) = (self.model_channels, plan.emb, plan.ch0, plan.patched);
        if let Some(n) = self.num_classes {
            add(
                "label_embs.weight".into(),
                vec![n + usize::from(self.classifier_free), ch0],
            );
        }
        add("time_embed.0.weight".into(), vec![4 * mc, mc]);
        add("time_embed.0.bias".into(), vec![4 * mc]);
        add("time_embed.2.weight".into(), vec![e, 4 * mc]);
        add("time_embed.2.bias".into(), vec![e]);
        let class = self.num_classes.is_some();
        let mut layer = |p: String, l: &Layer| {
            let conv = |add: &mut dyn FnMut(String, Vec<usize>), p: &str, cin: usize, cout: usize, k: usize| {
                add(format!("{p}.weight"), vec![cout, cin, k, k]);
                add(format!("{p}.bias"), vec![cout]);
            };
            match *l {
                Layer::Conv { cin, cout } => conv(&mut add, &p, cin, cout, 3),
                Layer::Res { cin, cout } => {
                    add(format!("{p}.in_layers.0.weight"), vec![cin]);
                    add(format!("{p}.in_layers.0.bias"), vec![cin]);
                    conv(&mut add, &format!("{p}.in_layers.2"), cin, cout, 3);
                    if class {
                        add(format!("{p}.classemb_proj.weight"), vec![cout, ch0]);
                        add(format!("{p}.classemb_proj.bias"), vec![cout]);
                    }
                    add(format!("{p}.emb_layers.weight"), vec![2 * cout, e]);
                    add(format!("{p}.emb_layers.bias"), vec![2 * cout]);
                    conv(&mut add, &format!("{p}.out_layers.2"), cout, cout, 3);
                    if cin != cout {
                        conv(&mut add, &format!("{p}.skip_connection"), cin, cout, 1);
                    }
                }
                Layer::Attn { c, .. } => {
                    add(format!("{p}.norm.weight"), vec![c]);
                    add(format!("{p}.norm.bias"), vec![c]);
                    add(format!("{p}.qkv.weight"), vec![3 * c, c, 1]);
                    add(format!("{p}.qkv.bias"), vec![3 * c]);
                    add(format!("{p}.proj_out.weight"), vec![c, c, 1]);
                    add(format!("{p}.proj_out.bias"), vec![c]);
                }
                Layer::Down { cin, cout } => conv(&mut add, &format!("{p}.op"), cin, cout, 3),
                Layer::Up { cin, cout } => conv(&mut add, &format!("{p}.conv"), cin, cout, 3),
            }
        };
        for (i, block) in plan.input.iter().enumerate() {
            for (j, l) in block.iter().enumerate() {
                layer(format!("input_blocks.{i}.{j}"), l);
            }
        }
        for (j, l) in plan.middle.iter().enumerate() {
            layer(format!("middle_block.{j}"), l);
        }
        for (i, block) in plan.output.iter().enumerate() {
            for (j, l) in block.iter().enumerate() {
                layer(format!("output_blocks.{i}.{j}"), l);
            }
        }
        add("out.0.weight".into(), vec![ch0]);
        add("out.0.bias".into(), vec![ch0]);
        add("out.2.weight".into(), vec![pc, ch0, 3, 3]);
        add("out.2.bias".into(), vec![pc]);
        if self.learn_sigma {
            add("variance_output_t_emb.weight".into(), vec![2 * mc, e, 1, 1]);
            add("variance_output_t_emb.bias".into(), vec![2 * mc]);
            add("variance_output_model.0.weight".into(), vec![mc, 2 * mc, 3, 3]);
            add("variance_output_model.0.bias".into(), vec![mc]);
            add("variance_output_model.2.weight".into(), vec![pc, mc, 3, 3]);
            add("variance_output_model.2.bias".into(), vec![pc]);
        }
        Ok(v)
    }

    /// Validate the architecture and lay out its blocks as `UNetModel.__init__` does,
    /// including its channel bookkeeping on the way up (`if ich != ch: ch = ich % ch`),
    /// which only matches the tensors when `channel_mult` never decreases: other
    /// configurations are refused, since the original cannot run them.
    pub(crate) fn plan(&self) -> Result<Plan> {
        let p = |name: &'static str, reason: String| Err(Error::param(name, reason));
        if self.image_size == 0 || self.image_size > MAX_IMAGE_SIZE {
            return p(
                "image_size",
                format!("must lie in 1..={MAX_IMAGE_SIZE}, got {}", self.image_size),
            );
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return p(
                "patch_size",
                format!(
                    "patch size {} must evenly divide the image size {}",
                    self.patch_size, self.image_size
                ),
            );
        }
        if self.in_channels == 0 || self.in_channels > 64 {
            return p("in_channels", format!("must lie in 1..=64, got {}", self.in_channels));
        }
        let levels = self.channel_mult.len();
        if levels == 0 || levels > MAX_LEVELS {
            return p("channel_mult", format!("needs 1..={MAX_LEVELS} levels, got {levels}"));
        }
        if let Some(m) = self.channel_mult.iter().find(|m| !(m.is_finite() && **m > 0.0)) {
            return p(
                "channel_mult",
                format!("multipliers must be positive and finite, got {m}"),
            );
        }
        if self.model_channels < 4 || self.model_channels > MAX_WIDTH {
            return p(
                "model_channels",
                format!("must lie in 4..={MAX_WIDTH}, got {}", self.model_channels),
            );
        }
        let widths: Vec<usize> = (0..levels).map(|l| self.level_channels(l)).collect();
        if let Some(w) = widths.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return p(
                "channel_mult",
                format!(
                    "gives a level width {w} outside 1..={MAX_WIDTH} ({:?})",
                    self.channel_mult
                ),
            );
        }
        if self.num_res_blocks == 0 || self.num_res_blocks > MAX_RES_BLOCKS {
            return p(
                "num_res_blocks",
                format!("must lie in 1..={MAX_RES_BLOCKS}, got {}", self.num_res_blocks),
            );
        }
        let res = self.input_resolution();
        let down = 1usize << (levels - 1);
        if !res.is_multiple_of(down) {
            return p(
                "channel_mult",
                format!(
                    "{levels} levels halve the post-patch resolution {res} {} times; it must be a multiple of {down}",
                    levels - 1
                ),
            );
        }
        if let Some(n) = self.num_classes {
            if n == 0 || n > MAX_CLASSES {
                return p("num_classes", format!("must lie in 1..={MAX_CLASSES}, got {n}"));
            }
        }
        if self.attention_resolutions.contains(&0) {
            return p("attention_resolutions", "resolutions must be positive".into());
        }
        if !self.use_scale_shift_norm {
            return p(
                "use_scale_shift_norm",
                "must be true: the original's additive branch cannot run (its time projection has \
                 twice the block's width)"
                    .into(),
            );
        }
        if self.resblock_updown {
            return p(
                "resblock_updown",
                "residual up/downsampling blocks are not supported (no released model uses them)".into(),
            );
        }
        let groups = self.norm_groups;
        if groups == 0 {
            return p("norm_groups", "must be positive".into());
        }
        let ch0 = widths[0];
        if ch0 < 4 || !ch0.is_multiple_of(2) {
            return p(
                "channel_mult",
                format!("the level-0 width {ch0} must be even and at least 4 (2-D positional embedding)"),
            );
        }
        if self.learn_sigma && ch0 != self.model_channels {
            return p(
                "channel_mult",
                format!(
                    "with learn_sigma the variance head takes 2·model_channels = {} channels, but \
                     cat[x, h] has 2·{ch0}: channel_mult[0] must be 1",
                    2 * self.model_channels
                ),
            );
        }
        let emb = self.time_embed_dim();
        let rates = self.attention_rates();
        let heads = |c: usize, upsample: bool| -> Result<usize> {
            match self.num_head_channels {
                Some(d) => {
                    if !c.is_multiple_of(d) {
                        return Err(Error::param(
                            "num_head_channels",
                            format!("attention width {c} is not divisible by num_head_channels {d}"),
                        ));
                    }
                    Ok(c / d)
                }
                None => {
                    let h = if upsample {
                        self.num_heads_upsample.unwrap_or(self.num_heads)
                    } else {
                        self.num_heads
                    };
                    if h == 0 || !c.is_multiple_of(h) {
                        return Err(Error::param(
                            if upsample { "num_heads_upsample" } else { "num_heads" },
                            format!("attention width {c} is not divisible into {h} heads"),
                        ));
                    }
                    Ok(h)
                }
            }
        };
        let norm = |c: usize, what: &str| -> Result<()> {
            if !c.is_multiple_of(groups) {
                return Err(Error::param(
                    "norm_groups",
                    format!("{what} width {c} is not divisible by {groups} GroupNorm groups"),
                ));
            }
            Ok(())
        };
        let patched = self.in_channels * self.patch_size * self.patch_size;

        let mut input = vec![vec![Layer::Conv {
            cin: patched,
            cout: ch0,
        }]];
        let mut chans = vec![ch0];
        let mut ch = ch0;
        let mut ds = 1usize;
        for l in 0..levels {
            for _ in 0..self.num_res_blocks {
                let mut block = vec![Layer::Res {
                    cin: ch,
                    cout: widths[l],
                }];
                norm(ch, "a residual block's input")?;
                ch = widths[l];
                norm(ch, "a residual block's")?;
                if rates.contains(&ds) {
                    norm(ch, "an attention block's")?;
                    block.push(Layer::Attn {
                        c: ch,
                        heads: heads(ch, false)?,
                    });
                }
                input.push(block);
                chans.push(ch);
            }
            if l + 1 != levels {
                let out = widths[l + 1];
                input.push(vec![Layer::Down { cin: ch, cout: out }]);
                ch = out;
                chans.push(ch);
                ds *= 2;
            }
        }
        norm(ch, "the middle block's")?;
        let middle = vec![
            Layer::Res { cin: ch, cout: ch },
            Layer::Attn {
                c: ch,
                heads: heads(ch, false)?,
            },
            Layer::Res { cin: ch, cout: ch },
        ];
        // `ch` is the original's bookkeeping, `actual` the width of the tensor it describes.
        let mut actual = ch;
        let mut output = Vec::new();
        for l in (0..levels).rev() {
            for i in 0..=self.num_res_blocks {
                let ich = chans
                    .pop()
                    .ok_or_else(|| Error::Model("Patched UNet plan: skip stack exhausted".into()))?;
                if ich != ch {
                    if ch == 0 {
                        return p(
                            "channel_mult",
                            "the original's channel bookkeeping divides by zero".into(),
                        );
                    }
                    ch = ich % ch;
                }
                if ch + ich != actual + ich {
                    return p(
                        "channel_mult",
                        format!(
                            "{:?}: the original builds an up-path block for {} input channels where its \
                             tensor has {}; it only works for non-decreasing multipliers",
                            self.channel_mult,
                            ch + ich,
                            actual + ich
                        ),
                    );
                }
                norm(ch + ich, "a residual block's input")?;
                let mut block = vec![Layer::Res {
                    cin: ch + ich,
                    cout: widths[l],
                }];
                ch = widths[l];
                actual = ch;
                if rates.contains(&ds) {
                    block.push(Layer::Attn {
                        c: ch,
                        heads: heads(ch, true)?,
                    });
                }
                if l > 0 && i == self.num_res_blocks {
                    let out = widths[l - 1];
                    block.push(Layer::Up { cin: ch, cout: out });
                    actual = out;
                    ds /= 2;
                }
                output.push(block);
            }
        }
        norm(ch0, "the output head's")?;
        Ok(Plan {
            input,
            middle,
            output,
            ch0,
            emb,
            patched,
        })
    }
}

/// `int(mc·m)` in f64, as Python computes it.
fn width(mc: usize, m: f64) -> usize {
    let w = mc as f64 * m;
    if w.is_finite() && w >= 0.0 && w < usize::MAX as f64 {
        w.trunc() as usize
    } else {
        0
    }
}

/// `create_model`'s channel multipliers for an empty `channel_mult`, by post-patch
/// resolution.
fn default_channel_mult(image_size: usize, patch_size: usize) -> Result<Vec<f64>> {
    if patch_size == 0 || !image_size.is_multiple_of(patch_size) {
        return Err(Error::param(
            "patch_size",
            format!("patch size {patch_size} must evenly divide the image size {image_size}"),
        ));
    }
    let m: &[f64] = match image_size / patch_size {
        256 => &[1.0, 1.0, 2.0, 2.0, 4.0, 4.0],
        128 => &[1.0, 1.0, 2.0, 3.0, 4.0],
        64 => &[1.0, 2.0, 3.0, 4.0],
        32 => &[1.0, 2.0, 3.0],
        r => {
            // At 16 the original compares instead of assigning (`channel_mult == (1, 2)`) and
            // then fails; every other resolution raises "unsupported image size".
            return Err(Error::param(
                "channel_mult",
                format!(
                    "is empty and the original has no default for post-patch resolution {r}; give it \
                     explicitly (e.g. \"1,2,2,2\")"
                ),
            ));
        }
    };
    Ok(m.to_vec())
}

/// The keyword arguments of the original scripts (`create_model_and_diffusion`, plus
/// `guidance_scale` and `clip_denoised` of `image_sample.py`) as their `config.json`
/// writes them: numbers and booleans may be strings, lists `"1,2,2,2"` strings or JSON
/// lists; absent or `null` keys take the scripts' defaults, unknown keys are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct OriginalKwargs {
    #[serde(deserialize_with = "config_json::lenient_uint")]
    image_size: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    in_channels: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    patch_size: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    num_channels: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_text")]
    channel_mult: Option<String>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    num_res_blocks: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_text")]
    attention_resolutions: Option<String>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    num_heads: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_int")]
    num_head_channels: Option<i64>,
    #[serde(deserialize_with = "config_json::lenient_int")]
    num_heads_upsample: Option<i64>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    use_new_attention_order: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    use_scale_shift_norm: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    resblock_updown: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    class_cond: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    num_classes: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    classifier_free: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    learn_sigma: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    norm_groups: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_float")]
    dropout: Option<f64>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    use_fp16: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_uint")]
    diffusion_steps: Option<usize>,
    #[serde(deserialize_with = "config_json::lenient_text")]
    noise_schedule: Option<String>,
    #[serde(deserialize_with = "config_json::lenient_text")]
    model_mean_type: Option<String>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    rescale_timesteps: Option<bool>,
    #[serde(deserialize_with = "config_json::lenient_text")]
    timestep_respacing: Option<String>,
    #[serde(deserialize_with = "config_json::lenient_text")]
    snr_splits: Option<String>,
    #[serde(deserialize_with = "config_json::lenient_float")]
    guidance_scale: Option<f64>,
    #[serde(deserialize_with = "config_json::lenient_bool")]
    clip_denoised: Option<bool>,
}

/// The keys of [`OriginalKwargs`], for errors that name one.
const KWARGS_KEYS: &[&str] = &[
    "image_size",
    "in_channels",
    "patch_size",
    "num_channels",
    "channel_mult",
    "num_res_blocks",
    "attention_resolutions",
    "num_heads",
    "num_head_channels",
    "num_heads_upsample",
    "use_new_attention_order",
    "use_scale_shift_norm",
    "resblock_updown",
    "class_cond",
    "num_classes",
    "classifier_free",
    "learn_sigma",
    "norm_groups",
    "dropout",
    "use_fp16",
    "diffusion_steps",
    "noise_schedule",
    "model_mean_type",
    "rescale_timesteps",
    "timestep_respacing",
    "snr_splits",
    "guidance_scale",
    "clip_denoised",
];

/// A keyword-argument value of the wrong form, as an error naming its key.
fn kwargs_fault(f: config_json::Fault, file: &str) -> Error {
    match f
        .key
        .as_deref()
        .and_then(|k| KWARGS_KEYS.iter().find(|&&known| known == k))
    {
        Some(&key) if !f.syntax => Error::param(key, format!("{} (in {file}; fix this value)", f.message)),
        _ if f.syntax => Error::InvalidInput(f.describe(file)),
        _ => Error::InvalidInput(format!(
            "{file} is not a JSON object of keyword arguments ({})",
            f.message
        )),
    }
}

impl OriginalKwargs {
    /// The configuration, with the scripts' defaults for absent keys.
    fn into_config(self) -> Result<PatchedConfig> {
        let image_size = self.image_size.unwrap_or(64);
        let patch_size = self.patch_size.unwrap_or(4);
        let mult = self.channel_mult.unwrap_or_default();
        let channel_mult = if mult.trim().is_empty() {
            default_channel_mult(image_size, patch_size)?
        } else {
            mult.split(',')
                .map(|m| {
                    m.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| Error::param("channel_mult", format!("`{mult}`: `{m}` is not a number")))
                })
                .collect::<Result<Vec<f64>>>()?
        };
        let attn = self.attention_resolutions.unwrap_or_else(|| "16,8".into());
        let attention_resolutions = attn
            .split(',')
            .map(|r| {
                r.trim().parse::<usize>().map_err(|_| {
                    Error::param(
                        "attention_resolutions",
                        format!("`{attn}`: `{r}` is not a non-negative integer"),
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        let splits = self.snr_splits.unwrap_or_default();
        let snr_splits = if splits.trim().is_empty() {
            Vec::new()
        } else {
            splits
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse::<f64>()
                        .map_err(|_| Error::param("snr_splits", format!("`{splits}`: `{s}` is not a number")))
                })
                .collect::<Result<Vec<f64>>>()?
        };
        let optional = |k: &'static str, v: Option<i64>| -> Result<Option<usize>> {
            match v.unwrap_or(-1) {
                -1 => Ok(None),
                v if v > 0 => Ok(Some(v as usize)),
                v => Err(Error::param(k, format!("must be positive or -1, got {v}"))),
            }
        };
        Ok(PatchedConfig {
            image_size,
            in_channels: self.in_channels.unwrap_or(3),
            patch_size,
            model_channels: self.num_channels.unwrap_or(128),
            channel_mult,
            num_res_blocks: self.num_res_blocks.unwrap_or(2),
            attention_resolutions,
            num_heads: self.num_heads.unwrap_or(4),
            num_head_channels: optional("num_head_channels", self.num_head_channels)?,
            num_heads_upsample: optional("num_heads_upsample", self.num_heads_upsample)?,
            use_new_attention_order: self.use_new_attention_order.unwrap_or(false),
            use_scale_shift_norm: self.use_scale_shift_norm.unwrap_or(true),
            resblock_updown: self.resblock_updown.unwrap_or(false),
            num_classes: if self.class_cond.unwrap_or(false) {
                Some(self.num_classes.unwrap_or(1000))
            } else {
                None
            },
            classifier_free: self.classifier_free.unwrap_or(true),
            learn_sigma: self.learn_sigma.unwrap_or(false),
            norm_groups: self.norm_groups.unwrap_or(32),
            dropout: self.dropout.unwrap_or(0.0),
            use_fp16: self.use_fp16.unwrap_or(false),
            diffusion_steps: self.diffusion_steps.unwrap_or(1000),
            noise_schedule: self.noise_schedule.unwrap_or_else(|| "linear".into()),
            model_mean_type: MeanType::parse(&self.model_mean_type.unwrap_or_else(|| "xstart".into()))?,
            rescale_timesteps: self.rescale_timesteps.unwrap_or(false),
            timestep_respacing: self.timestep_respacing.unwrap_or_default(),
            snr_splits,
            guidance_scale: self.guidance_scale.unwrap_or(1.5),
            clip_denoised: self.clip_denoised.unwrap_or(true),
        })
    }
}
