//! The NCSN++ score network (`models/ncsnpp.py` of DLSM / score_sde), as a [`TchModule`].
//!
//! Forward pass, for `x` in the data range and noise level `σ` (one per item):
//!
//! 1. time embedding: Fourier features `[sin, cos](2π·W·log σ)` of the fixed frequencies
//!    `W` (`all_modules.0.W`), or DDPM's sinusoid of the discrete index
//!    `round((1 − t)(N − 1))` for `embedding_type = positional`; then
//!    `temb = Dense(act(Dense(·)))` when `conditional`;
//! 2. `x ← 2x − 1` unless `data.centered`;
//! 3. the UNet over `all_modules` in registration order: 3×3 conv, per level
//!    `num_res_blocks` residual blocks (attention after each at `attn_resolutions`), a
//!    downsampling block plus the input pyramid (`progressive_input`), the middle
//!    block-attention-block, the mirrored up path with `num_res_blocks + 1` blocks on the
//!    skip connections and the output pyramid (`progressive`), GroupNorm, act, 3×3 conv;
//! 4. divided by `σ` (`scale_by_sigma`): the score `∇x log p_σ(x)`.
//!
//! The `VarStore` paths are the original state-dict keys (`sigmas`, `all_modules.0.W`,
//! `all_modules.4.Conv_0.weight`, ...), so a state dict loads name for name.

use std::f64::consts::PI;
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::config::{
    CombineMethod, EmbeddingType, NcsnppConfig, Progressive, ProgressiveInput, ResblockType, MAX_PARAMETERS,
};
use super::layers::{
    act, count, mean_down, nearest_up, random_entries, residual, Attn, Block, Conv, Ctx, Decl, Fir, GroupNorm, Linear,
    ParamInfo, Resample, Resampler, ResnetBigGan, ResnetDdpm, Role,
};
use crate::checkpoint::{StateDict, TensorData};
use crate::models::loading::{self, LoadOptions};
use crate::models::{check_device, check_kind, guard_panics, TchModule};
use crate::models::{config_json, crossing};
use crate::{Condition, DataRange, DenoiserSpec, Error, Parameterization, Result, TimeInput};

/// Relative slack on the SDE's σ range, for times rounded to `f32` on their way in.
const SIGMA_SLACK: f64 = 1e-5;

/// The layout of `cfg` in registration order, from a record-mode build (no allocation).
/// Does not validate the fields (the caller does).
pub(crate) fn layout(cfg: &NcsnppConfig) -> Result<Vec<ParamInfo>> {
    let mut d = Decl::record();
    Modules::declare(cfg, &mut d)?;
    Ok(d.into_entries())
}

/// The parts of [`NcsnppConfig`] that need the architecture live with the network that
/// defines it, so that the configuration module depends on nothing else of the family.
impl NcsnppConfig {
    /// Parse the original config serialized as JSON (nested `data`, `model`, `training`,
    /// `sampling`, ... sections), then [`validate`](Self::validate) it.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = config_json::parse(text).map_err(|f| Error::InvalidInput(f.describe("NCSN++ config.json")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every field that can be checked without building the network, then the
    /// architecture itself (GroupNorm divisibility, parameter count at most
    /// [`MAX_PARAMETERS`]) from its analytic layout. Errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.check_fields()?;
        let n = count(&layout(self)?);
        if n > MAX_PARAMETERS {
            return Err(Error::param(
                "NcsnppConfig",
                format!("model: the network would have {n} parameters, more than the limit {MAX_PARAMETERS}"),
            ));
        }
        Ok(())
    }

    /// The number of parameters and buffers (the `sigmas` buffer and Fourier `W`
    /// included), from the architecture alone; validates first.
    pub fn num_parameters(&self) -> Result<u64> {
        self.validate()?;
        Ok(count(&layout(self)?))
    }

    /// The state-dict entries of this architecture in registration order (the order of
    /// the original `state_dict()`), with their shapes and roles.
    pub fn layout(&self) -> Result<Vec<ParamInfo>> {
        self.validate()?;
        layout(self)
    }
}

/// The input pyramid's layer at a downsampling step.
#[derive(Debug)]
enum PyramidIn {
    None,
    /// `Combine`: a 1×1 conv of the (plainly downsampled) input, then cat or sum.
    InputSkip {
        conv: Conv,
        cat: bool,
    },
    /// A strided (FIR) conv of the pyramid, summed with the features.
    Residual(Resampler),
}

#[derive(Debug)]
enum DownOp {
    Block(Block),
    Resample(Resampler),
}

#[derive(Debug)]
struct DownLevel {
    blocks: Vec<(Block, Option<Attn>)>,
    down: Option<(DownOp, PyramidIn)>,
}

#[derive(Debug)]
enum PyramidOut {
    None,
    /// GroupNorm, act, 3×3 conv of the features (to the image channels for `output_skip`,
    /// to the features' width for `residual`); at lower levels `output_skip` adds the
    /// plainly upsampled pyramid.
    Head {
        norm: GroupNorm,
        conv: Conv,
        first: bool,
    },
    /// `residual` below the top: an upsampling conv of the pyramid, summed with `h`.
    Residual(Resampler),
}

#[derive(Debug)]
struct UpLevel {
    blocks: Vec<Block>,
    attn: Option<Attn>,
    pyramid: PyramidOut,
    up: Option<DownOp>,
}

/// Every layer, in `all_modules` order.
#[derive(Debug)]
struct Modules {
    sigmas: Tensor,
    fourier_w: Option<Tensor>,
    temb_dense: Option<(Linear, Linear)>,
    conv_in: Conv,
    down: Vec<DownLevel>,
    mid: (Block, Attn, Block),
    up: Vec<UpLevel>,
    out: Option<(GroupNorm, Conv)>,
    fir: Option<Fir>,
}

impl Modules {
    fn declare(cfg: &NcsnppConfig, d: &mut Decl<'_>) -> Result<Self> {
        let m = &cfg.model;
        let nf = m.nf;
        let channels = cfg.data.num_channels;
        let temb_dim = cfg.temb_dim();
        let resolutions = cfg.resolutions();
        let levels = resolutions.len();
        let has_attn = |l: usize| m.attn_resolutions.contains(&resolutions[l]);
        let mut idx = 0usize;
        let mut next = || {
            let p = format!("all_modules.{idx}");
            idx += 1;
            p
        };
        // `register_buffer('sigmas', ...)` comes before the modules; kept in f32.
        let sigmas = d.tensor("sigmas", &[m.num_scales], Role::Buffer, 0.0, Some(Kind::Float))?;
        let fourier_w = match m.embedding_type {
            EmbeddingType::Fourier => {
                Some(d.tensor(&format!("{}.W", next()), &[nf], Role::Frozen, 0.0, Some(Kind::Float))?)
            }
            EmbeddingType::Positional => None,
        };
        let embed_dim = match m.embedding_type {
            EmbeddingType::Fourier => 2 * nf,
            EmbeddingType::Positional => nf,
        };
        let temb_dense = if m.conditional {
            let a = Linear::new(d, &next(), embed_dim, temb_dim)?;
            let b = Linear::new(d, &next(), temb_dim, temb_dim)?;
            Some((a, b))
        } else {
            None
        };
        let block = |d: &mut Decl<'_>, p: &str, cin: usize, cout: usize, resample: Resample| -> Result<Block> {
            Ok(match m.resblock_type {
                ResblockType::Ddpm => Block::Ddpm(ResnetDdpm::new(d, p, cin, cout, temb_dim)?),
                ResblockType::Biggan => Block::BigGan(ResnetBigGan::new(d, p, cin, cout, temb_dim, resample)?),
            })
        };

        let conv_in = Conv::conv3(d, &next(), channels, nf)?;
        let mut hs_c = vec![nf];
        let mut in_ch = nf;
        let mut input_pyramid_ch = channels;
        let mut down = Vec::with_capacity(levels);
        for (l, &mult) in m.ch_mult.iter().enumerate() {
            let mut blocks = Vec::with_capacity(m.num_res_blocks);
            for _ in 0..m.num_res_blocks {
                let out_ch = nf * mult;
                let b = block(d, &next(), in_ch, out_ch, Resample::None)?;
                in_ch = out_ch;
                let a = if has_attn(l) {
                    Some(Attn::new(d, &next(), in_ch)?)
                } else {
                    None
                };
                blocks.push((b, a));
                hs_c.push(in_ch);
            }
            let mut down_op = None;
            if l + 1 != levels {
                let op = match m.resblock_type {
                    ResblockType::Ddpm => DownOp::Resample(Resampler::new(
                        d,
                        &next(),
                        in_ch,
                        in_ch,
                        false,
                        m.resamp_with_conv,
                        m.fir,
                    )?),
                    ResblockType::Biggan => DownOp::Block(block(d, &next(), in_ch, in_ch, Resample::Down)?),
                };
                let pyramid = match m.progressive_input {
                    ProgressiveInput::None => PyramidIn::None,
                    ProgressiveInput::InputSkip => {
                        let conv = Conv::conv1(d, &format!("{}.Conv_0", next()), input_pyramid_ch, in_ch)?;
                        let cat = m.progressive_combine == CombineMethod::Cat;
                        if cat {
                            in_ch *= 2;
                        }
                        PyramidIn::InputSkip { conv, cat }
                    }
                    ProgressiveInput::Residual => {
                        let r = Resampler::new(d, &next(), input_pyramid_ch, in_ch, false, true, m.fir)?;
                        input_pyramid_ch = in_ch;
                        PyramidIn::Residual(r)
                    }
                };
                hs_c.push(in_ch);
                down_op = Some((op, pyramid));
            }
            down.push(DownLevel { blocks, down: down_op });
        }

        in_ch = *hs_c
            .last()
            .ok_or_else(|| Error::Model("internal error: empty skip list".into()))?;
        let mid = (
            block(d, &next(), in_ch, in_ch, Resample::None)?,
            Attn::new(d, &next(), in_ch)?,
            block(d, &next(), in_ch, in_ch, Resample::None)?,
        );

        let mut up = Vec::with_capacity(levels);
        for l in (0..levels).rev() {
            let mut blocks = Vec::with_capacity(m.num_res_blocks + 1);
            for _ in 0..=m.num_res_blocks {
                let out_ch = nf * m.ch_mult[l];
                let skip = hs_c
                    .pop()
                    .ok_or_else(|| Error::Model("internal error: skip list exhausted".into()))?;
                blocks.push(block(d, &next(), in_ch + skip, out_ch, Resample::None)?);
                in_ch = out_ch;
            }
            let attn = if has_attn(l) {
                Some(Attn::new(d, &next(), in_ch)?)
            } else {
                None
            };
            let pyramid = match (m.progressive, l + 1 == levels) {
                (Progressive::None, _) => PyramidOut::None,
                (Progressive::OutputSkip, first) => {
                    let norm = GroupNorm::new(d, &next(), in_ch)?;
                    let conv = Conv::conv3(d, &next(), in_ch, channels)?;
                    PyramidOut::Head { norm, conv, first }
                }
                (Progressive::Residual, true) => {
                    let norm = GroupNorm::new(d, &next(), in_ch)?;
                    let conv = Conv::conv3(d, &next(), in_ch, in_ch)?;
                    PyramidOut::Head {
                        norm,
                        conv,
                        first: true,
                    }
                }
                (Progressive::Residual, false) => {
                    // pyramid_ch is the previous level's width: the block input before
                    // this level's blocks, i.e. nf·ch_mult[l + 1].
                    let pyramid_ch = nf * m.ch_mult[l + 1];
                    PyramidOut::Residual(Resampler::new(d, &next(), pyramid_ch, in_ch, true, true, m.fir)?)
                }
            };
            let up_op = if l != 0 {
                Some(match m.resblock_type {
                    ResblockType::Ddpm => DownOp::Resample(Resampler::new(
                        d,
                        &next(),
                        in_ch,
                        in_ch,
                        true,
                        m.resamp_with_conv,
                        m.fir,
                    )?),
                    ResblockType::Biggan => DownOp::Block(block(d, &next(), in_ch, in_ch, Resample::Up)?),
                })
            } else {
                None
            };
            up.push(UpLevel {
                blocks,
                attn,
                pyramid,
                up: up_op,
            });
        }
        if !hs_c.is_empty() {
            return Err(Error::Model("internal error: unused skip connections".into()));
        }
        let out = if m.progressive != Progressive::OutputSkip {
            let norm = GroupNorm::new(d, &next(), in_ch)?;
            let conv = Conv::conv3(d, &next(), in_ch, channels)?;
            Some((norm, conv))
        } else {
            None
        };
        let fir = if m.fir {
            Some(Fir::new(d, &m.fir_kernel, d.compute_kind())?)
        } else {
            None
        };
        Ok(Self {
            sigmas,
            fourier_w,
            temb_dense,
            conv_in,
            down,
            mid,
            up,
            out,
            fir,
        })
    }
}

/// NCSN++ on tch: weights in a `VarStore` under the original key names.
#[derive(Debug)]
pub struct NcsnppNet {
    config: NcsnppConfig,
    vs: VarStore,
    kind: Kind,
    layout: Vec<ParamInfo>,
    modules: Modules,
}

impl NcsnppNet {
    /// Declare the variables (zeros, GroupNorm scales 1, `sigmas` from the config) on
    /// `device` in compute kind `kind`.
    fn declare(config: NcsnppConfig, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        check_kind(kind)?;
        check_device(device)?;
        guard_panics(|| {
            let vs = VarStore::new(device);
            let mut d = Decl::build(&vs, kind);
            let modules = Modules::declare(&config, &mut d)?;
            let layout = d.into_entries();
            let sigmas: Vec<f32> = config_sigmas(&config).iter().map(|&s| s as f32).collect();
            let _g = tch::no_grad_guard();
            let mut buffer = modules.sigmas.shallow_clone();
            buffer.f_copy_(&crossing::slice_to_tensor(
                &sigmas,
                &[sigmas.len()],
                Device::Cpu,
                Kind::Float,
            )?)?;
            Ok(Self {
                config,
                vs,
                kind,
                layout,
                modules,
            })
        })
    }

    /// A network with all-zero weights (GroupNorm scales 1) and the config's `sigmas`.
    pub fn zeros(config: NcsnppConfig, device: Device, kind: Kind) -> Result<Self> {
        Self::declare(config, device, kind)
    }

    /// A network with reproducible random weights drawn on the host from `seed`
    /// (ChaCha8; libtorch's RNG is untouched): weights uniform `±1/√fan_in`, biases
    /// uniform `±0.1`, GroupNorm scales 1 and shifts 0, Fourier `W ~ N(0, fourier_scale²)`,
    /// `sigmas` from the config. For tests and benchmarks.
    pub fn random(config: NcsnppConfig, device: Device, kind: Kind, seed: u64) -> Result<Self> {
        let net = Self::declare(config, device, kind)?;
        let sd = random_state_dict(&net.layout, &net.config, seed);
        let mut net = net;
        net.load(&sd, Path::new("<random init>"))?;
        Ok(net)
    }

    /// A network with the weights of the flat state dict `sd` (original names, no
    /// `module.` prefix). The `sigmas` buffer must agree with `config`'s σ range and `N`
    /// (it is how a checkpoint says which SDE it was trained on). `source` names the
    /// origin in errors.
    pub fn from_state_dict(
        config: NcsnppConfig,
        sd: StateDict,
        device: Device,
        kind: Kind,
        source: &Path,
    ) -> Result<Self> {
        check_sigmas(&config, &sd, source)?;
        let mut net = Self::declare(config, device, kind)?;
        net.load(&sd, source)?;
        Ok(net)
    }

    fn load(&mut self, sd: &StateDict, source: &Path) -> Result<()> {
        loading::load_state_dict_into(&mut self.vs, sd, source, &LoadOptions::default())
    }

    /// The configuration.
    pub fn config(&self) -> &NcsnppConfig {
        &self.config
    }

    /// The state-dict entries in registration order (shapes and roles).
    pub fn layout(&self) -> &[ParamInfo] {
        &self.layout
    }

    /// The variables, under the original key names.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Number of parameters and buffers (`sigmas` and `W` included).
    pub fn num_parameters(&self) -> u64 {
        count(&self.layout)
    }

    /// The weights as `f32` host tensors in registration order (e.g. to save the EMA
    /// weights of a DLSM container as flat safetensors).
    pub fn state_dict(&self) -> Result<StateDict> {
        let vars = self.vs.variables();
        guard_panics(|| {
            let mut sd = StateDict::new();
            for p in &self.layout {
                let t = vars
                    .get(&p.name)
                    .ok_or_else(|| Error::Model(format!("internal error: no variable `{}`", p.name)))?;
                let numel = p.numel() as usize;
                let mut values = vec![0f32; numel];
                crossing::tensor_into(t, &mut values)?;
                sd.insert(p.name.clone(), TensorData::from_f32(p.shape.clone(), &values));
            }
            Ok(sd)
        })
    }

    /// Wrap the network as a [`Denoiser`](crate::Denoiser).
    pub fn into_denoiser(self) -> crate::models::TchDenoiser<Self> {
        crate::models::TchDenoiser::new(self)
    }

    /// Check that every `σ` lies in the SDE's range `[σ_min, σ_max]` (up to `f32`
    /// rounding): the network was trained there only.
    pub fn check_sigmas(&self, sigmas: &[f64]) -> Result<()> {
        let m = &self.config.model;
        let (lo, hi) = (m.sigma_min * (1.0 - SIGMA_SLACK), m.sigma_max * (1.0 + SIGMA_SLACK));
        if let Some(bad) = sigmas.iter().find(|s| !(s.is_finite() && **s >= lo && **s <= hi)) {
            return Err(Error::param(
                "sigma",
                format!(
                    "σ = {bad} is outside this NCSN++ model's VE SDE range [{}, {}] (model.sigma_min, \
                     model.sigma_max); the network was trained on that range only",
                    m.sigma_min, m.sigma_max
                ),
            ));
        }
        Ok(())
    }

    /// The forward pass: the score for `x` (NCHW, data range of the config) at noise
    /// levels `sigma` (1-D `f32`, one per item). Returns `f32`. Call it under
    /// `tch::no_grad` (or through [`TchDenoiser`](crate::models::TchDenoiser)).
    pub fn forward(&self, x: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let m = &cfg.model;
        let mods = &self.modules;
        let (n, c, h, w) = x.size4()?;
        if c as usize != cfg.data.num_channels || h as usize != cfg.data.image_size || w as usize != cfg.data.image_size
        {
            return Err(Error::Shape(format!(
                "this NCSN++ model takes {}×{}×{} inputs, got {c}×{h}×{w}",
                cfg.data.num_channels, cfg.data.image_size, cfg.data.image_size
            )));
        }
        if sigma.size() != [n] {
            return Err(Error::Shape(format!(
                "expected {n} noise levels, got a tensor of shape {:?}",
                sigma.size()
            )));
        }
        let device = x.device();
        let sigma = sigma.f_to_kind(Kind::Float)?.f_to_device(device)?;
        let (emb, used_sigmas) = match m.embedding_type {
            EmbeddingType::Fourier => {
                let wf = mods
                    .fourier_w
                    .as_ref()
                    .ok_or_else(|| Error::Model("internal error: no Fourier W".into()))?;
                let proj = sigma
                    .f_log()?
                    .f_unsqueeze(1)?
                    .f_mul(&wf.f_unsqueeze(0)?)?
                    .f_mul_scalar(2.0 * PI)?;
                (
                    Tensor::f_cat(&[proj.f_sin()?, proj.f_cos()?], 1)?,
                    sigma.shallow_clone(),
                )
            }
            EmbeddingType::Positional => {
                // score_sde's discrete VE labels: round((T − t)(N − 1)) with σ = σ(t).
                let (lmin, lmax) = (m.sigma_min.ln(), m.sigma_max.ln());
                let labels = sigma
                    .f_log()?
                    .f_neg()?
                    .f_add_scalar(lmax)?
                    .f_mul_scalar((m.num_scales - 1) as f64 / (lmax - lmin))?
                    .f_round()?
                    .f_clamp(0.0, (m.num_scales - 1) as f64)?;
                let used = mods.sigmas.f_index_select(0, &labels.f_to_kind(Kind::Int64)?)?;
                (timestep_embedding(&labels, m.nf)?, used)
            }
        };
        let temb_act = match &mods.temb_dense {
            Some((d0, d1)) => {
                let t = d0.forward(&emb.f_to_kind(self.kind)?)?;
                let t = d1.forward(&act(m.nonlinearity, &t)?)?;
                Some(act(m.nonlinearity, &t)?)
            }
            None => None,
        };
        let temb = temb_act.as_ref();
        let ctx = Ctx {
            act: m.nonlinearity,
            fir: mods.fir.as_ref(),
            skip_rescale: m.skip_rescale,
        };

        let mut x = x.f_to_kind(self.kind)?;
        if !cfg.data.centered {
            x = x.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?;
        }
        let mut input_pyramid = if m.progressive_input != ProgressiveInput::None {
            Some(x.shallow_clone())
        } else {
            None
        };
        let last = |hs: &Vec<Tensor>| -> Result<Tensor> {
            hs.last()
                .map(Tensor::shallow_clone)
                .ok_or_else(|| Error::Model("internal error: empty skip stack".into()))
        };
        let mut hs = vec![mods.conv_in.forward(&x)?];
        for level in &mods.down {
            for (b, a) in &level.blocks {
                let mut h = b.forward(&last(&hs)?, temb, &ctx)?;
                if let Some(a) = a {
                    h = a.forward(&h, &ctx)?;
                }
                hs.push(h);
            }
            if let Some((op, pyramid)) = &level.down {
                let mut h = match op {
                    DownOp::Resample(r) => r.forward(&last(&hs)?, &ctx)?,
                    DownOp::Block(b) => b.forward(&last(&hs)?, temb, &ctx)?,
                };
                let ip = || {
                    input_pyramid
                        .as_ref()
                        .ok_or_else(|| Error::Model("internal error: no input pyramid".into()))
                };
                match pyramid {
                    PyramidIn::None => {}
                    PyramidIn::InputSkip { conv, cat } => {
                        let p = ctx_down_plain(&ctx, ip()?)?;
                        let hp = conv.forward(&p)?;
                        h = if *cat {
                            Tensor::f_cat(&[hp, h], 1)?
                        } else {
                            hp.f_add(&h)?
                        };
                        input_pyramid = Some(p);
                    }
                    PyramidIn::Residual(r) => {
                        let p = r.forward(ip()?, &ctx)?;
                        let p = residual(&p, &h, m.skip_rescale)?;
                        h = p.shallow_clone();
                        input_pyramid = Some(p);
                    }
                }
                hs.push(h);
            }
        }
        let mut h = last(&hs)?;
        h = mods.mid.0.forward(&h, temb, &ctx)?;
        h = mods.mid.1.forward(&h, &ctx)?;
        h = mods.mid.2.forward(&h, temb, &ctx)?;

        let mut pyramid: Option<Tensor> = None;
        for level in &mods.up {
            for b in &level.blocks {
                let skip = hs
                    .pop()
                    .ok_or_else(|| Error::Model("internal error: skip stack exhausted".into()))?;
                h = b.forward(&Tensor::f_cat(&[&h, &skip], 1)?, temb, &ctx)?;
            }
            if let Some(a) = &level.attn {
                h = a.forward(&h, &ctx)?;
            }
            match &level.pyramid {
                PyramidOut::None => {}
                PyramidOut::Head { norm, conv, first } => {
                    let head = conv.forward(&act(m.nonlinearity, &norm.forward(&h)?)?)?;
                    pyramid = Some(match (&pyramid, *first) {
                        (Some(p), false) => ctx_up_plain(&ctx, p)?.f_add(&head)?,
                        _ => head,
                    });
                }
                PyramidOut::Residual(r) => {
                    let p = pyramid
                        .as_ref()
                        .ok_or_else(|| Error::Model("internal error: no output pyramid".into()))?;
                    let p = residual(&r.forward(p, &ctx)?, &h, m.skip_rescale)?;
                    h = p.shallow_clone();
                    pyramid = Some(p);
                }
            }
            if let Some(op) = &level.up {
                h = match op {
                    DownOp::Resample(r) => r.forward(&h, &ctx)?,
                    DownOp::Block(b) => b.forward(&h, temb, &ctx)?,
                };
            }
        }
        let h = match &mods.out {
            Some((norm, conv)) => conv.forward(&act(m.nonlinearity, &norm.forward(&h)?)?)?,
            None => pyramid.ok_or_else(|| Error::Model("internal error: no output pyramid".into()))?,
        };
        let h = h.f_to_kind(Kind::Float)?;
        if m.scale_by_sigma {
            Ok(h.f_div(&used_sigmas.f_reshape([n, 1, 1, 1])?)?)
        } else {
            Ok(h)
        }
    }
}

/// `self.pyramid_downsample`: FIR or 2×2 mean, no conv.
fn ctx_down_plain(ctx: &Ctx<'_>, x: &Tensor) -> Result<Tensor> {
    match ctx.fir {
        Some(f) => f.downsample(x),
        None => mean_down(x),
    }
}

/// `self.pyramid_upsample`: FIR or nearest, no conv.
fn ctx_up_plain(ctx: &Ctx<'_>, x: &Tensor) -> Result<Tensor> {
    match ctx.fir {
        Some(f) => f.upsample(x),
        None => nearest_up(x),
    }
}

/// `layers.get_timestep_embedding(t, dim)`: `[sin, cos](t·exp(−ln(10⁴)·i/(dim/2 − 1)))`,
/// zero-padded to an odd `dim`; `f32`.
fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = (dim / 2) as i64;
    let step = if half > 1 {
        -(10000f64.ln()) / (half - 1) as f64
    } else {
        0.0
    };
    let freqs = Tensor::f_arange(half, (Kind::Float, t.device()))?
        .f_mul_scalar(step)?
        .f_exp()?;
    let args = t
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?
        .f_mul(&freqs.f_unsqueeze(0)?)?;
    let emb = Tensor::f_cat(&[args.f_sin()?, args.f_cos()?], 1)?;
    if dim % 2 == 1 {
        Ok(emb.f_constant_pad_nd([0, 1])?)
    } else {
        Ok(emb)
    }
}

/// `utils.get_sigmas`: `exp(linspace(ln σ_max, ln σ_min, N))` (descending).
pub(crate) fn config_sigmas(cfg: &NcsnppConfig) -> Vec<f64> {
    let m = &cfg.model;
    let (a, b, n) = (m.sigma_max.ln(), m.sigma_min.ln(), m.num_scales);
    (0..n)
        .map(|i| (a + (b - a) * i as f64 / (n - 1) as f64).exp())
        .collect()
}

/// The checkpoint's `sigmas` buffer against the config's σ range and `N`.
fn check_sigmas(cfg: &NcsnppConfig, sd: &StateDict, source: &Path) -> Result<()> {
    let Some(t) = sd.get("sigmas") else {
        return Ok(()); // reported as a missing key by the loader
    };
    let m = &cfg.model;
    if t.shape != [m.num_scales] {
        return Err(Error::checkpoint(
            source,
            format!(
                "the `sigmas` buffer has shape {:?} but model.num_scales is {}: the configuration does not \
                 describe this checkpoint's SDE",
                t.shape, m.num_scales
            ),
        ));
    }
    let s = t.to_f32_vec()?;
    let (first, last) = (s[0] as f64, s[s.len() - 1] as f64);
    let off = |a: f64, b: f64| ((a - b) / b).abs() > 1e-4;
    if off(first, m.sigma_max) || off(last, m.sigma_min) {
        return Err(Error::checkpoint(
            source,
            format!(
                "the `sigmas` buffer runs from {first} to {last} but the configuration has model.sigma_max = {} \
                 and model.sigma_min = {}",
                m.sigma_max, m.sigma_min
            ),
        ));
    }
    Ok(())
}

fn random_state_dict(layout: &[ParamInfo], cfg: &NcsnppConfig, seed: u64) -> StateDict {
    let mut sd = random_entries(layout, cfg.model.fourier_scale, seed);
    let sig: Vec<f32> = config_sigmas(cfg).iter().map(|&s| s as f32).collect();
    sd.insert("sigmas".into(), TensorData::from_f32(vec![sig.len()], &sig));
    sd
}

impl TchModule for NcsnppNet {
    fn spec(&self) -> DenoiserSpec {
        let range = if self.config.data.centered {
            DataRange::MinusOneToOne
        } else {
            DataRange::ZeroToOne
        };
        DenoiserSpec::new(Parameterization::Score, TimeInput::Sigma, range)
            .with_channels(self.config.data.num_channels)
            .with_image_size(self.config.data.image_size, self.config.data.image_size)
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
                "NCSN++ (DLSM) is unconditional: classes enter through classifier guidance \
                 (Guidance::classifier with a DLSM classifier), not as a condition"
                    .into(),
            ));
        }
        let host = crossing::tensor_to_vec(t)?;
        self.check_sigmas(&host.iter().map(|&s| s as f64).collect::<Vec<_>>())?;
        self.forward(x, t)
    }
}
