//! The DDPM UNet of Ho et al. (2020), as converted to PyTorch by pesser/pytorch_diffusion
//! and used unchanged by FastDPM (`model.py`), and as packaged by diffusers
//! (`UNet2DModel`, the `google/ddpm-*` checkpoints).
//!
//! The network predicts `ε` from `x_t ∈ [-1, 1]` and a FLOAT training step `t` (FastDPM's
//! VAR grids call it at non-integer `t`):
//!
//! - time embedding: DDPM's sinusoid of width `ch`, frequencies
//!   `exp(−ln(10⁴)·i/(ch/2 − 1))`, `[sin, cos]`, then `Linear(ch, 4ch) → swish →
//!   Linear(4ch, 4ch)` (`temb.dense.{0,1}`);
//! - `conv_in`, then per level `l` (resolution `R/2^l`, width `ch·ch_mult[l]`)
//!   `num_res_blocks` ResNet blocks, each followed by self-attention when the level's
//!   resolution is in `attn_resolutions`, then a stride-2 downsample (pad `(0,1,0,1)`,
//!   3×3 conv) except at the last level;
//! - middle: ResNet block, attention, ResNet block;
//! - up path mirrored with `num_res_blocks + 1` blocks per level on the skip connections,
//!   nearest ×2 upsampling + 3×3 conv;
//! - `norm_out → swish → conv_out`.
//!
//! ResNet block: `GN → swish → conv3 (+ temb_proj(swish(temb))) → GN → swish → dropout →
//! conv3`, with a 1×1 `nin_shortcut` when the width changes. Attention: GroupNorm, 1×1 conv
//! `q, k, v`, softmax of `qᵀk·C^−½` over the keys, 1×1 `proj_out`, residual. GroupNorm has
//! 32 groups and `eps = 1e-6`; dropout is the identity here (inference).
//!
//! `DdpmUNet`'s `VarStore` paths are the original key names (`temb.dense.0.weight`,
//! `down.1.attn.0.q.weight`, `mid.block_1.norm1.bias`, `up.0.upsample.conv.weight`,
//! `norm_out.weight`, ...): loading pesser's or DDIM's checkpoints is a name-for-name copy.
//! diffusers' names are mapped onto them by [`diffusers_to_original`].

pub mod config;
#[cfg(feature = "tch")]
mod loader;
pub mod naming;
#[cfg(feature = "tch")]
mod network;

#[cfg(feature = "tch")]
pub(crate) use loader::load_pipeline;

pub use config::{DdpmConfig, DownsamplePadding};
pub use naming::{diffusers_to_original, Naming};
#[cfg(feature = "tch")]
pub use network::DdpmUNet;
