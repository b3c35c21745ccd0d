//! Fused element-wise passes shared by the step rules.
//!
//! A step is ONE pass over its arrays: it reads the current sample and the prediction,
//! draws its noise on the fly (where it adds any) and writes the next sample over the
//! current one (DDIM, which never reads the current sample, writes over the consumed `ε̂`
//! and takes that buffer as the sample). Nothing is allocated per step. The expressions inside the passes are the
//! step formulas with the operations in the order of the earlier multi-pass code, so the
//! results are the same bits.
//!
//! Passes without noise split the batch element-wise across threads; passes with noise run
//! items in parallel, each drawing from its own stream in the item's logical order (see
//! [`NoiseStreams::par_items`]). Either way the result does not depend on the thread count.

use ndarray::parallel::prelude::*;
use ndarray::{Array4, ArrayView3, ArrayView4, ArrayViewMut3, Axis};

use crate::core::noise::{NoiseStreams, Normals};
use crate::{Error, Result};

/// `Error::Shape` unless `a` has the sample's shape.
pub(super) fn check_like(a: &Array4<f32>, x: &Array4<f32>, what: &str) -> Result<()> {
    if a.dim() != x.dim() {
        return Err(Error::Shape(format!(
            "{what} has shape {:?}, the sample {:?}",
            a.shape(),
            x.shape()
        )));
    }
    Ok(())
}

/// `x ← f(x, a, b, z)` element-wise, `z` a fresh standard normal draw from the item's stream.
/// `a` and `b` must have `x`'s shape (check with [`check_like`]).
pub(super) fn noisy_pass<F>(
    noise: &mut NoiseStreams,
    x: &mut Array4<f32>,
    a: ArrayView4<'_, f32>,
    b: ArrayView4<'_, f32>,
    f: F,
) -> Result<()>
where
    F: Fn(f32, f32, f32, f32) -> f32 + Sync + Send,
{
    noise.par_items(x.axis_iter_mut(Axis(0)).into_par_iter(), |i, xi, z| {
        item_pass(xi, a.index_axis(Axis(0), i), b.index_axis(Axis(0), i), z, &f)
    })
}

/// One item of [`noisy_pass`], in logical (row-major) order: the order in which
/// [`NoiseStreams::fill_normal`] writes its draws.
#[inline(always)]
fn item_pass<F>(
    mut x: ArrayViewMut3<'_, f32>,
    a: ArrayView3<'_, f32>,
    b: ArrayView3<'_, f32>,
    z: &mut Normals<'_>,
    f: &F,
) where
    F: Fn(f32, f32, f32, f32) -> f32,
{
    if let (Some(a), Some(b)) = (a.as_slice(), b.as_slice()) {
        if let Some(x) = x.as_slice_mut() {
            for ((x, &a), &b) in x.iter_mut().zip(a).zip(b) {
                *x = f(*x, a, b, z.next());
            }
            return;
        }
    }
    for ((x, &a), &b) in x.iter_mut().zip(a.iter()).zip(b.iter()) {
        *x = f(*x, a, b, z.next());
    }
}
