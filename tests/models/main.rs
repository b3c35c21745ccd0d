//! Integration tests of the libtorch networks (feature `tch`): parity of the DDPM UNet,
//! Stable Diffusion and LPIPS with reference outputs of the original implementations,
//! Boomerang with real networks, training, and the command-line tool on real checkpoints.
//!
//! One test binary for all of them: each binary links libtorch's bindings, and one per
//! file costs minutes of linking and gigabytes of disk.
#![cfg(feature = "tch")]

#[path = "../common/cli.rs"]
mod cli_common;

mod apps_lpips;
mod cli_ddpm;
mod cli_families;
mod cli_sd;
mod cli_train;
mod ddpm_boomerang;
mod ddpm_parity;
mod dlsm_boomerang;
mod dlsm_parity;
mod patched_boomerang;
mod patched_parity;
mod pretrained;
mod sd_img2img;
mod sd_memory;
mod sd_parity;
mod sd_tokenizer;
mod train;
