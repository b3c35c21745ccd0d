//! diffusers' `UNet2DConditionModel`: the text-conditioned noise predictor of Stable
//! Diffusion 1.x and 2.x, with variables named as in `unet/diffusion_pytorch_model.safetensors`.

use std::path::Path;

use ndarray::Array3;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::attention::TransformerSettings;
use super::config::activate;
use super::config::{activation, Activation, UNetConfig};
use super::embeddings::{timestep_embedding, TimestepEmbedding};
use super::resnet::ResnetSettings;
use super::unet_blocks::{DownBlock, MidBlockCrossAttn, UpBlock};
use crate::checkpoint::{LazyStateDict, StateDict};
use crate::models::crossing;
use crate::models::nn::{Conv2d, GroupNorm};
use crate::models::{
    check_device, check_kind, guard_panics, load_lazy_into, load_state_dict_into, LoadOptions, TchModule,
};
use crate::{Condition, DataRange, DenoiserSpec, Error, Parameterization, Result, TimeInput};

/// The Stable Diffusion UNet on tch tensors.
///
/// Build it from a [`UNetConfig`] with [`UNet2DConditionModel::new`] (zero weights) and fill
/// it with [`load_state_dict`](UNet2DConditionModel::load_state_dict), or use
/// [`StableDiffusion::load`](super::StableDiffusion::load) for a whole folder. As a
/// [`TchModule`] it takes latents `x`, float timesteps `t` and the text embeddings as
/// [`Condition::Text`] `(batch, tokens, cross_attention_dim)`.
pub struct UNet2DConditionModel {
    config: UNetConfig,
    parameterization: Parameterization,
    vs: VarStore,
    kind: Kind,
    act: Activation,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: MidBlockCrossAttn,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl std::fmt::Debug for UNet2DConditionModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UNet2DConditionModel")
            .field("block_out_channels", &self.config.block_out_channels)
            .field("parameterization", &self.parameterization)
            .field("device", &self.vs.device())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl UNet2DConditionModel {
    /// Declare the network for `config` with zero weights (GroupNorm/LayerNorm scales one) on
    /// `device` in compute `kind` (f32, f16 or bf16). `parameterization` is what the weights
    /// predict (from the scheduler config's `prediction_type`).
    pub fn new(config: UNetConfig, parameterization: Parameterization, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        check_kind(kind)?;
        check_device(device)?;
        guard_panics(|| {
            let mut vs = VarStore::new(device);
            vs.set_kind(kind);
            let root = vs.root();
            let c = &config;
            let act = activation(&c.act_fn)?;
            let groups = c.norm_num_groups.unwrap_or(32);
            let ch = &c.block_out_channels;
            let n = ch.len();
            let temb = c.time_embed_dim();
            let res = ResnetSettings {
                groups,
                eps: c.norm_eps,
                act,
                temb_channels: Some(temb),
                output_scale_factor: c.resnet_out_scale_factor,
            };
            let transformer = |plan: &super::config::BlockPlan, channels: usize| TransformerSettings {
                heads: plan.heads,
                head_dim: channels / plan.heads,
                context_dim: plan.cross_attention_dim,
                layers: plan.transformer_layers,
                groups,
                norm_eps: c.norm_eps,
                use_linear_projection: c.use_linear_projection,
                only_cross_attention: plan.only_cross_attention,
                upcast_attention: c.upcast_attention,
            };

            let conv_in = Conv2d::same(&(&root / "conv_in"), c.in_channels, ch[0], c.conv_in_kernel)?;
            let time_embedding = TimestepEmbedding::new(&(&root / "time_embedding"), ch[0], temb, act)?;

            let down_plans = c.down_plans()?;
            let mut down_blocks = Vec::with_capacity(n);
            let mut cin = ch[0];
            for (i, plan) in down_plans.iter().enumerate() {
                let t = plan.cross_attention.then(|| transformer(plan, ch[i]));
                let down = (i + 1 < n).then_some(c.downsample_padding);
                down_blocks.push(DownBlock::new(
                    &(&root / "down_blocks" / i),
                    cin,
                    ch[i],
                    plan.layers,
                    &res,
                    t.as_ref(),
                    down,
                )?);
                cin = ch[i];
            }

            let mid_plan = c.mid_plan()?;
            let mid_res = ResnetSettings {
                output_scale_factor: c.mid_block_scale_factor,
                ..res
            };
            let mid_block = MidBlockCrossAttn::new(
                &(&root / "mid_block"),
                ch[n - 1],
                1,
                &mid_res,
                &transformer(&mid_plan, ch[n - 1]),
            )?;

            let up_plans = c.up_plans()?;
            let mut up_blocks = Vec::with_capacity(n);
            let mut prev = ch[n - 1];
            for (i, plan) in up_plans.iter().enumerate() {
                let out = ch[n - 1 - i];
                let skip_in = ch[(n - 1 - i).saturating_sub(1)];
                let mut skips = vec![out; plan.layers - 1];
                skips.push(skip_in);
                let t = plan.cross_attention.then(|| transformer(plan, out));
                up_blocks.push(UpBlock::new(
                    &(&root / "up_blocks" / i),
                    prev,
                    out,
                    &skips,
                    &res,
                    t.as_ref(),
                    i + 1 < n,
                )?);
                prev = out;
            }

            let conv_norm_out = GroupNorm::new(&(&root / "conv_norm_out"), groups, ch[0], c.norm_eps)?;
            let conv_out = Conv2d::same(&(&root / "conv_out"), ch[0], c.out_channels, c.conv_out_kernel)?;
            vs.freeze();
            Ok(Self {
                config: config.clone(),
                parameterization,
                vs,
                kind,
                act,
                conv_in,
                time_embedding,
                down_blocks,
                mid_block,
                up_blocks,
                conv_norm_out,
                conv_out,
            })
        })
    }

    /// Copy the weights of `sd` (diffusers' key names) into the network; every key must
    /// match (the error names missing, unexpected and misshaped keys). `source` names the
    /// origin in errors. The weights are converted to the compute kind.
    pub fn load_state_dict(&mut self, sd: &StateDict, source: &Path) -> Result<()> {
        load_state_dict_into(&mut self.vs, sd, source, &LoadOptions::default())
    }

    /// [`load_state_dict`](Self::load_state_dict) from a file read one tensor at a time
    /// ([`load_lazy_into`]): the load holds the network plus one tensor. On error the
    /// network may be partly loaded: drop it.
    pub fn load_weights(&mut self, mut weights: LazyStateDict) -> Result<()> {
        load_lazy_into(&mut self.vs, &mut weights, &LoadOptions::default())
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// The variables, named as in the checkpoint.
    pub fn var_store(&self) -> &VarStore {
        &self.vs
    }

    /// Mutable access to the variables (e.g. to fill them with random weights for a benchmark).
    pub fn var_store_mut(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    /// Fill the weights with reproducible random values (host ChaCha8 from `seed`; PyTorch's
    /// default uniform `±1/√fan_in`, norms 1 and 0): for benchmarks and memory measurements
    /// without a checkpoint.
    pub fn randomize(&mut self, seed: u64) -> Result<()> {
        guard_panics(|| crate::models::nn::fill_random(&self.vs, seed))
    }

    /// Number of parameters.
    pub fn num_parameters(&self) -> usize {
        self.vs.variables().values().map(|t| t.numel()).sum()
    }

    /// The forward pass: latents `x` `(B, C, H, W)`, timesteps `t` `(B,)` (float steps),
    /// text embeddings `context` `(B, S, D)`, all on the model's device; `x` and `context` in
    /// its kind. Any `H` and `W` work: odd sizes are handled as diffusers does.
    pub fn forward(&self, x: &Tensor, t: &Tensor, context: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let x = if c.center_input_sample {
            x.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?
        } else {
            x.shallow_clone()
        };
        let t_emb =
            timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)?.f_to_kind(self.kind)?;
        let temb = self.time_embedding.forward(&t_emb)?;

        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.shallow_clone()];
        for block in &self.down_blocks {
            h = block.forward(&h, &temb, context, &mut skips)?;
        }
        h = self.mid_block.forward(&h, &temb, context)?;
        for block in &self.up_blocks {
            h = block.forward(&h, &temb, context, &mut skips)?;
        }
        let h = activate(&self.conv_norm_out.forward(&h)?, self.act)?;
        self.conv_out.forward(&h)
    }

    fn context_tensor(&self, condition: &Condition, n: i64) -> Result<Tensor> {
        let text: &Array3<f32> = match condition {
            Condition::Text(a) => a,
            Condition::None => {
                return Err(Error::InvalidInput(
                    "the Stable Diffusion UNet needs text embeddings (Condition::Text); for an \
                     unconditional prediction encode the empty prompt \"\""
                        .into(),
                ))
            }
            other => {
                return Err(Error::Incompatible(format!(
                    "the Stable Diffusion UNet is conditioned on text embeddings, got {other:?}"
                )))
            }
        };
        let (b, s, d) = text.dim();
        let want = self.config.context_dim();
        if b as i64 != n || d != want {
            return Err(Error::Shape(format!(
                "text embeddings of shape ({b}, {s}, {d}) for a batch of {n}; the UNet wants \
                 width {want} (cross_attention_dim)"
            )));
        }
        if let Some(v) = text.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!("text embeddings contain {v}")));
        }
        crossing::array_to_tensor(text.view(), self.vs.device(), self.kind)
    }
}

impl TchModule for UNet2DConditionModel {
    fn spec(&self) -> DenoiserSpec {
        DenoiserSpec::new(
            self.parameterization,
            TimeInput::ContinuousStep,
            DataRange::MinusOneToOne,
        )
        .with_channels(self.config.in_channels)
    }

    fn device(&self) -> Device {
        self.vs.device()
    }

    fn kind(&self) -> Kind {
        self.kind
    }

    fn forward_t(&self, x: &Tensor, t: &Tensor, condition: &Condition) -> Result<Tensor> {
        let (n, _, _, _) = x.size4()?;
        let context = self.context_tensor(condition, n)?;
        self.forward(x, t, &context)
    }
}
