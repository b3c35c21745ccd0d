//! [`PatchedUNet`]: the Patched Diffusion network on libtorch, computed as the original's
//! `UNetModel.forward` (PatchDiffusion-Pytorch `unet.py`, `nn.py`), with `VarStore` paths
//! equal to the original state-dict keys.

use std::path::Path;

use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

use super::config::{Layer, PatchedConfig, Plan};
use crate::checkpoint::StateDict;
use crate::models::crossing;
use crate::models::loading::{self, LoadOptions};
use crate::models::nn::{Conv2d, Embedding, Linear};
use crate::models::TchModule;
use crate::{Condition, DenoiserSpec, Error, Result};

/// `GroupNorm32` of the original: affine group norm computed in f32 (`x.float()`) and cast
/// back; its parameters are cast to f32 for the call when the model runs in f16/bf16.
#[derive(Debug)]
struct Norm32 {
    w: Tensor,
    b: Tensor,
    groups: i64,
}

impl Norm32 {
    fn new(p: &tch::nn::Path<'_>, groups: usize, c: usize) -> Result<Self> {
        Ok(Self {
            w: p.f_var("weight", &[c as i64], Init::Const(1.0))?,
            b: p.f_var("bias", &[c as i64], Init::Const(0.0))?,
            groups: groups as i64,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kind = x.f_kind()?;
        if kind == Kind::Float {
            return Ok(x.f_group_norm(self.groups, Some(&self.w), Some(&self.b), 1e-5, true)?);
        }
        let (w, b) = (self.w.f_to_kind(Kind::Float)?, self.b.f_to_kind(Kind::Float)?);
        Ok(x.f_to_kind(Kind::Float)?
            .f_group_norm(self.groups, Some(&w), Some(&b), 1e-5, true)?
            .f_to_kind(kind)?)
    }
}

/// `F.group_norm(x.float(), 32, eps=1e-3).type(x.dtype)`: the ResBlocks' affine-free norm.
fn plain_group_norm(x: &Tensor, groups: i64) -> Result<Tensor> {
    let kind = x.f_kind()?;
    Ok(x.f_to_kind(Kind::Float)?
        .f_group_norm(groups, None::<&Tensor>, None::<&Tensor>, 1e-3, true)?
        .f_to_kind(kind)?)
}

/// `nn.Conv1d(cin, cout, 1)` (weight `[cout, cin, 1]`), as the attention's `qkv` and
/// `proj_out`.
#[derive(Debug)]
struct Conv1x1d {
    w: Tensor,
    b: Tensor,
}

impl Conv1x1d {
    fn new(p: &tch::nn::Path<'_>, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            w: p.f_var("weight", &[cout as i64, cin as i64, 1], Init::Const(0.0))?,
            b: p.f_var("bias", &[cout as i64], Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv1d(&self.w, Some(&self.b), [1], [0], [1], 1)?)
    }
}

/// Scale-shift residual block with class gating (`ResBlock` of `unet.py`).
#[derive(Debug)]
struct ResBlock {
    in_norm: Norm32,
    in_conv: Conv2d,
    classemb_proj: Option<Linear>,
    emb_layers: Linear,
    out_conv: Conv2d,
    skip: Option<Conv2d>,
    cout: i64,
    groups: i64,
}

impl ResBlock {
    fn new(p: &tch::nn::Path<'_>, cin: usize, cout: usize, cfg: &PatchedConfig, plan: &Plan) -> Result<Self> {
        Ok(Self {
            in_norm: Norm32::new(&(p / "in_layers" / 0), cfg.norm_groups, cin)?,
            in_conv: Conv2d::same(&(p / "in_layers" / 2), cin, cout, 3)?,
            classemb_proj: match cfg.num_classes {
                Some(_) => Some(Linear::new(&(p / "classemb_proj"), plan.ch0, cout, true)?),
                None => None,
            },
            emb_layers: Linear::new(&(p / "emb_layers"), plan.emb, 2 * cout, true)?,
            out_conv: Conv2d::same(&(p / "out_layers" / 2), cout, cout, 3)?,
            skip: if cin != cout {
                Some(Conv2d::pointwise(&(p / "skip_connection"), cin, cout)?)
            } else {
                None
            },
            cout: cout as i64,
            groups: cfg.norm_groups as i64,
        })
    }

    /// `emb` is the time embedding (already through `time_embed`'s final SiLU), `class`
    /// the raw label embedding.
    fn forward(&self, x: &Tensor, emb: &Tensor, class: Option<&Tensor>) -> Result<Tensor> {
        let h = self.in_conv.forward(&self.in_norm.forward(x)?.f_silu()?)?;
        let e = self.emb_layers.forward(emb)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?;
        // th.chunk(emb_out, 2, dim=1): the first half scales, the second shifts.
        let scale = e.f_narrow(1, 0, self.cout)?;
        let shift = e.f_narrow(1, self.cout, self.cout)?;
        let h = plain_group_norm(&h, self.groups)?;
        let h = h.f_mul(&scale.f_add_scalar(1.0)?)?.f_add(&shift)?;
        // Dropout is the identity at inference.
        let mut h = self.out_conv.forward(&h.f_silu()?)?;
        if let (Some(proj), Some(c)) = (&self.classemb_proj, class) {
            let gate = proj.forward(c)?.f_add_scalar(2.0)?.f_sigmoid()?;
            h = h.f_mul(&gate.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        }
        match &self.skip {
            Some(s) => Ok(s.forward(x)?.f_add(&h)?),
            None => Ok(x.f_add(&h)?),
        }
    }
}

/// Self-attention with Conv1d projections (`AttentionBlock` + `QKVAttention` /
/// `QKVAttentionLegacy`).
#[derive(Debug)]
struct AttnBlock {
    norm: Norm32,
    qkv: Conv1x1d,
    proj_out: Conv1x1d,
    heads: i64,
    new_order: bool,
}

impl AttnBlock {
    fn new(p: &tch::nn::Path<'_>, c: usize, heads: usize, cfg: &PatchedConfig) -> Result<Self> {
        Ok(Self {
            norm: Norm32::new(&(p / "norm"), cfg.norm_groups, c)?,
            qkv: Conv1x1d::new(&(p / "qkv"), c, 3 * c)?,
            proj_out: Conv1x1d::new(&(p / "proj_out"), c, c)?,
            heads: heads as i64,
            new_order: cfg.use_new_attention_order,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, hh, ww) = x.size4()?;
        let t = hh * ww;
        let xr = x.f_reshape([b, c, t])?;
        let qkv = self.qkv.forward(&self.norm.forward(&xr)?)?;
        let ch = c / self.heads;
        let bh = b * self.heads;
        let scale = 1.0 / (ch as f64).sqrt().sqrt();
        let (q, k, v) = if self.new_order {
            // Split q, k, v first, then the heads: channel = part·C + head·ch + i.
            let parts = qkv.f_chunk(3, 1)?;
            let head = |part: &Tensor| -> Result<Tensor> { Ok(part.f_reshape([bh, ch, t])?) };
            (
                head(&parts[0].f_mul_scalar(scale)?)?,
                head(&parts[1].f_mul_scalar(scale)?)?,
                head(&parts[2])?,
            )
        } else {
            // Heads first: channel = head·3ch + part·ch + i.
            let parts = qkv.f_reshape([bh, 3 * ch, t])?.f_split(ch, 1)?;
            (
                parts[0].f_mul_scalar(scale)?,
                parts[1].f_mul_scalar(scale)?,
                parts[2].shallow_clone(),
            )
        };
        // weight[b, t, s] = Σ_c q[b, c, t]·k[b, c, s]; softmax over s in f32.
        let weight = q.f_transpose(1, 2)?.f_matmul(&k)?;
        let kind = weight.f_kind()?;
        let weight = weight
            .f_to_kind(Kind::Float)?
            .f_softmax(-1, Kind::Float)?
            .f_to_kind(kind)?;
        // a[b, c, t] = Σ_s weight[b, t, s]·v[b, c, s].
        let a = v.f_matmul(&weight.f_transpose(1, 2)?)?.f_reshape([b, c, t])?;
        let h = self.proj_out.forward(&a)?;
        Ok(xr.f_add(&h)?.f_reshape([b, c, hh, ww])?)
    }
}

#[derive(Debug)]
enum Block {
    Conv(Conv2d),
    Res(ResBlock),
    Attn(AttnBlock),
    Down(Conv2d),
    Up(Conv2d),
}

impl Block {
    fn new(p: &tch::nn::Path<'_>, layer: &Layer, cfg: &PatchedConfig, plan: &Plan) -> Result<Self> {
        Ok(match *layer {
            Layer::Conv { cin, cout } => Block::Conv(Conv2d::same(p, cin, cout, 3)?),
            Layer::Res { cin, cout } => Block::Res(ResBlock::new(p, cin, cout, cfg, plan)?),
            Layer::Attn { c, heads } => Block::Attn(AttnBlock::new(p, c, heads, cfg)?),
            // Conv2dSame with stride 2: no padding of its own (padded in forward).
            Layer::Down { cin, cout } => Block::Down(Conv2d::new(&(p / "op"), cin, cout, 3, 2, 0)?),
            Layer::Up { cin, cout } => Block::Up(Conv2d::same(&(p / "conv"), cin, cout, 3)?),
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor, class: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Block::Conv(c) => c.forward(x),
            Block::Res(r) => r.forward(x, emb, class),
            Block::Attn(a) => a.forward(x),
            Block::Down(c) => {
                // TF "SAME" for stride 2 on an even size: 0 before, 1 after, both axes.
                let (_, _, h, w) = x.size4()?;
                let (ph, pw) = (same_pad(h), same_pad(w));
                c.forward(&x.f_constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2])?)
            }
            Block::Up(c) => {
                let (_, _, h, w) = x.size4()?;
                c.forward(&x.f_upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0)?)
            }
        }
    }
}

/// `Conv2dSame.calc_same_pad` for kernel 3, stride 2, dilation 1.
fn same_pad(i: i64) -> i64 {
    ((i + 1) / 2 - 1) * 2 + 3 - i
}

/// The Patched Diffusion UNet on libtorch.
///
/// `forward` computes what the original `UNetModel.forward` does: patchify
/// (`channel = (ph·P + pw)·C + c`), the `[sin, cos]` time embedding through `time_embed`
/// (ending in SiLU), the input convolution with the 2-D sinusoidal positional embedding added
/// in place (so also to the first skip), scale-shift residual blocks gated by the class
/// embedding, attention, and both heads, each un-patchified: channels `0..C` are the mean
/// head, `C..2C` the variance head's sigmoid `v` (log σ² = v·log β̃ + (1−v)·log β).
///
/// The `VarStore` paths are the original state-dict keys (`label_embs.weight`,
/// `input_blocks.1.0.in_layers.2.weight`, `variance_output_model.0.bias`, ...). In f16/bf16
/// every weight is held in that kind; group norms and the attention softmax run in f32, as in
/// the original.
#[derive(Debug)]
pub struct PatchedUNet {
    config: PatchedConfig,
    vs: VarStore,
    kind: Kind,
    freqs: Tensor,
    pos_emb: Tensor,
    label_embs: Option<Embedding>,
    time_embed0: Linear,
    time_embed2: Linear,
    input: Vec<Vec<Block>>,
    middle: Vec<Block>,
    output: Vec<Vec<Block>>,
    out_norm: Norm32,
    out_conv: Conv2d,
    variance: Option<VarianceHead>,
}

#[derive(Debug)]
struct VarianceHead {
    t_emb: Conv2d,
    conv0: Conv2d,
    conv2: Conv2d,
}

impl PatchedUNet {
    /// Declare the variables (zeros; GroupNorm scales 1) for a validated configuration.
    fn declare(config: PatchedConfig, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        crate::models::check_kind(kind)?;
        crate::models::check_device(device)?;
        let plan = config.plan()?;
        crate::models::guard_panics(|| {
            let mut vs = VarStore::new(device);
            vs.set_kind(kind);
            let root = vs.root();
            let cfg = &config;
            let mc = cfg.model_channels;
            let label_embs = match cfg.num_classes {
                Some(n) => Some(Embedding::new(
                    &(&root / "label_embs"),
                    n + usize::from(cfg.classifier_free),
                    plan.ch0,
                )?),
                None => None,
            };
            let time_embed0 = Linear::new(&(&root / "time_embed" / 0), mc, 4 * mc, true)?;
            let time_embed2 = Linear::new(&(&root / "time_embed" / 2), 4 * mc, plan.emb, true)?;
            let blocks = |name: &str, list: &[Vec<Layer>]| -> Result<Vec<Vec<Block>>> {
                list.iter()
                    .enumerate()
                    .map(|(i, layers)| {
                        layers
                            .iter()
                            .enumerate()
                            .map(|(j, l)| Block::new(&(&root / name / i / j), l, cfg, &plan))
                            .collect()
                    })
                    .collect()
            };
            let input = blocks("input_blocks", &plan.input)?;
            let middle = plan
                .middle
                .iter()
                .enumerate()
                .map(|(j, l)| Block::new(&(&root / "middle_block" / j), l, cfg, &plan))
                .collect::<Result<Vec<_>>>()?;
            let output = blocks("output_blocks", &plan.output)?;
            let out_norm = Norm32::new(&(&root / "out" / 0), cfg.norm_groups, plan.ch0)?;
            let out_conv = Conv2d::same(&(&root / "out" / 2), plan.ch0, plan.patched, 3)?;
            let variance = if cfg.learn_sigma {
                Some(VarianceHead {
                    t_emb: Conv2d::pointwise(&(&root / "variance_output_t_emb"), plan.emb, 2 * mc)?,
                    conv0: Conv2d::same(&(&root / "variance_output_model" / 0), 2 * mc, mc, 3)?,
                    conv2: Conv2d::same(&(&root / "variance_output_model" / 2), mc, plan.patched, 3)?,
                })
            } else {
                None
            };
            // timestep_embedding: exp(−ln(1e4)·arange(half)/(half − 1)) in f32, in that order.
            let half = (mc / 2) as i64;
            let freqs = Tensor::f_arange(half, (Kind::Float, device))?
                .f_mul_scalar(-(10000f64.ln()))?
                .f_div_scalar((half - 1) as f64)?
                .f_exp()?;
            let pos_emb = positional_embedding_2d(plan.ch0, cfg.input_resolution(), device)?.f_to_kind(kind)?;
            vs.freeze();
            Ok(Self {
                config: config.clone(),
                vs,
                kind,
                freqs,
                pos_emb,
                label_embs,
                time_embed0,
                time_embed2,
                input,
                middle,
                output,
                out_norm,
                out_conv,
                variance,
            })
        })
    }

    /// A network with all-zero weights (GroupNorm scales 1), e.g. as the target of a copy.
    pub fn zeros(config: PatchedConfig, device: Device, kind: Kind) -> Result<Self> {
        Self::declare(config, device, kind)
    }

    /// A network with reproducible random weights drawn on the host from `seed` (uniform
    /// ±1/√fan_in), for tests and benchmarks; libtorch's global RNG is not touched.
    pub fn random(config: PatchedConfig, device: Device, kind: Kind, seed: u64) -> Result<Self> {
        let net = Self::declare(config, device, kind)?;
        crate::models::nn::fill_random(&net.vs, seed)?;
        Ok(net)
    }

    /// A network of `config` with the weights of `sd` (original key names; a `module.`
    /// prefix should be stripped first). Every key must match name for name and shape for
    /// shape; `source` names the origin in errors.
    pub fn from_state_dict(
        config: PatchedConfig,
        sd: &StateDict,
        device: Device,
        kind: Kind,
        source: &Path,
    ) -> Result<Self> {
        let mut net = Self::declare(config, device, kind)?;
        loading::load_state_dict_into(&mut net.vs, sd, source, &LoadOptions::default())?;
        Ok(net)
    }

    /// The configuration.
    pub fn config(&self) -> &PatchedConfig {
        &self.config
    }

    /// The variables, named as the original state dict.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.vs.variables().values().map(|t| t.numel()).sum()
    }

    /// The weights in original naming as `f32` host tensors, sorted by name (e.g. for
    /// [`save_safetensors`](crate::checkpoint::save_safetensors)).
    pub fn state_dict(&self) -> Result<StateDict> {
        crate::models::loading::var_store_state_dict(&self.vs)
    }

    /// `to_patches`: `[B, C, H, W] → [B, P²C, H/P, W/P]`, channel `(ph·P + pw)·C + c`.
    pub fn patchify(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.config.patch_size as i64;
        let (b, c, h, w) = x.size4()?;
        Ok(x.f_view([b, c, h / p, p, w / p, p])?
            .f_permute([0, 3, 5, 1, 2, 4])?
            .f_reshape([b, p * p * c, h / p, w / p])?)
    }

    /// `from_patches`, the inverse of [`patchify`](PatchedUNet::patchify).
    pub fn unpatchify(&self, y: &Tensor) -> Result<Tensor> {
        let p = self.config.patch_size as i64;
        let (b, cp, h, w) = y.size4()?;
        let c = cp / (p * p);
        Ok(y.f_contiguous()?
            .f_view([b, p, p, c, h, w])?
            .f_permute([0, 3, 4, 1, 5, 2])?
            .f_reshape([b, c, h * p, w * p])?)
    }

    /// The forward pass: `x` NCHW (`in_channels` × `image_size`², the model's device),
    /// integer steps `t` (1-D, one per item, as the original receives them), `labels` one per
    /// item for a class-conditional model. Returns `[N, 2C, H, W]` (mean head, then the
    /// variance head's `v`) or `[N, C, H, W]` without `learn_sigma`. Run it under `no_grad`.
    pub fn forward(&self, x: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let cfg = &self.config;
        let (n, c, h, w) = x.size4()?;
        let size = cfg.image_size as i64;
        if c as usize != cfg.in_channels || h != size || w != size {
            return Err(Error::Shape(format!(
                "the Patched Diffusion UNet takes {}×{size}×{size} inputs, got {c}×{h}×{w}",
                cfg.in_channels
            )));
        }
        if t.size() != [n] {
            return Err(Error::Shape(format!(
                "expected {n} times, got a tensor of shape {:?}",
                t.size()
            )));
        }
        let x = self.patchify(&x.f_to_kind(self.kind)?)?;
        // timestep_embedding(t, mc), then time_embed = Linear, SiLU, Linear, SiLU.
        let mut tf = t.f_to_kind(Kind::Float)?;
        if cfg.rescale_timesteps {
            tf = tf.f_mul_scalar(1000.0 / cfg.diffusion_steps as f64)?;
        }
        let args = tf.f_unsqueeze(1)?.f_mul(&self.freqs.f_unsqueeze(0)?)?;
        let mut emb = Tensor::f_cat(&[args.f_sin()?, args.f_cos()?], 1)?;
        if cfg.model_channels % 2 == 1 {
            emb = emb.f_constant_pad_nd([0, 1])?;
        }
        let emb = emb.f_to_kind(self.kind)?;
        let t_emb = self
            .time_embed2
            .forward(&self.time_embed0.forward(&emb)?.f_silu()?)?
            .f_silu()?;
        let class = match (&self.label_embs, labels) {
            (Some(table), Some(y)) => Some(table.forward(y)?),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Incompatible(
                    "this Patched Diffusion model is class-conditional: give one label per item".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(Error::Incompatible(
                    "this Patched Diffusion model is unconditional: give no class labels".into(),
                ))
            }
        };
        let class = class.as_ref();
        let first = self
            .input
            .first()
            .and_then(|b| b.first())
            .ok_or_else(|| Error::Model("the network has no input block".into()))?;
        // The positional embedding is added in place: hs[0] aliases x, so the first skip
        // and the variance head's input carry it too.
        let x0 = first.forward(&x, &t_emb, class)?.f_add(&self.pos_emb)?;
        let mut hs: Vec<Tensor> = vec![x0.shallow_clone()];
        let mut hcur = x0.shallow_clone();
        for block in &self.input[1..] {
            for layer in block {
                hcur = layer.forward(&hcur, &t_emb, class)?;
            }
            hs.push(hcur.shallow_clone());
        }
        for layer in &self.middle {
            hcur = layer.forward(&hcur, &t_emb, class)?;
        }
        for block in &self.output {
            let skip = hs
                .pop()
                .ok_or_else(|| Error::Model("the skip stack is exhausted".into()))?;
            hcur = Tensor::f_cat(&[&hcur, &skip], 1)?;
            for layer in block {
                hcur = layer.forward(&hcur, &t_emb, class)?;
            }
        }
        let mean = self.out_conv.forward(&self.out_norm.forward(&hcur)?.f_silu()?)?;
        let mean = self.unpatchify(&mean)?;
        match &self.variance {
            None => Ok(mean),
            Some(v) => {
                let te = v.t_emb.forward(&t_emb.f_silu()?.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
                let concat = Tensor::f_cat(&[&x0, &hcur], 1)?.f_add(&te)?;
                let var = v.conv0.forward(&concat)?.f_silu()?;
                let var = v.conv2.forward(&var)?.f_sigmoid()?;
                Ok(Tensor::f_cat(&[mean, self.unpatchify(&var)?], 1)?)
            }
        }
    }

    /// The label tensor of `condition` for a batch of `n`, checked against the model: a
    /// class-conditional model needs one label per item in `0..num_classes` (or the null
    /// label `num_classes` of a classifier-free model), an unconditional one none.
    pub(crate) fn labels(&self, condition: &Condition, n: usize) -> Result<Option<Tensor>> {
        let cfg = &self.config;
        match (cfg.num_classes, condition) {
            (None, Condition::None) => Ok(None),
            (None, _) => Err(Error::Incompatible(
                "this Patched Diffusion model is unconditional; pass Condition::None".into(),
            )),
            (Some(k), Condition::Class(v)) => {
                if v.len() != n {
                    return Err(Error::Shape(format!("{} class labels for a batch of {n}", v.len())));
                }
                let top = if cfg.classifier_free { k } else { k - 1 };
                if let Some(&bad) = v.iter().find(|&&y| y < 0 || y as usize > top) {
                    let null = if cfg.classifier_free {
                        format!(", or the null label {k} for unconditional")
                    } else {
                        String::new()
                    };
                    return Err(Error::param(
                        "class",
                        format!("label {bad} is outside this model's classes 0..{k}{null}"),
                    ));
                }
                Ok(Some(crossing::slice_to_tensor(
                    v,
                    &[v.len()],
                    self.vs.device(),
                    Kind::Int64,
                )?))
            }
            (Some(k), _) => Err(Error::Incompatible(format!(
                "this Patched Diffusion model is class-conditional ({k} classes): pass \
                 Condition::Class with one label per item{}",
                if cfg.classifier_free {
                    format!(" (the null label {k} is unconditional)")
                } else {
                    String::new()
                }
            ))),
        }
    }
}

/// `timestep_embedding_2d(·, dim, res)` of `nn.py`, in f32 and in its order of operations:
/// `[1, dim, res, res]`, channel `k < dim/2` is `sin(j·f_k·ω)` over the column `j`, channel
/// `dim/2 + k` is `sin(i·f_k·ω)` over the row `i`, with `f_k = exp(−k·ln(1e4)/(dim/2 − 1))`
/// and `ω = 64/res`.
fn positional_embedding_2d(dim: usize, res: usize, device: Device) -> Result<Tensor> {
    let half = (dim / 2) as i64;
    let r = res as i64;
    // th.log(th.tensor(10000)) is computed in f32, then divided by half_dim − 1 in f32.
    let step = (10000f32).ln() / (half - 1) as f32;
    let freqs = Tensor::f_arange(half, (Kind::Float, device))?
        .f_mul_scalar(-(step as f64))?
        .f_exp()?;
    let pos = Tensor::f_arange(r, (Kind::Float, device))?;
    let emb = pos
        .f_unsqueeze(1)?
        .f_mul(&freqs.f_unsqueeze(0)?)?
        .f_mul_scalar(64.0 / res as f64)?
        .f_sin()?; // [res, half]
    let emb_x = emb.f_unsqueeze(0)?.f_expand([r, r, half], false)?; // [i, j, k] = emb[j, k]
    let emb_y = emb.f_unsqueeze(1)?.f_expand([r, r, half], false)?; // [i, j, k] = emb[i, k]
    Ok(Tensor::f_cat(&[emb_x, emb_y], -1)?
        .f_permute([2, 0, 1])?
        .f_unsqueeze(0)?
        .f_contiguous()?)
}

impl TchModule for PatchedUNet {
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
        let n = x.size4()?.0 as usize;
        let labels = self.labels(condition, n)?;
        self.forward(x, t, labels.as_ref())
    }
}
