//! Dataset folders for the applications: listing images, keeping outputs out of inputs,
//! loading images into what a model takes (with the conversions written down), and the
//! textual form of `t` used on the command line and in manifests.
//!
//! Conversions [`load_for_model`] makes, each recorded in [`LoadedImage::converted`]:
//! - grayscale to RGB (replicated) for a 3-channel model, RGB to luma for a 1-channel model;
//! - an alpha channel is dropped (no compositing);
//! - 16-bit sources are read at full precision; outputs are written with 8 bits;
//! - a size other than the model's is refused ([`SizePolicy::Skip`]) or resized to it with
//!   antialiased bicubic interpolation ([`SizePolicy::Resize`]); outputs then have the model's
//!   size. For models that take sides that are multiples of some `m` (Stable Diffusion: 8),
//!   other sides are refused or resized down to the nearest multiple.

use std::path::{Component, Path, PathBuf};

use image::ColorType;
use ndarray::{Array3, Array4, ArrayView3, Axis};

use crate::apps::keys::canonical_relative;
use crate::core::denoiser::DataRange;
use crate::image_io::{image_to_array, resize, ColorMode, ResizeFilter};
use crate::schedule::TimeSpec;
use crate::{Error, Result};

/// File extensions read as images (compared case-insensitively).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`].
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The images found under a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageList {
    /// Relative paths in canonical `/`-separated form ([`canonical_relative`]), sorted.
    pub images: Vec<String>,
    /// Files that were not images (other extensions), not counting hidden ones.
    pub ignored: Vec<String>,
}

/// Every image under `root`, recursively, sorted by relative path. Hidden files and folders
/// (names starting with `.`, which includes this crate's temporary files) are left out, and
/// symbolic links to folders are not followed (no cycles).
pub fn list_images(root: &Path) -> Result<ImageList> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidInput(format!("{} is not a folder", root.display())));
    }
    let mut list = ImageList::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let rel = rel_dir.join(&name);
            let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if ft.is_dir() {
                stack.push(rel);
            } else if ft.is_file() || (ft.is_symlink() && entry.path().is_file()) {
                let canon = canonical_relative(&rel);
                if is_image_path(&rel) {
                    list.images.push(canon);
                } else {
                    list.ignored.push(canon);
                }
            }
        }
    }
    list.images.sort();
    list.ignored.sort();
    Ok(list)
}

/// `path` made absolute with `.`/`..` resolved and symbolic links followed as far as the
/// path exists (the rest, not yet created, is appended as written).
pub fn resolve_path(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Error::io(path, e))?.join(path)
    };
    let mut existing = abs.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(canon) = existing.canonicalize() {
            let mut out = canon;
            for part in rest.iter().rev() {
                let p = Path::new(part);
                match p.components().next() {
                    Some(Component::ParentDir) => {
                        out.pop();
                    }
                    Some(Component::CurDir) | None => {}
                    _ => out.push(part),
                }
            }
            return Ok(out);
        }
        match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => {
                // `..` at the end, or the root: let the OS report it.
                return Err(Error::InvalidInput(format!("cannot resolve {}", path.display())));
            }
        }
    }
}

/// Refuse an output folder that is the input folder, lies inside it, or contains it (then an
/// output path could land on an input file). Both are resolved through symbolic links.
pub fn check_separate(input: &Path, output: &Path) -> Result<()> {
    let i = resolve_path(input)?;
    let o = resolve_path(output)?;
    if o.starts_with(&i) {
        return Err(Error::InvalidInput(format!(
            "the output folder {} is inside the input folder {}; choose a folder outside it \
             (input files are never modified)",
            output.display(),
            input.display()
        )));
    }
    if i.starts_with(&o) {
        return Err(Error::InvalidInput(format!(
            "the input folder {} is inside the output folder {}; choose an output folder that \
             does not contain the input",
            input.display(),
            output.display()
        )));
    }
    Ok(())
}

/// What to do with an image whose size is not the model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SizePolicy {
    /// Report it and skip it.
    #[default]
    Skip,
    /// Resize it to the model's size (antialiased bicubic); the output has the model's size.
    Resize,
}

pub use crate::core::local::ModelInput;

/// An image ready for a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImage {
    /// `C×H×W` in the model's data range.
    pub data: Array3<f32>,
    /// The conversions made (empty when none), e.g. `"gray -> rgb"`.
    pub converted: Vec<String>,
}

/// Decode `path` and convert it to what the model takes (see the module docs). Every failure
/// (unreadable file, undecodable data, a size refused by `policy`) is an error naming the
/// file; none panics.
pub fn load_for_model(path: &Path, model: &ModelInput, policy: SizePolicy) -> Result<LoadedImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let img = image::load_from_memory(&bytes).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        message: format!("cannot decode ({e}); PNG and JPEG are supported"),
    })?;
    let mut converted = Vec::new();
    let color = img.color();
    let gray = matches!(color, ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16);
    let mode = match model.channels {
        1 => ColorMode::Gray,
        3 => ColorMode::Rgb,
        c => {
            return Err(Error::Incompatible(format!(
                "the model takes {c} channels; images can give 1 or 3"
            )))
        }
    };
    if gray && mode == ColorMode::Rgb {
        converted.push("gray -> rgb".to_string());
    }
    if !gray && mode == ColorMode::Gray {
        converted.push("rgb -> gray".to_string());
    }
    if color.has_alpha() {
        converted.push("alpha dropped".to_string());
    }
    if color.bytes_per_pixel() / color.channel_count() as u8 > 1 {
        converted.push(format!(
            "{}-bit -> 8-bit output",
            8 * (color.bytes_per_pixel() / color.channel_count())
        ));
    }
    let mut data = image_to_array(&img, mode, model.range);
    let (_, h, w) = data.dim();
    let m = model.multiple.max(1);
    let target = match model.size {
        Some(size) => size,
        None => ((h / m).max(1) * m, (w / m).max(1) * m),
    };
    if (h, w) != target {
        let (th, tw) = target;
        match policy {
            SizePolicy::Skip => {
                let why = if model.size.is_some() {
                    format!("the model takes {th}×{tw}")
                } else {
                    format!("the model takes sides that are multiples of {m}")
                };
                return Err(Error::Shape(format!(
                    "{}: the image is {h}×{w} but {why} (resize it, or let the tool resize with \
                     the resize policy)",
                    path.display()
                )));
            }
            SizePolicy::Resize => {
                let batch = data.insert_axis(Axis(0));
                data = resize(batch.view(), th, tw, ResizeFilter::Bicubic)?.index_axis_move(Axis(0), 0);
                converted.push(format!("resized {h}x{w} -> {th}x{tw}"));
            }
        }
    }
    Ok(LoadedImage { data, converted })
}

/// Round an image to what an 8-bit file holds (clamp to the range, 256 levels), as
/// [`crate::image_io::save_image`] does: distances computed on it match the written file.
pub fn quantize(x: ArrayView3<'_, f32>, range: DataRange) -> Array3<f32> {
    let (lo, hi) = range.bounds();
    x.mapv(|v| {
        let q = (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() / 255.0;
        lo + (hi - lo) * q
    })
}

/// Stack same-shaped `C×H×W` images into a batch.
pub fn stack(items: &[ArrayView3<'_, f32>]) -> Result<Array4<f32>> {
    if items.is_empty() {
        return Err(Error::InvalidInput("no images to stack".into()));
    }
    let views: Vec<_> = items.iter().map(|a| a.view().insert_axis(Axis(0))).collect();
    ndarray::concatenate(Axis(0), &views)
        .map_err(|_| Error::Shape("images of different sizes cannot share a batch".into()))
}

/// Parse `t` as written on the command line: an integer is a step (`300`), a number with a
/// decimal point or exponent is a fraction t/T (`0.3`, `1.0`, `5e-2`).
pub fn parse_time(s: &str) -> Result<TimeSpec> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let step = s
            .parse::<usize>()
            .map_err(|_| Error::param("t", format!("step {s} is too large")))?;
        return Ok(TimeSpec::Step(step));
    }
    let f: f64 = s.parse().map_err(|_| {
        Error::param(
            "t",
            format!("`{s}` is neither a fraction like 0.3 nor an integer step like 300"),
        )
    })?;
    if !(f > 0.0 && f <= 1.0) {
        return Err(Error::param(
            "t",
            format!("a fraction t/T must lie in (0, 1], got {s}; integers are steps"),
        ));
    }
    Ok(TimeSpec::Fraction(f))
}

/// The textual form [`parse_time`] reads back: `"300"` for a step, `"0.3"` (always with a
/// decimal point) for a fraction.
pub fn format_time(t: TimeSpec) -> String {
    match t {
        TimeSpec::Step(s) => s.to_string(),
        TimeSpec::Fraction(f) => format!("{f:?}"),
    }
}

/// If `name` is a temporary file of [`crate::image_io::save_image`] (`.NAME.PID.tmp.EXT`),
/// the name of the file it was to become.
pub(crate) fn temp_target(name: &str) -> Option<String> {
    let inner = name.strip_prefix('.')?;
    let tmp = inner.rfind(".tmp.")?;
    let before = &inner[..tmp];
    let dot = before.rfind('.')?;
    let pid = &before[dot + 1..];
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(before[..dot].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        assert_eq!(temp_target(".a.png.123.tmp.png").as_deref(), Some("a.png"));
        assert_eq!(temp_target(".a.b.jpg.9.tmp.jpg").as_deref(), Some("a.b.jpg"));
        assert_eq!(temp_target("a.png"), None);
        assert_eq!(temp_target(".a.png.x1.tmp.png"), None);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("300").unwrap(), TimeSpec::Step(300));
        assert_eq!(parse_time("0.3").unwrap(), TimeSpec::Fraction(0.3));
        assert_eq!(parse_time("1.0").unwrap(), TimeSpec::Fraction(1.0));
        assert!(parse_time("1.5").is_err());
        assert!(parse_time("-0.1").is_err());
        assert!(parse_time("abc").is_err());
        assert!(parse_time("0.0").is_err());
        for t in [TimeSpec::Step(7), TimeSpec::Fraction(0.25), TimeSpec::Fraction(1.0)] {
            assert_eq!(parse_time(&format_time(t)).unwrap(), t);
        }
    }
}
