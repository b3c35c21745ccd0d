//! Applications on one [`LocalSampler`](crate::core::local::LocalSampler): perceptual
//! resolution enhancement ([`enhance`]), data augmentation ([`augment`]), dataset
//! anonymization ([`anonymize`]), with dataset listing ([`dataset`], [`keys`]) and
//! [`metrics`]. None of them knows which model family it drives.

pub mod anonymize;
pub mod augment;
pub mod dataset;
pub mod enhance;
pub mod keys;
pub mod metrics;
