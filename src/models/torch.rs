//! The tch side of the `Denoiser` seam: [`TchModule`] (a network on tensors) behind the
//! [`Denoiser`] seam as [`TchDenoiser`] (its host copies go through the crate's one
//! array <-> tensor crossing, `models::crossing`), device and dtype parsing, and the panic
//! boundary.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ndarray::{Array4, ArrayView4};
use tch::Tensor;

pub use tch::{Device, Kind};

use super::crossing;
use crate::core::denoiser::item_times;
use crate::{Condition, Denoiser, DenoiserSpec, Error, Result};

/// The compute kinds a network may run in: `f32`, `f16` and `bf16`.
pub const COMPUTE_KINDS: [Kind; 3] = [Kind::Float, Kind::Half, Kind::BFloat16];

/// Parses a device name: `cpu`, `cuda` (device 0), `cuda:N`, `mps`, or `auto` (CUDA device
/// 0 when one is available, else the CPU). The device is checked to exist.
///
/// ```
/// use boomerang::models::{parse_device, Device};
/// assert_eq!(parse_device("cpu")?, Device::Cpu);
/// assert!(parse_device("tpu").is_err());
/// # Ok::<(), boomerang::Error>(())
/// ```
pub fn parse_device(name: &str) -> Result<Device> {
    let lower = name.trim().to_ascii_lowercase();
    let device = match lower.as_str() {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "mps" => Device::Mps,
        "cuda" | "gpu" => Device::Cuda(0),
        s => match s.strip_prefix("cuda:") {
            Some(n) => Device::Cuda(n.parse::<usize>().map_err(|_| {
                Error::param(
                    "device",
                    format!("`{name}`: the CUDA index must be a non-negative integer"),
                )
            })?),
            None => {
                return Err(Error::param(
                    "device",
                    format!("`{name}` is not a device; use cpu, cuda, cuda:N, mps or auto"),
                ))
            }
        },
    };
    check_device(device)?;
    Ok(device)
}

/// Checks that `device` exists on this machine (CUDA index below the device count, MPS
/// available).
pub fn check_device(device: Device) -> Result<()> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(i) => {
            let count = tch::Cuda::device_count();
            if (i as i64) < count {
                Ok(())
            } else {
                Err(Error::param(
                    "device",
                    format!("cuda:{i} requested but libtorch sees {count} CUDA device(s)"),
                ))
            }
        }
        Device::Mps => {
            if tch::utils::has_mps() {
                Ok(())
            } else {
                Err(Error::param(
                    "device",
                    "mps requested but libtorch has no MPS support here",
                ))
            }
        }
        Device::Vulkan => Err(Error::param("device", "the Vulkan backend is not supported")),
    }
}

/// Parses a compute dtype: `f32` (`float32`, `fp32`, `float`), `f16` (`float16`, `fp16`,
/// `half`) or `bf16` (`bfloat16`).
///
/// ```
/// use boomerang::models::{parse_kind, Kind};
/// assert_eq!(parse_kind("bf16")?, Kind::BFloat16);
/// assert!(parse_kind("int8").is_err());
/// # Ok::<(), boomerang::Error>(())
/// ```
pub fn parse_kind(name: &str) -> Result<Kind> {
    match name.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "fp32" | "float" => Ok(Kind::Float),
        "f16" | "float16" | "fp16" | "half" => Ok(Kind::Half),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        _ => Err(Error::param(
            "dtype",
            format!("`{name}` is not a compute dtype; use f32, f16 or bf16"),
        )),
    }
}

/// Checks that `kind` is one of [`COMPUTE_KINDS`].
pub fn check_kind(kind: Kind) -> Result<()> {
    if COMPUTE_KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(Error::param(
            "dtype",
            format!("{kind:?} is not a compute dtype; use Kind::Float, Kind::Half or Kind::BFloat16"),
        ))
    }
}

/// A network running on tch tensors: the model side of [`TchDenoiser`].
///
/// Implementations use the fallible `f_*` tch operations and return errors instead of
/// panicking; [`TchDenoiser`] still guards every call with `catch_unwind`.
pub trait TchModule {
    /// What the network predicts and accepts (parameterization, time input, data range,
    /// channels, image size).
    fn spec(&self) -> DenoiserSpec;

    /// The device the weights live on; inputs are moved there.
    fn device(&self) -> Device;

    /// The compute kind (one of [`COMPUTE_KINDS`]); inputs are cast to it.
    fn kind(&self) -> Kind;

    /// The forward pass on a batch `x` (NCHW, on [`device`](TchModule::device), in
    /// [`kind`](TchModule::kind)) at times `t` (1-D `f32` tensor of length N on the same
    /// device, in the units of the spec's [`TimeInput`](crate::TimeInput)), with
    /// `condition` holding exactly N items or being [`Condition::None`]. Called under
    /// `no_grad`; returns an NCHW tensor with the same N, H and W.
    fn forward_t(&self, x: &Tensor, t: &Tensor, condition: &Condition) -> Result<Tensor>;
}

/// Default [`TchDenoiser::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 64;

/// A [`TchModule`] behind the [`Denoiser`] seam (ndarray in, ndarray out).
///
/// This is the crate's one host <-> libtorch boundary and its one panic boundary: each
/// [`predict`](Denoiser::predict) converts the batch to a tensor once, runs the network in
/// chunks of at most [`max_batch`](TchDenoiser::max_batch) items under `no_grad` inside
/// `catch_unwind`, and copies the `f32` result back once. A panic inside libtorch's
/// bindings is returned as [`Error::Model`] (the default panic hook still prints it).
///
/// `TchDenoiser` is `Send` when the model is, and not `Sync` (`tch::Tensor` is not).
pub struct TchDenoiser<M> {
    model: M,
    spec: DenoiserSpec,
    max_batch: usize,
}

impl<M: std::fmt::Debug> std::fmt::Debug for TchDenoiser<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TchDenoiser")
            .field("model", &self.model)
            .field("spec", &self.spec)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

impl<M: TchModule> TchDenoiser<M> {
    /// Wrap a network; chunks of at most [`DEFAULT_MAX_BATCH`] items.
    pub fn new(model: M) -> Self {
        let spec = model.spec();
        Self {
            model,
            spec,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// Set the largest number of items run through the network at once (at least 1).
    /// Smaller chunks need less device memory; the results do not depend on it beyond
    /// floating-point reassociation inside libtorch's kernels.
    pub fn with_max_batch(mut self, max_batch: usize) -> Result<Self> {
        if max_batch == 0 {
            return Err(Error::param("max_batch", "must be at least 1"));
        }
        self.max_batch = max_batch;
        Ok(self)
    }

    /// The chunk size.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The wrapped network.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Unwrap the network.
    pub fn into_inner(self) -> M {
        self.model
    }

    /// Run the network on the host batch `x` and return its raw output as `f32` (any
    /// number of output channels, same N, H and W). [`predict`](Denoiser::predict) is this
    /// plus a check that the output has `x`'s shape.
    pub fn forward_array(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        self.spec.check_batch(&x, "TchDenoiser input")?;
        let (n, c, h, w) = x.dim();
        let times: Vec<f32> = item_times(times, n)?.into_iter().map(|t| t as f32).collect();
        let condition = condition.repeat_to(n)?;
        guard_panics(|| {
            let _no_grad = tch::no_grad_guard();
            // The one host -> tensor copy (straight from the slice when `x` is contiguous);
            // chunks move to the model's device and kind.
            let host = crossing::array_to_tensor(x, Device::Cpu, Kind::Float)?;
            let mut out: Vec<f32> = Vec::new();
            let mut out_c = 0usize;
            let mut start = 0usize;
            while start < n {
                let len = self.max_batch.min(n - start);
                let chunk = host
                    .f_narrow(0, start as i64, len as i64)?
                    .f_to_device(self.model.device())?
                    .f_to_kind(self.model.kind())?;
                let t =
                    crossing::slice_to_tensor(&times[start..start + len], &[len], self.model.device(), Kind::Float)?;
                let cond = if len == n {
                    condition.clone()
                } else {
                    condition.slice(start, start + len)?
                };
                let y = self.model.forward_t(&chunk, &t, &cond)?;
                let (yn, yc, yh, yw) = y.size4()?;
                if (yn, yh, yw) != (len as i64, h as i64, w as i64) || yc <= 0 {
                    return Err(Error::Model(format!(
                        "the network returned shape {:?} for an input of shape {:?}",
                        [yn, yc, yh, yw],
                        [len, c, h, w]
                    )));
                }
                if start == 0 {
                    out_c = yc as usize;
                    out = vec![0f32; n * out_c * h * w];
                } else if yc as usize != out_c {
                    return Err(Error::Model(
                        "the network's output channels changed between chunks".into(),
                    ));
                }
                let numel = len * out_c * h * w;
                let offset = start * out_c * h * w;
                crossing::tensor_into(&y, &mut out[offset..offset + numel])?;
                start += len;
            }
            Array4::from_shape_vec((n, out_c, h, w), out).map_err(|e| Error::Shape(e.to_string()))
        })
    }

    /// Run the network directly on a device tensor (no host copies, no chunking), under
    /// `no_grad` and the panic guard: `x` is cast to the model's kind and device if needed,
    /// `times` holds one time for all items or one per item. For callers that keep their
    /// data on the device.
    pub fn forward_tensor(&self, x: &Tensor, times: &[f64], condition: &Condition) -> Result<Tensor> {
        guard_panics(|| {
            let _no_grad = tch::no_grad_guard();
            let (n, _, _, _) = x.size4()?;
            let x = x.f_to_device(self.model.device())?.f_to_kind(self.model.kind())?;
            let times: Vec<f32> = item_times(times, n as usize)?.into_iter().map(|t| t as f32).collect();
            let t = crossing::slice_to_tensor(&times, &[times.len()], self.model.device(), Kind::Float)?;
            self.model.forward_t(&x, &t, &condition.repeat_to(n as usize)?)
        })
    }
}

impl<M: TchModule> Denoiser for TchDenoiser<M> {
    fn spec(&self) -> &DenoiserSpec {
        &self.spec
    }

    fn predict(&self, x: ArrayView4<'_, f32>, times: &[f64], condition: &Condition) -> Result<Array4<f32>> {
        let out = self.forward_array(x, times, condition)?;
        if out.dim() != x.dim() {
            return Err(Error::Model(format!(
                "the network returned shape {:?} for an input of shape {:?}; predict() needs the \
                 same shape",
                out.shape(),
                x.shape()
            )));
        }
        Ok(out)
    }
}

/// THE panic boundary of the tch layer: runs `f`, turning a panic into [`Error::Model`].
///
/// Used around every forward pass and every weight copy, so that panics from tch
/// operations without a fallible twin (or from bugs in the bindings) never unwind into the
/// caller. The closure must leave no shared state half-updated when it panics: the ones in
/// this module only read the model and build fresh tensors.
pub(crate) fn guard_panics<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_string());
            Err(Error::Model(format!("libtorch call panicked: {msg}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_kinds() {
        assert_eq!(parse_device("CPU").unwrap(), Device::Cpu);
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("cuda:999").is_err());
        assert!(parse_kind("fp16").is_ok());
        assert!(check_kind(Kind::Int64).is_err());
    }

    #[test]
    fn panics_become_errors() {
        let r: Result<()> = guard_panics(|| panic!("boom"));
        match r {
            Err(Error::Model(m)) => assert!(m.contains("boom")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
