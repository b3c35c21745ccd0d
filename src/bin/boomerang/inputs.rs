//! Input images named on the command line, and the output files planned for them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use boomerang::apps::dataset::list_images;

use crate::error::CliError;

/// One input image: its file and the name it goes by (its path relative to the folder
/// given, or its file name), which sets its key and its output names.
pub struct InputImage {
    pub path: PathBuf,
    pub rel: String,
}

pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<InputImage>, CliError> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
        let found: Vec<InputImage> = if meta.is_dir() {
            list_images(p)?
                .images
                .into_iter()
                .map(|rel| InputImage {
                    path: p.join(&rel),
                    rel,
                })
                .collect()
        } else {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| CliError::usage(format!("{}: not a file name", p.display())))?;
            vec![InputImage {
                path: p.clone(),
                rel: name,
            }]
        };
        for f in found {
            if let Some(prev) = seen.insert(f.rel.clone(), f.path.clone()) {
                return Err(CliError::usage(format!(
                    "{} and {} would both be named {}; rename one or pass their folder",
                    prev.display(),
                    f.path.display(),
                    f.rel
                )));
            }
            out.push(f);
        }
    }
    if out.is_empty() {
        return Err(CliError::usage("no PNG or JPEG images found in the inputs"));
    }
    Ok(out)
}

pub fn stem_of(rel: &str) -> String {
    let p = Path::new(rel);
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match p.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => format!("{}/{stem}", parent.to_string_lossy()),
        _ => stem,
    }
}

/// Refuse to start if any planned output exists (unless overwriting), and create folders.
pub fn prepare_outputs(out_dir: &Path, names: &[String], overwrite: bool) -> Result<(), CliError> {
    if !overwrite {
        let existing: Vec<&String> = names.iter().filter(|n| out_dir.join(n).exists()).collect();
        if let Some(first) = existing.first() {
            return Err(CliError::usage(format!(
                "{} output file(s) exist already in {} (first: {first}); nothing was written. Pass \
                 --overwrite to replace them or choose another output folder",
                existing.len(),
                out_dir.display()
            )));
        }
    }
    for n in names {
        if let Some(parent) = out_dir.join(n).parent() {
            std::fs::create_dir_all(parent).map_err(|e| CliError::usage(format!("{}: {e}", parent.display())))?;
        }
    }
    Ok(())
}

pub fn check_inputs_not_in_output(inputs: &[InputImage], out_dir: &Path) -> Result<(), CliError> {
    let out = boomerang::apps::dataset::resolve_path(out_dir)?;
    for i in inputs {
        let p = boomerang::apps::dataset::resolve_path(&i.path)?;
        if p.starts_with(&out) {
            return Err(CliError::usage(format!(
                "input {} lies inside the output folder {}; choose another output folder",
                i.path.display(),
                out_dir.display()
            )));
        }
    }
    Ok(())
}
