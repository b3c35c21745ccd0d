//! Applications on one [`Pipeline`](crate::core::pipeline::Pipeline): local samples of
//! images ([`sample`]), perceptual resolution enhancement ([`enhance`]), data augmentation
//! ([`augment`]), dataset anonymization ([`anonymize`]), with dataset listing ([`dataset`],
//! [`keys`], class folders: [`classes`]), safe paths and output trees ([`paths`]), size bounds ([`limits`]) and
//! [`metrics`]. None of them knows which model family it drives.

pub mod anonymize;
pub mod augment;
pub mod classes;
pub mod dataset;
pub mod enhance;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod paths;
pub mod sample;
