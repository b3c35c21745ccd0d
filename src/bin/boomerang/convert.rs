//! `boomerang convert`: a checkpoint to safetensors, atomically.

use std::path::{Path, PathBuf};

use boomerang::checkpoint;
use boomerang::models::registry;
use clap::Args;

use crate::info::{with_select, SelectArgs};
use crate::CliError;

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
    remove_stale_temporaries(&args.output, &name);
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
        registry::family_of_keys(sd.keys().map(str::to_string).collect()).describe()
    );
    Ok(())
}

/// Remove `.{name}.{pid}.tmp` files that an earlier, killed `convert` to the same output left
/// behind (their process is gone). Only files of exactly this naming are touched.
fn remove_stale_temporaries(output: &Path, name: &str) {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str() else { continue };
        let Some(pid) = file.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if !alive && is_file {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
