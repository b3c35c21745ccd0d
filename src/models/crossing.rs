//! THE crossing between host data and `tch` tensors: every place in the crate that turns
//! host values (`ndarray` arrays, slices) into a tensor, or a tensor back into host `f32`
//! values (arrays, buffers, state-dict entries), goes through these functions.
//!
//! - to a tensor: [`array_to_tensor`] (any dimension, one copy when the array is
//!   contiguous) and [`slice_to_tensor`] (flat values and a shape), moved to a device and
//!   cast to a kind, in that order;
//! - back to the host: [`tensor_to_array`] / [`tensor_to_array4`] (the tensor's own
//!   shape), [`tensor_to_vec`], [`tensor_into`] (into a caller's buffer, e.g. one chunk
//!   of a batch) and [`tensor_to_data`] (a state-dict entry), always `f32` on the CPU;
//! - [`host_slice`]: an array's values in standard (row-major) order, borrowed when
//!   possible.
//!
//! Shape and length mismatches are [`Error::Shape`] and libtorch failures are errors
//! (through the fallible `f_` calls), never panics.

use std::borrow::Cow;

use ndarray::{Array, Array4, ArrayView, Dimension, IxDyn};
use tch::kind::Element;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::TensorData;
use crate::{Error, Result};

/// The values of `x` in standard (row-major) order: borrowed when `x` is contiguous,
/// otherwise one copy.
pub(crate) fn host_slice<'a, T: Clone, D: Dimension>(x: &'a ArrayView<'_, T, D>) -> Cow<'a, [T]> {
    match x.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(x.iter().cloned().collect()),
    }
}

/// Flat host `values` as a tensor of `shape`, on `device`, cast to `kind`.
pub(crate) fn slice_to_tensor<T: Element>(values: &[T], shape: &[usize], device: Device, kind: Kind) -> Result<Tensor> {
    let numel: usize = shape.iter().product();
    if numel != values.len() {
        return Err(Error::Shape(format!(
            "{} host values do not fill a tensor of shape {shape:?} ({numel} values)",
            values.len()
        )));
    }
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_slice(values)?
        .f_view(dims.as_slice())?
        .f_to_device(device)?
        .f_to_kind(kind)?)
}

/// A host array as a tensor of the same shape, on `device`, cast to `kind`.
pub(crate) fn array_to_tensor<T: Element + Clone, D: Dimension>(
    x: ArrayView<'_, T, D>,
    device: Device,
    kind: Kind,
) -> Result<Tensor> {
    slice_to_tensor(&host_slice(&x), x.shape(), device, kind)
}

/// The shape of a tensor as host sizes.
fn shape_of(t: &Tensor) -> Result<Vec<usize>> {
    t.size()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::Shape(format!("tensor size {d} is negative"))))
        .collect()
}

/// Copy a tensor's values (any kind, any device) as `f32` into `out`, which must hold
/// exactly as many values as the tensor.
pub(crate) fn tensor_into(t: &Tensor, out: &mut [f32]) -> Result<()> {
    let numel = t.numel();
    if numel != out.len() {
        return Err(Error::Shape(format!(
            "a tensor of shape {:?} ({numel} values) does not fit {} host values",
            t.size(),
            out.len()
        )));
    }
    let t = t.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_contiguous()?;
    t.f_copy_data(out, numel)?;
    Ok(())
}

/// A tensor's values (any kind, any device) as host `f32`, in row-major order.
pub(crate) fn tensor_to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let mut v = vec![0f32; t.numel()];
    tensor_into(t, &mut v)?;
    Ok(v)
}

/// A tensor as a host `f32` array of its own shape; the tensor must have `D`'s number of
/// dimensions.
pub(crate) fn tensor_to_array<D: Dimension>(t: &Tensor) -> Result<Array<f32, D>> {
    let shape = shape_of(t)?;
    if D::NDIM.is_some_and(|n| n != shape.len()) {
        return Err(Error::Shape(format!(
            "a tensor of shape {shape:?} is not {}-dimensional",
            D::NDIM.unwrap_or(0)
        )));
    }
    Array::from_shape_vec(IxDyn(&shape), tensor_to_vec(t)?)
        .and_then(|a| a.into_dimensionality::<D>())
        .map_err(|e| Error::Shape(e.to_string()))
}

/// A 4-d tensor (NCHW) as a host `f32` array.
pub(crate) fn tensor_to_array4(t: &Tensor) -> Result<Array4<f32>> {
    tensor_to_array(t)
}

/// A tensor as an `f32` state-dict entry of its shape (what `state_dict()` gives).
pub(crate) fn tensor_to_data(t: &Tensor) -> Result<TensorData> {
    let shape = shape_of(t)?;
    Ok(TensorData::from_f32(shape, &tensor_to_vec(t)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};

    #[test]
    fn arrays_cross_and_come_back() {
        let a = Array3::from_shape_fn((2, 3, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32);
        let t = array_to_tensor(a.view(), Device::Cpu, Kind::Float).unwrap();
        assert_eq!(t.size(), [2, 3, 4]);
        assert_eq!(tensor_to_array::<ndarray::Ix3>(&t).unwrap(), a);
        // A transposed (non-contiguous) view crosses in its logical order.
        let v = a.view().reversed_axes();
        let t = array_to_tensor(v, Device::Cpu, Kind::Half).unwrap();
        assert_eq!(tensor_to_array::<ndarray::Ix3>(&t).unwrap(), v.to_owned());
        let ids = Array2::from_shape_fn((2, 2), |(i, j)| (i * 2 + j) as i64);
        let t = array_to_tensor(ids.view(), Device::Cpu, Kind::Int64).unwrap();
        assert_eq!(t.kind(), Kind::Int64);
        assert_eq!(tensor_to_vec(&t).unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn mismatches_are_errors() {
        assert!(matches!(
            slice_to_tensor(&[1f32, 2.0, 3.0], &[2, 2], Device::Cpu, Kind::Float),
            Err(Error::Shape(_))
        ));
        let t = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        assert!(matches!(tensor_into(&t, &mut [0f32; 5]), Err(Error::Shape(_))));
        assert!(matches!(tensor_to_array4(&t), Err(Error::Shape(_))));
        let d = tensor_to_data(&t).unwrap();
        assert_eq!(d.shape, vec![2, 3]);
    }
}
