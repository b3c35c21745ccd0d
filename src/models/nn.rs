//! Layer primitives over `VarStore` variables, with fallible forward passes, shared by every
//! network of the crate (DDPM UNet, Stable Diffusion, LPIPS).
//!
//! Each layer declares its variables under the same names as PyTorch (`weight`, `bias`), so a
//! module path in the store is the checkpoint key without its last component. Variables are
//! created zero-initialised (norm scales at one) and filled by loading a state dict.

use tch::nn::{Init, Path};
use tch::{Device, Kind, Tensor};

use crate::models::crossing;
use crate::Result;

/// `nn.Conv2d` with square kernel, stride and padding.
#[derive(Debug)]
pub(crate) struct Conv2d {
    w: Tensor,
    b: Option<Tensor>,
    stride: i64,
    padding: i64,
}

impl Conv2d {
    pub fn new(p: &Path<'_>, cin: usize, cout: usize, k: usize, stride: i64, padding: i64) -> Result<Self> {
        Ok(Self {
            w: p.f_var(
                "weight",
                &[cout as i64, cin as i64, k as i64, k as i64],
                Init::Const(0.0),
            )?,
            b: Some(p.f_var("bias", &[cout as i64], Init::Const(0.0))?),
            stride,
            padding,
        })
    }

    /// A 1×1 convolution.
    pub fn pointwise(p: &Path<'_>, cin: usize, cout: usize) -> Result<Self> {
        Self::new(p, cin, cout, 1, 1, 0)
    }

    /// A `k`×`k` convolution keeping the size (`padding = (k − 1)/2`).
    pub fn same(p: &Path<'_>, cin: usize, cout: usize, k: usize) -> Result<Self> {
        Self::new(p, cin, cout, k, 1, ((k - 1) / 2) as i64)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_conv2d(&self.w, self.b.as_ref(), [self.stride; 2], [self.padding; 2], [1, 1], 1)?)
    }
}

/// `nn.Linear`.
#[derive(Debug)]
pub(crate) struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    pub fn new(p: &Path<'_>, cin: usize, cout: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            w: p.f_var("weight", &[cout as i64, cin as i64], Init::Const(0.0))?,
            b: if bias {
                Some(p.f_var("bias", &[cout as i64], Init::Const(0.0))?)
            } else {
                None
            },
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_linear(&self.w, self.b.as_ref())?)
    }
}

/// `nn.GroupNorm` with affine parameters.
#[derive(Debug)]
pub(crate) struct GroupNorm {
    w: Tensor,
    b: Tensor,
    groups: i64,
    eps: f64,
}

impl GroupNorm {
    pub fn new(p: &Path<'_>, groups: usize, c: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            w: p.f_var("weight", &[c as i64], Init::Const(1.0))?,
            b: p.f_var("bias", &[c as i64], Init::Const(0.0))?,
            groups: groups as i64,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_group_norm(self.groups, Some(&self.w), Some(&self.b), self.eps, true)?)
    }
}

/// `nn.LayerNorm` over the last dimension.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    w: Tensor,
    b: Tensor,
    dim: i64,
    eps: f64,
}

impl LayerNorm {
    pub fn new(p: &Path<'_>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            w: p.f_var("weight", &[dim as i64], Init::Const(1.0))?,
            b: p.f_var("bias", &[dim as i64], Init::Const(0.0))?,
            dim: dim as i64,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.f_layer_norm([self.dim], Some(&self.w), Some(&self.b), self.eps, true)?)
    }
}

/// `nn.Embedding`.
#[derive(Debug)]
pub(crate) struct Embedding {
    w: Tensor,
}

impl Embedding {
    pub fn new(p: &Path<'_>, n: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            w: p.f_var("weight", &[n as i64, dim as i64], Init::Const(0.0))?,
        })
    }

    /// Rows for the integer tensor `ids`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(Tensor::f_embedding(&self.w, ids, -1, false, false)?)
    }
}

/// `x · sigmoid(1.702 x)`: CLIP's `quick_gelu`.
pub(crate) fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.f_mul(&x.f_mul_scalar(1.702)?.f_sigmoid()?)?)
}

/// Multi-head scaled dot-product attention on `(B, L, H·D)` projections.
///
/// Runs libtorch's fused `scaled_dot_product_attention` (memory-efficient kernels, as
/// diffusers' default `AttnProcessor2_0`); `upcast` computes it in f32 when the inputs are
/// f16/bf16 (diffusers' `upcast_attention`/`upcast_softmax`) and casts the result back.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64, causal: bool, upcast: bool) -> Result<Tensor> {
    let (b, lq, inner) = q.size3()?;
    let (_, lk, _) = k.size3()?;
    let d = inner / heads;
    let split = |t: &Tensor, l: i64| -> Result<Tensor> { Ok(t.f_view([b, l, heads, d])?.f_transpose(1, 2)?) };
    let (mut qh, mut kh, mut vh) = (split(q, lq)?, split(k, lk)?, split(v, lk)?);
    let kind = q.f_kind()?;
    let cast = upcast && matches!(kind, Kind::Half | Kind::BFloat16);
    if cast {
        qh = qh.f_to_kind(Kind::Float)?;
        kh = kh.f_to_kind(Kind::Float)?;
        vh = vh.f_to_kind(Kind::Float)?;
    }
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = Tensor::f_scaled_dot_product_attention::<Tensor>(&qh, &kh, &vh, None, 0.0, causal, scale, false)?;
    if cast {
        out = out.f_to_kind(kind)?;
    }
    Ok(out.f_transpose(1, 2)?.f_reshape([b, lq, inner])?)
}

/// Fill every variable of `vs` with reproducible random values drawn on the host from `seed`
/// (ChaCha8): PyTorch's default scale, uniform `±1/√fan_in`, for weights and biases;
/// normalization scales 1 and shifts 0. Variables are visited in name order, so the values
/// do not depend on declaration order. libtorch's global RNG is not touched.
pub(crate) fn fill_random(vs: &tch::nn::VarStore, seed: u64) -> Result<()> {
    use rand::distributions::{Distribution, Uniform};
    use rand::SeedableRng;
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let _g = tch::no_grad_guard();
    for name in names {
        let var = &vars[name];
        let numel = var.numel();
        let last = name.rsplit('.').nth(1).unwrap_or("");
        let values: Vec<f32> = if last.contains("norm") {
            vec![if name.ends_with("weight") { 1.0 } else { 0.0 }; numel]
        } else {
            let weight = vars.get(&name.replace(".bias", ".weight")).unwrap_or(var);
            let fan_in: i64 = weight.size().iter().skip(1).product::<i64>().max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            let dist = Uniform::new_inclusive(-bound, bound);
            (0..numel).map(|_| dist.sample(&mut rng)).collect()
        };
        let shape: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
        let src = crossing::slice_to_tensor(&values, &shape, Device::Cpu, Kind::Float)?;
        let mut dst = var.shallow_clone();
        dst.f_copy_(&src)?;
    }
    Ok(())
}
