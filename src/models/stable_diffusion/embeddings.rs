//! Timestep embeddings of the UNet: the sinusoid (`Timesteps`) and its MLP
//! (`TimestepEmbedding`), as in diffusers' `embeddings.py`.

use tch::nn::Path;
use tch::{Kind, Tensor};

use super::config::activate;
use super::config::Activation;
use crate::models::nn::Linear;
use crate::Result;

/// diffusers' `get_timestep_embedding`, computed in f32 like the original.
///
/// For `half = dim / 2` frequencies `f_i = exp(−ln(10⁴)·i/(half − freq_shift))`, the
/// embedding of `t` is `[sin(t·f), cos(t·f)]`, or `[cos, sin]` with `flip_sin_to_cos`
/// (Stable Diffusion), zero-padded to `dim` when `dim` is odd. `t` may be fractional.
pub fn timestep_embedding(t: &Tensor, dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Result<Tensor> {
    let device = t.device();
    let half = (dim / 2) as i64;
    let exponent = Tensor::f_arange(half, (Kind::Float, device))?
        .f_mul_scalar(-(10000f64.ln()))?
        .f_div_scalar(half as f64 - freq_shift)?;
    let freqs = exponent.f_exp()?;
    let args = t
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?
        .f_mul(&freqs.f_unsqueeze(0)?)?;
    let (sin, cos) = (args.f_sin()?, args.f_cos()?);
    let mut emb = if flip_sin_to_cos {
        Tensor::f_cat(&[cos, sin], 1)?
    } else {
        Tensor::f_cat(&[sin, cos], 1)?
    };
    if dim % 2 == 1 {
        emb = emb.f_constant_pad_nd([0, 1])?;
    }
    Ok(emb)
}

/// `TimestepEmbedding`: `linear_2(act(linear_1(sinusoid)))`.
#[derive(Debug)]
pub(crate) struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
}

impl TimestepEmbedding {
    pub fn new(p: &Path<'_>, input_dim: usize, embed_dim: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(&(p / "linear_1"), input_dim, embed_dim, true)?,
            linear_2: Linear::new(&(p / "linear_2"), embed_dim, embed_dim, true)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = activate(&self.linear_1.forward(x)?, self.act)?;
        self.linear_2.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_layout() {
        let t = Tensor::from_slice(&[0.0f32, 10.0]);
        let e = timestep_embedding(&t, 6, true, 0.0).unwrap();
        assert_eq!(e.size(), vec![2, 6]);
        let v: Vec<f32> = Vec::try_from(e.flatten(0, -1)).unwrap();
        // t = 0: cos = 1, sin = 0 (flipped: cos first).
        assert_eq!(&v[..6], &[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
        // t = 10, first frequency 1: cos(10), sin(10).
        assert!((v[6] - 10f32.cos()).abs() < 1e-6 && (v[9] - 10f32.sin()).abs() < 1e-6);
        let odd = timestep_embedding(&t, 5, false, 1.0).unwrap();
        assert_eq!(odd.size(), vec![2, 5]);
    }
}
