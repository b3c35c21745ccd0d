//! `tokenizer/tokenizer_config.json` and `special_tokens_map.json`: the special tokens.

use std::path::Path;

use serde::Deserialize;

use super::read::read_json;
use crate::Result;

/// A special token in `tokenizer_config.json` / `special_tokens_map.json`: a plain string or
/// an `AddedToken` object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum TokenSpec {
    /// `"<|endoftext|>"`.
    Plain(String),
    /// `{"content": "...", "normalized": true, ...}`.
    Added {
        /// The token text.
        content: String,
        /// Matched against the normalized (lower-cased) text instead of the raw text.
        #[serde(default)]
        normalized: Option<bool>,
    },
}

impl TokenSpec {
    /// The token text.
    pub fn content(&self) -> &str {
        match self {
            TokenSpec::Plain(s) => s,
            TokenSpec::Added { content, .. } => content,
        }
    }

    /// Whether the token is matched after normalization. transformers registers plain-string
    /// special tokens with `normalized = false`; objects say it themselves (default false for
    /// special tokens).
    pub fn normalized(&self) -> bool {
        match self {
            TokenSpec::Plain(_) => false,
            TokenSpec::Added { normalized, .. } => normalized.unwrap_or(false),
        }
    }
}

/// An entry of `added_tokens_decoder` (newer `tokenizer_config.json` files).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AddedTokenEntry {
    /// The token text.
    pub content: String,
    /// Matched after normalization.
    #[serde(default)]
    pub normalized: bool,
}

/// `tokenizer/tokenizer_config.json` (and `special_tokens_map.json`, same fields).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TokenizerConfig {
    /// Sequence length (77).
    #[serde(default)]
    pub model_max_length: Option<f64>,
    /// Start token.
    #[serde(default)]
    pub bos_token: Option<TokenSpec>,
    /// End token.
    #[serde(default)]
    pub eos_token: Option<TokenSpec>,
    /// Unknown token.
    #[serde(default)]
    pub unk_token: Option<TokenSpec>,
    /// Padding token: `<|endoftext|>` for SD1, `!` for SD2.
    #[serde(default)]
    pub pad_token: Option<TokenSpec>,
    /// Extra added tokens, by id.
    #[serde(default)]
    pub added_tokens_decoder: Option<std::collections::BTreeMap<String, AddedTokenEntry>>,
    /// `CLIPTokenizer` or `CLIPTokenizerFast`.
    #[serde(default)]
    pub tokenizer_class: Option<String>,
}

impl TokenizerConfig {
    /// Read a tokenizer configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        read_json(path)
    }

    /// `other`'s special tokens override this one's (transformers reads
    /// `special_tokens_map.json` after `tokenizer_config.json`).
    pub fn merged_with(mut self, other: TokenizerConfig) -> Self {
        if other.bos_token.is_some() {
            self.bos_token = other.bos_token;
        }
        if other.eos_token.is_some() {
            self.eos_token = other.eos_token;
        }
        if other.unk_token.is_some() {
            self.unk_token = other.unk_token;
        }
        if other.pad_token.is_some() {
            self.pad_token = other.pad_token;
        }
        if other.model_max_length.is_some() {
            self.model_max_length = other.model_max_length;
        }
        self
    }
}
