//! The UNet's and the VAE's blocks: `CrossAttnDownBlock2D`/`DownBlock2D`,
//! `CrossAttnUpBlock2D`/`UpBlock2D`, `UNetMidBlock2DCrossAttn`, and the VAE's
//! `DownEncoderBlock2D`, `UpDecoderBlock2D` and `UNetMidBlock2D`.

use tch::nn::Path;
use tch::Tensor;

use super::attention::{SpatialSelfAttention, Transformer2D, TransformerSettings};
use super::resnet::{Downsample2D, ResnetBlock2D, ResnetSettings, Upsample2D};
use crate::{Error, Result};

/// A down block: `layers` × (ResNet, optional transformer), then an optional stride-2
/// downsampler. Every intermediate output is kept for the skip connections.
#[derive(Debug)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    /// `transformer`: `Some` for `CrossAttnDownBlock2D`; `downsample`: `Some(padding)`.
    pub fn new(
        p: &Path<'_>,
        cin: usize,
        cout: usize,
        layers: usize,
        res: &ResnetSettings,
        transformer: Option<&TransformerSettings>,
        downsample: Option<usize>,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let c = if i == 0 { cin } else { cout };
            resnets.push(ResnetBlock2D::new(&(p / "resnets" / i), c, cout, res)?);
            if let Some(t) = transformer {
                attentions.push(Transformer2D::new(&(p / "attentions" / i), cout, t)?);
            }
        }
        let downsampler = match downsample {
            Some(pad) => Some(Downsample2D::new(&(p / "downsamplers" / 0), cout, pad)?),
            None => None,
        };
        Ok(Self {
            resnets,
            attentions,
            downsampler,
        })
    }

    /// Returns the output; pushes every state a skip connection takes onto `skips`.
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, Some(temb))?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h, context)?;
            }
            skips.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.forward(&h)?;
            skips.push(h.shallow_clone());
        }
        Ok(h)
    }
}

/// An up block: `layers` × (concatenate a skip, ResNet, optional transformer), then an
/// optional upsampler to the size of the next skip.
#[derive(Debug)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2D>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// `skip_channels[i]`: channels of the skip consumed by ResNet `i`; `prev`: channels of
    /// the incoming state.
    pub fn new(
        p: &Path<'_>,
        prev: usize,
        cout: usize,
        skip_channels: &[usize],
        res: &ResnetSettings,
        transformer: Option<&TransformerSettings>,
        upsample: bool,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(skip_channels.len());
        let mut attentions = Vec::new();
        for (i, &skip) in skip_channels.iter().enumerate() {
            let c = if i == 0 { prev } else { cout };
            resnets.push(ResnetBlock2D::new(&(p / "resnets" / i), c + skip, cout, res)?);
            if let Some(t) = transformer {
                attentions.push(Transformer2D::new(&(p / "attentions" / i), cout, t)?);
            }
        }
        let upsampler = if upsample {
            Some(Upsample2D::new(&(p / "upsamplers" / 0), cout)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions,
            upsampler,
        })
    }

    /// Pops one skip per ResNet from `skips`; upsamples to the spatial size of the skip left
    /// on top (diffusers' `upsample_size`, which equals ×2 whenever sizes are even).
    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor, skips: &mut Vec<Tensor>) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for (i, r) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Model("UNet: ran out of skip connections".into()))?;
            h = Tensor::f_cat(&[&h, &skip], 1)?;
            h = r.forward(&h, Some(temb))?;
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h, context)?;
            }
        }
        if let Some(u) = &self.upsampler {
            let size = match skips.last() {
                Some(s) => {
                    let (_, _, sh, sw) = s.size4()?;
                    Some((sh, sw))
                }
                None => None,
            };
            h = u.forward(&h, size)?;
        }
        Ok(h)
    }
}

/// `UNetMidBlock2DCrossAttn`: ResNet, then `layers` × (transformer, ResNet).
#[derive(Debug)]
pub(crate) struct MidBlockCrossAttn {
    first: ResnetBlock2D,
    attentions: Vec<Transformer2D>,
    resnets: Vec<ResnetBlock2D>,
}

impl MidBlockCrossAttn {
    pub fn new(p: &Path<'_>, c: usize, layers: usize, res: &ResnetSettings, t: &TransformerSettings) -> Result<Self> {
        let first = ResnetBlock2D::new(&(p / "resnets" / 0), c, c, res)?;
        let mut attentions = Vec::with_capacity(layers);
        let mut resnets = Vec::with_capacity(layers);
        for i in 0..layers {
            attentions.push(Transformer2D::new(&(p / "attentions" / i), c, t)?);
            resnets.push(ResnetBlock2D::new(&(p / "resnets" / (i + 1)), c, c, res)?);
        }
        Ok(Self {
            first,
            attentions,
            resnets,
        })
    }

    pub fn forward(&self, x: &Tensor, temb: &Tensor, context: &Tensor) -> Result<Tensor> {
        let mut h = self.first.forward(x, Some(temb))?;
        for (a, r) in self.attentions.iter().zip(&self.resnets) {
            h = a.forward(&h, context)?;
            h = r.forward(&h, Some(temb))?;
        }
        Ok(h)
    }
}

/// The VAE's `UNetMidBlock2D`: ResNet, optional single-head attention, ResNet (no time).
#[derive(Debug)]
pub(crate) struct VaeMidBlock {
    first: ResnetBlock2D,
    attention: Option<SpatialSelfAttention>,
    second: ResnetBlock2D,
}

impl VaeMidBlock {
    pub fn new(p: &Path<'_>, c: usize, res: &ResnetSettings, add_attention: bool) -> Result<Self> {
        Ok(Self {
            first: ResnetBlock2D::new(&(p / "resnets" / 0), c, c, res)?,
            attention: if add_attention {
                Some(SpatialSelfAttention::new(
                    &(p / "attentions" / 0),
                    c,
                    res.groups,
                    res.eps,
                )?)
            } else {
                None
            },
            second: ResnetBlock2D::new(&(p / "resnets" / 1), c, c, res)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.first.forward(x, None)?;
        if let Some(a) = &self.attention {
            h = a.forward(&h)?;
        }
        self.second.forward(&h, None)
    }
}

/// The VAE's `DownEncoderBlock2D` / `UpDecoderBlock2D`: ResNets, then an optional
/// down- (padding 0) or upsampler.
#[derive(Debug)]
pub(crate) struct VaeBlock {
    resnets: Vec<ResnetBlock2D>,
    down: Option<Downsample2D>,
    up: Option<Upsample2D>,
}

impl VaeBlock {
    pub fn encoder(
        p: &Path<'_>,
        cin: usize,
        cout: usize,
        layers: usize,
        res: &ResnetSettings,
        downsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| ResnetBlock2D::new(&(p / "resnets" / i), if i == 0 { cin } else { cout }, cout, res))
            .collect::<Result<Vec<_>>>()?;
        let down = if downsample {
            Some(Downsample2D::new(&(p / "downsamplers" / 0), cout, 0)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            down,
            up: None,
        })
    }

    pub fn decoder(
        p: &Path<'_>,
        cin: usize,
        cout: usize,
        layers: usize,
        res: &ResnetSettings,
        upsample: bool,
    ) -> Result<Self> {
        let resnets = (0..layers)
            .map(|i| ResnetBlock2D::new(&(p / "resnets" / i), if i == 0 { cin } else { cout }, cout, res))
            .collect::<Result<Vec<_>>>()?;
        let up = if upsample {
            Some(Upsample2D::new(&(p / "upsamplers" / 0), cout)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            down: None,
            up,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.shallow_clone();
        for r in &self.resnets {
            h = r.forward(&h, None)?;
        }
        if let Some(d) = &self.down {
            h = d.forward(&h)?;
        }
        if let Some(u) = &self.up {
            h = u.forward(&h, None)?;
        }
        Ok(h)
    }
}
