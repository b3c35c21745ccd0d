//! `model_index.json`: which class each component folder of the pipeline holds.

use std::path::Path;

use serde::Deserialize;

use super::read::read_json;
use crate::{Error, Result};

/// `model_index.json`: which class each component folder holds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelIndex {
    /// The pipeline class, e.g. `StableDiffusionPipeline`.
    #[serde(rename = "_class_name")]
    pub class_name: String,
    /// `["diffusers", "UNet2DConditionModel"]`.
    #[serde(default)]
    pub unet: Option<(Option<String>, Option<String>)>,
    /// `["diffusers", "AutoencoderKL"]`.
    #[serde(default)]
    pub vae: Option<(Option<String>, Option<String>)>,
    /// `["transformers", "CLIPTextModel"]`.
    #[serde(default)]
    pub text_encoder: Option<(Option<String>, Option<String>)>,
    /// `["transformers", "CLIPTokenizer"]`.
    #[serde(default)]
    pub tokenizer: Option<(Option<String>, Option<String>)>,
}

impl ModelIndex {
    /// Read `model_index.json`.
    pub fn load(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// Check that the components are classes this port implements.
    pub fn validate(&self) -> Result<()> {
        let check = |name: &'static str, entry: &Option<(Option<String>, Option<String>)>, ok: &[&str]| match entry
            .as_ref()
            .and_then(|(_, c)| c.as_deref())
        {
            None => Err(Error::param(
                name,
                "model_index.json lists no such component".to_string(),
            )),
            Some(c) if ok.contains(&c) => Ok(()),
            Some(c) => Err(Error::Incompatible(format!(
                "model_index.json: `{name}` is a {c}; this port implements {}",
                ok.join(" / ")
            ))),
        };
        check("unet", &self.unet, &["UNet2DConditionModel"])?;
        check("vae", &self.vae, &["AutoencoderKL"])?;
        check(
            "text_encoder",
            &self.text_encoder,
            &["CLIPTextModel", "CLIPTextModelWithProjection"],
        )?;
        check("tokenizer", &self.tokenizer, &["CLIPTokenizer", "CLIPTokenizerFast"])?;
        Ok(())
    }
}
