//! The activations a config may name, and applying one.

use super::read::unsupported;
use crate::Result;

/// The activations a config may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    Silu,
    Gelu,
    Mish,
}

pub(crate) fn activation(name: &str) -> Result<Activation> {
    match name {
        "silu" | "swish" => Ok(Activation::Silu),
        "gelu" => Ok(Activation::Gelu),
        "mish" => Ok(Activation::Mish),
        other => Err(unsupported("act_fn", other)),
    }
}

/// Apply an activation.
pub(crate) fn activate(x: &tch::Tensor, act: Activation) -> Result<tch::Tensor> {
    Ok(match act {
        Activation::Silu => x.f_silu()?,
        Activation::Gelu => x.f_gelu("none")?,
        Activation::Mish => x.f_mish()?,
    })
}
