//! diffusers' `AutoencoderKL`: the VAE that maps images to Stable Diffusion's latent space
//! and back, with its diagonal Gaussian posterior.

use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::config::activate;
use super::config::{activation, Activation, VaeConfig};
use super::resnet::ResnetSettings;
use super::unet_blocks::{VaeBlock, VaeMidBlock};
use crate::checkpoint::{LazyStateDict, StateDict};
use crate::models::nn::{Conv2d, GroupNorm};
use crate::models::{check_device, check_kind, guard_panics, load_lazy_into, load_state_dict_into, LoadOptions};
use crate::Result;

#[derive(Debug)]
struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<VaeBlock>,
    mid_block: VaeMidBlock,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

#[derive(Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid_block: VaeMidBlock,
    up_blocks: Vec<VaeBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
}

/// The Stable Diffusion VAE on tch tensors.
///
/// Variables are named as in diffusers' `vae/diffusion_pytorch_model.safetensors`
/// (`encoder.down_blocks.0.resnets.0.conv1.weight`, ...). Checkpoints with the legacy
/// attention names (`query`, `key`, `value`, `proj_attn`) are renamed on load, see
/// [`rename_legacy_attention`].
pub struct AutoencoderKL {
    config: VaeConfig,
    vs: VarStore,
    kind: Kind,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
}

impl std::fmt::Debug for AutoencoderKL {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoencoderKL")
            .field("block_out_channels", &self.config.block_out_channels)
            .field("device", &self.vs.device())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl AutoencoderKL {
    /// Declare the VAE for `config` with zero weights on `device` in `kind`.
    pub fn new(config: VaeConfig, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        check_kind(kind)?;
        check_device(device)?;
        guard_panics(|| {
            let mut vs = VarStore::new(device);
            vs.set_kind(kind);
            let root = vs.root();
            let c = &config;
            let act = activation(&c.act_fn)?;
            let ch = &c.block_out_channels;
            let n = ch.len();
            let res = ResnetSettings {
                groups: c.norm_num_groups,
                eps: 1e-6,
                act,
                temb_channels: None,
                output_scale_factor: 1.0,
            };

            let e = &root / "encoder";
            let mut down_blocks = Vec::with_capacity(n);
            let mut cin = ch[0];
            for (i, &cout) in ch.iter().enumerate() {
                down_blocks.push(VaeBlock::encoder(
                    &(&e / "down_blocks" / i),
                    cin,
                    cout,
                    c.layers_per_block,
                    &res,
                    i + 1 < n,
                )?);
                cin = cout;
            }
            let encoder = Encoder {
                conv_in: Conv2d::same(&(&e / "conv_in"), c.in_channels, ch[0], 3)?,
                down_blocks,
                mid_block: VaeMidBlock::new(&(&e / "mid_block"), ch[n - 1], &res, c.mid_block_add_attention)?,
                conv_norm_out: GroupNorm::new(&(&e / "conv_norm_out"), c.norm_num_groups, ch[n - 1], 1e-6)?,
                conv_out: Conv2d::same(&(&e / "conv_out"), ch[n - 1], 2 * c.latent_channels, 3)?,
                act,
            };

            let d = &root / "decoder";
            let mut up_blocks = Vec::with_capacity(n);
            let mut prev = ch[n - 1];
            for i in 0..n {
                let cout = ch[n - 1 - i];
                up_blocks.push(VaeBlock::decoder(
                    &(&d / "up_blocks" / i),
                    prev,
                    cout,
                    c.layers_per_block + 1,
                    &res,
                    i + 1 < n,
                )?);
                prev = cout;
            }
            let decoder = Decoder {
                conv_in: Conv2d::same(&(&d / "conv_in"), c.latent_channels, ch[n - 1], 3)?,
                mid_block: VaeMidBlock::new(&(&d / "mid_block"), ch[n - 1], &res, c.mid_block_add_attention)?,
                up_blocks,
                conv_norm_out: GroupNorm::new(&(&d / "conv_norm_out"), c.norm_num_groups, ch[0], 1e-6)?,
                conv_out: Conv2d::same(&(&d / "conv_out"), ch[0], c.out_channels, 3)?,
                act,
            };
            let lat = c.latent_channels;
            let quant_conv = if c.use_quant_conv {
                Some(Conv2d::pointwise(&(&root / "quant_conv"), 2 * lat, 2 * lat)?)
            } else {
                None
            };
            let post_quant_conv = if c.use_post_quant_conv {
                Some(Conv2d::pointwise(&(&root / "post_quant_conv"), lat, lat)?)
            } else {
                None
            };
            vs.freeze();
            Ok(Self {
                config: config.clone(),
                vs,
                kind,
                encoder,
                decoder,
                quant_conv,
                post_quant_conv,
            })
        })
    }

    /// Copy the weights of `sd` into the VAE (legacy attention names are accepted).
    pub fn load_state_dict(&mut self, sd: StateDict, source: &Path) -> Result<()> {
        let sd = rename_legacy_attention(sd)?;
        load_state_dict_into(&mut self.vs, &sd, source, &LoadOptions::default())
    }

    /// [`load_state_dict`](Self::load_state_dict) from a file read one tensor at a time
    /// ([`load_lazy_into`]). On error the VAE may be partly loaded: drop it.
    pub fn load_weights(&mut self, mut weights: LazyStateDict) -> Result<()> {
        weights.rename(|key, shape| Some(current_attention_name(key, shape)))?;
        load_lazy_into(&mut self.vs, &mut weights, &LoadOptions::default())
    }

    /// The configuration.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The variables.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// The device.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The compute kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The posterior's `(mean, std)` for images `x` `(B, C, H, W)` in `[-1, 1]` (on the
    /// VAE's device, in its kind): `std = exp(½·clamp(logvar, −30, 20))`.
    pub fn encode(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let e = &self.encoder;
        let mut h = e.conv_in.forward(x)?;
        for b in &e.down_blocks {
            h = b.forward(&h)?;
        }
        h = e.mid_block.forward(&h)?;
        h = activate(&e.conv_norm_out.forward(&h)?, e.act)?;
        h = e.conv_out.forward(&h)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let parts = h.f_chunk(2, 1)?;
        let mean = parts[0].shallow_clone();
        let std = parts[1].f_clamp(-30.0, 20.0)?.f_mul_scalar(0.5)?.f_exp()?;
        Ok((mean, std))
    }

    /// Decode (unscaled) latents `z` `(B, latent_channels, h, w)` into images, nominally in
    /// `[-1, 1]` (not clamped).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        let d = &self.decoder;
        let z = match &self.post_quant_conv {
            Some(q) => q.forward(z)?,
            None => z.shallow_clone(),
        };
        let mut h = d.conv_in.forward(&z)?;
        h = d.mid_block.forward(&h)?;
        for b in &d.up_blocks {
            h = b.forward(&h)?;
        }
        h = activate(&d.conv_norm_out.forward(&h)?, d.act)?;
        d.conv_out.forward(&h)
    }
}

/// Rename the VAE attention weights of older diffusers checkpoints to the current names:
/// `query` → `to_q`, `key` → `to_k`, `value` → `to_v`, `proj_attn` → `to_out.0`, and squeeze
/// 1×1-convolution weights `[C, C, 1, 1]` of those layers (from converted LDM checkpoints)
/// to linear weights `[C, C]`. Keys already in the current naming pass unchanged.
pub fn rename_legacy_attention(sd: StateDict) -> Result<StateDict> {
    let mut out = StateDict::new();
    for (key, mut t) in sd.into_entries() {
        let name = current_attention_name(&key, &mut t.shape);
        if out.insert(name.clone(), t).is_some() {
            return Err(crate::Error::checkpoint(
                "<vae>",
                format!("both the legacy and the current name of `{name}` are present"),
            ));
        }
    }
    Ok(out)
}

/// The current name of a VAE tensor saved as `key`, squeezing `shape` where a legacy 1×1
/// convolution weight is now a linear weight (see [`rename_legacy_attention`]).
fn current_attention_name(key: &str, shape: &mut Vec<usize>) -> String {
    const RENAMES: [(&str, &str); 4] = [
        (".query.", ".to_q."),
        (".key.", ".to_k."),
        (".value.", ".to_v."),
        (".proj_attn.", ".to_out.0."),
    ];
    let mut name = key.to_string();
    if key.contains(".attentions.") {
        for (old, new) in RENAMES {
            if name.contains(old) {
                name = name.replace(old, new);
            }
        }
        let is_proj = [".to_q.", ".to_k.", ".to_v.", ".to_out.0."]
            .iter()
            .any(|p| name.contains(p));
        if is_proj && name.ends_with(".weight") && shape.len() == 4 && shape[2] == 1 && shape[3] == 1 {
            shape.truncate(2);
        }
    }
    name
}
