//! The JSON configuration files of a diffusers-format Stable Diffusion folder.
//!
//! Every architectural setting is read from the folder; nothing is hard-coded per SD version.
//! Defaults are diffusers' (and transformers') constructor defaults, so a `config.json` that
//! omits a field means what it means in Python. Settings this port does not implement (class
//! embeddings, added text-time embeddings, GLIGEN, spatial norms, ...) are refused by
//! [`UNetConfig::validate`] and friends with an error naming the field, instead of being
//! silently ignored.
//!
//! One file per concept: [`unet`], [`vae`], [`text_encoder`] (CLIP), [`tokenizer`] (special
//! tokens) and [`model_index`] (the pipeline's components), over the shared setting forms
//! ([`PerBlock`], [`SampleSize`]) and readers.

mod activation;
mod defaults;
pub mod model_index;
mod read;
pub mod text_encoder;
pub mod tokenizer;
pub mod unet;
pub mod vae;
mod values;

pub(crate) use activation::{activate, activation, Activation};
pub use model_index::ModelIndex;
pub(crate) use read::read_json;
pub use text_encoder::ClipTextConfig;
pub use tokenizer::{AddedTokenEntry, TokenSpec, TokenizerConfig};
pub(crate) use unet::BlockPlan;
pub use unet::UNetConfig;
pub use vae::VaeConfig;
pub use values::{PerBlock, SampleSize};
