//! Reading a component's JSON file, and the errors the readers share.

use std::path::Path;

use crate::models::config_json;
use crate::{Error, Result};

pub(super) fn unsupported(name: &'static str, value: &str) -> Error {
    Error::param(name, format!("`{value}` is not supported by the Stable Diffusion port"))
}

pub(super) fn with_path(e: Error, path: &Path) -> Error {
    Error::checkpoint(path, e.to_string())
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let file = path
        .file_name()
        .map_or_else(|| "the file".into(), |n| n.to_string_lossy().into_owned());
    config_json::parse(&text).map_err(|f| Error::checkpoint(path, f.describe(&file)))
}
