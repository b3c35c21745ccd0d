//! The Boomerang core and its seams: the runner ([`Boomerang`](crate::Boomerang)), the
//! [`Denoiser`](crate::Denoiser) trait networks implement, the one conversion point from
//! any prediction to `(x̂0, ε̂)`, per-item noise streams, and [`pipeline::Pipeline`], the
//! seam the applications drive.

pub(crate) mod boomerang;
pub mod codec;
pub mod denoiser;
pub mod guidance;
pub(crate) mod noise;
pub mod pipeline;
pub mod prediction;
