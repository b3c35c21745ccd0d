//! Train the crate's embedded default model: a small DDPM UNet on the procedural
//! `shapes::Shapes` family at 32×32.
//!
//! The default model (`boomerang::models::pretrained`) was made with exactly this program:
//! `cargo run --release --example train_default -- assets/shapes32 12000` (seed 0); it
//! resumes from `target/train_default/` if a run was interrupted.

use boomerang::checkpoint::{load_state_dict, save_safetensors, DType, StateDict};
use boomerang::models::ddpm::DdpmConfig;
use boomerang::models::Device;
use boomerang::shapes::Shapes;
use boomerang::train::{TrainConfig, TrainData, Trainer};

/// The default model's architecture: 3 levels (32, 16, 8), attention at 8×8.
pub fn default_config() -> DdpmConfig {
    DdpmConfig {
        ch: 32,
        ch_mult: vec![1, 2, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![8],
        dropout: 0.0,
        resolution: 32,
        norm_groups: 8,
        ..DdpmConfig::tiny()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let out = args.get(1).cloned().unwrap_or_else(|| "assets/shapes32".into());
    let steps: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(12000);
    let work = std::path::Path::new("target/train_default");
    let settings = TrainConfig {
        steps,
        batch_size: 32,
        lr: 1e-3,
        warmup: 200,
        ema_decay: 0.995,
        checkpoint_every: 250,
        seed: 0,
        random_flip: true,
        ..TrainConfig::default()
    };
    let mut trainer = if work.join("checkpoint.json").exists() {
        Trainer::resume(work, Device::Cpu, Some(steps))?
    } else {
        Trainer::new(default_config(), settings, Device::Cpu)?
    };
    let data = TrainData::Shapes(Shapes::new(32)?);
    let start = std::time::Instant::now();
    let first = trainer.step_count();
    trainer.train(&data, work, |step, loss| {
        if step % 50 == 0 {
            let rate = (step - first) as f64 / start.elapsed().as_secs_f64();
            println!("step {step:>6}  loss {loss:.4}  {rate:.2} steps/s");
        }
    })?;
    trainer.export(&out)?;
    // Stored in f16 (half the size; the network still computes in f32).
    let weights = std::path::Path::new(&out).join("diffusion_pytorch_model.safetensors");
    let half: StateDict = load_state_dict(&weights)?
        .into_entries()
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_float_dtype(DType::F16)?)))
        .collect::<boomerang::Result<_>>()?;
    let tmp = weights.with_extension("f16.tmp");
    save_safetensors(&half, &tmp)?;
    std::fs::rename(&tmp, &weights)?;
    println!("exported the EMA weights (f16) to {out}");
    Ok(())
}
