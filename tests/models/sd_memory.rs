//! Memory and time of one UNet step at the real SD1.5 configuration (random weights, f32,
//! CPU, 64×64 latents = 512×512 images). Ignored by default: it needs about 6 GB of RAM and
//! a minute on two cores.
//!
//! `cargo test --release --test models sd_memory -- --ignored --nocapture`

use boomerang::models::stable_diffusion::{UNet2DConditionModel, UNetConfig};
use boomerang::models::{Device, Kind, TchDenoiser};
use boomerang::{Condition, Denoiser, Parameterization};
use ndarray::{Array3, Array4};

/// `(VmRSS, VmHWM)` in MiB, from `/proc/self/status`.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
#[ignore = "allocates the full SD1.5 UNet (3.4 GB) and runs a 512×512 step"]
fn sd15_unet_step_memory() {
    // diffusers' defaults are SD1.5's UNet, except the text width.
    let config = UNetConfig::from_json(r#"{"cross_attention_dim": 768, "sample_size": 64}"#).unwrap();
    let (rss0, _) = rss_mib();
    let mut unet = UNet2DConditionModel::new(config, Parameterization::Epsilon, Device::Cpu, Kind::Float).unwrap();
    unet.randomize(0).unwrap();
    let params = unet.num_parameters();
    let (rss1, hwm1) = rss_mib();
    eprintln!(
        "SD1.5 UNet: {params} parameters ({:.0} MiB f32); RSS {rss1:.0} MiB after init (was {rss0:.0}), peak {hwm1:.0}",
        params as f64 * 4.0 / 1048576.0
    );
    assert_eq!(params, 859_520_964);
    let d = TchDenoiser::new(unet);
    for batch in [1usize, 2] {
        let x = Array4::<f32>::from_elem((batch, 4, 64, 64), 0.1);
        let cond = Condition::Text(Array3::from_elem((batch, 77, 768), 0.01));
        let started = std::time::Instant::now();
        let out = d.predict(x.view(), &[500.0], &cond).unwrap();
        let secs = started.elapsed().as_secs_f64();
        let (rss, hwm) = rss_mib();
        assert!(out.iter().all(|v| v.is_finite()));
        eprintln!(
            "batch {batch}: one step in {secs:.1} s; RSS {rss:.0} MiB, peak so far {hwm:.0} MiB \
             (peak above the weights: {:.0} MiB)",
            hwm - rss1
        );
    }
}
