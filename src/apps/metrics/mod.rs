//! Image distances: MSE, PSNR and SSIM in pure Rust; LPIPS (AlexNet) with the `tch` feature.
//!
//! Conventions (stated once, used everywhere in the crate's manifests and reports):
//! - Arrays are `C×H×W` (or `N×C×H×W` batches) of `f32`; sums run in `f64`.
//! - [`mse`] is the mean of squared differences over every element, in the arrays' own
//!   units. [`distances`] first maps both images from their [`DataRange`] to `[0, 1]`, so its
//!   MSE is on the `[0, 1]` scale and its PSNR/SSIM use a data range of 1.
//! - [`psnr`] is `10·log10(R²/MSE)` in dB for a data range `R`; identical images give `+∞`
//!   (written `null` in JSON manifests).
//! - [`ssim`] follows Wang, Bovik, Sheikh & Simoncelli (2004): an 11×11 Gaussian window with
//!   σ = 1.5 (normalised to sum 1), `K1 = 0.01`, `K2 = 0.03`, `C1 = (K1·R)²`, `C2 = (K2·R)²`,
//!   population (not sample) variances, the SSIM map evaluated only where the window fits
//!   inside the image ("valid", as the reference MATLAB code and scikit-image with
//!   `gaussian_weights=True, use_sample_covariance=False` do), averaged over the map and then
//!   over channels. Images smaller than the window have no SSIM (an error from [`ssim`],
//!   `None` in [`Distances`]).
//!
//! ```
//! use boomerang::apps::metrics::{psnr, ssim, SsimConfig};
//! use ndarray::Array3;
//! let a = Array3::<f32>::from_shape_fn((3, 16, 16), |(c, y, x)| ((c + y * x) % 7) as f32 / 7.0);
//! let b = a.mapv(|v| v + 0.1);
//! // A constant offset d gives MSE = d², so PSNR = 10·log10(1/d²) = 20 dB for d = 0.1.
//! assert!((psnr(a.view(), b.view(), 1.0)? - 20.0).abs() < 1e-4);
//! assert!((ssim(a.view(), a.view(), &SsimConfig::default())? - 1.0).abs() < 1e-12);
//! # Ok::<(), boomerang::Error>(())
//! ```

#[cfg(feature = "tch")]
mod lpips;
#[cfg(feature = "tch")]
pub use lpips::Lpips;

use ndarray::{Array2, ArrayView, ArrayView2, ArrayView3, ArrayView4, Axis, Dimension, Zip};
use serde::{Deserialize, Serialize};

use crate::core::denoiser::DataRange;
use crate::{Error, Result};

fn check_pair<D: Dimension>(a: &ArrayView<'_, f32, D>, b: &ArrayView<'_, f32, D>, what: &str) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::Shape(format!(
            "{what}: the images differ in shape ({:?} vs {:?})",
            a.shape(),
            b.shape()
        )));
    }
    if a.is_empty() {
        return Err(Error::InvalidInput(format!("{what}: the images are empty")));
    }
    if a.iter().chain(b.iter()).any(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "{what}: an image holds NaN or infinite values"
        )));
    }
    Ok(())
}

/// Mean squared difference over all elements (same shapes, finite values).
pub fn mse<D: Dimension>(a: ArrayView<'_, f32, D>, b: ArrayView<'_, f32, D>) -> Result<f64> {
    check_pair(&a, &b, "mse")?;
    let sum = Zip::from(&a)
        .and(&b)
        .fold(0.0f64, |acc, &x, &y| acc + (x as f64 - y as f64).powi(2));
    Ok(sum / a.len() as f64)
}

/// PSNR in dB from an MSE and a data range `R`: `10·log10(R²/mse)`; `+∞` for `mse = 0`.
pub fn psnr_from_mse(mse: f64, data_range: f64) -> f64 {
    if mse <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * (data_range * data_range / mse).log10()
    }
}

/// Peak signal-to-noise ratio in dB for images whose values span `data_range` (1 for
/// `[0, 1]`, 2 for `[-1, 1]`, 255 for 8-bit); `+∞` for identical images.
pub fn psnr<D: Dimension>(a: ArrayView<'_, f32, D>, b: ArrayView<'_, f32, D>, data_range: f64) -> Result<f64> {
    check_range(data_range)?;
    Ok(psnr_from_mse(mse(a, b)?, data_range))
}

fn check_range(data_range: f64) -> Result<()> {
    if !(data_range.is_finite() && data_range > 0.0) {
        return Err(Error::param(
            "data_range",
            format!("must be positive, got {data_range}"),
        ));
    }
    Ok(())
}

/// SSIM settings; the default is Wang et al. (2004) on data in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsimConfig {
    /// Side of the square Gaussian window (odd): 11.
    pub window: usize,
    /// Standard deviation of the window in pixels: 1.5.
    pub sigma: f64,
    /// `K1`: 0.01.
    pub k1: f64,
    /// `K2`: 0.03.
    pub k2: f64,
    /// The dynamic range `R` of the pixel values: 1 for `[0, 1]`.
    pub data_range: f64,
}

impl Default for SsimConfig {
    fn default() -> Self {
        Self {
            window: 11,
            sigma: 1.5,
            k1: 0.01,
            k2: 0.03,
            data_range: 1.0,
        }
    }
}

impl SsimConfig {
    /// The default settings for data spanning `data_range`.
    pub fn with_data_range(data_range: f64) -> Self {
        Self {
            data_range,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.window == 0 || self.window.is_multiple_of(2) {
            return Err(Error::param(
                "window",
                format!("must be odd and positive, got {}", self.window),
            ));
        }
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(Error::param("sigma", format!("must be positive, got {}", self.sigma)));
        }
        if !(self.k1.is_finite() && self.k1 > 0.0 && self.k2.is_finite() && self.k2 > 0.0) {
            return Err(Error::param("k1/k2", "must be positive"));
        }
        check_range(self.data_range)
    }

    fn kernel(&self) -> Vec<f64> {
        let r = (self.window / 2) as f64;
        let w: Vec<f64> = (0..self.window)
            .map(|i| {
                let x = i as f64 - r;
                (-0.5 * x * x / (self.sigma * self.sigma)).exp()
            })
            .collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|v| v / s).collect()
    }
}

/// Mean SSIM of two `C×H×W` images, averaged over channels (see the module docs for the
/// conventions). Errors on different shapes, non-finite values or images smaller than the
/// window.
pub fn ssim(a: ArrayView3<'_, f32>, b: ArrayView3<'_, f32>, config: &SsimConfig) -> Result<f64> {
    config.validate()?;
    check_pair(&a, &b, "ssim")?;
    let (c, h, w) = a.dim();
    if h < config.window || w < config.window {
        return Err(Error::Shape(format!(
            "ssim: a {h}×{w} image is smaller than the {0}×{0} window",
            config.window
        )));
    }
    let kernel = config.kernel();
    let c1 = (config.k1 * config.data_range).powi(2);
    let c2 = (config.k2 * config.data_range).powi(2);
    let total: f64 = (0..c)
        .map(|ch| ssim_channel(a.index_axis(Axis(0), ch), b.index_axis(Axis(0), ch), &kernel, c1, c2))
        .sum();
    Ok(total / c as f64)
}

fn ssim_channel(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, kernel: &[f64], c1: f64, c2: f64) -> f64 {
    let x = a.mapv(|v| v as f64);
    let y = b.mapv(|v| v as f64);
    let mx = filter_valid(&x, kernel);
    let my = filter_valid(&y, kernel);
    let mxx = filter_valid(&(&x * &x), kernel);
    let myy = filter_valid(&(&y * &y), kernel);
    let mxy = filter_valid(&(&x * &y), kernel);
    let mut sum = 0.0;
    Zip::from(&mx)
        .and(&my)
        .and(&mxx)
        .and(&myy)
        .and(&mxy)
        .for_each(|&ux, &uy, &uxx, &uyy, &uxy| {
            let vx = uxx - ux * ux;
            let vy = uyy - uy * uy;
            let vxy = uxy - ux * uy;
            sum += ((2.0 * ux * uy + c1) * (2.0 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2));
        });
    sum / mx.len() as f64
}

/// Separable correlation with `kernel` along both axes, keeping only positions where the
/// window fits ("valid").
fn filter_valid(x: &Array2<f64>, kernel: &[f64]) -> Array2<f64> {
    let (h, w) = x.dim();
    let k = kernel.len();
    let (oh, ow) = (h + 1 - k, w + 1 - k);
    let mut rows = Array2::<f64>::zeros((h, ow));
    for i in 0..h {
        for j in 0..ow {
            rows[[i, j]] = (0..k).map(|t| kernel[t] * x[[i, j + t]]).sum();
        }
    }
    let mut out = Array2::<f64>::zeros((oh, ow));
    for i in 0..oh {
        for j in 0..ow {
            out[[i, j]] = (0..k).map(|t| kernel[t] * rows[[i + t, j]]).sum();
        }
    }
    out
}

/// Distances between an image and a reference, both mapped to `[0, 1]` first.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Distances {
    /// Mean squared error on the `[0, 1]` scale.
    pub mse: f64,
    /// PSNR in dB (data range 1); `+∞` (JSON `null`) for identical images.
    #[serde(with = "inf_as_null")]
    pub psnr: f64,
    /// Mean SSIM (Wang et al.); `None` when the image is smaller than 11×11.
    pub ssim: Option<f64>,
}

mod inf_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
    }
}

/// MSE, PSNR and SSIM of `image` against `reference` (`C×H×W`, both in `range`), computed
/// on the `[0, 1]` scale.
pub fn distances(image: ArrayView3<'_, f32>, reference: ArrayView3<'_, f32>, range: DataRange) -> Result<Distances> {
    let (lo, hi) = range.bounds();
    let scale = 1.0 / (hi - lo);
    let a = image.mapv(|v| (v - lo) * scale);
    let b = reference.mapv(|v| (v - lo) * scale);
    let m = mse(a.view(), b.view())?;
    let cfg = SsimConfig::default();
    let (_, h, w) = a.dim();
    let s = if h >= cfg.window && w >= cfg.window {
        Some(ssim(a.view(), b.view(), &cfg)?)
    } else {
        None
    };
    Ok(Distances {
        mse: m,
        psnr: psnr_from_mse(m, 1.0),
        ssim: s,
    })
}

/// [`distances`] for each item of two batches.
pub fn batch_distances(
    images: ArrayView4<'_, f32>,
    references: ArrayView4<'_, f32>,
    range: DataRange,
) -> Result<Vec<Distances>> {
    if images.shape() != references.shape() {
        return Err(Error::Shape(format!(
            "batch_distances: batches differ in shape ({:?} vs {:?})",
            images.shape(),
            references.shape()
        )));
    }
    images
        .axis_iter(Axis(0))
        .zip(references.axis_iter(Axis(0)))
        .map(|(a, b)| distances(a, b, range))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn kernel_sums_to_one() {
        let k = SsimConfig::default().kernel();
        assert_eq!(k.len(), 11);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((k[0] - k[10]).abs() < 1e-15);
    }

    #[test]
    fn constant_images_have_closed_form_ssim() {
        // Two constant images a and b: variances vanish, SSIM = (2ab + C1)/(a² + b² + C1).
        let a = Array3::<f32>::from_elem((1, 12, 12), 0.25);
        let b = Array3::<f32>::from_elem((1, 12, 12), 0.75);
        let c1 = 1e-4;
        let want = (2.0 * 0.25 * 0.75 + c1) / (0.0625 + 0.5625 + c1);
        let got = ssim(a.view(), b.view(), &SsimConfig::default()).unwrap();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
}
