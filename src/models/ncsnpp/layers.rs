//! NCSN++'s layers (`layerspp.py`, `layers.py`, `up_or_down_sampling.py`) on tch tensors:
//! FIR resampling (`upfirdn2d`), NIN, single-head attention, the DDPM++ and BigGAN++
//! residual blocks, and the plain up/downsampling layers, all with fallible forwards.
//!
//! Layers declare their tensors through a `Decl`, which either creates them in a
//! `VarStore` or only records their names and shapes: the same constructors give the
//! network and its analytic layout (parameter counts, registration order) without
//! allocating anything.

use std::f64::consts::PI;

use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::config::Nonlinearity;
use crate::checkpoint::{StateDict, TensorData};
use crate::models::crossing;
use crate::{Error, Result};

/// What a state-dict entry is to PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An `nn.Parameter` with `requires_grad=True`: trained, and tracked by the EMA.
    Trainable,
    /// An `nn.Parameter` with `requires_grad=False` (the Fourier `W`): stored, not in the
    /// EMA's shadow list.
    Frozen,
    /// A buffer (`sigmas`, BatchNorm running statistics): stored, not a parameter.
    Buffer,
}

/// One entry of a network's state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// The original key (`all_modules.4.Conv_0.weight`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Parameter, frozen parameter or buffer.
    pub role: Role,
}

impl ParamInfo {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Total elements of a layout.
pub(crate) fn count(layout: &[ParamInfo]) -> u64 {
    layout.iter().map(ParamInfo::numel).sum()
}

/// Random weights for a layout (see `NcsnppNet::random`), for the score network and the classifier.
pub(crate) fn random_entries(layout: &[ParamInfo], fourier_scale: f64, seed: u64) -> StateDict {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let small = Uniform::new_inclusive(-0.1f32, 0.1);
    let mut sd = StateDict::new();
    for p in layout {
        let numel = p.numel() as usize;
        let leaf = p.name.rsplit('.').next().unwrap_or("");
        let values: Vec<f32> = if p.role == Role::Frozen {
            // Fourier W ~ N(0, scale²) by Box–Muller.
            let u = Uniform::new(f64::EPSILON, 1.0);
            (0..numel)
                .map(|_| {
                    let (a, b): (f64, f64) = (u.sample(&mut rng), u.sample(&mut rng));
                    ((-2.0 * a.ln()).sqrt() * (2.0 * PI * b).cos() * fourier_scale) as f32
                })
                .collect()
        } else if leaf == "running_var" {
            (0..numel).map(|_| 1.0 + 5.0 * small.sample(&mut rng)).collect()
        } else if p.shape.len() == 1 && leaf == "weight" {
            // Normalization scales.
            (0..numel).map(|_| 1.0 + small.sample(&mut rng)).collect()
        } else if p.shape.len() <= 1 {
            (0..numel).map(|_| small.sample(&mut rng)).collect()
        } else {
            // NIN stores (in, out); every other weight (out, in, ...).
            let fan_in: usize = if leaf == "W" {
                p.shape[0]
            } else {
                p.shape.iter().skip(1).product()
            };
            let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
            let u = Uniform::new_inclusive(-bound, bound);
            (0..numel).map(|_| u.sample(&mut rng)).collect()
        };
        sd.insert(p.name.clone(), TensorData::from_f32(p.shape.clone(), &values));
    }
    sd
}

/// Declares a network's tensors in registration order: into a `VarStore` (build mode) or
/// only into the list of entries (record mode, no allocation).
pub(crate) struct Decl<'a> {
    store: Option<(&'a VarStore, Kind)>,
    entries: Vec<ParamInfo>,
}

impl<'a> Decl<'a> {
    /// Record names and shapes only.
    pub fn record() -> Self {
        Self {
            store: None,
            entries: Vec::new(),
        }
    }

    /// Create the tensors in `vs`, floating-point ones in `kind` unless asked otherwise.
    pub fn build(vs: &'a VarStore, kind: Kind) -> Self {
        Self {
            store: Some((vs, kind)),
            entries: Vec::new(),
        }
    }

    /// The entries declared so far.
    pub fn into_entries(self) -> Vec<ParamInfo> {
        self.entries
    }

    /// The device tensors are created on (the CPU in record mode).
    pub fn device(&self) -> Device {
        self.store.map_or(Device::Cpu, |(vs, _)| vs.device())
    }

    /// The compute kind (f32 in record mode, where it does not matter).
    pub fn compute_kind(&self) -> Kind {
        self.store.map_or(Kind::Float, |(_, k)| k)
    }

    /// Whether tensors are really created.
    pub fn building(&self) -> bool {
        self.store.is_some()
    }

    /// Declare `name` (a dotted key) of `shape`, filled with `fill`, in the compute kind or
    /// in `kind` when given. Returns an undefined tensor in record mode.
    pub fn tensor(&mut self, name: &str, shape: &[usize], role: Role, fill: f64, kind: Option<Kind>) -> Result<Tensor> {
        self.entries.push(ParamInfo {
            name: name.to_string(),
            shape: shape.to_vec(),
            role,
        });
        let Some((vs, compute)) = self.store else {
            return Ok(Tensor::new());
        };
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let t = Tensor::f_full(&dims, fill, (kind.unwrap_or(compute), vs.device()))?;
        let mut parts: Vec<&str> = name.split('.').collect();
        let last = parts
            .pop()
            .ok_or_else(|| Error::Model(format!("empty variable name `{name}`")))?;
        let mut path = vs.root();
        for p in parts {
            path = path.sub(p);
        }
        // Inference only: nothing here is trained, so no variable tracks gradients.
        Ok(path.add(last, t, false))
    }

    /// A constant (not a state-dict entry) from host values, on the store's device in
    /// `kind`. Undefined in record mode.
    pub fn constant(&self, values: &[f32], shape: &[i64], kind: Kind) -> Result<Tensor> {
        if !self.building() {
            return Ok(Tensor::new());
        }
        let shape: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| Error::Shape(format!("constant of shape {shape:?}"))))
            .collect::<Result<_>>()?;
        crossing::slice_to_tensor(values, &shape, self.device(), kind)
    }
}

/// An activation.
pub(crate) fn act(kind: Nonlinearity, x: &Tensor) -> Result<Tensor> {
    Ok(match kind {
        Nonlinearity::Swish => x.f_silu()?,
        Nonlinearity::Relu => x.f_relu()?,
        // LeakyReLU(0.2): max(x, 0.2·x) for a slope below 1.
        Nonlinearity::Lrelu => x.f_maximum(&x.f_mul_scalar(0.2)?)?,
        Nonlinearity::Elu => x.f_elu()?,
    })
}

/// `nn.Conv2d` (square kernel, stride and padding).
#[derive(Debug)]
pub(crate) struct Conv {
    w: Tensor,
    b: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv {
    /// `nn.Conv2d(cin, cout, k, stride, padding, bias)`, its arguments in PyTorch's order.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d: &mut Decl<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: i64,
        padding: i64,
        bias: bool,
    ) -> Result<Self> {
        let w = d.tensor(
            &format!("{prefix}.weight"),
            &[cout, cin, k, k],
            Role::Trainable,
            0.0,
            None,
        )?;
        let b = if bias {
            Some(d.tensor(&format!("{prefix}.bias"), &[cout], Role::Trainable, 0.0, None)?)
        } else {
            None
        };
        Ok(Self { w, b, stride, padding })
    }

    /// `ddpm_conv3x3`: 3×3, padding 1, with bias.
    pub fn conv3(d: &mut Decl<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Self::new(d, prefix, cin, cout, 3, 1, 1, true)
    }

    /// `ddpm_conv1x1`: 1×1 with bias.
    pub fn conv1(d: &mut Decl<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Self::new(d, prefix, cin, cout, 1, 1, 0, true)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(&self.w, self.b.as_ref(), [self.stride; 2], [self.padding; 2], [1, 1], 1)?)
    }
}

/// `nn.Linear`.
#[derive(Debug)]
pub(crate) struct Linear {
    w: Tensor,
    b: Tensor,
}

impl Linear {
    pub fn new(d: &mut Decl<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            w: d.tensor(&format!("{prefix}.weight"), &[cout, cin], Role::Trainable, 0.0, None)?,
            b: d.tensor(&format!("{prefix}.bias"), &[cout], Role::Trainable, 0.0, None)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.w, Some(&self.b))?)
    }
}

/// `nn.GroupNorm(min(C/4, 32), C, eps=1e-6)`, NCSN++'s only normalization.
#[derive(Debug)]
pub(crate) struct GroupNorm {
    w: Tensor,
    b: Tensor,
    groups: i64,
}

impl GroupNorm {
    pub fn new(d: &mut Decl<'_>, prefix: &str, c: usize) -> Result<Self> {
        let groups = (c / 4).min(32);
        if groups == 0 || !c.is_multiple_of(groups) {
            return Err(Error::param(
                "NcsnppConfig",
                format!(
                    "model.nf/model.ch_mult: `{prefix}` normalizes {c} channels with min({c}/4, 32) = {groups} \
                     groups, which PyTorch's GroupNorm refuses (channels must be at least 4 and divisible by the \
                     group count)"
                ),
            ));
        }
        Ok(Self {
            w: d.tensor(&format!("{prefix}.weight"), &[c], Role::Trainable, 1.0, None)?,
            b: d.tensor(&format!("{prefix}.bias"), &[c], Role::Trainable, 0.0, None)?,
            groups: groups as i64,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_group_norm(self.groups, Some(&self.w), Some(&self.b), 1e-6, true)?)
    }
}

/// `NIN`: a per-pixel linear map with `W` stored as `(in, out)`.
#[derive(Debug)]
pub(crate) struct Nin {
    w: Tensor,
    b: Tensor,
}

impl Nin {
    pub fn new(d: &mut Decl<'_>, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        Ok(Self {
            w: d.tensor(&format!("{prefix}.W"), &[cin, cout], Role::Trainable, 0.0, None)?,
            b: d.tensor(&format!("{prefix}.b"), &[cout], Role::Trainable, 0.0, None)?,
        })
    }

    /// On channels-last rows `(…, in)`.
    pub fn forward_rows(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_matmul(&self.w)?.f_add(&self.b)?)
    }

    /// On NCHW.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.forward_rows(&x.f_permute([0, 2, 3, 1])?)?;
        Ok(y.f_permute([0, 3, 1, 2])?)
    }
}

/// `(x + h)/√2` with skip rescaling, else `x + h`.
pub(crate) fn residual(x: &Tensor, h: &Tensor, skip_rescale: bool) -> Result<Tensor> {
    let s = x.f_add(h)?;
    if skip_rescale {
        Ok(s.f_mul_scalar(std::f64::consts::FRAC_1_SQRT_2)?)
    } else {
        Ok(s)
    }
}

/// Python's `a // 2` (floor division, also for negative `a`).
fn floor_half(a: i64) -> i64 {
    a.div_euclid(2)
}

/// StyleGAN2's FIR filter (`_setup_kernel`): `K = outer(k, k)/Σ`, kept flipped for a true
/// convolution, as `(1, 1, n, n)` in the compute kind; `up` is `4K` (upsampling gain
/// `factor²` for factor 2).
#[derive(Debug)]
pub(crate) struct Fir {
    down: Tensor,
    up: Tensor,
    taps: i64,
}

impl Fir {
    pub fn new(d: &Decl<'_>, taps: &[f64], kind: Kind) -> Result<Self> {
        let n = taps.len();
        let mut k2 = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                k2[i * n + j] = taps[i] * taps[j];
            }
        }
        let sum: f64 = k2.iter().sum();
        // flip(K, [0, 1]): upfirdn2d convolves, F.conv2d correlates.
        let flipped: Vec<f32> = (0..n * n).map(|p| (k2[n * n - 1 - p] / sum) as f32).collect();
        let up: Vec<f32> = flipped.iter().map(|v| v * 4.0).collect();
        let shape = [1, 1, n as i64, n as i64];
        Ok(Self {
            down: d.constant(&flipped, &shape, kind)?,
            up: d.constant(&up, &shape, kind)?,
            taps: n as i64,
        })
    }

    /// `upfirdn2d(x, K, up, down, pad=(p0, p1))`: zero-insertion upsampling, padding (a
    /// negative pad crops), a per-channel true convolution with `K`, then keeping every
    /// `down`-th sample.
    fn upfirdn(x: &Tensor, k: &Tensor, up: i64, down: i64, p0: i64, p1: i64) -> Result<Tensor> {
        let (n, c, h, w) = x.size4()?;
        let mut t = x.f_reshape([n * c, 1, h, w])?;
        let (mut hh, mut ww) = (h, w);
        if up > 1 {
            t = t
                .f_reshape([n * c, 1, h, 1, w, 1])?
                .f_constant_pad_nd([0, up - 1, 0, 0, 0, up - 1])?
                .f_reshape([n * c, 1, h * up, w * up])?;
            hh *= up;
            ww *= up;
        }
        if hh + p0 + p1 < 1 || ww + p0 + p1 < 1 {
            return Err(Error::Shape(format!(
                "FIR resampling of a {h}×{w} input leaves nothing"
            )));
        }
        let t = t.f_constant_pad_nd([p0, p1, p0, p1])?;
        let y = t.f_conv2d(k, None::<Tensor>, [down, down], [0, 0], [1, 1], 1)?;
        let (_, _, oh, ow) = y.size4()?;
        Ok(y.f_reshape([n, c, oh, ow])?)
    }

    /// `upsample_2d(x, k, factor=2)`.
    pub fn upsample(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.taps - 2;
        Self::upfirdn(x, &self.up, 2, 1, floor_half(p + 1) + 1, floor_half(p))
    }

    /// `downsample_2d(x, k, factor=2)`.
    pub fn downsample(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.taps - 2;
        Self::upfirdn(x, &self.down, 1, 2, floor_half(p + 1), floor_half(p))
    }

    /// `upsample_conv_2d(x, w, k, factor=2)` (+ bias): a stride-2 transposed convolution
    /// with the flipped, transposed weights, then the FIR filter.
    pub fn upsample_conv(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (_, _, _, conv_k) = w.size4()?;
        let wt = w.f_flip([2, 3])?.f_transpose(0, 1)?;
        let y = x.f_conv_transpose2d(&wt, None::<Tensor>, [2, 2], [0, 0], [0, 0], 1, [1, 1])?;
        let p = (self.taps - 2) - (conv_k - 1);
        let y = Self::upfirdn(&y, &self.up, 1, 1, floor_half(p + 1) + 1, floor_half(p) + 1)?;
        Ok(y.f_add(&b.f_reshape([1, -1, 1, 1])?)?)
    }

    /// `conv_downsample_2d(x, w, k, factor=2)` (+ bias): the FIR filter, then a stride-2
    /// convolution.
    pub fn conv_downsample(&self, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (_, _, _, conv_k) = w.size4()?;
        let p = (self.taps - 2) + (conv_k - 1);
        let y = Self::upfirdn(x, &self.down, 1, 1, floor_half(p + 1), floor_half(p))?;
        Ok(y.f_conv2d(w, Some(b), [2, 2], [0, 0], [1, 1], 1)?)
    }
}

/// Nearest-neighbour ×2 (`naive_upsample_2d`, `F.interpolate(…, 'nearest')`).
pub(crate) fn nearest_up(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.size4()?;
    Ok(x.f_upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0)?)
}

/// 2×2 mean (`naive_downsample_2d`, `F.avg_pool2d(x, 2)`).
pub(crate) fn mean_down(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>)?)
}

/// The shared pieces a block's forward needs.
pub(crate) struct Ctx<'a> {
    pub act: Nonlinearity,
    pub fir: Option<&'a Fir>,
    pub skip_rescale: bool,
}

impl Ctx<'_> {
    fn up(&self, x: &Tensor) -> Result<Tensor> {
        match self.fir {
            Some(f) => f.upsample(x),
            None => nearest_up(x),
        }
    }

    fn down(&self, x: &Tensor) -> Result<Tensor> {
        match self.fir {
            Some(f) => f.downsample(x),
            None => mean_down(x),
        }
    }

    fn fir(&self) -> Result<&Fir> {
        self.fir
            .ok_or_else(|| Error::Model("internal error: a FIR layer without its filter".into()))
    }
}

/// `AttnBlockpp`: GroupNorm, NIN q/k/v, softmax(qᵀk·C^−½) over all positions, NIN out,
/// residual.
#[derive(Debug)]
pub(crate) struct Attn {
    norm: GroupNorm,
    q: Nin,
    k: Nin,
    v: Nin,
    out: Nin,
}

impl Attn {
    pub fn new(d: &mut Decl<'_>, prefix: &str, c: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(d, &format!("{prefix}.GroupNorm_0"), c)?,
            q: Nin::new(d, &format!("{prefix}.NIN_0"), c, c)?,
            k: Nin::new(d, &format!("{prefix}.NIN_1"), c, c)?,
            v: Nin::new(d, &format!("{prefix}.NIN_2"), c, c)?,
            out: Nin::new(d, &format!("{prefix}.NIN_3"), c, c)?,
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx<'_>) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        // (B, C, H, W) -> (B, HW, C) rows.
        let rows = self.norm.forward(x)?.f_reshape([b, c, h * w])?.f_transpose(1, 2)?;
        let head = |t: Tensor| -> Result<Tensor> { Ok(t.f_unsqueeze(1)?) };
        let q = head(self.q.forward_rows(&rows)?)?;
        let k = head(self.k.forward_rows(&rows)?)?;
        let v = head(self.v.forward_rows(&rows)?)?;
        let scale = (c as f64).powf(-0.5);
        let a = Tensor::f_scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, scale, false)?;
        let hrows = self.out.forward_rows(&a.f_squeeze_dim(1)?)?;
        let hmap = hrows.f_transpose(1, 2)?.f_reshape([b, c, h, w])?;
        residual(x, &hmap, ctx.skip_rescale)
    }
}

/// `ResnetBlockDDPMpp`.
#[derive(Debug)]
pub(crate) struct ResnetDdpm {
    norm0: GroupNorm,
    conv0: Conv,
    dense0: Linear,
    norm1: GroupNorm,
    conv1: Conv,
    nin: Option<Nin>,
}

impl ResnetDdpm {
    pub fn new(d: &mut Decl<'_>, prefix: &str, cin: usize, cout: usize, temb: usize) -> Result<Self> {
        Ok(Self {
            norm0: GroupNorm::new(d, &format!("{prefix}.GroupNorm_0"), cin)?,
            conv0: Conv::conv3(d, &format!("{prefix}.Conv_0"), cin, cout)?,
            dense0: Linear::new(d, &format!("{prefix}.Dense_0"), temb, cout)?,
            norm1: GroupNorm::new(d, &format!("{prefix}.GroupNorm_1"), cout)?,
            conv1: Conv::conv3(d, &format!("{prefix}.Conv_1"), cout, cout)?,
            nin: if cin != cout {
                Some(Nin::new(d, &format!("{prefix}.NIN_0"), cin, cout)?)
            } else {
                None
            },
        })
    }

    /// `temb_act` is `act(temb)` (or `None` for an unconditional network).
    pub fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>, ctx: &Ctx<'_>) -> Result<Tensor> {
        let mut h = self.conv0.forward(&act(ctx.act, &self.norm0.forward(x)?)?)?;
        if let Some(t) = temb_act {
            h = h.f_add(&self.dense0.forward(t)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        }
        let h = self.conv1.forward(&act(ctx.act, &self.norm1.forward(&h)?)?)?;
        let x = match &self.nin {
            Some(n) => n.forward(x)?,
            None => x.shallow_clone(),
        };
        residual(&x, &h, ctx.skip_rescale)
    }
}

/// Resampling inside a BigGAN block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resample {
    None,
    Up,
    Down,
}

/// `ResnetBlockBigGANpp`.
#[derive(Debug)]
pub(crate) struct ResnetBigGan {
    norm0: GroupNorm,
    conv0: Conv,
    dense0: Linear,
    norm1: GroupNorm,
    conv1: Conv,
    conv2: Option<Conv>,
    resample: Resample,
}

impl ResnetBigGan {
    pub fn new(
        d: &mut Decl<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        temb: usize,
        resample: Resample,
    ) -> Result<Self> {
        Ok(Self {
            norm0: GroupNorm::new(d, &format!("{prefix}.GroupNorm_0"), cin)?,
            conv0: Conv::conv3(d, &format!("{prefix}.Conv_0"), cin, cout)?,
            dense0: Linear::new(d, &format!("{prefix}.Dense_0"), temb, cout)?,
            norm1: GroupNorm::new(d, &format!("{prefix}.GroupNorm_1"), cout)?,
            conv1: Conv::conv3(d, &format!("{prefix}.Conv_1"), cout, cout)?,
            conv2: if cin != cout || resample != Resample::None {
                Some(Conv::conv1(d, &format!("{prefix}.Conv_2"), cin, cout)?)
            } else {
                None
            },
            resample,
        })
    }

    pub fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>, ctx: &Ctx<'_>) -> Result<Tensor> {
        let mut h = act(ctx.act, &self.norm0.forward(x)?)?;
        let x = match self.resample {
            Resample::None => x.shallow_clone(),
            Resample::Up => {
                h = ctx.up(&h)?;
                ctx.up(x)?
            }
            Resample::Down => {
                h = ctx.down(&h)?;
                ctx.down(x)?
            }
        };
        let mut h = self.conv0.forward(&h)?;
        if let Some(t) = temb_act {
            h = h.f_add(&self.dense0.forward(t)?.f_unsqueeze(-1)?.f_unsqueeze(-1)?)?;
        }
        let h = self.conv1.forward(&act(ctx.act, &self.norm1.forward(&h)?)?)?;
        let x = match &self.conv2 {
            Some(c) => c.forward(&x)?,
            None => x,
        };
        residual(&x, &h, ctx.skip_rescale)
    }
}

/// Either residual block.
#[derive(Debug)]
pub(crate) enum Block {
    Ddpm(ResnetDdpm),
    BigGan(ResnetBigGan),
}

impl Block {
    pub fn forward(&self, x: &Tensor, temb_act: Option<&Tensor>, ctx: &Ctx<'_>) -> Result<Tensor> {
        match self {
            Block::Ddpm(b) => b.forward(x, temb_act, ctx),
            Block::BigGan(b) => b.forward(x, temb_act, ctx),
        }
    }
}

/// `layerspp.Upsample` / `layerspp.Downsample`: FIR or plain, with or without a
/// convolution.
#[derive(Debug)]
pub(crate) enum Resampler {
    /// Plain: nearest ×2 (up) or 2×2 mean (down), or the FIR filter alone.
    Plain { up: bool },
    /// Not FIR: nearest ×2 then a 3×3 conv (`Conv_0`), or pad (0,1,0,1) then a stride-2
    /// 3×3 conv without padding.
    Conv { up: bool, conv: Conv },
    /// FIR with conv (`Conv2d_0`): `upsample_conv_2d` / `conv_downsample_2d`.
    FirConv { up: bool, w: Tensor, b: Tensor },
}

impl Resampler {
    /// `with_conv`, `fir` as in `layerspp`; `cout` defaults to `cin` there.
    pub fn new(
        d: &mut Decl<'_>,
        prefix: &str,
        cin: usize,
        cout: usize,
        up: bool,
        with_conv: bool,
        fir: bool,
    ) -> Result<Self> {
        Ok(match (with_conv, fir) {
            (false, _) => Resampler::Plain { up },
            (true, false) => {
                let conv = if up {
                    Conv::conv3(d, &format!("{prefix}.Conv_0"), cin, cout)?
                } else {
                    Conv::new(d, &format!("{prefix}.Conv_0"), cin, cout, 3, 2, 0, true)?
                };
                Resampler::Conv { up, conv }
            }
            (true, true) => Resampler::FirConv {
                up,
                w: d.tensor(
                    &format!("{prefix}.Conv2d_0.weight"),
                    &[cout, cin, 3, 3],
                    Role::Trainable,
                    0.0,
                    None,
                )?,
                b: d.tensor(&format!("{prefix}.Conv2d_0.bias"), &[cout], Role::Trainable, 0.0, None)?,
            },
        })
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx<'_>) -> Result<Tensor> {
        match self {
            Resampler::Plain { up: true } => ctx.up(x),
            Resampler::Plain { up: false } => ctx.down(x),
            Resampler::Conv { up: true, conv } => conv.forward(&nearest_up(x)?),
            Resampler::Conv { up: false, conv } => conv.forward(&x.f_constant_pad_nd([0, 1, 0, 1])?),
            Resampler::FirConv { up: true, w, b } => ctx.fir()?.upsample_conv(x, w, b),
            Resampler::FirConv { up: false, w, b } => ctx.fir()?.conv_downsample(x, w, b),
        }
    }
}
