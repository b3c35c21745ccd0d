//! Dataset folders for the applications: listing images, loading images into what a model
//! takes (with the conversions written down, within [`ImageLimits`]), and the textual form of
//! `t` used on the command line and in manifests. Paths, output trees and the input/output
//! separation are in [`crate::apps::paths`] (re-exported here: [`check_separate`],
//! [`resolve_path`]).
//!
//! Conversions [`load_for_model`] makes, each recorded in [`LoadedImage::converted`]:
//! - grayscale to RGB (replicated) for a 3-channel model, RGB to luma for a 1-channel model;
//! - an alpha channel is dropped (no compositing);
//! - 16-bit sources are read at full precision; outputs are written with 8 bits;
//! - a size other than the model's is refused ([`SizePolicy::Skip`]) or resized to it with
//!   antialiased bicubic interpolation ([`SizePolicy::Resize`]); outputs then have the model's
//!   size. For models that take sides that are multiples of some `m` (Stable Diffusion: 8),
//!   other sides are refused or resized down to the nearest multiple.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::{ColorType, DynamicImage};
use ndarray::{Array3, Array4, ArrayView3, Axis};

pub use crate::apps::paths::{check_separate, resolve_path};
use crate::apps::paths::{not_regular, RelPath};
use crate::core::denoiser::DataRange;
use crate::image_io::{decode_file, image_to_array, read_header, resize, ColorMode, ImageLimits, ResizeFilter};
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
    /// Relative paths ([`RelPath`]: components, exact bytes), sorted by their `/`-joined form.
    pub images: Vec<RelPath>,
    /// Files that were not images (other extensions), not counting hidden ones.
    pub ignored: Vec<RelPath>,
    /// Entries that are neither regular files nor folders (FIFOs, devices, sockets, links to
    /// them, dangling links): never opened.
    pub special: Vec<RelPath>,
}

/// Every image under `root`, recursively, sorted by relative path. Hidden files and folders
/// (names starting with `.`, which includes this crate's temporary files) are left out,
/// symbolic links to folders are not followed (no cycles), and names are kept exactly
/// (components, non-UTF-8 bytes included; see [`RelPath`]).
pub fn list_images(root: &Path) -> Result<ImageList> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidInput(format!("{} is not a folder", root.display())));
    }
    let mut list = ImageList::default();
    let mut stack: Vec<Vec<std::ffi::OsString>> = vec![Vec::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = rel_dir.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            if crate::apps::paths::os_bytes(&name).first() == Some(&b'.') {
                continue;
            }
            let mut parts = rel_dir.clone();
            parts.push(name);
            let ft = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if ft.is_dir() {
                stack.push(parts);
                continue;
            }
            let rel = RelPath::from_components(parts)?;
            if ft.is_file() || (ft.is_symlink() && entry.path().is_file()) {
                if is_image_path(rel.as_path()) {
                    list.images.push(rel);
                } else {
                    list.ignored.push(rel);
                }
            } else if !(ft.is_symlink() && entry.path().is_dir()) {
                list.special.push(rel);
            }
        }
    }
    list.images.sort();
    list.ignored.sort();
    list.special.sort();
    Ok(list)
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

pub use crate::core::pipeline::ModelInput;

/// An image ready for a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedImage {
    /// `C×H×W` in the model's data range.
    pub data: Array3<f32>,
    /// The conversions made (empty when none), e.g. `"gray -> rgb"`.
    pub converted: Vec<String>,
}

/// Decode `path` and convert it to what the model takes (see the module docs), within the
/// limits of [`ImageLimits::from_env`]. Every failure (unreadable or special file,
/// undecodable data, a size refused by `policy` or above the limits) is an error naming the
/// file; none panics.
pub fn load_for_model(path: &Path, model: &ModelInput, policy: SizePolicy) -> Result<LoadedImage> {
    load_for_model_with(path, model, policy, &ImageLimits::from_env()?)
}

/// [`load_for_model`] within `limits`. The header is read first: an image that `policy`
/// refuses, or that is above `limits`, is refused before any pixel is decoded.
pub fn load_for_model_with(
    path: &Path,
    model: &ModelInput,
    policy: SizePolicy,
    limits: &ImageLimits,
) -> Result<LoadedImage> {
    let header = read_header(path)?;
    let (h, w) = (header.height as usize, header.width as usize);
    limits.check(&format!("image {}", path.display()), w as u64, h as u64)?;
    target_size(path, (h, w), model, policy)?;
    let img = decode_file(path, limits)?;
    convert_for_model(path, &img, model, policy)
}

/// The size `model` takes an `h × w` image at, or the error `policy` gives.
fn target_size(path: &Path, (h, w): (usize, usize), model: &ModelInput, policy: SizePolicy) -> Result<(usize, usize)> {
    let m = model.multiple.max(1);
    let target = match model.size {
        Some(size) => size,
        None => ((h / m).max(1) * m, (w / m).max(1) * m),
    };
    if (h, w) != target && policy == SizePolicy::Skip {
        let (th, tw) = target;
        let why = if model.size.is_some() {
            format!("the model takes {th}×{tw}")
        } else {
            format!("the model takes sides that are multiples of {m}")
        };
        return Err(Error::Shape(format!(
            "{}: the image is {h}×{w} but {why} (resize it, or let it be resized: \
             SizePolicy::Resize, --resize on the command line)",
            path.display()
        )));
    }
    Ok(target)
}

/// A decoded image converted to what the model takes (see the module docs); `path` names it
/// in errors.
pub fn convert_for_model(
    path: &Path,
    img: &DynamicImage,
    model: &ModelInput,
    policy: SizePolicy,
) -> Result<LoadedImage> {
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
    if color.bytes_per_pixel() / color.channel_count() > 1 {
        converted.push(format!(
            "{}-bit -> 8-bit output",
            8 * (color.bytes_per_pixel() / color.channel_count())
        ));
    }
    let (h, w) = (img.height() as usize, img.width() as usize);
    let target = target_size(path, (h, w), model, policy)?;
    let mut data = image_to_array(img, mode, model.range);
    if (h, w) != target {
        let (th, tw) = target;
        let batch = data.insert_axis(Axis(0));
        data = resize(batch.view(), th, tw, ResizeFilter::Bicubic)?.index_axis_move(Axis(0), 0);
        converted.push(format!("resized {h}x{w} -> {th}x{tw}"));
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

/// One input image named on a command line: its file and the name it goes by (its path
/// relative to the folder given, or its file name), which sets its key and output names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputImage {
    /// The file.
    pub path: PathBuf,
    /// Its name relative to the folder it was found in (or its file name).
    pub rel: RelPath,
}

/// The images named by `inputs` (files, or folders searched recursively with
/// [`list_images`]), in order, after checking that none of them can be written by a job
/// writing to `output`: a folder must not contain `output` nor lie inside it, a file must not
/// lie inside `output`. Two inputs going by the same name are refused. Special files (FIFOs,
/// devices) given by name are refused before they are opened.
pub fn collect_inputs(inputs: &[PathBuf], output: &Path) -> Result<Vec<InputImage>> {
    let out_resolved = resolve_path(output)?;
    let mut out = Vec::new();
    let mut seen: HashMap<RelPath, PathBuf> = HashMap::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        let found: Vec<InputImage> = if meta.is_dir() {
            check_separate(p, output)?;
            list_images(p)?
                .images
                .into_iter()
                .map(|rel| InputImage {
                    path: p.join(&rel),
                    rel,
                })
                .collect()
        } else if meta.is_file() {
            if resolve_path(p)?.starts_with(&out_resolved) {
                return Err(Error::InvalidInput(format!(
                    "input {} lies inside the output folder {}; choose another output folder",
                    p.display(),
                    output.display()
                )));
            }
            let name = p
                .file_name()
                .ok_or_else(|| Error::InvalidInput(format!("{}: not a file name", p.display())))?;
            vec![InputImage {
                path: p.clone(),
                rel: RelPath::from_components([name])?,
            }]
        } else {
            return Err(not_regular(p));
        };
        for f in found {
            if let Some(prev) = seen.insert(f.rel.clone(), f.path.clone()) {
                return Err(Error::InvalidInput(format!(
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
        return Err(Error::InvalidInput("no PNG or JPEG images found in the inputs".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
