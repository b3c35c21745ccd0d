//! `boomerang info`: what a model file or folder holds (the family comes from the library's
//! registry).

use std::path::{Path, PathBuf};

use boomerang::checkpoint::{inspect, printable, Format, Select, TensorInfo};
use boomerang::models::registry;
use boomerang::models::Family;
use clap::Args;

use crate::CliError;

/// One checkpoint file, inspected: its header or pickle structure only, never its tensor
/// data (a multi-gigabyte file is listed without reading it).
pub struct FileInfo {
    /// The file.
    pub path: PathBuf,
    /// Its container.
    pub format: Option<Format>,
    /// Its weights' names, dtypes and shapes (sorted by name), if they could be picked.
    pub state: Result<Vec<(String, TensorInfo)>, String>,
    /// What they are.
    pub family: Family,
}

/// What a model path holds.
pub struct Detected {
    /// The overall family.
    pub family: Family,
    /// The files read.
    pub files: Vec<FileInfo>,
    /// Notes (config files seen, ...).
    pub notes: Vec<String>,
}

use boomerang::checkpoint::diffusers::WEIGHT_EXTENSIONS;

fn read_file(path: &Path, select: &Select<'_>) -> FileInfo {
    match inspect(path) {
        Ok(inventory) => {
            let state = inventory
                .select(select)
                .map(|mut v| {
                    v.sort_by(|a, b| a.0.cmp(&b.0));
                    v
                })
                .map_err(|e| e.to_string());
            // The registry's rules see the file as the loaders do (a training container's
            // model dict); the selected weights' names are the fallback.
            let family = match registry::detect(path) {
                Ok(found) if found.family != Family::Unknown => found.family,
                _ => state
                    .as_ref()
                    .map(|sd| registry::family_of_keys(sd.iter().map(|(k, _)| k.clone()).collect()))
                    .unwrap_or(Family::Unknown),
            };
            FileInfo {
                path: path.to_path_buf(),
                format: Some(inventory.format()),
                state,
                family,
            }
        }
        Err(e) => FileInfo {
            path: path.to_path_buf(),
            format: None,
            state: Err(e.to_string()),
            family: Family::Unknown,
        },
    }
}

/// Read a checkpoint file, or the weight files of a folder (diffusers layouts included).
pub fn detect_with(path: &Path, select: &Select<'_>) -> Result<Detected, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    if meta.is_file() {
        let f = read_file(path, select);
        if let (Err(e), None) = (&f.state, f.format) {
            return Err(CliError::usage(format!(
                "{}: not a readable checkpoint: {e}",
                path.display()
            )));
        }
        return Ok(Detected {
            family: f.family,
            files: vec![f],
            notes: vec![],
        });
    }
    let mut notes = Vec::new();
    let mut family = None;
    if path.join("model_index.json").is_file() {
        notes.push("model_index.json: a diffusers pipeline".to_string());
    }
    if let Ok(found) = registry::detect(path) {
        if found.family != Family::Unknown {
            family = Some(found.family);
        }
    }
    if let Ok(text) = std::fs::read_to_string(path.join("config.json")) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Some(c) = v.get("_class_name").and_then(|c| c.as_str()) {
                notes.push(format!("config.json: {}", printable(c)));
            }
        }
    }
    let mut weight_files = Vec::new();
    collect_weights(path, 2, &mut weight_files);
    weight_files.sort();
    if weight_files.is_empty() {
        return Err(CliError::usage(format!(
            "{}: no weight files (.safetensors, .pt, .pth, .ckpt, .bin) found",
            path.display()
        )));
    }
    let files: Vec<FileInfo> = weight_files.iter().map(|p| read_file(p, select)).collect();
    let family = family.unwrap_or_else(|| {
        let known: Vec<Family> = files
            .iter()
            .map(|f| f.family)
            .filter(|f| *f != Family::Unknown)
            .collect();
        match known.first() {
            Some(&f) if known.iter().all(|&g| g == f) => f,
            _ => Family::Unknown,
        }
    });
    Ok(Detected { family, files, notes })
}

fn collect_weights(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        if p.is_dir() {
            if depth > 0 {
                collect_weights(&p, depth - 1, out);
            }
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| WEIGHT_EXTENSIONS.iter().any(|w| w.eq_ignore_ascii_case(x)))
        {
            out.push(p);
        }
    }
}

/// `--select` values: `auto`, or a path of dict keys / list indices separated by dots
/// (`ema`, `state_dict`, `model`, `4`).
#[derive(Debug, Clone, Args)]
pub struct SelectArgs {
    /// Which state dict inside the checkpoint: `auto` (EMA weights if present, else
    /// `state_dict`, else `model`, ...) or a dotted path of keys/indices such as `ema` or
    /// `model`.
    #[arg(long, default_value = "auto", value_name = "auto|PATH")]
    pub select: String,
}

impl SelectArgs {
    /// The parts of a dotted path (empty for `auto`).
    pub fn parts(&self) -> Vec<&str> {
        if self.select == "auto" {
            Vec::new()
        } else {
            self.select.split('.').collect()
        }
    }
}

pub fn with_select<T>(args: &SelectArgs, f: impl FnOnce(&Select<'_>) -> T) -> T {
    let parts = args.parts();
    if parts.is_empty() {
        f(&Select::Auto)
    } else {
        f(&Select::Path(&parts))
    }
}

/// `boomerang info` arguments.
#[derive(Debug, Clone, Args)]
pub struct InfoArgs {
    /// A checkpoint file or a model folder.
    pub path: PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show at most N keys per file (0: all).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub limit: usize,
}

fn format_name(f: Option<Format>) -> &'static str {
    match f {
        Some(Format::SafeTensors) => "safetensors",
        Some(Format::TorchZip) => "PyTorch zip",
        Some(Format::TorchLegacy) => "PyTorch legacy",
        Some(Format::Pickle) => "pickle",
        Some(_) => "other",
        None => "unreadable",
    }
}

/// Run `boomerang info`.
pub fn info(args: &InfoArgs) -> Result<(), CliError> {
    let found = with_select(&args.select, |s| detect_with(&args.path, s))?;
    if !args.select.parts().is_empty() {
        if let Some(e) = found.files.iter().find_map(|f| f.state.as_ref().err()) {
            return Err(CliError::usage(format!(
                "--select {}: {}",
                printable(&args.select.select),
                printable(e)
            )));
        }
    }
    if args.json {
        let files: Vec<serde_json::Value> = found
            .files
            .iter()
            .map(|f| {
                let tensors = match &f.state {
                    Ok(sd) => serde_json::Value::Array(
                        sd.iter()
                            .take(if args.limit > 0 { args.limit } else { usize::MAX })
                            .map(|(k, t)| {
                                serde_json::json!({"key": k, "dtype": t.dtype.safetensors_name(), "shape": t.shape})
                            })
                            .collect(),
                    ),
                    Err(_) => serde_json::Value::Null,
                };
                serde_json::json!({
                    "path": f.path.display().to_string(),
                    "format": format_name(f.format),
                    "family": f.family.name(),
                    "error": f.state.as_ref().err(),
                    "parameters": f.state.as_ref().ok().map(|sd| sd.iter().map(|(_, t)| t.numel()).sum::<usize>()),
                    "tensors": tensors,
                })
            })
            .collect();
        let out = serde_json::json!({
            "path": args.path.display().to_string(),
            "family": found.family.name(),
            "description": found.family.describe(),
            "notes": found.notes,
            "files": files,
        });
        say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    say!("{}: {}", args.path.display(), found.family.describe());
    for n in &found.notes {
        say!("  {n}");
    }
    for f in &found.files {
        say!("");
        say!(
            "{} [{}] {}",
            f.path.display(),
            format_name(f.format),
            f.family.describe()
        );
        match &f.state {
            Err(e) => say!("  cannot pick a state dict: {}", printable(e)),
            Ok(sd) => {
                let params: usize = sd.iter().map(|(_, t)| t.numel()).sum();
                let mut dtypes: Vec<&str> = sd.iter().map(|(_, t)| t.dtype.safetensors_name()).collect();
                dtypes.sort();
                dtypes.dedup();
                say!(
                    "  {} tensors, {} parameters ({:.2}M), dtypes {}",
                    sd.len(),
                    params,
                    params as f64 / 1e6,
                    dtypes.join(", ")
                );
                let width = sd.iter().map(|(k, _)| printable(k).len()).max().unwrap_or(0);
                for (i, (k, t)) in sd.iter().enumerate() {
                    if args.limit > 0 && i >= args.limit {
                        say!("  ... {} more", sd.len() - i);
                        break;
                    }
                    say!(
                        "  {:<width$}  {:<5} {:?}",
                        printable(k),
                        t.dtype.safetensors_name(),
                        t.shape
                    );
                }
            }
        }
    }
    Ok(())
}
