//! The crate's one error type.
//!
//! Every fallible public function returns [`Result<T>`]. Each variant says what was wrong
//! and, where it can, how to fix it; no public function panics on bad input.

use std::path::PathBuf;

/// Everything that can go wrong in `boomerang`.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter (schedule end points, number of steps, t, η, ...) is out of its range.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name as the API spells it.
        name: &'static str,
        /// What is wrong and what the valid range is.
        reason: String,
    },

    /// An array has the wrong rank, shape or size for the operation.
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// An input holds values that cannot be processed (NaN, ±∞, an empty batch, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A combination of components that cannot work together (e.g. a sampler that needs
    /// a VE schedule driven by a VP one, or a denoiser that takes integer steps asked for a
    /// non-integer time).
    #[error("incompatible configuration: {0}")]
    Incompatible(String),

    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// An image could not be decoded or encoded.
    #[error("image {path}: {message}")]
    Image {
        /// The file concerned (empty for in-memory images).
        path: PathBuf,
        /// What the image codec reported.
        message: String,
    },

    /// A checkpoint file is corrupt, unsupported, unsafe, or does not match the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file (or folder).
        path: PathBuf,
        /// What is wrong, naming the offending keys where there are any.
        message: String,
    },

    /// Something this build or this model cannot do (a family without a loader, a feature
    /// that needs libtorch).
    #[error("not supported: {0}")]
    Unsupported(String),

    /// The model (network) failed while running.
    #[error("model error: {0}")]
    Model(String),

    /// An error reported by libtorch.
    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub(crate) fn param(name: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Checkpoint`].
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
