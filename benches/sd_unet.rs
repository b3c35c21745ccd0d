//! One Stable Diffusion UNet step on the CPU, at a small SD1-shaped configuration
//! (`block_out_channels` [32, 64, 128, 128], 2 layers per block, 8 heads, text width 768,
//! 77 text tokens, 32×32 latents, random weights): the bare tensor forward pass, and the
//! same step through the ndarray [`Denoiser`] seam (host copies included) to show the
//! boundary cost.
//!
//! `cargo bench --bench sd_unet`

use boomerang::models::stable_diffusion::{UNet2DConditionModel, UNetConfig};
use boomerang::models::{Device, Kind, TchDenoiser};
use boomerang::{Condition, Denoiser, Parameterization};
use criterion::{criterion_group, criterion_main, Criterion};
use ndarray::{Array3, Array4};
use tch::Tensor;

const CONFIG: &str = r#"{
    "block_out_channels": [32, 64, 128, 128],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "sample_size": 32
}"#;

fn unet() -> UNet2DConditionModel {
    let config = UNetConfig::from_json(CONFIG).unwrap();
    let mut unet = UNet2DConditionModel::new(config, Parameterization::Epsilon, Device::Cpu, Kind::Float).unwrap();
    unet.randomize(0).unwrap();
    unet
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sd_unet_small");
    g.sample_size(10);
    for batch in [1usize, 2] {
        let model = unet();
        let x = Tensor::f_randn([batch as i64, 4, 32, 32], (Kind::Float, Device::Cpu)).unwrap();
        let t = Tensor::from_slice(&vec![500.0f32; batch]);
        let ctx = Tensor::f_randn([batch as i64, 77, 768], (Kind::Float, Device::Cpu)).unwrap();
        g.bench_function(format!("tensor_forward_b{batch}"), |b| {
            b.iter(|| {
                let _g = tch::no_grad_guard();
                model.forward(&x, &t, &ctx).unwrap()
            })
        });
        let d = TchDenoiser::new(model);
        let xa = Array4::<f32>::from_elem((batch, 4, 32, 32), 0.1);
        let cond = Condition::Text(Array3::from_elem((batch, 77, 768), 0.01));
        g.bench_function(format!("denoiser_predict_b{batch}"), |b| {
            b.iter(|| d.predict(xa.view(), &[500.0], &cond).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
