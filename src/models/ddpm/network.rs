//! The DDPM UNet network on tch tensors.

use std::path::Path;

use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::config::{DdpmConfig, DownsamplePadding};
use super::naming::{diffusers_to_original, locate, unknown_naming, Naming};
use crate::checkpoint::{StateDict, TensorData};
use crate::models::loading::{self, LoadOptions};
use crate::models::nn::{Conv2d, GroupNorm, Linear};
use crate::models::TchModule;
use crate::{Condition, DenoiserSpec, Error, Result};

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
/// [`TchDenoiser`](crate::models::TchDenoiser) to use it as a [`Denoiser`](crate::Denoiser)
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
        crate::models::check_kind(kind)?;
        crate::models::check_device(device)?;
        crate::models::guard_panics(|| {
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
                DdpmConfig::from_json(&text).map_err(|e| Error::checkpoint(&cfg_path, e.to_string()))?
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
        crate::models::loading::var_store_state_dict(&self.vs)
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.vs.variables().values().map(|t| t.numel()).sum()
    }

    /// Wrap the network as a [`Denoiser`](crate::Denoiser).
    pub fn into_denoiser(self) -> crate::models::TchDenoiser<Self> {
        crate::models::TchDenoiser::new(self)
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
    /// Call it under `tch::no_grad` (or use [`TchDenoiser::forward_tensor`](crate::models::TchDenoiser::forward_tensor),
    /// which also guards against panics); [`TchDenoiser`](crate::models::TchDenoiser) does both.
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
