//! Images <-> NCHW arrays in a model's data range, and resizing.
//!
//! Decoding and encoding use the `image` crate (PNG and JPEG). Resizing is done here on
//! float arrays (the `image` crate clamps float pixels to `[0, 1]` while filtering), with
//! separable kernels as PIL does: nearest, bilinear (triangle) and bicubic (Keys, `a = −0.5`),
//! widened when downsampling so that it antialiases.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use ndarray::{Array3, Array4, ArrayView3, ArrayView4, Axis};

use crate::core::denoiser::DataRange;
use crate::{Error, Result};

/// How many channels to decode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// 3 channels; grayscale is replicated, alpha dropped.
    #[default]
    Rgb,
    /// 1 channel (luma).
    Gray,
}

impl ColorMode {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }
}

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResizeFilter {
    /// Nearest neighbour.
    Nearest,
    /// Linear interpolation (triangle kernel).
    Bilinear,
    /// Cubic convolution (Keys, `a = −0.5`), PIL's and OpenCV's bicubic.
    #[default]
    Bicubic,
}

/// The environment variable that raises (or lowers) [`ImageLimits::max_pixels`] for
/// [`ImageLimits::from_env`], e.g. `BOOMERANG_MAX_PIXELS=67108864` for 8192×8192 images.
pub const MAX_PIXELS_ENV: &str = "BOOMERANG_MAX_PIXELS";

/// The largest image read by default: 16 777 216 pixels (4096×4096). Decoding one costs
/// about 30 bytes per pixel at the peak (the decoded 8- or 16-bit image and two `f32`
/// copies), about 500 MB at this size.
pub const DEFAULT_MAX_PIXELS: u64 = 4096 * 4096;

/// The largest file read whole as one image (to copy it or compare it byte for byte), 1 GiB;
/// decoding streams the file and needs no such bound.
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;

/// Bounds on the images read and written, checked on the dimensions in a file's header
/// *before* anything is decoded, and given to the decoder as its allocation limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels (width × height) of one image, read or written.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// [`DEFAULT_MAX_PIXELS`].
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl ImageLimits {
    /// The default limits, with [`MAX_PIXELS_ENV`] (`BOOMERANG_MAX_PIXELS`) overriding
    /// `max_pixels` when set; a value that is not a positive whole number is an error.
    pub fn from_env() -> Result<Self> {
        Self::from_var(std::env::var(MAX_PIXELS_ENV).ok())
    }

    /// [`Self::from_env`] with the variable's value given.
    pub fn from_var(value: Option<String>) -> Result<Self> {
        match value.as_deref().map(str::trim) {
            None | Some("") => Ok(Self::default()),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Self { max_pixels: n }),
                _ => Err(Error::param(
                    "max_pixels",
                    format!("{MAX_PIXELS_ENV}={v}: expected a positive whole number of pixels"),
                )),
            },
        }
    }

    /// Refuse a `width × height` image above the limit; `what` names it in the message.
    pub fn check(&self, what: &str, width: u64, height: u64) -> Result<()> {
        let pixels = width.saturating_mul(height);
        if width == 0 || height == 0 {
            return Err(Error::Shape(format!(
                "{what} is {height}×{width}: sizes must be positive"
            )));
        }
        if pixels > self.max_pixels {
            return Err(Error::Shape(format!(
                "{what} is {height}×{width} = {:.1} megapixels, above the limit of {:.1} megapixels ({} \
                 pixels) per image; set {MAX_PIXELS_ENV} to a larger number of pixels to raise it (decoding \
                 needs about 30 bytes per pixel)",
                pixels as f64 / 1e6,
                self.max_pixels as f64 / 1e6,
                self.max_pixels
            )));
        }
        Ok(())
    }

    fn decoder_limits(&self) -> image::Limits {
        let side = u32::try_from(self.max_pixels).unwrap_or(u32::MAX);
        let mut l = image::Limits::default();
        l.max_image_width = Some(side);
        l.max_image_height = Some(side);
        // The decoded image (at most 16-bit RGBA: 8 bytes a pixel) and the decoder's buffers.
        l.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(64 << 20));
        l
    }
}

/// What an image file's header says, read without decoding the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

fn decode_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        message: format!("cannot decode ({e}); PNG and JPEG are supported"),
    }
}

/// Read an image file's header: its dimensions. Special files (FIFOs, devices, sockets,
/// folders) are refused before they are opened; no pixel is decoded.
pub fn read_header(path: impl AsRef<Path>) -> Result<ImageHeader> {
    let path = path.as_ref();
    let mut reader = std::io::BufReader::new(crate::apps::paths::open_regular(path)?);
    header_of(path, &mut reader)
}

fn header_of<R: std::io::BufRead + std::io::Seek>(path: &Path, reader: &mut R) -> Result<ImageHeader> {
    let start = reader.stream_position().map_err(|e| Error::io(path, e))?;
    let image = image::ImageReader::new(&mut *reader)
        .with_guessed_format()
        .map_err(|e| decode_error(path, e))?;
    let (width, height) = image.into_dimensions().map_err(|e| decode_error(path, e))?;
    reader
        .seek(std::io::SeekFrom::Start(start))
        .map_err(|e| Error::io(path, e))?;
    Ok(ImageHeader { width, height })
}

/// Decode an image file within `limits`: special files are refused before they are opened,
/// the header's dimensions are checked against `limits` before any pixel is decoded, and the
/// decoder runs with matching allocation limits. The file is streamed, never read whole.
pub fn decode_file(path: impl AsRef<Path>, limits: &ImageLimits) -> Result<DynamicImage> {
    let path = path.as_ref();
    let reader = std::io::BufReader::new(crate::apps::paths::open_regular(path)?);
    decode_reader(path, reader, limits)
}

/// [`decode_file`] on bytes in memory (`path` names them in errors).
pub fn decode_bytes(path: &Path, bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage> {
    decode_reader(path, std::io::Cursor::new(bytes), limits)
}

fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    mut reader: R,
    limits: &ImageLimits,
) -> Result<DynamicImage> {
    let header = header_of(path, &mut reader)?;
    limits.check(
        &format!("image {}", path.display()),
        header.width as u64,
        header.height as u64,
    )?;
    let mut image = image::ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| decode_error(path, e))?;
    image.limits(limits.decoder_limits());
    image.decode().map_err(|e| decode_error(path, e))
}

/// Decode an image file into a `1×C×H×W` array in `range`, within the limits of
/// [`ImageLimits::from_env`] (see [`decode_file`]).
pub fn load_image(path: impl AsRef<Path>, mode: ColorMode, range: DataRange) -> Result<Array4<f32>> {
    let img = decode_file(path, &ImageLimits::from_env()?)?;
    Ok(image_to_array(&img, mode, range).insert_axis(Axis(0)))
}

/// Decode several same-sized images into one `N×C×H×W` batch.
pub fn load_images<P: AsRef<Path>>(paths: &[P], mode: ColorMode, range: DataRange) -> Result<Array4<f32>> {
    let items = paths
        .iter()
        .map(|p| load_image(p, mode, range))
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<_> = items.iter().map(|a| a.view()).collect();
    if views.is_empty() {
        return Err(Error::InvalidInput("no images given".into()));
    }
    ndarray::concatenate(Axis(0), &views).map_err(|_| {
        Error::Shape(format!(
            "images differ in size (first is {:?}); resize them to one size first",
            items[0].shape()
        ))
    })
}

/// An image as a `C×H×W` array in `range` (8- and 16-bit sources keep their precision).
pub fn image_to_array(img: &DynamicImage, mode: ColorMode, range: DataRange) -> Array3<f32> {
    let (lo, hi) = range.bounds();
    let to_range = |v: f32| lo + (hi - lo) * v;
    match mode {
        ColorMode::Rgb => {
            if let DynamicImage::ImageRgb8(rgb) = img {
                // The common case without an intermediate f32 copy (the same values as
                // `to_rgb32f`: v / 255).
                let (w, h) = rgb.dimensions();
                return Array3::from_shape_fn((3, h as usize, w as usize), |(c, y, x)| {
                    to_range(rgb.get_pixel(x as u32, y as u32)[c] as f32 / 255.0)
                });
            }
            let rgb = img.to_rgb32f();
            let (w, h) = rgb.dimensions();
            Array3::from_shape_fn((3, h as usize, w as usize), |(c, y, x)| {
                to_range(rgb.get_pixel(x as u32, y as u32)[c])
            })
        }
        ColorMode::Gray => {
            let g = DynamicImage::ImageRgb32F(img.to_rgb32f()).to_luma32f();
            let (w, h) = g.dimensions();
            Array3::from_shape_fn((1, h as usize, w as usize), |(_, y, x)| {
                to_range(g.get_pixel(x as u32, y as u32)[0])
            })
        }
    }
}

/// A `C×H×W` array in `range` (C = 1 or 3) as an 8-bit image; values are clamped to the
/// range and rounded.
pub fn array_to_image(x: ArrayView3<'_, f32>, range: DataRange) -> Result<DynamicImage> {
    let (c, h, w) = x.dim();
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(
            "image array contains NaN or infinite values".into(),
        ));
    }
    let (lo, hi) = range.bounds();
    let q = |v: f32| (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8;
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| Error::Shape("image too wide".into()))?,
        u32::try_from(h).map_err(|_| Error::Shape("image too tall".into()))?,
    );
    match c {
        3 => Ok(DynamicImage::ImageRgb8(ImageBuffer::from_fn(w32, h32, |px, py| {
            let (px, py) = (px as usize, py as usize);
            Rgb([q(x[[0, py, px]]), q(x[[1, py, px]]), q(x[[2, py, px]])])
        }))),
        1 => Ok(DynamicImage::ImageLuma8(ImageBuffer::from_fn(w32, h32, |px, py| {
            Luma([q(x[[0, py as usize, px as usize]])])
        }))),
        _ => Err(Error::Shape(format!(
            "an image needs 1 or 3 channels, got {c} (shape CHW {:?})",
            x.shape()
        ))),
    }
}

/// The image format of an output path, from its extension (`.png`, `.jpg`/`.jpeg`).
pub fn output_format(path: &Path) -> Result<image::ImageFormat> {
    match image::ImageFormat::from_path(path) {
        Ok(f @ (image::ImageFormat::Png | image::ImageFormat::Jpeg)) => Ok(f),
        _ => Err(Error::Image {
            path: path.to_path_buf(),
            message: "unknown image extension; use .png or .jpg".into(),
        }),
    }
}

/// Encode a `C×H×W` array as the bytes of an 8-bit image file in `format` (PNG or JPEG at the
/// `image` crate's default quality); values are clamped to the range and rounded.
pub fn encode_image(x: ArrayView3<'_, f32>, range: DataRange, format: image::ImageFormat) -> Result<Vec<u8>> {
    let img = array_to_image(x, range)?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).map_err(|e| Error::Image {
        path: PathBuf::new(),
        message: format!("cannot encode: {e}"),
    })?;
    Ok(bytes.into_inner())
}

/// Write a `C×H×W` array as an image (format from the extension: `.png`, `.jpg`/`.jpeg`).
/// The file is written under a fresh temporary name and renamed, so a crash never leaves a
/// half-written image, and a symbolic link at `path` is replaced, never written through.
pub fn save_image(path: impl AsRef<Path>, x: ArrayView3<'_, f32>, range: DataRange) -> Result<()> {
    let path = path.as_ref();
    let format = output_format(path)?;
    let bytes = encode_image(x, range, format).map_err(|e| match e {
        Error::Image { message, .. } => Error::Image {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    })?;
    crate::apps::paths::write_atomic(path, &bytes)
}

/// Tile a batch into one `C×H'×W'` picture: `cols` images per row, `pad` pixels of `fill`
/// between them.
pub fn grid(batch: ArrayView4<'_, f32>, cols: usize, pad: usize, fill: f32) -> Result<Array3<f32>> {
    let (n, c, h, w) = batch.dim();
    if n == 0 || cols == 0 {
        return Err(Error::InvalidInput(
            "grid needs at least one image and one column".into(),
        ));
    }
    let rows = n.div_ceil(cols);
    let cols = cols.min(n);
    let mut out = Array3::from_elem((c, rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad), fill);
    for (i, img) in batch.axis_iter(Axis(0)).enumerate() {
        let (r, k) = (i / cols, i % cols);
        let (y0, x0) = (pad + r * (h + pad), pad + k * (w + pad));
        out.slice_mut(ndarray::s![.., y0..y0 + h, x0..x0 + w]).assign(&img);
    }
    Ok(out)
}

/// Resize every image of a batch to `height × width`.
pub fn resize(x: ArrayView4<'_, f32>, height: usize, width: usize, filter: ResizeFilter) -> Result<Array4<f32>> {
    let (n, c, h, w) = x.dim();
    if height == 0 || width == 0 || h == 0 || w == 0 {
        return Err(Error::Shape(format!(
            "cannot resize {h}×{w} to {height}×{width}: sizes must be positive"
        )));
    }
    let wy = weights(h, height, filter);
    let wx = weights(w, width, filter);
    let mut out = Array4::<f32>::zeros((n, c, height, width));
    for (mut o, xi) in out.axis_iter_mut(Axis(0)).zip(x.axis_iter(Axis(0))) {
        for (mut oc, xc) in o.axis_iter_mut(Axis(0)).zip(xi.axis_iter(Axis(0))) {
            // Rows first (height), then columns.
            let mut tmp = ndarray::Array2::<f64>::zeros((height, w));
            for (oy, (start, ws)) in wy.iter().enumerate() {
                for (k, wt) in ws.iter().enumerate() {
                    let row = xc.row(start + k);
                    for (t, &v) in tmp.row_mut(oy).iter_mut().zip(row.iter()) {
                        *t += wt * v as f64;
                    }
                }
            }
            for oy in 0..height {
                for (ox, (start, ws)) in wx.iter().enumerate() {
                    let acc: f64 = ws.iter().enumerate().map(|(k, wt)| wt * tmp[[oy, start + k]]).sum();
                    oc[[oy, ox]] = acc as f32;
                }
            }
        }
    }
    Ok(out)
}

/// For each output index: the first input index and the normalised weights.
fn weights(input: usize, output: usize, filter: ResizeFilter) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    if filter == ResizeFilter::Nearest {
        return (0..output)
            .map(|o| {
                let src = (((o as f64 + 0.5) * scale).floor() as usize).min(input - 1);
                (src, vec![1.0])
            })
            .collect();
    }
    let (support, kernel): (f64, fn(f64) -> f64) = match filter {
        ResizeFilter::Bilinear => (1.0, |x: f64| (1.0 - x.abs()).max(0.0)),
        _ => (2.0, cubic),
    };
    let fscale = scale.max(1.0);
    let radius = support * fscale;
    (0..output)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - radius).floor().max(0.0)) as usize;
            let hi = (((center + radius).ceil()) as usize).min(input);
            let mut ws: Vec<f64> = (lo..hi).map(|i| kernel((i as f64 + 0.5 - center) / fscale)).collect();
            let sum: f64 = ws.iter().sum();
            if sum != 0.0 {
                ws.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, ws)
        })
        .collect()
}

/// Keys' cubic convolution kernel with `a = −0.5`.
fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}
