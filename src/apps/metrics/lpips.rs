//! LPIPS (Zhang et al. 2018), AlexNet variant, v0.1, as the `lpips` PyPI package computes it.

use std::path::Path;

use ndarray::{ArrayView4, Zip};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{load_state_dict, StateDict, TensorData};
use crate::core::denoiser::DataRange;
use crate::models::crossing::{array_to_tensor, slice_to_tensor, tensor_to_vec};
use crate::{Error, Result};

/// AlexNet's feature convolutions: (torchvision index, out, in, kernel, stride, padding).
const CONVS: [(usize, i64, i64, i64, i64, i64); 5] = [
    (0, 64, 3, 11, 4, 2),
    (3, 192, 64, 5, 1, 2),
    (6, 384, 192, 3, 1, 1),
    (8, 256, 384, 3, 1, 1),
    (10, 256, 256, 3, 1, 1),
];

/// The `lpips` package's input scaling (`ScalingLayer`): `(x − shift)/scale`.
const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

/// LPIPS with an AlexNet trunk (the `lpips` package's default, `net='alex'`, v0.1).
///
/// Weights come from the user (nothing is downloaded), in the layouts people have:
/// - one file with a whole `lpips.LPIPS` state dict (`net.slice1.0.weight`, ...,
///   `lin0.model.1.weight`, ...), or
/// - two files: torchvision's AlexNet (`alexnet-owt-7be5be79.pth`, keys `features.N.*`) and
///   the package's heads (`lpips/weights/v0.1/alex.pth`, keys `linK.model.1.weight`).
///
/// Any format the [`crate::checkpoint`] reader takes works (PyTorch zip or legacy,
/// safetensors; fp16/bf16 are widened to f32). Inputs are `N×3×H×W` in `[-1, 1]`
/// ([`Lpips::distance_in_range`] maps other ranges); the result is one distance per item,
/// the package's `LPIPS()(a, b)` (spatial average, sum over the five layers).
pub struct Lpips {
    convs: Vec<(Tensor, Tensor, i64, i64)>,
    lins: Vec<Tensor>,
    shift: Tensor,
    scale: Tensor,
    device: Device,
}

impl std::fmt::Debug for Lpips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lpips")
            .field("net", &"alex")
            .field("device", &self.device)
            .finish()
    }
}

fn tensor_of(sd: &StateDict, names: &[String], shape: &[i64], device: Device, path: &str) -> Result<Tensor> {
    let t: &TensorData = names.iter().find_map(|n| sd.get(n)).ok_or_else(|| {
        Error::checkpoint(
            path,
            format!(
                "LPIPS weight {} is missing; LPIPS (AlexNet) needs the trunk (a whole lpips.LPIPS \
                 state dict, or torchvision's alexnet `features.*`) and the heads \
                 (lpips/weights/v0.1/alex.pth: `linK.model.1.weight`)",
                names.join(" or ")
            ),
        )
    })?;
    let want: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    if t.shape != want {
        return Err(Error::checkpoint(
            path,
            format!("LPIPS weight {} has shape {:?}, expected {want:?}", names[0], t.shape),
        ));
    }
    let values = t.to_f32_vec()?;
    slice_to_tensor(&values, &want, device, Kind::Float)
}

impl Lpips {
    /// Build from a state dict holding both the trunk and the heads (see the type docs for
    /// the key names accepted).
    pub fn from_state_dict(sd: &StateDict, device: Device) -> Result<Self> {
        let src = "<state dict>";
        let mut convs = Vec::new();
        for (slice, &(idx, out, inp, k, stride, pad)) in CONVS.iter().enumerate() {
            let names = |what: &str| {
                vec![
                    format!("net.slice{}.{idx}.{what}", slice + 1),
                    format!("features.{idx}.{what}"),
                ]
            };
            let w = tensor_of(sd, &names("weight"), &[out, inp, k, k], device, src)?;
            let b = tensor_of(sd, &names("bias"), &[out], device, src)?;
            convs.push((w, b, stride, pad));
        }
        let mut lins = Vec::new();
        for (i, &(_, ch, ..)) in CONVS.iter().enumerate() {
            let names = vec![format!("lin{i}.model.1.weight"), format!("lins.{i}.model.1.weight")];
            lins.push(tensor_of(sd, &names, &[1, ch, 1, 1], device, src)?);
        }
        let shift = slice_to_tensor(&SHIFT, &[1, 3, 1, 1], device, Kind::Float)?;
        let scale = slice_to_tensor(&SCALE, &[1, 3, 1, 1], device, Kind::Float)?;
        Ok(Self {
            convs,
            lins,
            shift,
            scale,
            device,
        })
    }

    /// Load from one or more checkpoint files whose state dicts together hold the trunk and
    /// the heads (later files win on duplicate keys).
    pub fn load<P: AsRef<Path>>(paths: &[P], device: Device) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::param("paths", "LPIPS needs at least one weights file"));
        }
        let mut merged = StateDict::new();
        for p in paths {
            let sd = load_state_dict(p.as_ref())?;
            for (k, t) in sd.into_entries() {
                merged.insert(k, t);
            }
        }
        Self::from_state_dict(&merged, device).map_err(|e| match e {
            Error::Checkpoint { message, .. } => Error::checkpoint(
                paths
                    .iter()
                    .map(|p| p.as_ref().display().to_string())
                    .collect::<Vec<_>>()
                    .join(" + "),
                message,
            ),
            other => other,
        })
    }

    /// The device the network runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    fn to_tensor(&self, x: ArrayView4<'_, f32>) -> Result<Tensor> {
        array_to_tensor(x, self.device, Kind::Float)
    }

    fn features(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut h = x.f_sub(&self.shift)?.f_div(&self.scale)?;
        let mut outs = Vec::with_capacity(5);
        for (i, (w, b, stride, pad)) in self.convs.iter().enumerate() {
            if i == 1 || i == 2 {
                h = h.f_max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)?;
            }
            h = h
                .f_conv2d(w, Some(b), [*stride, *stride], [*pad, *pad], [1, 1], 1)?
                .f_relu()?;
            outs.push(h.shallow_clone());
        }
        Ok(outs)
    }

    /// Per-item distances and their five per-layer terms, for inputs in `[-1, 1]`.
    pub fn distance_layers(&self, a: ArrayView4<'_, f32>, b: ArrayView4<'_, f32>) -> Result<Vec<(f32, [f32; 5])>> {
        if a.dim() != b.dim() {
            return Err(Error::Shape(format!(
                "LPIPS: batches differ in shape ({:?} vs {:?})",
                a.shape(),
                b.shape()
            )));
        }
        let (n, c, h, w) = a.dim();
        if n == 0 {
            return Err(Error::InvalidInput("LPIPS: the batch is empty".into()));
        }
        if c != 3 {
            return Err(Error::Shape(format!(
                "LPIPS (AlexNet) takes RGB images (3 channels), got {c}; replicate gray images first"
            )));
        }
        if h < 32 || w < 32 {
            return Err(Error::Shape(format!(
                "LPIPS (AlexNet) needs images of at least 32×32, got {h}×{w}"
            )));
        }
        if a.iter().chain(b.iter()).any(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(
                "LPIPS: an image holds NaN or infinite values".into(),
            ));
        }
        let _guard = tch::no_grad_guard();
        let fa = self.features(&self.to_tensor(a)?)?;
        let fb = self.features(&self.to_tensor(b)?)?;
        let normalize = |t: &Tensor| -> Result<Tensor> {
            let norm = t
                .f_square()?
                .f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float)?
                .f_sqrt()?;
            Ok(t.f_div(&norm.f_add_scalar(1e-10)?)?)
        };
        let mut layers = Vec::with_capacity(5);
        for ((x, y), lin) in fa.iter().zip(&fb).zip(&self.lins) {
            let d = normalize(x)?.f_sub(&normalize(y)?)?.f_square()?;
            let v = d
                .f_conv2d(lin, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1)?
                .f_mean_dim([2i64, 3].as_slice(), false, Kind::Float)?
                .f_reshape([n as i64])?
                .f_to_device(Device::Cpu)?;
            layers.push(tensor_to_vec(&v)?);
        }
        Ok((0..n)
            .map(|i| {
                let per: [f32; 5] = [layers[0][i], layers[1][i], layers[2][i], layers[3][i], layers[4][i]];
                (per.iter().sum(), per)
            })
            .collect())
    }

    /// Per-item LPIPS distances for inputs in `[-1, 1]`.
    pub fn distance(&self, a: ArrayView4<'_, f32>, b: ArrayView4<'_, f32>) -> Result<Vec<f32>> {
        Ok(self.distance_layers(a, b)?.into_iter().map(|(d, _)| d).collect())
    }

    /// Per-item LPIPS distances for inputs in `range` (mapped to `[-1, 1]` first).
    pub fn distance_in_range(
        &self,
        a: ArrayView4<'_, f32>,
        b: ArrayView4<'_, f32>,
        range: DataRange,
    ) -> Result<Vec<f32>> {
        let (lo, hi) = range.bounds();
        let map = |x: ArrayView4<'_, f32>| {
            let mut out = x.to_owned();
            Zip::from(&mut out).for_each(|v| *v = 2.0 * (*v - lo) / (hi - lo) - 1.0);
            out
        };
        self.distance(map(a).view(), map(b).view())
    }
}
