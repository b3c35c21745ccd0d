//! Integration tests of the pure-Rust core (they build and pass without libtorch):
//! schedule maths, sampler statistics, reproducibility, checkpoints, image IO, the
//! application modules and the command-line tool.
//!
//! One test binary instead of one per file: every binary links the whole crate, and
//! several dozen of them cost minutes of linking and gigabytes of disk.

#[path = "../common/cli.rs"]
mod cli_common;

mod apps_library;
mod apps_metrics;
mod architecture;
mod bad_input;
mod checkpoint;
mod class_folders;
mod cli_anonymize;
mod cli_commands;
mod determinism;
mod fastdpm_schedules;
mod fused_steps;
mod guidance;
mod hostile_checkpoints;
mod hostile_paths;
mod image_io;
mod labels;
mod pc_locality;
mod predictor_corrector;
mod registry;
mod schedule_props;
mod shapes;
mod statistics;
