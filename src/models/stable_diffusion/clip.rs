//! transformers' `CLIPTextModel`: Stable Diffusion's text encoder.
//!
//! Token and position embeddings, `num_hidden_layers` pre-norm transformer layers with causal
//! self-attention and a `quick_gelu` (SD1) or `gelu` (SD2) MLP, then `final_layer_norm`.
//! Stable Diffusion conditions on the whole sequence of hidden states (`last_hidden_state`,
//! after the final norm), not on the pooled output.
//!
//! SD2's folder already stores the 23-layer model (OpenCLIP's penultimate layer), so its
//! `last_hidden_state` is what SD2 was trained with; `clip_skip` is only for models trained
//! on an earlier layer (diffusers' `clip_skip`: the output of layer `num_hidden_layers −
//! clip_skip`, then `final_layer_norm`).

use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::config::ClipTextConfig;
use crate::checkpoint::{LazyStateDict, StateDict};
use crate::models::nn::{attention, Embedding, LayerNorm, Linear};
use crate::models::{check_device, check_kind, guard_panics, load_lazy_into, load_state_dict_into, LoadOptions};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy)]
enum ClipActivation {
    QuickGelu,
    Gelu,
    GeluTanh,
}

#[derive(Debug)]
struct EncoderLayer {
    layer_norm1: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// The CLIP text transformer, variables named as in transformers' checkpoints
/// (`text_model.encoder.layers.0.self_attn.q_proj.weight`, ...).
pub struct ClipTextModel {
    config: ClipTextConfig,
    vs: VarStore,
    kind: Kind,
    act: ClipActivation,
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
}

impl std::fmt::Debug for ClipTextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTextModel")
            .field("hidden_size", &self.config.hidden_size)
            .field("layers", &self.config.num_hidden_layers)
            .field("device", &self.vs.device())
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ClipTextModel {
    /// Declare the text model for `config` with zero weights on `device` in `kind`.
    pub fn new(config: ClipTextConfig, device: Device, kind: Kind) -> Result<Self> {
        config.validate()?;
        check_kind(kind)?;
        check_device(device)?;
        let act = match config.hidden_act.as_str() {
            "quick_gelu" => ClipActivation::QuickGelu,
            "gelu" => ClipActivation::Gelu,
            _ => ClipActivation::GeluTanh,
        };
        guard_panics(|| {
            let mut vs = VarStore::new(device);
            vs.set_kind(kind);
            let root = vs.root() / "text_model";
            let c = &config;
            let d = c.hidden_size;
            let emb = &root / "embeddings";
            let layers = (0..c.num_hidden_layers)
                .map(|i| {
                    let p = &root / "encoder" / "layers" / i;
                    let a = &p / "self_attn";
                    Ok(EncoderLayer {
                        layer_norm1: LayerNorm::new(&(&p / "layer_norm1"), d, c.layer_norm_eps)?,
                        q_proj: Linear::new(&(&a / "q_proj"), d, d, true)?,
                        k_proj: Linear::new(&(&a / "k_proj"), d, d, true)?,
                        v_proj: Linear::new(&(&a / "v_proj"), d, d, true)?,
                        out_proj: Linear::new(&(&a / "out_proj"), d, d, true)?,
                        layer_norm2: LayerNorm::new(&(&p / "layer_norm2"), d, c.layer_norm_eps)?,
                        fc1: Linear::new(&(&p / "mlp" / "fc1"), d, c.intermediate_size, true)?,
                        fc2: Linear::new(&(&p / "mlp" / "fc2"), c.intermediate_size, d, true)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let model = Self {
                token_embedding: Embedding::new(&(&emb / "token_embedding"), c.vocab_size, d)?,
                position_embedding: Embedding::new(&(&emb / "position_embedding"), c.max_position_embeddings, d)?,
                layers,
                final_layer_norm: LayerNorm::new(&(&root / "final_layer_norm"), d, c.layer_norm_eps)?,
                config: config.clone(),
                vs,
                kind,
                act,
            };
            Ok(model)
        })
        .map(|mut m| {
            m.vs.freeze();
            m
        })
    }

    /// Copy the weights of `sd`: keys with or without the `text_model.` prefix (transformers
    /// 5 saves them without); `position_ids`, `text_projection` and `logit_scale` entries are
    /// ignored.
    pub fn load_state_dict(&mut self, sd: StateDict, source: &Path) -> Result<()> {
        let sd = normalize_clip_keys(sd);
        load_state_dict_into(&mut self.vs, &sd, source, &LoadOptions::default())
    }

    /// [`load_state_dict`](Self::load_state_dict) from a file read one tensor at a time
    /// ([`load_lazy_into`]). On error the model may be partly loaded: drop it.
    pub fn load_weights(&mut self, mut weights: LazyStateDict) -> Result<()> {
        weights.rename(|key, _| clip_key(key))?;
        load_lazy_into(&mut self.vs, &mut weights, &LoadOptions::default())
    }

    /// The configuration.
    pub fn config(&self) -> &ClipTextConfig {
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

    /// Hidden states `(B, L, hidden_size)` for token ids `(B, L)` (`Int64`, on the model's
    /// device): the output of layer `num_hidden_layers − clip_skip`, after
    /// `final_layer_norm`. `clip_skip = 0` is `last_hidden_state`.
    pub fn forward(&self, ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let c = &self.config;
        if clip_skip >= c.num_hidden_layers {
            return Err(Error::param(
                "clip_skip",
                format!(
                    "must be below the text encoder's {} layers, got {clip_skip}",
                    c.num_hidden_layers
                ),
            ));
        }
        let (_, l) = ids.size2()?;
        if l as usize > c.max_position_embeddings {
            return Err(Error::Shape(format!(
                "{l} tokens exceed the text encoder's {} positions",
                c.max_position_embeddings
            )));
        }
        let positions = Tensor::f_arange(l, (Kind::Int64, self.vs.device()))?.f_unsqueeze(0)?;
        let mut h = self
            .token_embedding
            .forward(ids)?
            .f_add(&self.position_embedding.forward(&positions)?)?;
        let heads = c.num_attention_heads as i64;
        for layer in &self.layers[..c.num_hidden_layers - clip_skip] {
            let x = layer.layer_norm1.forward(&h)?;
            let q = layer.q_proj.forward(&x)?;
            let k = layer.k_proj.forward(&x)?;
            let v = layer.v_proj.forward(&x)?;
            let a = attention(&q, &k, &v, heads, true, false)?;
            h = h.f_add(&layer.out_proj.forward(&a)?)?;
            let x = layer.layer_norm2.forward(&h)?;
            let x = layer.fc1.forward(&x)?;
            let x = match self.act {
                ClipActivation::QuickGelu => crate::models::nn::quick_gelu(&x)?,
                ClipActivation::Gelu => x.f_gelu("none")?,
                ClipActivation::GeluTanh => x.f_gelu("tanh")?,
            };
            h = h.f_add(&layer.fc2.forward(&x)?)?;
        }
        self.final_layer_norm.forward(&h)
    }
}

/// Put every key under `text_model.` and drop the entries the text model does not use.
fn normalize_clip_keys(sd: StateDict) -> StateDict {
    sd.into_entries()
        .into_iter()
        .filter_map(|(key, t)| clip_key(&key).map(|k| (k, t)))
        .collect()
}

/// A text-encoder tensor's name under `text_model.`, or `None` for one the text model does
/// not use.
fn clip_key(key: &str) -> Option<String> {
    let key = if key.starts_with("text_model.") {
        key.to_string()
    } else {
        format!("text_model.{key}")
    };
    let unused = key.ends_with("position_ids")
        || key.starts_with("text_model.text_projection")
        || key.starts_with("text_model.logit_scale");
    (!unused).then_some(key)
}
