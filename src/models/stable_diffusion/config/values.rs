//! Setting forms shared by the component configs: per-block lists and sample sizes.

use serde::Deserialize;

use crate::{Error, Result};

/// A setting given either once for all blocks or once per block (`attention_head_dim`,
/// `cross_attention_dim`, `layers_per_block`, ...).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// One value for every block.
    One(T),
    /// One value per down block (up blocks use the list reversed, as diffusers does).
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `n` blocks; a list must have exactly `n` entries.
    pub fn expand(&self, n: usize, name: &'static str) -> Result<Vec<T>> {
        match self {
            PerBlock::One(v) => Ok(vec![v.clone(); n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(Error::param(
                name,
                format!("has {} entries but the model has {n} down blocks", v.len()),
            )),
        }
    }
}

/// `sample_size`: one side or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square.
    Square(usize),
    /// `[height, width]`.
    Rect([usize; 2]),
}

impl SampleSize {
    /// `(height, width)`.
    pub fn hw(self) -> (usize, usize) {
        match self {
            SampleSize::Square(s) => (s, s),
            SampleSize::Rect([h, w]) => (h, w),
        }
    }
}
