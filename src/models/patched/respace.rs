//! The respaced step lists of guided-diffusion's `space_timesteps` (`respace.py`), which
//! Patched Diffusion's sampling script uses unchanged (`--timestep_respacing 250`).

use crate::{Error, Result};

/// The training steps a respaced process keeps, ascending: guided-diffusion's
/// `space_timesteps(num_train, section_counts)`, reproduced exactly.
///
/// - `"N"` or `"N1,N2,..."`: the `num_train` steps are cut into as many equal sections as
///   there are counts (the first `num_train % sections` one step longer); section `i` keeps
///   `N_i` steps at the rounded positions `0, s, 2s, ...` with the fractional stride
///   `s = (size − 1)/(N_i − 1)` accumulated in `f64` and rounded half to even, as Python's
///   `round` does;
/// - `"ddimN"`: the first integer stride `k` with `len(range(0, num_train, k)) == N`;
/// - `""`: every step (the script's default, no respacing).
///
/// Errors (as the original, but naming the offending value): a section with fewer steps
/// than its count, a `ddimN` no integer stride produces, counts that are not non-negative
/// integers, and a list that keeps no step at all.
///
/// ```
/// use boomerang::models::patched::respaced_steps;
/// let steps = respaced_steps(1000, "250")?;
/// assert_eq!(steps.len(), 250);
/// assert_eq!(&steps[..4], &[0, 4, 8, 12]);
/// assert_eq!(*steps.last().unwrap(), 999);
/// assert_eq!(respaced_steps(1000, "ddim50")?, (0..1000).step_by(20).collect::<Vec<_>>());
/// # Ok::<(), boomerang::Error>(())
/// ```
pub fn respaced_steps(num_train: usize, section_counts: &str) -> Result<Vec<usize>> {
    if num_train == 0 {
        return Err(Error::param("timestep_respacing", "the process has no training steps"));
    }
    let spec = section_counts.trim();
    if spec.is_empty() {
        return Ok((0..num_train).collect());
    }
    if let Some(n) = spec.strip_prefix("ddim") {
        let desired: usize = n.trim().parse().map_err(|_| {
            Error::param(
                "timestep_respacing",
                format!("`{section_counts}`: expected ddimN with N a non-negative integer"),
            )
        })?;
        for stride in 1..num_train {
            if num_train.div_ceil(stride) == desired {
                return Ok((0..num_train).step_by(stride).collect());
            }
        }
        return Err(Error::param(
            "timestep_respacing",
            format!("cannot create exactly {desired} steps out of {num_train} with an integer stride"),
        ));
    }
    let counts = spec
        .split(',')
        .map(|c| {
            let c = c.trim();
            c.strip_prefix('+').unwrap_or(c).parse::<usize>().map_err(|_| {
                Error::param(
                    "timestep_respacing",
                    format!("`{section_counts}`: `{c}` is not a non-negative integer step count"),
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    let sections = counts.len();
    let size_per = num_train / sections;
    let extra = num_train % sections;
    let mut start = 0usize;
    let mut steps = Vec::new();
    for (i, &count) in counts.iter().enumerate() {
        let size = size_per + usize::from(i < extra);
        if size < count {
            return Err(Error::param(
                "timestep_respacing",
                format!("cannot divide section {i} of {size} steps into {count}"),
            ));
        }
        let stride = if count <= 1 {
            1.0
        } else {
            (size - 1) as f64 / (count - 1) as f64
        };
        let mut cur = 0.0f64;
        for _ in 0..count {
            steps.push(start + cur.round_ties_even() as usize);
            cur += stride;
        }
        start += size;
    }
    steps.sort_unstable();
    steps.dedup();
    if steps.is_empty() {
        return Err(Error::param(
            "timestep_respacing",
            format!("`{section_counts}` keeps no step"),
        ));
    }
    Ok(steps)
}
