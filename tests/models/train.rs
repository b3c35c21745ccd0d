//! Training a DDPM UNet: the loss falls, resuming is exact, the export loads.

use boomerang::models::ddpm::{DdpmConfig, DdpmUNet};
use boomerang::models::{Device, Kind};
use boomerang::shapes::Shapes;
use boomerang::train::{TrainConfig, TrainData, Trainer};

fn tiny() -> DdpmConfig {
    DdpmConfig {
        ch: 16,
        ch_mult: vec![1, 2],
        num_res_blocks: 1,
        attn_resolutions: vec![8],
        dropout: 0.0,
        resolution: 16,
        norm_groups: 8,
        ..DdpmConfig::tiny()
    }
}

fn settings(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 8,
        lr: 2e-3,
        warmup: 5,
        ema_decay: 0.9,
        checkpoint_every: 3,
        seed: 5,
        ..TrainConfig::default()
    }
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("boomerang-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn loss_falls_resume_is_exact_and_export_loads() {
    tch::set_num_threads(1);
    let data = TrainData::Shapes(Shapes::new(16).unwrap());
    // 1. The loss falls: mean of the last 10 of 60 steps below the first 10.
    let mut t = Trainer::new(tiny(), settings(60), Device::Cpu).unwrap();
    let losses: Vec<f64> = (0..60).map(|_| t.train_step(&data).unwrap()).collect();
    let (first, last) = (
        losses[..10].iter().sum::<f64>() / 10.0,
        losses[50..].iter().sum::<f64>() / 10.0,
    );
    assert!(last < 0.6 * first, "loss {first} -> {last}");

    // 2. Six steps in one go equal three, a checkpoint, a resume, and three more.
    let (a, b) = (tmp("a"), tmp("b"));
    let mut straight = Trainer::new(tiny(), settings(6), Device::Cpu).unwrap();
    straight.train(&data, &a, |_, _| {}).unwrap();
    let mut first_half = Trainer::new(tiny(), settings(3), Device::Cpu).unwrap();
    first_half.train(&data, &b, |_, _| {}).unwrap();
    drop(first_half);
    let mut resumed = Trainer::resume(&b, Device::Cpu, Some(6)).unwrap();
    assert_eq!(resumed.step_count(), 3);
    resumed.train(&data, &b, |_, _| {}).unwrap();
    let (sa, sb) = (
        straight.ema().state_dict().unwrap(),
        resumed.ema().state_dict().unwrap(),
    );
    for (k, v) in sa.iter() {
        assert_eq!(v.data, sb.get(k).unwrap().data, "{k} differs after resume");
    }
    let csv = std::fs::read_to_string(b.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    // The losses are the straight run's, step for step.
    assert_eq!(csv, std::fs::read_to_string(a.join("loss.csv")).unwrap());

    // A run killed between checkpoints logged steps past its checkpoint; resuming takes
    // them again and logs each step once.
    let mut from_checkpoint = Trainer::resume(&b, Device::Cpu, Some(8)).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(b.join("loss.csv"))
        .unwrap();
    std::io::Write::write_all(&mut log, b"7,0.5\n").unwrap();
    from_checkpoint.train(&data, &b, |_, _| {}).unwrap();
    let csv = std::fs::read_to_string(b.join("loss.csv")).unwrap();
    let steps: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5", "6", "7", "8"], "{csv}");

    // 3. The export is a model folder the ordinary loader reads, with the EMA weights.
    let out = tmp("export");
    straight.export(&out).unwrap();
    assert!(straight.export(&out).is_err(), "export must not overwrite");
    let loaded = DdpmUNet::load(&out, Device::Cpu, Kind::Float).unwrap();
    assert_eq!(loaded.config(), &tiny());
    let sl = loaded.state_dict().unwrap();
    for (k, v) in sa.iter() {
        assert_eq!(v.data, sl.get(k).unwrap().data, "{k}");
    }
    let sched = boomerang::schedule::BetaSchedule::read(&out).unwrap().build().unwrap();
    assert_eq!(sched.num_steps(), 1000);
    for d in [a, b, out] {
        std::fs::remove_dir_all(d).unwrap();
    }
}
