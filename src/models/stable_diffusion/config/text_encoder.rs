//! `text_encoder/config.json`: transformers' `CLIPTextConfig`.

use std::path::Path;

use serde::Deserialize;

use super::defaults::d_eps5;
use super::read::{read_json, unsupported, with_path};
use crate::models::config_json;
use crate::{Error, Result};

fn d_clip_act() -> String {
    "quick_gelu".into()
}
fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_inter() -> usize {
    2048
}
fn d_layers12() -> usize {
    12
}
fn d_heads() -> usize {
    8
}
fn d_pos() -> usize {
    77
}

/// `text_encoder/config.json`: transformers' `CLIPTextConfig`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width (768 for SD1, 1024 for SD2).
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// MLP width.
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    /// Layers (SD2's folder stores 23 of OpenCLIP's 24: the penultimate layer's output).
    #[serde(default = "d_layers12")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Positions (77).
    #[serde(default = "d_pos")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD1) or `gelu` (SD2).
    #[serde(default = "d_clip_act")]
    pub hidden_act: String,
    /// LayerNorm epsilon.
    #[serde(default = "d_eps5")]
    pub layer_norm_eps: f64,
}

impl ClipTextConfig {
    /// Parse `config.json` text.
    pub fn from_json(text: &str) -> Result<Self> {
        config_json::parse(text).map_err(|f| Error::param("text encoder config", f.describe("config.json")))
    }

    /// Read and validate `text_encoder/config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let c: Self = read_json(path)?;
        c.validate().map_err(|e| with_path(e, path))?;
        Ok(c)
    }

    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(Error::param(
                "num_attention_heads",
                format!(
                    "{} heads must divide hidden_size {}",
                    self.num_attention_heads, self.hidden_size
                ),
            ));
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.intermediate_size == 0 {
            return Err(Error::param("vocab_size", "sizes must be positive"));
        }
        match self.hidden_act.as_str() {
            "quick_gelu" | "gelu" | "gelu_new" | "gelu_pytorch_tanh" => Ok(()),
            other => Err(unsupported("hidden_act", other)),
        }
    }
}
