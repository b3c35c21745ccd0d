//! ResNet blocks and resampling layers shared by the UNet and the VAE (diffusers'
//! `ResnetBlock2D`, `Downsample2D`, `Upsample2D`).

use tch::nn::Path;
use tch::{Kind, Tensor};

use super::config::activate;
use super::config::Activation;
use crate::models::nn::{Conv2d, GroupNorm, Linear};
use crate::Result;

/// Settings shared by the ResNet blocks of one model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetSettings {
    pub groups: usize,
    pub eps: f64,
    pub act: Activation,
    /// Width of the time embedding; `None` for the VAE (no time input).
    pub temb_channels: Option<usize>,
    /// The residual sum is divided by this.
    pub output_scale_factor: f64,
}

/// `ResnetBlock2D` (`resnet_time_scale_shift = "default"`):
/// `h = conv1(act(norm1(x))) + time_emb_proj(act(temb))`,
/// `out = (shortcut(x) + conv2(act(norm2(h)))) / output_scale_factor`.
#[derive(Debug)]
pub(crate) struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    act: Activation,
    output_scale_factor: f64,
}

impl ResnetBlock2D {
    pub fn new(p: &Path<'_>, cin: usize, cout: usize, s: &ResnetSettings) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(&(p / "norm1"), s.groups, cin, s.eps)?,
            conv1: Conv2d::same(&(p / "conv1"), cin, cout, 3)?,
            time_emb_proj: match s.temb_channels {
                Some(t) => Some(Linear::new(&(p / "time_emb_proj"), t, cout, true)?),
                None => None,
            },
            norm2: GroupNorm::new(&(p / "norm2"), s.groups, cout, s.eps)?,
            conv2: Conv2d::same(&(p / "conv2"), cout, cout, 3)?,
            conv_shortcut: if cin != cout {
                Some(Conv2d::pointwise(&(p / "conv_shortcut"), cin, cout)?)
            } else {
                None
            },
            act: s.act,
            output_scale_factor: s.output_scale_factor,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let h = activate(&self.norm1.forward(x)?, self.act)?;
        let mut h = self.conv1.forward(&h)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj
                .forward(&activate(t, self.act)?)?
                .f_unsqueeze(-1)?
                .f_unsqueeze(-1)?;
            h = h.f_add(&t)?;
        }
        let h = activate(&self.norm2.forward(&h)?, self.act)?;
        let h = self.conv2.forward(&h)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.shallow_clone(),
        };
        let out = shortcut.f_add(&h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            Ok(out.f_div_scalar(self.output_scale_factor)?)
        }
    }
}

/// `Downsample2D` with a convolution: stride 2, `padding` 1 (UNet) or 0 after padding the
/// right and bottom edges by one (VAE encoder, `downsample_padding = 0`).
#[derive(Debug)]
pub(crate) struct Downsample2D {
    conv: Conv2d,
    asymmetric: bool,
}

impl Downsample2D {
    pub fn new(p: &Path<'_>, c: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&(p / "conv"), c, c, 3, 2, padding as i64)?,
            asymmetric: padding == 0,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric {
            self.conv.forward(&x.f_constant_pad_nd([0, 1, 0, 1])?)
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D`: nearest-neighbour upsampling to `size` (twice the input by default), then a
/// 3×3 convolution. bf16 is upsampled in f32, as diffusers does.
#[derive(Debug)]
pub(crate) struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(p: &Path<'_>, c: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::same(&(p / "conv"), c, c, 3)?,
        })
    }

    pub fn forward(&self, x: &Tensor, size: Option<(i64, i64)>) -> Result<Tensor> {
        let (_, _, h, w) = x.size4()?;
        let (oh, ow) = size.unwrap_or((2 * h, 2 * w));
        let kind = x.f_kind()?;
        let up = if kind == Kind::BFloat16 {
            x.f_to_kind(Kind::Float)?
                .f_upsample_nearest2d([oh, ow], None, None)?
                .f_to_kind(kind)?
        } else {
            x.f_upsample_nearest2d([oh, ow], None, None)?
        };
        self.conv.forward(&up)
    }
}
