//! Bounds on the sizes the applications accept, checked before anything is allocated: a
//! request beyond them is refused with an error naming the bound, never an attempt to
//! allocate it. Image sizes are bounded by [`crate::image_io::ImageLimits`] (raised with
//! `BOOMERANG_MAX_PIXELS`); memory per input is then bounded by the batch size times the
//! image size, whatever the number of copies, candidates or passes.

use crate::{Error, Result};

/// Most images per model batch (`--batch-size`).
pub const MAX_BATCH_SIZE: usize = 1024;

/// Most samples, copies or candidates per input and `t` (`-k`).
pub const MAX_COPIES: usize = 10_000;

/// Most cascaded enhancement passes (`--passes`).
pub const MAX_PASSES: usize = 1000;

/// Most `t` values of one `sample` run (`--t`).
pub const MAX_T_VALUES: usize = 100;

/// Largest enhancement scale factor (`--scale`); the result must also fit
/// [`crate::image_io::ImageLimits`].
pub const MAX_SCALE: f64 = 64.0;

/// Refuse a batch size outside `1..=MAX_BATCH_SIZE`.
pub fn check_batch_size(n: usize) -> Result<()> {
    check_count("batch_size", n, 1, MAX_BATCH_SIZE)
}

/// Refuse `n` outside `min..=max`, naming the parameter and the bound.
pub fn check_count(name: &'static str, n: usize, min: usize, max: usize) -> Result<()> {
    if n < min {
        return Err(Error::param(name, format!("must be at least {min}, got {n}")));
    }
    if n > max {
        return Err(Error::param(
            name,
            format!("at most {max} is accepted, got {n} (a bound on the work and memory of one run)"),
        ));
    }
    Ok(())
}
