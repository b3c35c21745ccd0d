//! Attention layers: the UNet's spatial transformer (`Transformer2DModel` of
//! `BasicTransformerBlock`s with self-attention, cross-attention on the text and a GEGLU
//! feed-forward) and the VAE's single-head spatial self-attention.

use tch::nn::Path;
use tch::Tensor;

use crate::models::nn::{attention, Conv2d, GroupNorm, LayerNorm, Linear};
use crate::Result;

/// diffusers' `Attention`: `to_q`, `to_k`, `to_v` (no bias in the UNet, bias in the VAE),
/// `to_out.0`; scale `head_dim^-½`.
#[derive(Debug)]
pub(crate) struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    upcast: bool,
}

impl Attention {
    /// `query_dim` wide queries attending to `context_dim` wide keys (`None`: self-attention).
    pub fn new(
        p: &Path<'_>,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        upcast: bool,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        let ctx = context_dim.unwrap_or(query_dim);
        Ok(Self {
            to_q: Linear::new(&(p / "to_q"), query_dim, inner, qkv_bias)?,
            to_k: Linear::new(&(p / "to_k"), ctx, inner, qkv_bias)?,
            to_v: Linear::new(&(p / "to_v"), ctx, inner, qkv_bias)?,
            to_out: Linear::new(&(p / "to_out" / 0), inner, query_dim, true)?,
            heads: heads as i64,
            upcast,
        })
    }

    /// `x`: `(B, L, query_dim)`; `context`: `(B, S, context_dim)` or `None` for
    /// self-attention.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let ctx = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(ctx)?;
        let v = self.to_v.forward(ctx)?;
        let out = attention(&q, &k, &v, self.heads, false, self.upcast)?;
        self.to_out.forward(&out)
    }
}

/// `FeedForward` with GEGLU: `net.2(h · gelu(gate))`, `[h, gate] = net.0.proj(x)`.
#[derive(Debug)]
pub(crate) struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn new(p: &Path<'_>, dim: usize, mult: usize) -> Result<Self> {
        let inner = dim * mult;
        Ok(Self {
            proj: Linear::new(&(p / "net" / 0 / "proj"), dim, 2 * inner, true)?,
            out: Linear::new(&(p / "net" / 2), inner, dim, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let parts = self.proj.forward(x)?.f_chunk(2, -1)?;
        let h = parts[0].f_mul(&parts[1].f_gelu("none")?)?;
        self.out.forward(&h)
    }
}

/// `BasicTransformerBlock` (`norm_type = "layer_norm"`):
/// `x += attn1(norm1(x))`, `x += attn2(norm2(x), text)`, `x += ff(norm3(x))`.
/// With `only_cross_attention`, `attn1` attends to the text too.
#[derive(Debug)]
pub(crate) struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

/// What one spatial transformer looks like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerSettings {
    pub heads: usize,
    pub head_dim: usize,
    pub context_dim: usize,
    pub layers: usize,
    pub groups: usize,
    pub norm_eps: f64,
    pub use_linear_projection: bool,
    pub only_cross_attention: bool,
    pub upcast_attention: bool,
}

impl BasicTransformerBlock {
    pub fn new(p: &Path<'_>, dim: usize, s: &TransformerSettings) -> Result<Self> {
        let attn1_ctx = s.only_cross_attention.then_some(s.context_dim);
        Ok(Self {
            norm1: LayerNorm::new(&(p / "norm1"), dim, s.norm_eps)?,
            attn1: Attention::new(
                &(p / "attn1"),
                dim,
                attn1_ctx,
                s.heads,
                s.head_dim,
                false,
                s.upcast_attention,
            )?,
            norm2: LayerNorm::new(&(p / "norm2"), dim, s.norm_eps)?,
            attn2: Attention::new(
                &(p / "attn2"),
                dim,
                Some(s.context_dim),
                s.heads,
                s.head_dim,
                false,
                s.upcast_attention,
            )?,
            norm3: LayerNorm::new(&(p / "norm3"), dim, s.norm_eps)?,
            ff: FeedForward::new(&(p / "ff"), dim, 4)?,
            only_cross_attention: s.only_cross_attention,
        })
    }

    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let ctx1 = self.only_cross_attention.then_some(context);
        let x = self.attn1.forward(&self.norm1.forward(x)?, ctx1)?.f_add(x)?;
        let x = self.attn2.forward(&self.norm2.forward(&x)?, Some(context))?.f_add(&x)?;
        Ok(self.ff.forward(&self.norm3.forward(&x)?)?.f_add(&x)?)
    }
}

#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// `Transformer2DModel` on continuous inputs: GroupNorm (eps 1e-6), `proj_in` (1×1 conv in
/// SD1, linear on the flattened pixels with `use_linear_projection` in SD2), the
/// transformer blocks, `proj_out`, plus the residual.
#[derive(Debug)]
pub(crate) struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
    inner: i64,
}

impl Transformer2D {
    pub fn new(p: &Path<'_>, channels: usize, s: &TransformerSettings) -> Result<Self> {
        let inner = s.heads * s.head_dim;
        let (proj_in, proj_out) = if s.use_linear_projection {
            (
                Projection::Linear(Linear::new(&(p / "proj_in"), channels, inner, true)?),
                Projection::Linear(Linear::new(&(p / "proj_out"), inner, channels, true)?),
            )
        } else {
            (
                Projection::Conv(Conv2d::pointwise(&(p / "proj_in"), channels, inner)?),
                Projection::Conv(Conv2d::pointwise(&(p / "proj_out"), inner, channels)?),
            )
        };
        let blocks = (0..s.layers)
            .map(|i| BasicTransformerBlock::new(&(p / "transformer_blocks" / i), inner, s))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(&(p / "norm"), s.groups, channels, 1e-6)?,
            proj_in,
            blocks,
            proj_out,
            inner: inner as i64,
        })
    }

    /// `x`: `(B, C, H, W)`; `context`: `(B, S, context_dim)`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let to_tokens =
            |t: &Tensor, ch: i64| -> Result<Tensor> { Ok(t.f_permute([0, 2, 3, 1])?.f_reshape([b, h * w, ch])?) };
        let to_image = |t: &Tensor, ch: i64| -> Result<Tensor> {
            Ok(t.f_reshape([b, h, w, ch])?.f_permute([0, 3, 1, 2])?.f_contiguous()?)
        };
        let normed = self.norm.forward(x)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?, self.inner)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed, c)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(&tokens, self.inner)?)?,
            Projection::Linear(lin) => to_image(&lin.forward(&tokens)?, c)?,
        };
        Ok(out.f_add(x)?)
    }
}

/// The VAE's mid-block attention: GroupNorm, one head over all pixels (`to_q`, `to_k`,
/// `to_v`, `to_out.0`, all with bias), the residual added back; softmax in f32.
#[derive(Debug)]
pub(crate) struct SpatialSelfAttention {
    group_norm: GroupNorm,
    attn: Attention,
}

impl SpatialSelfAttention {
    pub fn new(p: &Path<'_>, channels: usize, groups: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::new(&(p / "group_norm"), groups, channels, eps)?,
            attn: Attention::new(p, channels, None, 1, channels, true, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.size4()?;
        let tokens = self
            .group_norm
            .forward(x)?
            .f_reshape([b, c, h * w])?
            .f_transpose(1, 2)?;
        let out = self.attn.forward(&tokens, None)?;
        let out = out.f_transpose(1, 2)?.f_reshape([b, c, h, w])?;
        Ok(out.f_add(x)?)
    }
}
