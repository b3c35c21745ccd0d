//! Reading a component's JSON file, and the errors the readers share.

use std::path::Path;

use crate::{Error, Result};

pub(super) fn unsupported(name: &'static str, value: &str) -> Error {
    Error::param(name, format!("`{value}` is not supported by the Stable Diffusion port"))
}

pub(super) fn with_path(e: Error, path: &Path) -> Error {
    Error::checkpoint(path, e.to_string())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::checkpoint(path, format!("invalid JSON: {e}")))
}
