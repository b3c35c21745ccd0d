//! `boomerang info` and `boomerang convert`, and model family detection from key names.

use std::path::{Path, PathBuf};

use boomerang::checkpoint::{self, Checkpoint, Format, Select, StateDict};
use clap::Args;

use crate::CliError;

/// Model families recognised from a state dict's key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Ho et al.'s DDPM UNet with pesser's / FastDPM's / DDIM's key names (`temb.dense.0`,
    /// `down.0.block.0.conv1`, ...).
    Ddpm,
    /// A diffusers `UNet2DModel` (unconditional DDPM, `time_embedding.linear_1`, ...).
    DiffusersDdpm,
    /// A diffusers `UNet2DConditionModel` (Stable Diffusion's UNet: cross-attention `attn2`).
    StableDiffusionUnet,
    /// An original-layout Stable Diffusion single file (`model.diffusion_model.*`).
    StableDiffusionSingleFile,
    /// A diffusers Stable Diffusion pipeline folder (`model_index.json`).
    StableDiffusionPipeline,
    /// A VAE (`encoder.conv_in`, `decoder.conv_in`).
    Vae,
    /// A CLIP text encoder (`text_model.encoder.layers.*`).
    ClipText,
    /// NCSN++ / DLSM (`all_modules.*`).
    Ncsnpp,
    /// Patched Diffusion (guided-diffusion layout with `variance_output_*` heads).
    PatchedDiffusion,
    /// guided / improved diffusion (`input_blocks.*`, `time_embed.*`).
    GuidedDiffusion,
    /// LPIPS linear layers (`lin0.model.1.weight`, ...), maybe with the AlexNet trunk.
    Lpips,
    /// torchvision AlexNet (`features.0.weight`, ...).
    AlexNet,
    /// Nothing recognised.
    Unknown,
}

impl Family {
    /// A human description.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Ddpm => "DDPM UNet (pesser / FastDPM / DDIM key layout)",
            Family::DiffusersDdpm => "DDPM UNet (diffusers UNet2DModel)",
            Family::StableDiffusionUnet => "Stable Diffusion UNet (diffusers UNet2DConditionModel)",
            Family::StableDiffusionSingleFile => "Stable Diffusion single-file checkpoint (LDM layout)",
            Family::StableDiffusionPipeline => "Stable Diffusion pipeline (diffusers folder)",
            Family::Vae => "VAE (autoencoder)",
            Family::ClipText => "CLIP text encoder",
            Family::Ncsnpp => "NCSN++ score model (score_sde / DLSM)",
            Family::PatchedDiffusion => "Patched Diffusion UNet",
            Family::GuidedDiffusion => "guided/improved-diffusion UNet",
            Family::Lpips => "LPIPS linear layers",
            Family::AlexNet => "AlexNet (torchvision)",
            Family::Unknown => "unrecognised model",
        }
    }
}

/// The family a state dict's keys point to.
pub fn family_of(sd: &StateDict) -> Family {
    let has = |k: &str| sd.contains_key(k);
    let any = |f: &dyn Fn(&str) -> bool| sd.keys().any(f);
    if any(&|k| k.starts_with("model.diffusion_model.")) {
        return Family::StableDiffusionSingleFile;
    }
    if any(&|k| k.starts_with("lin0.model.1.")) {
        return Family::Lpips;
    }
    if has("temb.dense.0.weight") && any(&|k| k.starts_with("down.0.block.0.")) {
        return Family::Ddpm;
    }
    if any(&|k| k.starts_with("all_modules.")) {
        return Family::Ncsnpp;
    }
    if any(&|k| k.starts_with("text_model.encoder.layers."))
        || (has("embeddings.token_embedding.weight") && any(&|k| k.starts_with("encoder.layers.")))
    {
        return Family::ClipText;
    }
    if has("time_embedding.linear_1.weight") {
        if any(&|k| k.contains(".attn2.")) {
            return Family::StableDiffusionUnet;
        }
        return Family::DiffusersDdpm;
    }
    if any(&|k| k.starts_with("encoder.conv_in.")) && any(&|k| k.starts_with("decoder.conv_in.")) {
        return Family::Vae;
    }
    if any(&|k| k.starts_with("input_blocks.")) && any(&|k| k.starts_with("time_embed.")) {
        if any(&|k| k.starts_with("variance_output")) {
            return Family::PatchedDiffusion;
        }
        return Family::GuidedDiffusion;
    }
    if has("features.0.weight") {
        return Family::AlexNet;
    }
    Family::Unknown
}

/// One checkpoint file, read.
pub struct FileInfo {
    /// The file.
    pub path: PathBuf,
    /// Its container.
    pub format: Option<Format>,
    /// Its weights, if they could be picked.
    pub state: Result<StateDict, String>,
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

const WEIGHT_EXTENSIONS: &[&str] = &["safetensors", "pt", "pth", "ckpt", "bin"];

fn read_file(path: &Path, select: &Select<'_>) -> FileInfo {
    match Checkpoint::open(path) {
        Ok(ckpt) => {
            let state = ckpt.state_dict(select).map_err(|e| e.to_string());
            let family = state.as_ref().map(family_of).unwrap_or(Family::Unknown);
            FileInfo {
                path: path.to_path_buf(),
                format: Some(ckpt.format()),
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
        if path.join("unet").is_dir() && path.join("vae").is_dir() {
            family = Some(Family::StableDiffusionPipeline);
        }
    }
    if let Ok(text) = std::fs::read_to_string(path.join("config.json")) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            if let Some(c) = v.get("_class_name").and_then(|c| c.as_str()) {
                notes.push(format!("config.json: {c}"));
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

/// [`detect_with`] with automatic selection.
pub fn detect(path: &Path) -> Result<Detected, CliError> {
    detect_with(path, &Select::Auto)
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

fn with_select<T>(args: &SelectArgs, f: impl FnOnce(&Select<'_>) -> T) -> T {
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
    if args.json {
        let files: Vec<serde_json::Value> = found
            .files
            .iter()
            .map(|f| {
                let tensors = match &f.state {
                    Ok(sd) => serde_json::Value::Array(
                        sd.iter()
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
                    "family": format!("{:?}", f.family),
                    "error": f.state.as_ref().err(),
                    "parameters": f.state.as_ref().ok().map(|sd| sd.iter().map(|(_, t)| t.numel()).sum::<usize>()),
                    "tensors": tensors,
                })
            })
            .collect();
        let out = serde_json::json!({
            "path": args.path.display().to_string(),
            "family": format!("{:?}", found.family),
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
            Err(e) => say!("  cannot pick a state dict: {e}"),
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
                let width = sd.keys().map(|k| k.len()).max().unwrap_or(0);
                for (i, (k, t)) in sd.iter().enumerate() {
                    if args.limit > 0 && i >= args.limit {
                        say!("  ... {} more", sd.len() - i);
                        break;
                    }
                    say!("  {k:<width$}  {:<5} {:?}", t.dtype.safetensors_name(), t.shape);
                }
            }
        }
    }
    Ok(())
}

/// `boomerang convert` arguments.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// A checkpoint (safetensors, PyTorch zip or legacy `torch.save` file).
    pub input: PathBuf,
    /// The safetensors file to write.
    pub output: PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// Run `boomerang convert`.
pub fn convert(args: &ConvertArgs) -> Result<(), CliError> {
    if !args.input.is_file() {
        return Err(CliError::usage(format!(
            "{}: no such checkpoint file",
            args.input.display()
        )));
    }
    if args.output.exists() && !args.overwrite {
        return Err(CliError::usage(format!(
            "{} exists; pass --overwrite to replace it",
            args.output.display()
        )));
    }
    if let (Ok(a), Ok(b)) = (args.input.canonicalize(), args.output.canonicalize()) {
        if a == b {
            return Err(CliError::usage("the output is the input file"));
        }
    }
    // Write beside the target, then rename: a failed or killed run leaves no partial file.
    let name = args
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = args
        .output
        .with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let res = with_select(&args.select, |s| {
        checkpoint::convert_to_safetensors(&args.input, &tmp, s)
    });
    let sd = match res {
        Ok(sd) => sd,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, &args.output).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::usage(format!("{}: {e}", args.output.display()))
    })?;
    let params: usize = sd.iter().map(|(_, t)| t.numel()).sum();
    say!(
        "wrote {} ({} tensors, {} parameters, {})",
        args.output.display(),
        sd.len(),
        params,
        family_of(&sd).describe()
    );
    Ok(())
}
