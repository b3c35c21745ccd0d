//! Configurations of DLSM's networks, in the original `ml_collections` field names.
//!
//! [`NcsnppConfig`] mirrors the sections of a score_sde / DLSM config that NCSN++ and its
//! sampler read (`data`, `model`, `training`, `sampling`), so the original config dumped as
//! JSON (`json.dumps(config.to_dict())`) deserializes with serde directly: unknown keys are
//! ignored, missing ones take DLSM's CIFAR-10 values (`configs/eval/cifar10/...`).
//! [`ResNetCondConfig`] is the time-conditional classifier (`resnet_cond.py`), read from
//! the same file's `classifier` section.
//!
//! Every size is bounded and the parameter count is computed from the architecture (no
//! tensor is allocated) before a network is built: [`NcsnppConfig::validate`].

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest parameter count a configuration may describe (4·10⁹, ~16 GB in f32).
pub const MAX_PARAMETERS: u64 = 4_000_000_000;

/// String-valued options: case-insensitive on input (the original lower-cases them),
/// errors naming the field.
macro_rules! config_enum {
    ($(#[$m:meta])* $name:ident, $field:literal, { $($(#[$vm:meta])* $var:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $var),+
        }

        impl $name {
            /// The name the original configs use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$var => $s),+
                }
            }

            /// Parse a name, ignoring case.
            pub fn parse(s: &str) -> Result<Self> {
                let lower = s.to_ascii_lowercase();
                $(if lower == $s {
                    return Ok(Self::$var);
                })+
                Err(Error::param(
                    "NcsnppConfig",
                    format!("{}: `{s}` is not one of {:?}", $field, [$($s),+]),
                ))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

config_enum!(
    /// `model.resblock_type`.
    ResblockType, "model.resblock_type", {
        /// `ResnetBlockDDPMpp`: DDPM's block, resampling by separate (FIR) layers.
        Ddpm => "ddpm",
        /// `ResnetBlockBigGANpp`: resampling inside the block (DLSM).
        Biggan => "biggan",
    }
);

config_enum!(
    /// `model.progressive`: how the output path is built.
    Progressive, "model.progressive", {
        /// A plain UNet output (DLSM).
        None => "none",
        /// An output image pyramid summed over the levels.
        OutputSkip => "output_skip",
        /// A residual feature pyramid.
        Residual => "residual",
    }
);

config_enum!(
    /// `model.progressive_input`: how the input image enters the down path.
    ProgressiveInput, "model.progressive_input", {
        /// Only through the first convolution.
        None => "none",
        /// A downsampled copy combined at every level.
        InputSkip => "input_skip",
        /// A residual pyramid of strided FIR convolutions (DLSM).
        Residual => "residual",
    }
);

config_enum!(
    /// `model.progressive_combine`.
    CombineMethod, "model.progressive_combine", {
        /// Concatenate channels.
        Cat => "cat",
        /// Add (DLSM).
        Sum => "sum",
    }
);

config_enum!(
    /// `model.embedding_type`: how the noise level is embedded.
    EmbeddingType, "model.embedding_type", {
        /// Gaussian Fourier features of `log σ` (continuous training; DLSM).
        Fourier => "fourier",
        /// DDPM's sinusoid of the discrete noise index (`continuous = False`).
        Positional => "positional",
    }
);

config_enum!(
    /// `model.nonlinearity`.
    Nonlinearity, "model.nonlinearity", {
        /// `nn.ELU`.
        Elu => "elu",
        /// `nn.ReLU`.
        Relu => "relu",
        /// `nn.LeakyReLU(0.2)`.
        Lrelu => "lrelu",
        /// `nn.SiLU` (DLSM).
        Swish => "swish",
    }
);

/// The `data` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataConfig {
    /// `CIFAR10` or `CIFAR100` for the released models (decides the classes a guiding
    /// classifier must have).
    pub dataset: String,
    /// Side length of the square images.
    pub image_size: usize,
    /// Image channels.
    pub num_channels: usize,
    /// `true`: data in `[-1, 1]`; `false` (DLSM): data in `[0, 1]`, mapped to `2x − 1`
    /// inside the network.
    pub centered: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "CIFAR10".into(),
            image_size: 32,
            num_channels: 3,
            centered: false,
        }
    }
}

/// The `model` section: NCSN++'s architecture and the VE SDE's noise range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    /// Model name; only `ncsnpp` is handled here.
    pub name: String,
    /// Base width.
    pub nf: usize,
    /// Width multiplier per level, highest resolution first.
    pub ch_mult: Vec<usize>,
    /// ResNet blocks per level on the way down (one more on the way up).
    pub num_res_blocks: usize,
    /// Resolutions whose blocks are followed by self-attention (others are ignored, as in
    /// the original).
    pub attn_resolutions: Vec<usize>,
    /// Dropout (training only: the identity here).
    pub dropout: f64,
    /// Convolutions in the resampling layers.
    pub resamp_with_conv: bool,
    /// Whether the network is told the noise level (`temb`).
    pub conditional: bool,
    /// FIR (StyleGAN2 `upfirdn2d`) resampling instead of nearest / average pooling.
    pub fir: bool,
    /// The separable FIR kernel (DLSM: `[1, 3, 3, 1]`).
    pub fir_kernel: Vec<f64>,
    /// Residual sums scaled by `1/√2`.
    pub skip_rescale: bool,
    /// Residual block kind.
    pub resblock_type: ResblockType,
    /// Output pyramid.
    pub progressive: Progressive,
    /// Input pyramid.
    pub progressive_input: ProgressiveInput,
    /// How the input pyramid is combined (`input_skip` only).
    pub progressive_combine: CombineMethod,
    /// Noise-level embedding.
    pub embedding_type: EmbeddingType,
    /// Standard deviation of the fixed Fourier frequencies (their values are stored).
    pub fourier_scale: f64,
    /// Initialisation scale of the last layers (training only; kept for completeness).
    pub init_scale: f64,
    /// Divide the output by `σ`, so that it is the score.
    pub scale_by_sigma: bool,
    /// Activation.
    pub nonlinearity: Nonlinearity,
    /// Smallest VE noise level.
    pub sigma_min: f64,
    /// Largest VE noise level.
    pub sigma_max: f64,
    /// Number of discrete noise levels `N` (the `sigmas` buffer).
    pub num_scales: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            name: "ncsnpp".into(),
            nf: 128,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 8,
            attn_resolutions: vec![16],
            dropout: 0.1,
            resamp_with_conv: true,
            conditional: true,
            fir: true,
            fir_kernel: vec![1.0, 3.0, 3.0, 1.0],
            skip_rescale: true,
            resblock_type: ResblockType::Biggan,
            progressive: Progressive::None,
            progressive_input: ProgressiveInput::Residual,
            progressive_combine: CombineMethod::Sum,
            embedding_type: EmbeddingType::Fourier,
            fourier_scale: 16.0,
            init_scale: 0.0,
            scale_by_sigma: true,
            nonlinearity: Nonlinearity::Swish,
            sigma_min: 0.01,
            sigma_max: 50.0,
            num_scales: 1000,
        }
    }
}

/// The `training` section (what inference needs of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingConfig {
    /// The SDE; only `vesde` is handled here.
    pub sde: String,
    /// Continuous-time training (required by Fourier embeddings).
    pub continuous: bool,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            sde: "vesde".into(),
            continuous: true,
        }
    }
}

/// The `sampling` section: DLSM's predictor-corrector settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingConfig {
    /// `pc` (predictor-corrector).
    pub method: String,
    /// `reverse_diffusion` (the only predictor mapped onto the crate's samplers).
    pub predictor: String,
    /// `langevin` or `none`.
    pub corrector: String,
    /// Langevin signal-to-noise ratio (0.16).
    pub snr: f64,
    /// Corrector steps per noise level (1).
    pub n_steps_each: usize,
    /// Return the last step's mean (no noise): always done here.
    pub noise_removal: bool,
    /// Classifier-guidance weight (DLSM's `scaling_factor`, 1).
    pub scaling_factor: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            method: "pc".into(),
            predictor: "reverse_diffusion".into(),
            corrector: "langevin".into(),
            snr: 0.16,
            n_steps_each: 1,
            noise_removal: true,
            scaling_factor: 1.0,
        }
    }
}

/// An NCSN++ score model on a VE SDE, as DLSM configures it (the `ml_collections` config's
/// sections and field names).
///
/// ```
/// use boomerang::models::ncsnpp::NcsnppConfig;
/// let json = r#"{"model": {"nf": 128, "ch_mult": [1, 2, 2, 2], "fir": true},
///                "data": {"dataset": "CIFAR100", "centered": false}, "optim": {"lr": 2e-4}}"#;
/// let cfg = NcsnppConfig::from_json(json)?;
/// assert_eq!(cfg.num_parameters()?, 107_588_075);
/// assert_eq!(cfg.num_classes(), Some(100));
/// # Ok::<(), boomerang::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NcsnppConfig {
    /// `data`.
    pub data: DataConfig,
    /// `model`.
    pub model: ModelConfig,
    /// `training`.
    pub training: TrainingConfig,
    /// `sampling`.
    pub sampling: SamplingConfig,
}

impl NcsnppConfig {
    /// DLSM's CIFAR-10 score model (`configs/eval/cifar10/eval_cifar10_configs.py`):
    /// nf 128, ch_mult (1,2,2,2), 8 BigGAN blocks per level, attention at 16, FIR
    /// `[1,3,3,1]`, skip rescaling, residual input pyramid, Fourier features (scale 16),
    /// σ ∈ [0.01, 50], N = 1000; 107.59M parameters.
    pub fn dlsm_cifar10() -> Self {
        Self::default()
    }

    /// DLSM's CIFAR-100 score model: the CIFAR-10 architecture, dataset `CIFAR100`.
    pub fn dlsm_cifar100() -> Self {
        let mut c = Self::default();
        c.data.dataset = "CIFAR100".into();
        c
    }

    /// A preset by name: `cifar10` or `cifar100`.
    pub fn preset(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "cifar10" | "dlsm_cifar10" => Ok(Self::dlsm_cifar10()),
            "cifar100" | "dlsm_cifar100" => Ok(Self::dlsm_cifar100()),
            _ => Err(Error::param(
                "preset",
                format!("unknown NCSN++ preset `{name}`; use cifar10 or cifar100"),
            )),
        }
    }

    /// The classes of `data.dataset` (`CIFAR10`: 10, `CIFAR100`: 100), if known.
    pub fn num_classes(&self) -> Option<usize> {
        dataset_classes(&self.data.dataset)
    }

    /// Number of levels.
    pub fn levels(&self) -> usize {
        self.model.ch_mult.len()
    }

    /// Resolution of every level.
    pub fn resolutions(&self) -> Vec<usize> {
        (0..self.levels()).map(|l| self.data.image_size >> l).collect()
    }

    /// The time-embedding width the residual blocks take (`4·nf`).
    pub fn temb_dim(&self) -> usize {
        4 * self.model.nf
    }

    /// Check every field that can be checked without building the network (the bounds
    /// of [`validate`](Self::validate), which adds the architecture's own checks).
    /// Errors name the field.
    pub(crate) fn check_fields(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::param("NcsnppConfig", format!("{field}: {why}")));
        let m = &self.model;
        if !m.name.eq_ignore_ascii_case("ncsnpp") {
            return bad(
                "model.name",
                format!("`{}`: only ncsnpp models are handled here", m.name),
            );
        }
        if !self.training.sde.eq_ignore_ascii_case("vesde") {
            return bad(
                "training.sde",
                format!("`{}`: only the VE SDE (vesde) is handled here", self.training.sde),
            );
        }
        if m.embedding_type == EmbeddingType::Fourier && !self.training.continuous {
            return bad(
                "training.continuous",
                "Fourier embeddings are only used with continuous training (the original asserts it)".into(),
            );
        }
        if !(1..=4096).contains(&m.nf) {
            return bad("model.nf", format!("{} is not in 1..=4096", m.nf));
        }
        if m.ch_mult.is_empty() || m.ch_mult.len() > 8 || m.ch_mult.iter().any(|&c| !(1..=64).contains(&c)) {
            return bad(
                "model.ch_mult",
                format!("{:?}: need 1 to 8 levels with multipliers in 1..=64", m.ch_mult),
            );
        }
        if !(1..=64).contains(&m.num_res_blocks) {
            return bad("model.num_res_blocks", format!("{} is not in 1..=64", m.num_res_blocks));
        }
        if !(1..=64).contains(&self.data.num_channels) {
            return bad(
                "data.num_channels",
                format!("{} is not in 1..=64", self.data.num_channels),
            );
        }
        let down = 1usize << (self.levels() - 1);
        if !(1..=4096).contains(&self.data.image_size) || !self.data.image_size.is_multiple_of(down) {
            return bad(
                "data.image_size",
                format!(
                    "{} must lie in 1..=4096 and be a multiple of 2^(levels−1) = {down}",
                    self.data.image_size
                ),
            );
        }
        if m.attn_resolutions.len() > 64 {
            return bad("model.attn_resolutions", "more than 64 entries".into());
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return bad("model.dropout", format!("{} is not in [0, 1)", m.dropout));
        }
        if m.fir {
            let sum: f64 = m.fir_kernel.iter().sum();
            if m.fir_kernel.is_empty()
                || m.fir_kernel.len() > 16
                || m.fir_kernel.iter().any(|v| !v.is_finite())
                || sum == 0.0
                || !sum.is_finite()
            {
                return bad(
                    "model.fir_kernel",
                    format!("{:?}: need 1 to 16 finite taps with a non-zero sum", m.fir_kernel),
                );
            }
        }
        if !m.fourier_scale.is_finite() {
            return bad("model.fourier_scale", format!("{} is not finite", m.fourier_scale));
        }
        if !(m.sigma_min > 0.0 && m.sigma_max > m.sigma_min && m.sigma_max.is_finite()) {
            return bad(
                "model.sigma_min/model.sigma_max",
                format!(
                    "need 0 < sigma_min < sigma_max < ∞, got {} and {}",
                    m.sigma_min, m.sigma_max
                ),
            );
        }
        if !(2..=1_000_000).contains(&m.num_scales) {
            return bad("model.num_scales", format!("{} is not in 2..=1000000", m.num_scales));
        }
        let s = &self.sampling;
        if !(s.snr.is_finite() && s.snr > 0.0) {
            return bad("sampling.snr", format!("{} must be positive and finite", s.snr));
        }
        if s.n_steps_each > 100 {
            return bad("sampling.n_steps_each", format!("{} is more than 100", s.n_steps_each));
        }
        if !s.scaling_factor.is_finite() {
            return bad("sampling.scaling_factor", format!("{} is not finite", s.scaling_factor));
        }
        Ok(())
    }
}

/// The classes of a dataset name (`CIFAR10`: 10, `CIFAR100`: 100), if known.
pub fn dataset_classes(dataset: &str) -> Option<usize> {
    match dataset.to_ascii_uppercase().replace(['-', '_'], "").as_str() {
        "CIFAR10" => Some(10),
        "CIFAR100" => Some(100),
        _ => None,
    }
}

/// DLSM's time-conditional classifier (`models/resnet_cond.py`): a CIFAR ResNet of
/// `BasicBlock`s whose stages add `dense_k(SiLU(temb))`, with
/// `temb = Linear(4nf, 4nf)(act(Linear(2nf, 4nf)(Fourier_nf(log σ))))`.
///
/// `width`, `num_blocks` and `avg_pool` are fixed in the original (64, `[2,2,2,2]` or
/// `[3,4,6,3]`, 4); they are fields here so that small test models can be described.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetCondConfig {
    /// Fourier features (`classifier.nf`, 32): the embedding is `2·nf` wide, `temb` `4·nf`.
    pub nf: usize,
    /// Scale of the fixed Fourier frequencies (16; their values are stored).
    pub fourier_scale: f64,
    /// Output classes (`classifier.classes`).
    pub num_classes: usize,
    /// Input channels (`data.num_channels`).
    pub in_channels: usize,
    /// Width of the stem and first stage (64); stages are `width·[1, 2, 4, 8]`.
    pub width: usize,
    /// Blocks per stage: ResNet-18 `[2, 2, 2, 2]`, ResNet-34 `[3, 4, 6, 3]`.
    pub num_blocks: Vec<usize>,
    /// Kernel of the final average pooling (4: a 32×32 input ends 1×1).
    pub avg_pool: usize,
    /// The activation of the embedding MLP (`model.nonlinearity`; the stages' `dense_k`
    /// always use SiLU).
    pub nonlinearity: Nonlinearity,
}

impl ResNetCondConfig {
    /// ResNet-18-cond for CIFAR-10 (DLSM `classifier.model = resnet18_cond`, nf 32,
    /// 10 classes); 11.32M parameters.
    pub fn dlsm_cifar10() -> Self {
        Self {
            nf: 32,
            fourier_scale: 16.0,
            num_classes: 10,
            in_channels: 3,
            width: 64,
            num_blocks: vec![2, 2, 2, 2],
            avg_pool: 4,
            nonlinearity: Nonlinearity::Swish,
        }
    }

    /// ResNet-34-cond for CIFAR-100 (100 classes); 21.48M parameters.
    pub fn dlsm_cifar100() -> Self {
        Self {
            num_classes: 100,
            num_blocks: vec![3, 4, 6, 3],
            ..Self::dlsm_cifar10()
        }
    }

    /// Widths of the four stages.
    pub fn stage_widths(&self) -> [usize; 4] {
        let w = self.width;
        [w, 2 * w, 4 * w, 8 * w]
    }

    /// Check the sizes (bounded before anything is allocated); [`validate`](Self::validate)
    /// adds the parameter count.
    pub(crate) fn check_fields(&self) -> Result<()> {
        let bad = |field: &str, why: String| Err(Error::param("ResNetCondConfig", format!("{field}: {why}")));
        if !(1..=4096).contains(&self.nf) {
            return bad("nf", format!("{} is not in 1..=4096", self.nf));
        }
        if !self.fourier_scale.is_finite() {
            return bad("fourier_scale", format!("{} is not finite", self.fourier_scale));
        }
        if !(1..=100_000).contains(&self.num_classes) {
            return bad("num_classes", format!("{} is not in 1..=100000", self.num_classes));
        }
        if !(1..=64).contains(&self.in_channels) {
            return bad("in_channels", format!("{} is not in 1..=64", self.in_channels));
        }
        if !(1..=1024).contains(&self.width) {
            return bad("width", format!("{} is not in 1..=1024", self.width));
        }
        if self.num_blocks.len() != 4 || self.num_blocks.iter().any(|&b| !(1..=64).contains(&b)) {
            return bad(
                "num_blocks",
                format!("{:?}: need 4 stages of 1..=64 blocks", self.num_blocks),
            );
        }
        if !(1..=64).contains(&self.avg_pool) {
            return bad("avg_pool", format!("{} is not in 1..=64", self.avg_pool));
        }
        Ok(())
    }
}
